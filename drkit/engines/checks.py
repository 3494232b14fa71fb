"""The result of one check: name, pass/warn/fail, and a one-line detail."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        """Return the JSON shape {name, status, detail}."""
        return asdict(self)


def passed(name: str, detail: str = "") -> Check:
    return Check(name, "pass", detail)


def warned(name: str, detail: str) -> Check:
    return Check(name, "warn", detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, "fail", detail)


def all_ok(checks: list[Check]) -> bool:
    """Return True when no check failed (warnings do not fail a run)."""
    return all(check.status != "fail" for check in checks)
