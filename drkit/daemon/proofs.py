"""Every snapshot proven (`schedule.prove: after-backup`): the snapshots handed over by the
daemon's backups, proven one at a time on a thread of their own, so backups never wait."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("drkit.daemon")


class Proofs:
    """The snapshot the prove job drills next, and the queue of one an after-backup proof
    thread takes it from: the newest handed over while a proof runs is the next one proven."""

    def __init__(self) -> None:
        self.target: str | None = None  # what the prove action drills (None: the latest)
        self.wanted = threading.Event()
        self.next: str | None = None
        self._lock = threading.Lock()

    def want(self, snapshot_id: str | None) -> None:
        """Hand a snapshot (None: the latest) to the proof thread."""
        with self._lock:
            self.next = snapshot_id
        self.wanted.set()

    def worker(self, prove: Callable[[str | None], object], stopping: threading.Event) -> None:
        """Prove each snapshot handed over, one at a time, until stopping is set."""
        while not stopping.is_set():
            if not self.wanted.wait(1.0) or stopping.is_set():
                continue
            self.wanted.clear()
            with self._lock:
                snapshot_id = self.next
            try:
                prove(snapshot_id)
            except Exception:  # the thread must outlive a bug in one proof
                log.exception("proof crashed")
