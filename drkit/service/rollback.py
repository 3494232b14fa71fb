"""Rollback protection: the newest signed state a node has published is remembered, and a
`latest` that resolves to an older one is refused unless the operator allows it.

Two witnesses know the newest state: the node's signed chain head in the bucket (the newest
signed version of it: a head put back to an older version, or hidden by a delete marker,
leaves the newer one among the versions) and this machine's record in
`<state_dir>/seen/<node>-<repository>.json` of the newest snapshot a backup, restore, drill
or standby sync here has opened (its id, its manifest's creation time and sha256). A snapshot
whose signed manifest is older than a witness's (re-backed up with plain restic, or the
newest hidden by a delete marker) is a rollback; the same signed manifest under another id is
not.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from drkit import errors
from drkit.config import Config, Repository
from drkit.engines import catalog, manifest
from drkit.engines.records import HeadRecord
from drkit.model import parse_utc, parse_utc_or_none, utc_text, utc_text_precise
from drkit.service.opening import Opened, open_record

if TYPE_CHECKING:
    from drkit.engines.storage import Storage

log = logging.getLogger(__name__)

HEAD_CLOCK_MARGIN = timedelta(minutes=10)  # between this machine's clock and the S3 server's
HEAD_VERSIONS_READ = 50
RECORD_LIMIT = 4096  # bytes: a record larger than this is not one drkit wrote


@dataclass(frozen=True)
class Known:
    """The newest signed state a witness knows: a snapshot id, when it was made, and the
    sha256 of its manifest (None when the witness does not bind it)."""

    snapshot_id: str
    time: datetime
    manifest_sha256: str | None
    source: str


def chain_path(config: Config) -> Path:
    """Return where a backup keeps the link to the node's last snapshot's manifest."""
    return config.state_dir / "chain" / f"{config.node}.json"


def seen_path(state_dir: Path, repository: Repository, node: str) -> Path:
    """Return where this machine keeps the newest snapshot of node in repository it has
    opened (one record per repository: nodes of the same name in two are two nodes)."""
    where = hashlib.sha256(repository.restic_url.encode()).hexdigest()[:12]
    return Path(state_dir) / "seen" / f"{node}-{where}.json"


def remembered(state_dir: Path, repository: Repository, node: str) -> Known | None:
    """Return this machine's record of node's newest snapshot, or None (absent, unreadable or
    malformed: logged)."""
    path = seen_path(state_dir, repository, node)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as handle:
            if not stat.S_ISREG(os.fstat(descriptor).st_mode):
                raise ValueError("not a regular file")
            data = handle.read(RECORD_LIMIT + 1)
        if len(data) > RECORD_LIMIT:
            raise ValueError(f"larger than {RECORD_LIMIT} bytes")
        record = json.loads(data)
        return Known(
            str(record["snapshot_id"]),
            parse_utc(str(record["time"])),
            str(record["manifest_sha256"]),
            "this machine's record",
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s is not usable (%s): not used as a rollback witness", path, exc)
        return None


def remember(
    state_dir: Path, repository: Repository, node: str, snapshot_id: str, manifest_bytes: bytes
) -> None:
    """Record a snapshot opened (or made) on this machine when its signed manifest is newer
    than the one recorded; a state directory that cannot be written is logged, not raised."""
    try:
        created = parse_utc(manifest.created_of(manifest_bytes))  # not its 30,000 entries
    except ValueError:  # pydantic's ValidationError is one
        return
    known = remembered(state_dir, repository, node)
    if known is not None and known.time >= created:
        return
    record = {
        "snapshot_id": snapshot_id,
        "time": utc_text_precise(created),
        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
    }
    try:
        path = seen_path(state_dir, repository, node)
        manifest.write_private(path, json.dumps(record).encode() + b"\n")
    except errors.DrkitError as exc:
        log.warning("the newest snapshot seen is not recorded: %s", exc.message)


def of_index(index: list[catalog.IndexEntry] | None, source: str) -> Known | None:
    """Return the newest snapshot a signed index lists, or None."""
    if not index:
        return None
    newest = max(index, key=lambda entry: entry.time)
    return Known(newest.id, newest.time, newest.manifest_sha256, source)


class Finding(TypedDict):
    """A rollback found: which witness saw it, the newer snapshot it names, in words."""

    source: str
    snapshot: str | None
    detail: str


def newest_head(
    storage: Storage, trusted: set[str], node: str
) -> tuple[HeadRecord | None, list[Finding], list[str]]:
    """Return the newest signed chain head among the versions of the head object, the rollback
    findings about the head object itself, and other problems.

    Versioning keeps every head a backup wrote, and the backup role cannot delete versions: a
    head put back to an older version, or hidden by a delete marker, leaves the newer one behind,
    so this holds even on a rebuilt machine with no chain record of its own.
    """
    key = catalog.head_key(node)
    problems: list[str] = []
    current: HeadRecord | None = None
    stored: object = None
    try:
        stored = storage.get_json(key)
    except errors.StorageError as exc:
        problems.append(f"rollback: chain head {key}: {exc.message}")
    if stored is not None:
        try:
            current = open_record(stored, trusted, node, "head")
        except errors.Refused as exc:
            problems.append(f"rollback: chain head {key}: {exc.message}")
    try:
        versions = storage.versions(key)
    except errors.AuthenticationError as exc:
        log.warning("versions of %s not readable (%s): head rollback not checked", key, exc.message)
        return current, [], problems
    since = None
    if current is not None and current.get("time"):
        try:
            since = parse_utc(str(current["time"])).replace(tzinfo=UTC) - HEAD_CLOCK_MARGIN
        except ValueError:
            since = None
    newest = current
    older = [version for version in versions if not version.latest and not version.deleted]
    for version in older[:HEAD_VERSIONS_READ]:
        if since is not None and version.modified < since:
            break  # newest first: the rest were written before the current head was signed
        try:
            body = storage.get_bytes(key, version.version_id)
            record = open_record(json.loads(body or b"null"), trusted, node, "head")
        except (errors.Refused, errors.StorageError, ValueError):
            continue
        if newest is None or head_order(record) > head_order(newest):
            newest = record
    findings: list[Finding] = []
    if newest is not None and newest is not current and (current is not None or stored is None):
        later = f"snapshot {str(newest.get('snapshot_id'))[:8]} ({newest.get('time')})"
        detail = f"the chain head {key} was deleted; its newest signed version names {later}"
        if current is not None:
            detail = (
                f"the chain head {key} was put back to an older version naming snapshot "
                f"{str(current.get('snapshot_id'))[:8]} ({current.get('time')}); a version "
                f"written after it names {later}"
            )
        source = "versions of the chain head"
        findings.append(Finding(source=source, snapshot=newest.get("snapshot_id"), detail=detail))
    return newest, findings, problems


def head_order(record: HeadRecord) -> tuple[str, int]:
    """Return what orders signed heads: their time, then (heads signed within one second) the
    nanosecond clock they carry; heads written before it carry none."""
    written = record.get("written_ns")
    return str(record.get("time")), written if isinstance(written, int) else 0


def of_head(record: HeadRecord | None) -> Known | None:
    """Return the newest snapshot a signed head names (its index's entry for it, else the
    head's own time), or None."""
    if record is None:
        return None
    try:
        index = catalog.parse_index(record.get("snapshots") or [])
    except (ValueError, TypeError):
        index = []
    named = str(record.get("snapshot_id") or "")
    entry = next((item for item in index if item.id == named), None)
    if entry is not None:
        return Known(entry.id, entry.time, entry.manifest_sha256, "the signed chain head")
    newest = of_index(index, "the signed chain head")
    if newest is not None:
        return newest
    try:
        moment = parse_utc(str(record.get("time")))
    except ValueError:
        return None
    sha = record.get("manifest_sha256")
    return Known(named, moment, sha if isinstance(sha, str) else None, "the signed chain head")


def refuse_rollback(
    snapshot_id: str, opened: Opened, witnesses: list[Known | None], *, allow: bool
) -> None:
    """Raise Refused when a witness knows a newer signed state than the snapshot's manifest
    (or the same id with another manifest); with allow, warn instead."""
    sha = hashlib.sha256(opened.raw).hexdigest()
    created = parse_utc_or_none(opened.manifest.created)
    for known in witnesses:
        if known is None or known.manifest_sha256 == sha:
            continue
        if known.snapshot_id == snapshot_id:
            if known.manifest_sha256 is None:
                continue
            problem = (
                f"snapshot {snapshot_id[:8]}'s manifest is not the one {known.source} names for it"
            )
        elif created is None or known.time > created:
            problem = (
                f"`latest` is snapshot {snapshot_id[:8]} (made {_when(created)}), but "
                f"{known.source} names a newer snapshot {known.snapshot_id[:8]} (made "
                f"{_when(known.time)}): an older state put back or a newer one hidden"
            )
        else:
            continue
        if allow:
            log.warning("%s: restoring it anyway (--allow-rollback)", problem)
            continue
        raise errors.Refused(
            f"rollback refused: {problem}; name the snapshot by id, or pass --allow-rollback"
        )


def _when(moment: datetime | None) -> str:
    return utc_text(moment) if moment is not None else "at an unknown time"
