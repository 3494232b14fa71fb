"""The daemon's scheduler: APScheduler with one instance per job, missed runs coalesced and
never dropped, the runs skipped while a long run ran reported once, and a failed backup's
background retry brought forward.

Schedule lines are read by drkit.schedule.trigger_for, the parser the config validator uses
too, so a line the config accepts is a line the daemon runs, with the same meaning.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, JobSubmissionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from drkit.model import utc_text
from drkit.timing import Clock

log = logging.getLogger("drkit.daemon")

BACKGROUND_RETRY_MIN = timedelta(seconds=30)
BACKGROUND_RETRY_MAX = timedelta(minutes=10)
_MAX_INSTANCES_WARNING = "maximum number of running instances reached"


def new_scheduler() -> BackgroundScheduler:
    """Return a stopped scheduler in UTC: at most one instance of a job, missed runs coalesced
    and never dropped for being late (no misfire grace limit)."""
    return BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(max_workers=6)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )


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


class BackgroundRetry:
    """After a failed backup, bring its next run forward: 30 s after the first failure in a
    row, doubling up to 10 min, when its schedule is further away."""

    def __init__(self, scheduler: BackgroundScheduler, clock: Clock):
        self.scheduler = scheduler
        self.clock = clock
        self.failures_in_a_row = 0

    def after(self, ok: bool, stopping: threading.Event) -> None:
        """Count a backup's outcome; after a failure, reschedule its job sooner."""
        if ok:
            self.failures_in_a_row = 0
            return
        self.failures_in_a_row += 1
        if stopping.is_set():
            return
        delay = min(BACKGROUND_RETRY_MAX, BACKGROUND_RETRY_MIN * 2 ** (self.failures_in_a_row - 1))
        job = self.scheduler.get_job("backup")
        when = self.clock.now() + delay
        if job is not None and job.next_run_time and job.next_run_time > when:
            job.modify(next_run_time=when)
            log.info("backup retried in the background at %s", utc_text(when))
