"""Stale restic locks: found, explained, and removed only when provably stale.

A crashed run (a killed daemon, a power cut) leaves its restic lock behind, and an exclusive
operation (prune, check) refuses to start while it exists; an exclusive one left behind blocks
every other command. A lock is stale when its owner's pid is gone on this very host, or when it
was not refreshed for restic's stale age (30 minutes; restic refreshes live locks every 5).
Removal is left to `restic unlock`, which applies exactly these rules itself, so a live lock is
never removed, even one drkit misjudged.

A killed restic stays a zombie until its new parent reaps it (PID 1 here may take seconds), and
restic counts a zombie as alive: drkit counts it as gone and waits for the reaping before it
runs `restic unlock`.
"""

from __future__ import annotations

import logging
import socket
import time
from datetime import UTC, datetime
from typing import TypedDict

import psutil

from drkit import units
from drkit.engines import restic as restic_engine
from drkit.engines.resticjson import LockRecord
from drkit.model import parse_utc

log = logging.getLogger(__name__)

STALE_AGE_SECONDS = 30 * 60  # restic's StaleLockTimeout
REAP_WAIT_SECONDS = 10.0  # how long an exited owner may stay a zombie before restic unlock


class StaleLock(TypedDict):
    """A lock judged stale, as prune and verify report it (`id` shortened to 8 digits)."""

    id: str
    hostname: str
    pid: int
    time: str
    exclusive: bool
    reason: str


def _owner_state(pid: int) -> str:
    """Return "alive", "exited" (a zombie: dead, not yet reaped) or "gone" for a local pid."""
    try:
        status = psutil.Process(pid).status()
    except psutil.ZombieProcess:
        return "exited"
    except psutil.NoSuchProcess:
        return "gone"
    except psutil.AccessDenied:
        return "alive"
    return "exited" if status == psutil.STATUS_ZOMBIE else "alive"


def stale_reason(lock: LockRecord, *, host: str, now: datetime) -> str | None:
    """Return why a lock (`restic cat lock`) is stale, or None when it may be live."""
    if lock.time:
        moment = parse_utc(lock.time)
        age = (now - moment).total_seconds()
        if age > STALE_AGE_SECONDS:
            return f"not refreshed for {units.duration(age)}"
    if lock.hostname == host and lock.pid > 0 and _owner_state(lock.pid) != "alive":
        return f"its owner, pid {lock.pid} on this host, is gone"
    return None


def _wait_reaped(pids: list[int], timeout: float = REAP_WAIT_SECONDS) -> None:
    """Wait until none of pids is a zombie any more (restic would judge its lock live)."""
    deadline = time.monotonic() + timeout
    waiting = [pid for pid in pids if _owner_state(pid) == "exited"]
    while waiting and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting = [pid for pid in waiting if _owner_state(pid) == "exited"]
    if waiting:
        log.warning("pid(s) %s exited but were not reaped; their locks stay", waiting)


def clear_stale(restic: restic_engine.Restic) -> list[StaleLock]:
    """Remove the repository's stale locks; return them as [{id, hostname, pid, time,
    exclusive, reason}]. Live locks are reported by the run that meets them (busy)."""
    host = socket.gethostname()
    now = datetime.now(UTC)
    stale: list[StaleLock] = []
    for lock in restic.locks():
        reason = stale_reason(lock, host=host, now=now)
        if reason:
            stale.append(
                StaleLock(
                    id=lock.id[:8],
                    hostname=lock.hostname,
                    pid=lock.pid,
                    time=lock.time,
                    exclusive=lock.exclusive,
                    reason=reason,
                )
            )
    if stale:
        for found in stale:
            log.warning("removing stale restic lock %s: %s", found["id"], found["reason"])
        _wait_reaped([found["pid"] for found in stale if found["reason"].startswith("its owner")])
        restic.unlock()
    return stale
