"""Stale restic locks: found, explained, and removed only when provably stale.

A crashed run (a killed daemon, a power cut) leaves its restic lock behind, and an exclusive
operation (prune, check) refuses to start while it exists. A lock is stale when its owner's pid
is gone on this very host, or when it was not refreshed for restic's stale age (30 minutes;
restic refreshes live locks every 5). Removal is left to `restic unlock`, which applies exactly
these rules itself, so a live lock is never removed, even one drkit misjudged.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime

from drkit.engines import restic as restic_engine
from drkit.model import parse_utc

log = logging.getLogger(__name__)

STALE_AGE_SECONDS = 30 * 60  # restic's StaleLockTimeout


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_reason(lock: dict, *, host: str, now: datetime) -> str | None:
    """Return why a lock (`restic cat lock` JSON) is stale, or None when it may be live."""
    created = lock.get("time")
    if created:
        moment = parse_utc(created)
        age = (now - moment).total_seconds()
        if age > STALE_AGE_SECONDS:
            return f"not refreshed for {age / 60:.0f} min"
    pid = lock.get("pid")
    if lock.get("hostname") == host and isinstance(pid, int) and pid > 0 and not _pid_alive(pid):
        return f"its owner, pid {pid} on this host, is gone"
    return None


def clear_stale(restic: restic_engine.Restic) -> list[dict]:
    """Remove the repository's stale locks; return them as [{id, hostname, pid, time,
    exclusive, reason}]. Live locks are reported by the run that meets them (busy)."""
    host = socket.gethostname()
    now = datetime.now(UTC)
    stale = []
    for lock in restic.locks():
        reason = stale_reason(lock, host=host, now=now)
        if reason:
            stale.append(
                {
                    "id": lock["id"][:8],
                    "hostname": lock.get("hostname"),
                    "pid": lock.get("pid"),
                    "time": lock.get("time"),
                    "exclusive": bool(lock.get("exclusive")),
                    "reason": reason,
                }
            )
    if stale:
        for lock in stale:
            log.warning("removing stale restic lock %s: %s", lock["id"], lock["reason"])
        restic.unlock()
    return stale
