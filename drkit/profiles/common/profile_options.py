"""Profile options: as a snapshot recorded them, refused with the setting named, and refused
options as a failed check."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec

from pydantic import JsonValue, ValidationError

from drkit import errors
from drkit.model import (
    Check,
    Manifest,
    failed,
)


def options_of(manifest: Manifest, kind: str) -> dict[str, JsonValue]:
    """Return profile kind's options as the snapshot recorded them.

    They travel inside the signed manifest (not only in the embedded drkit.yaml, which is not
    signed and which standby sync never reads), so the checks after a bare-metal restore, a
    drill or a standby sync use exactly the settings the backup was made with.
    """
    return manifest.options_of(kind)


def refused(exc: ValidationError, prefix: str) -> errors.ConfigError:
    """Given pydantic's ValidationError for options, return one ConfigError naming the first
    problem (an unknown setting first) as `<prefix><setting>: <why>`; a validator's own
    ValueError text is the why."""
    problems = sorted(exc.errors(), key=lambda e: (e["type"] != "extra_forbidden", str(e["loc"])))
    first = problems[0]
    setting = str(first["loc"][0]) if first["loc"] else "?"
    cause = first.get("ctx", {}).get("error")
    why = "unknown setting" if first["type"] == "extra_forbidden" else str(cause or first["msg"])
    return errors.ConfigError(f"{prefix}{setting}: {why}")


Checked = ParamSpec("Checked")


def options_fail_as(
    check: str,
) -> Callable[[Callable[Checked, list[Check]]], Callable[Checked, list[Check]]]:
    """Decorate a profile's checks(root, manifest): when the profile options the manifest
    recorded are refused (the profile's settings raise ConfigError naming the setting), the
    result is the one failed check named check, not an error that ends the run."""

    def decorate(checks: Callable[Checked, list[Check]]) -> Callable[Checked, list[Check]]:
        @functools.wraps(checks)
        def checked(*args: Checked.args, **kwargs: Checked.kwargs) -> list[Check]:
            try:
                return checks(*args, **kwargs)
            except errors.ConfigError as exc:
                return [failed(check, exc.message)]

        return checked

    return decorate
