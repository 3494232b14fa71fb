"""The outage probe: is the repository usable right now, and since when has it not been."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from drkit import errors, units
from drkit.config import Repository
from drkit.engines.s3 import PROBE_FRESH_SECONDS, credentials, registry_lock
from drkit.engines.storage import Storage


class OutageProbe:
    """Whether the repository answers now: one HEAD of its config object with short timeouts
    and no retries, and since when it has not. One per repository in a process (outage_probe):
    the daemon's outage watch, the stop checks of every restic command and the post-backup
    steps all ask the same one, so they agree on when an outage began."""

    def __init__(self, repository: Repository):
        self.repository = repository
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._reason: str | None = None
        self._failing_since: float | None = None

    def check(self) -> str | None:
        """Return why the repository is unusable (one line), or None when it answers. A probe
        made less than PROBE_FRESH_SECONDS ago answers for this call too."""
        with self._lock:
            now = time.monotonic()
            if self._checked_at is not None and now - self._checked_at < PROBE_FRESH_SECONDS:
                return self._reason
            try:
                Storage(self.repository, quick=True).repository_answers()
                reason = None
            except (errors.StorageError, errors.AuthenticationError, errors.ConfigError) as exc:
                reason = exc.message
            self._checked_at = time.monotonic()
            self._reason = reason
            if reason is None:
                self._failing_since = None
            elif self._failing_since is None:
                self._failing_since = now
            return reason

    def failing_for(self) -> float:
        """Return how long every probe has failed, in seconds (0 while the last one passed)."""
        with self._lock:
            since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def watch(self, limit: float) -> Callable[[], str | None]:
        """Return a stop check for runner (stop_when): the reason to stop once every probe has
        failed for `limit` seconds, else None."""

        def stop_when() -> str | None:
            reason = self.check()
            failing = self.failing_for()
            if reason is None or failing < limit:
                return None
            return f"S3 failed every probe for {units.duration(failing)} ({reason})"

        return stop_when


_probes: dict[tuple[object, ...], OutageProbe] = {}


def outage_probe(repository: Repository) -> OutageProbe:
    """Return this process's outage probe for the repository and the environment's
    credentials (refused credentials are not an outage of the right ones)."""
    key = (
        repository.s3_endpoint,
        repository.bucket,
        repository.prefix,
        repository.ca_bundle,
        *credentials(),
    )
    with registry_lock:
        return _probes.setdefault(key, OutageProbe(repository))
