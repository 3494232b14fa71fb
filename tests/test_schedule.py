"""Schedule lines: the config validator and the daemon read them with one parser, crontab's way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from drkit import config, schedule

MONDAY = datetime(2026, 11, 30, tzinfo=UTC)  # a Monday, 00:00 UTC


def fire_times(line: str, count: int) -> list[datetime]:
    trigger = schedule.trigger_for(line)
    times, previous, now = [], None, MONDAY
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        times.append(previous)
        now = previous + timedelta(seconds=1)
    return times


@pytest.mark.parametrize("line", ["0 4 * * 7", "0 4 * * 0", "0 4 * * sun"])
def test_sunday_as_0_7_or_sun_fires_on_sunday_at_four_utc(line):
    fires = fire_times(line, 3)
    assert [fire.strftime("%A %H:%M") for fire in fires] == ["Sunday 04:00"] * 3
    assert fires[0] == datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


def test_one_to_five_is_monday_to_friday():
    fires = fire_times("0 4 * * 1-5", 7)
    assert [fire.strftime("%a") for fire in fires] == [
        "Mon",
        "Tue",
        "Wed",
        "Thu",
        "Fri",
        "Mon",
        "Tue",
    ]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("0", ["Sun"]),
        ("7", ["Sun"]),
        ("1-5", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("5-7", ["Fri", "Sat", "Sun"]),
        ("*/2", ["Tue", "Thu", "Sat", "Sun"]),
        ("1-5/2", ["Mon", "Wed", "Fri"]),
        ("0,6", ["Sat", "Sun"]),
        ("mon-fri", ["Mon", "Tue", "Wed", "Thu", "Fri"]),
        ("*", ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]),
    ],
)
def test_day_of_week_means_what_crontab_means(field, expected):
    fires = fire_times(f"0 4 * * {field}", len(expected))
    assert [fire.strftime("%a") for fire in fires] == expected  # one week from a Monday
    assert all(fire.hour == 4 and fire.minute == 0 for fire in fires)


def test_a_run_missed_is_the_next_one_asked_for_as_with_apscheduler():
    trigger = schedule.trigger_for("0 4 * * *")
    first = trigger.get_next_fire_time(None, MONDAY + timedelta(hours=4))  # at its slot: fires
    assert first == MONDAY + timedelta(hours=4)
    late = MONDAY + timedelta(days=3)  # the scheduler asks late: the missed run comes first
    assert trigger.get_next_fire_time(first, late) == MONDAY + timedelta(days=1, hours=4)


def test_every_line_is_an_interval():
    trigger = schedule.trigger_for("every 2s")
    first = trigger.get_next_fire_time(None, MONDAY)
    assert trigger.get_next_fire_time(first, first) - first == timedelta(seconds=2)


LINES = [
    ("*/15 * * * *", True),
    ("0 4 * * 7", True),
    ("0 4 * * 0", True),
    ("0 4 * * 1-5", True),
    ("30 3 * * *", True),
    ("0 5 1 * *", True),
    ("0 4 * * mon-fri", True),
    ("every 30s", True),
    ("every 2h", True),
    ("0 4 * * 8", False),
    ("0 4 * * 5-1", False),
    ("61 * * * *", False),
    ("0 25 * * *", False),
    ("0 4 * *", False),
    ("0 4 * * * *", False),
    ("every 0s", False),
    ("every day", False),
    ("daily", False),
    ("0 4 * * x", False),
]


@pytest.mark.parametrize(("line", "valid"), LINES)
def test_validation_and_scheduling_give_the_same_answer(line, valid):
    try:
        schedule.trigger_for(line)
        scheduled = True
    except ValueError as exc:
        assert repr(line) in str(exc)  # the message names the line
        scheduled = False
    try:
        config.ScheduleConfig(verify=line)
        validated = True
    except ValueError:
        validated = False
    assert (scheduled, validated) == (valid, valid)


def test_a_refused_line_names_the_field_and_the_line(tmp_path):
    text = (
        "node: sftp-1\nservers: [openssh]\nsigning_key: /k\n"
        "repository: {s3_endpoint: 'http://s3', bucket: dr-b, prefix: p, password_file: /p}\n"
        "schedule: {verify: '0 4 * * 8'}\n"
    )
    with pytest.raises(config.errors.ConfigError) as refused:
        config.parse_config(text, "drkit.yaml")
    assert "schedule.verify" in refused.value.message
    assert "'0 4 * * 8'" in refused.value.message


# -- jitter: each run delayed by at most schedule.jitter past its own slot --------------------


@pytest.fixture
def seeded(monkeypatch):
    """APScheduler draws a trigger's jitter with random.uniform: draw it from a seeded
    generator, so the fire times below are the same on every run."""
    import random

    generator = random.Random(16)
    monkeypatch.setattr(random, "uniform", generator.uniform)


def chained(trigger, count: int, now: datetime, previous: datetime | None = None) -> list:
    """Return count fire times as the scheduler computes them: each from the previous one,
    asked at the moment it fires."""
    fires = []
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        fires.append(previous)
        now = previous
    return fires


def test_interval_jitter_delays_each_run_within_its_own_slot(seeded):
    trigger = schedule.trigger_for("every 10m", "1m")
    start = trigger.start_date
    fires = chained(trigger, 50, start)
    delays = [
        (fire - (start + n * timedelta(minutes=10))).total_seconds() for n, fire in enumerate(fires)
    ]
    assert all(0 <= delay <= 60 for delay in delays), delays  # jitters never add up
    assert len(set(delays)) == 50 and min(delays) < 15 and max(delays) > 45, delays
    period = (fires[-1] - fires[0]) / 49
    assert abs(period - timedelta(minutes=10)) <= timedelta(seconds=60 / 49)


def test_the_first_run_after_a_catch_up_run_is_on_the_grid_with_its_jitter(seeded):
    trigger = schedule.trigger_for("every 10m", "1m")
    start = trigger.start_date
    catch_up = start - timedelta(minutes=10)  # the daemon's catch-up runs at once, before it
    fires = chained(trigger, 3, catch_up, previous=catch_up)
    for n, fire in enumerate(fires):
        assert timedelta(0) <= fire - (start + n * timedelta(minutes=10)) <= timedelta(minutes=1)


def test_cron_jitter_delays_each_run_within_the_jitter(seeded):
    trigger = schedule.trigger_for("0 4 * * *", "10m")
    fires = chained(trigger, 20, MONDAY)
    delays = []
    for n, fire in enumerate(fires):
        slot = MONDAY + timedelta(days=n, hours=4)
        delays.append((fire - slot).total_seconds())
    assert all(0 <= delay <= 600 for delay in delays), delays
    assert len(set(delays)) == 20 and max(delays) > 300, delays


def test_without_jitter_runs_are_exactly_on_their_slots():
    trigger = schedule.trigger_for("every 10m")
    start = trigger.start_date
    assert chained(trigger, 5, start) == [start + n * timedelta(minutes=10) for n in range(5)]
    assert chained(schedule.trigger_for("30 3 * * *"), 3, MONDAY) == [
        MONDAY + timedelta(days=n, hours=3, minutes=30) for n in range(3)
    ]


def test_the_daemon_schedules_each_job_with_the_configured_jitter(tmp_path, seeded):
    from daemons import offline_config

    from drkit import daemon

    settings = config.ScheduleConfig(
        backup="every 10m", prune="30 3 * * *", verify=None, drill=None, jitter="90s"
    )
    runner = daemon.Daemon(
        offline_config(tmp_path, schedule=settings),
        actions={"backup": dict, "prune": dict},
    )
    runner.schedule()
    backup, prune = runner.scheduler.get_job("backup"), runner.scheduler.get_job("prune")
    assert backup.trigger.jitter == 90 and prune.trigger.jitter == 90
    start = backup.trigger.start_date
    for n, fire in enumerate(chained(backup.trigger, 10, start)):
        assert timedelta(0) <= fire - (start + n * timedelta(minutes=10)) <= timedelta(seconds=90)
    for n, fire in enumerate(chained(prune.trigger, 5, MONDAY)):
        slot = MONDAY + timedelta(days=n, hours=3, minutes=30)
        assert timedelta(0) <= fire - slot <= timedelta(seconds=90)
    assert runner.scheduler.get_job("watch").trigger.jitter is None  # only the schedule lines
