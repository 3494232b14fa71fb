"""The status document of a node: what its last backup, prune, verify, drill and proof did, and
whether it is within its RPO.

One JSON document per node, kept locally (`<state_dir>/status/<node>.json`) and copied to the
bucket root (`status/<node>.json`) so that `drkit status --fleet` sees every node. The local copy
is authoritative for the node itself; the bucket copy is best effort (S3 may be down, which is
exactly when the local copy still tells the truth). A node whose document is missing, whose last
good backup is older than its RPO, or whose times lie in the future is breached, never fine; so
is a node that proves its snapshots (`prove`, schedule.prove) whose newest proven snapshot is
older than the RPO, whatever it backed up since, from its first proof on (before it, and on a
node that does not prove, the proven age is reported and never breaches).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typing_extensions import TypedDict

from drkit import errors, units
from drkit.config import Config
from drkit.engines import durable
from drkit.engines.statusdoc import (
    GoodBackup,
    GoodDrill,
    Objectives,
    Outcome,
    StatusDocument,
    document_of,
)
from drkit.model import parse_utc_or_none, utc_text

log = logging.getLogger(__name__)

FORMAT = 1
JOBS = ("backup", "prune", "verify", "drill", "standby", "prove", "copy", "identity")
CLOCK_SKEW_TOLERANCE_SECONDS = 300


def objectives_of(config: Config) -> Objectives:
    """Return the node's objectives in seconds."""
    return Objectives(
        rpo_seconds=config.objectives.rpo_seconds, rto_seconds=config.objectives.rto_seconds
    )


def empty(config: Config) -> StatusDocument:
    """Return the status document of a node that has done nothing yet."""
    return StatusDocument(
        format=FORMAT,
        node=config.node,
        group=config.group,
        updated=None,
        objectives=objectives_of(config),
        last_backup=None,
        last_good_backup=None,
        last_prune=None,
        last_verify=None,
        last_drill=None,
        last_good_drill=None,
        prove=proving(config),
        last_proven=None,
        last_good_proof=None,
        last_success={},
        snapshots=None,
    )


def proving(config: Config) -> str | None:
    """Return the node's schedule.prove line, or None when it proves nothing (a passive node
    backs nothing up, so proves nothing either)."""
    return None if config.standby is not None else config.schedule.prove


def last_key(job: str) -> str:
    """Return the document's key of a job's last run: last_<job>, and last_proven for prove."""
    return "last_proven" if job == "prove" else f"last_{job}"


def local_path(config: Config) -> Path:
    """Return where the node keeps its own status document."""
    return config.state_dir / "status" / f"{config.node}.json"


def bucket_key(node: str) -> str:
    """Return the status document's key at the bucket root."""
    return f"status/{node}.json"


def load_local(config: Config) -> StatusDocument | None:
    """Return the node's local status document, or None when there is none (or it is torn)."""
    try:
        raw = json.loads(local_path(config).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    except OSError as exc:
        raise errors.LocalFilesystemError(f"{local_path(config)}: {exc.strerror}") from None
    document = document_of(raw)
    if document is None:
        log.warning("%s is not a status document: ignored", local_path(config))
    return document


def _write_local(config: Config, document: StatusDocument) -> None:
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    durable.write_atomic(local_path(config), text.encode(), 0o644, 0o755)


def publish(config: Config, document: StatusDocument) -> bool:
    """Copy the document to the bucket; return False (and log why) when S3 refuses or is down
    (the outage probe is asked first, so a down S3 costs one short probe, not retries)."""
    try:
        from drkit.engines.outage import outage_probe
        from drkit.engines.storage import Storage

        down = outage_probe(config.repository).check()
        if down:
            raise errors.StorageError(down)
        Storage(config.repository).put_json(bucket_key(config.node), document)
    except errors.DrkitError as exc:
        log.warning("status not published to the bucket: %s", exc.message)
        return False
    return True


@contextlib.contextmanager
def _status_lock(config: Config) -> Iterator[None]:
    from filelock import FileLock

    lock_dir = config.state_dir / "locks"
    durable.make_dirs(config.state_dir, 0o755)
    durable.make_dirs(lock_dir, 0o700)
    with FileLock(str(lock_dir / f"{config.node}.status.lock"), mode=0o600, timeout=30):
        yield


def record(
    config: Config,
    job: str,
    outcome: Outcome,
    *,
    snapshots: int | None = None,
    upload: bool = True,
) -> StatusDocument:
    """Record one finished run of job in the node's status document; return the document.

    outcome: {time, ok, duration_seconds, error, ...job fields (snapshot_id, bytes_added,
    file_count)}. A good backup also becomes last_good_backup. The local file is always written;
    the bucket copy when upload and S3 answers.
    """
    if job not in JOBS:
        raise errors.UsageError(f"unknown job {job!r}")
    with _status_lock(config):
        document = load_local(config) or empty(config)
        if upload:  # a state directory that knows less than the bucket learns from it
            document = merged(document, _bucket_copy(config))
        now = datetime.now(UTC)
        document["updated"] = utc_text(now)
        document["node"] = config.node
        document["objectives"] = objectives_of(config)
        document["group"] = config.group
        document["prove"] = proving(config)
        document = _with_entry(document, last_key(job), outcome)
        if outcome["ok"]:
            document.setdefault("last_success", {})[job] = outcome["time"] or utc_text(now)
            _record_good(document, job, outcome)
        if snapshots is not None:
            document["snapshots"] = snapshots
        _write_local(config, document)
    if upload:
        publish(config, document)
    return document


def _record_good(document: StatusDocument, job: str, outcome: Outcome) -> None:
    """Record a good run as the job's last good one, where the document keeps one."""
    if job == "backup":
        document["last_good_backup"] = GoodBackup(
            time=outcome["time"], snapshot_id=outcome.get("snapshot_id")
        )
    elif job == "standby" and outcome.get("snapshot_time"):
        # What a passive node serves: the source's snapshot it last applied.
        document["last_good_standby"] = {
            "time": str(outcome.get("snapshot_time")),
            "snapshot_id": outcome.get("snapshot_id"),
            "source": outcome.get("source"),
        }
    elif job == "copy":  # each copy keeps its own last good copy
        for copied in outcome.get("copies") or []:
            document.setdefault("copies", {})[str(copied["name"])] = copied["last_copy"]
    elif job == "prove":
        document["last_good_proof"] = {
            "time": outcome["time"],
            "snapshot_id": outcome.get("snapshot_id"),
            "snapshot_time": outcome.get("snapshot_time"),
        }
    elif job == "drill":  # a failed drill later is recorded beside it, never instead
        document["last_good_drill"] = {
            "time": outcome["time"],
            "snapshot_id": outcome.get("snapshot_id"),
            "rto_seconds": outcome.get("rto_seconds"),
            "rpo_seconds": outcome.get("rpo_seconds"),
        }


def _with_entry(document: StatusDocument, key: str, value: object) -> StatusDocument:
    """Return document with its entry key (a job's last run, named at run time) set."""
    entries: dict[str, object] = dict(document)
    entries[key] = value
    return document_of(entries) or document


# The entries of a status document that each say when they happened, merged newest first.
DATED = (
    *(last_key(job) for job in JOBS),
    "last_good_backup",
    "last_good_standby",
    "last_good_proof",
    "last_good_drill",
)


def _when(entry: object) -> datetime | None:
    return parse_utc_or_none(entry.get("time")) if isinstance(entry, dict) else None


def merged(document: StatusDocument, other: StatusDocument | None) -> StatusDocument:
    """Return document with what other (another copy of the same node's document: the
    bucket's) knows that it does not: for each job the newer last run and last good run, the
    later success times, the snapshot count when document has none. Nothing newer is lost."""
    if other is None or other.get("node") not in (None, document.get("node")):
        return document
    result: dict[str, object] = dict(document)
    theirs_by_key: Mapping[str, object] = other
    for key in DATED:
        mine, theirs = _when(result.get(key)), _when(theirs_by_key.get(key))
        if theirs is not None and (mine is None or theirs > mine):
            result[key] = theirs_by_key[key]
    success = dict(other.get("last_success") or {})
    for job, moment in (document.get("last_success") or {}).items():
        theirs, mine = parse_utc_or_none(success.get(job)), parse_utc_or_none(moment)
        if theirs is None or (mine is not None and mine >= theirs):
            success[job] = moment
    result["last_success"] = success
    if result.get("snapshots") is None:
        result["snapshots"] = other.get("snapshots")
    return document_of(result) or document


def _bucket_copy(config: Config) -> StatusDocument | None:
    """Return the bucket's copy of the node's document, None when S3 is down or has none."""
    try:
        from drkit.engines.outage import outage_probe
        from drkit.engines.storage import Storage

        if outage_probe(config.repository).check():
            return None
        return document_of(Storage(config.repository).get_json(bucket_key(config.node)))
    except errors.DrkitError as exc:
        log.warning("the bucket's status document not read: %s", exc.message)
        return None


def outcome_of(
    job: str,
    started: datetime,
    duration: float,
    result: Mapping[str, object] | None = None,
    error: BaseException | None = None,
) -> Outcome:
    """Return the status entry of one run from its result document (its JSON: values are
    copied as the result wrote them) or its error."""
    entry = Outcome(
        time=utc_text(started), ok=False, duration_seconds=round(duration, 3), error=None
    )
    if job == "prove":  # one shape, also when the proof ended in an error
        entry.update({"snapshot_id": None, "snapshot_time": None, "rto_seconds": None})
    if error is not None:
        entry["error"] = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
        entry["error_kind"] = getattr(error, "kind", "error")
        return entry
    written: Mapping[str, Any] = result or {}  # the values, as the result document has them
    entry["ok"] = bool(written.get("ok", True))
    if job == "backup":
        entry.update(
            {
                "time": written.get("time") or entry["time"],
                "snapshot_id": written.get("snapshot_id"),
                "bytes_added": written.get("bytes_added"),
                "file_count": written.get("file_count"),
            }
        )
    elif job == "prune":
        entry.update(
            {"removed": len(written.get("removed", [])), "kept": len(written.get("kept", []))}
        )
    elif job == "verify":
        entry.update(
            {"problems": len(written.get("problems", [])), "drift": len(written.get("drift", []))}
        )
    elif job == "drill":
        entry.update(
            {
                "snapshot_id": written.get("snapshot_id"),
                "rto_seconds": written.get("rto_seconds"),
                "rpo_seconds": written.get("rpo_seconds"),
            }
        )
    elif job == "prove":
        entry.update(
            {
                "snapshot_id": written.get("snapshot_id"),
                "snapshot_time": written.get("snapshot_time"),
                "rto_seconds": written.get("rto_seconds"),
            }
        )
    elif job == "copy":
        entry["copies"] = [
            {"name": copied.get("name"), "last_copy": copied.get("last_copy")}
            for copied in written.get("copies") or []
        ]
    elif job == "standby":
        entry.update(
            {
                "source": written.get("source"),
                "snapshot_id": written.get("snapshot_id"),
                "changed": written.get("changed"),
                "lag_seconds": written.get("lag_seconds"),
            }
        )
        if entry["ok"]:
            entry["snapshot_time"] = written.get("snapshot_time")
    if not entry["ok"]:
        problems = (
            written.get("problems")
            or [
                f"{check['name']}: {check['detail']}"
                for check in written.get("checks") or []
                if check.get("status") == "fail"
            ]
            or _served_differences(written)
        )
        entry["error"] = problems[0] if problems else f"{job} found problems"
    return entry


def _served_differences(result: Mapping[str, Any]) -> list[str]:
    """Return what an identity check found served differently, address by address."""
    found = [
        str(endpoint.get("detail"))
        for endpoint in result.get("endpoints") or []
        if not endpoint.get("ok")
    ]
    login = result.get("login") or {}
    if login and not login.get("ok"):
        found.append(f"no pinned login through {login.get('address')}: {login.get('detail')}")
    return found


class CopyLag(TypedDict):
    """A copy repository judged: the age of its last good copy against the node's RPO."""

    name: str
    last_copy: str | None
    lag_seconds: int | None
    rpo_ok: bool


class Proven(TypedDict):
    """The node's newest proven snapshot, judged against its RPO."""

    prove: str | None
    proven_snapshot_id: str | None
    proven_snapshot_time: str | None
    proven_age_seconds: int | None
    proven_rpo_ok: bool | None
    proven_rpo_breached: bool
    problem: str


class NodeEntry(TypedDict):
    """One node's `drkit status` entry: its document judged at a moment."""

    node: str
    group: str | None
    last_backup: Outcome | None
    last_good_backup: GoodBackup | None
    last_prune: Outcome | None
    last_verify: Outcome | None
    last_drill: Outcome | None
    last_good_drill: GoodDrill | None
    last_standby: Outcome | None
    standby_lag_seconds: int | None
    rpo_seconds: int
    rpo_ok: bool
    backup_rpo_ok: bool
    age_seconds: int | None
    prove: str | None
    last_proven: Outcome | None
    proven_snapshot_id: str | None
    proven_snapshot_time: str | None
    proven_age_seconds: int | None
    proven_rpo_ok: bool | None
    proven_rpo_breached: bool
    rto_seconds: int
    rto_ok: bool | None
    copies: list[CopyLag]
    snapshot_count: int | None
    updated: str | None
    status_age_seconds: int | None
    problems: list[str]


def evaluate(
    given: StatusDocument | None,
    *,
    node: str,
    now: datetime,
    default_objectives: Objectives,
) -> NodeEntry:
    """Judge one node's status document at `now`; return its `drkit status` entry.

    A missing document, no good backup, a good backup older than the RPO, or a time in the
    future beyond clock-skew tolerance: rpo_ok is false and `problems` says why. A passive
    node (standby) is judged on the source snapshot it last applied when that is newer than
    its own last good backup: the age of the copy it serves.
    """
    problems: list[str] = []
    # read as a mapping: an entry of a partial document (an older drkit's) reads as absent
    document: Mapping[str, Any] = given or {}
    objectives = document.get("objectives") or default_objectives
    rpo = int(objectives.get("rpo_seconds") or default_objectives["rpo_seconds"])
    rto = int(objectives.get("rto_seconds") or default_objectives["rto_seconds"])
    if not document:
        problems.append("no status document: the node never reported (or it was removed)")
    good = document.get("last_good_backup") or {}
    good_time = parse_utc_or_none(good.get("time"))
    what = "last good backup"
    standby = document.get("last_good_standby") or {}
    standby_time = parse_utc_or_none(standby.get("time"))
    if standby_time is not None and (good_time is None or standby_time > good_time):
        good_time, what = standby_time, f"last good copy (standby of {standby.get('source')})"
    age: float | None = None
    if good_time is None:
        if document:
            problems.append("no successful backup recorded")
    else:
        age = (now - good_time).total_seconds()
        if age < -CLOCK_SKEW_TOLERANCE_SECONDS:
            problems.append(
                f"{what} is {units.duration(-age)} in the future: the node's clock is wrong"
            )
        elif age > rpo:
            problems.append(
                f"{what} is {units.duration(age)} old, over the RPO of {units.duration(rpo)}"
            )
        age = max(age, 0.0)
    last_backup = document.get("last_backup")
    if last_backup and not last_backup.get("ok"):
        problems.append(f"last backup failed: {last_backup.get('error')}")
    drill = document.get("last_drill") or {}
    if drill and not drill.get("ok"):
        good_drill = document.get("last_good_drill") or {}
        passed = f" (last passed: {good_drill['time']})" if good_drill.get("time") else ""
        problems.append(f"last drill failed at {drill.get('time')}: {drill.get('error')}{passed}")
    rto_measured = drill.get("rto_seconds")
    # a drill that failed before any login worked has no RTO, and missed the objective
    rto_ok = None
    if drill:
        rto_ok = bool(drill.get("ok")) and rto_measured is not None and rto_measured <= rto
    backup_rpo_ok = not any(
        problem.startswith(("no status", "no successful", "last good")) for problem in problems
    )
    proven = _proven(document, now, rpo)
    if proven["proven_rpo_breached"]:
        problems.append(proven["problem"])
    last_proof = document.get("last_proven") or {}
    if proven["prove"] and last_proof and not last_proof.get("ok"):
        problems.append(f"last proof failed: {last_proof.get('error')}")
    rpo_ok = backup_rpo_ok and not proven["proven_rpo_breached"]
    copies = _copies(document, now, rpo)
    problems += [problem for _, problem in copies if problem]
    updated = parse_utc_or_none(document.get("updated"))
    return {
        "node": node,
        "group": document.get("group"),
        "last_backup": last_backup,
        "last_good_backup": document.get("last_good_backup") or None,
        "last_prune": document.get("last_prune"),
        "last_verify": document.get("last_verify"),
        "last_drill": document.get("last_drill"),
        "last_good_drill": document.get("last_good_drill"),
        "last_standby": document.get("last_standby"),
        "standby_lag_seconds": None
        if standby_time is None
        else round(max((now - standby_time).total_seconds(), 0.0)),
        "rpo_seconds": rpo,
        "rpo_ok": rpo_ok,
        "backup_rpo_ok": backup_rpo_ok,
        "age_seconds": None if age is None else round(age),
        "prove": proven["prove"],
        "last_proven": document.get("last_proven"),
        "proven_snapshot_id": proven["proven_snapshot_id"],
        "proven_snapshot_time": proven["proven_snapshot_time"],
        "proven_age_seconds": proven["proven_age_seconds"],
        "proven_rpo_ok": proven["proven_rpo_ok"],
        "proven_rpo_breached": proven["proven_rpo_breached"],
        "rto_seconds": rto,
        "rto_ok": rto_ok,
        "copies": [lag for lag, _ in copies],
        "snapshot_count": document.get("snapshots"),
        "updated": document.get("updated"),
        "status_age_seconds": None if updated is None else round((now - updated).total_seconds()),
        "problems": problems,
    }


def _copies(
    document: Mapping[str, Any], now: datetime, rpo: int
) -> list[tuple[CopyLag, str | None]]:
    """Return each copy's lag (the age of its last good copy, judged by the node's RPO: a copy
    is a recovery point of its own) and the problem when it is behind."""
    judged: list[tuple[CopyLag, str | None]] = []
    for name, last in sorted((document.get("copies") or {}).items()):
        when = parse_utc_or_none(last)
        lag = None if when is None else max(0, round((now - when).total_seconds()))
        ok = lag is not None and lag <= rpo
        problem = None if ok else f"copy {name} is {units.duration(lag or 0)} behind (RPO)"
        judged.append((CopyLag(name=name, last_copy=last, lag_seconds=lag, rpo_ok=ok), problem))
    return judged


def _proven(document: Mapping[str, Any], now: datetime, rpo: int) -> Proven:
    """Return the node's newest proven snapshot, judged: the last good proof's, or the one a
    passing drill restored (drill time less its RPO), whichever is newer. {prove (the schedule
    line or None), proven_snapshot_id, proven_snapshot_time, proven_age_seconds and
    proven_rpo_ok (None: nothing proven), proven_rpo_breached (the node proves, has tried a
    proof, and has none within the RPO), problem (that breach in words)}."""
    found: list[tuple[datetime, str | None]] = []
    proof = document.get("last_good_proof") or {}
    proof_time = parse_utc_or_none(proof.get("snapshot_time"))
    if proof_time is not None:
        found.append((proof_time, proof.get("snapshot_id")))
    last = document.get("last_drill") or {}
    drill = last if last.get("ok") else document.get("last_good_drill") or {}
    drilled = parse_utc_or_none(drill.get("time"))
    if drilled is not None and drill.get("rpo_seconds") is not None:
        snapshot_time = drilled - timedelta(seconds=float(drill["rpo_seconds"]))
        found.append((snapshot_time, drill.get("snapshot_id")))
    newest, snapshot_id = max(found, key=lambda item: item[0], default=(None, None))
    age = None if newest is None else max(0, round((now - newest).total_seconds()))
    within = None if age is None else age <= rpo
    judged = bool(document.get("prove")) and document.get("last_proven") is not None
    return {
        "prove": document.get("prove"),
        "proven_snapshot_id": snapshot_id,
        "proven_snapshot_time": None if newest is None else utc_text(newest),
        "proven_age_seconds": age,
        "proven_rpo_ok": within,
        "proven_rpo_breached": judged and not within,
        "problem": "newest proven snapshot: none, no snapshot proven yet"
        if age is None
        else f"newest proven snapshot: {units.duration(age)} old, "
        f"over the RPO of {units.duration(rpo)}",
    }
