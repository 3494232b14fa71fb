"""drkit's signed records beside the repository: the envelope `{record, signature}` (the record
as JSON text, signed as written) and what each kind of record holds.

Records stay the JSON objects drkit has always written (typed dicts): the chain head
(`records/<node>/head.json`: the newest snapshot and the node's signed index), a prune's
record of what it removed, the security events of a backup and their acknowledgements. Keys a
newer drkit adds are kept; an older drkit's record without some optional key still opens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Literal, Required

from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import ConfigDict, Field, TypeAdapter, with_config
from typing_extensions import TypedDict

from drkit.engines import keys

_KEEP_UNKNOWN = ConfigDict(extra="allow")


class Signed(TypedDict):
    """A signed record as stored: the record's JSON text and the signature over it."""

    record: str
    signature: keys.Signature


@with_config(_KEEP_UNKNOWN)
class HeadRecord(TypedDict, total=False):
    """A node's chain head: its newest snapshot (the link the next manifest records), the
    node's index (catalog.IndexEntry items) and its freshness confirmations."""

    kind: Required[Literal["head"]]
    node: Required[str]
    time: str
    written_ns: int  # orders two heads signed within the same second
    snapshot_id: str | None
    manifest_sha256: str | None
    snapshots: list[dict[str, object]]
    confirmations: Sequence[object]


class RemovedItem(TypedDict):
    id: str | None
    time: str | None


@with_config(_KEEP_UNKNOWN)
class PruneRecord(TypedDict, total=False):
    """What one prune removed and kept, under which rules."""

    kind: Required[Literal["prune"]]
    node: Required[str]
    time: str
    keep_rules: dict[str, int]
    removed: list[RemovedItem]
    kept: list[str | None]


@with_config(_KEEP_UNKNOWN)
class AckRecord(TypedDict, total=False):
    """An operator's acknowledgement of one security event, and why."""

    kind: Required[Literal["ack"]]
    node: Required[str]
    event_id: str
    why: str
    time: str


@with_config(_KEEP_UNKNOWN)
class EventsRecord(TypedDict, total=False):
    """The security events a backup found (engines.watch's SecurityEvent items)."""

    kind: Required[Literal["events"]]
    node: Required[str]
    snapshot_id: str
    time: str
    events: list[dict[str, object]]


Record = HeadRecord | PruneRecord | AckRecord | EventsRecord
RECORD: TypeAdapter[Record] = TypeAdapter(Annotated[Record, Field(discriminator="kind")])


def seal(key: ed25519.Ed25519PrivateKey, record: Record) -> Signed:
    """Return record signed: its JSON text (sorted keys) and the signature over that text."""
    text = json.dumps(record, sort_keys=True)
    return Signed(record=text, signature=keys.sign(key, text.encode()))
