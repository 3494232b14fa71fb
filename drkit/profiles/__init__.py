"""Server profiles: one module per transfer server kind, each implementing
`drkit.profiles.interface.Profile`; `get(kind)` is the only way in, and `options(kind, given)`
validates `profile_options.<kind>` by that profile's own options model."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping

from pydantic import BaseModel

from drkit.config import SERVER_KINDS
from drkit.profiles.interface import Profile

# The kinds drkit knows, in discovery order: module drkit.profiles.<kind> holds PROFILE.
KINDS = SERVER_KINDS


@functools.cache
def get(kind: str) -> Profile:
    """Return the profile of a server kind ('openssh', ...); KeyError for an unknown kind."""
    if kind not in KINDS:
        raise KeyError(kind)
    profile = importlib.import_module(f"drkit.profiles.{kind}").PROFILE
    if not isinstance(profile, Profile):
        raise TypeError(f"drkit.profiles.{kind}.PROFILE is not a Profile")
    return profile


def options(kind: str, given: Mapping[str, object] | None) -> BaseModel:
    """Return profile_options.<kind> validated by the profile's options model (defaults filled
    in); raise ConfigError naming the first bad setting, KeyError for an unknown kind."""
    return get(kind).options(given)
