"""drkit snapshots and drkit show: what the repository holds for this node."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

from drkit.engines import manifest
from drkit.model import parse_utc, utc_text
from drkit.results import ShowResult, SnapshotEntry, SnapshotsResult
from drkit.service import context
from drkit.service.opening import Catalog, Origin, signed_confirmations


def list_snapshots(origin: Origin, all_nodes: bool = False) -> SnapshotsResult:
    """Return the node's snapshots (or every drkit snapshot), oldest first."""
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    found = restic.snapshots(host=None if all_nodes else origin.node, tags=["drkit"])
    entries = [
        SnapshotEntry(
            id=snapshot.id,
            short_id=snapshot.short_id,
            time=utc_text(snapshot.time),
            node=snapshot.hostname,
            file_count=snapshot.files,
            size=snapshot.size,
            tags=snapshot.tags,
        )
        for snapshot in found
    ]
    by_id = {entry.id: entry for entry in entries}
    for node in sorted({entry.node for entry in entries if entry.node}):
        for confirmation in signed_confirmations(origin, node):
            confirmed = by_id.get(confirmation["snapshot_id"])
            if confirmed is not None:  # a freshness entry of a snapshot still held
                entries.append(
                    confirmed.model_copy(
                        update={"time": confirmation["time"], "confirms": confirmed.id}
                    )
                )
    return SnapshotsResult(snapshots=sorted(entries, key=lambda entry: entry.time))


def show(origin: Origin, snapshot: str) -> ShowResult:
    """Return a snapshot's manifest in summary: files by category, keys, certificate expiry.

    The signature is verified; whether its signer is trusted is reported, not required.
    Password hashes of accounts are never shown.
    """
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    with Catalog(origin, restic) as found_in:
        found = found_in.find_or_ask(origin.node, snapshot)
        raw, signature, _, _ = found_in.signed(origin.node, found)
    chosen = found.snapshot
    node_manifest, signer = manifest.open_signed(raw, signature)
    now = datetime.now(UTC)
    certificates = []
    for certificate in node_manifest.certificates:
        expires = parse_utc(certificate.not_after)
        certificates.append({**certificate.model_dump(), "days_left": (expires - now).days})
    return ShowResult(
        snapshot_id=chosen.id,
        time=utc_text(chosen.time),
        node=node_manifest.node,
        profiles=node_manifest.profiles,
        signer=signer,
        trusted=signer in origin.trusted_keys,
        file_count=chosen.files,
        categories=dict(Counter(entry.category for entry in node_manifest.files)),
        files=[
            entry.model_dump(include={"path", "category", "type", "size", "mode", "user", "group"})
            for entry in node_manifest.files
        ],
        keys=[
            key.model_dump(include={"path", "category", "type", "fingerprint"})
            for key in node_manifest.keys
        ],
        host_keys=[key.model_dump() for key in node_manifest.host_keys],
        certificates=certificates,
        accounts=[account.name for account in node_manifest.accounts],
        warnings=node_manifest.warnings,
    )
