"""The one status recorder: every run of a node's jobs, by a command or by the daemon, is
recorded here in the node's status document (the local file, and the bucket's copy when S3
answers)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from drkit import errors
from drkit.config import Config
from drkit.engines import manifest, reports, status
from drkit.engines.statusdoc import Outcome
from drkit.model import CertificateEnd
from drkit.paths import on_root
from drkit.results import BackupResult, document

log = logging.getLogger(__name__)
T = TypeVar("T")


def recorded(config: Config, job: str, action: Callable[[], T], *, dry_run: bool = False) -> T:
    """Run action (one job of the node: backup, prune, verify, drill, standby or copy), record
    its outcome with record_run, and return its result or re-raise its error. A dry run
    changes nothing, so it is not a run of the job and is not recorded."""
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
    snapshot_id: str | None = None,
) -> Outcome:
    """Given one finished run of job (its result, or the error it ended with), when it started
    and how long it took, record it in the node's status document and return the run's status
    entry. The node's snapshot count comes from a prune's result, or from count_snapshots after
    a good backup (the daemon passes it for its metrics; a command's backup stays at one restic
    listing). snapshot_id: the snapshot known before the run (a proof's), kept when the run
    names none. Recording never changes the job's outcome: a document that cannot be written is
    logged."""
    if job in ("drill", "prove") and isinstance(error, errors.Interrupted):
        # An interrupted drill or proof reached no verdict (and a drill wrote no report): the
        # last one on record stays the last one that did, so status and report name the same.
        log.warning("interrupted %s not recorded: the last one on record stands", job)
        return status.outcome_of(job, started, duration, error=error)
    found = document(result)
    result_document = found if isinstance(found, Mapping) else None
    outcome = status.outcome_of(job, started, duration, result=result_document, error=error)
    if outcome.get("snapshot_id") is None and snapshot_id is not None:
        outcome["snapshot_id"] = snapshot_id
    if outcome.get("ok") and job in ("backup", "drill"):
        ends = result.certificate_ends if isinstance(result, BackupResult) else None
        outcome["certificates"] = ends if ends is not None else _certificates(config, job, found)
    snapshots = None
    if job == "prune" and result_document is not None:
        count = result_document.get("snapshot_count")
        snapshots = count if isinstance(count, int) else None
    elif job == "backup" and outcome.get("ok") and count_snapshots is not None:
        snapshots = count_snapshots()
    # A run that storage stopped does not wait on that storage again to publish the document.
    upload = not isinstance(error, errors.StorageError | errors.AuthenticationError)
    try:
        status.record(config, job, outcome, snapshots=snapshots, upload=upload)
    except (errors.DrkitError, OSError) as exc:
        log.warning("status not recorded: %s", getattr(exc, "message", exc))
    return outcome


def _certificates(config: Config, job: str, found: object) -> list[CertificateEnd]:
    """Return when the node's certificates end ({path, kind, subject, not_after}), for the
    fleet page's calendar: a backup's from the manifest it just wrote on the node's root, a
    drill's from its report."""
    if job == "drill":
        listed = found.get("certificates") if isinstance(found, Mapping) else None
        return [
            CertificateEnd(
                path=certificate.get("path"),
                subject=certificate.get("subject"),
                not_after=certificate.get("not_after"),
                kind="tls",
            )
            for certificate in (listed if isinstance(listed, list) else [])
            if isinstance(certificate, dict)
        ]
    with contextlib.suppress(OSError, ValueError):
        node_manifest = manifest.parse(on_root(config.root, manifest.MANIFEST_PATH).read_bytes())
        return reports.certificate_expiries(config.root, node_manifest)
    return []
