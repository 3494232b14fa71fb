"""What the daemon watches between runs: the outage of its repository or state directory, and
the node entering or leaving RPO breach (backed up, and proven)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from drkit import output, units
from drkit.config import Config
from drkit.engines import metrics, notify
from drkit.timing import Clock

log = logging.getLogger("drkit.daemon")

OUTAGE_ALERT_AFTER_MAX = 120.0  # + one check interval + one probe stays well under 3 minutes
OUTAGE_CHECK_SECONDS_MAX = 10.0


def outage_problem(config: Config) -> str | None:
    """Return why the repository or the state directory is unusable now, or None."""
    from drkit.service import context

    return context.outage(config.repository) or context.disk_problem(config.state_dir)


class OutageWatch:
    """Probe the repository (one short S3 request) and the state directory every `every`
    seconds, run or no run: once they have failed for `after` seconds, send a fail ping and an
    `outage` webhook (once per outage), and `outage_over` when they pass again."""

    def __init__(
        self,
        notifier: notify.Notifier,
        job: str,
        retry_window: float,
        clock: Clock,
        probe: Callable[[], str | None],
    ):
        self.notifier = notifier
        self.job = job  # the job whose pings report the outage: backup, or a standby's sync
        self.clock = clock
        self.probe = probe
        self.after = min(retry_window, OUTAGE_ALERT_AFTER_MAX)
        self.every = min(OUTAGE_CHECK_SECONDS_MAX, max(1.0, self.after / 4))
        self._since: float | None = None
        self._alerted = False
        self._lock = threading.Lock()

    def check(self) -> None:
        """Probe once; alert when the outage has lasted `after` seconds, or when it is over."""
        problem = self.probe()
        now = self.clock.monotonic()
        alert, over = None, False
        with self._lock:
            if problem is None:
                over, self._alerted = self._alerted, False
                self._since = None
            else:
                self._since = self._since if self._since is not None else now
                lasted = now - self._since
                if lasted >= self.after and not self._alerted:
                    self._alerted = True
                    alert = f"{problem} (for {units.duration(lasted)})"
        if alert:
            log.error("outage: %s", alert)
            self.notifier.finish(self.job, ok=False, error=alert, event="outage")
        elif over:
            log.info("outage over: the repository and the state directory answer again")
            self.notifier.webhook("outage_over", self.job, ok=True)

    def rearm(self) -> None:
        """A good run's success ping went out: alert again if the outage goes on."""
        with self._lock:
            self._alerted = False

    def loop(self, stopping: threading.Event) -> None:
        """Check every `every` seconds until stopping is set."""
        output.log_job("outage")
        while not stopping.wait(self.every):
            try:
                self.check()
            except Exception:  # the watch must outlive a bug in one check
                log.exception("outage check crashed")


class BreachWatch:
    """Refresh the metrics textfile and alert when the node enters or leaves RPO breach: by its
    last good backup (`rpo_breached`, `rpo_restored`), and, proving, by its newest proven
    snapshot (`proven_rpo_breached`, `proven_rpo_ok`). The first check sets the baseline."""

    def __init__(
        self,
        notifier: notify.Notifier,
        collector: metrics.StatusCollector,
        metrics_out: metrics.Metrics,
    ):
        self.notifier = notifier
        self.collector = collector
        self.metrics = metrics_out
        self._breached: bool | None = None
        self._proven_breached: bool | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        """Evaluate the status document now; alert on each change of breach."""
        with self._lock:
            entry = self.collector.evaluate()
            self.metrics.write_textfile()
            breached = bool(entry["proven_rpo_breached"])
            if self._proven_breached is not None and breached != self._proven_breached:
                problem = next(
                    (text for text in entry["problems"] if text.startswith("newest proven")), None
                )
                self._alert(
                    breached,
                    ("proven_rpo_breached", f"proven RPO breached: {problem}"),
                    ("proven_rpo_ok", "newest proven snapshot within the RPO again"),
                    job="prove",
                    error=problem if breached else None,
                    snapshot_id=entry["proven_snapshot_id"],
                )
            self._proven_breached = breached
            breached = not entry["rpo_ok"]
            good = entry["last_good_backup"]
            if self._breached is not None and breached != self._breached:
                problems = "; ".join(entry["problems"])
                self._alert(
                    breached,
                    ("rpo_breached", f"RPO breached: {problems}"),
                    ("rpo_restored", "within RPO again"),
                    job="backup",
                    error=problems or None,
                    snapshot_id=good["snapshot_id"] if good else None,
                )
            self._breached = breached

    def _alert(
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
