"""drkit's own local files (state, config, keys, locks, reports): explicit modes, whatever the
umask, and writes that a kill or a full disk never leaves half done.

A file is written to `<name>.tmp` beside it (mode set with fchmod, synced), renamed over the
old one, and the directory synced: after a crash the name holds the old bytes or the new ones.
A write that fails (disk full) removes its temporary file and raises LocalFilesystemError
(exit 9); a temporary file a kill left behind is replaced by the next write of that name.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

from drkit import errors


def _failure(path: Path, exc: OSError) -> errors.LocalFilesystemError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return errors.LocalFilesystemError(f"{path}: disk full, nothing written ({exc.strerror})")
    return errors.LocalFilesystemError(f"{path}: cannot write ({exc.strerror})")


def make_dirs(path: Path, mode: int = 0o700) -> None:
    """Create path with exactly mode and every missing parent 0755 (umask-independent: a
    parent such as state_dir stays traversable, for the smoke's files a server reads as its
    user); directories that exist are left as they are. Raise LocalFilesystemError."""
    missing = []
    current = Path(path)
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        wanted = mode if directory == missing[0] else 0o755
        try:
            os.mkdir(directory, wanted)
        except FileExistsError:
            continue  # made meanwhile by another run
        except OSError as exc:
            raise _failure(directory, exc) from None
        os.chmod(directory, wanted)


def sync_dir(directory: Path) -> None:
    """fsync a directory, so a rename or unlink inside it survives a crash."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2) (Python's os module has none), or None where libc lacks it."""
    import ctypes  # only a restore's apply needs it

    function = getattr(ctypes.CDLL(None, use_errno=True), "syncfs", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int]
    return cast(Callable[[int], int], function)


def sync_filesystem(path: Path) -> None:
    """Flush every file of the filesystem holding path to disk, with ONE syncfs(2): a staged
    tree of any number of files made durable without an fsync per file (os.sync(), every
    filesystem of the host, where libc has no syncfs). Raise OSError when the flush fails."""
    function = _syncfs()
    if function is None:
        os.sync()
        return
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if function(descriptor) != 0:
            import ctypes

            number = ctypes.get_errno()
            raise OSError(number, os.strerror(number), str(path))
    finally:
        os.close(descriptor)


def write_atomic(path: Path, data: bytes, mode: int = 0o600, dir_mode: int = 0o700) -> None:
    """Replace path with data (mode exactly `mode`), through `<name>.tmp`, fsync and a rename;
    missing parents get dir_mode. Raise LocalFilesystemError; no temporary file is left."""
    path = Path(path)
    make_dirs(path.parent, dir_mode)
    temporary = path.with_name(path.name + ".tmp")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)  # a kill's leftover, or a link planted in its place
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        descriptor = os.open(temporary, flags, mode)
        try:
            os.fchmod(descriptor, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
        sync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise _failure(path, exc) from None


def remove(path: Path) -> None:
    """Remove a file when it exists and sync its directory (a step of a journalled change)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    sync_dir(Path(path).parent)
