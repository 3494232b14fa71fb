"""Documented apply behaviour: two applies on one target exclude each other (the target's
apply lock): a restore onto a target another apply holds waits for it, then runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nodes import Node, make_workspace

from drkit.engines import apply

pytestmark = pytest.mark.integration
DRKIT = str(Path(sys.executable).parent / "drkit")


@pytest.fixture
def node(s3_repository):
    made = Node(make_workspace(), s3_repository)
    try:
        yield made
    finally:
        made.remove()


def holds_open(pid: int, path: Path) -> bool:
    """Return True when process pid has path open (it is waiting on, or holding, that lock)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == str(path):
                return True
        except OSError:
            continue
    return False


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.timeout(240)
def test_a_restore_waits_for_the_apply_holding_its_target_then_runs(node: Node):
    snapshot = node.backup()
    target = node.workspace / "rebuild"
    target.mkdir()
    lock_path = apply.on_root(target, apply.APPLY_LOCK)
    argv = [DRKIT, "restore", snapshot, "--config", str(node.config), "--target", str(target),
            "--json"]  # fmt: skip
    with apply.target_lock(target):  # another apply (restore, standby sync) holds the target
        restore = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(
                lambda: holds_open(restore.pid, lock_path) or restore.poll() is not None,
                120,
                "the second restore to reach the target lock",
            )
            assert restore.poll() is None, "the second restore did not wait for the first"
            assert not (target / "etc").exists(), "nothing applied while the other holds it"
        except BaseException:
            restore.kill()
            restore.wait()
            raise
    out, err = restore.communicate(timeout=180)
    assert restore.returncode == 0, out + err[-2000:]
    document = json.loads(out)
    assert document["ok"] is True and document["snapshot_id"].startswith(snapshot[:8])
    assert (target / "etc/ssh/sshd_config").is_file()
    assert not lock_path.exists(), "the lock is gone after the last apply"
