"""Restoring a snapshot onto a target: the one path restore and drill take, from a spec to an
applied and checked tree."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from drkit import errors
from drkit import model as checks
from drkit.engines import apply
from drkit.engines import restic as restic_engine
from drkit.model import Check
from drkit.paths import on_root
from drkit.results.restore import DatabaseRestore, SmokeProof
from drkit.service import context, proof, rebuild
from drkit.service import databases as database_service
from drkit.service.locate import Located, locate
from drkit.service.opening import Origin
from drkit.service.spec import Spec


@dataclass
class Restored:
    """A snapshot restored onto target: the checks (signature, files, apply, the profiles'
    and the smoke's), the apply's outcome and the fields the smoke adds to the result."""

    located: Located
    target: Path
    checks: list[Check]
    outcome: rebuild.Outcome
    proved: dict[str, list[SmokeProof]] = field(default_factory=dict)
    databases: list[DatabaseRestore] = field(default_factory=list)


@dataclass
class Planned:
    """A dry run: the snapshot opened and the plan of restoring it onto target."""

    located: Located
    steps: list[apply.Step]
    checks: list[Check]


def prepare_target(target: Path) -> None:
    """Create target when missing (0755, whatever the umask); raise LocalFilesystemError when
    it cannot be written."""
    try:
        apply.prepare_target(target)
    except OSError as exc:
        raise errors.LocalFilesystemError(f"target {target}: {exc.strerror}") from None
    if not target.is_dir():
        raise errors.LocalFilesystemError(f"target {target} is not a directory")
    if not os.access(target, os.W_OK):
        raise errors.LocalFilesystemError(f"target {target} is not writable")


def open_snapshot(
    origin: Origin,
    spec: str | Spec,
    at: datetime | None,
    step: Callable[[str], None],
    *,
    allow_rollback: bool = False,
) -> tuple[restic_engine.Restic, Located]:
    """Open the repository and return (restic, the snapshot spec names, opened); `latest`
    older than the newest signed state known is refused unless allow_rollback."""
    step("opening the repository")
    restic = context.restic_for(origin.repository, origin.restic)
    context.probe_storage(origin.repository)
    return restic, locate(origin, restic, spec, at, step, allow_rollback=allow_rollback)


def plan(located: Located, target: Path) -> Planned:
    """Return the plan of restoring an opened snapshot onto target (nothing is changed)."""
    opened = located.opened
    steps = (
        apply.plan(target, opened.manifest)
        if target.is_dir()
        else [apply.Step(entry.path, "add") for entry in opened.manifest.files]
    )
    found = [checks.passed("manifest signature", f"signed by {opened.signer}")]
    if target.is_dir() and apply.read_journal(target)[0] is not None:
        found.append(
            checks.warned(
                "interrupted restore",
                "a killed restore left a journal: the next restore rolls it back first",
            )
        )
    return Planned(located, steps, found)


def restore(
    origin: Origin,
    restic: restic_engine.Restic,
    located: Located,
    target: Path,
    *,
    force: bool = False,
    smoke: bool = False,
    step: Callable[[str], None],
    databases: Literal["leave", "load", "skip"] = "leave",
    throwaway: bool = False,
) -> Restored:
    """Restore an opened snapshot onto target: screen, stage, verify, apply, accounts, homes,
    the database dumps (left with their command, loaded into the target's database server,
    or skipped for a caller that serves them itself), then the profiles' checks (and with
    smoke, the real servers); return what was done. throwaway: target is removed after (a
    drill's sandbox): nothing is synced to disk, so a drill never flushes the filesystem of
    the node it runs on."""
    chosen, opened = located.snapshot, located.opened
    located.screen()  # reached without a signed id: its tree is screened first
    if target.is_dir():
        rebuild.plan_or_refuse(target, opened.manifest, force)  # before anything is downloaded
    made_target = rebuild.missing_ancestors(target)  # a refused restore leaves none of them
    prepare_target(target)
    created_dirs = rebuild.missing_ancestors(on_root(target, apply.STAGING)) + made_target
    applied = False
    staging_parent = on_root(target, apply.STAGING)
    try:
        with apply.target_lock(target) as staging_parent:
            recovered = apply.recover(target)
            staging = staging_parent / f"{chosen.short_id}-{secrets.token_hex(4)}"
            outcome = rebuild.apply_snapshot(
                restic,
                located,
                target,
                staging,
                plan=lambda staged, entries: rebuild.plan_or_refuse(target, opened.manifest, force),
                step=step,
                keep_files=True,
                flush=not throwaway,
            )
            applied = True
    finally:  # once the lock is gone: what this restore made, deepest first, when empty
        for directory in created_dirs if not applied else [staging_parent]:
            with contextlib.suppress(OSError):
                directory.rmdir()
    found = [
        checks.passed("manifest signature", f"signed by {opened.signer} ({opened.trust})"),
        checks.passed("files verified", f"{len(opened.manifest.files)} match sha256, mode, owner"),
        checks.passed("apply", outcome.summary()),
    ]
    if recovered:
        found.insert(0, checks.warned("interrupted restore", recovered))
    loaded: list[DatabaseRestore] = []
    if databases != "skip":
        if opened.manifest.databases:
            step("loading the database dumps" if databases == "load" else "leaving the dumps")
        database_checks, loaded = database_service.finish_restore(
            target, opened.manifest, databases == "load"
        )
        found += database_checks
    server_checks, proved = proof.server_checks(origin, target, opened.manifest, smoke, step)
    return Restored(located, target, found + server_checks, outcome, proved, loaded)
