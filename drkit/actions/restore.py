"""drkit restore and drkit check: rebuild a node from a verified snapshot, then prove it works."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from drkit import errors, timing
from drkit import model as checks
from drkit.engines import apply
from drkit.model import Check
from drkit.results import (
    CheckResult,
    ChecksResult,
    RestorePlanResult,
    RestoreResult,
)
from drkit.service import context, proof, restoring
from drkit.service.opening import Catalog, Opened, Origin

log = logging.getLogger(__name__)
_R = TypeVar("_R", bound=ChecksResult)


def _result(
    kind: type[_R], snapshot_id: str, opened: Opened, found: list[Check], **extra: Any
) -> _R:
    return kind(
        ok=checks.all_ok(found),
        snapshot_id=snapshot_id,
        node=opened.manifest.node,
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
    allow_rollback: bool = False,
    restore_databases: bool = False,
) -> RestoreResult | RestorePlanResult:
    """Restore a verified snapshot onto target; dry-run only plans; return the restore result.

    The snapshot's database dumps are loaded into the target's database server with
    restore_databases, else left under /var/lib/drkit/restored/databases with their command.

    on_step, when given, is called with a short line as each step begins (progress display).
    `latest` older than the newest signed state known is refused unless allow_rollback.
    """

    def step(text: str) -> None:
        timing.mark(text)
        if on_step:
            on_step(text)

    started = time.monotonic()
    target = target.resolve()
    restic, located = restoring.open_snapshot(
        origin, snapshot, at, step, allow_rollback=allow_rollback
    )
    chosen, opened = located.snapshot, located.opened
    if dry_run:
        planned = restoring.plan(located, target)
        plan = [step.as_dict() for step in planned.steps]
        return _result(RestorePlanResult, chosen.id, opened, planned.checks, plan=plan)
    restored = restoring.restore(
        origin,
        restic,
        located,
        target,
        force=force,
        smoke=smoke,
        step=step,
        databases="load" if restore_databases else "leave",
    )
    return _result(
        RestoreResult,
        chosen.id,
        opened,
        restored.checks,
        target=str(target),
        applied=restored.outcome.counts(),
        duration_seconds=round(time.monotonic() - started, 3),
        **restored.proved,
        **({"databases": restored.databases} if restored.databases else {}),
    )


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
        located = found_in.find_or_ask(origin.node, snapshot)
        opened, chosen = found_in.open(origin.node, located), located.snapshot
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
    server_checks, proved = proof.server_checks(origin, target, opened.manifest, smoke, timing.mark)
    return _result(
        CheckResult, chosen.id, opened, found + server_checks, target=str(target), **proved
    )
