"""The status document's shape: what each job's last run, last good run and objectives hold.

The document stays the JSON object drkit has always written (typed dicts, so its bytes are
unchanged), checked once where it is read: from the state directory or the bucket. Keys a newer
drkit adds are kept; numbers stay as written (an int is never turned into a float).
"""

from __future__ import annotations

import logging
from typing import Required

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from drkit.model import CertificateEnd

log = logging.getLogger(__name__)

Number = int | float
_KEEP_UNKNOWN = ConfigDict(extra="allow")


class Objectives(TypedDict):
    """The node's objectives in seconds."""

    rpo_seconds: int
    rto_seconds: int


class CopyOutcome(TypedDict):
    """One copy repository in a copy job's outcome: when it last held every snapshot."""

    name: str | None
    last_copy: str | None


@with_config(_KEEP_UNKNOWN)
class Outcome(TypedDict, total=False):
    """One finished run of a job: time, ok, duration_seconds and error, and the job's own
    fields (every key optional, as older drkits and hand-made documents leave some out)."""

    time: str
    ok: bool
    duration_seconds: Number
    error: str | None
    error_kind: str
    snapshot_id: str | None
    snapshot_time: str | None
    bytes_added: int | None
    file_count: int | None
    removed: int
    kept: int
    problems: int
    drift: int
    rto_seconds: Number | None
    rpo_seconds: Number | None
    copies: list[CopyOutcome]
    source: str | None
    changed: bool | None
    lag_seconds: Number | None
    certificates: list[CertificateEnd]  # when each ends, for the fleet page


class GoodBackup(TypedDict):
    time: str | None
    snapshot_id: str | None


class GoodStandby(TypedDict):
    """The source's snapshot a passive node last applied (what it serves)."""

    time: str
    snapshot_id: str | None
    source: str | None


class GoodProof(TypedDict):
    time: str | None
    snapshot_id: str | None
    snapshot_time: str | None


class GoodDrill(TypedDict):
    time: str | None
    snapshot_id: str | None
    rto_seconds: Number | None
    rpo_seconds: Number | None


@with_config(_KEEP_UNKNOWN)
class StatusDocument(TypedDict, total=False):
    """A node's status document (`status/<node>.json`, locally and in the bucket); an entry
    an older drkit did not write reads as absent."""

    node: Required[str]

    format: int
    group: str | None
    updated: str | None
    objectives: Objectives
    last_backup: Outcome | None
    last_good_backup: GoodBackup | None
    last_prune: Outcome | None
    last_verify: Outcome | None
    last_drill: Outcome | None
    last_good_drill: GoodDrill | None
    prove: str | None
    last_proven: Outcome | None
    last_good_proof: GoodProof | None
    last_success: dict[str, str]
    snapshots: int | None
    last_standby: Outcome | None
    last_copy: Outcome | None
    last_good_standby: GoodStandby | None
    copies: dict[str, str | None]


_DOCUMENT: TypeAdapter[StatusDocument] = TypeAdapter(StatusDocument)


def document_of(raw: object) -> StatusDocument | None:
    """Return raw (a parsed JSON value) as a status document, or None when it is not one."""
    if raw is None:
        return None
    try:
        return _DOCUMENT.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        log.warning("not a status document (%s: %s): ignored", where, first["msg"])
        return None
