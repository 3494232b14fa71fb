"""Server profiles: one module per transfer server kind."""

from __future__ import annotations

import importlib
from types import ModuleType


def load(kind: str) -> ModuleType:
    """Return the profile module for a server kind ('openssh', ...)."""
    return importlib.import_module(f"drkit.profiles.{kind}")
