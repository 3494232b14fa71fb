"""drkit verify: the repository is sound, every snapshot is signed by a trusted key, and a sample
of the latest snapshot's files still matches its manifest.

Three parts:
1. `restic check` (with `--read-data-subset` when asked): damage is a finding, exit 1.
2. Every snapshot of the node (listed and opened through the signed catalog where it can
   answer): its manifest's signature verifies, the signer is trusted and the manifest names this
   node; a sealed manifest object that is not the one the signed index names is tampering.
3. Spot check: N random files of the latest snapshot, and its own copy of the manifest, are
   restored to a scratch directory (the one restore) and compared with the signed manifest (a
   mismatch is a failure: the backup is not what was signed; a copy that differs from the
   catalog's is tampering), and the live node's files with the manifest (a difference is drift:
   the node changed since the snapshot; reported, not a failure).
4. The manifest chain: walked oldest to newest, each manifest's `previous` must name the preceding
   snapshot and the sha256 of its manifest; a snapshot deleted, replaced or re-ordered is a
   "broken chain" failure, unless a signed prune record (`records/<node>/prune-*.json`) lists the
   missing snapshot. Rollback: the signed head (`records/<node>/head.json`, written by each
   backup; the newest signed version of it, so a head put back to an older version or hidden by
   a delete marker is itself a finding) and this machine's chain record must name a snapshot
   the repository still has (or a pruned one), with the same manifest hash.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import secrets
import shutil
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from drkit import errors
from drkit.config import Config
from drkit.engines import durable, manifest, sqlite_copies
from drkit.engines.manifest import MANIFEST_PATH
from drkit.engines.restic import Restic, Snapshot
from drkit.model import ChainLink, utc_text
from drkit.paths import on_root
from drkit.results import VerifyResult
from drkit.service import chain, context, locks, rollback
from drkit.service.opening import Catalog, Found, Opened, Origin, open_record

if TYPE_CHECKING:
    from drkit.engines.storage import Storage  # imported where used: boto3 loads slowly

log = logging.getLogger(__name__)

OPENED_AT_ONCE = 2  # manifests parsed at once: 30 k files parse to ~50 MiB each
_GLOB_CHARACTERS = re.compile(r"([\\*?\[\]])")


def _include_pattern(node_path: str) -> str:
    """Return a restic --include pattern that matches exactly node_path."""
    return _GLOB_CHARACTERS.sub(r"\\\1", node_path)


def run(
    config: Config,
    *,
    read_data_subset: str | None = None,
    spot: int = 20,
    trust: list[str] | None = None,
    seed: int | None = None,
    lock_wait: float | None = None,
) -> VerifyResult:
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
    with Catalog(origin, restic) as found_in:
        with context.node_lock(config, lock_wait):
            # restic's own lock files: read (one `restic list locks`) only when there are any
            stale = locks.clear_stale(restic) if found_in.storage.lock_files() else []
            clean, check_lines = restic.check_report(read_data_subset)
        if not clean:
            problems += [f"restic check: {line}" for line in check_lines] or ["restic check failed"]
        every = found_in.node_snapshots(config.node)
        opened_by_id, failed_snapshots = _open_every(found_in, config.node, every)
        problems += [f"snapshot {item['id'][:8]}: {item['problem']}" for item in failed_snapshots]
        problems += found_in.anomalies + found_in.storage.malformed
    found = [item.snapshot for item in every]
    chain_document, chain_problems = _check_chain(config, origin, found, opened_by_id)
    problems += chain_problems

    spot_document = None
    drift: list[dict[str, str]] = []
    newest = opened_by_id.get(found[-1].id) if found else None
    if found and spot > 0 and isinstance(newest, Opened):
        spot_document, spot_failures, drift = _spot_check(
            config, restic, found[-1], newest, spot, seed
        )
        problems += [f"spot check {item['path']}: {item['detail']}" for item in spot_failures]
    elif not found:
        problems.append(f"node {config.node} has no snapshot in the repository")

    return VerifyResult(
        ok=not problems,
        node=config.node,
        check={"ok": clean, "read_data_subset": read_data_subset, "problems": check_lines},
        stale_locks=stale,
        snapshots={
            "checked": len(found),
            "verified": len(opened_by_id),
            "failed": failed_snapshots,
        },
        chain=chain_document,
        spot=spot_document,
        problems=problems,
        drift=drift,
        duration_seconds=round(time.monotonic() - started, 3),
    )


def _open_every(
    found_in: Catalog, node: str, every: list[Found]
) -> tuple[dict[str, Opened | _Link], list[dict[str, str]]]:
    """Open every snapshot's manifest (from the catalog's objects where it holds them);
    return ({id: opened}, [{id, time, problem}] for those that do not verify)."""

    newest = every[-1].snapshot.id if every else None

    def open_one(found: Found) -> tuple[Snapshot, Opened | _Link | None, str]:
        try:
            opened = found_in.open(node, found)
        except errors.Refused as exc:
            return found.snapshot, None, exc.message
        # of the others, the chain check reads only the link: each whole manifest is let go
        # as soon as it is verified
        return found.snapshot, opened if found.snapshot.id == newest else _Link.of(opened), ""

    opened_by_id: dict[str, Opened | _Link] = {}
    failed: list[dict[str, str]] = []
    with ThreadPoolExecutor(max_workers=OPENED_AT_ONCE) as pool:
        for snapshot, opened, problem in pool.map(open_one, every):
            if opened is not None:
                opened_by_id[snapshot.id] = opened
            else:
                failed.append(
                    {"id": snapshot.id, "time": utc_text(snapshot.time), "problem": problem}
                )
    return opened_by_id, failed


def _spot_check(
    config: Config, restic: Restic, snapshot: Snapshot, opened: Opened, count: int, seed: int | None
) -> tuple[dict[str, object], list[dict[str, str]], list[dict[str, str]]]:
    """Restore a random sample of the snapshot's files and its own copy of the manifest;
    compare the files with the manifest (failure), the copy with the manifest verified from
    the catalog (a difference is tampering), and the live node with the manifest (drift).
    Return (document, failures, drift)."""
    node_manifest = opened.manifest
    chooser = random.Random(seed)
    candidates = [entry for entry in node_manifest.files if entry.type == "file"]
    databases = [e for e in candidates if e.category == sqlite_copies.CATEGORY]
    candidates = [entry for entry in candidates if entry not in databases]
    sample = sorted(  # every database, integrity-checked, and a sample of the other files
        databases + chooser.sample(candidates, min(count, len(candidates))),
        key=lambda e: e.path,
    )
    scratch = config.state_dir / "verify" / secrets.token_hex(4)
    failures: list[dict[str, str]] = []
    drift: list[dict[str, str]] = []
    try:
        durable.make_dirs(scratch, 0o700)
        restic.restore_paths(
            snapshot.id,
            scratch,
            [
                _include_pattern(path)
                for path in [e.path for e in sample]
                + [sqlite_copies.stored_path(e.path) for e in databases]
                + [MANIFEST_PATH]
            ],
        )
        inside = on_root(scratch, MANIFEST_PATH)
        if not inside.is_file() or inside.read_bytes() != opened.raw:
            failures.append(
                {
                    "path": MANIFEST_PATH,
                    "detail": "tampering: the manifest inside the snapshot differs from the "
                    "signed manifest object beside it",
                }
            )
        for entry in sample:
            held = sqlite_copies.stored_path(entry.path)  # where a database copy is held
            held = held if entry in databases and on_root(scratch, held).exists() else entry.path
            restored = manifest.compare_entry(on_root(scratch, held), entry)
            problem = None if restored else sqlite_copies.check_file(scratch, held)
            if problem not in (None, sqlite_copies.OK):
                restored = f"PRAGMA integrity_check: {problem}"
            if restored:
                failures.append({"path": entry.path, "detail": f"in the snapshot: {restored}"})
            live = manifest.compare_entry(on_root(config.root, entry.path), entry)
            if live:
                drift.append({"path": entry.path, "detail": live})
    except OSError as exc:
        raise errors.LocalFilesystemError(f"{scratch}: {exc.strerror}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for item in drift:
        log.info("drift: %s %s", item["path"], item["detail"])
    document: dict[str, object] = {
        "snapshot_id": snapshot.id,
        "sampled": len(sample),
        "matched": len(sample) - len(failures),
        "failed": failures,
        "drift": drift,
        "seed": seed,
    }
    return document, failures, drift


# -- the manifest chain and rollback ---------------------------------------------------------


def _trusted(origin: Origin) -> set[str]:
    return set(origin.trusted_keys) | set(origin.trust_keys)


def _signed_records(config: Config, origin: Origin, storage: Storage) -> tuple[set[str], list[str]]:
    """Return (ids removed by signed prune records, problems)."""
    problems: list[str] = []
    removed: set[str] = set()
    prefix = f"records/{config.node}/"
    for key in storage.list_keys(prefix):
        name = key.removeprefix(prefix)
        if not (name.startswith("prune-") and name.endswith(".json")):
            continue
        try:
            record = open_record(storage.get_json(key), _trusted(origin), config.node, "prune")
            removed |= {str(item.get("id")) for item in record.get("removed") or []}
        except (errors.Refused, AttributeError) as exc:
            detail = exc.message if isinstance(exc, errors.Refused) else "malformed record"
            problems.append(f"prune record {key}: {detail}")
    return removed, problems


def _local_link(config: Config) -> chain.Link | None:
    """Return this machine's record of the node's newest snapshot, or None."""
    link = chain.read(config).get("previous")
    return link if link and link.get("snapshot_id") else None


@dataclass(frozen=True)
class _Link:
    """What the chain check reads of an older snapshot's manifest: whether it is chained (made
    since drkit chains its manifests), its link and its hash (30 k-file manifests are not all
    kept whole)."""

    chained: bool
    previous: ChainLink | None
    sha256: str

    @classmethod
    def of(cls, opened: Opened) -> _Link:
        chained = "previous" in opened.manifest.model_fields_set
        return cls(chained, opened.manifest.previous, _sha(opened))


def _sha(opened: Opened | _Link) -> str:
    return opened.sha256 if isinstance(opened, _Link) else hashlib.sha256(opened.raw).hexdigest()


def _check_chain(
    config: Config, origin: Origin, found: list[Snapshot], opened_by_id: dict[str, Opened | _Link]
) -> tuple[dict[str, object], list[str]]:
    """Walk the node's verified snapshots oldest to newest and check each `previous` link; check
    the signed head and the local chain record against the newest snapshots. Return the chain
    document and the problems (broken chain, rollback)."""
    from drkit.engines.storage import Storage

    storage = Storage(config.repository)
    removed, problems = _signed_records(config, origin, storage)
    head, findings, head_problems = rollback.newest_head(storage, _trusted(origin), config.node)
    problems += head_problems + [f"rollback: {finding['detail']}" for finding in findings]
    present = {snapshot.id: snapshot for snapshot in found}
    chain = [snapshot for snapshot in found if snapshot.id in opened_by_id]
    position = {snapshot.id: index for index, snapshot in enumerate(chain)}
    broken: list[dict[str, str | None]] = []
    explained: list[str] = []
    linked = 0

    def report_break(snapshot: Snapshot, previous_id: str | None, kind: str, detail: str) -> None:
        broken.append(
            {"snapshot": snapshot.id, "previous": previous_id, "kind": kind, "detail": detail}
        )
        problems.append(f"broken chain at snapshot {snapshot.short_id}: {detail}")

    for index, snapshot in enumerate(chain):
        opened = opened_by_id[snapshot.id]
        read = opened if isinstance(opened, _Link) else _Link.of(opened)
        if not read.chained:
            continue  # made before drkit chained its manifests
        link = read.previous
        before = chain[index - 1] if index else None
        if link is None or not link.snapshot_id:
            if before is not None:
                report_break(
                    snapshot,
                    None,
                    "unlinked",
                    f"it starts a new chain although snapshot {before.short_id} precedes it",
                )
            continue
        link_id, link_sha = link.snapshot_id, link.manifest_sha256
        if before is not None and (
            link_id == before.id or link_sha == _sha(opened_by_id[before.id])
        ):
            if link_sha != _sha(opened_by_id[before.id]):
                report_break(
                    snapshot,
                    link_id,
                    "replaced",
                    f"the manifest of snapshot {before.short_id} is not the one it linked to "
                    "(sha256 differs): replaced",
                )
            else:
                linked += 1
            continue
        if link_id in position:
            report_break(
                snapshot,
                link_id,
                "reordered",
                f"it links to snapshot {link_id[:8]}, but "
                + (f"snapshot {before.short_id} precedes it" if before else "it comes first")
                + ": re-ordered",
            )
        elif link_id in present:
            continue  # the previous snapshot is there but failed verification: reported above
        elif link_id in removed:
            explained.append(link_id)
        else:
            report_break(
                snapshot,
                link_id,
                "deleted",
                f"its previous snapshot {link_id} is missing from the repository and no "
                "signed prune record lists it: deleted or replaced",
            )

    witnesses: list[tuple[str, Mapping[str, object]]] = []
    if head is not None:
        witnesses.append(("signed chain head", head))
    local = _local_link(config)
    if local is not None:
        witnesses.append(("chain record on this machine", local))
    newest = found[-1] if found else None
    for source, witness in witnesses:
        named = str(witness.get("snapshot_id"))
        detail = None
        if named in opened_by_id:
            if _sha(opened_by_id[named]) != witness.get("manifest_sha256"):
                detail = f"the manifest of snapshot {named[:8]} differs from the {source}'s"
        elif named not in present and named not in removed:
            when = f" ({witness['time']})" if witness.get("time") else ""
            now = f"snapshot {newest.short_id} ({utc_text(newest.time)})" if newest else "none"
            detail = (
                f"the {source} names snapshot {named}{when}, which the repository no longer "
                f"has; its newest is {now}"
            )
        if detail:
            findings.append({"source": source, "snapshot": named, "detail": detail})
            problems.append(f"rollback: {detail}")
    document = {
        "ok": not broken and not findings,
        "links": linked,
        "explained_gaps": explained,
        "broken": broken,
        "head": head,
        "rollback": findings,
    }
    return document, problems
