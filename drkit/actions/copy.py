"""drkit copy: keep every snapshot in further repositories (3-2-1), with what opens them.

Each copy (`repository.copies`) is a restic repository of its own, in its own bucket on its own
endpoint. A copy holds the node's snapshots (restic copy) and the signed objects beside the
repository that open and trust them without restic: the sealed manifests and signatures, the
catalog key and the signed chain head (`manifests/<node>/`, `records/<node>/`). Losing the
primary bucket, its account or its region then loses nothing: `restore --from NAME` rebuilds
the node from a copy, trusting the same signer.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from drkit import errors
from drkit.config import Config, Repository
from drkit.engines import manifest
from drkit.engines.restic import Restic
from drkit.engines.storage import Storage
from drkit.model import utc_text
from drkit.results import CopyResult, CopyState
from drkit.service import context

log = logging.getLogger(__name__)
ALWAYS_COPIED = ("head.json", "key.json")  # rewritten in place on the primary: copied each run


def state_path(config: Config) -> Path:
    """Return where this node records its copies' progress."""
    return config.state_dir / "copies" / f"{config.node}.json"


def _recorded(config: Config) -> dict[str, object]:
    try:
        document = json.loads(state_path(config).read_text())
        return document if isinstance(document, dict) else {}
    except (OSError, ValueError):
        return {}


def run(config: Config, name: str | None = None) -> CopyResult:
    """Copy the node's snapshots and catalog objects to each copy (or the one named)."""
    copies = [copy.name for copy in config.repository.copies]
    if not copies:
        raise errors.UsageError("repository.copies names no copy: nothing to copy to")
    chosen = [name] if name else copies
    source = context.restic_for(config.repository, config.restic)
    context.probe_storage(config.repository)
    ids = [snapshot.id for snapshot in source.snapshots(host=config.node, tags=["drkit"])]
    recorded = _recorded(config)
    states = []
    for copy_name in chosen:
        states.append(_copy_one(config, config.repository.copy_named(copy_name), source, ids))
        recorded[copy_name] = states[-1].model_dump(mode="json")
    manifest.write_private(state_path(config), json.dumps(recorded, sort_keys=True).encode())
    return CopyResult(ok=True, node=config.node, copies=states)


def _copy_one(config: Config, target: Repository, source: Restic, ids: list[str]) -> CopyState:
    name = next(c.name for c in config.repository.copies if c.bucket == target.bucket)
    started = time.monotonic()
    context.probe_storage(target)
    destination = context.restic_for(target, config.restic)
    created = not Storage(target).has_repository()  # a HEAD, not a restic process
    if created:
        destination.init_copy_of(source)
    destination.copy_from(source, ids)
    objects = _copy_objects(config.repository, target, config.node)
    log.info("copy %s: %d snapshot(s), %d object(s)", name, len(ids), objects)
    return CopyState(
        name=name,
        bucket=target.bucket,
        created=created,
        snapshot_count=len(ids),
        objects=objects,
        newest=ids[-1] if ids else None,
        last_copy=utc_text(datetime.now(UTC)),
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _copy_objects(primary: Repository, target: Repository, node: str) -> int:
    """Copy the node's catalog objects and signed records missing from the copy's bucket (the
    chain head and catalog key every time); return how many were copied."""
    source, destination = Storage(primary), Storage(target)
    copied = 0
    for prefix in (f"manifests/{node}/", f"records/{node}/"):
        present = set(destination.list_keys(prefix))
        for key in source.list_keys(prefix):
            if key in present and not key.endswith(ALWAYS_COPIED):
                continue
            body = source.get_bytes(key)
            if body is None:
                continue
            destination.put_bytes(key, body, "application/json")
            copied += 1
    return copied
