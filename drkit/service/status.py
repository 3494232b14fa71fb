"""The nodes' status documents in the bucket: read them all, pick the newer of two copies,
register a node that never ran."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from drkit import errors
from drkit.config import Config
from drkit.engines import status
from drkit.model import parse_utc_or_none, utc_text

# botocore keeps 10 connections per client: more threads would only queue for them (or churn
# connections); 8 fetch 1,000 documents from a local S3 in about a second.
FETCH_WORKERS = 8


def newer(first: dict | None, second: dict | None) -> dict | None:
    """Return the more recently updated of two status documents (either may be None)."""

    def updated(document: dict | None) -> datetime:
        moment = parse_utc_or_none((document or {}).get("updated"))
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
    storage.put_json(key, {**status.empty(config), "updated": utc_text(datetime.now(UTC))})
    return True


def fleet_documents(storage) -> tuple[dict[str, dict | None], list[str]]:
    """Return every node's status document in the bucket ({node: document, None when it is
    unreadable}) and the problems met: one paginated listing of status/, then the documents
    fetched by a bounded pool of threads (the client is thread-safe)."""
    nodes = {}
    for key in storage.list_keys("status/"):
        node = key.removeprefix("status/").removesuffix(".json")
        if key.endswith(".json") and "/" not in node:
            nodes[node] = key

    def fetch(key: str) -> tuple[dict | None, str | None]:
        try:
            document = storage.get_json(key)
        except errors.StorageError as exc:
            return None, f"{key}: {exc.message}"
        return (document if isinstance(document, dict) else None), None

    with ThreadPoolExecutor(max_workers=FETCH_WORKERS) as pool:
        fetched = list(pool.map(fetch, nodes.values()))
    documents = {node: document for node, (document, _) in zip(nodes, fetched, strict=True)}
    return documents, [problem for _, problem in fetched if problem]
