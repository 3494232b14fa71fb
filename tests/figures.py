"""Reliability figures the suites measure (trials survived, hostile snapshots refused, ...).

Each suite records its numbers with `record(name, **values)`; they are written as JSON under
`.figures/` (or $DRKIT_FIGURES) and printed at the end of the pytest run, so CI's log shows
the figures the README's "Reliability" section quotes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def directory() -> Path:
    """Return where figures are written (created on demand)."""
    path = Path(os.environ.get("DRKIT_FIGURES") or ROOT / ".figures")
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(name: str, **values) -> None:
    """Store one suite's figures under name (replacing an earlier run's)."""
    (directory() / f"{name}.json").write_text(json.dumps(values, indent=1, sort_keys=True) + "\n")


def collected() -> dict[str, dict]:
    """Return every suite's figures written so far."""
    found = {}
    for path in sorted(directory().glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except ValueError:
            continue
    return found
