"""Schedule lines: one parser, used by the config validator and by the daemon that runs them.

A line is `every N[smhd]` or a 5-field crontab line read in UTC with crontab(5)'s meaning,
croniter's: day-of-week 0 and 7 are both Sunday. (APScheduler 3's own CronTrigger numbers days
0 = Monday, its documented historical mismatch: `CronTrigger.from_crontab("0 4 * * 0")` runs on
Mondays and refuses 7; so cron lines are read by croniter here, and only intervals by
APScheduler.)
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import croniter
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from drkit.configtypes import parse_duration

_EVERY = re.compile(r"^every\s+(\d+\s*[smhd])$")
_RANGE = re.compile(r"(\d+)-(\d+)")


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 has no types
    """An APScheduler trigger firing on a 5-field crontab line (UTC), each run delayed by a
    random jitter of at most `jitter` seconds."""

    def __init__(self, line: str, jitter: int | None = None):
        fields = line.split()
        if len(fields) != 5:
            raise ValueError(
                f"{line!r} is neither a 5-field cron line (minute hour day month weekday) "
                "nor 'every N[smhd]'"
            )
        for field in fields:
            # croniter wraps a backwards range around (5-1: Friday to Monday); crontab refuses it
            for first, last in _RANGE.findall(field):
                if int(first) > int(last):
                    raise ValueError(f"{line!r} is not a valid cron line: {field!r} runs backwards")
        try:
            croniter.croniter(line)
        except (croniter.CroniterError, ValueError) as exc:
            raise ValueError(f"{line!r} is not a valid cron line: {exc}") from None
        self.line = line
        self.jitter = jitter

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # as APScheduler's CronTrigger: the first slot after the previous run (a missed one
        # included: the scheduler coalesces it), else the first at or after now
        if previous_fire_time is not None:
            base = previous_fire_time.astimezone(UTC)
        else:
            base = now.astimezone(UTC) - timedelta(microseconds=1)
        slot: datetime = croniter.croniter(self.line, base).get_next(datetime)
        jittered: datetime = self._apply_jitter(slot, self.jitter, now)
        return jittered

    def __str__(self) -> str:
        return f"cron[{self.line}]"


class GridIntervalTrigger(IntervalTrigger):  # type: ignore[misc]  # APScheduler 3 has no types
    """An IntervalTrigger whose jitter delays each run past its own slot of the interval grid.

    APScheduler 3's IntervalTrigger adds the interval to the previous (jittered) fire time, so
    the jitters add up: `every 10m` with a 1 min jitter drifts minutes off its grid within an
    hour, and runs on average every 10.5 min. Here the previous fire time is first brought
    back to the grid slot it was drawn from, so the n-th run is at most one jitter after
    start + n x interval, as with a cron line.
    """

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None and self.jitter and previous_fire_time >= self.start_date:
            # (a run before the grid, the daemon's catch-up, is followed as APScheduler would;
            # +1 ms: a run drawn on its slot, rounded to microseconds, stays in that slot)
            elapsed = (previous_fire_time - self.start_date).total_seconds() + 0.001
            slot = math.floor(elapsed / self.interval_length)
            previous_fire_time = self.start_date + timedelta(seconds=slot * self.interval_length)
        fire: datetime | None = super().get_next_fire_time(previous_fire_time, now)
        return fire


def trigger_for(line: str, jitter: str | None = None) -> BaseTrigger:
    """Given a schedule line ('every 30s' or 5-field cron, UTC) and an optional jitter
    duration, return the APScheduler trigger that runs it; raise ValueError, naming the line,
    when it is neither."""
    text = str(line).strip()
    jitter_seconds = int(parse_duration(jitter).total_seconds()) if jitter else None
    every = _EVERY.match(text)
    if every:
        seconds = parse_duration(every.group(1).replace(" ", "")).total_seconds()
        if seconds <= 0:
            raise ValueError(f"{line!r}: an interval must be longer than 0 s")
        return GridIntervalTrigger(seconds=seconds, jitter=jitter_seconds, timezone=UTC)
    return CrontabTrigger(text, jitter_seconds)
