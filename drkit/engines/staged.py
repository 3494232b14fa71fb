"""Verify a staged restore against its signed manifest, hashing files while restic still writes.

restic reports each file as `restored` once its last byte is written (`--json -vv`). Hashing it
then, on worker threads, overlaps the verification (and the flush of large files to disk) with
the rest of the download instead of adding a second pass over every byte afterwards. Once restic
is done, every manifest entry is compared in full: type, size, mode, owner and link target; a
file hashed early counts only if it is still the same inode with the same size, otherwise it is
hashed again. A file restic never reported is simply hashed in that final pass. Nothing in
staging is reached through a link, and only regular files are opened (a FIFO never blocks).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from drkit import errors
from drkit.engines import beneath, manifest
from drkit.model import FileRecord, Manifest
from drkit.paths import shown

log = logging.getLogger(__name__)

SYNC_FROM_BYTES = 4 << 20  # large files are flushed as they are hashed; small ones at the end


class StagedVerifier:
    """Hash files as they are restored into staging; then check every entry of the manifest.

    Use as a context manager around the restore; pass `restored` as restic's per-file callback
    and call `problems()` after restic finished.
    """

    def __init__(
        self,
        staging: Path,
        node_manifest: Manifest,
        workers: int | None = None,
        *,
        flush: bool = True,
    ):
        """flush: large files are flushed to disk as they are hashed (False: a throwaway
        tree, such as a drill's sandbox)."""
        self.staging = staging
        self.flush = flush
        self.entries = node_manifest.files
        self.files = {entry.path: entry for entry in self.entries if entry.type == "file"}
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.hashed: dict[str, tuple[int, int, str]] = {}  # path: (inode, size, sha256)
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._stopped = False
        self._threads = [
            threading.Thread(target=self._work, name=f"verify-{index}", daemon=True)
            for index in range(self.workers)
        ]

    def __enter__(self) -> StagedVerifier:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop()

    def restored(self, node_path: str) -> None:
        """restic finished writing node_path: hash it in the background if it is a file."""
        if node_path in self.files:
            self._queue.put(node_path)

    def _work(self) -> None:
        with beneath.Descent(self.staging) as descent:
            while (node_path := self._queue.get()) is not None:
                # a file that cannot be read now is hashed again, its problem named, at the end
                with contextlib.suppress(OSError, errors.Refused):
                    self.hashed[node_path] = _hash_and_flush(descent, node_path, self.flush)

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for _ in self._threads:
            self._queue.put(None)  # done
        for thread in self._threads:
            thread.join()

    def problems(self) -> list[str]:
        """Return what in the staged tree differs from the signed manifest, one line each."""
        self._stop()
        log.debug("%d of %d files hashed as they landed", len(self.hashed), len(self.files))
        shares = [self.entries[index :: self.workers] for index in range(self.workers)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return [problem for found in pool.map(self._compare, shares) for problem in found]

    def _compare(self, share: list[FileRecord]) -> list[str]:
        found = []
        with beneath.Descent(self.staging) as descent:
            for entry in share:
                try:
                    difference = self._difference(descent, entry)
                except errors.Refused as exc:
                    difference = exc.message
                except OSError as exc:
                    difference = str(exc.strerror)
                if difference:
                    found.append(f"{shown(entry.path)}: {difference}")
        return found

    def _difference(self, descent: beneath.Descent, entry: FileRecord) -> str | None:
        """Return why the staged entry differs from the manifest, nothing on the way followed
        (a link where a directory should be is a difference, not a path)."""
        try:
            fd, name = descent.at(entry.path)
            early = self.hashed.get(entry.path)
            if early is not None and _same_file(fd, name, early):
                difference = manifest.compare_entry(name, entry, content=False, dir_fd=fd)
                if difference is None and early[2] != entry.sha256:
                    difference = "content differs (sha256)"
                return difference
            return manifest.compare_entry(name, entry, dir_fd=fd)
        except FileNotFoundError:
            return "missing"


def _hash_and_flush(descent: beneath.Descent, node_path: str, flush: bool) -> tuple[int, int, str]:
    """Hash a staged regular file, reached and opened without following links; with flush,
    a large one is flushed to disk too."""
    dir_fd, name = descent.at(node_path)
    fd = beneath.open_regular(dir_fd, name, shown(node_path))
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        digest = manifest.sha256_handle(handle)
        if flush and info.st_size >= SYNC_FROM_BYTES:
            os.fdatasync(fd)
    return info.st_ino, info.st_size, digest


def _same_file(dir_fd: int, name: str, early: tuple[int, int, str]) -> bool:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (info.st_ino, info.st_size) == early[:2]
