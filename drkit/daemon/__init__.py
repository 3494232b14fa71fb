"""drkit daemon: the node's scheduled backup, prune, verify and drill jobs, with metrics and alerts.

APScheduler runs one job per `schedule` entry, each calling the same action as its command.
What operators get bitten by elsewhere is made impossible or loud here:
- at most one instance of a job runs; missed runs coalesce into one and are never dropped for
  being late (no misfire grace limit); optional jitter; the runs skipped while a long run ran
  are one info line when it ends, not APScheduler's warning every period (scheduler.py);
- at start, a catch-up backup runs when the last good one is older than the RPO (or unknown),
  and stale restic locks left by a crashed run are removed (only provably stale ones);
- transient errors (S3 down, repository busy, restic failing mid-way) are retried with bounded
  exponential backoff for `schedule.retry_window`; fatal ones (wrong password, missing
  repository, bad config) fail at once. Either way a failed run sends its fail ping and webhook
  when its retries are spent (well within 3 minutes), never a success ping, and a failed backup
  is retried again in the background, sooner than its schedule when that is far (jobs.py);
- an outage watch probes the repository (one short S3 request) and the state directory every
  few seconds, run or no run: once they have failed for the retry window (at most 2 minutes)
  it sends a fail ping and an `outage` webhook, so a run held up by restic's own retries, or a
  schedule hours away, never delays the alert past 3 minutes; `outage_over` when they pass
  again. The steps after a snapshot (counting, status and chain head writes) ask the same
  probe and are skipped or stopped while it fails, so the snapshot of a run caught by an
  outage still counts at once (watch.py);
- every snapshot proven (`schedule.prove`): `after-backup` drills each snapshot the daemon's
  backups make, right after it, in the sandbox (drill.prove: restore, every check, the real
  login; no node lock, never the live node) on a thread of its own, so backups never wait for
  it; a schedule line drills the latest snapshot on that schedule. At start, a node whose
  newest proven snapshot is older than the RPO (or that has none) proves its latest at once.
  A failed proof alerts like a failed backup (fail ping, `proof_failed` webhook), and
  `proven_rpo_breached` / `proven_rpo_ok` webhooks mark entering and leaving proven breach
  (proofs.py);
- a failing job never stops the daemon; SIGTERM/SIGINT stop it gracefully: no new runs, a
  running one may finish within --stop-timeout, then its restic is interrupted cleanly (SIGTERM,
  restic exits 130 and releases its lock), killed (SIGKILL to its process group) when it has
  not stopped 20 s later, the run recorded as interrupted. It exits 0 once stopped.
Each run updates the status document (local and bucket), the metrics, and the log, written as
JSON lines on stderr (drkit.output.setup_json_logging). The time is read from an injected
drkit.timing.Clock.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from types import FrameType

from apscheduler.triggers.interval import IntervalTrigger

from drkit import errors, output, results, runner
from drkit.actions import report as report_action
from drkit.config import Config
from drkit.configtypes import AFTER_BACKUP
from drkit.daemon import jobs, scheduler, watch
from drkit.daemon.jobs import JOBS, Action, is_transient
from drkit.daemon.proofs import Proofs
from drkit.daemon.watch import OUTAGE_ALERT_AFTER_MAX, OUTAGE_CHECK_SECONDS_MAX
from drkit.engines import metrics, notify, status
from drkit.engines.statusdoc import Outcome
from drkit.model import utc_text
from drkit.schedule import trigger_for
from drkit.service import recorder
from drkit.timing import Clock

__all__ = [
    "JOBS",
    "OUTAGE_ALERT_AFTER_MAX",
    "OUTAGE_CHECK_SECONDS_MAX",
    "Daemon",
    "is_transient",
]

log = logging.getLogger("drkit.daemon")

INTERRUPT_GRACE_SECONDS = 20.0
KILL_GRACE_SECONDS = 15.0


class Daemon:
    """The scheduler, its jobs, the watches, the metrics endpoint and the alerting of one node."""

    def __init__(
        self,
        config: Config,
        *,
        metrics_address: str | None = None,
        textfile: Path | None = None,
        stop_timeout: float = 60.0,
        actions: dict[str, Action] | None = None,
        clock: Clock | None = None,
        count_snapshots: Callable[[], int | None] | None = None,
    ):
        self.config = config
        self.clock = clock or Clock()
        self.stop_timeout = stop_timeout
        self.notifier = notify.Notifier(config.notify, config.node)
        self.objectives = status.objectives_of(config)
        self.collector = metrics.StatusCollector(
            config.node, lambda: status.load_local(config), self.objectives
        )
        self.metrics = metrics.Metrics(self.collector, textfile)
        self.metrics_address = metrics.parse_address(metrics_address) if metrics_address else None
        self.proofs = Proofs()
        self.actions = actions or jobs.default_actions(config, lambda: self.proofs.target)
        self.stopping = threading.Event()
        self.stopped_by: str | None = None
        self.jobs = jobs.Jobs(
            config,
            self.actions,
            notifier=self.notifier,
            collector=self.collector,
            metrics_out=self.metrics,
            stopping=self.stopping,
            clock=self.clock,
            count_snapshots=count_snapshots or (lambda: jobs.count_snapshots(config)),
        )
        self.outage = watch.OutageWatch(
            self.notifier,
            "backup" if "backup" in self.actions else "standby",
            self.jobs.retry_window,
            self.clock,
            lambda: watch.outage_problem(config),
        )
        self.breach = watch.BreachWatch(self.notifier, self.collector, self.metrics)
        self.scheduler = scheduler.new_scheduler()
        self.skipped = scheduler.SkippedRuns(self.scheduler)
        self.retry = scheduler.BackgroundRetry(self.scheduler, self.clock)

    # -- one run ------------------------------------------------------------------------------

    def run_job(self, name: str, snapshot_id: str | None = None) -> Outcome:
        """Run one scheduled job to its end (jobs.Jobs.run: retries, status, metrics, pings and
        webhook), then what follows it: security-event alert, copies, the proof of a new
        snapshot, the fleet page, the breach watch and a failed backup's background retry.

        Return the status entry of the run ({} when cancelled). Never raises.
        """
        started = self.clock.now()
        outcome, result = self.jobs.run(name, snapshot_id)
        if not outcome:
            return outcome
        ok = bool(outcome["ok"])
        if name == "backup":
            self._alert_security_events(result)
        if name == "backup" and ok and self.config.repository.copies:
            self._copy()
        proving = self.config.schedule.prove == AFTER_BACKUP and "prove" in self.actions
        if name == "backup" and ok and proving:
            self.proofs.want(outcome.get("snapshot_id"))
        report_action.refresh_fleet_page(self.config)
        self.breach.check()
        self.skipped.report(name, started)
        if name == "backup":
            # last: a retry brought forward while this run still held the job's one instance
            # (a webhook timing out in the watch lasts longer than the 30 s) would be skipped
            if ok:
                self.outage.rearm()  # its success ping went out: alert again if down
            self.retry.after(ok, self.stopping)
        output.log_job(None)
        return outcome

    def prove(self, snapshot_id: str | None = None) -> Outcome:
        """Run the prove job on a snapshot (None: the latest); return its status entry."""
        self.proofs.target = snapshot_id
        return self.run_job("prove", snapshot_id)

    def _copy(self) -> None:
        """Bring every copy up to the primary after a backup; a failed copy alerts
        (`copy_failed`) and never fails the backup: the next one copies what is missing."""
        from drkit.actions import copy as copy_action

        try:
            recorder.recorded(self.config, "copy", lambda: copy_action.run(self.config))
        except errors.DrkitError as exc:
            log.error("copy failed: %s", exc.message)
            self.notifier.webhook("copy_failed", "copy", ok=False, error=exc.message)

    def _alert_security_events(self, result: results.Result | None) -> None:
        """A backup that found security changes sends the `suspicious_change` webhook: one
        alert per backup, naming the first events (drkit history lists them all)."""
        if result is None:
            return
        from drkit.actions import history

        try:
            self.collector.unacknowledged = sum(
                not event.acknowledged for event in history.events(self.config)
            )
        except errors.DrkitError as exc:
            log.warning("security events not counted: %s", exc.message)
        found = result.security_events if isinstance(result, results.BackupResult) else []
        if not found:
            return
        details = "; ".join(f"{event.detail} [{event.id}]" for event in found[:3])
        more = f" (+{len(found) - 3} more)" if len(found) > 3 else ""
        self.notifier.webhook(
            "suspicious_change",
            "backup",
            ok=False,
            error=f"{len(found)} security change(s): {details}{more}",
            snapshot_id=found[0].snapshot_id,
        )

    # -- lifetime ---------------------------------------------------------------------------

    def schedule(self) -> dict[str, str]:
        """Add every job to the scheduler (a catch-up backup or proof due at once when the node
        is breached), the breach watch and the stale-lock sweep; return each job's line."""
        planned = {}
        lines = self.config.schedule
        entry = self.collector.evaluate()
        catch_up = "backup" in self.actions and not entry["backup_rpo_ok"]
        now = self.clock.now()
        for name in self.actions:
            line = planned[name] = getattr(lines, name)
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
                    self.proofs.want(None)
                continue  # the proof thread proves each backup's snapshot
            job, args = (self.prove, []) if name == "prove" else (self.run_job, [name])
            self.scheduler.add_job(
                job,
                trigger_for(line, lines.jitter),
                args=args,
                id=name,
                name=name,
                **({"next_run_time": now} if due_now else {}),
            )
        rpo = self.objectives["rpo_seconds"]
        self.scheduler.add_job(
            self.breach.check,
            IntervalTrigger(seconds=max(1, min(30, rpo // 4)), timezone=UTC),
            id="watch",
            name="watch",
        )
        self.scheduler.add_job(
            jobs.clear_stale_locks, args=[self.config], id="locks", name="locks", next_run_time=now
        )
        return planned

    def request_stop(self, reason: str) -> None:
        """Ask the daemon to stop (signal handlers, tests)."""
        if self.stopped_by is None:
            self.stopped_by = reason
        self.stopping.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.request_stop(signal.Signals(signum).name)

    def run(self, *, install_signals: bool = True) -> results.DaemonResult:
        """Run until SIGTERM/SIGINT (or request_stop); return the daemon's summary."""
        started = self.clock.now()
        previous = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        address = None
        try:
            if self.metrics_address:
                host, port = self.metrics.serve(*self.metrics_address)
                address = f"{host}:{port}"
                log.info("metrics on http://%s/metrics, health on /healthz", address)
            planned = self.schedule()
            self.scheduler.start()
            threading.Thread(
                target=self.outage.loop, args=[self.stopping], name="outage", daemon=True
            ).start()
            if planned.get("prove") == AFTER_BACKUP:
                threading.Thread(
                    target=self.proofs.worker,
                    args=[self.prove, self.stopping],
                    name="prove",
                    daemon=True,
                ).start()
            log.info(
                "daemon started for node %s: %s",
                self.config.node,
                ", ".join(f"{name} {line!r}" for name, line in planned.items()),
            )
            self.breach.check()
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
            stopped=utc_text(self.clock.now()),
            stopped_by=self.stopped_by,
            metrics=address,
            interrupted=interrupted,
            runs={name: dict(counts) for name, counts in self.jobs.runs.items()},
        )

    def _wait_idle(self, seconds: float, sig: int | None = None) -> None:
        """Wait up to seconds for the running jobs to end, signalling restic's group each
        round when sig is given."""
        deadline = self.clock.monotonic() + seconds
        while self.jobs.busy() and self.clock.monotonic() < deadline:
            time.sleep(0.2)
            if sig is not None:
                runner.signal_children(sig)

    def _shutdown(self) -> list[str]:
        """Stop scheduling, let running jobs finish within stop_timeout, then interrupt them."""
        log.info("stopping (%s): no new runs", self.stopped_by)
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        self._wait_idle(self.stop_timeout)
        interrupted = self.jobs.busy()
        if interrupted:
            log.warning(
                "interrupting %s after %.0f s: restic is stopped cleanly",
                ", ".join(interrupted),
                self.stop_timeout,
            )
            runner.signal_children(signal.SIGTERM)
            self._wait_idle(INTERRUPT_GRACE_SECONDS, signal.SIGTERM)
            if self.jobs.busy():
                # restic deaf to SIGTERM (stuck retrying a dead S3): without this the job's
                # thread, and so the daemon's exit, would wait for it forever
                killed = runner.signal_children(signal.SIGKILL)
                log.warning(
                    "killed %s (%d process group(s)): not stopped %.0f s after SIGTERM",
                    ", ".join(self.jobs.busy()),
                    len(killed),
                    INTERRUPT_GRACE_SECONDS,
                )
                self._wait_idle(KILL_GRACE_SECONDS, signal.SIGKILL)
        self.metrics.write_textfile()
        return interrupted
