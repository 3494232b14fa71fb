"""drkit diff OLD NEW: what changed on the node between two snapshots.

Both manifests are read from the snapshots, their signatures verified and their signer trusted
exactly as for a restore, so a diff never describes a tampered snapshot as the node's history.
Each manifest, signature and config is read in one `restic dump` of the snapshot's drkit
directory. Text config and scripts that changed get a unified diff (read with `restic dump`);
key files are never read beyond their manifest entries, so no private key material can appear.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from drkit.actions import context
from drkit.actions.restore import Origin, open_snapshot
from drkit.engines import diff as diff_engine
from drkit.model import utc_text
from drkit.results import DiffResult

log = logging.getLogger(__name__)

PARALLEL_READS = 4


def _describe(snapshot, opened) -> dict:
    return {
        "id": snapshot.id,
        "short_id": snapshot.short_id,
        "time": utc_text(snapshot.time),
        "signer": opened.signer,
    }


def run(origin: Origin, old_spec: str, new_spec: str) -> DiffResult:
    """Return {ok, node, old, new, changes: [{category, path, change, detail, diff?}], notes}."""
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    every = restic.snapshots(tags=["drkit"])
    old = context.select_from(every, origin.node, old_spec)
    new = context.select_from(every, origin.node, new_spec)
    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        reads = {
            snapshot.id: pool.submit(open_snapshot, origin, restic, snapshot.id)
            for snapshot in (old, new)
        }
        opened = {snapshot_id: future.result() for snapshot_id, future in reads.items()}
    old_manifest, new_manifest = opened[old.id].manifest, opened[new.id].manifest
    changes, notes = diff_engine.compare(old_manifest, new_manifest)
    wanted = [
        change
        for change in changes
        if diff_engine.wants_text_diff(change, old_manifest, new_manifest)
    ]
    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        reads = {}
        for change in wanted:
            if change["change"] != "added":
                reads[(old.id, change["path"])] = pool.submit(
                    restic.dump_text, old.id, change["path"]
                )
            if change["change"] != "removed":
                reads[(new.id, change["path"])] = pool.submit(
                    restic.dump_text, new.id, change["path"]
                )
        contents = {key: future.result() for key, future in reads.items()}
    for change in wanted:
        text = diff_engine.unified(
            change["path"],
            contents.get((old.id, change["path"])),
            contents.get((new.id, change["path"])),
        )
        if text:
            change["diff"] = text
    return DiffResult(
        node=origin.node,
        old=_describe(old, opened[old.id]),
        new=_describe(new, opened[new.id]),
        changes=changes,
        notes=notes,
    )
