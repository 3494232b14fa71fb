"""Server profiles: one module per transfer server kind, each implementing
`drkit.profiles.interface.Profile`; `get(kind)` is the only way in."""

from __future__ import annotations

import functools
import importlib

from drkit.config import SERVER_KINDS
from drkit.profiles.interface import Profile

# The kinds drkit knows, in discovery order: module drkit.profiles.<kind> holds PROFILE.
KINDS = SERVER_KINDS


@functools.cache
def get(kind: str) -> Profile:
    """Return the profile of a server kind ('openssh', ...); KeyError for an unknown kind."""
    if kind not in KINDS:
        raise KeyError(kind)
    return importlib.import_module(f"drkit.profiles.{kind}").PROFILE
