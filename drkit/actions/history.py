"""drkit history: the node's security events over time, their acknowledgements, the last clean
snapshot before one.

Each backup that found events stored them as a signed record beside the repository
(`records/<node>/events/<snapshot-id>.json`); an acknowledgement is a signed record of its own
(`records/<node>/acks/<event-id>.json`), made with the node's signing key. Records that do not
verify against the node's trusted keys are ignored and named in a warning: whoever holds only
the bucket can neither silence an event nor invent one that counts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from drkit import errors
from drkit.config import Config
from drkit.engines import catalog, keys, records, watch
from drkit.engines.records import AckRecord
from drkit.engines.storage import Storage
from drkit.model import SecurityEvent, parse_utc, utc_text
from drkit.results import HistoryResult
from drkit.service.opening import open_record

log = logging.getLogger(__name__)
_Record = TypeVar("_Record")


def _trusted(config: Config) -> set[str]:
    signing_key = keys.load_signing_key(config.signing_key)
    return {keys.signing_fingerprint(signing_key.public_key()), *config.trusted_keys}


def _signed(storage: Storage, prefix: str, open_one: Callable[[object], _Record]) -> list[_Record]:
    """Return the signed records under prefix that open_one opens; warn about the others."""
    found: list[_Record] = []
    for key in sorted(storage.list_keys(prefix)):
        try:
            found.append(open_one(storage.get_json(key)))
        except (errors.Refused, errors.StorageError, ValueError) as exc:
            log.warning("%s ignored: %s", key, getattr(exc, "message", exc))
    return found


def events(config: Config, since: datetime | None = None) -> list[SecurityEvent]:
    """Return the node's events, oldest first, each marked when a signed ack covers it."""
    storage, trusted = Storage(config.repository), _trusted(config)
    acks = _signed(
        storage,
        watch.acks_prefix(config.node),
        lambda stored: open_record(stored, trusted, config.node, "ack"),
    )
    acknowledged = {str(ack.get("event_id")) for ack in acks}
    found = []
    for record in _signed(
        storage,
        watch.events_prefix(config.node),
        lambda stored: open_record(stored, trusted, config.node, "events"),
    ):
        for item in record.get("events") or []:
            try:
                event = SecurityEvent.model_validate(
                    {**item, "acknowledged": item.get("id") in acknowledged}
                )
            except ValueError:
                continue
            if since is None or parse_utc(event.time) >= since:
                found.append(event)
    return sorted(found, key=lambda event: (event.time, event.id))


def run(
    config: Config,
    *,
    since: datetime | None = None,
    ack: list[str] | None = None,
    why: str | None = None,
    last_clean: str | None = None,
) -> HistoryResult:
    """List events; with ack, sign acknowledgements first; with last_clean, name the newest
    snapshot taken before that event's snapshot."""
    listed = events(config)
    by_id = {event.id: event for event in listed}
    if ack:
        if not why:
            raise errors.UsageError("--ack needs --why: the reason is signed with it")
        unknown = [event_id for event_id in ack if event_id not in by_id]
        if unknown:
            raise errors.UsageError(f"no event {unknown[0]} (see drkit history)")
        _acknowledge(config, ack, why)
        listed = events(config)
    shown = [event for event in listed if since is None or parse_utc(event.time) >= since]
    if last_clean is None:
        return HistoryResult(node=config.node, events=shown)
    event = by_id.get(last_clean)
    if event is None:
        raise errors.UsageError(f"no event {last_clean} (see drkit history)")
    return HistoryResult(
        node=config.node, events=shown, snapshot_id=_before(config, event.snapshot_id)
    )


def _acknowledge(config: Config, event_ids: list[str], why: str) -> None:
    signing_key = keys.load_trusted_signing_key(config.signing_key, config.trusted_keys)
    storage = Storage(config.repository)
    for event_id in event_ids:
        record = AckRecord(
            kind="ack",
            node=config.node,
            event_id=event_id,
            why=why,
            time=utc_text(datetime.now(UTC)),
        )
        storage.put_json(watch.ack_key(config.node, event_id), records.seal(signing_key, record))


def _before(config: Config, snapshot_id: str) -> str:
    """Return the id of the node's newest snapshot older than snapshot_id (the signed head's
    index: no restic process)."""
    storage = Storage(config.repository)
    head = open_record(
        storage.get_json(catalog.head_key(config.node)), _trusted(config), config.node, "head"
    )
    index = sorted(
        (entry for entry in head.get("snapshots") or [] if isinstance(entry, dict)),
        key=lambda entry: str(entry.get("time")),
    )
    ids = [str(entry.get("id")) for entry in index]
    if snapshot_id not in ids:
        raise errors.Refused(f"snapshot {snapshot_id[:8]} is not in the node's signed index")
    position = ids.index(snapshot_id)
    if position == 0:
        raise errors.Refused(
            f"snapshot {snapshot_id[:8]} is the node's oldest: no clean snapshot before it"
        )
    return ids[position - 1]
