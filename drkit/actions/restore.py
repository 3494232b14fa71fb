"""drkit restore and drkit check: rebuild a node from a verified snapshot, then prove it works."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from drkit import errors, profiles, timing
from drkit import model as checks
from drkit.engines import accounts, apply, manifest, screen, staged
from drkit.engines import restic as restic_engine
from drkit.model import Check, SmokeResult
from drkit.paths import on_root
from drkit.results import (
    CheckResult,
    ChecksResult,
    RestorePlanResult,
    RestoreResult,
    SmokeProof,
)
from drkit.service import context
from drkit.service.opening import (
    Catalog,
    Opened,
    Origin,
    open_files,
    read_drkit_files,
)

log = logging.getLogger(__name__)
ACTIONS = ("add", "change", "remove", "unchanged")


def _prepare_target(target: Path) -> None:
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise errors.LocalFilesystemError(f"target {target}: {exc.strerror}") from None
    if not target.is_dir():
        raise errors.LocalFilesystemError(f"target {target} is not a directory")
    if not os.access(target, os.W_OK):
        raise errors.LocalFilesystemError(f"target {target} is not writable")


def _server_checks(
    origin: Origin, target: Path, node_manifest: dict, smoke: bool, on_step=None
) -> tuple[list[Check], dict]:
    """Return the profiles' checks of target (and with smoke, the smoke runs' checks) and the
    result fields they add: `smoke`, what each server started from target proved."""

    def step(text: str) -> None:
        timing.mark(text)
        if on_step:
            on_step(text)

    found = []
    for kind in node_manifest.get("profiles", []):
        step(f"checking the restored {kind} files")
        found += profiles.get(kind).checks(target, node_manifest)
    if not smoke:
        return found, {}
    work_dir = origin.state_dir / "smoke" / secrets.token_hex(4)
    try:
        smokes = smoke_servers(origin, target, node_manifest, work_dir, step)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    found += [check for result in smokes for check in result.checks]
    return found, {"smoke": [SmokeProof.of(result) for result in smokes]}


def smoke_servers(
    origin: Origin, root: Path, node_manifest: dict, work_dir: Path, step: Callable[[str], None]
) -> list[SmokeResult]:
    """Start each profile's real server from root on 127.0.0.1, log in and move a file;
    return what each proved. Without a smoke user nothing is tried: each is "not judged"."""
    results = []
    for kind in node_manifest.get("profiles", []):
        if not origin.smoke_user:
            reason = "no smoke_user configured: nothing logs in"
            results.append(SmokeResult.not_judged(kind, reason))
            continue
        step(f"smoke: starting {kind} from the restored files on 127.0.0.1 and logging in")
        result = profiles.get(kind).smoke(root, node_manifest, origin.smoke_user, work_dir)
        if result.judged and not result.protocols and checks.all_ok(result.checks):
            result.add(checks.failed(f"smoke: {kind}", "no login was attempted"))
        results.append(result)
    return results


_R = TypeVar("_R", bound=ChecksResult)


def _result(kind: type[_R], snapshot_id: str, opened: Opened, found: list[Check], **extra) -> _R:
    return kind(
        ok=checks.all_ok(found),
        snapshot_id=snapshot_id,
        node=opened.manifest["node"],
        signer=opened.signer,
        trust=opened.trust,
        checks=found,
        **extra,
    )


def restore(
    origin: Origin,
    *,
    snapshot: str,
    target: Path,
    at: datetime | None = None,
    dry_run: bool = False,
    force: bool = False,
    smoke: bool = False,
    on_step: Callable[[str], None] | None = None,
) -> RestoreResult | RestorePlanResult:
    """Restore a verified snapshot onto target; dry-run only plans; return the restore result.

    on_step, when given, is called with a short line as each step begins (progress display).
    """

    def step(text: str) -> None:
        timing.mark(text)
        if on_step:
            on_step(text)

    started = time.monotonic()
    step("opening the repository")
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    target = target.resolve()
    chosen, opened, listing = find_and_open(origin, restic, snapshot, at, step)
    if dry_run:
        steps = (
            apply.plan(target, opened.manifest)
            if target.is_dir()
            else [apply.Step(entry["path"], "add") for entry in opened.manifest["files"]]
        )
        found = [checks.passed("manifest signature", f"signed by {opened.signer}")]
        if target.is_dir() and apply.read_journal(target)[0] is not None:
            found.append(
                checks.warned(
                    "interrupted restore",
                    "a killed restore left a journal: the next restore rolls it back first",
                )
            )
        return _result(
            RestorePlanResult, chosen.id, opened, found, plan=[step.as_dict() for step in steps]
        )
    if listing is not None:  # reached without a signed id: its tree is screened first
        problems = screen.screen_listing(listing, opened.manifest)
        _refuse_if(problems, f"snapshot {chosen.short_id} holds what its signed manifest does not")
    if target.is_dir():
        _plan_or_refuse(target, opened.manifest, force)  # before anything is downloaded
    _prepare_target(target)
    created_dirs = _missing_ancestors(on_root(target, apply.STAGING))
    applied = False
    with apply.target_lock(target) as staging_parent:
        try:
            recovered = apply.recover(target)
            staging = staging_parent / f"{chosen.short_id}-{secrets.token_hex(4)}"
            found, steps = _stage_verify_apply(restic, chosen, opened, target, staging, force, step)
            applied = True
        finally:
            for directory in created_dirs if not applied else [staging_parent]:
                with contextlib.suppress(OSError):
                    directory.rmdir()
    if recovered:
        found.insert(0, checks.warned("interrupted restore", recovered))
    server_checks, proved = _server_checks(origin, target, opened.manifest, smoke, on_step)
    return _result(
        RestoreResult,
        chosen.id,
        opened,
        found + server_checks,
        target=str(target),
        applied={action: sum(step.action == action for step in steps) for action in ACTIONS},
        duration_seconds=round(time.monotonic() - started, 3),
        **proved,
    )


def _plan_or_refuse(target: Path, node_manifest: dict, force: bool) -> list[apply.Step]:
    """Return the plan of restoring node_manifest onto target; without force, raise Refused
    when it would change or remove a file there."""
    steps = apply.plan(target, node_manifest)
    blocking = [step for step in steps if step.action in ("change", "remove")]
    if blocking and not force:
        raise errors.Refused(
            f"target {target} is not empty: {len(blocking)} file(s) would be changed or "
            f"removed (first: {blocking[0].path}); see them with --dry-run, or pass --force "
            "to replace them"
        )
    return steps


def _stage_verify_apply(restic, chosen, opened: Opened, target: Path, staging: Path, force, step):
    """Restore into staging, verify every file, plan, and apply with a journal; return
    (checks, plan). Staging is removed on the way out, whatever happens."""
    try:
        staging.mkdir(mode=0o700)
        log.info("restoring snapshot %s into staging %s", chosen.short_id, staging)
        step(f"restoring snapshot {chosen.short_id} into staging, hashing files as they land")
        with staged.StagedVerifier(staging, opened.manifest) as verifier:
            restic.restore(chosen.id, staging, on_restored=verifier.restored)
            step("verifying the signature and every file")
            staged_manifest = on_root(staging, manifest.MANIFEST_PATH)
            if not staged_manifest.is_file() or staged_manifest.read_bytes() != opened.raw:
                raise errors.Refused(f"snapshot {chosen.short_id}: restored manifest differs")
            _refuse_if(
                screen.screen_staging(staging, opened.manifest) + verifier.problems(),
                f"snapshot {chosen.short_id} does not match its signed manifest",
            )
        found = [
            checks.passed("manifest signature", f"signed by {opened.signer} ({opened.trust})"),
            checks.passed(
                "files verified", f"{len(opened.manifest['files'])} match sha256, mode, owner"
            ),
        ]
        steps = _plan_or_refuse(target, opened.manifest, force)
        step(f"applying {sum(s.action != 'unchanged' for s in steps)} change(s) to {target}")
        applier = apply.Applier.journaled(target, staging, chosen.id)
        entries = {entry["path"]: entry for entry in opened.manifest["files"]}
        applier.apply([step for step in steps if step.action != "unchanged"], entries)
        created_users = accounts.missing(target, opened.manifest["accounts"])
        try:
            merged = accounts.merge_accounts(target, opened.manifest["accounts"])
            for host_path, text in merged.items():
                shadow = host_path.name == "shadow"
                applier.write_text(host_path, text, 0o640 if shadow else 0o644)
            homes = accounts.missing_homes(target, opened.manifest["accounts"], set(entries))
            for home, uid, gid in homes:
                applier.make_dir(on_root(target, home), accounts.HOME_MODE, uid, gid)
            _keep_snapshot_files(applier, staging, target)
            applier.commit()
        except OSError as exc:
            applier.rollback()
            apply._raise_filesystem(exc, "finishing the restore")
        except BaseException:
            applier.rollback()
            raise
    except OSError as exc:
        apply._raise_filesystem(exc, f"restoring into {target}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = {
        action: sum(step.action == action for step in steps)
        for action in ("add", "change", "remove", "unchanged")
    }
    found.append(
        checks.passed(
            "apply",
            ", ".join(f"{n} {action}" for action, n in counts.items())
            + (f"; accounts created: {', '.join(created_users)}" if created_users else "")
            + (f"; homes created: {', '.join(h for h, _, _ in homes)}" if homes else ""),
        )
    )
    return found, steps


def _missing_ancestors(directory: Path) -> list[Path]:
    """Return directory and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    return missing


def find_and_open(
    origin: Origin, restic, spec: str, at: datetime | None, step: Callable[[str], None]
) -> tuple[restic_engine.Snapshot, Opened, list[dict] | None]:
    """Return (snapshot, opened manifest, listing to screen or None) for a restore.

    A snapshot the signed index binds is found and opened from the catalog (no restic
    process) and needs no screen: its id fixes its whole tree. Any other is resolved and
    opened by restic, with its listing for the screen.
    """
    step("finding the snapshot in the signed catalog")
    with Catalog(origin, restic) as found_in:
        found = found_in.find(origin.node, spec, at)
        if found is not None and found.bound:
            step(f"reading the signed manifest of snapshot {found.snapshot.short_id}")
            return found.snapshot, found_in.open(origin.node, found), None
    step("reading the signed manifest and the snapshot's listing")
    wanted = found.snapshot.id if found is not None else spec
    return _open_with_listing(origin, restic, wanted, None if found else at)


def _open_with_listing(origin: Origin, restic, spec: str, at: datetime | None):
    """Return (snapshot, opened manifest, listing), reading manifest and listing in parallel.

    `latest` is resolved by restic itself (host and tag filters), saving a round trip; should
    a backup land between the two reads, the manifest is read again by the listed id.
    """
    from concurrent.futures import ThreadPoolExecutor

    if spec == "latest" and at is None:
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
    listed = next((n for n in nodes if n.get("path") == manifest.MANIFEST_PATH), None)
    if host and (
        listed is None or listed.get("size") != len(found.get(manifest.MANIFEST_PATH, b""))
    ):
        found = read_drkit_files(restic, record["id"])
    chosen = restic_engine.Snapshot.from_json(record)
    return chosen, open_files(origin, chosen.id, found), nodes


def _refuse_if(problems: list[str], what: str) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise errors.Refused(f"{what}: {problems[0]}{more}")


def _keep_snapshot_files(applier: apply.Applier, staging: Path, target: Path) -> None:
    """Leave the restored manifest, signature and config in the target's drkit directory
    (journalled with the rest of the apply, so a rollback takes them away too)."""
    source = on_root(staging, manifest.SNAPSHOT_DIR)
    destination = on_root(target, "/var/lib/drkit/restored")
    for item in sorted(source.iterdir()):
        applier.write_text(destination / item.name, item.read_bytes(), 0o600)
    destination.chmod(0o700)


def check(
    origin: Origin, *, target: Path, snapshot: str = "latest", smoke: bool = False
) -> CheckResult:
    """Check a node in place against its snapshot's manifest; restore nothing."""
    target = Path(target).resolve()  # a relative --target: the smoke's paths must be absolute
    if not target.is_dir():
        raise errors.UsageError(f"--target {target}: not a directory")
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    with Catalog(origin, restic) as found_in:
        found = found_in.find_or_ask(origin.node, snapshot)
        opened, chosen = found_in.open(origin.node, found), found.snapshot
    steps = apply.plan(target, opened.manifest)
    drifted = [step for step in steps if step.action != "unchanged"]
    found = [checks.passed("manifest signature", f"signed by {opened.signer}")]
    if drifted:
        found.append(
            checks.warned(
                "matches snapshot",
                f"{len(drifted)} path(s) differ from snapshot {chosen.short_id}, first: "
                f"{drifted[0].path} ({drifted[0].action} {drifted[0].reason})".strip(),
            )
        )
    else:
        found.append(checks.passed("matches snapshot", f"every file as in {chosen.short_id}"))
    server_checks, proved = _server_checks(origin, target, opened.manifest, smoke)
    return _result(
        CheckResult, chosen.id, opened, found + server_checks, target=str(target), **proved
    )
