"""Plan and apply a verified snapshot onto a target, atomically per file, with rollback.

Every replaced or removed file is first kept aside; a failure part way through puts each one
back and removes what was added, so a failed restore leaves the target as it was.

A journal (`/var/lib/drkit/apply-journal.jsonl` inside the target) records each step before it
is taken, so a process killed part way through (SIGKILL, OOM, power cut of drkit alone) leaves
enough behind for the next run: `recover()` rolls an unfinished apply back, or finishes the
clean-up of one that reached its commit record. Either way the target ends wholly as it was or
wholly as the snapshot says, never half of each.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import glob
import json
import logging
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import filelock

from drkit import errors, units
from drkit.engines import holder
from drkit.engines.manifest import SNAPSHOT_DIR, compare_entry
from drkit.model import parse_utc
from drkit.paths import entry_on_root, host_path, on_root, to_node

log = logging.getLogger(__name__)

JOURNAL = "/var/lib/drkit/apply-journal.jsonl"
STAGING = "/var/lib/drkit/staging"
APPLY_LOCK = "/var/lib/drkit/staging.lock"
TEMPORARY_SUFFIX = ".drkit-new"


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
        host = host_path(target, entry["path"])
        if not os.path.lexists(host):
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


def journal_path(target: Path) -> Path:
    """Return where the apply journal of a target lives."""
    return on_root(target, JOURNAL)


@contextlib.contextmanager
def target_lock(target: Path, timeout: float = 60.0) -> Iterator[Path]:
    """Hold the target's apply lock (a filelock beside its staging directory); yield the
    staging directory. Raise Busy when another apply holds it past `timeout` seconds.

    Two restores (or a restore and a standby sync) onto one target would otherwise each see
    the other's journal and staging as debris of a killed run. The lock file is not inside the
    staging directory, whose leftovers `recover()` removes. It and the directories made for it
    are removed after it when empty, so a failed restore leaves the target as it was.
    """
    lock_path = on_root(target, APPLY_LOCK)
    staging_parent = on_root(target, STAGING)
    created = [path for path in (lock_path.parent, *lock_path.parent.parents) if not path.exists()]
    lock = filelock.FileLock(lock_path, mode=0o600)
    deadline = time.monotonic() + timeout
    while True:
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=max(0.0, deadline - time.monotonic()), poll_interval=0.2)
            break
        except filelock.Timeout:
            raise errors.Busy(_busy(target, lock_path, timeout)) from None
        except FileNotFoundError:
            # another apply removed the directory, empty after its lock: make it again
            if time.monotonic() >= deadline:
                raise errors.Busy(_busy(target, lock_path, timeout)) from None
            time.sleep(0.05)
        except OSError as exc:
            _raise_filesystem(exc, f"creating {lock_path}")
    try:
        try:
            holder.write(lock_path)
            staging_parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            _raise_filesystem(exc, f"creating {staging_parent}")
        yield staging_parent
    finally:
        # Unlinked while still held: a waiter that opened this file sees it gone once it gets
        # the lock (filelock checks st_nlink) and takes a new one, so no two holders overlap.
        with contextlib.suppress(OSError):
            holder.clear(lock_path)
            lock_path.unlink()
        lock.release()
        for directory in created:
            with contextlib.suppress(OSError):
                directory.rmdir()


def _busy(target: Path, lock_path: Path, waited: float) -> str:
    return (
        f"another drkit restore or sync is applying to {target}: {holder.describe(lock_path)}"
        f"; waited {units.duration(waited)}"
    )


@dataclass
class Undo:
    """One journalled step: what was done to a host path and where its old self is kept."""

    action: str  # added | replaced | removed
    host: Path
    kept: Path | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class Journal:
    """Append-only JSON lines, written before each step is taken; see the module docstring."""

    def __init__(self, path: Path, target: Path):
        self.path = path
        self.target = target
        self._descriptor: int | None = None

    def begin(self, **about) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._descriptor = os.open(
            self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600
        )
        self._write({"begin": about})
        os.fsync(self._descriptor)

    def _write(self, record: dict) -> None:
        if self._descriptor is not None:
            os.write(self._descriptor, json.dumps(record).encode() + b"\n")

    def record(self, undo: Undo) -> None:
        """Write the step's record; the page cache keeps it should this process be killed."""
        self._write(
            {
                "op": undo.action,
                "path": to_node(self.target, undo.host),
                "kept": to_node(self.target, undo.kept) if undo.kept else None,
                "mode": undo.mode,
                "uid": undo.uid,
                "gid": undo.gid,
            }
        )

    def commit(self) -> None:
        """Mark the apply complete (the point after which recovery finishes, not undoes)."""
        if self._descriptor is not None:
            os.fsync(self._descriptor)
            self._write({"commit": True})
            os.fsync(self._descriptor)

    def close(self, remove: bool = True) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)
            self._descriptor = None
        if remove:
            self.path.unlink(missing_ok=True)


def read_journal(target: Path) -> tuple[dict | None, list[Undo], bool]:
    """Return (begin record, undo records in order, committed) of a target's journal."""
    path = journal_path(target)
    begin, undos, committed = None, [], False
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return None, [], False
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a record torn by the kill: its step was never taken
        if "begin" in record:
            begin = record["begin"]
        elif record.get("commit"):
            committed = True
        elif record.get("op") in ("added", "replaced", "removed"):
            undos.append(
                Undo(
                    record["op"],
                    entry_on_root(target, record["path"]),
                    entry_on_root(target, record["kept"]) if record.get("kept") else None,
                    record.get("mode"),
                    record.get("uid"),
                    record.get("gid"),
                )
            )
    return begin, undos, committed


def recover(target: Path) -> str | None:
    """Finish or roll back what a killed apply left on target; return what was done, or None.

    Call with the target lock held. A committed apply only needs its clean-up; an unfinished
    one is rolled back from its journal. Leftover staging directories are removed either way.
    """
    path = journal_path(target)
    staging_parent = on_root(target, STAGING)
    begin, undos, committed = read_journal(target)
    done = None
    if begin is not None or path.exists():
        snapshot = str((begin or {}).get("snapshot") or "?")[:8]
        if committed:
            done = f"finished an interrupted apply of snapshot {snapshot}"
        else:
            _undo(undos)
            done = f"rolled back an interrupted apply of snapshot {snapshot} ({len(undos)} step(s))"
        log.warning("%s on %s", done, target)
    if staging_parent.is_dir():
        for leftover in staging_parent.iterdir():
            _remove(leftover)
    path.unlink(missing_ok=True)
    return done


def _undo(undos: list[Undo]) -> None:
    """Undo steps in reverse order: restore kept copies, remove additions. Idempotent, so a
    rollback killed part way can simply be run again."""
    for undo in reversed(undos):
        host = undo.host
        try:
            _remove_temporary(host)
            if undo.action == "added":
                if host.is_dir() and not host.is_symlink():
                    with contextlib.suppress(OSError):
                        host.rmdir()  # only ever empty once its children are undone
                elif host.exists() or host.is_symlink():
                    host.unlink()
                continue
            kept = undo.kept
            if kept is None:
                continue
            if kept.is_dir() and not kept.is_symlink() and not any(kept.iterdir()):
                # a directory whose metadata changed: put the metadata back
                if not (host.is_dir() and not host.is_symlink()):
                    if host.exists() or host.is_symlink():
                        _remove(host)
                    host.mkdir()
                if undo.uid is not None:
                    os.chown(host, undo.uid, undo.gid if undo.gid is not None else -1)
                if undo.mode is not None:
                    os.chmod(host, undo.mode)
                kept.rmdir()
                continue
            if not (kept.exists() or kept.is_symlink()):
                continue  # already put back by an earlier, interrupted rollback
            if host.exists() or host.is_symlink():
                _remove(host)
            _move(kept, host)
        except OSError as exc:
            log.error("rollback of %s failed: %s", host, exc.strerror)


def _move(source: Path, destination: Path) -> None:
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, destination)


def _remove_temporary(host: Path) -> None:
    temporary = host.with_name(f".{host.name}{TEMPORARY_SUFFIX}")
    with contextlib.suppress(OSError):
        if temporary.is_symlink() or temporary.is_file():
            temporary.unlink()


@dataclass
class Applier:
    """Applies steps from a verified staging tree onto the target and can undo them.

    With a journal path, every step is recorded before it is taken (see `recover`); call
    `commit()` once the whole change (files, accounts) is in place.
    """

    target: Path
    staging: Path
    backups: Path
    journal: Path | None = None
    snapshot: str = ""
    undo: list[Undo] = field(default_factory=list)
    _journal: Journal | None = None
    _kept_count: int = 0
    _inside: dict[str, bool] = field(default_factory=dict)  # parent dir → stays in target

    @classmethod
    def journaled(cls, target: Path, staging: Path, snapshot: str) -> Applier:
        """Return the applier of a restore or sync of snapshot from staging onto target, with
        its journal (so the next run can roll a killed one back) and the replaced files kept in
        staging."""
        return cls(target, staging, staging / ".replaced", journal_path(target), snapshot)

    def _record(self, undo: Undo) -> None:
        if self._journal is None and self.journal is not None:
            self._journal = Journal(self.journal, self.target)
            self._journal.begin(
                staging=to_node(self.target, self.staging)
                if self.staging.is_relative_to(self.target)
                else str(self.staging),
                snapshot=self.snapshot,
            )
        self.undo.append(undo)
        if self._journal is not None:
            self._journal.record(undo)

    def _keep(self, host: Path, move: bool = False) -> Undo:
        """Put a copy of host aside (or host itself, with move) and return its undo record."""
        self.backups.mkdir(mode=0o700, parents=True, exist_ok=True)
        kept = self.backups / f"{self._kept_count:06d}"
        self._kept_count += 1
        info = host.lstat()
        undo = Undo("replaced", host, kept, stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
        if move:
            _move(host, kept)
        elif host.is_symlink():
            os.symlink(os.readlink(host), kept)
        elif host.is_dir():
            kept.mkdir()
        else:
            shutil.copy2(host, kept)
            os.chown(kept, info.st_uid, info.st_gid)
        return undo

    def _contained(self, host: Path) -> None:
        """Refuse to write where a symlink on the way would lead outside the target."""
        if host == self.target:
            return
        parent = str(host.parent)
        if parent not in self._inside:
            real_target = os.path.realpath(self.target)
            real_parent = os.path.realpath(parent)
            self._inside[parent] = os.path.commonpath([real_target, real_parent]) == real_target
        if not self._inside[parent]:
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
        if entry["type"] == "file":
            staged = host_path(self.staging, entry["path"])
            try:
                os.replace(staged, host)  # verified in staging: owner, mode, mtime, content
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        temporary = host.with_name(f".{host.name}{TEMPORARY_SUFFIX}")
        if temporary.exists() or temporary.is_symlink():
            temporary.unlink()
        if entry["type"] == "symlink":
            self._inside.clear()  # a new symlink may change where later paths lead
            os.symlink(entry["link"], temporary)
            os.lchown(temporary, entry["uid"], entry["gid"])
        else:
            shutil.copyfile(staged, temporary)
            os.chown(temporary, entry["uid"], entry["gid"])
            os.chmod(temporary, int(entry["mode"], 8))
            mtime = parse_utc(entry["mtime"]).timestamp()
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
        self._record(Undo("added", directory))
        directory.mkdir()
        staged = entry_on_root(self.staging, to_node(self.target, directory))
        if staged.is_dir():
            info = staged.stat()
            os.chown(directory, info.st_uid, info.st_gid)
            os.chmod(directory, stat.S_IMODE(info.st_mode))

    def apply(self, steps: list[Step], entries: dict[str, dict]) -> None:
        """Apply add/change/remove steps; on any failure undo everything and raise."""
        doing = "preparing the apply"
        try:
            self.backups.mkdir(mode=0o700, parents=True, exist_ok=True)
            for step in sorted(steps, key=lambda s: s.path):
                host = entry_on_root(self.target, step.path)
                doing = f"restoring {step.path}"
                if step.action == "add":
                    self._contained(host)
                    self._record(Undo("added", host))
                    self._install(entries[step.path], host)
                elif step.action == "change":
                    self._contained(host)
                    becomes_dir = entries[step.path]["type"] == "dir"
                    was_dir = host.is_dir() and not host.is_symlink()
                    # a directory that becomes something else is moved aside whole, so its
                    # contents come back on rollback
                    self._record(self._keep(host, move=was_dir and not becomes_dir))
                    if not was_dir and becomes_dir:
                        _remove(host)
                    self._install(entries[step.path], host)
                elif step.action == "remove":
                    doing = f"removing {step.path}"
                    self._contained(host)
                    undo = self._keep(host)
                    undo.action = "removed"
                    self._record(undo)
                    _remove(host)
        except OSError as exc:
            self.rollback()
            _raise_filesystem(exc, doing)
        except BaseException:
            self.rollback()
            raise
        os.sync()  # one flush for the whole apply instead of one per file

    def make_dir(self, host: Path, mode: int, uid: int, gid: int) -> None:
        """Create a directory (and its missing parents, root 0755) undone on rollback."""
        try:
            self._make_parents(host.parent)
            self._contained(host)
            self._record(Undo("added", host))
            host.mkdir()
            os.chown(host, uid, gid)
            os.chmod(host, mode)
        except OSError as exc:
            self.rollback()
            _raise_filesystem(exc, f"creating {host}")

    def write_text(
        self, host: Path, text: str | bytes, mode: int, uid: int = 0, gid: int = 0
    ) -> None:
        """Replace (or create) a file atomically, keeping the old one for rollback."""
        try:
            if host.exists():
                info = host.stat()
                mode, uid, gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
                self._record(self._keep(host))
            else:
                self._make_parents(host.parent)
                self._record(Undo("added", host))
            temporary = host.with_name(f".{host.name}{TEMPORARY_SUFFIX}")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(text.encode() if isinstance(text, str) else text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chown(temporary, uid, gid)
            os.chmod(temporary, mode)
            os.replace(temporary, host)
        except OSError as exc:
            self.rollback()
            _raise_filesystem(exc, f"writing {host}")
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        """Declare the change complete: flush, write the commit record, drop the journal."""
        os.sync()
        if self._journal is not None:
            self._journal.commit()
            self._journal.close(remove=True)
            self._journal = None
        self.undo.clear()

    def rollback(self) -> None:
        """Undo applied steps in reverse order: restore kept copies, remove additions."""
        _undo(self.undo)
        self.undo.clear()
        if self._journal is not None:
            self._journal.close(remove=True)
            self._journal = None


def _remove(host: Path) -> None:
    if host.is_dir() and not host.is_symlink():
        shutil.rmtree(host)
    elif host.exists() or host.is_symlink():
        host.unlink()
