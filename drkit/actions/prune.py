"""drkit prune: apply the retention rules to this node's snapshots, then free unused data.

`restic forget` runs for this node's host only, grouped by host and tags, so another node's
snapshots (or a renamed machine's, still under its former name) are never touched by these
rules. The repository-wide `restic prune` runs only where `group_pruner` is true. On an
object-locked bucket restic's deletes become delete markers; the lifecycle rule that
`drkit storage init` adds expires the noncurrent versions once their lock has passed.

Each copy (`repository.copies`) gets the same forget, with its own `retention` when it sets
one, and is pruned where this node prunes; a copy that cannot be reached is reported (`ok`
false, exit 1) without undoing the primary's retention or skipping the other copies.

What was removed is written as a signed record beside the status documents
(`records/<node>/prune-<time>.json`), so a gap in the snapshot history can be explained.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from drkit import errors
from drkit.config import Config, Copy
from drkit.engines import keys, records
from drkit.engines.records import PruneRecord, RemovedItem
from drkit.engines.resticjson import SnapshotRecord
from drkit.model import parse_utc, utc_text
from drkit.results import CopyPrune, KeptSnapshot, PruneResult, RemovedSnapshot
from drkit.service import context, locks

log = logging.getLogger(__name__)


def _brief(snapshot: SnapshotRecord) -> RemovedSnapshot:
    return RemovedSnapshot(
        id=snapshot.id,
        short_id=snapshot.short,
        time=utc_text(parse_utc(snapshot.time)),
        tags=snapshot.tags,
    )


def _rules(matches: list[str]) -> list[str]:
    """Name the keep rules from restic's reasons: "last snapshot" -> "last", "daily snapshot"
    -> "daily"; any other reason (e.g. "within 2d") as restic wrote it."""
    return [match.removesuffix(" snapshot") for match in matches]


def run(config: Config, dry_run: bool = False, lock_wait: float | None = None) -> PruneResult:
    """Apply retention to the node's snapshots; return the prune document.

    JSON: {ok, node, dry_run, keep_rules, kept: [{id, short_id, time, tags, reasons, rules:
    ["last", "daily"]}], removed: [{id, short_id, time, tags}], pruned, stale_locks, record,
    snapshot_count, duration_seconds}. The rules are restic's own reasons for
    keeping each snapshot (`forget --json`), not recomputed here.
    """
    started = time.monotonic()
    restic = context.restic_for(config.repository, config.restic)
    context.probe_storage(config.repository)
    keep_rules = config.retention.rules()
    with context.node_lock(config, lock_wait):
        stale = locks.clear_stale(restic)
        groups = restic.forget(host=config.node, tags=["drkit"], keep=keep_rules, dry_run=dry_run)
        kept: list[KeptSnapshot] = []
        removed: list[RemovedSnapshot] = []
        for group in groups:
            reasons = {reason.snapshot.id: reason.matches for reason in group.reasons}
            for snapshot in group.keep:
                matches = reasons.get(snapshot.id, [])
                brief = _brief(snapshot).model_dump()
                kept.append(KeptSnapshot(**brief, reasons=matches, rules=_rules(matches)))
            removed += [_brief(snapshot) for snapshot in group.remove]
        kept.sort(key=lambda item: item.time)
        removed.sort(key=lambda item: item.time)
        verb = "would remove" if dry_run else "removed"
        log.info("node %s: %s %d snapshot(s), kept %d", config.node, verb, len(removed), len(kept))
        pruned = False
        if not dry_run and config.group_pruner:
            log.info("pruning unreferenced data from the repository")
            restic.prune()
            pruned = True
    record = None
    if removed and not dry_run:
        record = _write_record(config, removed, kept)
    copies = [_prune_copy(config, copy, dry_run) for copy in config.repository.copies]
    return PruneResult(
        ok=all(copy.ok for copy in copies),
        node=config.node,
        dry_run=dry_run,
        keep_rules=keep_rules,
        kept=kept,
        removed=removed,
        pruned=pruned,
        group_pruner=config.group_pruner,
        stale_locks=stale,
        record=record,
        snapshot_count=len(kept),
        copies=copies,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _prune_copy(config: Config, copy: Copy, dry_run: bool) -> CopyPrune:
    """Apply the copy's keep rules (the node's unless it sets its own) to the node's snapshots
    in that copy, then prune it where this node prunes; a copy that fails is reported, not
    raised: the primary's retention has run, and the other copies still get theirs."""
    rules = (copy.retention or config.retention).rules()
    try:
        restic = context.restic_for(config.repository.copy_named(copy.name), config.restic)
        groups = restic.forget(host=config.node, tags=["drkit"], keep=rules, dry_run=dry_run)
        pruned = not dry_run and config.group_pruner
        if pruned:
            restic.prune()
    except errors.DrkitError as exc:
        log.warning("copy %s: retention not applied: %s", copy.name, exc.message)
        return CopyPrune(
            name=copy.name, ok=False, keep_rules=rules, kept=0, removed=[], pruned=False,
            error=exc.message,
        )  # fmt: skip
    removed = sorted(
        (_brief(snapshot) for group in groups for snapshot in group.remove),
        key=lambda item: item.time,
    )
    kept = sum(len(group.keep) for group in groups)
    log.info("copy %s: %d snapshot(s) removed, %d kept", copy.name, len(removed), kept)
    return CopyPrune(
        name=copy.name, ok=True, keep_rules=rules, kept=kept, removed=removed, pruned=pruned
    )


def _write_record(
    config: Config, removed: list[RemovedSnapshot], kept: list[KeptSnapshot]
) -> str | None:
    """Store a signed record of what this prune removed; return its key (None if S3 refused)."""
    from drkit.engines.storage import Storage

    now = datetime.now(UTC)
    record = PruneRecord(
        kind="prune",
        node=config.node,
        time=utc_text(now),
        keep_rules=config.retention.rules(),
        removed=[RemovedItem(id=item.id, time=item.time) for item in removed],
        kept=[item.id for item in kept],
    )
    key = f"records/{config.node}/prune-{now:%Y%m%dT%H%M%S%fZ}.json"
    try:
        signing_key = keys.load_trusted_signing_key(config.signing_key, config.trusted_keys)
        Storage(config.repository).put_json(key, records.seal(signing_key, record))
    except errors.DrkitError as exc:
        log.warning("prune record not stored: %s", exc.message)
        return None
    return key
