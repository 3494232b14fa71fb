"""The outage probe, the disk check, stoppable commands and the daemon's outage watch, against a
refusing 127.0.0.1 port and real alert receivers (no S3 needed)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from daemons import Recorder, offline_config

from drkit import config, daemon, runner, timing
from drkit.engines import outage, s3
from drkit.service import context


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    """Credentials in the environment, so boto3 never looks for others (no metadata service)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNITTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_the_probe_names_an_unreachable_s3_at_once_and_remembers_since_when(tmp_path: Path):
    repository = offline_config(tmp_path).repository
    probe = outage.OutageProbe(repository)
    started = time.monotonic()
    reason = probe.check()
    assert reason and "unreachable" in reason and "connection refused" in reason
    assert time.monotonic() - started < s3.PROBE_CONNECT_SECONDS + s3.PROBE_READ_SECONDS
    assert probe.check() == reason  # a probe just made answers for the next caller
    assert probe.failing_for() >= 0
    assert probe.watch(3600)() is None  # not failing for an hour yet
    assert probe.watch(0)().startswith("S3 failed every probe for")
    assert outage.outage_probe(repository) is outage.outage_probe(repository)


def test_a_stoppable_command_is_stopped_and_one_that_ends_well_stands(monkeypatch):
    monkeypatch.setattr(runner, "STOP_CHECK_SECONDS", 0.05)
    started = time.monotonic()
    with pytest.raises(runner.Stopped, match="S3 down"):
        runner.run(["sleep", "30"], stop_when=lambda: "S3 down")
    assert time.monotonic() - started < 15
    done = runner.run(["echo", "hi"], stop_when=lambda: None)
    assert done.returncode == 0 and done.stdout == "hi\n"


def test_the_disk_check_names_a_state_directory_that_cannot_be_written(tmp_path: Path):
    assert context.disk_problem(tmp_path / "state") is None
    assert list((tmp_path / "state").iterdir()) == []  # the probe file is removed
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    problem = context.disk_problem(blocked / "state")
    assert problem and "not writable" in problem and str(blocked) in problem


def test_the_outage_watch_alerts_once_per_outage_without_any_run(
    tmp_path: Path, recorder: Recorder
):
    secret = tmp_path / "hook.secret"
    secret.write_text("s\n")
    secret.chmod(0o600)
    configuration = offline_config(
        tmp_path,
        notify=config.Notify(
            ping=config.Ping(url=recorder.url + "/ping"),
            webhook=config.Webhook(url=recorder.url + "/hook", secret_file=secret),
        ),
        schedule=config.ScheduleConfig(backup="every 1h", retry_window="10m"),
    )
    now = [1000.0]
    clock = timing.Clock(monotonic=lambda: now[0])
    watcher = daemon.Daemon(configuration, actions={"backup": dict}, clock=clock).outage
    assert watcher.after == daemon.OUTAGE_ALERT_AFTER_MAX  # capped: 10m is too long
    assert watcher.every == daemon.OUTAGE_CHECK_SECONDS_MAX
    watcher.check()
    now[0] += watcher.after - 1
    watcher.check()
    assert recorder.paths() == [], "not alerted before the outage has lasted outage_after"
    now[0] += 1
    watcher.check()
    watcher.check()
    assert recorder.paths() == ["/ping/fail", "/hook"], "one alert per outage"
    assert b"unreachable" in recorder.requests[0][3]
    hook = json.loads(recorder.requests[1][3])
    assert hook["event"] == "outage" and hook["ok"] is False and hook["job"] == "backup"
    watcher.rearm()  # a good run's success ping: a later check alerts again
    watcher.check()
    assert recorder.paths().count("/ping/fail") == 2
