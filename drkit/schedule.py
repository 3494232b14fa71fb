"""Schedule lines: one parser, used by the config validator and by the daemon that runs them.

A line is `every N[smhd]` or a 5-field crontab line read in UTC with crontab(5)'s meaning:
day-of-week 0 and 7 are both Sunday. APScheduler 3 numbers days 0 = Monday (its documented
historical mismatch: `CronTrigger.from_crontab("0 4 * * 0")` runs on Mondays and refuses 7), so
day numbers become day names before the trigger is built; names mean the same to both.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from drkit.config import parse_duration

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_EVERY = re.compile(r"^every\s+(\d+\s*[smhd])$")
_DAY_PART = re.compile(r"^(\*|\d+|\d+-\d+)(?:/(\d+))?$")


def cron_day_of_week(field: str) -> str:
    """Given a crontab day-of-week field (0 or 7 = Sunday), return it in APScheduler 3's day
    names; raise ValueError when a number is out of 0-7. Fields without numbers pass as they are.
    """
    if not any(character.isdigit() for character in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        match = _DAY_PART.match(part)
        if not match:
            raise ValueError(f"day of week {field!r}: {part!r} is not N, N-M, * or one with /STEP")
        base, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"day of week {field!r}: step {step} is not 1 or more")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            first_text, last_text = base.split("-", 1)
            first, last = int(first_text), int(last_text)
        else:
            first = int(base)
            last = first if not step_text else 6
        if not (0 <= first <= 7 and 0 <= last <= 7):
            raise ValueError(f"day of week {field!r} is out of range 0-7 (0 and 7 are Sunday)")
        if first > last:
            raise ValueError(f"day of week {field!r}: range {base} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(_DAY_NAMES[day] for day in sorted(days))


class GridIntervalTrigger(IntervalTrigger):
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
        return super().get_next_fire_time(previous_fire_time, now)


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
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"{line!r} is neither a 5-field cron line (minute hour day month weekday) "
            "nor 'every N[smhd]'"
        )
    minute, hour, day, month, day_of_week = fields
    try:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=cron_day_of_week(day_of_week),
            timezone=UTC,
            jitter=jitter_seconds,
        )
    except ValueError as exc:
        raise ValueError(f"{line!r} is not a valid cron line: {exc}") from None
