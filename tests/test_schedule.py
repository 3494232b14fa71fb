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
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("5-7", "sun,fri,sat"),
        ("*/2", "sun,tue,thu,sat"),
        ("1-5/2", "mon,wed,fri"),
        ("0,6", "sun,sat"),
        ("mon-fri", "mon-fri"),
        ("*", "*"),
    ],
)
def test_cron_day_of_week_means_what_crontab_means(field, expected):
    assert schedule.cron_day_of_week(field) == expected


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
