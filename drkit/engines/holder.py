"""Who holds a lock: a small JSON file beside it (pid, command line, since when).

The node lock and a target's apply lock both write one while held, so a run that finds the lock
busy can say which run holds it.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from drkit.engines import durable
from drkit.model import utc_text


def holder_path(lock_path: Path) -> Path:
    """Return the holder file of a lock file."""
    return lock_path.with_name(lock_path.name + ".holder")


def command_line() -> str:
    """Return this process's drkit command line (drkit's argv never holds a secret)."""
    return " ".join(["drkit", *sys.argv[1:]]) if sys.argv else "drkit"


def record() -> str:
    """Return the holder record of this process (one JSON line)."""
    holder = {"pid": os.getpid(), "command": command_line(), "since": utc_text(datetime.now(UTC))}
    return json.dumps(holder) + "\n"


def write(lock_path: Path) -> None:
    """Record this process as the lock's holder."""
    durable.write_atomic(holder_path(lock_path), record().encode(), 0o644)


def describe(lock_path: Path) -> str:
    """Return who holds a lock as its holder file says: pid, command, since when."""
    try:
        return describe_text(holder_path(lock_path).read_text())
    except OSError:
        return describe_text(None)


def describe_text(text: str | None) -> str:
    """Return who holds a lock as a holder record (None: none could be read) says."""
    try:
        holder = json.loads(text or "")
        return f"pid {holder['pid']} ({holder['command']}) since {holder['since']}"
    except (ValueError, KeyError, TypeError):
        return "another drkit run (it did not say which)"


def clear(lock_path: Path) -> None:
    """Remove the lock's holder file (its holder is done)."""
    holder_path(lock_path).unlink(missing_ok=True)
