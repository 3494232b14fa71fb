"""From a snapshot spec to an opened, trusted manifest: through the signed catalog where it
binds the snapshot, else through restic with the snapshot's listing for the screen."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from drkit import errors
from drkit.engines import freshness, manifest, screen
from drkit.engines import restic as restic_engine
from drkit.engines.records import HeadRecord
from drkit.engines.resticjson import TreeNode
from drkit.model import parse_utc
from drkit.service import context, rollback
from drkit.service.opening import Catalog, Found, Opened, Origin, open_files, read_drkit_files
from drkit.service.spec import Spec

log = logging.getLogger(__name__)


@dataclass
class Located:
    """A snapshot found and opened: its manifest's signature and signer checked; listing is
    its tree as restic lists it when no signed id binds it (to be screened), else None."""

    snapshot: restic_engine.Snapshot
    opened: Opened
    listing: list[TreeNode] | None = None
    # `latest` only: when the newest signed freshness entry of the chain head confirms it (an
    # unchanged node's backup), read with the head the rollback guard checks
    confirmed: datetime | None = None

    def screen(self) -> None:
        """Raise Refused when the listing holds what the signed manifest does not."""
        if self.listing is not None:
            refuse_if(
                screen.screen_listing(self.listing, self.opened.manifest),
                f"snapshot {self.snapshot.short_id} holds what its signed manifest does not",
            )


def refuse_if(problems: list[str], what: str) -> None:
    """Raise Refused naming the first problem (and how many more), when there are any."""
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise errors.Refused(f"{what}: {problems[0]}{more}")


def locate(
    origin: Origin,
    restic: restic_engine.Restic,
    spec: str | Spec,
    at: datetime | None,
    step: Callable[[str], None],
    *,
    allow_rollback: bool = False,
) -> Located:
    """Return the node's snapshot named by spec (or --at), opened.

    A snapshot the signed index binds is found and opened from the catalog (no restic
    process) and needs no screen: its id fixes its whole tree. Any other is resolved and
    opened by restic, with its listing for the screen. `latest` is refused (Refused) when it
    is older than the newest signed state the node published or this machine saw, unless
    allow_rollback.
    """
    spec = Spec.of(spec) if at is None else spec
    step("finding the snapshot in the signed catalog")
    with Catalog(origin, restic) as found_in:
        found = found_in.find(origin.node, spec, at)
        if found is not None and found.bound:
            step(f"reading the signed manifest of snapshot {found.snapshot.short_id}")
            located = Located(found.snapshot, found_in.open(origin.node, found))
        else:
            step("reading the signed manifest and the snapshot's listing")
            wanted: str | Spec = spec if found is None else Spec.parse(found.snapshot.id)
            when = at if found is None else None
            located = _open_with_listing(origin, restic, wanted, when)
        if isinstance(spec, Spec) and spec.latest and at is None:
            head = guard(origin, found_in, located, allow=allow_rollback)
            located.confirmed = _confirmed(head, located.snapshot.id)
    remember(origin, located)
    return located


def guard(origin: Origin, found_in: Catalog, located: Located, *, allow: bool) -> HeadRecord | None:
    """Raise Refused when the located `latest` is older than the newest signed state the
    node's chain head (its newest signed version) or this machine's record knows; return that
    head (None when its versions were not readable)."""
    head = None
    try:
        head, _, _ = rollback.newest_head(found_in.storage, found_in.trusted, origin.node)
        from_head = rollback.of_head(head)
    except (errors.StorageError, errors.AuthenticationError) as exc:
        log.warning("the chain head's versions are not readable (%s)", exc.message)
        from_head = rollback.of_index(found_in.index(origin.node), "the signed chain head")
    local = rollback.remembered(origin.state_dir, origin.repository, origin.node)
    rollback.refuse_rollback(located.snapshot.id, located.opened, [from_head, local], allow=allow)
    return head


def _confirmed(head: HeadRecord | None, snapshot_id: str) -> datetime | None:
    """Return the newest signed freshness entry of head confirming snapshot_id, if any."""
    times = [
        parse_utc(entry["time"])
        for entry in freshness.confirmations(head.get("confirmations") if head else None)
        if entry["snapshot_id"] == snapshot_id
    ]
    return max(times, default=None)


def remember(origin: Origin, located: Located) -> None:
    """Record on this machine the snapshot opened, when it is the newest seen."""
    rollback.remember(
        origin.state_dir,
        origin.repository,
        origin.node,
        located.snapshot.id,
        located.opened.raw,
    )


def open_found(found_in: Catalog, node: str, found: Found) -> Located:
    """Return a found snapshot opened (from the catalog's objects where it holds them), with
    restic's listing of its tree when no signed id binds it."""
    opened = found_in.open(node, found)
    if found.bound:
        return Located(found.snapshot, opened)
    return Located(found.snapshot, opened, found_in.ask_restic().list_tree(found.snapshot.id)[1])


def _open_with_listing(
    origin: Origin, restic: restic_engine.Restic, spec: str | Spec, at: datetime | None
) -> Located:
    """Return the snapshot opened with its listing, reading manifest and listing in parallel.

    `latest` is resolved by restic itself (host and tag filters), saving a round trip; should
    a backup land between the two reads, the manifest is read again by the listed id.
    """
    if isinstance(spec, Spec) and spec.latest and at is None:
        wanted, host = "latest", origin.node
    else:
        wanted, host = context.select_snapshot(restic, origin.node, spec, at).id, None
    with ThreadPoolExecutor(max_workers=2) as pool:
        listing = pool.submit(restic.list_tree, wanted, host)
        files = pool.submit(read_drkit_files, restic, wanted, host)
        try:
            record, nodes = listing.result()
        except errors.ResticFailed as exc:
            if host and "no snapshot" in exc.message.lower():
                raise errors.UsageError(f"node {origin.node} has no snapshot yet") from None
            raise
        found = files.result()
    listed = next((n for n in nodes if n.path == manifest.MANIFEST_PATH), None)
    if host and (listed is None or listed.size != len(found.get(manifest.MANIFEST_PATH, b""))):
        found = read_drkit_files(restic, record.id)
    chosen = restic_engine.Snapshot.from_record(record)
    return Located(chosen, open_files(origin, chosen.id, found), nodes)
