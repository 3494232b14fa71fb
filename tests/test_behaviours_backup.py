"""Documented backup behaviour: exit 3 when restic cannot read some of the node's files.

Root reads everything on a plain filesystem, so the unreadable file is a real kernel refusal:
a write-only sysctl (/proc/sys/vm/drop_caches, mode 0200: root gets EACCES on open for read)
bind-mounted over a node file inside a private mount namespace (`unshare --mount`), which the
kernel discards with the backup process, so nothing outlives the test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nodes import Node

pytestmark = pytest.mark.integration
DRKIT = str(Path(sys.executable).parent / "drkit")
WRITE_ONLY = "/proc/sys/vm/drop_caches"


def backup_with_unreadable(node: Node, unreadable: Path) -> subprocess.CompletedProcess:
    """Run `drkit backup --json` where `unreadable` cannot be opened for reading, even by root."""
    script = 'mount --bind "$1" "$2" && shift 2 && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            WRITE_ONLY, str(unreadable), DRKIT, "backup", "--config", str(node.config),
            "--json"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1)")
def test_backup_of_an_unreadable_file_exits_3_and_names_it(node: Node):
    unreadable = node.root / "var/log/sftp/locked.log"
    unreadable.write_text("")
    first = node.backup()  # readable before: the snapshot the failed run must not replace

    done = backup_with_unreadable(node, unreadable)
    assert done.returncode == 3, done.stdout + done.stderr[-2000:]
    document = json.loads(done.stdout)
    assert document["ok"] is False and document["error"]["kind"] == "incomplete"
    assert "locked.log" in document["error"]["message"]
    assert "permission denied" in document["error"]["message"].lower()

    code, state = node.run("status")
    assert code == 1, state  # the last backup failed, even within the RPO
    assert state["nodes"][0]["last_backup"]["ok"] is False
    assert state["nodes"][0]["last_good_backup"]["snapshot_id"] == first
    assert node.backup() != first, "readable again: the next backup succeeds"


# Runs in its own mount namespace: the backup of the node's config, the file turned unreadable
# (the write-only sysctl bind-mounted over it) once drkit has hashed it, just before restic
# reads it, so that it is restic that cannot read it (its exit 3).
RACE = """
import json, subprocess, sys
from pathlib import Path
from drkit import config, errors
from drkit.actions import backup
loaded = config.load_config(Path(sys.argv[1]))[0]
def on_step(text):
    if text.startswith("uploading"):
        subprocess.run(["mount", "--bind", sys.argv[2], sys.argv[3]], check=True)
try:
    backup.run(loaded, on_step=on_step)
    print(json.dumps({"code": 0}))
except errors.DrkitError as error:
    print(json.dumps({"code": error.exit_code, "kind": error.kind, "message": error.message}))
"""


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1)")
def test_restic_exit_3_on_a_file_unreadable_after_hashing_is_backup_incomplete(node: Node):
    unreadable = node.root / "var/log/sftp/late.log"
    unreadable.write_text("readable while drkit hashes it\n")
    argv = ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", RACE,
            str(node.config), WRITE_ONLY, str(unreadable)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] == 3 and outcome["kind"] == "incomplete", outcome
    assert "late.log" in outcome["message"] and "could not be read" in outcome["message"]
