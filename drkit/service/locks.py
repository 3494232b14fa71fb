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
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from drkit import units
from drkit.engines import restic as restic_engine
from drkit.model import parse_utc

log = logging.getLogger(__name__)

STALE_AGE_SECONDS = 30 * 60  # restic's StaleLockTimeout
REAP_WAIT_SECONDS = 10.0  # how long an exited owner may stay a zombie before restic unlock


def _owner_state(pid: int) -> str:
    """Return "alive", "exited" (a zombie: dead, not yet reaped) or "gone" for a local pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return "gone"
    except OSError:
        stat = ""
    if stat:
        return "exited" if stat[stat.rindex(")") + 2 :].startswith("Z") else "alive"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass
    return "alive"


def stale_reason(lock: dict, *, host: str, now: datetime) -> str | None:
    """Return why a lock (`restic cat lock` JSON) is stale, or None when it may be live."""
    created = lock.get("time")
    if created:
        moment = parse_utc(created)
        age = (now - moment).total_seconds()
        if age > STALE_AGE_SECONDS:
            return f"not refreshed for {units.duration(age)}"
    pid = lock.get("pid")
    local = lock.get("hostname") == host and isinstance(pid, int) and pid > 0
    if local and _owner_state(pid) != "alive":
        return f"its owner, pid {pid} on this host, is gone"
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
        _wait_reaped([lock["pid"] for lock in stale if lock["reason"].startswith("its owner")])
        restic.unlock()
    return stale
