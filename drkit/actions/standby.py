"""drkit standby sync|status|promote: a passive node follows its active node's snapshots.

A sync restores the source node's newest snapshot with the foundation's steps (verified
signature and files, plan, atomic apply) while keeping this node's `standby.local` paths and
settings, runs the profiles' checks on the result, and rolls everything back when a check
fails: the passive node keeps serving its last good copy. It runs `standby.reload` only when
something changed, and records what it applied in <state_dir>/standby/<node>.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import shlex
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ConfigDict, TypeAdapter, with_config
from typing_extensions import TypedDict

from drkit import errors, runner
from drkit.config import Config, Standby, dump_config
from drkit.engines import apply, localsettings, manifest
from drkit.engines.restic import Restic
from drkit.model import Check, FileRecord, Manifest, failed, parse_utc, passed, utc_text
from drkit.paths import on_root
from drkit.results import PromoteResult, StandbyStatusResult, StandbySyncResult
from drkit.service import context, proof, rebuild
from drkit.service.locate import Located, guard, open_found, remember
from drkit.service.opening import Catalog, Origin

log = logging.getLogger(__name__)
STAGING = "/var/lib/drkit/staging"


def state_path(config: Config) -> Path:
    return config.state_dir / "standby" / f"{config.node}.json"


@with_config(ConfigDict(extra="allow"))
class StandbyState(TypedDict, total=False):
    """What this node last applied from its source (<state_dir>/standby/<node>.json)."""

    source: str
    snapshot_id: str
    snapshot_time: str
    applied_at: str
    ok: bool
    changed: bool
    rejected: str | None
    rejected_at: str
    last_error: str | None
    manifest_sha256: str
    promoted_at: str
    promoted_from: str


_STATE = TypeAdapter(StandbyState)


def read_state(config: Config) -> StandbyState:
    """Return the node's standby state, {} when there is none or it is unreadable."""
    try:
        return _STATE.validate_json(state_path(config).read_bytes())
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        return {}


def _write_state(config: Config, state: StandbyState) -> None:
    manifest.write_private(state_path(config), json.dumps(state, indent=1).encode() + b"\n")


def _now() -> datetime:
    return datetime.now(UTC)


def _lag(snapshot_time: str | None, now: datetime) -> int | None:
    if not snapshot_time:
        return None
    moment = parse_utc(snapshot_time)
    return max(0, int((now - moment).total_seconds()))


def _following(config: Config) -> Standby:
    if config.standby is None:
        raise errors.UsageError(
            f"node {config.node} has no standby section: it follows no node (drkit.yaml "
            "standby.source)"
        )
    return config.standby


def sync(
    config: Config,
    *,
    trust_keys: list[str] | None = None,
    dry_run: bool = False,
    lock_wait: float | None = None,
    allow_rollback: bool = False,
) -> StandbySyncResult:
    """Apply the source node's newest snapshot to this node; return the sync document. A
    newest snapshot older than the newest signed state known (the source's chain head, this
    machine's record) is refused unless allow_rollback."""
    standby = _following(config)
    restic = context.restic_for(config.repository, config.restic)
    context.probe_storage(config.repository)
    with contextlib.ExitStack() as stack:
        stack.enter_context(context.node_lock(config, lock_wait))
        origin = Origin(
            node=standby.source,
            repository=config.repository,
            restic=config.restic,
            trusted_keys=list(config.trusted_keys),
            trust_keys=list(trust_keys or []),
            state_dir=config.state_dir,
        )
        found_in = stack.enter_context(Catalog(origin, restic))
        found = found_in.find_or_ask(standby.source, "latest")
        chosen = found.snapshot
        snapshot_time = utc_text(chosen.time)
        state = read_state(config)
        base = {
            "node": config.node,
            "source": standby.source,
            "snapshot_id": chosen.id,
            "snapshot_time": snapshot_time,
            "dry_run": dry_run,
        }
        if not dry_run and state.get("snapshot_id") == chosen.id and state.get("ok"):
            now = _now()
            return StandbySyncResult(
                **base,
                changed=False,
                up_to_date=True,
                applied_at=state.get("applied_at"),
                lag_seconds=_lag(snapshot_time, now),
                plan=[],
                checks=[],
            )
        if not dry_run and state.get("rejected") == chosen.id:
            return StandbySyncResult(
                ok=False,
                **base,
                changed=False,
                applied_at=state.get("applied_at"),
                lag_seconds=_lag(state.get("snapshot_time"), _now()),
                plan=[],
                checks=[
                    failed(
                        "standby: source snapshot",
                        f"{chosen.short_id} was rejected at {state.get('rejected_at')}: "
                        f"{state.get('last_error')}; still serving "
                        f"{(state.get('snapshot_id') or 'nothing')[:8]}",
                    )
                ],
            )
        located = open_found(found_in, standby.source, found)
        guard(origin, found_in, located, allow=allow_rollback)
        remember(origin, located)
        located.screen()  # reached without a signed id: its tree is screened first
        local = localsettings.parse(standby.local)
        applied = _apply(config, restic, located, local, dry_run, state)
        return StandbySyncResult(**{**applied, **base})


def _apply(
    config: Config,
    restic: Restic,
    located: Located,
    local: localsettings.Local,
    dry_run: bool,
    state: StandbyState,
) -> dict[str, object]:
    root = Path(config.root).resolve()
    if dry_run:
        return _apply_locked(config, restic, located, local, dry_run, state, None)
    # the apply journal (drkit.engines.apply) lets the next sync roll back a killed one
    with apply.target_lock(root):
        recovered = apply.recover(root)
        return _apply_locked(config, restic, located, local, dry_run, state, recovered)


def _apply_locked(
    config: Config,
    restic: Restic,
    located: Located,
    local: localsettings.Local,
    dry_run: bool,
    state: StandbyState,
    recovered: str | None,
) -> dict[str, object]:
    root = Path(config.root).resolve()
    chosen, opened = located.snapshot, located.opened
    node_manifest = opened.manifest
    staging = on_root(root, STAGING) / f"standby-{chosen.short_id}-{secrets.token_hex(4)}"
    staging.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    found: list[Check] = [passed("manifest signature", f"signed by {opened.signer}")]
    if recovered:
        found.append(Check("interrupted sync", "warn", recovered))
    kept: list[str] = []

    def plan(staged: Path, entries: dict[str, FileRecord]) -> list[apply.Step]:
        steps, local_paths = _plan(root, staged, node_manifest, entries, local)
        kept.extend(local_paths)
        return steps

    try:
        outcome = rebuild.apply_snapshot(
            restic,
            located,
            root,
            staging,
            plan=plan,
            step=lambda text: None,
            dry_run=dry_run,
            judge=lambda: proof.profile_checks(root, node_manifest),
        )
    finally:
        with contextlib.suppress(OSError):
            staging.parent.rmdir()
    found += outcome.judged
    plan_document = [step.as_dict() for step in outcome.changes]
    if dry_run:
        return {"ok": True, "changed": bool(outcome.changes), "plan": plan_document,
                "kept_local": kept, "checks": found}  # fmt: skip
    now = _now()
    if not outcome.committed:
        bad = next(check for check in found if check.status == "fail")
        error = f"{bad.name}: {bad.detail}"
        log.error("standby sync of %s rolled back: %s", chosen.short_id, error)
        state.update({"rejected": chosen.id, "rejected_at": utc_text(now), "last_error": error})
        _write_state(config, state)
        found.append(
            failed("standby: rolled back", f"kept {len(outcome.changes)} path(s) as they were")
        )
        return {
            "ok": False,
            "changed": False,
            "rolled_back": True,
            "applied_at": state.get("applied_at"),
            "lag_seconds": _lag(state.get("snapshot_time"), now),
            "plan": plan_document,
            "kept_local": kept,
            "checks": found,
        }
    reload = _reload(config) if outcome.changed else None
    if reload is not None:
        found.append(reload)
    state.update(
        {
            "source": _following(config).source,
            "snapshot_id": chosen.id,
            "snapshot_time": utc_text(chosen.time),
            "applied_at": utc_text(now),
            "ok": True,
            "changed": outcome.changed,
            "rejected": None,
            "last_error": None,
            "manifest_sha256": hashlib.sha256(opened.raw).hexdigest(),
        }
    )
    _write_state(config, state)
    return {
        "ok": True,
        "changed": outcome.changed,
        "rolled_back": False,
        "applied_at": state["applied_at"],
        "lag_seconds": _lag(state["snapshot_time"], now),
        "plan": plan_document,
        "kept_local": kept,
        "checks": found,
    }


def _plan(
    root: Path,
    staging: Path,
    node_manifest: Manifest,
    entries: dict[str, FileRecord],
    local: localsettings.Local,
) -> tuple[list[apply.Step], list[str]]:
    """Return the plan without this node's local paths, with local settings merged in.

    A file with local settings is rewritten in staging: the source's content with this
    node's values of those settings. It is unchanged when that equals the live file.
    """
    kept: list[str] = []
    steps = []
    for step in apply.plan(root, node_manifest):
        if local.path_is_local(step.path):
            kept.append(step.path)
            continue
        entry = entries.get(step.path)
        settings = local.settings_of(step.path) if entry and entry.type == "file" else []
        if entry is None or not settings or step.action == "remove":
            steps.append(step)
            continue
        staged, live = on_root(staging, step.path), on_root(root, step.path)
        live_text = live.read_text(errors="replace") if live.is_file() else None
        text = localsettings.merge(staged.read_text(errors="replace"), live_text, settings)
        data = text.encode()
        staged.write_bytes(data)
        entry = entries[step.path] = entry.model_copy()  # the signed manifest's stays as signed
        entry.size, entry.sha256 = len(data), hashlib.sha256(data).hexdigest()
        kept.append(
            f"{step.path}:"
            + ",".join(s.key if not s.section else f"[{s.section}]/{s.key}" for s in settings)
        )
        if live_text is not None and live.read_bytes() == data and not _meta_differs(live, entry):
            steps.append(apply.Step(step.path, "unchanged"))
        else:
            steps.append(apply.Step(step.path, "change" if live.exists() else "add"))
    return steps, kept


def _meta_differs(host: Path, entry: FileRecord) -> bool:
    info = host.lstat()
    mode = f"{info.st_mode & 0o7777:04o}"
    return mode != entry.mode or (info.st_uid, info.st_gid) != (entry.uid, entry.gid)


def _reload(config: Config) -> Check | None:
    command = config.standby.reload if config.standby else None
    if not command:
        return None
    argv = shlex.split(command)
    try:
        done = runner.run(argv, timeout=120)
    except errors.DrkitError as exc:
        return failed("standby: reload", exc.message)
    if done.returncode != 0:
        return failed("standby: reload", f"{argv[0]} exit {done.returncode}: {done.stderr_tail}")
    return passed("standby: reload", f"{argv[0]} exit 0")


def status(config: Config) -> StandbyStatusResult:
    """Return the standby status document: source, snapshot applied, when, lag."""
    state = read_state(config)
    following = config.standby is not None
    now = _now()
    lag = _lag(state.get("snapshot_time"), now) if state.get("snapshot_id") else None
    rpo = config.objectives.rpo_seconds
    ok = following and lag is not None and lag <= rpo and not state.get("rejected")
    return StandbyStatusResult(
        ok=bool(ok) if following else True,
        node=config.node,
        following=following,
        source=config.standby.source if config.standby else state.get("source"),
        snapshot_id=state.get("snapshot_id"),
        snapshot_time=state.get("snapshot_time"),
        applied_at=state.get("applied_at"),
        lag_seconds=lag,
        rpo_seconds=rpo,
        rejected=state.get("rejected"),
        last_error=state.get("last_error"),
        promoted_at=state.get("promoted_at"),
    )


def promote(config: Config, config_path: Path) -> PromoteResult:
    """Stop following: drop the standby section from drkit.yaml; this node backs itself up."""
    standby = _following(config)
    state = read_state(config)
    promoted = config.model_copy(update={"standby": None})
    text = dump_config(promoted)
    manifest.write_private(config_path, text.encode())
    now = utc_text(_now())
    state.update({"promoted_at": now, "promoted_from": standby.source})
    _write_state(config, state)
    return PromoteResult(
        node=config.node,
        promoted_from=standby.source,
        last_applied_snapshot=state.get("snapshot_id"),
        promoted_at=now,
        config=str(config_path),
        next="this node now backs itself up: run `drkit backup` (the daemon's backup job runs)",
    )
