"""Where a restored login account's home must exist: where its server will look for it."""

from __future__ import annotations

from pathlib import Path

from drkit.engines import accounts


def missing(root: Path, node_manifest: dict, held: set[str]) -> list[tuple[str, int, int]]:
    """Return (node path, uid, gid) of each home to create on root, once each."""
    return accounts.missing_homes(root, node_manifest["accounts"], held)
