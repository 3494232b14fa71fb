"""drkit status [--fleet]: is each node within its RPO (and RTO), and what did its jobs do last.

Without --fleet: this node, from its local status document (the bucket's copy when there is no
local one). With --fleet: every `status/<node>.json` in the bucket (one paginated listing, the
documents fetched in parallel), this node's local document preferred when newer. Missing,
unreadable or future-dated documents show as breached. The exit is 1 whenever a node shows a
problem: outside its RPO, its last backup failed (even within the RPO), its last drill failed;
and for a node that proves its snapshots, its last proof failed or its newest proven snapshot is
older than the RPO.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from drkit import errors
from drkit.config import Config
from drkit.engines import status
from drkit.engines.statusdoc import StatusDocument, document_of
from drkit.model import utc_text
from drkit.results import StatusResult
from drkit.service.status import fleet_documents, newer

log = logging.getLogger(__name__)


def run(config: Config, fleet: bool = False) -> StatusResult:
    """Return the status result: {ok, time, nodes: [entry...], problems}; ok is false when a
    node is outside its RPO or missed its RTO."""
    now = datetime.now(UTC)
    objectives = status.objectives_of(config)
    local = status.load_local(config)
    problems: list[str] = []
    documents: dict[str, StatusDocument | None] = {}
    if fleet:
        from drkit.engines.storage import Storage

        storage = Storage(config.repository)
        storage.probe()
        documents, problems = fleet_documents(storage, config.state_dir)
        documents[config.node] = newer(local, documents.get(config.node))
    else:
        document = local
        if document is None:
            try:
                from drkit.engines.storage import Storage

                raw = Storage(config.repository).get_json(status.bucket_key(config.node))
                document = document_of(raw)
            except errors.DrkitError as exc:
                problems.append(f"no local status and the bucket's copy is unreadable: {exc}")
        documents[config.node] = document
    nodes = [
        status.evaluate(documents[node], node=node, now=now, default_objectives=objectives)
        for node in sorted(documents)
    ]
    ok = all(not entry["problems"] and entry["rto_ok"] is not False for entry in nodes)
    return StatusResult(ok=ok, time=utc_text(now), nodes=nodes, problems=problems)
