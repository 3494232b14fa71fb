"""drkit diff OLD NEW: what changed on the node between two snapshots.

Both manifests are read from the snapshots, their signatures verified and their signer trusted
exactly as for a restore, so a diff never describes a tampered snapshot as the node's history.
Text config and scripts that changed get a unified diff (read with `restic dump`); key files are
never read beyond their manifest entries, so no private key material can appear.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from drkit.actions import context
from drkit.actions.restore import Origin, open_manifest
from drkit.engines import diff as diff_engine
from drkit.engines import manifest
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
    old = context.select_snapshot(restic, origin.node, old_spec)
    new = context.select_snapshot(restic, origin.node, new_spec)
    paths = (manifest.MANIFEST_PATH, manifest.SIGNATURE_PATH, manifest.CONFIG_PATH)
    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        reads = {
            (snapshot.id, path): pool.submit(restic.dump_text, snapshot.id, path)
            for snapshot in (old, new)
            for path in paths
        }
        texts = {key: future.result() for key, future in reads.items()}
    opened = {
        snapshot.id: open_manifest(
            origin,
            texts[(snapshot.id, paths[0])].encode(),
            texts[(snapshot.id, paths[1])],
            texts[(snapshot.id, paths[2])],
        )
        for snapshot in (old, new)
    }
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
