"""Documented daemon behaviour: SIGTERM while a job runs (--stop-timeout, then restic is
interrupted, and killed when it does not react), against real restic and SeaweedFS."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from test_daemon import DaemonProcess, Node, local_status, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def slow_node(node_root: Path, s3_repository, work_dir: Path) -> Node:
    """A node whose backup is slow enough (a 300 MB random log) to be caught mid-way."""
    made = Node(node_root / "root", s3_repository, work_dir, big_file_mb=300)
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
