"""Freshness: an unchanged node confirms its last snapshot instead of making another.

A backup whose manifest (every path, type, mode, owner, mtime and content hash; the keys,
certificates and accounts; the profile options) and drkit.yaml are exactly those of the node's
previous snapshot adds nothing a restore could use. Hashes come from the hash cache, keyed on
size, mtime, ctime and inode: the rule restic applies to decide a file is unchanged. Such a
backup runs no restic process: it signs a freshness entry (the snapshot it confirms, the time)
into the node's chain head, and status, RPO and `snapshots` count it as a backup at that time.
"""

from __future__ import annotations

import hashlib
from typing import TypedDict

from drkit.engines import manifest
from drkit.model import Manifest

VOLATILE = ("created", "previous", "warnings")  # what differs between two runs of one state
KEPT = 100  # freshness entries a chain head carries (the newest)


def content_digest(node_manifest: Manifest, config_text: str) -> str:
    """Return the sha256 of what a snapshot of this manifest would hold and vouch for. A
    directory's mtime is left out: it moves whenever a name under it comes or goes (drkit's
    own snapshot directory made under /var the first time), and every backed-up name is an
    entry of its own."""
    digest = hashlib.sha256()
    for piece in manifest.json_pieces(
        node_manifest, separators=(", ", ": "), exclude=VOLATILE, entry=_without_dir_mtime
    ):
        digest.update(piece.encode())
    digest.update(b"\0" + config_text.encode())
    return digest.hexdigest()


def _without_dir_mtime(entry: dict[str, object]) -> dict[str, object]:
    if entry.get("type") != "dir":
        return entry
    return {key: value for key, value in entry.items() if key != "mtime"}


class Confirmation(TypedDict):
    """A freshness entry: the node was unchanged at time, so snapshot_id still holds it."""

    snapshot_id: str
    time: str


def confirmations(recorded: object) -> list[Confirmation]:
    """Return the freshness entries of a chain record, well formed only, newest last."""
    if not isinstance(recorded, list):
        return []
    return [
        Confirmation(snapshot_id=str(item["snapshot_id"]), time=str(item["time"]))
        for item in recorded
        if isinstance(item, dict) and "snapshot_id" in item and "time" in item
    ][-KEPT:]
