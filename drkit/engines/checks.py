"""The result of one check: name, pass/warn/fail, and a one-line detail."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    # When the check was decided (time.monotonic()): a drill's RTO ends at the moment its
    # file round trip passed, not when the smoke run has finished cleaning up.
    at: float = field(default_factory=time.monotonic, compare=False, repr=False)

    def as_dict(self) -> dict[str, str]:
        """Return the JSON shape {name, status, detail}."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


def passed(name: str, detail: str = "") -> Check:
    return Check(name, "pass", detail)


def warned(name: str, detail: str) -> Check:
    return Check(name, "warn", detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, "fail", detail)


def all_ok(checks: list[Check]) -> bool:
    """Return True when no check failed (warnings do not fail a run)."""
    return all(check.status != "fail" for check in checks)
