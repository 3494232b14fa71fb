"""Plan and apply a verified snapshot onto a target, atomically per file, with rollback.

Every replaced or removed file is first kept aside; a failure part way through puts each one
back and removes what was added (children before the directories made for them), so a failed
or refused restore leaves the target as it was, directory for directory.

A journal (`/var/lib/drkit/apply-journal.jsonl` inside the target) records each step before it
is taken, so a process killed part way through (SIGKILL, OOM, power cut of drkit alone) leaves
enough behind for the next run: `recover()` rolls an unfinished apply back, or finishes the
clean-up of one that reached its commit record. Either way the target ends wholly as it was or
wholly as the snapshot says, never half of each.

Every path in the target is reached one component at a time without following links
(drkit.engines.beneath): a link planted where a directory is needed is refused, never written,
read or chmodded through. Everything made gets an explicit mode, whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from drkit import errors
from drkit.engines import beneath, durable
from drkit.engines.planning import Step, plan, whole_trees
from drkit.engines.targetlock import (
    APPLY_LOCK,
    STAGING,
    TEMPORARY_SUFFIX,
    owner,
    parent_maker,
    prepare_target,
    private_maker,
    remove_empty,
    target_lock,
)
from drkit.engines.targetlock import raise_filesystem as _raise_filesystem
from drkit.model import FileRecord
from drkit.paths import host_path, joined, on_root, shown, to_node

# callers reach the lock and on_root through this module
__all__ = [
    "APPLY_LOCK",
    "STAGING",
    "Step",
    "on_root",
    "plan",
    "prepare_target",
    "remove_empty",
    "target_lock",
]

log = logging.getLogger(__name__)

JOURNAL = "/var/lib/drkit/apply-journal.jsonl"


target_path = joined  # a path in a target, as written: the apply checks each component


def journal_path(target: Path) -> Path:
    """Return where the apply journal of a target lives."""
    return target_path(target, JOURNAL)


def read_text(target: Path, host: Path) -> str | None:
    """Return a regular file's text beneath target (None when missing), read without
    following a link or opening a FIFO or device (errors.Refused)."""
    data = beneath.read_bytes(target, host)
    return None if data is None else data.decode(errors="replace")


def staged_files(staging: Path, node_dir: str) -> list[tuple[str, bytes]]:
    """Return (name, content) of the regular files in a staged directory, sorted by name,
    read without following links (errors.Refused for a link, FIFO or device there)."""
    found = []
    with beneath.directory(staging, target_path(staging, node_dir), listable=True) as dir_fd:
        for name in sorted(os.listdir(dir_fd)):
            fd = beneath.open_regular(dir_fd, name, shown(f"{node_dir}/{name}"))
            with os.fdopen(fd, "rb") as handle:
                found.append((name, handle.read()))
    return found


@dataclass(slots=True)
class Undo:
    """One journalled step: what was done to a host path and where its old self is kept."""

    action: str  # added | added_tree (a directory moved in whole) | replaced | removed
    host: str  # host paths as text: one per step, held until the commit
    kept: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class Journal:
    """Append-only JSON lines, written before each step is taken; see the module docstring."""

    def __init__(self, path: Path, target: Path):
        self.path = path
        self.target = target
        self._descriptor: int | None = None

    def begin(self, **about: str) -> None:
        with beneath.parent(self.target, self.path, private_maker) as (dir_fd, name):
            beneath.refuse_unless_regular(dir_fd, name, JOURNAL)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_NOFOLLOW
            self._descriptor = os.open(name, flags | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        os.fchmod(self._descriptor, 0o600)
        self._write({"begin": about})
        os.fsync(self._descriptor)

    def _write(self, record: dict[str, object]) -> None:
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
            _unlink(self.target, self.path)


def _unlink(target: Path, host: Path) -> None:
    with contextlib.suppress(FileNotFoundError), beneath.parent(target, host) as (fd, name):
        os.unlink(name, dir_fd=fd)


def read_journal(target: Path) -> tuple[dict[str, object] | None, list[Undo], bool]:
    """Return (begin record, undo records in order, committed) of a target's journal."""
    begin: dict[str, object] | None = None
    undos: list[Undo] = []
    committed = False
    data = beneath.read_bytes(target, journal_path(target))
    if data is None:
        return None, [], False
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a record torn by the kill: its step was never taken
        if "begin" in record:
            begin = record["begin"]
        elif record.get("commit"):
            committed = True
        elif record.get("op") in ("added", "added_tree", "replaced", "removed"):
            undos.append(
                Undo(
                    record["op"],
                    host_path(target, record["path"]),
                    host_path(target, record["kept"]) if record.get("kept") else None,
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
    begin, undos, committed = read_journal(target)
    done = None
    if begin is not None or beneath.lstat(target, path) is not None:
        snapshot = str((begin or {}).get("snapshot") or "?")[:8]
        if committed:
            done = f"finished an interrupted apply of snapshot {snapshot}"
        else:
            _undo([target], undos)
            done = f"rolled back an interrupted apply of snapshot {snapshot} ({len(undos)} step(s))"
        log.warning("%s on %s", done, target)
    with (
        contextlib.suppress(FileNotFoundError),
        beneath.directory(target, target_path(target, STAGING), listable=True) as fd,
    ):
        for leftover in os.listdir(fd):
            beneath.remove(fd, leftover)
    _unlink(target, path)
    return done


def _root(roots: list[Path], host: Path | str) -> Path:
    """Return the first of roots that host lies beneath (lexically)."""
    for root in roots:
        if os.path.normpath(host).startswith(os.path.normpath(root).rstrip("/") + "/"):
            return root
    raise ValueError(f"{host} lies beneath none of {', '.join(map(str, roots))}")


def _undo(roots: list[Path], undos: list[Undo]) -> None:
    """Undo steps in reverse order: restore kept copies, remove additions (a directory is
    recorded before what is made in it, so it is empty by its turn). Idempotent, so a
    rollback killed part way can simply be run again. Nothing is followed on the way."""
    for undo in reversed(undos):
        try:
            _undo_one(roots, undo)
        except FileNotFoundError:
            continue  # its directory is already gone: nothing of it is left to undo
        except (OSError, errors.Refused, ValueError) as exc:
            log.error("rollback of %s failed: %s", undo.host, getattr(exc, "strerror", exc))


def _undo_one(roots: list[Path], undo: Undo) -> None:
    root = _root(roots, undo.host)
    with beneath.parent(root, undo.host) as (fd, name):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(f".{name}{TEMPORARY_SUFFIX}", dir_fd=fd)
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if undo.action == "added_tree" and info is not None:
            beneath.remove(fd, name)  # moved in whole: everything beneath it was added
            return
        if undo.action == "added":
            if info is not None and stat.S_ISDIR(info.st_mode):
                os.rmdir(name, dir_fd=fd)  # empty once what was made in it is undone
            elif info is not None:
                os.unlink(name, dir_fd=fd)
            return
        if undo.kept is None:
            return
        with beneath.parent(_root(roots, undo.kept), undo.kept) as (kept_fd, kept_name):
            try:
                kept = os.stat(kept_name, dir_fd=kept_fd, follow_symlinks=False)
            except FileNotFoundError:
                return  # already put back by an earlier, interrupted rollback
            if stat.S_ISDIR(kept.st_mode) and beneath.is_empty_directory(kept_fd, kept_name):
                # a directory whose metadata changed: put the metadata back
                if info is None or not stat.S_ISDIR(info.st_mode):
                    beneath.remove(fd, name)
                    os.mkdir(name, 0o700, dir_fd=fd)
                uid = undo.uid if undo.uid is not None else -1
                gid = undo.gid if undo.gid is not None else -1
                beneath.set_owner_mode(fd, name, undo.mode, uid, gid)
                os.rmdir(kept_name, dir_fd=kept_fd)
                return
            beneath.remove(fd, name)
            os.rename(kept_name, name, src_dir_fd=kept_fd, dst_dir_fd=fd)


@dataclass
class Applier:
    """Applies steps from a verified staging tree onto the target and can undo them.

    With a journal path, every step is recorded before it is taken (see `recover`); call
    `commit()` once the whole change (files, accounts) is in place. Paths in the target, in
    staging and among the kept copies are reached without following links (beneath).
    """

    target: Path
    staging: Path
    backups: Path
    journal: Path | None = None
    snapshot: str = ""
    undo: list[Undo] = field(default_factory=list)
    _journal: Journal | None = None
    _kept_count: int = 0
    flush: bool = True  # False: a throwaway target (a drill's sandbox) is never flushed
    _descents: dict[Path, beneath.Descent] = field(default_factory=dict)

    @classmethod
    def journaled(
        cls, target: Path, staging: Path, snapshot: str, *, flush: bool = True
    ) -> Applier:
        """Return the applier of a restore or sync of snapshot from staging onto target, with
        its journal (so the next run can roll a killed one back) and the replaced files kept in
        staging; flush=False for a throwaway target (no filesystem sync)."""
        backups = staging / ".replaced"
        return cls(target, staging, backups, journal_path(target), snapshot, flush=flush)

    @property
    def _roots(self) -> list[Path]:
        return [self.target, self.staging, self.backups.parent]

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

    def _made(self, directory: Path) -> tuple[int, int, int]:
        """A missing parent of something restored: journalled before it is made, root's
        0755 (the manifest lists the directories it restores, with their owner and mode)."""
        self._record(Undo("added", str(directory)))
        return parent_maker(directory)

    def _descent(self, root: Path) -> beneath.Descent:
        """Return the directory descriptors kept for root (the target, staging)."""
        if root not in self._descents:
            self._descents[root] = beneath.Descent(root)
        return self._descents[root]

    def _close_descents(self) -> None:
        for descent in self._descents.values():
            descent.close()
        self._descents.clear()

    @contextlib.contextmanager
    def _at(self, host: Path | str) -> Iterator[tuple[int, str]]:
        """Yield (descriptor of host's parent, host's name); missing parents are made."""
        if not os.path.lexists(self.target):
            prepare_target(self.target)
        yield self._descent(self.target).parent(host, self._made)

    def _keep(
        self, dir_fd: int, name: str, host: Path | str, action: str, move: bool = False
    ) -> None:
        """Record host's old self and put it aside: a copy (a link as a link, a directory as an
        empty directory standing for its metadata), or host itself with move. A FIFO, device
        or socket is moved, never opened. A move is recorded before it is made; a copy once it
        is whole (a kill part way through a copy must not leave half a file to put back)."""
        if not self.backups.exists():
            self.backups.mkdir(mode=0o700, parents=True)
            self.backups.chmod(0o700)
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        kept = self.backups / f"{self._kept_count:06d}"
        self._kept_count += 1
        undo = Undo(
            action, str(host), str(kept), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
        )
        regular, link = stat.S_ISREG(info.st_mode), stat.S_ISLNK(info.st_mode)
        kept_fd, kept_name = self._descent(_root(self._roots, kept)).parent(kept)
        if move or not (regular or link or stat.S_ISDIR(info.st_mode)):
            self._record(undo)
            if stat.S_ISDIR(info.st_mode):
                self._descent(self.target).forget(host)
            os.rename(name, kept_name, src_dir_fd=dir_fd, dst_dir_fd=kept_fd)
            return
        if link:
            os.symlink(os.readlink(name, dir_fd=dir_fd), kept_name, dir_fd=kept_fd)
        elif not regular:
            os.mkdir(kept_name, 0o700, dir_fd=kept_fd)
        else:
            source = beneath.open_regular(dir_fd, name, shown(str(host)))
            try:
                beneath.copy_new(source, kept_fd, kept_name)
            finally:
                os.close(source)
        self._record(undo)

    def _install(self, dir_fd: int, name: str, entry: FileRecord) -> None:
        """Put the staged entry at dir_fd/name via a temporary name in the same directory."""
        mode, uid, gid = int(entry.mode, 8), entry.uid, entry.gid
        if entry.type == "dir":
            if beneath.exists(dir_fd, name):
                beneath.set_owner_mode(dir_fd, name, mode, uid, gid)
            else:
                beneath.make_directory(dir_fd, name, mode, uid, gid)
            return
        temporary = f".{name}{TEMPORARY_SUFFIX}"
        beneath.remove(dir_fd, temporary)
        if entry.type == "symlink":
            os.symlink(entry.link or "", temporary, dir_fd=dir_fd)  # never None: validated
            os.chown(temporary, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
        else:
            staged_fd, staged_name = self._descent(self.staging).at(entry.path)
            try:  # verified in staging: owner, mode, mtime, content
                os.replace(staged_name, name, src_dir_fd=staged_fd, dst_dir_fd=dir_fd)
                return
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
            source = beneath.open_regular(staged_fd, staged_name, shown(entry.path))
            try:
                beneath.copy_new(source, dir_fd, temporary)
            finally:
                os.close(source)
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    def _move_tree(self, dir_fd: int, name: str, host: str, node_path: str) -> bool:
        """Move an added directory from staging into place whole, its verified contents with
        it (see planning.whole_trees); False when it cannot be (its name taken since the plan,
        or another filesystem): then it is added file by file."""
        staged = self._descent(self.staging)
        staged_fd, staged_name = staged.at(node_path)
        if beneath.exists(dir_fd, name):
            return False
        self._record(Undo("added_tree", host))
        try:
            os.rename(staged_name, name, src_dir_fd=staged_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            return False  # its record undoes nothing: the file-by-file records undo the rest
        staged.forget(host_path(self.staging, node_path))
        return True

    def apply(self, steps: list[Step], entries: dict[str, FileRecord]) -> None:
        """Apply add/change/remove steps, the staged tree made durable first (one syncfs for
        all its files, not an fsync each); on any failure undo everything and raise."""
        doing = "flushing the staged files to disk"
        try:
            if steps and self.flush:
                durable.sync_filesystem(self.staging)
            ordered = sorted(steps, key=lambda s: s.path)
            whole, moved = whole_trees(ordered, entries), "\0"
            for step in ordered:
                if step.path.startswith(moved):
                    continue  # in place with the directory moved in whole
                host = host_path(self.target, step.path)
                doing = f"restoring {shown(step.path)}"
                with self._at(host) as (fd, name):
                    if step.path in whole and self._move_tree(fd, name, host, step.path):
                        moved = step.path + "/"
                    elif step.action == "add":
                        self._record(Undo("added", host))
                        self._install(fd, name, entries[step.path])
                    elif step.action == "change":
                        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                        becomes_dir = entries[step.path].type == "dir"
                        if becomes_dir and stat.S_ISLNK(info.st_mode):
                            raise beneath._link_refused(self.target, Path(host), fd, name)
                        was_dir = stat.S_ISDIR(info.st_mode)
                        # a directory that becomes something else is moved aside whole, so
                        # its contents come back on rollback
                        self._keep(fd, name, host, "replaced", move=was_dir and not becomes_dir)
                        if not was_dir and becomes_dir:
                            beneath.remove(fd, name)
                        self._install(fd, name, entries[step.path])
                    elif step.action == "remove":
                        doing = f"removing {shown(step.path)}"
                        self._keep(fd, name, host, "removed", move=True)
        except BaseException as exc:
            self._failed(exc, doing)

    def make_dir(self, host: Path, mode: int, uid: int, gid: int) -> None:
        """Create a directory (and its missing parents, root 0755) undone on rollback."""
        try:
            with self._at(host) as (fd, name):
                self._record(Undo("added", str(host)))
                beneath.make_directory(fd, name, mode, uid, gid)
        except BaseException as exc:
            self._failed(exc, f"creating {host}")

    def private_directory(self, host: Path) -> None:
        """Make host a directory of mode 0700 (made, or its mode changed), undone on rollback;
        a link there is refused."""
        try:
            with self._at(host) as (fd, name):
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    self._record(Undo("added", str(host)))
                    beneath.make_directory(fd, name, 0o700, *owner())
                    return
                if stat.S_ISLNK(info.st_mode):
                    raise beneath._link_refused(self.target, host, fd, name)
                if not stat.S_ISDIR(info.st_mode):
                    raise beneath._not_directory(self.target, host)
                if stat.S_IMODE(info.st_mode) != 0o700:
                    self._keep(fd, name, host, "replaced")
                    beneath.set_owner_mode(fd, name, 0o700, info.st_uid, info.st_gid)
        except BaseException as exc:
            self._failed(exc, f"creating {host}")

    def write_text(
        self, host: Path, text: str | bytes, mode: int, uid: int = 0, gid: int = 0
    ) -> None:
        """Replace (or create) a regular file atomically, keeping the old one for rollback;
        a link, FIFO or device there is refused, never followed or opened."""
        try:
            with self._at(host) as (fd, name):
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    self._record(Undo("added", str(host)))
                else:
                    if not stat.S_ISREG(info.st_mode):
                        raise errors.Refused(
                            f"{self.target}: {shown(to_node(self.target, host))} is "
                            f"{beneath.kind(info)}, not a regular file; drkit replaces none"
                        )
                    mode, uid, gid = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
                    self._keep(fd, name, host, "replaced")
                temporary = f".{name}{TEMPORARY_SUFFIX}"
                beneath.remove(fd, temporary)
                data = text.encode() if isinstance(text, str) else text
                beneath.write_new(fd, temporary, data, mode, uid, gid)
                os.replace(temporary, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException as exc:
            self._failed(exc, f"writing {host}")

    def _failed(self, exc: BaseException, doing: str) -> NoReturn:
        """Undo what was applied, then raise exc (an OSError as the filesystem error it is)."""
        self.rollback()
        if isinstance(exc, OSError):
            _raise_filesystem(exc, doing)
        raise exc

    def commit(self) -> None:
        """Declare the change complete: flush the target's filesystem (one syncfs for every
        step), write the commit record, drop the journal."""
        self._close_descents()
        if self.flush:
            durable.sync_filesystem(self.target)
        if self._journal is not None:
            self._journal.commit()
            self._journal.close(remove=True)
            self._journal = None
        self.undo.clear()

    def rollback(self) -> None:
        """Undo applied steps in reverse order: restore kept copies, remove additions."""
        self._close_descents()
        _undo(self._roots, self.undo)
        self.undo.clear()
        if self._journal is not None:
            self._journal.close(remove=True)
            self._journal = None
