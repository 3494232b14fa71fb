"""SQLite databases a server names: consistent copies, and their integrity check.

A server writes its SQLite database (ProFTPD's mod_sql users and SQLLog, SFTPPlus's event log)
while drkit reads it, and a copy of its bytes can be torn (`database disk image is malformed`).
So backup copies each one with SQLite's online backup API, opened read-only through a directory
reached beneath the root (no link on the way is followed), into COPIES_DIR inside drkit's
snapshot directory, at the database's own path beneath it. The manifest lists the database at
its path (category `databases`) with the copy's size and sha256; restic stores the copy, never
the live file nor its -wal, -shm or -journal (a stale journal beside a restored copy would be
replayed into it). Restore moves each copy to its path in staging before anything is verified;
restore's checks, check, verify and the drill run `PRAGMA integrity_check` on it and fail
naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from drkit import errors
from drkit.engines import beneath, durable
from drkit.engines.filehash import HashCache, sha256_file
from drkit.engines.manifest import SNAPSHOT_DIR
from drkit.model import Check, Database, FileRecord, Manifest, failed, passed
from drkit.paths import host_path, joined, on_root, resolve, shown, to_node

CATEGORY = "databases"
COPIES_DIR = f"{SNAPSHOT_DIR}/databases"
SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
HEADER = b"SQLite format 3\0"
BUSY_SECONDS = 30.0
OK = "ok"  # check_file's answer for a database that passes


@dataclass(frozen=True)
class Copy:
    """A consistent copy of one SQLite database: its node path (links resolved inside the
    root), the copy's size and sha256, and integrity_check's complaint (None when ok)."""

    path: str
    size: int
    sha256: str
    problem: str | None


def stored_path(node_path: str) -> str:
    """Return where the snapshot holds the copy of the database at node_path."""
    return COPIES_DIR + node_path


def side_paths(node_path: str) -> list[str]:
    """Return the paths of a database's journal files (never backed up nor restored)."""
    return [node_path + suffix for suffix in SIDE_SUFFIXES]


def integrity_problem(connection: sqlite3.Connection) -> str | None:
    """Return PRAGMA integrity_check's first complaint, or None when it says ok."""
    try:
        rows = connection.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    lines = [str(row[0]) for row in rows]
    return None if lines == ["ok"] else "; ".join(lines[:3])


def copy_all(root: Path, databases: Iterable[Database]) -> tuple[list[Copy], list[str]]:
    """Copy every SQLite database named into COPIES_DIR beneath root (what was there before is
    removed first); return (the copies, warnings). A database that is missing, empty or not a
    regular file is not copied (whether it should be there is the profile's to say); one that
    SQLite cannot read is backed up as its bytes, with a warning."""
    copies_host = on_root(root, COPIES_DIR)
    shutil.rmtree(copies_host, ignore_errors=True)
    copies: list[Copy] = []
    warnings: list[str] = []
    for database in databases:
        if database.engine != "sqlite" or not database.path:
            continue
        try:
            node_path = resolve(root, database.path)
        except OSError:
            continue
        if any(copy.path == node_path for copy in copies):
            continue
        try:
            found = beneath.lstat(root, Path(host_path(root, node_path)))
        except errors.Refused:
            found = None
        if found is None or not stat.S_ISREG(found.st_mode) or found.st_size == 0:
            continue  # missing (the profile says whether it should be there) or empty
        try:
            copy = _copy_one(root, node_path)
        except FileNotFoundError:
            continue
        except (sqlite3.Error, errors.Refused) as exc:
            warnings.append(
                f"{shown(database.path)} ({database.named_by}): not copied with SQLite's online "
                f"backup ({exc}); its bytes are backed up as they are read, and a restore's "
                "integrity_check judges them"
            )
            continue
        if copy.problem:
            warnings.append(
                f"{shown(node_path)} fails PRAGMA integrity_check ({copy.problem}): the copy "
                "is stored as it is, and a restore's check fails naming it"
            )
        copies.append(copy)
    return copies, warnings


def _copy_one(root: Path, node_path: str) -> Copy:
    """Copy one database into COPIES_DIR beneath root."""
    destination = on_root(root, stored_path(node_path))
    problem = copy_to(root, node_path, destination)
    return Copy(node_path, destination.stat().st_size, sha256_file(destination), problem)


def copy_to(root: Path, node_path: str, destination: Path) -> str | None:
    """Copy the database at node_path beneath root (links resolved by the caller; none
    followed here) to destination with SQLite's online backup API, opened read-only; give the
    copy the file's owner, mode and times; return integrity_check's complaint about the copy
    (None when ok). FileNotFoundError when it is missing, sqlite3.Error when SQLite fails."""
    host = Path(host_path(root, node_path))
    with beneath.directory(root, host.parent) as dir_fd:
        beneath.refuse_unless_regular(dir_fd, host.name, shown(node_path))
        info = os.stat(host.name, dir_fd=dir_fd, follow_symlinks=False)
        # the directory's descriptor stands for its path: SQLite finds -wal and -shm beside it
        uri = f"file:/proc/self/fd/{dir_fd}/{quote(host.name)}?mode=ro"
        source = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS)
        try:
            durable.make_dirs(destination.parent, 0o700)
            copy = sqlite3.connect(destination)
            try:
                source.backup(copy)
                problem = integrity_problem(copy)
            finally:
                copy.close()
        except BaseException:
            _remove(destination)  # no half-made copy stays to be stored
            raise
        finally:
            source.close()
    _remove(destination, side_paths(str(destination)))
    os.chown(destination, info.st_uid, info.st_gid)
    os.chmod(destination, stat.S_IMODE(info.st_mode))
    os.utime(destination, ns=(info.st_atime_ns, info.st_mtime_ns))
    return problem


def _remove(destination: Path, names: list[str] | None = None) -> None:
    """Remove the copy (or only the given names beside it), each if it is there."""
    for name in [str(destination), *side_paths(str(destination))] if names is None else names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def seal(
    node_manifest: Manifest, copies: list[Copy], warnings: list[str], cache: HashCache
) -> list[str]:
    """Make the manifest describe the copies: each database's entry gets category `databases`
    and the copy's size and sha256, its journal files' entries are dropped, the copies'
    warnings are added; the hash cache forgets the live files (written to while restic runs:
    not a change the backup waits out). Return the node paths restic must not read."""
    by_path = {copy.path: copy for copy in copies}
    sides = {side for copy in copies for side in side_paths(copy.path)}
    files = node_manifest.files
    files[:] = [entry for entry in files if entry.path not in sides]
    node_manifest.warnings += warnings
    for path in [*by_path, *sides]:
        cache.new.pop(path, None)
    for entry in files:
        copy = by_path.get(entry.path)
        if copy is not None and entry.type == "file":
            entry.category, entry.size, entry.sha256 = CATEGORY, copy.size, copy.sha256
    return sorted(by_path) + sorted(sides)


def place(staging: Path, files: list[FileRecord]) -> list[str]:
    """Move each database copy the staged snapshot holds to its own path in staging (a path
    held twice is refused; a missing parent is made as the manifest lists it), remove the
    emptied COPIES_DIR, and return the paths placed."""
    dirs = {entry.path: entry for entry in files if entry.type == "dir"}

    def make(host: Path) -> tuple[int, int, int]:
        entry = dirs.get(to_node(staging, host))
        return (int(entry.mode, 8), entry.uid, entry.gid) if entry else (0o755, 0, 0)

    placed = []
    for entry in files:
        if entry.category != CATEGORY or entry.type != "file":
            continue
        source = joined(staging, stored_path(entry.path))
        if beneath.lstat(staging, source) is None:
            continue
        target = joined(staging, entry.path)
        if beneath.lstat(staging, target) is not None:
            raise errors.Refused(
                f"{shown(entry.path)}: held twice in the snapshot (as itself and as its "
                "database copy)"
            )
        with (
            beneath.parent(staging, source) as (source_fd, source_name),
            beneath.parent(staging, target, make) as (target_fd, target_name),
        ):
            os.rename(source_name, target_name, src_dir_fd=source_fd, dst_dir_fd=target_fd)
        placed.append(entry.path)
    _remove_empty(staging, joined(staging, COPIES_DIR))
    return placed


def _remove_empty(staging: Path, top: Path) -> None:
    """Remove the directories under top (and top) that are empty, deepest first; anything
    left in them stays for the screening to refuse."""
    info = beneath.lstat(staging, top)
    if info is None or not stat.S_ISDIR(info.st_mode):  # a link is left for the screening
        return
    for directory, _, _ in sorted(os.walk(top), key=lambda item: -len(item[0])):
        with contextlib.suppress(OSError):
            os.rmdir(directory)


def check_file(root: Path, node_path: str) -> str | None:
    """Return integrity_check's complaint about the SQLite file at node_path beneath root, OK
    when it passes, None when it is missing or is not an SQLite file (a dump, a text file)."""
    host = joined(root, node_path)
    try:
        with beneath.parent(root, host) as (dir_fd, name):
            fd = beneath.open_regular(dir_fd, name, shown(node_path))
            with os.fdopen(fd, "rb") as handle:
                if handle.read(len(HEADER)) != HEADER:
                    return None
            uri = f"file:/proc/self/fd/{dir_fd}/{quote(name)}?mode=ro"
            connection = sqlite3.connect(uri, uri=True, timeout=BUSY_SECONDS)
            try:
                return integrity_problem(connection) or OK
            finally:
                connection.close()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def checks(root: Path, files: list[FileRecord]) -> list[Check]:
    """Return one check per SQLite database among the entries: integrity_check on root's."""
    found = []
    for entry in files:
        if entry.category != CATEGORY or entry.type != "file":
            continue
        problem = check_file(root, entry.path)
        if problem is None:
            continue
        name = f"database {shown(entry.path)}"
        found.append(
            passed(name, "PRAGMA integrity_check ok")
            if problem == OK
            else failed(name, f"PRAGMA integrity_check: {problem}")
        )
    return found
