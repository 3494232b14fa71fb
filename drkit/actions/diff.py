"""drkit diff OLD NEW: what changed on the node between two snapshots.

Both manifests are read from the snapshots, their signatures verified and their signer trusted
exactly as for a restore, so a diff never describes a tampered snapshot as the node's history.
Both are found and opened through the signed catalog (no restic process), the texts of changed
config and scripts read from the sealed manifest objects; a snapshot the catalog does not hold
is read with `restic dump` as before. Text config and scripts that changed get a unified diff;
key files are never read beyond their manifest entries, so no private key material can appear.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor

from drkit.engines import diff as diff_engine
from drkit.engines.restic import Snapshot
from drkit.model import utc_text
from drkit.results import DiffResult, DiffSnapshot
from drkit.service import context
from drkit.service.opening import Catalog, Opened, Origin

log = logging.getLogger(__name__)

PARALLEL_READS = 4


def _describe(snapshot: Snapshot, opened: Opened) -> DiffSnapshot:
    return DiffSnapshot(
        id=snapshot.id,
        short_id=snapshot.short_id,
        time=utc_text(snapshot.time),
        signer=opened.signer,
    )


def run(origin: Origin, old_spec: str, new_spec: str) -> DiffResult:
    """Return {ok, node, old, new, changes: [{category, path, change, detail, diff?}], notes}."""
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    with Catalog(origin, restic) as found_in:
        old, new = (found_in.find_or_ask(origin.node, spec) for spec in (old_spec, new_spec))
        with ThreadPoolExecutor(PARALLEL_READS) as pool:
            reads = {
                found.snapshot.id: pool.submit(found_in.open, origin.node, found)
                for found in (old, new)
            }
            opened = {snapshot_id: future.result() for snapshot_id, future in reads.items()}
    old_opened, new_opened = opened[old.snapshot.id], opened[new.snapshot.id]
    changes, notes = diff_engine.compare(old_opened.manifest, new_opened.manifest)
    wanted = [
        change
        for change in changes
        if diff_engine.wants_text_diff(change, old_opened.manifest, new_opened.manifest)
    ]
    with ThreadPoolExecutor(PARALLEL_READS) as pool:
        pending: dict[tuple[str, str], str | Future[str]] = {}
        for change in wanted:
            sides = [(old, old_opened)] if change["change"] != "added" else []
            sides += [(new, new_opened)] if change["change"] != "removed" else []
            for found, side in sides:
                key = (found.snapshot.id, change["path"])
                text = side.bundle.text(side.manifest, change["path"]) if side.bundle else None
                pending[key] = text if text is not None else pool.submit(
                    restic.dump_text, found.snapshot.id, change["path"]
                )  # fmt: skip
        contents = {
            key: value if isinstance(value, str) else value.result()
            for key, value in pending.items()
        }
    for change in wanted:
        text = diff_engine.unified(
            change["path"],
            contents.get((old.snapshot.id, change["path"])),
            contents.get((new.snapshot.id, change["path"])),
        )
        if text:
            change["diff"] = text
    return DiffResult(
        node=origin.node,
        old=_describe(old.snapshot, old_opened),
        new=_describe(new.snapshot, new_opened),
        changes=changes,
        notes=notes,
    )
