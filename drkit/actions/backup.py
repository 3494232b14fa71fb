"""drkit backup: inventory the node, sign its manifest, and snapshot both with restic."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from drkit.actions import context
from drkit.config import Config, dump_config
from drkit.engines import accounts, keys, manifest

log = logging.getLogger(__name__)


def run(config: Config, on_progress: Callable[[dict], None] | None = None) -> dict:
    """Take one snapshot of the node now; return the backup document."""
    restic = context.restic_for(config.repository, config.restic)
    signing_key = keys.load_signing_key(config.signing_key)
    context.probe_storage(config.repository)
    with context.node_lock(config):
        started = time.monotonic()
        inventory = context.collect_inventory(config)
        for warning in inventory.warnings:
            log.warning("%s", warning)
        node_manifest = manifest.build(
            config.root,
            inventory,
            node=config.node,
            profiles=list(config.servers),
            accounts=accounts.read_entries(config.root, inventory.users),
            created=datetime.now(UTC),
        )
        manifest_bytes = manifest.encode(node_manifest)
        signature = keys.sign(signing_key, manifest_bytes)
        snapshot_dir = manifest.write_snapshot_files(
            config.root, manifest_bytes, signature, dump_config(config)
        )
        paths = manifest.leaf_paths(node_manifest)
        log.info("backing up %d paths of node %s", len(paths), config.node)
        summary = restic.backup(
            paths + snapshot_dir,
            cwd=config.root,
            host=config.node,
            tags=["drkit", f"node:{config.node}", *(f"profile:{p}" for p in config.servers)],
            on_progress=on_progress,
        )
    return {
        "ok": True,
        "node": config.node,
        "snapshot_id": summary.snapshot_id,
        "time": node_manifest["created"],
        "files": len(node_manifest["files"]),
        "bytes_added": summary.data_added,
        "duration_seconds": round(time.monotonic() - started, 3),
        "signer": signature["signer"],
        "warnings": inventory.warnings,
    }
