"""File hashes: the sha256 of a file read in chunks, and the cache that spares an unchanged
file its read on the next backup."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
from pathlib import Path
from typing import BinaryIO

from drkit.engines import durable
from drkit.paths import host_path

CHUNK = 1 << 20


def sha256_file(path: str | Path, dir_fd: int | None = None) -> str:
    """Return the hex sha256 of a regular file, read in chunks (files are never loaded whole);
    relative to dir_fd, a final link is not followed. A FIFO or device is never waited on:
    OSError(EINVAL)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    fd = os.open(path, flags | (os.O_NOFOLLOW if dir_fd is not None else 0), dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
        digest, buffer = hashlib.sha256(), _buffer()
        while read := os.readv(fd, [buffer]):  # into this thread's buffer: no bytes per read
            digest.update(memoryview(buffer)[:read])
        return digest.hexdigest()
    finally:
        os.close(fd)


_LOCAL = threading.local()


def _buffer() -> bytearray:
    """Return this thread's read buffer (CHUNK bytes), made on its first use."""
    buffer: bytearray | None = getattr(_LOCAL, "buffer", None)
    if buffer is None:
        buffer = _LOCAL.buffer = bytearray(CHUNK)
    return buffer


def sha256_handle(handle: BinaryIO) -> str:
    """Return the hex sha256 of what is left to read from an open binary file, in chunks."""
    digest = hashlib.sha256()
    while block := handle.read(CHUNK):
        digest.update(block)
    return digest.hexdigest()


def _stat_key(info: os.stat_result) -> list[int | str]:
    return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino]


class HashCache:
    """sha256 of files whose size, mtime, ctime and inode are unchanged since the last backup.

    Kept in drkit's root-owned state directory (0600): an unchanged re-backup then costs a
    stat per file, not a read of every byte.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.old: dict[str, list[int | str]] = {}
        self.new: dict[str, list[int | str]] = {}
        if path and path.is_file():
            try:
                stored = json.loads(path.read_text()).get("files", {})
            except (OSError, ValueError, AttributeError):
                stored = {}
            self.old = stored if isinstance(stored, dict) else {}

    def cached(self, node_path: str, info: os.stat_result) -> str | None:
        """Return the file's sha256 when its stat is unchanged since it was hashed, else None.
        Each path is asked once: its old line is dropped (memory does not hold both runs')."""
        cached = self.old.pop(node_path, None)
        if not cached or len(cached) != 5 or cached[:4] != _stat_key(info):
            return None
        return cached[4] if isinstance(cached[4], str) else None

    def remember(self, node_path: str, info: os.stat_result, digest: str) -> None:
        """Keep the sha256 of a file as it was when hashed, for the next run."""
        self.new[node_path] = [*_stat_key(info), digest]

    def changed_since(self, root: Path) -> list[str]:
        """Return the node paths whose size, mtime, ctime or inode moved since they were hashed."""
        moved: list[str] = []
        for node_path, recorded in self.new.items():
            try:
                info = os.lstat(host_path(root, node_path))
            except FileNotFoundError:
                moved.append(node_path)
                continue
            if _stat_key(info) != recorded[:4]:
                moved.append(node_path)
        return moved

    def save(self) -> None:
        """Write what this run hashed, replacing the previous cache atomically."""
        if self.path:
            durable.write_atomic(self.path, json.dumps({"files": self.new}).encode(), 0o600, 0o700)
