"""This machine's chain record of a node: the link to its newest snapshot's manifest, the
node's index and the freshness confirmations (`<state_dir>/chain/<node>.json`), written by
backup and started anew by init."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from pydantic import TypeAdapter
from typing_extensions import TypedDict

from drkit.config import Config
from drkit.engines import catalog, freshness, manifest
from drkit.service import rollback
from drkit.service.rollback import chain_path


class Link(TypedDict):
    """The previous snapshot a manifest links to: its id and its manifest's sha256."""

    snapshot_id: str
    manifest_sha256: str


class ChainRecord(TypedDict, total=False):
    """The node's local chain record: the newest link, its signed index (IndexEntry items),
    the digest of its content (freshness), a snapshot possibly in flight, confirmations."""

    previous: Link | None
    index: list[dict[str, object]]
    content: str | None
    in_flight: bool
    confirmations: Sequence[object]


_RECORD: TypeAdapter[ChainRecord] = TypeAdapter(ChainRecord)


def read(config: Config) -> ChainRecord:
    """Return the node's local chain record, {} when there is none or it is unreadable."""
    try:
        return _RECORD.validate_json(chain_path(config).read_bytes())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return {}


def record_chain(
    config: Config,
    snapshot_id: str | None,
    manifest_bytes: bytes | None,
    index: list[catalog.IndexEntry] | None = None,
    content: str | None = None,
) -> Link | None:
    """Remember the newest snapshot, its manifest hash, the digest of its content (freshness)
    and the node's index; None starts a new chain. Return the link ({snapshot_id,
    manifest_sha256}) the next manifest records."""
    link = None
    if snapshot_id and manifest_bytes is not None:
        link = Link(
            snapshot_id=snapshot_id, manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest()
        )
    record: ChainRecord = {
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


def mark_in_flight(config: Config, previous: Link | None, index: list[catalog.IndexEntry]) -> None:
    """Record, before restic runs, that a snapshot may land: a run killed before it records the
    new link leaves the next one asking the repository, not linking past that snapshot."""
    record: ChainRecord = {
        "previous": previous,
        "index": [entry.as_dict() for entry in index],
        "in_flight": True,
        "confirmations": freshness.confirmations(read(config).get("confirmations")),
    }
    manifest.write_private(chain_path(config), json.dumps(record).encode())
