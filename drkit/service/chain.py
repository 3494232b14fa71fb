"""This machine's chain record of a node: the link to its newest snapshot's manifest, the
node's index and the freshness confirmations (`<state_dir>/chain/<node>.json`), written by
backup and started anew by init."""

from __future__ import annotations

import hashlib
import json

from drkit.config import Config
from drkit.engines import catalog, freshness, manifest
from drkit.service import rollback
from drkit.service.rollback import chain_path


def read(config: Config) -> dict:
    """Return the node's local chain record, {} when there is none or it is unreadable."""
    try:
        record = json.loads(chain_path(config).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def record_chain(
    config: Config,
    snapshot_id: str | None,
    manifest_bytes: bytes | None,
    index: list[catalog.IndexEntry] | None = None,
    content: str | None = None,
) -> dict | None:
    """Remember the newest snapshot, its manifest hash, the digest of its content (freshness)
    and the node's index; None starts a new chain. Return the link ({snapshot_id,
    manifest_sha256}) the next manifest records."""
    link = None
    if snapshot_id and manifest_bytes is not None:
        link = {
            "snapshot_id": snapshot_id,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        }
    record = {
        "previous": link,
        "index": [entry.as_dict() for entry in index or []],
        "content": content,
        "confirmations": freshness.confirmations(read(config).get("confirmations")),
    }
    manifest.write_private(chain_path(config), json.dumps(record).encode())
    if snapshot_id and manifest_bytes is not None:
        rollback.remember(
            config.state_dir, config.repository, config.node, snapshot_id, manifest_bytes
        )
    return link


def mark_in_flight(config: Config, previous: dict | None, index: list[catalog.IndexEntry]) -> None:
    """Record, before restic runs, that a snapshot may land: a run killed before it records the
    new link leaves the next one asking the repository, not linking past that snapshot."""
    record = {
        "previous": previous,
        "index": [entry.as_dict() for entry in index],
        "in_flight": True,
        "confirmations": freshness.confirmations(read(config).get("confirmations")),
    }
    manifest.write_private(chain_path(config), json.dumps(record).encode())
