"""The files and directories a server's config names (Ref), and how they become an Inventory
and a check that they exist."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from drkit.model import (
    Check,
    Entry,
    Inventory,
    failed,
    passed,
)
from drkit.paths import on_root, to_node


@dataclass(frozen=True)
class Ref:
    """A file or directory a server's config names (for a per-user path, whose)."""

    path: str
    category: str
    directive: str
    where: str
    required: bool = True
    directory: bool = False
    user: str | None = None


def is_file(root: Path, node_path: str) -> bool:
    host = on_root(root, node_path)
    return host.is_file() or host.is_symlink()


def walk_files(root: Path, node_dir: str) -> list[str]:
    """Return the node paths of every file and symlink under a directory (links not followed)."""
    found: list[str] = []
    top = str(on_root(root, node_dir))
    node_top = to_node(root, Path(top)).rstrip("/")
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        below = os.path.relpath(dirpath, top)
        node = node_top if below == "." else f"{node_top}/{below}"
        found += [f"{node}/{name}" for name in sorted(filenames + links)]
    return found


def inventory_from_refs(
    root: Path, config_files: list[str], refs: list[Ref], warnings: list[str]
) -> Inventory:
    """Return the Inventory of config files plus every existing referenced path.

    A missing required reference becomes a warning: a backup takes what exists.
    """
    found = Inventory(warnings=list(warnings))
    seen: set[str] = set()

    def add(path: str, category: str) -> None:
        if path not in seen:
            seen.add(path)
            found.files.append(Entry(path, category))

    for path in config_files:
        add(path, "config")
    for ref in refs:
        host = on_root(root, ref.path)
        if ref.directory or host.is_dir():
            if host.is_dir():
                if ref.path not in {entry.path for entry in found.dirs}:
                    found.dirs.append(Entry(ref.path, ref.category))
                    for path in walk_files(root, ref.path):
                        add(path, ref.category)
            elif ref.required:
                found.warnings.append(f"{ref.directive} {ref.path} ({ref.where}) is missing")
        elif is_file(root, ref.path):
            add(ref.path, ref.category)
        elif ref.required:
            found.warnings.append(f"{ref.directive} {ref.path} ({ref.where}) is missing")
    found.warnings = list(dict.fromkeys(found.warnings))
    return found


def named_files_check(
    root: Path,
    refs: list[Ref],
    label: str = "config",
    directive_name: Callable[[Ref], str] | None = None,
) -> list[Check]:
    """Fail once per required path that is missing; else one pass.

    directive_name(ref) spells the directive in a failure (default: ref.directive).
    """
    spell = directive_name or (lambda ref: ref.directive)
    required = list({r.path: r for r in reversed(refs) if r.required}.values())
    missing = [
        r
        for r in reversed(required)
        if not (on_root(root, r.path).is_dir() if r.directory else is_file(root, r.path))
    ]
    results = [
        failed(f"{label}: missing {r.path}", f"{spell(r)} ({r.where}) names a missing path")
        for r in missing
    ]
    if not missing:
        results.append(passed(f"{label}: named files", f"all {len(required)} named paths exist"))
    return results
