"""Finding a usable restic: a named binary, .tools/bin beside drkit, then PATH; each binary's
version asked once and cached by its path, size and mtime."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

from drkit import errors, runner
from drkit.engines import durable

MINIMUM_VERSION = (0, 17, 0)
UPGRADE_HINT = (
    "install restic >= 0.17 (./scripts/bootstrap puts 0.18 in .tools/bin), "
    "or name one with $DRKIT_RESTIC or `restic:` in drkit.yaml"
)
_VERSION = re.compile(r"^restic (\d+)\.(\d+)\.(\d+)")


def version_cache_path() -> Path:
    """Return the file that remembers each restic binary's version ($XDG_CACHE_HOME/drkit)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "drkit" / "restic-versions.json"


def _identity(binary: Path) -> str | None:
    """Return what names one installed binary: its resolved path, size and mtime."""
    try:
        info = binary.stat()
    except OSError:
        return None
    return f"{binary.resolve()}:{info.st_size}:{info.st_mtime_ns}"


Version = tuple[int, int, int]


def _cached_versions() -> dict[str, Version]:
    """Return the cache: each binary's identity and its version (what is not one is dropped)."""
    try:
        cached = json.loads(version_cache_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cached, dict):
        return {}
    return {
        str(identity): (known[0], known[1], known[2])
        for identity, known in cached.items()
        if isinstance(known, list) and len(known) == 3 and all(isinstance(n, int) for n in known)
    }


def _version_of(binary: Path) -> Version | None:
    """Return restic's version, asked once per installed binary: the answer is cached by the
    binary's path, size and mtime, so a replaced or upgraded restic is asked again."""
    identity = _identity(binary)
    cached = _cached_versions()
    known = cached.get(identity) if identity else None
    if known is not None:
        return known
    try:
        completed = runner.run([str(binary), "version"], timeout=20)
    except errors.DrkitError:
        return None
    match = _VERSION.match(completed.stdout.strip())
    if not match:
        return None
    major, minor, patch = (int(part) for part in match.groups())
    version = (major, minor, patch)
    if identity:
        _remember(cached, identity, version)
    return version


def _remember(cached: dict[str, Version], identity: str, version: Version) -> None:
    """Store a binary's version in the cache (atomically; a cache that cannot be written is
    only a missed saving)."""
    path = version_cache_path()
    kept = {key: list(value) for key, value in cached.items() if _still_installed(key)}
    kept[identity] = list(version)
    with contextlib.suppress(errors.LocalFilesystemError):
        durable.write_atomic(path, (json.dumps(kept, sort_keys=True) + "\n").encode())


def _still_installed(identity: str) -> bool:
    path = identity.rsplit(":", 2)[0]
    return _identity(Path(path)) == identity


def _checked(binary: Path) -> Path:
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        raise errors.ResticMissing(f"restic not found at {binary}: {UPGRADE_HINT}")
    version = _version_of(binary)
    if version is None:
        raise errors.ResticMissing(f"{binary} is not restic: {UPGRADE_HINT}")
    if version < MINIMUM_VERSION:
        found = ".".join(map(str, version))
        raise errors.ResticMissing(f"restic {found} at {binary} is too old: {UPGRADE_HINT}")
    return binary


def _bundled_candidates() -> list[Path]:
    """.tools/bin beside drkit's own installation: the source tree or the venv's parent."""
    package_dir = Path(__file__).resolve().parents[2]
    venv_parent = Path(sys.prefix).resolve().parent
    return [
        base / ".tools" / "bin" / "restic" for base in dict.fromkeys([package_dir, venv_parent])
    ]


def find_restic(configured: Path | None) -> Path:
    """Return a usable restic: config, $DRKIT_RESTIC, .tools/bin beside drkit, then PATH.

    A named binary that is missing or too old is an error; searched ones are skipped.
    """
    named = configured or (
        Path(os.environ["DRKIT_RESTIC"]) if os.environ.get("DRKIT_RESTIC") else None
    )
    if named:
        return _checked(named)
    on_path = shutil.which("restic")
    candidates = [*_bundled_candidates(), *([Path(on_path)] if on_path else [])]
    too_old: list[str] = []
    for candidate in candidates:
        if candidate.is_file():
            try:
                return _checked(candidate)
            except errors.ResticMissing as exc:
                too_old.append(exc.message)
    if too_old:
        raise errors.ResticMissing(too_old[0])
    raise errors.ResticMissing(f"restic not found: {UPGRADE_HINT}")
