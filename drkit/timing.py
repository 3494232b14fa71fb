"""Where the time goes: named phases of a command, printed on stderr with --profile.

`DRKIT_PROFILE=1` or `drkit --profile ...` turns the report on; phases are always recorded
(a perf_counter call each), so a slow run can explain itself without a second run.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypedDict


def utc_now() -> datetime:
    """Return the wall-clock time now, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Clock:
    """Where long-running code reads the time: the wall clock (UTC) for what it records, the
    monotonic one for how long things take. Tests give their own to drive time without sleeps."""

    now: Callable[[], datetime] = field(default=utc_now)
    monotonic: Callable[[], float] = field(default=time.monotonic)


_phases: list[tuple[str, float]] = []
_started = time.perf_counter()


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Record how long the block took under name."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _phases.append((name, time.perf_counter() - start))


_current: list[tuple[str, float]] = []


def mark(name: str) -> None:
    """End the phase begun by the previous mark (if any) and begin one called name."""
    end_mark()
    _current.append((name, time.perf_counter()))


def end_mark() -> None:
    """End the phase begun by the last mark."""
    if _current:
        name, start = _current.pop()
        _phases.append((name, time.perf_counter() - start))


class Phase(TypedDict):
    """One phase's total: its name and seconds."""

    phase: str
    seconds: float


def phases() -> list[Phase]:
    """Return the recorded phases, summed by name, in first-seen order."""
    end_mark()
    totals: dict[str, float] = {}
    for name, seconds in _phases:
        totals[name] = totals.get(name, 0.0) + seconds
    return [{"phase": name, "seconds": round(seconds, 4)} for name, seconds in totals.items()]


def enabled() -> bool:
    """Return True when the operator asked for the phase report."""
    return os.environ.get("DRKIT_PROFILE", "") not in ("", "0")


def peak_rss_mib() -> tuple[float, float]:
    """Return the peak RSS of this process and of its largest finished child, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, children


def print_report() -> None:
    """Print the phases, total wall time and peak memory on stderr, one line each."""
    total = time.perf_counter() - _started
    for item in phases():
        sys.stderr.write(f"drkit profile: {item['phase']:<24} {item['seconds']:8.3f} s\n")
    sys.stderr.write(f"drkit profile: {'total (process)':<24} {total:8.3f} s\n")
    own, children = peak_rss_mib()
    sys.stderr.write(f"drkit profile: {'peak rss drkit':<24} {own:8.1f} MiB\n")
    sys.stderr.write(f"drkit profile: {'peak rss children':<24} {children:8.1f} MiB\n")
