"""From an opened snapshot to an applied tree: stage, verify, screen, plan, apply with a
journal, accounts and homes; restore and standby sync share it."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drkit import errors
from drkit.engines import accounts, apply, beneath, manifest, screen, sqlite_copies, staged
from drkit.engines import restic as restic_engine
from drkit.engines.targetlock import raise_filesystem
from drkit.model import AccountRecord, Check, FileRecord, Manifest
from drkit.paths import on_root
from drkit.service import homes as homes_service
from drkit.service.locate import Located, refuse_if

log = logging.getLogger(__name__)

ACTIONS = ("add", "change", "remove", "unchanged")
RESTORED = "/var/lib/drkit/restored"  # where a restore leaves the snapshot's drkit files
Planner = Callable[[Path, dict[str, FileRecord]], list[apply.Step]]


@dataclass
class Outcome:
    """What applying a snapshot did: the plan, the accounts and homes it created, the checks
    the judge ran, and whether the change was committed (False: rolled back or a dry run)."""

    steps: list[apply.Step]
    created_users: list[str] = field(default_factory=list)
    homes: list[str] = field(default_factory=list)
    judged: list[Check] = field(default_factory=list)
    committed: bool = False
    changed: bool = False

    @property
    def changes(self) -> list[apply.Step]:
        return [step for step in self.steps if step.action != "unchanged"]

    def counts(self) -> dict[str, int]:
        return {action: sum(step.action == action for step in self.steps) for action in ACTIONS}

    def summary(self) -> str:
        """Return the apply line: counts per action, accounts and homes created."""
        return (
            ", ".join(f"{n} {action}" for action, n in self.counts().items())
            + (f"; accounts created: {', '.join(self.created_users)}" if self.created_users else "")
            + (f"; homes created: {', '.join(self.homes)}" if self.homes else "")
        )


def plan_or_refuse(target: Path, node_manifest: Manifest, force: bool) -> list[apply.Step]:
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


def stage(
    restic: restic_engine.Restic,
    located: Located,
    staging: Path,
    step: Callable[[str], None],
    *,
    flush: bool = True,
) -> None:
    """Restore the snapshot into staging, hashing files as they land; raise Refused unless
    every file matches the signed manifest and the tree holds nothing it does not list."""
    chosen, opened = located.snapshot, located.opened
    log.info("restoring snapshot %s into staging %s", chosen.short_id, staging)
    step(f"restoring snapshot {chosen.short_id} into staging, hashing files as they land")
    with staged.StagedVerifier(staging, opened.manifest, flush=flush) as verifier:
        restic.restore(chosen.id, staging, on_restored=verifier.restored)
        sqlite_copies.place(staging, opened.manifest.files)
        step("verifying the signature and every file")
        staged_manifest = apply.target_path(staging, manifest.MANIFEST_PATH)
        if beneath.read_bytes(staging, staged_manifest) != opened.raw:
            raise errors.Refused(f"snapshot {chosen.short_id}: restored manifest differs")
        refuse_if(
            screen.screen_staging(staging, opened.manifest) + verifier.problems(),
            f"snapshot {chosen.short_id} does not match its signed manifest",
        )


def apply_snapshot(
    restic: restic_engine.Restic,
    located: Located,
    root: Path,
    staging: Path,
    *,
    plan: Planner,
    step: Callable[[str], None],
    keep_files: bool = False,
    dry_run: bool = False,
    judge: Callable[[], list[Check]] | None = None,
    flush: bool = True,
) -> Outcome:
    """Stage and verify the snapshot, plan it onto root (plan(staging, entries) returns the
    steps and may rewrite staged files, replacing their entries with changed copies), apply
    the plan, the accounts and the homes with a journal, and commit; return what was done.
    With dry_run, stop after the plan. A judge's failed check rolls everything back
    (committed False). Staging is removed on the way out, whatever happens. flush=False:
    root is thrown away after (a drill's sandbox), so nothing is synced to disk."""
    opened = located.opened
    try:
        staging.mkdir(mode=0o700)
        stage(restic, located, staging, step, flush=flush)
        entries = {entry.path: entry for entry in opened.manifest.files}  # a planner copies one
        # before it rewrites it (standby sync's local settings)
        outcome = Outcome(plan(staging, entries))
        if dry_run:
            return outcome
        step(f"applying {len(outcome.changes)} change(s) to {root}")
        applier = apply.Applier.journaled(root, staging, located.snapshot.id, flush=flush)
        applier.apply(outcome.changes, entries)
        try:
            outcome.created_users = accounts.missing(root, opened.manifest.accounts)
            _write_accounts(applier, root, opened.manifest.accounts)
            for home, uid, gid in homes_service.missing(root, opened.manifest, set(entries)):
                applier.make_dir(on_root(root, home), accounts.HOME_MODE, uid, gid)
                outcome.homes.append(home)
            if keep_files:
                keep_snapshot_files(applier, staging, root)
            outcome.judged = judge() if judge else []
            if any(check.status == "fail" for check in outcome.judged):
                applier.rollback()
                return outcome
            outcome.changed = bool(outcome.changes) or bool(applier.undo)
            applier.commit()
            outcome.committed = True
        except OSError as exc:
            applier.rollback()
            raise_filesystem(exc, "finishing the restore")
        except BaseException:
            applier.rollback()
            raise
    except OSError as exc:
        raise_filesystem(exc, f"restoring into {root}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return outcome


def _write_accounts(applier: apply.Applier, root: Path, recorded: list[AccountRecord]) -> None:
    """Write passwd, group and shadow with the recorded accounts merged in, where they change."""
    for host_path, text in accounts.merge_accounts(root, recorded).items():
        if apply.read_text(root, host_path) != text:
            applier.write_text(host_path, text, 0o640 if host_path.name == "shadow" else 0o644)


def keep_snapshot_files(applier: apply.Applier, staging: Path, target: Path) -> None:
    """Leave the restored manifest, signature and config in the target's drkit directory
    (journalled with the rest of the apply, so a rollback takes them away too)."""
    destination = apply.target_path(target, RESTORED)
    applier.private_directory(destination)
    for name, data in apply.staged_files(staging, manifest.SNAPSHOT_DIR):
        applier.write_text(destination / name, data, 0o600)


def missing_ancestors(directory: Path) -> list[Path]:
    """Return directory and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    return missing
