"""drkit verify: the repository is sound, every snapshot is signed by a trusted key, and a sample
of the latest snapshot's files still matches its manifest.

Three parts:
1. `restic check` (with `--read-data-subset` when asked): damage is a finding, exit 1.
2. Every snapshot of the node: its manifest's signature verifies, the signer is trusted and the
   manifest names this node.
3. Spot check: N random files of the latest snapshot are restored to a scratch directory and
   compared with the signed manifest (a mismatch is a failure: the backup is not what was
   signed), and the live node's files with the manifest (a difference is drift: the node changed
   since the snapshot; reported, not a failure).
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from drkit import errors
from drkit.actions import context, locks
from drkit.actions.restore import Origin, open_manifest
from drkit.config import Config
from drkit.engines import manifest
from drkit.paths import on_root

log = logging.getLogger(__name__)

PARALLEL_READS = 4
_GLOB_CHARACTERS = re.compile(r"([\\*?\[\]])")


def _include_pattern(node_path: str) -> str:
    """Return a restic --include pattern that matches exactly node_path."""
    return _GLOB_CHARACTERS.sub(r"\\\1", node_path)


def _open_snapshot(restic, origin: Origin, snapshot_id: str):
    """Return the snapshot's opened (verified, trusted) manifest; raise Refused otherwise."""
    try:
        manifest_text = restic.dump_text(snapshot_id, manifest.MANIFEST_PATH)
        signature = restic.dump_text(snapshot_id, manifest.SIGNATURE_PATH)
    except errors.ResticFailed:
        raise errors.Refused("no drkit manifest or signature in the snapshot") from None
    try:
        config_text = restic.dump_text(snapshot_id, manifest.CONFIG_PATH)
    except errors.ResticFailed:
        config_text = None
    return open_manifest(origin, manifest_text.encode(), signature, config_text)


def run(
    config: Config,
    *,
    read_data_subset: str | None = None,
    spot: int = 20,
    trust: list[str] | None = None,
    seed: int | None = None,
) -> dict:
    """Verify the repository, every snapshot's signature, and a spot sample; return the
    verify document: {ok, node, check, snapshots, spot, problems, drift, duration_seconds}."""
    if read_data_subset and not re.fullmatch(r"\d+(\.\d+)?%|\d+/\d+|\d+[KMGT]?", read_data_subset):
        raise errors.UsageError(
            f"--read-data-subset {read_data_subset!r}: use a percentage (5%), n/t or a size"
        )
    started = time.monotonic()
    origin = Origin.from_config(config, trust or [])
    restic = context.restic_for(config.repository, config.restic)
    context.probe_storage(config.repository)
    problems: list[str] = []
    with context.node_lock(config):
        stale = locks.clear_stale(restic)
        clean, check_lines = restic.check_report(read_data_subset)
    if not clean:
        problems += [f"restic check: {line}" for line in check_lines] or ["restic check failed"]

    found = restic.snapshots(host=config.node, tags=["drkit"])
    opened_by_id = {}
    failed_snapshots = []

    def open_one(snapshot):
        try:
            return snapshot, _open_snapshot(restic, origin, snapshot.id), None
        except errors.Refused as exc:
            return snapshot, None, exc.message

    with ThreadPoolExecutor(max_workers=PARALLEL_READS) as pool:
        for snapshot, opened, problem in pool.map(open_one, found):
            if opened is not None:
                opened_by_id[snapshot.id] = opened
            else:
                failed_snapshots.append(
                    {
                        "id": snapshot.id,
                        "time": manifest.utc_text(snapshot.time),
                        "problem": problem,
                    }
                )
                problems.append(f"snapshot {snapshot.short_id}: {problem}")

    spot_document = None
    drift: list[dict] = []
    if found and spot > 0 and found[-1].id in opened_by_id:
        spot_document, spot_failures, drift = _spot_check(
            config, restic, found[-1], opened_by_id[found[-1].id].manifest, spot, seed
        )
        problems += [f"spot check {item['path']}: {item['detail']}" for item in spot_failures]
    elif not found:
        problems.append(f"node {config.node} has no snapshot in the repository")

    return {
        "ok": not problems,
        "node": config.node,
        "check": {"ok": clean, "read_data_subset": read_data_subset, "problems": check_lines},
        "stale_locks": stale,
        "snapshots": {
            "checked": len(found),
            "verified": len(opened_by_id),
            "failed": failed_snapshots,
        },
        "spot": spot_document,
        "problems": problems,
        "drift": drift,
        "duration_seconds": round(time.monotonic() - started, 3),
    }


def _spot_check(config: Config, restic, snapshot, node_manifest: dict, count: int, seed):
    """Restore a random sample of the snapshot's files; compare them with the manifest (failure)
    and the live node with the manifest (drift). Return (document, failures, drift)."""
    chooser = random.Random(seed)
    candidates = [entry for entry in node_manifest["files"] if entry["type"] == "file"]
    sample = sorted(
        chooser.sample(candidates, min(count, len(candidates))), key=lambda e: e["path"]
    )
    scratch = config.state_dir / "verify" / secrets.token_hex(4)
    failures: list[dict] = []
    drift: list[dict] = []
    try:
        scratch.mkdir(mode=0o700, parents=True)
        if sample:
            restic.restore_paths(
                snapshot.id, scratch, [_include_pattern(entry["path"]) for entry in sample]
            )
        for entry in sample:
            restored = manifest.compare_entry(on_root(scratch, entry["path"]), entry)
            if restored:
                failures.append({"path": entry["path"], "detail": f"in the snapshot: {restored}"})
            live = manifest.compare_entry(on_root(config.root, entry["path"]), entry)
            if live:
                drift.append({"path": entry["path"], "detail": live})
    except OSError as exc:
        raise errors.LocalFilesystemError(f"{scratch}: {exc.strerror}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for item in drift:
        log.info("drift: %s %s", item["path"], item["detail"])
    document = {
        "snapshot_id": snapshot.id,
        "sampled": len(sample),
        "matched": len(sample) - len(failures),
        "failed": failures,
        "drift": drift,
        "seed": seed,
    }
    return document, failures, drift
