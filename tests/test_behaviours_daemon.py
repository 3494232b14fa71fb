"""Documented daemon behaviour: SIGTERM while a job runs (--stop-timeout, then restic is
interrupted, and killed when it does not react), against real restic and SeaweedFS."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from daemons import DaemonProcess, local_status
from nodes import Node, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_node(node_root: Path, s3_repository) -> Node:
    """A node whose backup is slow enough (a 300 MB random log) to be caught mid-way."""
    made = Node(node_root, s3_repository, big_file_mb=300)
    made.settings(
        schedule={"backup": "every 1h", "prune": None, "verify": None, "drill": None},
        objectives={"rpo": "1m", "rto": "10m"},  # no good backup yet: a catch-up backup at once
    )
    return made


def restic_backup(daemon: DaemonProcess) -> int:
    """Wait for the daemon's restic backup to start; return its pid."""
    found = wait_for(
        lambda: [pid for pid, argv in daemon.children() if " backup " in argv],
        60,
        "restic backup under the daemon",
        step=0.05,
    )
    return found[0]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.mark.timeout(240)
def test_sigterm_interrupts_a_running_backup_after_the_stop_timeout(slow_node: Node):
    daemon = DaemonProcess(slow_node, stop_timeout=1)
    try:
        pid = restic_backup(daemon)
        code = daemon.stop(signal.SIGTERM, timeout=120)
    finally:
        daemon.close()
    assert code == 0, daemon.log.read_text()[-3000:]
    assert not alive(pid), "restic outlived the daemon"
    summary = json.loads(daemon.out.read_text())
    assert summary["stopped_by"] == "SIGTERM" and summary["interrupted"] == ["backup"], summary
    messages = [line["message"] for line in daemon.log_lines()]
    assert any(m.startswith("interrupting backup after 1 s") for m in messages), messages
    last = local_status(slow_node)["last_backup"]
    assert last["ok"] is False and "interrupted" in last["error"], last
    assert not slow_node.snapshots(), "an interrupted backup makes no snapshot"
    assert slow_node.lock_objects() == [], "restic released its lock"


@pytest.mark.timeout(240)
def test_sigterm_kills_a_restic_that_does_not_react_and_exits(slow_node: Node):
    """restic stuck (here: stopped with SIGSTOP, so SIGTERM stays pending, as a restic deaf to
    SIGTERM while it retries a dead S3): the daemon kills its process group after the grace and
    exits, recording the run as interrupted."""
    daemon = DaemonProcess(slow_node, stop_timeout=1)
    try:
        pid = restic_backup(daemon)
        os.kill(pid, signal.SIGSTOP)
        code = daemon.stop(signal.SIGTERM, timeout=120)
    finally:
        daemon.close()
    assert code == 0, daemon.log.read_text()[-3000:]
    assert not alive(pid), "restic outlived the daemon"
    summary = json.loads(daemon.out.read_text())
    assert summary["interrupted"] == ["backup"], summary
    messages = [line["message"] for line in daemon.log_lines()]
    assert any("killed" in m and "backup" in m for m in messages), messages
    last = local_status(slow_node)["last_backup"]
    assert last["ok"] is False and "interrupted" in last["error"], last


# -- a failed backup tried again in the background ------------------------------------------


@pytest.mark.timeout(120)
def test_a_failed_backup_is_retried_in_the_background_and_its_success_pinged(
    node: Node, recorder, monkeypatch, caplog
):
    """The catch-up backup fails (a wrong repository password: fatal, no retry within the run)
    and the schedule is an hour away: the daemon tries again after BACKGROUND_RETRY_MIN, then
    twice that, and once the password is right again the retry's snapshot is recorded and its
    success pinged; the schedule after it is the hour again. The real daemon in this process
    (its 30 s first delay shortened to 2 s), real restic and SeaweedFS."""
    from datetime import UTC, datetime, timedelta
    from threading import Thread

    from drkit import daemon

    caplog.set_level("INFO", logger="drkit.daemon")
    monkeypatch.setattr(daemon.scheduler, "BACKGROUND_RETRY_MIN", timedelta(seconds=2))
    node.settings(
        schedule={"backup": "every 1h", "prune": None, "verify": None, "drill": None,
                  "prove": None, "retry_window": "1s"},
        objectives={"rpo": "1m", "rto": "10m"},
        notify={"ping": {"url": recorder.url + "/ping"}},
    )  # fmt: skip
    password = node.repository.password_file
    right = password.read_text()
    password.write_text("not-the-repository-password\n")
    runner = daemon.Daemon(node.loaded(), stop_timeout=30)
    thread = Thread(target=runner.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: recorder.paths().count("/ping/fail") >= 2, 60, "two failed backups")
        password.write_text(right)
        wait_for(lambda: (local_status(node).get("last_good_backup") or {}).get("snapshot_id"),
                 60, "the background retry's good backup")  # fmt: skip
        wait_for(lambda: "/ping" in recorder.paths(), 10, "the success ping")
        next_run = runner.scheduler.get_job("backup").next_run_time
    finally:
        runner.request_stop("test")
        thread.join(60)
    assert not thread.is_alive(), "the daemon did not stop"
    paths = [path for path in recorder.paths() if path != "/ping/start"]
    assert paths[:2] == ["/ping/fail", "/ping/fail"] and paths[-1] == "/ping", paths
    last = local_status(node)["last_backup"]
    assert last["ok"] is True, last
    (made,) = node.snapshots()  # the failed attempts made none
    assert last["snapshot_id"] in (made["id"], made["short_id"]), (last, made)
    assert runner.jobs.runs["backup"]["runs"] == paths.count("/ping/fail") + 1, runner.jobs.runs
    assert next_run - datetime.now(UTC) > timedelta(minutes=50), "back on its hourly schedule"

    records = [r for r in caplog.records if r.name == "drkit.daemon"]
    assert sum("retried in the background" in r.getMessage() for r in records) >= 2
    ended = [r.created for r in records if r.getMessage().startswith("backup failed after")]
    began = [r.created for r in records if r.getMessage() == "backup started"]
    waits = [start - end for end, start in zip(ended, began[1:], strict=False)]
    assert 1.9 <= waits[0] < 15, waits  # BACKGROUND_RETRY_MIN, not the hour
    assert waits[1] >= 3.9 and waits[1] > waits[0] * 1.5, waits  # doubled


# -- the drill job ----------------------------------------------------------------------------


@pytest.mark.timeout(150)
def test_the_daemon_drills_on_its_schedule_and_records_last_drill(node: Node):
    """A node backed up by hand whose daemon has only its drill due soon (backup hourly and
    within the RPO: no catch-up): the drill job restores the latest snapshot in the sandbox,
    logs in for real, and records last_drill (the snapshot it restored, its RTO)."""
    from nodes import SMOKE_USER

    node.settings(
        smoke_user=SMOKE_USER,
        schedule={"backup": "every 1h", "prune": None, "verify": None, "drill": "every 4s",
                  "prove": None},
        objectives={"rpo": "10m", "rto": "10m"},
    )  # fmt: skip
    code, made = node.run("backup")
    assert code == 0, made
    daemon = DaemonProcess(node, stop_timeout=60)
    try:
        drilled = wait_for(lambda: local_status(node).get("last_drill"), 90, "a drill run")
        state = local_status(node)
    finally:
        code = daemon.stop(signal.SIGTERM, timeout=120)
    assert code == 0, daemon.log.read_text()[-3000:]
    assert drilled["ok"] is True, drilled
    assert drilled["snapshot_id"] == made["snapshot_id"], (drilled, made)
    assert isinstance(drilled["rto_seconds"], int | float) and drilled["rto_seconds"] > 0
    assert state["last_backup"]["snapshot_id"] == made["snapshot_id"], "no backup ran"
    summary = json.loads(daemon.out.read_text())
    assert summary["runs"]["drill"]["runs"] >= 1 and summary["runs"]["drill"]["failed"] == 0
    assert "backup" not in summary["interrupted"] and summary["runs"]["backup"]["runs"] == 0
    code, shown = node.run("report")
    assert code == 0, shown
    assert made["snapshot_id"] in [entry["snapshot_id"] for entry in shown["drills"]], shown
