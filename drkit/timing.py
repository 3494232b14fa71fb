"""Where the time goes: named phases of a command, printed on stderr with --profile.

`DRKIT_PROFILE=1` or `drkit --profile ...` turns the report on; phases are always recorded
(a perf_counter call each), so a slow run can explain itself without a second run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

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


def phases() -> list[dict]:
    """Return the recorded phases, summed by name, in first-seen order."""
    totals: dict[str, float] = {}
    for name, seconds in _phases:
        totals[name] = totals.get(name, 0.0) + seconds
    return [{"phase": name, "seconds": round(seconds, 4)} for name, seconds in totals.items()]


def enabled() -> bool:
    """Return True when the operator asked for the phase report."""
    return os.environ.get("DRKIT_PROFILE", "") not in ("", "0")


def print_report() -> None:
    """Print the phases and the total wall time on stderr, one line each."""
    total = time.perf_counter() - _started
    for item in phases():
        sys.stderr.write(f"drkit profile: {item['phase']:<24} {item['seconds']:8.3f} s\n")
    sys.stderr.write(f"drkit profile: {'total (process)':<24} {total:8.3f} s\n")
