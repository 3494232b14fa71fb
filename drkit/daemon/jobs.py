"""The daemon's jobs: which action each runs, its retries within the retry window, and the
recording of every run (status document, metrics, counters)."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from typing import TypedDict

import tenacity

from drkit import errors, output, results, runner
from drkit.config import Config
from drkit.engines import metrics, notify
from drkit.engines.statusdoc import Outcome
from drkit.service import recorder
from drkit.timing import Clock

log = logging.getLogger("drkit.daemon")

JOBS = ("backup", "prune", "verify", "drill", "standby", "prove", "identity")
RETRY_WAIT_MAX_SECONDS = 30
# the webhook event of a failed run, where it has one of its own (otherwise "failed")
FAILURE_EVENTS = {"prove": "proof_failed", "identity": "identity_failed"}

# What a job runs: the command's action, returning its result.
Action = Callable[[], results.Result]


class Cancelled(Exception):
    """The daemon began stopping before the job's first attempt: nothing ran, nothing failed."""


class RunCounts(TypedDict):
    """A job's runs since the daemon started (DaemonResult.runs)."""

    runs: int
    failed: int
    last_error: str | None


def is_transient(error: BaseException) -> bool:
    """Return True for errors worth retrying: S3 or network trouble, a busy repository, restic
    failing in a way it does not name. Wrong password, missing repository or bucket, bad
    config, refused snapshots, incomplete backups and interruptions are final."""
    if isinstance(error, errors.RepositoryMissing | errors.Interrupted):
        return False
    if isinstance(error, errors.StorageError):
        return "does not exist" not in error.message and "TLS" not in error.message
    return isinstance(error, errors.Busy | errors.ResticFailed | runner.CommandTimeout)


class CopyTurns:
    """Which scheduled drills restore from a copy: `share` of them, spread evenly (0.25: every
    4th), the copies in turn; counted from the daemon's start."""

    def __init__(self, copies: list[str], share: float):
        self.copies, self.share = copies, share
        self.runs = self.taken = 0

    def next(self) -> str | None:
        """Return the copy the next drill restores from, or None for the primary."""
        self.runs += 1
        due = math.floor(self.runs * self.share) > math.floor((self.runs - 1) * self.share)
        if not (due and self.copies):
            return None
        self.taken += 1
        return self.copies[(self.taken - 1) % len(self.copies)]


def default_actions(config: Config, proof_target: Callable[[], str | None]) -> dict[str, Action]:
    """Return the action of each job the node's schedule names; prove drills the snapshot
    proof_target names (None: the latest)."""
    from drkit.actions import backup, drill, identity, prune, standby, verify

    turns = CopyTurns(
        [copy.name for copy in config.repository.copies], config.schedule.drill_from_copies
    )
    available: dict[str, Action] = {
        "backup": lambda: backup.run(config),
        "prune": lambda: prune.run(config),
        "verify": lambda: verify.run(config),
        "drill": lambda: drill.run(config, from_copy=turns.next()),
        "prove": lambda: drill.prove(config, proof_target() or "latest"),
    }
    if config.identity is not None:
        served = config.identity
        available["identity"] = lambda: identity.check(
            config, served.addresses, protocol=served.protocol, via=served.via
        )
    if config.standby is not None:
        # A passive node follows its source instead of backing itself up (until promote),
        # so it has no snapshots of its own to prove.
        del available["backup"], available["prove"]
        available["standby"] = lambda: standby.sync(config)
    return {name: action for name, action in available.items() if getattr(config.schedule, name)}


def clear_stale_locks(config: Config) -> None:
    """Remove restic locks that provably belong to no live run; log what was done."""
    from drkit.service import context, locks

    try:
        restic = context.restic_for(config.repository, config.restic)
        removed = locks.clear_stale(restic)
        if removed:
            log.warning("removed %d stale restic lock(s)", len(removed))
    except errors.DrkitError as exc:
        log.warning("stale locks not checked: %s", exc.message)


def count_snapshots(config: Config) -> int | None:
    """Return the node's snapshot count (from the signed catalog; restic lists them only when
    it cannot answer), or None when the outage probe fails (before or while they are counted)."""
    from drkit.service import context
    from drkit.service.opening import Catalog, Origin

    repository = config.repository
    try:
        down = context.outage(repository)
        if down:
            raise errors.StorageError(down)
        restic = context.restic_for(repository, config.restic, outage_limit=0)
        with Catalog(Origin.from_config(config), restic) as found_in:
            return len(found_in.node_snapshots(config.node))
    except errors.DrkitError as exc:
        log.warning("snapshots not counted: %s", exc.message)
        return None


class Jobs:
    """Run the node's jobs: each to its end, retried while its errors are transient, recorded
    with the one status recorder (actions.status.record_run) the CLI records with too."""

    def __init__(
        self,
        config: Config,
        actions: dict[str, Action],
        *,
        notifier: notify.Notifier,
        collector: metrics.StatusCollector,
        metrics_out: metrics.Metrics,
        stopping: threading.Event,
        clock: Clock,
        count_snapshots: Callable[[], int | None],
    ):
        self.config = config
        self.actions = actions
        self.notifier = notifier
        self.collector = collector
        self.metrics = metrics_out
        self.stopping = stopping
        self.clock = clock
        self.count_snapshots = count_snapshots
        self.retry_window = config.schedule.retry_window_seconds
        self.runs: dict[str, RunCounts] = {
            job: {"runs": 0, "failed": 0, "last_error": None} for job in actions
        }
        self._running: dict[str, float] = {}
        self._lock = threading.Lock()

    def busy(self) -> list[str]:
        """Return the jobs running now, by name."""
        with self._lock:
            return sorted(self._running)

    def attempts(self, name: str) -> results.Result:
        """Run the job's action, retrying transient errors within the retry window; raise
        Cancelled when the daemon stops before the first attempt."""
        action = self.actions[name]
        attempts = 0

        def attempt() -> results.Result:
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
                clear_stale_locks(self.config)

        def stop_waits(seconds: float) -> None:
            self.stopping.wait(seconds)

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_transient),
            wait=tenacity.wait_exponential(multiplier=1, min=1, max=RETRY_WAIT_MAX_SECONDS),
            stop=tenacity.stop_any(
                tenacity.stop_before_delay(self.retry_window),
                tenacity.stop_when_event_set(self.stopping),
            ),
            sleep=stop_waits,
            before_sleep=before_sleep,
            reraise=True,
        )
        return retrying(attempt)

    def run(
        self, name: str, snapshot_id: str | None = None
    ) -> tuple[Outcome, results.Result | None]:
        """Run one job to its end and record it (status document, metrics, counters, log).
        snapshot_id: the snapshot it is known to run on before it runs (a proof's).

        Return the status entry of the run ({} when cancelled before it began) and the action's
        result (None when it failed). Never raises: a failing job never stops the daemon.
        """
        output.log_job(name)
        started = self.clock.now()
        began = self.clock.monotonic()
        with self._lock:
            self._running[name] = began
        log.info("%s started", name)
        result: results.Result | None = None
        error: errors.DrkitError | None = None
        try:
            result = self.attempts(name)
        except Cancelled:
            log.info("%s cancelled: the daemon is stopping", name)
            with self._lock:
                self._running.pop(name, None)
            output.log_job(None)
            return Outcome(), None
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
        duration = self.clock.monotonic() - began
        outcome = recorder.record_run(
            self.config,
            name,
            started,
            duration,
            result=result,
            error=error,
            count_snapshots=self.count_snapshots,
            snapshot_id=snapshot_id,
        )
        ok = bool(outcome["ok"])
        self.collector.count_run(name, ok)
        self.metrics.write_textfile()
        with self._lock:
            self._running.pop(name, None)
            counts = self.runs[name]
            counts["runs"] += 1
            if not ok:
                counts["failed"] += 1
                counts["last_error"] = outcome["error"]
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
                event=None if ok else FAILURE_EVENTS.get(name),
            )
        return outcome, result
