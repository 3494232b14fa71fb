"""The nodes' status documents in the bucket: read them all, pick the newer of two copies,
register a node that never ran."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from drkit.config import Config
from drkit.engines import status
from drkit.engines.statusdoc import StatusDocument, document_of
from drkit.model import parse_utc_or_none, utc_text

if TYPE_CHECKING:
    from drkit.engines.storage import Storage

# threads (and pooled connections) reading status documents: on 2 cores the GIL and the S3
# server bound the rate, more threads only queue
FETCH_WORKERS = 8


def newer(first: StatusDocument | None, second: StatusDocument | None) -> StatusDocument | None:
    """Return the more recently updated of two status documents (either may be None)."""

    def updated(document: StatusDocument) -> datetime:
        moment = parse_utc_or_none(document.get("updated"))
        return moment or datetime.min.replace(tzinfo=UTC)

    if first is None or second is None:
        return first or second
    return first if updated(first) >= updated(second) else second


def register(config: Config) -> bool:
    """drkit init's registration: put the node's status document, with no backup yet, in the
    bucket unless it has one, so fleet views list a node that never ran (as breached). Return
    whether it was written. Called after init has confirmed the bucket's posture."""
    from drkit.engines.storage import Storage

    storage = Storage(config.repository)
    key = status.bucket_key(config.node)
    if storage.get_json(key) is not None:
        return False
    document = status.empty(config)
    document["updated"] = utc_text(datetime.now(UTC))
    storage.put_json(key, document)
    return True


def fleet_documents(
    storage: Storage, state_dir: Path | None = None
) -> tuple[dict[str, StatusDocument | None], list[str]]:
    """Return every node's status document in the bucket ({node: document, None when it is
    unreadable}) and the problems met: one listing of status/ with ETags, then the documents
    read in parallel (engines.bulkread), those unchanged since the last read from the cache
    under state_dir (when given)."""
    from drkit.engines.bulkread import BulkReader, cache_file

    cache = cache_file(state_dir, storage) if state_dir is not None else None
    reader = BulkReader(storage, workers=FETCH_WORKERS, cache=cache)
    nodes: dict[str, str] = {}
    listed = reader.listing("status/")
    for key in sorted(listed):
        node = key.removeprefix("status/").removesuffix(".json")
        if key.endswith(".json") and "/" not in node:
            nodes[node] = key
    read = reader.read({key: listed[key] for key in nodes.values()})
    documents = {node: document_of(read[key]) for node, key in nodes.items()}
    return documents, sorted(reader.problems)
