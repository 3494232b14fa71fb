"""Plan and apply a verified snapshot onto a target, atomically per file, with rollback.

Every replaced or removed file is first copied aside; a failure part way through puts each
one back and removes what was added, so a failed restore leaves the target as it was.
"""

from __future__ import annotations

import errno
import fnmatch
import glob
import logging
import os
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from drkit import errors
from drkit.engines.manifest import SNAPSHOT_DIR, compare_entry
from drkit.paths import on_root, to_node

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """One line of the plan: a node path and what restore does to it."""

    path: str
    action: str  # add | change | remove | unchanged
    reason: str = ""

    def as_dict(self) -> dict:
        return {"path": self.path, "action": self.action}


def plan(target: Path, manifest: dict) -> list[Step]:
    """Compare the target with the manifest: add, change, remove or unchanged for each path."""
    steps = []
    listed = set()
    for entry in manifest["files"]:
        listed.add(entry["path"])
        host = on_root(target, entry["path"])
        if not host.exists() and not host.is_symlink():
            steps.append(Step(entry["path"], "add"))
            continue
        difference = compare_entry(host, entry)
        steps.append(Step(entry["path"], "change" if difference else "unchanged", difference or ""))
    for pattern in manifest.get("owned_globs", []):
        for match in sorted(glob.glob(str(on_root(target, pattern)), recursive=True)):
            node_path = to_node(target, Path(match))
            host = Path(match)
            if node_path in listed or node_path.startswith(SNAPSHOT_DIR) or host.is_dir():
                continue
            if fnmatch.fnmatch(node_path, pattern):
                listed.add(node_path)
                steps.append(Step(node_path, "remove", "not in the snapshot"))
    return steps


def _raise_filesystem(exc: OSError, doing: str) -> None:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise errors.LocalFilesystemError(f"disk full while {doing}") from None
    raise errors.LocalFilesystemError(f"{doing}: {exc.strerror}") from None


@dataclass
class Applier:
    """Applies steps from a verified staging tree onto the target and can undo them."""

    target: Path
    staging: Path
    backups: Path
    undo: list[tuple[str, Path, Path | None]] = field(default_factory=list)

    def _keep(self, host: Path) -> Path:
        kept = self.backups / f"{len(self.undo):06d}"
        if host.is_symlink():
            os.symlink(os.readlink(host), kept)
        elif host.is_dir():
            kept.mkdir()
        else:
            shutil.copy2(host, kept)
            info = host.lstat()
            os.chown(kept, info.st_uid, info.st_gid)
        return kept

    def _contained(self, host: Path) -> None:
        """Refuse to write where a symlink on the way would lead outside the target."""
        if host == self.target:
            return
        real_target = os.path.realpath(self.target)
        real_parent = os.path.realpath(host.parent)
        if os.path.commonpath([real_target, real_parent]) != real_target:
            raise errors.Refused(f"{host} would be written through a symlink leaving the target")

    def _install(self, entry: dict, host: Path) -> None:
        """Put the staged entry at host via a temporary name in the same directory."""
        self._make_parents(host.parent)
        self._contained(host)
        if entry["type"] == "dir":
            if not host.is_dir():
                host.mkdir()
            os.chown(host, entry["uid"], entry["gid"])
            os.chmod(host, int(entry["mode"], 8))
            return
        temporary = host.with_name(f".{host.name}.drkit-new")
        if temporary.exists() or temporary.is_symlink():
            temporary.unlink()
        if entry["type"] == "symlink":
            os.symlink(entry["link"], temporary)
            os.lchown(temporary, entry["uid"], entry["gid"])
        else:
            staged = on_root(self.staging, entry["path"])
            try:
                os.replace(staged, host)  # verified in staging: owner, mode, mtime, content
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            shutil.copyfile(staged, temporary)
            os.chown(temporary, entry["uid"], entry["gid"])
            os.chmod(temporary, int(entry["mode"], 8))
            mtime = datetime.fromisoformat(entry["mtime"].replace("Z", "+00:00")).timestamp()
            os.utime(temporary, (mtime, mtime))
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, host)

    def _make_parents(self, directory: Path) -> None:
        """Create missing parent directories with the staged tree's owner and mode."""
        if directory.exists():
            return
        self._make_parents(directory.parent)
        self._contained(directory)
        directory.mkdir()
        self.undo.append(("added", directory, None))
        staged = on_root(self.staging, to_node(self.target, directory))
        if staged.is_dir():
            info = staged.stat()
            os.chown(directory, info.st_uid, info.st_gid)
            os.chmod(directory, stat.S_IMODE(info.st_mode))

    def apply(self, steps: list[Step], entries: dict[str, dict]) -> None:
        """Apply add/change/remove steps; on any failure undo everything and raise."""
        self.backups.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            for step in sorted(steps, key=lambda s: s.path):
                host = on_root(self.target, step.path)
                doing = f"restoring {step.path}"
                if step.action == "add":
                    self._install(entries[step.path], host)
                    self.undo.append(("added", host, None))
                elif step.action == "change":
                    kept = self._keep(host)
                    self.undo.append(("replaced", host, kept))
                    if host.is_dir() != (entries[step.path]["type"] == "dir"):
                        _remove(host)
                    self._install(entries[step.path], host)
                elif step.action == "remove":
                    doing = f"removing {step.path}"
                    self._contained(host)
                    kept = self._keep(host)
                    self.undo.append(("removed", host, kept))
                    _remove(host)
        except OSError as exc:
            self.rollback()
            _raise_filesystem(exc, doing)
        except BaseException:
            self.rollback()
            raise
        os.sync()  # one flush for the whole apply instead of one per file

    def write_text(self, host: Path, text: str, mode: int, uid: int = 0, gid: int = 0) -> None:
        """Replace (or create) a text file atomically, keeping the old one for rollback."""
        try:
            if host.exists():
                info = host.stat()
                mode, uid, gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
                self.undo.append(("replaced", host, self._keep(host)))
            else:
                self._make_parents(host.parent)
                self.undo.append(("added", host, None))
            temporary = host.with_name(f".{host.name}.drkit-new")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chown(temporary, uid, gid)
            os.chmod(temporary, mode)
            os.replace(temporary, host)
        except OSError as exc:
            self.rollback()
            _raise_filesystem(exc, f"writing {host}")

    def rollback(self) -> None:
        """Undo applied steps in reverse order: restore kept copies, remove additions."""
        for action, host, kept in reversed(self.undo):
            try:
                if action == "added":
                    _remove(host)
                elif kept is not None:
                    if host.exists() or host.is_symlink():
                        _remove(host)
                    if kept.is_dir() and not kept.is_symlink():
                        host.mkdir(exist_ok=True)
                    else:
                        shutil.move(kept, host)
            except OSError as exc:
                log.error("rollback of %s failed: %s", host, exc.strerror)
        self.undo.clear()


def _remove(host: Path) -> None:
    if host.is_dir() and not host.is_symlink():
        shutil.rmtree(host)
    elif host.exists() or host.is_symlink():
        host.unlink()
