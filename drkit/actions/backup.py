"""drkit backup: inventory the node, sign its manifest, and snapshot both with restic."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from drkit import errors, timing
from drkit.actions import context
from drkit.config import Config, dump_config
from drkit.engines import accounts, keys, manifest
from drkit.engines.restic import Restic
from drkit.model import utc_text
from drkit.results import BackupResult

log = logging.getLogger(__name__)
PASSES = 3  # a file written to while restic reads it gets a fresh manifest and snapshot


def chain_path(config: Config) -> Path:
    """Return where this node keeps the link to its last snapshot's manifest."""
    return config.state_dir / "chain" / f"{config.node}.json"


def record_chain(
    config: Config, snapshot_id: str | None, manifest_bytes: bytes | None
) -> dict | None:
    """Remember the newest snapshot and its manifest hash; None starts a new chain. Return the
    link ({snapshot_id, manifest_sha256}) the next manifest records, or None."""
    link = None
    if snapshot_id and manifest_bytes is not None:
        link = {
            "snapshot_id": snapshot_id,
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
        }
    manifest.write_private(chain_path(config), json.dumps({"previous": link}).encode())
    return link


def mark_in_flight(config: Config, previous: dict | None) -> None:
    """Record, before restic runs, that a snapshot may land: a run killed before it records the
    new link leaves the next one asking the repository, not linking past that snapshot."""
    record = {"previous": previous, "in_flight": True}
    manifest.write_private(chain_path(config), json.dumps(record).encode())


def head_key(node: str) -> str:
    """Return the bucket key of the node's signed chain head (beside status/)."""
    return f"records/{node}/head.json"


def publish_head(config: Config, signing_key, link: dict) -> None:
    """Store a signed record of the node's newest snapshot (its chain link), so that `verify`
    sees a rollback."""
    from drkit.engines.storage import Storage

    record = {
        "kind": "head",
        "node": config.node,
        **link,
        "time": utc_text(datetime.now(UTC)),
        "written_ns": time.time_ns(),  # orders two heads signed within the same second
    }
    text = json.dumps(record, sort_keys=True)
    down = context.outage(config.repository)
    if down:
        log.warning("chain head not stored: %s", down)
        return
    try:
        signature = keys.sign(signing_key, text.encode())
        Storage(config.repository).put_json(
            head_key(config.node), {"record": text, "signature": signature}
        )
    except errors.DrkitError as exc:
        log.warning("chain head not stored: %s", exc.message)


def _previous_link(config: Config, restic: Restic, probe: Future) -> dict | None:
    """Return {snapshot_id, manifest_sha256} of the node's last snapshot.

    The local record answers without a round trip; without one (a rebuilt machine), or when
    the run that wrote it died while restic may have been making a snapshot (in_flight), the
    repository is asked, once the S3 probe has answered.
    """
    try:
        record = json.loads(chain_path(config).read_text())
        if not record.get("in_flight"):
            return record["previous"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    probe.result()
    mine = restic.snapshots(host=config.node, tags=["drkit"])
    if not mine:
        return None
    try:
        raw = restic.dump_text(mine[-1].id, manifest.MANIFEST_PATH).encode()
    except errors.ResticFailed:
        return None
    return {"snapshot_id": mine[-1].id, "manifest_sha256": hashlib.sha256(raw).hexdigest()}


def _unless_probe_failed(
    probe: Future, watch: Callable[[], str | None] | None
) -> Callable[[], str | None]:
    """Return restic's stop check: stop once the S3 probe has failed (restic is still deriving
    its key then, and would retry an unreachable S3 for minutes), else ask the outage watch."""

    def stop_when() -> str | None:
        if probe.done() and probe.exception() is not None:
            return "the S3 probe failed"
        return watch() if watch else None

    return stop_when


def run(
    config: Config,
    on_progress: Callable[[dict], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    lock_wait: float | None = None,
) -> BackupResult:
    """Take one snapshot of the node now; return the backup document. on_progress gets
    restic's status lines, on_step a short line as each step begins (progress display)."""
    step = on_step or (lambda text: None)
    if config.standby is not None:
        raise errors.UsageError(
            f"node {config.node} follows {config.standby.source} (standby) and does not back "
            "itself up: run `drkit standby sync`, or `drkit standby promote` to take over"
        )
    restic = context.restic_for(config.repository, config.restic)
    signing_key = keys.load_signing_key(config.signing_key)
    # The S3 probe (boto3 import, client, HEAD bucket) overlaps the inventory, the hashing and
    # restic's start (its key derivation); a failed probe stops restic and is the error.
    with ThreadPoolExecutor(max_workers=1) as pool, context.node_lock(config, lock_wait):
        probe = pool.submit(context.probe_storage, config.repository)
        started = time.monotonic()
        step("reading the node's files")
        with timing.phase("inventory"):
            inventory = context.collect_inventory(config)
        for warning in inventory.warnings:
            log.warning("%s", warning)
        with timing.phase("chain"):
            previous = _previous_link(config, restic, probe)
        first_previous = previous
        for attempt in range(1, PASSES + 1):
            step("hashing and signing the manifest" + (f" (pass {attempt})" if attempt > 1 else ""))
            cache = manifest.HashCache(config.state_dir / "cache" / f"{config.node}.json")
            with timing.phase("manifest (hashing)"):
                node_manifest = manifest.build(
                    config.root,
                    inventory,
                    node=config.node,
                    profiles=list(config.servers),
                    accounts=accounts.read_entries(config.root, inventory.users),
                    created=datetime.now(UTC),
                    previous=previous,
                    cache=cache,
                    profile_options=config.profile_options,
                )
            with timing.phase("manifest signing"):
                manifest_bytes = manifest.encode(node_manifest)
                signature = keys.sign(signing_key, manifest_bytes)
                snapshot_dir = manifest.write_snapshot_files(
                    config.root, manifest_bytes, signature, dump_config(config)
                )
            paths = manifest.leaf_paths(node_manifest)
            log.info("backing up %d paths of node %s", len(paths), config.node)
            step(f"uploading {len(paths)} paths with restic")
            mark_in_flight(config, previous)
            with timing.phase("restic backup (s3 probe overlapped)"):
                try:
                    summary = restic.backup(
                        paths + snapshot_dir,
                        cwd=config.root,
                        host=config.node,
                        tags=[
                            "drkit",
                            f"node:{config.node}",
                            *(f"profile:{p}" for p in config.servers),
                            *([f"group:{config.group}"] if config.group else []),
                        ],
                        on_progress=on_progress,
                        stop_when=_unless_probe_failed(probe, restic.stop_when),
                    )
                except errors.DrkitError:
                    probe.result()  # a failed probe names the cause better than restic does
                    raise
                probe.result()
            cache.save()
            previous = record_chain(config, summary.snapshot_id, manifest_bytes)
            step("storing the signed chain head")
            with timing.phase("chain head"):
                publish_head(config, signing_key, previous)
            with timing.phase("changed during backup"):
                moving = cache.changed_since(config.root)
            if not moving:
                break
            log.warning(
                "%d file(s) changed while restic read them (first: %s); pass %d of %d",
                len(moving), moving[0], attempt, PASSES,
            )  # fmt: skip
        else:
            raise errors.BackupIncomplete(
                f"snapshot {summary.snapshot_id[:8]} made, but {len(moving)} file(s) kept "
                f"changing during {PASSES} passes (first: {moving[0]}); its manifest cannot "
                "vouch for them, so restore will refuse that snapshot"
            )
    return BackupResult(
        node=config.node,
        snapshot_id=summary.snapshot_id,
        time=node_manifest["created"],
        files=summary.total_files_processed,  # restic's count, as snapshots and show give it
        size=summary.total_bytes_processed,
        bytes_added=summary.data_added,
        duration_seconds=round(time.monotonic() - started, 3),
        signer=signature["signer"],
        previous=first_previous["snapshot_id"] if first_previous else None,
        passes=attempt,
        warnings=inventory.warnings,
    )
