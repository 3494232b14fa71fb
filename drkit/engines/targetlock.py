"""A target's apply lock, and the directories drkit makes in a target for it.

The lock is a file beside the target's staging directory (`/var/lib/drkit/staging.lock`),
flocked for the whole apply, with a holder record beside it; every component of its path is
reached without following links (drkit.engines.beneath), so a link planted there is refused,
and what the lock made is removed after it when empty. Modes are explicit, whatever the umask.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from drkit import errors, units
from drkit.engines import beneath, holder
from drkit.paths import joined

STAGING = "/var/lib/drkit/staging"
APPLY_LOCK = "/var/lib/drkit/staging.lock"
TEMPORARY_SUFFIX = ".drkit-new"
PARENT_MODE = 0o755  # a directory restore makes that the manifest does not list


def owner() -> tuple[int, int]:
    """Who owns what drkit makes unlisted: root when run as root (a restore), else the runner."""
    return os.geteuid(), os.getegid()


def parent_maker(directory: Path) -> tuple[int, int, int]:
    """A directory made on the way to something drkit writes: 0755, see owner()."""
    return (PARENT_MODE, *owner())


def private_maker(directory: Path) -> tuple[int, int, int]:
    """A directory of drkit's own (staging, its journal's): 0700, see owner()."""
    return (0o700, *owner())


def raise_filesystem(exc: OSError, doing: str) -> NoReturn:
    """Raise LocalFilesystemError for an OSError while doing something (disk full named)."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise errors.LocalFilesystemError(f"disk full while {doing}") from None
    raise errors.LocalFilesystemError(f"{doing}: {exc.strerror}") from None


def prepare_target(target: Path) -> list[Path]:
    """Create target and its missing parents 0755 (whatever the umask); return those created,
    deepest first, so a refused restore can remove them again."""
    created = []
    directory = target
    while not os.path.lexists(directory):
        created.append(directory)
        directory = directory.parent
    for missing in reversed(created):
        os.mkdir(missing, 0o700)
        os.chmod(missing, PARENT_MODE)
    return created


def remove_empty(target: Path, directories: list[Path]) -> None:
    """Remove each of directories (deepest first) beneath target that is empty."""
    for directory in directories:
        with (
            contextlib.suppress(OSError, errors.Refused, ValueError),
            beneath.parent(target, directory) as (fd, name),
        ):
            os.rmdir(name, dir_fd=fd)


@contextlib.contextmanager
def target_lock(target: Path, timeout: float = 60.0) -> Iterator[Path]:
    """Hold the target's apply lock (a file beside its staging directory); yield the staging
    directory. Raise Busy when another apply holds it past `timeout` seconds.

    Two restores (or a restore and a standby sync) onto one target would otherwise each see
    the other's journal and staging as debris of a killed run. The lock file is not inside the
    staging directory, whose leftovers `recover()` removes. It and the directories made for it
    are removed after it when empty, so a failed restore leaves the target as it was. Every
    one of them is reached without following a link (a planted one is refused).
    """
    lock_path = joined(target, APPLY_LOCK)
    staging_parent = joined(target, STAGING)
    created: list[Path] = []

    def made(directory: Path) -> tuple[int, int, int]:
        created.insert(0, directory)
        return parent_maker(directory)

    descriptor = _acquire(target, lock_path, timeout, made)
    ours = [Path(lock_path).name]  # unlinked at the end: the lock, and its holder once written
    try:
        try:
            with beneath.parent(target, lock_path) as (dir_fd, name):
                beneath.refuse_unless_regular(dir_fd, f"{name}.holder", f"{APPLY_LOCK}.holder")
                _write_replacing(dir_fd, f"{name}.holder", holder.record().encode(), 0o600)
                ours.insert(0, f"{name}.holder")
            if beneath.lstat(target, staging_parent) is None:
                created.insert(0, staging_parent)
            with beneath.directory(target, staging_parent, private_maker, listable=True) as fd:
                os.fchmod(fd, 0o700)
        except OSError as exc:
            raise_filesystem(exc, f"creating {staging_parent}")
        yield staging_parent
    finally:
        # Unlinked while still held: a waiter that opened this file sees it gone once it gets
        # the lock (st_nlink 0) and takes a new one, so no two holders overlap.
        with (
            contextlib.suppress(OSError, errors.Refused),
            beneath.parent(target, lock_path) as (dir_fd, name),
        ):
            for leftover in ours:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover, dir_fd=dir_fd)
        os.close(descriptor)
        remove_empty(target, created)


def _acquire(target: Path, lock_path: Path, timeout: float, made: beneath.Maker) -> int:
    """Open and flock the lock file (a regular file, never a link); return its descriptor."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with beneath.parent(target, lock_path, made) as (dir_fd, name):
                flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
                try:
                    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                    raise errors.Refused(
                        f"{target}: {APPLY_LOCK} is a symlink; drkit never writes through one"
                    ) from None
        except FileNotFoundError:
            fd = None  # another apply removed the directory, empty after its lock: again
        except OSError as exc:
            raise_filesystem(exc, f"creating {lock_path}")
        if fd is not None:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                os.close(fd)
                raise errors.Refused(f"{target}: {APPLY_LOCK}: {beneath.kind(info)}, not a file")
            os.fchmod(fd, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_nlink > 0:
                    return fd
            except BlockingIOError:
                pass
            os.close(fd)
        if time.monotonic() >= deadline:
            raise errors.Busy(_busy(target, lock_path, timeout))
        time.sleep(0.2)


def _busy(target: Path, lock_path: Path, waited: float) -> str:
    try:
        raw = beneath.read_bytes(target, holder.holder_path(lock_path), limit=1 << 16)
    except (OSError, errors.Refused):
        raw = None
    return (
        f"another drkit restore or sync is applying to {target}: "
        f"{holder.describe_text(raw.decode(errors='replace') if raw else None)}"
        f"; waited {units.duration(waited)}"
    )


def _write_replacing(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Write dir_fd/name afresh through a temporary name (a link there is replaced, never
    followed)."""
    temporary = f".{name}{TEMPORARY_SUFFIX}"
    beneath.remove(dir_fd, temporary)
    beneath.write_new(dir_fd, temporary, data, mode, *owner())
    os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
