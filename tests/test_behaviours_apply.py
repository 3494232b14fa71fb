"""Documented apply behaviour: two applies on one target exclude each other (the target's
apply lock): a restore onto a target another apply holds waits for it (60 s), then exits 7."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nodes import Node

from drkit.engines import apply

pytestmark = pytest.mark.integration
DRKIT = str(Path(sys.executable).parent / "drkit")


@pytest.mark.timeout(300)
def test_a_restore_onto_a_target_another_apply_holds_waits_then_exits_busy(node: Node):
    snapshot = node.backup()
    target = node.workspace / "rebuild"
    target.mkdir()
    argv = [DRKIT, "restore", snapshot, "--config", str(node.config), "--target", str(target),
            "--json"]  # fmt: skip
    with apply.target_lock(target):  # another apply (restore, standby sync) holds the target
        # the real wait: 60 s, then exit 7
        busy = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
        assert busy.returncode == 7, busy.stdout + busy.stderr[-2000:]
        document = json.loads(busy.stdout)
        assert document["error"]["kind"] == "busy", document
        message = document["error"]["message"]
        assert str(target) in message and f"pid {os.getpid()} (" in message, document  # holder
        assert "waited 1 min" in message, document
        assert not (target / "etc").exists(), "nothing applied while the other holds it"
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert json.loads(done.stdout)["ok"] is True
    assert (target / "etc/ssh/sshd_config").is_file()
    assert not apply.on_root(target, apply.APPLY_LOCK).exists(), "the lock is gone after it"
