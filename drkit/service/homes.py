"""Where a restored login account's home must exist: where its server will look for it."""

from __future__ import annotations

import logging
from pathlib import Path

from drkit import errors, profiles
from drkit.engines import accounts
from drkit.model import Manifest

log = logging.getLogger(__name__)


def missing(root: Path, node_manifest: Manifest, held: set[str]) -> list[tuple[str, int, int]]:
    """Return (node path, uid, gid) of each home to create on root, once each: where each of
    the snapshot's servers puts the account at login (a chrooted user's home lies inside its
    chroot), as the restored configuration on root says; nothing anywhere else."""
    recorded = node_manifest.accounts
    kinds = node_manifest.profiles
    if not kinds:
        return accounts.missing_homes(root, recorded, held)
    landings: dict[str, list[str]] = {}
    for kind in kinds:
        try:
            found = profiles.get(kind).login_homes(root, node_manifest)
        except (errors.DrkitError, OSError, ValueError) as exc:
            log.warning("%s: where logins land is unknown (%s): no home created for it", kind, exc)
            continue
        for name, home in found.items():
            landings.setdefault(name, [])
            if home not in landings[name]:
                landings[name].append(home)
    return accounts.missing_homes(root, recorded, held, landings)
