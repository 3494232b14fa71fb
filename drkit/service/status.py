"""The nodes' status documents in the bucket: read them all, pick the newer of two copies,
register a node that never ran."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from drkit import errors
from drkit.config import Config
from drkit.engines import status
from drkit.engines.statusdoc import StatusDocument, document_of
from drkit.model import parse_utc_or_none, utc_text

if TYPE_CHECKING:
    from drkit.engines.storage import Storage

# botocore keeps 10 connections per client: more threads would only queue for them (or churn
# connections); 8 fetch 1,000 documents from a local S3 in about a second.
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


def fleet_documents(storage: Storage) -> tuple[dict[str, StatusDocument | None], list[str]]:
    """Return every node's status document in the bucket ({node: document, None when it is
    unreadable}) and the problems met: one paginated listing of status/, then the documents
    fetched by a bounded pool of threads (the client is thread-safe)."""
    nodes: dict[str, str] = {}
    for key in storage.list_keys("status/"):
        node = key.removeprefix("status/").removesuffix(".json")
        if key.endswith(".json") and "/" not in node:
            nodes[node] = key

    def fetch(key: str) -> tuple[StatusDocument | None, str | None]:
        try:
            return document_of(storage.get_json(key)), None
        except errors.StorageError as exc:
            return None, f"{key}: {exc.message}"

    with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
        fetched = list(pool.map(fetch, nodes.values()))
    documents = {node: document for node, (document, _) in zip(nodes, fetched, strict=True)}
    return documents, [problem for _, problem in fetched if problem]
