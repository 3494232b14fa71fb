"""drkit daemon: the node's scheduled backup, prune, verify and drill jobs, with metrics and alerts.

APScheduler runs one job per `schedule` entry, each calling the same action as its command.
What operators get bitten by elsewhere is made impossible or loud here:
- at most one instance of a job runs; missed runs coalesce into one and are never dropped for
  being late (no misfire grace limit); optional jitter; the runs skipped while a long run ran
  are one info line when it ends, not APScheduler's warning every period;
- at start, a catch-up backup runs when the last good one is older than the RPO (or unknown),
  and stale restic locks left by a crashed run are removed (only provably stale ones);
- transient errors (S3 down, repository busy, restic failing mid-way) are retried with bounded
  exponential backoff for `schedule.retry_window`; fatal ones (wrong password, missing
  repository, bad config) fail at once. Either way a failed run sends its fail ping and webhook
  when its retries are spent (well within 3 minutes), never a success ping, and a failed backup
  is retried again in the background, sooner than its schedule when that is far;
- an outage watch probes the repository (one short S3 request) and the state directory every
  few seconds, run or no run: once they have failed for the retry window (at most 2 minutes)
  it sends a fail ping and an `outage` webhook, so a run held up by restic's own retries, or a
  schedule hours away, never delays the alert past 3 minutes; `outage_over` when they pass
  again. The steps after a snapshot (counting, status and chain head writes) ask the same
  probe and are skipped or stopped while it fails, so the snapshot of a run caught by an
  outage still counts at once;
- every snapshot proven (`schedule.prove`): `after-backup` drills each snapshot the daemon's
  backups make, right after it, in the sandbox (drill.prove: restore, every check, the real
  login; no node lock, never the live node) on a thread of its own, so backups never wait for
  it; a schedule line drills the latest snapshot on that schedule. At start, a node whose
  newest proven snapshot is older than the RPO (or that has none) proves its latest at once.
  A failed proof alerts like a failed backup (fail ping, `proof_failed` webhook), and
  `proven_rpo_breached` / `proven_rpo_ok` webhooks mark entering and leaving proven breach;
- a failing job never stops the daemon; SIGTERM/SIGINT stop it gracefully: no new runs, a
  running one may finish within --stop-timeout, then its restic is interrupted cleanly (SIGTERM,
  restic exits 130 and releases its lock), killed (SIGKILL to its process group) when it has
  not stopped 20 s later, the run recorded as interrupted. It exits 0 once stopped.
Each run updates the status document (local and bucket), the metrics, and the log, written as
JSON lines on stderr.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tenacity
from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from drkit import errors, results, runner, units
from drkit.actions import report as report_action
from drkit.actions import status as status_action
from drkit.config import AFTER_BACKUP, Config, parse_duration
from drkit.engines import metrics, notify, status
from drkit.model import utc_text
from drkit.schedule import trigger_for

log = logging.getLogger("drkit.daemon")

JOBS = ("backup", "prune", "verify", "drill", "standby", "prove")
BACKGROUND_RETRY_MIN = timedelta(seconds=30)
BACKGROUND_RETRY_MAX = timedelta(minutes=10)
RETRY_WAIT_MAX_SECONDS = 30
INTERRUPT_GRACE_SECONDS = 20.0
KILL_GRACE_SECONDS = 15.0
OUTAGE_ALERT_AFTER_MAX = 120.0  # + one check interval + one probe stays well under 3 minutes
OUTAGE_CHECK_SECONDS_MAX = 10.0
_context = threading.local()


class Cancelled(Exception):
    """The daemon began stopping before the job's first attempt: nothing ran, nothing failed."""


# -- schedules -------------------------------------------------------------------------------

# Schedule lines are read by drkit.schedule.trigger_for, the parser the config validator uses
# too, so a line the config accepts is a line the daemon runs, with the same meaning.


# -- errors ----------------------------------------------------------------------------------


def is_transient(error: BaseException) -> bool:
    """Return True for errors worth retrying: S3 or network trouble, a busy repository, restic
    failing in a way it does not name. Wrong password, missing repository or bucket, bad
    config, refused snapshots, incomplete backups and interruptions are final."""
    if isinstance(error, errors.RepositoryMissing | errors.Interrupted):
        return False
    if isinstance(error, errors.StorageError):
        return "does not exist" not in error.message and "TLS" not in error.message
    return isinstance(error, errors.Busy | errors.ResticFailed | runner.CommandTimeout)


# -- logging ---------------------------------------------------------------------------------


class JsonLines(logging.Formatter):
    """One JSON object per log line: time, level, node, job, message."""

    def __init__(self, node: str):
        super().__init__()
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname.lower(),
            "node": self.node,
            "job": getattr(_context, "job", None),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.levelno >= logging.ERROR:
            line["exception"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(line)


def setup_logging(node: str, verbose: int = 0) -> None:
    """Send drkit's log lines to stderr as JSON lines: info by default, -v debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines(node))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "urllib3", "boto3", "s3transfer", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


# -- children --------------------------------------------------------------------------------


def _child_pids() -> list[int]:
    """Return the pids of this process's children (restic, started in their own session)."""
    me = os.getpid()
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1].isdigit() and int(fields[1]) == me:
            children.append(int(entry.name))
    return children


def interrupt_children(sig: int = signal.SIGTERM) -> list[int]:
    """Send sig to each child's process group: SIGTERM (restic then exits 130 and unlocks), or
    SIGKILL for a restic that did not react (its lock is stale then, removed at next start)."""
    stopped = []
    for pid in _child_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
            stopped.append(pid)
    return stopped


# -- skipped runs ----------------------------------------------------------------------------

_MAX_INSTANCES_WARNING = "maximum number of running instances reached"


class _NoMaxInstancesWarning(logging.Filter):
    """Drop APScheduler's "skipped: maximum number of running instances reached" warning, which
    it logs every period while a run is long; SkippedRuns reports the count once instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _MAX_INSTANCES_WARNING not in str(record.msg)


_QUIET = _NoMaxInstancesWarning()


class SkippedRuns:
    """Count, per job, the scheduled runs APScheduler skipped because the job's one instance was
    still running (EVENT_JOB_MAX_INSTANCES), and log them as one info line when that run ends."""

    def __init__(self, scheduler: BackgroundScheduler):
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        for name in ("apscheduler", "apscheduler.scheduler"):
            found = logging.getLogger(name)
            if _QUIET not in found.filters:
                found.addFilter(_QUIET)
        scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES)

    def _skipped(self, event: JobSubmissionEvent) -> None:
        with self._lock:
            self._counts[event.job_id] = self._counts.get(event.job_id, 0) + max(
                1, len(event.scheduled_run_times or [])
            )

    def take(self, job_id: str) -> int:
        """Return how many runs of the job were skipped since the last take, and reset it."""
        with self._lock:
            return self._counts.pop(job_id, 0)

    def report(self, job_id: str, started: datetime) -> int:
        """Log one info line when runs were skipped while the job's run (started then) ran;
        return the count."""
        skipped = self.take(job_id)
        if skipped:
            runs = "run" if skipped == 1 else "runs"
            log.info(
                "%s: run of %s finished; %d scheduled %s skipped while it ran",
                job_id,
                f"{started:%H:%M:%S}",
                skipped,
                runs,
            )
        return skipped


# -- the daemon ------------------------------------------------------------------------------


class Daemon:
    """The scheduler, its jobs, the metrics endpoint and the alerting of one node."""

    def __init__(
        self,
        config: Config,
        *,
        metrics_address: str | None = None,
        textfile: Path | None = None,
        stop_timeout: float = 60.0,
        actions: dict[str, Callable[[], dict]] | None = None,
    ):
        self.config = config
        self.stop_timeout = stop_timeout
        self.retry_window = parse_duration(config.schedule.retry_window).total_seconds()
        self.notifier = notify.Notifier(config.notify, config.node)
        self.objectives = status.objectives_of(config)
        self.collector = metrics.StatusCollector(
            config.node, lambda: status.load_local(config), self.objectives
        )
        self.metrics = metrics.Metrics(self.collector, textfile)
        self.metrics_address = metrics.parse_address(metrics_address) if metrics_address else None
        self.actions = actions or self._default_actions()
        self.stopping = threading.Event()
        self.stopped_by: str | None = None
        self.runs = {job: {"runs": 0, "failed": 0, "last_error": None} for job in self.actions}
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._failures_in_a_row = 0
        self._breached: bool | None = None
        self._proven_breached: bool | None = None
        self._proof_snapshot: str | None = None  # what the prove action drills (None: latest)
        self._proof_wanted = threading.Event()  # after-backup: a snapshot waits for its proof
        self._proof_next: str | None = None
        self.outage_after = min(self.retry_window, OUTAGE_ALERT_AFTER_MAX)
        self.outage_every = min(OUTAGE_CHECK_SECONDS_MAX, max(1.0, self.outage_after / 4))
        self._unusable_since: float | None = None
        self._outage_alerted = False
        self._outage_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(max_workers=6)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self.skipped = SkippedRuns(self.scheduler)

    # -- actions ----------------------------------------------------------------------------

    def _default_actions(self) -> dict[str, Callable[[], dict]]:
        config = self.config
        schedule = config.schedule

        def backup() -> dict:
            from drkit.actions import backup as backup_action

            return backup_action.run(config)

        def prune() -> dict:
            from drkit.actions import prune as prune_action

            return prune_action.run(config)

        def verify() -> dict:
            from drkit.actions import verify as verify_action

            return verify_action.run(config)

        def drill() -> dict:
            from drkit.actions import drill as drill_action

            return drill_action.run(config)

        def standby() -> dict:
            from drkit.actions import standby as standby_action

            return standby_action.sync(config)

        def prove() -> dict:
            from drkit.actions import drill as drill_action

            return drill_action.prove(config, self._proof_snapshot or "latest")

        available = {
            "backup": backup,
            "prune": prune,
            "verify": verify,
            "drill": drill,
            "prove": prove,
        }
        if config.standby is not None:
            # A passive node follows its source instead of backing itself up (until promote),
            # so it has no snapshots of its own to prove.
            del available["backup"], available["prove"]
            available["standby"] = standby
        return {name: action for name, action in available.items() if getattr(schedule, name)}

    # -- one run ------------------------------------------------------------------------------

    def _attempts(self, name: str) -> dict:
        """Run the job's action, retrying transient errors within the retry window."""
        action = self.actions[name]
        attempts = 0

        def attempt() -> dict:
            nonlocal attempts
            attempts += 1
            if self.stopping.is_set():
                if attempts == 1:
                    raise Cancelled(name)
                raise errors.Interrupted("the daemon is stopping")
            if attempts == 1:
                self.notifier.start(name)
            return action()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            message = getattr(error, "message", str(error))
            wait = state.next_action.sleep if state.next_action else 0
            log.warning(
                "attempt %d failed (%s); retrying in %.0f s", state.attempt_number, message, wait
            )
            if isinstance(error, errors.Busy):
                self._clear_stale_locks()

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential(multiplier=1, min=1, max=RETRY_WAIT_MAX_SECONDS),
            stop=tenacity.stop_any(
                tenacity.stop_before_delay(self.retry_window),
                lambda state: self.stopping.is_set(),
            ),
            sleep=lambda seconds: self.stopping.wait(seconds) and None,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _copy(self) -> None:
        """Bring every copy up to the primary after a backup; a failed copy alerts
        (`copy_failed`) and never fails the backup: the next one copies what is missing."""
        from drkit.actions import copy as copy_action

        try:
            status_action.recorded(self.config, "copy", lambda: copy_action.run(self.config))
        except errors.DrkitError as exc:
            log.error("copy failed: %s", exc.message)
            self.notifier.webhook("copy_failed", "copy", ok=False, error=exc.message)

    def _alert_security_events(self, name: str, result: Any) -> None:
        """A backup that found security changes sends the `suspicious_change` webhook: one
        alert per backup, naming the first events (drkit history lists them all)."""
        if name != "backup" or result is None:
            return
        from drkit.actions import history

        try:
            self.collector.unacknowledged = sum(
                not event.acknowledged for event in history.events(self.config)
            )
        except errors.DrkitError as exc:
            log.warning("security events not counted: %s", exc.message)
        found = getattr(result, "security_events", None)
        if not found:
            return
        details = "; ".join(f"{event.detail} [{event.id}]" for event in found[:3])
        more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
        self.notifier.webhook(
            "suspicious_change",
            name,
            ok=False,
            error=f"{len(found)} security change(s): {details}{more}",
            snapshot_id=found[0].snapshot_id,
        )

    def run_job(self, name: str, known: dict | None = None) -> dict[str, Any]:
        """Run one scheduled job to its end: retries, status, metrics, pings and webhook.
        `known`: fields of its status entry known before it runs (a proof's snapshot).

        Return the status entry of the run. Never raises: a failing job never stops the daemon.
        """
        _context.job = name
        started = datetime.now(UTC)
        clock = time.monotonic()
        with self._lock:
            self._running[name] = clock
        log.info("%s started", name)
        result, error = None, None
        try:
            result = self._attempts(name)
        except Cancelled:
            log.info("%s cancelled: the daemon is stopping", name)
            with self._lock:
                self._running.pop(name, None)
            _context.job = None
            return {}
        except errors.DrkitError as exc:
            error = exc
        except Exception as exc:  # a bug must not kill the scheduler thread silently
            log.exception("%s crashed", name)
            error = errors.InternalError.from_exception(exc)
        if (
            error is not None
            and self.stopping.is_set()
            and not isinstance(error, errors.Interrupted)
        ):
            # ended by the stop (restic killed after its grace, a retry cut short)
            error = errors.Interrupted(f"interrupted: the daemon stopped ({error.message})")
        duration = time.monotonic() - clock
        outcome = status_action.record_run(
            self.config,
            name,
            started,
            duration,
            result=result,
            error=error,
            count_snapshots=self._count_snapshots,
            known=known,
        )
        ok = bool(outcome["ok"])
        self.collector.count_run(name, ok)
        self.metrics.write_textfile()
        with self._lock:
            self._running.pop(name, None)
            self.runs[name]["runs"] += 1
            if not ok:
                self.runs[name]["failed"] += 1
                self.runs[name]["last_error"] = outcome["error"]
        if ok:
            log.info("%s succeeded in %.1f s", name, duration)
        else:
            log.error("%s failed after %.1f s: %s", name, duration, outcome["error"])
        if name != "prove" or not isinstance(error, errors.Interrupted):
            self.notifier.finish(
                name,
                ok=ok,
                error=outcome["error"],
                snapshot_id=outcome.get("snapshot_id"),
                event="proof_failed" if name == "prove" and not ok else None,
            )
        self._alert_security_events(name, result)
        if name == "backup" and ok and self.config.repository.copies:
            self._copy()
        proving = self.config.schedule.prove == AFTER_BACKUP and "prove" in self.actions
        if name == "backup" and ok and proving:
            self._want_proof(outcome.get("snapshot_id"))
        report_action.refresh_fleet_page(self.config)
        self._watch()
        self.skipped.report(name, started)
        if name == "backup":
            # last: a retry brought forward while this run still held the job's one instance
            # (a webhook timing out in the watch lasts longer than the 30 s) would be skipped
            self._after_backup(ok)
        _context.job = None
        return outcome

    # -- proofs -------------------------------------------------------------------------------

    def prove(self, snapshot_id: str | None = None) -> dict[str, Any]:
        """Run the prove job on a snapshot (None: the latest); return its status entry."""
        self._proof_snapshot = snapshot_id
        return self.run_job("prove", known={"snapshot_id": snapshot_id} if snapshot_id else None)

    def _want_proof(self, snapshot_id: str | None) -> None:
        """after-backup: hand a snapshot (None: the latest) to the proof thread; the newest
        handed over while a proof runs is the next one proven."""
        with self._lock:
            self._proof_next = snapshot_id
        self._proof_wanted.set()

    def _proof_worker(self) -> None:
        """after-backup: prove each snapshot handed over, one at a time, until the daemon stops."""
        while not self.stopping.is_set():
            if not self._proof_wanted.wait(1.0) or self.stopping.is_set():
                continue
            self._proof_wanted.clear()
            with self._lock:
                snapshot_id = self._proof_next
            try:
                self.prove(snapshot_id)
            except Exception:  # the thread must outlive a bug in one proof
                log.exception("proof crashed")

    def _count_snapshots(self) -> int | None:
        """Return the node's snapshot count (from the signed catalog; restic lists them only
        when it cannot answer), or None when the outage probe fails (before or while they are
        counted)."""
        from drkit.service import context
        from drkit.service.opening import Catalog, Origin

        repository = self.config.repository
        try:
            down = context.outage(repository)
            if down:
                raise errors.StorageError(down)
            restic = context.restic_for(repository, self.config.restic, outage_limit=0)
            with Catalog(Origin.from_config(self.config), restic) as found_in:
                return len(found_in.node_snapshots(self.config.node))
        except errors.DrkitError as exc:
            log.warning("snapshots not counted: %s", exc.message)
            return None

    def _after_backup(self, ok: bool) -> None:
        """After a failed backup, bring the next attempt forward (background retry)."""
        if ok:
            self._failures_in_a_row = 0
            with self._outage_lock:
                self._outage_alerted = False  # its success ping went out: alert again if down
            return
        self._failures_in_a_row += 1
        if self.stopping.is_set():
            return
        delay = min(BACKGROUND_RETRY_MAX, BACKGROUND_RETRY_MIN * 2 ** (self._failures_in_a_row - 1))
        job = self.scheduler.get_job("backup")
        when = datetime.now(UTC) + delay
        if job is not None and job.next_run_time and job.next_run_time > when:
            job.modify(next_run_time=when)
            log.info("backup retried in the background at %s", utc_text(when))

    def _clear_stale_locks(self) -> None:
        try:
            from drkit.service import context, locks

            restic = context.restic_for(self.config.repository, self.config.restic)
            removed = locks.clear_stale(restic)
            if removed:
                log.warning("removed %d stale restic lock(s)", len(removed))
        except errors.DrkitError as exc:
            log.warning("stale locks not checked: %s", exc.message)

    def _outage_job(self) -> str:
        return "backup" if "backup" in self.actions else "standby"

    def _check_outage(self) -> None:
        """Probe the repository and the state directory; alert once they have failed for
        outage_after seconds (fail ping and `outage` webhook), and when they pass again."""
        from drkit.service import context

        problem = context.outage(self.config.repository) or context.disk_problem(
            self.config.state_dir
        )
        now = time.monotonic()
        alert, over = None, False
        with self._outage_lock:
            if problem is None:
                over, self._outage_alerted = self._outage_alerted, False
                self._unusable_since = None
            else:
                self._unusable_since = self._unusable_since or now
                lasted = now - self._unusable_since
                if lasted >= self.outage_after and not self._outage_alerted:
                    self._outage_alerted = True
                    alert = f"{problem} (for {units.duration(lasted)})"
        job = self._outage_job()
        if alert:
            log.error("outage: %s", alert)
            self.notifier.finish(job, ok=False, error=alert, event="outage")
        elif over:
            log.info("outage over: the repository and the state directory answer again")
            self.notifier.webhook("outage_over", job, ok=True)

    def _outage_watch(self) -> None:
        """Run _check_outage every outage_every seconds until the daemon stops."""
        _context.job = "outage"
        while not self.stopping.wait(self.outage_every):
            try:
                self._check_outage()
            except Exception:  # the watch must outlive a bug in one check
                log.exception("outage check crashed")

    def _watch(self) -> None:
        """Refresh the textfile and alert when the node enters or leaves RPO breach."""
        with self._watch_lock:
            self._watch_locked()

    def _watch_locked(self) -> None:
        entry = self.collector.evaluate()
        self.metrics.write_textfile()
        # a node that proves its snapshots: entering or leaving proven-RPO breach
        breached = entry["proven_rpo_breached"]
        if self._proven_breached is not None and breached != self._proven_breached:
            problem = next(
                (text for text in entry["problems"] if text.startswith("newest proven")), None
            )
            self._alert_breach(
                breached,
                ("proven_rpo_breached", f"proven RPO breached: {problem}"),
                ("proven_rpo_ok", "newest proven snapshot within the RPO again"),
                job="prove",
                error=problem if breached else None,
                snapshot_id=entry["proven_snapshot_id"],
            )
        self._proven_breached = breached
        breached = not entry["rpo_ok"]
        if self._breached is not None and breached != self._breached:
            problems = "; ".join(entry["problems"])
            self._alert_breach(
                breached,
                ("rpo_breached", f"RPO breached: {problems}"),
                ("rpo_restored", "within RPO again"),
                job="backup",
                error=problems or None,
                snapshot_id=(entry["last_good_backup"] or {}).get("snapshot_id"),
            )
        self._breached = breached

    def _alert_breach(
        self,
        breached: bool,
        entering: tuple[str, str],
        leaving: tuple[str, str],
        *,
        job: str,
        error: str | None,
        snapshot_id: str | None,
    ) -> None:
        """Log and send the webhook of entering (event, log line) or leaving a breach."""
        event, line = entering if breached else leaving
        (log.error if breached else log.info)("%s", line)
        self.notifier.webhook(event, job, ok=not breached, error=error, snapshot_id=snapshot_id)

    # -- lifetime ---------------------------------------------------------------------------

    def _schedule(self) -> dict[str, str]:
        planned = {}
        schedule = self.config.schedule
        entry = self.collector.evaluate()
        catch_up = "backup" in self.actions and not entry["backup_rpo_ok"]
        for name in self.actions:
            line = planned[name] = getattr(schedule, name)
            job, args = (self.prove, []) if name == "prove" else (self.run_job, [name])
            due_now = name == "backup" and catch_up
            if name == "backup" and catch_up:
                why = "; ".join(entry["problems"]) or "no good backup known"
                log.info("catch-up backup now: %s", why)
            elif name == "prove" and not catch_up and entry["proven_rpo_ok"] is not True:
                # (a catch-up backup's proof, or the next scheduled one, proves the latest too)
                log.info("catch-up proof of the latest snapshot now: none proven within the RPO")
                due_now = True
            if line == AFTER_BACKUP:
                if due_now:
                    self._want_proof(None)
                continue  # the proof thread proves each backup's snapshot
            self.scheduler.add_job(
                job,
                trigger_for(line, schedule.jitter),
                args=args,
                id=name,
                name=name,
                **({"next_run_time": datetime.now(UTC)} if due_now else {}),
            )
        rpo = self.objectives["rpo_seconds"]
        self.scheduler.add_job(
            self._watch,
            IntervalTrigger(seconds=max(1, min(30, rpo // 4)), timezone=UTC),
            id="watch",
            name="watch",
        )
        self.scheduler.add_job(
            self._clear_stale_locks, id="locks", name="locks", next_run_time=datetime.now(UTC)
        )
        return planned

    def request_stop(self, reason: str) -> None:
        """Ask the daemon to stop (signal handlers, tests)."""
        if self.stopped_by is None:
            self.stopped_by = reason
        self.stopping.set()

    def run(self, *, install_signals: bool = True) -> results.DaemonResult:
        """Run until SIGTERM/SIGINT (or request_stop); return the daemon's summary."""
        started = datetime.now(UTC)
        previous = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(
                    sig, lambda signum, frame: self.request_stop(signal.Signals(signum).name)
                )
        address = None
        try:
            if self.metrics_address:
                host, port = self.metrics.serve(*self.metrics_address)
                address = f"{host}:{port}"
                log.info("metrics on http://%s/metrics, health on /healthz", address)
            planned = self._schedule()
            self.scheduler.start()
            threading.Thread(target=self._outage_watch, name="outage", daemon=True).start()
            if planned.get("prove") == AFTER_BACKUP:
                threading.Thread(target=self._proof_worker, name="prove", daemon=True).start()
            log.info(
                "daemon started for node %s: %s",
                self.config.node,
                ", ".join(f"{name} {line!r}" for name, line in planned.items()),
            )
            self._watch()
            while not self.stopping.wait(1.0):
                pass
            interrupted = self._shutdown()
        finally:
            self.metrics.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("daemon stopped (%s)", self.stopped_by)
        return results.DaemonResult(
            node=self.config.node,
            started=utc_text(started),
            stopped=utc_text(datetime.now(UTC)),
            stopped_by=self.stopped_by,
            metrics=address,
            interrupted=interrupted,
            runs=self.runs,
        )

    def _shutdown(self) -> list[str]:
        """Stop scheduling, let running jobs finish within stop_timeout, then interrupt them."""
        log.info("stopping (%s): no new runs", self.stopped_by)
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        deadline = time.monotonic() + self.stop_timeout
        while self._busy() and time.monotonic() < deadline:
            time.sleep(0.2)
        interrupted = self._busy()
        if interrupted:
            log.warning(
                "interrupting %s after %.0f s: restic is stopped cleanly",
                ", ".join(interrupted),
                self.stop_timeout,
            )
            interrupt_children()
            deadline = time.monotonic() + INTERRUPT_GRACE_SECONDS
            while self._busy() and time.monotonic() < deadline:
                time.sleep(0.2)
                interrupt_children()
            if self._busy():
                # restic deaf to SIGTERM (stuck retrying a dead S3): without this the job's
                # thread, and so the daemon's exit, would wait for it forever
                killed = interrupt_children(signal.SIGKILL)
                log.warning(
                    "killed %s (%d process group(s)): not stopped %.0f s after SIGTERM",
                    ", ".join(self._busy()),
                    len(killed),
                    INTERRUPT_GRACE_SECONDS,
                )
                deadline = time.monotonic() + KILL_GRACE_SECONDS
                while self._busy() and time.monotonic() < deadline:
                    time.sleep(0.2)
                    interrupt_children(signal.SIGKILL)
        self.metrics.write_textfile()
        return interrupted

    def _busy(self) -> list[str]:
        with self._lock:
            return sorted(self._running)
