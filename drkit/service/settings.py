"""What `drkit init` would change in a node's existing drkit.yaml, setting by setting.

init never replaces a node's configuration: with the settings it already has it changes
nothing; with other ones it names each difference (and what it would do to the bucket) and
applies them only with --update, on top of the file as it is, so everything not named on the
command line (hand-added objectives, other includes, retention) is kept.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drkit import errors

# init's options and the drkit.yaml setting each one writes.
OPTION_PATHS: dict[str, tuple[str, ...]] = {
    "node": ("node",),
    "s3_endpoint": ("repository", "s3_endpoint"),
    "bucket": ("repository", "bucket"),
    "prefix": ("repository", "prefix"),
    "region": ("repository", "region"),
    "password_file": ("repository", "password_file"),
    "ca_bundle": ("repository", "ca_bundle"),
    "lock_days": ("repository", "object_lock", "days"),
    "lock_mode": ("repository", "object_lock", "mode"),
    "servers": ("servers",),
    "group": ("group",),
    "root": ("root",),
    "smoke_user": ("smoke_user",),
    "signing_key": ("signing_key",),
    "state_dir": ("state_dir",),
    "includes": ("includes",),
    "profile_options": ("profile_options",),
}
# Options whose items are added to those the file has (never replacing the others).
MERGED = ("includes", "profile_options")
# What a changed setting does beyond drkit.yaml.
CONSEQUENCES = {
    ("repository", "object_lock", "days"): "the bucket's default object-lock retention, in days",
    ("repository", "object_lock", "mode"): "the bucket's object-lock mode",
    ("repository", "bucket"): "backups go to another bucket",
    ("repository", "s3_endpoint"): "backups go to another storage",
    ("repository", "prefix"): "backups go to another repository",
    ("repository", "password_file"): "another password must open the repository",
    ("signing_key",): "snapshots are signed by another key",
    ("node",): "snapshots are made under another node name",
}
# Why state_dir may not be, or lie under, a world-writable directory.
WORLD_WRITABLE_REASON = (
    "another user can create or replace paths there, and sshd refuses a chroot (a drill's "
    "sandbox) under a world-writable directory"
)


def _get(document: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _put(document: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    for key in path[:-1]:
        document = document.setdefault(key, {})
    document[path[-1]] = value


def _text(value: object) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    return str(value)


def differences(
    previous: Mapping[str, object], wanted: Mapping[str, object], named: set[str]
) -> tuple[dict[str, object], list[str]]:
    """Given the file's settings, init's settings and the options named on its command line,
    return (the file's settings with the named ones applied, one line per change)."""
    merged = copy.deepcopy(dict(previous))
    lines: list[str] = []
    for option in sorted(named, key=list(OPTION_PATHS).index):
        path = OPTION_PATHS[option]
        new, old = _get(wanted, path), _get(previous, path)
        if option in MERGED:
            for key, value in (new or {}).items():
                had = (old or {}).get(key)
                if option == "includes":
                    added = [item for item in value if item not in (had or [])]
                    lines += [f"includes.{key}: add {item}" for item in added]
                    if added:
                        _put(merged, (*path, key), [*(had or []), *added])
                    continue
                for name, item in value.items():
                    before = (had or {}).get(name)
                    if before != item:
                        lines.append(f"{option}.{key}.{name}: {_text(before)} -> {_text(item)}")
                        _put(merged, (*path, key, name), item)
            continue
        if new is None or new == old:
            continue
        line = f"{'.'.join(path)}: {_text(old)} -> {_text(new)}"
        if path in CONSEQUENCES:
            line += f" ({CONSEQUENCES[path]})"
        lines.append(line)
        _put(merged, path, new)
    return merged, lines


def refuse(config_path: Path, lines: list[str]) -> errors.ConfigError:
    """Return the error of an init that would change an existing configuration."""
    head = (
        f"{config_path} exists with other settings; nothing was changed "
        f"({len(lines)} difference(s), run again with --update to apply them and keep "
        "everything else):"
    )
    return errors.ConfigError(head, [head, *(f"  {line}" for line in lines)])


def check_state_dir(path: Path) -> None:
    """Raise ConfigError when state_dir is, or lies under, a world-writable directory."""
    absolute = Path(os.path.abspath(path))
    for directory in (absolute, *absolute.parents):
        try:
            mode = directory.lstat().st_mode
        except OSError:
            continue  # not made yet: init makes it root's, 0755
        if stat.S_ISDIR(mode) and mode & stat.S_IWOTH:
            where = "is" if directory == absolute else f"lies under {directory}, which is"
            raise errors.ConfigError(
                f"state_dir {absolute} {where} world-writable: {WORLD_WRITABLE_REASON}; "
                "choose a root-owned directory such as /var/lib/drkit"
            )
