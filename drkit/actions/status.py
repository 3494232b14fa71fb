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

import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from drkit import errors
from drkit.config import Config
from drkit.engines import manifest, reports, status
from drkit.model import Manifest, utc_text
from drkit.paths import on_root
from drkit.results import StatusResult, document
from drkit.service.status import fleet_documents, newer

log = logging.getLogger(__name__)
T = TypeVar("T")


def run(config: Config, fleet: bool = False) -> StatusResult:
    """Return the status result: {ok, time, nodes: [entry...], problems}; ok is false when a
    node is outside its RPO or missed its RTO."""
    now = datetime.now(UTC)
    objectives = status.objectives_of(config)
    local = status.load_local(config)
    problems: list[str] = []
    documents: dict[str, dict | None] = {}
    if fleet:
        from drkit.engines.storage import Storage

        storage = Storage(config.repository)
        storage.probe()
        documents, problems = fleet_documents(storage)
        documents[config.node] = newer(local, documents.get(config.node))
    else:
        document = local
        if document is None:
            try:
                from drkit.engines.storage import Storage

                document = Storage(config.repository).get_json(status.bucket_key(config.node))
            except errors.DrkitError as exc:
                problems.append(f"no local status and the bucket's copy is unreadable: {exc}")
        documents[config.node] = document
    nodes = [
        status.evaluate(documents[node], node=node, now=now, default_objectives=objectives)
        for node in sorted(documents)
    ]
    ok = all(not entry["problems"] and entry["rto_ok"] is not False for entry in nodes)
    return StatusResult(ok=ok, time=utc_text(now), nodes=nodes, problems=problems)


def recorded(config: Config, job: str, action: Callable[[], T], *, dry_run: bool = False) -> T:
    """Run action (one job of the node: backup, prune, verify, drill or standby), record its
    outcome in the status document with record_run, and return its result or re-raise its
    error. A dry run changes nothing, so it is not a run of the job and is not recorded."""
    if dry_run:
        return action()
    started = datetime.now(UTC)
    clock = time.monotonic()
    try:
        result = action()
    except errors.DrkitError as exc:
        record_run(config, job, started, time.monotonic() - clock, error=exc)
        raise
    except Exception as exc:  # a drkit bug: recorded as the internal error it is reported as
        error = errors.InternalError.from_exception(exc)
        record_run(config, job, started, time.monotonic() - clock, error=error)
        raise
    record_run(config, job, started, time.monotonic() - clock, result=result)
    return result


def record_run(
    config: Config,
    job: str,
    started: datetime,
    duration: float,
    *,
    result: object = None,
    error: BaseException | None = None,
    count_snapshots: Callable[[], int | None] | None = None,
    known: dict | None = None,
) -> dict:
    """Given one finished run of job (its result, or the error it ended with), when it started
    and how long it took, record it in the node's status document (the local file, and the
    bucket's copy when S3 answers) and return the run's status entry. The one recorder: the
    CLI (through recorded) and the daemon's job runner both record here. The node's snapshot
    count comes from a prune's result, or from count_snapshots after a good backup (the daemon
    passes it for its metrics; a command's backup stays at one restic listing). `known`: fields
    known before the run (a proof's snapshot), kept where the run says nothing of them.
    Recording never changes the job's outcome: a document that cannot be written is logged."""
    if job in ("drill", "prove") and isinstance(error, errors.Interrupted):
        # An interrupted drill or proof reached no verdict (and a drill wrote no report): the
        # last one on record stays the last one that did, so status and report name the same.
        log.warning("interrupted %s not recorded: the last one on record stands", job)
        return status.outcome_of(job, started, duration, error=error)
    result_document = document(result)
    outcome = status.outcome_of(job, started, duration, result=result_document, error=error)
    for key, value in (known or {}).items():
        if outcome.get(key) is None:
            outcome[key] = value
    if outcome["ok"] and job in ("backup", "drill"):
        outcome["certificates"] = _certificates(config, job, result_document)
    snapshots = None
    if job == "prune" and isinstance(result_document, dict):
        snapshots = result_document.get("snapshot_count")
    elif job == "backup" and outcome["ok"] and count_snapshots is not None:
        snapshots = count_snapshots()
    # A run that storage stopped does not wait on that storage again to publish the document.
    upload = not isinstance(error, errors.StorageError | errors.AuthenticationError)
    try:
        status.record(config, job, outcome, snapshots=snapshots, upload=upload)
    except (errors.DrkitError, OSError) as exc:
        log.warning("status not recorded: %s", getattr(exc, "message", exc))
    return outcome


def _certificates(config: Config, job: str, result: dict | None) -> list[dict]:
    """Return when the node's certificates end ({path, kind, subject, not_after}), for the
    fleet page's calendar: a backup's from the manifest it just wrote on the node's root, a
    drill's from its report."""
    if job == "drill":
        return [
            {key: certificate.get(key) for key in ("path", "subject", "not_after")}
            | {"kind": "tls"}
            for certificate in (result or {}).get("certificates") or []
        ]
    with contextlib.suppress(OSError, ValueError):
        node_manifest = Manifest.model_validate_json(
            on_root(config.root, manifest.MANIFEST_PATH).read_bytes()
        )
        return reports.certificate_expiries(config.root, node_manifest)
    return []
