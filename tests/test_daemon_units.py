"""The daemon's parts without S3: schedules, error classes, status judgement, alerts, metrics.

Alerts and metrics go through real HTTP servers on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemons import Recorder, offline_config
from nodes import refusing_port

from drkit import config, daemon, errors, model
from drkit.daemon import jobs, watch
from drkit.engines import metrics, notify, status

# Schedule lines (crontab's day numbers, 'every N'): tests/test_schedule.py.


def test_a_share_of_scheduled_drills_restores_from_the_copies_in_turn():
    every_fourth = jobs.CopyTurns(["offsite", "vault"], 0.25)
    assert [every_fourth.next() for _ in range(12)] == [
        None, None, None, "offsite", None, None, None, "vault", None, None, None, "offsite",
    ]  # fmt: skip
    assert [jobs.CopyTurns(["offsite"], 1.0).next() for _ in range(3)] == ["offsite"] * 3
    never, no_copies = jobs.CopyTurns(["offsite"], 0.0), jobs.CopyTurns([], 0.5)
    assert {never.next() for _ in range(10)} | {no_copies.next() for _ in range(10)} == {None}


def test_transient_and_fatal_errors():
    assert daemon.is_transient(errors.StorageError("S3 endpoint x unreachable: refused"))
    assert daemon.is_transient(errors.Busy("locked"))
    assert daemon.is_transient(errors.ResticFailed("restic failed (exit 1)"))
    assert not daemon.is_transient(errors.RepositoryMissing("no restic repository"))
    assert not daemon.is_transient(errors.AuthenticationError("wrong repository password"))
    assert not daemon.is_transient(errors.StorageError("bucket b does not exist at x"))
    assert not daemon.is_transient(errors.BackupIncomplete("some files unreadable"))
    assert not daemon.is_transient(errors.ConfigError("bad"))


# -- status judgement ------------------------------------------------------------------------

OBJECTIVES = {"rpo_seconds": 60, "rto_seconds": 600}
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _document(good_age: float | None) -> dict:
    good = None
    if good_age is not None:
        good = {"time": model.utc_text(NOW - timedelta(seconds=good_age)), "snapshot_id": "ab"}
    return {
        "node": "n",
        "updated": model.utc_text(NOW),
        "objectives": OBJECTIVES,
        "last_good_backup": good,
        "last_backup": {"ok": True, "time": good and good["time"]},
    }


def test_a_missing_status_document_is_breached():
    entry = status.evaluate(None, node="n", now=NOW, default_objectives=OBJECTIVES)
    assert entry["rpo_ok"] is False and entry["age_seconds"] is None
    assert "no status document" in entry["problems"][0]


def test_rpo_is_judged_on_the_last_good_backup():
    fresh = status.evaluate(_document(30), node="n", now=NOW, default_objectives=OBJECTIVES)
    assert fresh["rpo_ok"] is True and fresh["age_seconds"] == 30
    old = status.evaluate(_document(61), node="n", now=NOW, default_objectives=OBJECTIVES)
    assert old["rpo_ok"] is False and "over the RPO" in old["problems"][0]
    never = status.evaluate(_document(None), node="n", now=NOW, default_objectives=OBJECTIVES)
    assert never["rpo_ok"] is False


def test_a_status_from_the_future_is_breached():
    entry = status.evaluate(_document(-3600), node="n", now=NOW, default_objectives=OBJECTIVES)
    assert entry["rpo_ok"] is False and "clock" in entry["problems"][0]


# -- alerts ----------------------------------------------------------------------------------


def test_webhook_is_signed_and_pings_follow_the_outcome(tmp_path: Path, recorder: Recorder):
    secret = tmp_path / "hook.secret"
    secret.write_text("s3cr3t-value\n")
    secret.chmod(0o600)  # secret files readable by others are refused
    settings = config.Notify(
        webhook=config.Webhook(url=recorder.url + "/hook", secret_file=secret),
        ping=config.Ping(url=recorder.url + "/ping/abc", jobs={"prune": recorder.url + "/p2"}),
    )
    notifier = notify.Notifier(settings, "sftp-1")
    notifier.start("backup")
    assert notifier.finish("backup", ok=True, snapshot_id="f00d") == {"ping": True, "webhook": True}
    notifier.start("prune")
    notifier.finish("prune", ok=False, error="S3 endpoint unreachable\nsecond line")
    notifier.start("verify")  # no ping URL for verify: nothing sent

    assert recorder.paths() == [
        "/ping/abc/start",
        "/ping/abc",
        "/hook",
        "/p2/start",
        "/p2/fail",
        "/hook",
    ]
    _, _, _, fail_body = recorder.requests[4]
    assert fail_body == b"S3 endpoint unreachable"
    for _, path, headers, body in recorder.requests:
        if path != "/hook":
            continue
        expected = hmac.new(b"s3cr3t-value", body, hashlib.sha256).hexdigest()
        assert headers["X-Drkit-Signature"] == f"sha256={expected}"
        document = json.loads(body)
        assert set(document) == {"event", "job", "node", "ok", "time", "snapshot_id", "error"}
    first, second = (json.loads(r[3]) for r in recorder.requests if r[1] == "/hook")
    assert first["ok"] is True and first["snapshot_id"] == "f00d" and first["job"] == "backup"
    assert second["ok"] is False and second["error"].startswith("S3 endpoint unreachable")


def test_an_unreachable_alert_endpoint_never_raises(tmp_path: Path):
    url = f"http://127.0.0.1:{refusing_port()}"
    settings = config.Notify(webhook=config.Webhook(url=url), ping=config.Ping(url=url))
    delivered = notify.Notifier(settings, "n").finish("backup", ok=False, error="x")
    assert delivered == {"ping": False, "webhook": False}


def test_a_webhook_the_endpoint_refuses_twice_is_retried_until_taken(
    tmp_path: Path, recorder: Recorder, caplog: pytest.LogCaptureFixture
):
    recorder.failures = 2
    settings = config.Notify(webhook=config.Webhook(url=recorder.url + "/hook"))
    notifier = notify.Notifier(settings, "sftp-1")
    with caplog.at_level("WARNING", logger="drkit.engines.notify"):
        assert notifier.webhook("failed", "backup", ok=False, error="down") is True
    assert recorder.paths() == ["/hook"] * 3
    assert len({body for *_, body in recorder.requests}) == 1  # the same signed body each time
    failed = [record.getMessage() for record in caplog.records]
    assert failed == [
        f"alert to {recorder.url} failed (attempt 1): HTTP 503",
        f"alert to {recorder.url} failed (attempt 2): HTTP 503",
    ]


def test_a_ping_the_endpoint_keeps_refusing_gives_up_after_the_attempts(recorder: Recorder):
    recorder.failures = 100
    settings = config.Notify(ping=config.Ping(url=recorder.url + "/ping"))
    assert notify.Notifier(settings, "sftp-1").finish("backup", ok=True) == {"ping": False}
    assert recorder.paths() == ["/ping"] * notify.ATTEMPTS


# -- a daemon's run, with its actions replaced -----------------------------------------------


def test_a_failed_run_sends_fail_never_success_and_a_transient_error_is_retried(
    tmp_path: Path, recorder: Recorder
):
    configuration = offline_config(
        tmp_path,
        notify=config.Notify(
            webhook=config.Webhook(url=recorder.url + "/hook"),
            ping=config.Ping(url=recorder.url + "/ping"),
        ),
        schedule=config.ScheduleConfig(backup="every 2s", retry_window="5s"),
    )
    calls = {"count": 0}

    def flaky() -> dict:
        calls["count"] += 1
        if calls["count"] < 3:
            raise errors.StorageError("S3 endpoint http://x unreachable: connection refused")
        return {"ok": True, "snapshot_id": "c0ffee", "time": model.utc_text(datetime.now(UTC))}

    def wrong_password() -> dict:
        calls["count"] += 1
        raise errors.AuthenticationError("wrong repository password")

    runner = daemon.Daemon(
        configuration, actions={"backup": flaky}, count_snapshots=lambda: 1
    )  # no repository here
    outcome = runner.run_job("backup")
    assert outcome["ok"] is True and calls["count"] == 3
    assert recorder.paths() == ["/ping/start", "/ping", "/hook"]

    recorder.requests.clear()
    calls["count"] = 0
    runner.actions["backup"] = wrong_password
    outcome = runner.run_job("backup")
    assert outcome["ok"] is False and calls["count"] == 1  # fatal: no retry
    assert recorder.paths() == ["/ping/start", "/ping/fail", "/hook"]
    assert recorder.requests[1][3] == b"wrong repository password"
    local = status.load_local(configuration)
    assert local["last_backup"]["ok"] is False
    assert local["last_good_backup"]["snapshot_id"] == "c0ffee"
    assert runner.jobs.runs["backup"] == {
        "runs": 2,
        "failed": 1,
        "last_error": "wrong repository password",
    }


def test_a_run_reached_by_the_stop_before_it_began_is_cancelled_not_failed(
    tmp_path: Path, recorder: Recorder
):
    configuration = offline_config(
        tmp_path,
        notify=config.Notify(ping=config.Ping(url=recorder.url + "/ping")),
        schedule=config.ScheduleConfig(backup="every 2s"),
    )
    calls = []
    runner = daemon.Daemon(configuration, actions={"backup": lambda: calls.append(1) or {}})
    runner.request_stop("SIGTERM")
    assert runner.run_job("backup") == {}
    assert calls == [] and recorder.paths() == []
    assert runner.jobs.runs["backup"] == {"runs": 0, "failed": 0, "last_error": None}
    assert runner.jobs.busy() == []


@pytest.mark.timeout(60)  # a 3 s window: the run gives up in seconds, or the test times out
def test_a_run_that_keeps_failing_gives_up_within_the_retry_window(tmp_path: Path):
    configuration = offline_config(
        tmp_path, schedule=config.ScheduleConfig(backup="every 2s", retry_window="3s")
    )

    def down() -> dict:
        raise errors.StorageError("S3 endpoint unreachable: connection refused")

    runner = daemon.Daemon(configuration, actions={"backup": down})
    outcome = runner.run_job("backup")
    assert outcome["ok"] is False
    assert outcome["error_kind"] == "storage"


def test_metrics_and_healthz_tell_the_rpo_truth(tmp_path: Path):
    configuration = offline_config(tmp_path, objectives=config.Objectives(rpo="1m"))
    collector = metrics.StatusCollector(
        "sftp-1", lambda: status.load_local(configuration), status.objectives_of(configuration)
    )
    textfile = tmp_path / "textfile" / "drkit.prom"
    served = metrics.Metrics(collector, textfile)
    host, port = served.serve("127.0.0.1", 0)
    base = f"http://{host}:{port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as unhealthy:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert unhealthy.value.code == 503  # nothing recorded yet: breached, not fine

        now = datetime.now(UTC)
        status.record(
            configuration,
            "backup",
            {
                "time": model.utc_text(now),
                "ok": True,
                "snapshot_id": "ab12",
                "bytes_added": 1234,
                "file_count": 17,
                "duration_seconds": 1.5,
                "error": None,
            },
            snapshots=3,
            upload=False,
        )
        with urllib.request.urlopen(base + "/healthz", timeout=5) as answer:
            assert answer.status == 200 and json.loads(answer.read())["ok"] is True
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
        labels = '{job="backup",node="sftp-1"}'
        assert f"drkit_last_run_ok{labels} 1.0" in text
        assert f"drkit_bytes_added{labels} 1234.0" in text
        assert f"drkit_files{labels} 17.0" in text
        assert f"drkit_snapshots{labels} 3.0" in text
        assert f"drkit_rpo_breached{labels} 0.0" in text
        assert f"drkit_last_success_timestamp_seconds{labels}" in text
        assert f"drkit_seconds_since_last_good_backup{labels}" in text
        served.write_textfile()
        assert "drkit_rpo_breached" in textfile.read_text()

        status.record(
            configuration,
            "backup",
            {"time": model.utc_text(now), "ok": False, "error": "down", "duration_seconds": 1},
            upload=False,
        )
        old = status.load_local(configuration)
        old["last_good_backup"]["time"] = model.utc_text(now - timedelta(minutes=5))
        status.local_path(configuration).write_text(json.dumps(old))
        with pytest.raises(urllib.error.HTTPError) as breached:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert breached.value.code == 503
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
            text = answer.read().decode()
        assert f"drkit_rpo_breached{labels} 1.0" in text
        assert f"drkit_last_run_ok{labels} 0.0" in text
    finally:
        served.close()


def test_metrics_endpoint_serves_prometheus_text_and_404s_other_paths(tmp_path: Path):
    configuration = offline_config(tmp_path)
    collector = metrics.StatusCollector(
        "sftp-1", lambda: status.load_local(configuration), status.objectives_of(configuration)
    )
    served = metrics.Metrics(collector)
    host, port = served.serve("127.0.0.1", 0)
    base = f"http://{host}:{port}"
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as answer:
            assert answer.headers["Content-Type"].startswith("text/plain")
            assert "drkit_rpo_seconds" in answer.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/other", timeout=5)
        assert missing.value.code == 404
        assert b"/metrics or /healthz" in missing.value.read()
    finally:
        served.close()


def test_metrics_address_must_be_an_ip_and_port():
    assert metrics.parse_address("127.0.0.1:9109") == ("127.0.0.1", 9109)
    assert metrics.parse_address("9109") == ("127.0.0.1", 9109)
    with pytest.raises(errors.UsageError):
        metrics.parse_address("localhost:x")


def scheduled(runner: daemon.Daemon, trigger, done: threading.Event, timeout: float, why: str):
    """Schedule the runner's backup job on trigger, due at once, run the scheduler until done
    is set (failing with why after timeout seconds), then shut it down."""
    runner.scheduler.add_job(
        runner.run_job, trigger, args=["backup"], id="backup", next_run_time=datetime.now(UTC)
    )
    runner.scheduler.start()
    try:
        assert done.wait(timeout), why
    finally:
        runner.scheduler.shutdown(wait=True)


# -- quiet logs ------------------------------------------------------------------------------


def test_runs_skipped_while_a_long_run_runs_are_one_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from apscheduler.events import EVENT_JOB_EXECUTED, EVENT_JOB_MAX_INSTANCES
    from apscheduler.triggers.interval import IntervalTrigger

    caplog.set_level(logging.DEBUG)
    configuration = offline_config(tmp_path, schedule=config.ScheduleConfig(backup="every 1s"))
    skips = threading.Semaphore(0)
    calls = []

    def slow() -> dict:
        calls.append(1)
        if len(calls) == 1:  # the long run: it lasts until 3 scheduled runs were skipped
            for _ in range(3):
                assert skips.acquire(timeout=60), "APScheduler skipped no run"
        return {"ok": True, "snapshot_id": "c0ffee", "time": model.utc_text(datetime.now(UTC))}

    runner = daemon.Daemon(
        configuration, actions={"backup": slow}, count_snapshots=lambda: 1
    )  # no repository here
    runner.scheduler.add_listener(lambda event: skips.release(), EVENT_JOB_MAX_INSTANCES)
    finished = threading.Event()
    runner.scheduler.add_listener(lambda event: finished.set(), EVENT_JOB_EXECUTED)
    scheduled(runner, IntervalTrigger(seconds=1, timezone=UTC), finished, 120,
              "the long run never finished")  # fmt: skip
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warnings if "maximum number of running" in r.getMessage()]
    lines = [r for r in caplog.records if "skipped while it ran" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.INFO and lines[0].name == "drkit.daemon"
    message = lines[0].getMessage()
    assert re.fullmatch(
        r"backup: run of \d\d:\d\d:\d\d finished; (\d+) scheduled runs skipped while it ran",
        message,
    ), message
    assert int(re.search(r"; (\d+) scheduled", message).group(1)) >= 3


# -- background retry ------------------------------------------------------------------------


def test_a_failed_backup_is_brought_forward_doubling_up_to_ten_minutes_by_the_clock():
    from drkit.daemon import scheduler
    from drkit.timing import Clock

    now = [datetime(2026, 12, 7, 12, 0, tzinfo=UTC)]
    runs = scheduler.new_scheduler()
    runs.add_job(print, "interval", hours=1, id="backup", next_run_time=now[0] + timedelta(hours=1))
    retry = scheduler.BackgroundRetry(runs, Clock(now=lambda: now[0]))
    stopping = threading.Event()
    delays = []
    for _ in range(7):
        retry.after(False, stopping)
        delays.append(runs.get_job("backup").next_run_time - now[0])
        runs.get_job("backup").modify(next_run_time=now[0] + timedelta(hours=1))
    assert [delay.total_seconds() for delay in delays] == [30, 60, 120, 240, 480, 600, 600]
    retry.after(True, stopping)  # a good backup: the next failure starts at 30 s again
    retry.after(False, stopping)
    assert runs.get_job("backup").next_run_time - now[0] == timedelta(seconds=30)


@pytest.mark.timeout(60)
def test_a_background_retry_is_not_lost_to_a_slow_end_of_the_failed_run(
    tmp_path: Path, monkeypatch
):
    """A failed backup's retry is due BACKGROUND_RETRY_MIN after the failure; what the run
    still does after it (the RPO watch, whose webhook to an endpoint that does not answer takes
    up to 3 x 10 s + 1.5 s, more than the 30 s; the fleet page) must not hold the job's one
    instance when the retry comes due, or APScheduler skips the retry and the backup waits for
    its schedule, an hour here. The tail lasts until the retry has run (5 s at most), the
    retry is due 0.5 s after the failure."""
    from drkit.schedule import trigger_for

    monkeypatch.setattr(daemon.scheduler, "BACKGROUND_RETRY_MIN", timedelta(seconds=0.5))
    configuration = offline_config(
        tmp_path,
        schedule=config.ScheduleConfig(
            backup="every 1h", prune=None, verify=None, drill=None, retry_window="1s"
        ),
    )
    calls, retried = [], threading.Event()

    def backup() -> dict:
        calls.append(1)
        if len(calls) == 1:
            raise errors.AuthenticationError("wrong repository password")
        retried.set()
        return {"ok": True, "snapshot_id": "c0ffee", "time": model.utc_text(datetime.now(UTC))}

    runner = daemon.Daemon(
        configuration, actions={"backup": backup}, count_snapshots=lambda: 1
    )  # no repository here

    class SlowBreachWatch(watch.BreachWatch):
        def check(self) -> None:
            super().check()
            if len(calls) == 1:
                retried.wait(5)

    runner.breach = SlowBreachWatch(runner.notifier, runner.collector, runner.metrics)
    scheduled(runner, trigger_for("every 1h"), retried, 15,
              "the background retry was skipped: the failed run still ran")  # fmt: skip
    assert status.load_local(configuration)["last_backup"]["ok"] is True
