"""Server profiles: one module per transfer server kind."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType


def load(kind: str) -> ModuleType:
    """Return the profile module for a server kind ('openssh', ...)."""
    return importlib.import_module(f"drkit.profiles.{kind}")


def inventory(kind: str, root: Path, smoke_user: str | None, options: dict | None = None):
    """Return profile kind's Inventory of root.

    Profiles that are driven by settings (sftpplus, generic: `TAKES_OPTIONS`) also get their
    entry of drkit.yaml's profile_options; the others take none.
    """
    module = load(kind)
    if getattr(module, "TAKES_OPTIONS", False):
        return module.inventory(root, smoke_user, (options or {}).get(kind) or {})
    return module.inventory(root, smoke_user)


def options_of(manifest: dict, kind: str) -> dict:
    """Return profile kind's options as the snapshot recorded them.

    They travel inside the signed manifest (not only in the embedded drkit.yaml, which is not
    signed and which standby sync never reads), so the checks after a bare-metal restore, a
    drill or a standby sync use exactly the settings the backup was made with.
    """
    return dict((manifest.get("profile_options") or {}).get(kind) or {})
