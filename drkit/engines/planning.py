"""The plan of a restore: what it adds, changes, removes or leaves for each path of a signed
manifest on a target (nothing followed on the way), and which added directories the apply may
move into place whole."""

from __future__ import annotations

import bisect
import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from drkit import errors
from drkit.engines import beneath
from drkit.engines.manifest import SNAPSHOT_DIR, compare_entry
from drkit.model import FileRecord, Manifest
from drkit.paths import joined as target_path


@dataclass(frozen=True, slots=True)
class Step:
    """One line of the plan: a node path and what restore does to it."""

    path: str
    action: str  # add | change | remove | unchanged
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "action": self.action}


def _difference(descent: beneath.Descent, entry: FileRecord) -> str | None:
    """Return why the target's entry differs ('missing' when absent); Refused when a link
    stands where a directory is needed (on the way, or where the manifest has one)."""
    try:
        fd, name = descent.at(entry.path)
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return "missing"
    if entry.type == "dir" and stat.S_ISLNK(info.st_mode):
        raise beneath._link_refused(descent.root, target_path(descent.root, entry.path), fd, name)
    try:
        return compare_entry(name, entry, dir_fd=fd)
    except FileNotFoundError:
        return "missing"


def plan(target: Path, manifest: Manifest) -> list[Step]:
    """Compare the target with the manifest: add, change, remove or unchanged for each path.
    Nothing is followed: a link where a directory is needed is refused (errors.Refused)."""
    steps = []
    listed = set()
    with beneath.Descent(target, read_only=True) as descent:
        for entry in manifest.files:
            listed.add(entry.path)
            difference = _difference(descent, entry)
            if difference == "missing":
                steps.append(Step(entry.path, "add"))
            else:
                action = "change" if difference else "unchanged"
                steps.append(Step(entry.path, action, difference or ""))
    for pattern in manifest.owned_globs:
        for node_path in beneath.glob(target, str(pattern)):
            if node_path in listed or node_path.startswith(SNAPSHOT_DIR):
                continue
            try:
                info = beneath.lstat(target, target_path(target, node_path))
            except errors.Refused:
                continue  # reached through a link: not a file of this target's tree
            if info is None or stat.S_ISDIR(info.st_mode):
                continue
            if fnmatch.fnmatch(node_path, pattern):
                listed.add(node_path)
                steps.append(Step(node_path, "remove", "not in the snapshot"))
    return steps


def whole_trees(steps: list[Step], entries: dict[str, FileRecord]) -> set[str]:
    """Return the added directories the apply may move from staging into place whole (one
    rename, not one per file): every entry the manifest lists beneath one is added too (none
    left out, as standby sync leaves a node's local paths), and drkit's snapshot directory,
    which the restore places itself, is not beneath it."""
    added = sorted(step.path for step in steps if step.action == "add")
    listed = sorted(entries)
    found = set()
    for path in added:
        entry = entries.get(path)
        if entry is None or entry.type != "dir" or f"{SNAPSHOT_DIR}/".startswith(path + "/"):
            continue
        low, high = path + "/", path + "0"  # "0" follows "/": the paths beneath, sorted
        beneath_added = bisect.bisect_left(added, high) - bisect.bisect_left(added, low)
        if beneath_added == bisect.bisect_left(listed, high) - bisect.bisect_left(listed, low):
            found.add(path)
    return found
