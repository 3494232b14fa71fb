"""drkit drill: rebuild the node from a snapshot in a throw-away sandbox and prove it, timed.

A drill restores the chosen snapshot with the same code as `drkit restore` (signature, trust,
every file verified) into a fresh root-owned 0755 sandbox under the state directory, runs every
restore check, starts the real server from the restored files on a free 127.0.0.1 port, logs in
over SFTP pinned to the backed-up host keys and moves a file. It never touches the live node,
its files or its ports.

RTO is measured from the drill's start to the moment the first login and file round trip
succeeded; RPO is the snapshot's age at the drill's start. RPO is judged against the objective
only for `latest` (an older or random snapshot is old on purpose). The sandbox, the server and
anything the smoke run created are removed whatever happens: a failed check, an error, SIGINT
or SIGTERM (turned into an interruption so that every `finally` runs; exit 130).

The drill takes no node lock: it only reads the repository, and a long drill must not hold
back the backups that the RPO depends on. `prove` is the same rebuild for the daemon's
schedule.prove, without reports and without judging the objectives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NamedTuple

from drkit import errors, timing, units
from drkit import model as checks
from drkit.config import Config
from drkit.engines import durable, reports
from drkit.engines import status as status_engine
from drkit.engines.restic import Restic, Snapshot
from drkit.model import Check, Manifest, SmokeResult, parse_utc, utc_text
from drkit.results import DrillResult, ProofResult
from drkit.service import context, proof, restoring
from drkit.service import databases as database_service
from drkit.service.opening import Origin
from drkit.service.reporting import report_directory
from drkit.service.spec import Spec

if TYPE_CHECKING:
    from drkit.engines.storage import Storage  # imported where used: boto3 loads slowly

log = logging.getLogger(__name__)

SANDBOXES = "drills"


# -- interruption ----------------------------------------------------------------------------


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM interrupts like Ctrl-C, once: the first one raises
    KeyboardInterrupt (the runner then stops its child and every `finally` cleans up); later
    ones are ignored so that cleanup is not cut short. Only the main thread can take signals;
    elsewhere (the daemon's workers) the block is a no-op and the daemon interrupts children."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        if not raised.is_set():
            raised.set()
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous_term = signal.signal(signal.SIGTERM, handler)
    previous_int = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)
    if raised.is_set():
        # The signal came where Python could only print the KeyboardInterrupt (a finalizer,
        # a callback): the block ran on, but the run is still an interrupted one.
        raise KeyboardInterrupt("SIGTERM")


# -- the sandbox -----------------------------------------------------------------------------


def sandbox_parent(config: Config) -> Path:
    """Return the directory holding drill sandboxes: <state_dir>/drills."""
    return Path(config.state_dir).resolve() / SANDBOXES


def unsafe_component(path: Path) -> str | None:
    """Return why sshd would refuse a chroot under path (a component not root-owned or
    group/world-writable, as under /tmp), or None when every component is safe."""
    current = Path("/")
    for part in (Path("/"), *path.parents[::-1][1:], path):
        current = part
        try:
            info = current.stat()
        except FileNotFoundError:
            break
        if info.st_uid != 0:
            return f"{current} is not owned by root"
        if stat.S_IMODE(info.st_mode) & 0o022:
            return f"{current} is group/world-writable ({stat.S_IMODE(info.st_mode):04o})"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_sandboxes(parent: Path) -> list[str]:
    """Remove sandboxes left by drills that were killed outright (SIGKILL, power loss): those
    whose owner pid is gone. Return their paths."""
    removed: list[str] = []
    if not parent.is_dir():
        return removed
    for sandbox in sorted(parent.iterdir()):
        marker = sandbox / "drill.pid"
        try:
            pid = int(marker.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        if pid and _pid_alive(pid):
            continue
        log.warning("removing a sandbox left by an interrupted drill: %s", sandbox)
        shutil.rmtree(sandbox, ignore_errors=True)
        removed.append(str(sandbox))
    return removed


def make_sandbox(config: Config, label: str) -> Path:
    """Create a fresh root-owned 0755 sandbox for one drill; raise when its path is unusable."""
    parent = sandbox_parent(config)
    problem = unsafe_component(parent)
    if problem:
        raise errors.LocalFilesystemError(
            f"drill sandboxes go under {parent}, but {problem}: sshd refuses chroot paths like "
            "that; set state_dir to a root-owned 0755 directory (e.g. /var/lib/drkit)"
        )
    try:
        durable.make_dirs(parent, 0o755)
        parent.chmod(0o755)
        remove_stale_sandboxes(parent)
        sandbox = parent / f"{label}-{secrets.token_hex(3)}"
        sandbox.mkdir(mode=0o755)
        sandbox.chmod(0o755)
        (sandbox / "drill.pid").write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise errors.LocalFilesystemError(f"cannot create a sandbox in {parent}: {exc}") from None
    problem = unsafe_component(sandbox)
    if problem:
        shutil.rmtree(sandbox, ignore_errors=True)
        raise errors.LocalFilesystemError(f"drill sandbox unusable: {problem}")
    return sandbox


# -- choosing the snapshot -------------------------------------------------------------------


def choose_snapshot(config: Config, restic: Restic, spec: str | Spec) -> Snapshot:
    """Return the snapshot a drill uses: 'latest', 'latest~N', an id, or 'random' (one of the
    snapshots the retention rules keep, so old snapshots are proven restorable too)."""
    chosen = spec if isinstance(spec, Spec) else Spec.parse(spec, allow_random=True)
    if not chosen.random:
        return context.select_snapshot(restic, config.node, chosen)
    mine = [
        snapshot
        for snapshot in restic.snapshots(host=config.node, tags=["drkit"])
        if snapshot.hostname == config.node
    ]
    if not mine:
        raise errors.UsageError(f"node {config.node} has no snapshot to drill")
    groups = restic.forget(
        host=config.node, tags=["drkit"], keep=config.retention.model_dump(), dry_run=True
    )
    kept = {snapshot.id for group in groups for snapshot in group.keep}
    window = [snapshot for snapshot in mine if snapshot.id in kept] or mine
    return secrets.choice(window)


# -- evidence from the checks ----------------------------------------------------------------


class _Brief(NamedTuple):
    """The snapshot a drill restored: its id, when its files were read, and when a signed
    freshness entry last confirmed them (latest only)."""

    id: str
    time: datetime
    confirmed: datetime | None = None


def _served_keys(
    node_manifest: Manifest | None, smokes: list[SmokeResult]
) -> list[dict[str, object]]:
    """Return each backed-up host key with the fingerprint the restored server served."""
    served = {key.type: key.fingerprint for result in smokes for key in result.host_keys}
    return [
        {
            "path": entry.path,
            "type": entry.type,
            "fingerprint": entry.fingerprint,
            "served": served.get(entry.type),
            "ok": served.get(entry.type) == entry.fingerprint,
        }
        for entry in (node_manifest.host_keys if node_manifest else [])
    ]


def _certificates(node_manifest: Manifest | None, now: datetime) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    for certificate in node_manifest.certificates if node_manifest else []:
        expiry = parse_utc(certificate.not_after)
        found.append(
            {
                "path": certificate.path,
                "subject": certificate.subject,
                "issuer": certificate.issuer,
                "not_after": certificate.not_after,
                "days_left": (expiry - now).days,
            }
        )
    return found


def _rto(smokes: list[SmokeResult], started: float) -> float | None:
    """Return seconds from the drill's start until every server that could be tried had a
    working login and file round trip; None when none could, or one did not."""
    judged = [result for result in smokes if result.judged]
    proven = [result.proven_at for result in judged if result.proven_at is not None]
    if not judged or len(proven) < len(judged):
        return None
    return round(max(proven) - started, 3)


# -- the drill -------------------------------------------------------------------------------


@dataclass
class _Rebuilt:
    """What one sandboxed rebuild found: the snapshot, its manifest and who signed it, the
    smoke runs and checks, and the error that stopped it (None when it ran to its end)."""

    started: datetime
    clock: float
    found: list[Check] = field(default_factory=list)
    snapshot: _Brief | None = None
    manifest: Manifest | None = None
    signer: str | None = None
    trust: str | None = None
    smokes: list[SmokeResult] = field(default_factory=list)
    sandbox: Path | None = None
    removed: bool = False
    failure: errors.DrkitError | None = None


def _rebuild(
    config: Config,
    snapshot: str,
    trust: list[str],
    step: Callable[[str], None],
    allow_rollback: bool = False,
) -> _Rebuilt:
    """Restore `snapshot` into a fresh sandbox, run every check and the smoke run, and remove
    the sandbox whatever happens; errors are returned, not raised."""
    rebuilt = _Rebuilt(started=datetime.now(UTC), clock=time.monotonic())
    found = rebuilt.found
    origin = Origin.from_config(config, trust)
    with sigterm_interrupts():
        try:
            # 'latest' and ids go to restore as they are (it opens the repository and resolves
            # them without an extra listing); 'random' needs the retention window first.
            spec = Spec.parse(snapshot, allow_random=True)
            if spec.random:
                step("opening the repository")
                restic = context.restic_for(config.repository, config.restic)
                context.probe_storage(config.repository)
                chosen = choose_snapshot(config, restic, spec)
                rebuilt.snapshot = _Brief(chosen.id, chosen.time)
                spec = Spec.parse(chosen.id)
                step(f"picked snapshot {chosen.short_id} of {utc_text(chosen.time)} at random")
            sandbox = rebuilt.sandbox = make_sandbox(config, f"{rebuilt.started:%Y%m%dT%H%M%SZ}")
            root = sandbox / "root"
            root.mkdir(mode=0o755)
            root.chmod(0o755)
            restic, located = restoring.open_snapshot(
                origin, spec, None, step, allow_rollback=allow_rollback
            )
            restored = restoring.restore(
                origin, restic, located, root, step=step, databases="skip", throwaway=True
            )
            rebuilt.signer, rebuilt.trust = located.opened.signer, located.opened.trust
            node_manifest = rebuilt.manifest = located.opened.manifest
            # The data's age is the signed manifest's creation time (when the files were read).
            rebuilt.snapshot = _Brief(
                located.snapshot.id, parse_utc(node_manifest.created), located.confirmed
            )
            found += restored.checks
            if node_manifest.databases:
                step("loading the database dumps into a throwaway server on 127.0.0.1")
            with database_service.throwaway(root, node_manifest, sandbox) as served:
                found += served.checks
                smokes = proof.smoke_servers(origin, root, node_manifest, sandbox / "smoke", step)
            rebuilt.smokes = smokes
            found += [check for result in smokes for check in result.checks]
        except errors.DrkitError as exc:
            rebuilt.failure = exc
        finally:
            if rebuilt.sandbox is not None:
                step("removing the sandbox")
                shutil.rmtree(rebuilt.sandbox, ignore_errors=True)
                rebuilt.removed = not rebuilt.sandbox.exists()
    if rebuilt.failure is None and not rebuilt.removed:
        found.append(checks.failed("sandbox removed", f"{rebuilt.sandbox} is still there"))
    return rebuilt


def run(
    config: Config,
    *,
    snapshot: str = "latest",
    report_dir: Path | None = None,
    trust: list[str] | None = None,
    on_step: Callable[[str], None] | None = None,
    upload: bool = True,
    allow_rollback: bool = False,
    from_copy: str | None = None,
) -> DrillResult:
    """Drill the node: restore `snapshot` into a sandbox, check, log in, time it, report.
    from_copy: restore from that copy (repository.copies) instead of the primary.

    Return the drill document (see CONVENTIONS.md: as restore, plus rto_seconds, rpo_seconds,
    objectives, reports); ok is false when a check failed or an objective was missed. Errors
    that stop the drill (storage, trust, a tampered snapshot) are raised after the sandbox is
    gone.
    """

    def step(text: str) -> None:
        timing.mark(text)
        if on_step:
            on_step(text)

    config = config.from_copy(from_copy)
    rebuilt = _rebuild(config, snapshot, list(trust or []), step, allow_rollback)
    found, failure = rebuilt.found, rebuilt.failure
    if failure is not None:
        # The drill could not run to its end (storage, trust, a tampered snapshot): the run is
        # still a failed drill on record, then the error is reported with its own exit code.
        # Storage that failed is not asked again: restic would retry it for minutes.
        unreachable = isinstance(failure, errors.StorageError | errors.AuthenticationError)
        upload = upload and not unreachable
        stopped = isinstance(failure, errors.Interrupted)
        if rebuilt.snapshot is None and not stopped and not unreachable:
            step("finding the snapshot the drill was asked for")
            with contextlib.suppress(errors.DrkitError):
                restic = context.restic_for(config.repository, config.restic)
                chosen = context.select_snapshot(restic, config.node, snapshot)
                rebuilt.snapshot = _Brief(chosen.id, chosen.time)
        if rebuilt.snapshot is not None and not stopped:
            found.append(checks.failed("drill", failure.message))
            step("writing the reports of the failed drill")
            document = _document(config, snapshot, rebuilt) | {"from_copy": from_copy}
            with contextlib.suppress(errors.DrkitError, OSError):
                write_reports(config, document, report_dir, upload=upload)
        raise failure
    document = _document(config, snapshot, rebuilt) | {"from_copy": from_copy}
    step("writing the reports")
    document.update(write_reports(config, document, report_dir, upload=upload))
    return DrillResult.model_validate(document)


def prove(
    config: Config, snapshot_id: str, *, on_step: Callable[[str], None] | None = None
) -> ProofResult:
    """Prove one snapshot (the daemon's schedule.prove): the drill's rebuild in a sandbox
    (restore, every check, the real login where the profile has one), no reports, no node
    lock, never the live node. ok when every check passed; errors that stop the rebuild (a
    tampered or untrusted snapshot, storage) are raised after the sandbox is gone."""
    rebuilt = _rebuild(config, snapshot_id, [], on_step or (lambda text: None))
    if rebuilt.failure is not None:
        raise rebuilt.failure
    found, chosen = rebuilt.found, rebuilt.snapshot
    if chosen is None:  # a rebuild without failure restored a snapshot
        raise errors.InternalError(f"snapshot {snapshot_id[:8]} was not restored")
    return ProofResult(
        ok=checks.all_ok(found),
        node=config.node,
        snapshot_id=chosen.id,
        snapshot_time=utc_text(chosen.time),
        started=utc_text(rebuilt.started),
        duration_seconds=round(time.monotonic() - rebuilt.clock, 3),
        rto_seconds=_rto(rebuilt.smokes, rebuilt.clock),
        checks=found,
        problems=[f"{c.name}: {c.detail}" for c in found if c.status == "fail"],
    )


def _document(config: Config, spec: str, rebuilt: _Rebuilt) -> dict[str, object]:
    """Judge the objectives and return the drill document."""
    started, clock, chosen = rebuilt.started, rebuilt.clock, rebuilt.snapshot
    if chosen is None:
        raise errors.InternalError("a drill document needs the snapshot the drill restored")
    objectives = status_engine.objectives_of(config)
    found = list(rebuilt.found)
    rto = _rto(rebuilt.smokes, clock)
    judged = spec == "latest"
    # an unchanged node's backups confirm the snapshot: the RPO runs from the newest of them
    fresh = max(chosen.time, chosen.confirmed) if judged and chosen.confirmed else chosen.time
    rpo = max(0, round((started - fresh).total_seconds()))
    met = {
        "rto": rto is not None and rto <= objectives["rto_seconds"],
        "rpo": (rpo <= objectives["rpo_seconds"]) if judged else None,
    }
    target = f"objective {reports.duration_text(objectives['rto_seconds'])}"
    if rto is None:
        found.append(checks.failed("objective: RTO", "no login and file round trip succeeded"))
    elif met["rto"]:
        found.append(
            checks.passed("objective: RTO", f"{units.duration(rto)} to a working login, {target}")
        )
    else:
        found.append(
            checks.failed(
                "objective: RTO", f"{units.duration(rto)} to a working login, over the {target}"
            )
        )
    age, target = reports.duration_text(rpo), reports.duration_text(objectives["rpo_seconds"])
    if judged and met["rpo"]:
        found.append(checks.passed("objective: RPO", f"latest snapshot is {age} old"))
    elif judged:
        found.append(
            checks.failed("objective: RPO", f"latest snapshot is {age} old, over the {target}")
        )
    return {
        "ok": checks.all_ok(found),
        "kind": "drill",
        "node": config.node,
        "snapshot_id": chosen.id,
        "snapshot": {
            "id": chosen.id,
            "short_id": chosen.id[:8],
            "time": utc_text(chosen.time),
            "spec": spec,
        },
        "signer": rebuilt.signer,
        "trust": rebuilt.trust,
        "started": utc_text(started),
        "finished": utc_text(datetime.now(UTC)),
        "duration_seconds": round(time.monotonic() - clock, 3),
        "rto_seconds": rto,
        "rpo_seconds": rpo,
        "rpo_judged": judged,
        "objectives": objectives,
        "objectives_met": met,
        "checks": [check.as_dict() for check in found],
        "problems": [f"{c.name}: {c.detail}" for c in found if c.status == "fail"],
        "host_keys": _served_keys(rebuilt.manifest, rebuilt.smokes),
        "certificates": _certificates(rebuilt.manifest, started),
        "sandbox": {
            "path": str(rebuilt.sandbox) if rebuilt.sandbox else None,
            "removed": rebuilt.removed,
        },
    }


# -- reports ---------------------------------------------------------------------------------


def history(config: Config, storage: Storage | None = None) -> list[reports.DrillSummary]:
    """Return the summaries of the node's past drills from the bucket, oldest first."""
    from drkit.engines.storage import Storage

    storage = storage or Storage(config.repository)
    prefix = reports.bucket_prefix(config.node)
    keys = [key for key in storage.list_keys(prefix) if key.endswith(".json")]
    found = [entry for _, entry in reports.drill_summaries(storage, keys[-reports.HISTORY_LIMIT :])]
    return sorted(found, key=lambda entry: str(entry["time"] or ""))


def write_reports(
    config: Config, document: dict[str, object], report_dir: Path | None, *, upload: bool = True
) -> dict[str, object]:
    """Write the drill's JSON, Markdown and HTML reports locally and upload them to
    reports/<node>/ in the bucket; return {reports: {json, md, html}, uploaded: [keys]}.

    A bucket that refuses the upload is a warning, not a failed drill: the local reports stand.
    """
    from drkit.engines.storage import Storage

    directory = report_directory(config, report_dir)
    durable.make_dirs(directory, 0o755)
    name = reports.base_name(document)
    key_base = reports.bucket_prefix(config.node) + name
    storage = Storage(config.repository)
    past: list[reports.DrillSummary] = []
    try:
        past = [entry for entry in history(config, storage) if entry["time"] != document["started"]]
    except errors.DrkitError as exc:
        log.warning("drill history not read from the bucket: %s", exc.message)
    entries = [*past, reports.summary(document, key_base + ".html")]
    paths = {
        "json": directory / f"{name}.json",
        "md": directory / f"{name}.md",
        "html": directory / f"{name}.html",
    }
    located = {**document, "reports": {kind: str(path) for kind, path in paths.items()}}
    bodies = {
        "json": (json.dumps(located, indent=2) + "\n").encode(),
        "md": reports.render_markdown(located, entries).encode(),
        "html": reports.render_html(located, entries).encode(),
    }
    types = {"json": "application/json", "md": "text/markdown", "html": "text/html"}
    for kind, path in paths.items():
        durable.write_atomic(path, bodies[kind], 0o644, 0o755)
    uploaded: list[str] = []
    if upload:
        try:
            for kind in ("md", "html", "json"):  # json last: it is what the history lists
                key = f"{key_base}.{kind}"
                storage.put_bytes(key, bodies[kind], f"{types[kind]}; charset=utf-8")
                uploaded.append(key)
        except errors.DrkitError as exc:
            log.warning("drill reports not uploaded to the bucket: %s", exc.message)
    return {"reports": located["reports"], "uploaded": uploaded, "history": entries}
