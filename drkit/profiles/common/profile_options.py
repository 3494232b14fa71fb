"""Profile options as a snapshot recorded them, and refused options as a failed check."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from drkit import errors
from drkit.model import (
    Check,
    failed,
)


def options_of(manifest: dict, kind: str) -> dict:
    """Return profile kind's options as the snapshot recorded them.

    They travel inside the signed manifest (not only in the embedded drkit.yaml, which is not
    signed and which standby sync never reads), so the checks after a bare-metal restore, a
    drill or a standby sync use exactly the settings the backup was made with.
    """
    return dict((manifest.get("profile_options") or {}).get(kind) or {})


def options_fail_as(check: str):
    """Decorate a profile's checks(root, manifest): when the profile options the manifest
    recorded are refused (the profile's settings raise ConfigError naming the setting), the
    result is the one failed check named check, not an error that ends the run."""

    def decorate(checks: Callable[[Path, dict], list[Check]]):
        @functools.wraps(checks)
        def checked(root: Path, manifest: dict) -> list[Check]:
            try:
                return checks(root, manifest)
            except errors.ConfigError as exc:
                return [failed(check, exc.message)]

        return checked

    return decorate
