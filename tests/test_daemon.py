"""Scheduled operation end to end: the daemon, prune, verify and status against real SeaweedFS
and restic, with a real sample node, real alert receivers and metrics on 127.0.0.1.

Schedules are accelerated ("every 2s"); old snapshots are forged with `restic backup --time`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemons import DRKIT, DaemonProcess, Recorder, local_status
from nodes import Node, wait_for

from drkit import config as config_module
from drkit.engines import keys
from drkit.engines.storage import Storage
from drkit.locals3 import LocalS3

pytestmark = pytest.mark.integration


# -- the daemon ------------------------------------------------------------------------------


def test_daemon_backs_up_alerts_serves_metrics_and_stops_on_sigterm(node: Node, recorder: Recorder):
    secret = node.workspace / "hook.secret"
    secret.write_text("hook-secret\n")
    secret.chmod(0o600)  # secret files readable by others are refused
    node.settings(
        schedule={"backup": "every 2s", "prune": None, "verify": None, "drill": None},
        objectives={"rpo": "1m", "rto": "10m"},
        notify={
            "webhook": {"url": recorder.url + "/hook", "secret_file": str(secret)},
            "ping": {"url": recorder.url + "/ping/uuid"},
        },
    )
    started = DaemonProcess(node)
    try:
        wait_for(lambda: len(node.snapshots()) >= 3, 60, "three scheduled snapshots")
        code, health = started.get("/healthz")
        assert code == 200, health
        code, text = started.get("/metrics")
        labels = '{job="backup",node="sftp-1"}'
        assert f"drkit_last_run_ok{labels} 1.0" in text
        assert f"drkit_rpo_breached{labels} 0.0" in text

        # ad-hoc backups during scheduled ones wait for the node lock and succeed
        # (separate processes, as an operator's shell would start them)
        argv = [DRKIT, "backup", "--config", str(node.config), "--json"]
        with ThreadPoolExecutor(2) as pool:
            done = list(
                pool.map(
                    lambda _: subprocess.run(argv, capture_output=True, text=True, timeout=120),
                    range(2),
                )
            )
        for completed in done:
            assert completed.returncode == 0, completed.stdout + completed.stderr
            assert json.loads(completed.stdout)["ok"] is True
        code, state = node.run("status")
        assert code == 0 and state["nodes"][0]["rpo_ok"] is True, state
    finally:
        exit_code = started.stop(signal.SIGTERM)
    assert exit_code == 0, started.log.read_text()[-2000:]
    summary = json.loads(started.out.read_text())
    assert summary["ok"] is True and summary["stopped_by"] == "SIGTERM"
    assert summary["runs"]["backup"]["runs"] >= 3, summary
    assert summary["runs"]["backup"]["failed"] == 0, started.log.read_text()[-4000:]
    lines = started.log_lines()
    assert any("catch-up backup" in line["message"] for line in lines)
    assert all(line["node"] == "sftp-1" for line in lines)

    paths = recorder.paths()
    assert "/ping/uuid/fail" not in paths
    assert paths.count("/ping/uuid/start") >= 3 and paths.count("/ping/uuid") >= 3
    hooks = [request for request in recorder.requests if request[1] == "/hook"]
    assert hooks
    for _, _, headers, body in hooks:
        digest = hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
        assert headers["X-Drkit-Signature"] == "sha256=" + digest
        assert json.loads(body)["ok"] is True
    assert "hook-secret" not in started.log.read_text()
    assert node.restic("check").returncode == 0


def test_killed_daemon_leaves_a_stale_lock_that_the_next_start_removes(
    node_root: Path, s3_repository
):
    node = Node(node_root, s3_repository, big_file_mb=400)
    node.settings(
        schedule={"backup": "every 2s", "prune": None, "verify": None, "drill": None},
        objectives={"rpo": "1m", "rto": "10m"},
    )
    first = DaemonProcess(node)
    try:
        wait_for(
            lambda: any(" backup " in argv for _, argv in first.children()),
            60,
            "restic backup under the daemon",
            step=0.05,
        )
        wait_for(lambda: node.lock_objects(), 60, "restic's lock in the repository", step=0.05)
        first.kill_hard()
    finally:
        first.close()
    locks = node.restic("list", "locks", "--no-lock").stdout.split()
    assert locks, "a killed restic leaves its lock"
    assert not node.snapshots(), "killed before the first snapshot was written"

    second = DaemonProcess(node)
    try:
        wait_for(lambda: len(node.snapshots()) >= 1, 90, "a backup after the crash")
        wait_for(
            lambda: not set(locks) & set(node.restic("list", "locks", "--no-lock").stdout.split()),
            30,
            "the stale lock removed",
        )
        wait_for(
            lambda: (local_status(node).get("last_backup") or {}).get("ok"), 30, "status recorded"
        )
    finally:
        assert second.stop() == 0
    assert any("stale restic lock" in line["message"] for line in second.log_lines())
    checked = node.restic("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_daemon_recovers_by_itself_after_the_s3_server_was_down(
    node_root: Path, tmp_path: Path, recorder: Recorder
):
    s3 = LocalS3(tmp_path / "s3-data").start()
    s3.s3_port = s3.port  # a restart serves the same endpoint from the same data
    saved = {name: os.environ.get(name) for name in s3.env()}
    started = None
    try:
        os.environ.update(s3.env())
        password = tmp_path / "repo.pass"
        password.write_text("p" * 64)
        password.chmod(0o600)
        repository = config_module.Repository(
            s3_endpoint=s3.endpoint,
            bucket="restart-test",
            prefix="node",
            password_file=password,
            object_lock=config_module.ObjectLock(days=1),
        )
        node = Node(node_root, repository)
        node.settings(
            schedule={
                "backup": "every 2s",
                "prune": None,
                "verify": None,
                "drill": None,
                "retry_window": "4s",
            },
            objectives={"rpo": "1m", "rto": "10m"},
            notify={"ping": {"url": recorder.url + "/ping"}},
        )
        started = DaemonProcess(node, env=s3.env())
        wait_for(lambda: local_status(node).get("last_good_backup"), 60, "a first backup")
        s3.stop()
        down_at = time.time()
        wait_for(lambda: "/ping/fail" in recorder.paths(), 60, "a fail ping while S3 is down")
        fail_body = next(r[3] for r in recorder.requests if r[1] == "/ping/fail")
        assert b"unreachable" in fail_body or b"restic" in fail_body
        # the behaviour under test: S3 stays down 6 s, longer than the 4 s retry window
        time.sleep(max(0.0, 6 - (time.time() - down_at)))
        s3.start()
        back_at = time.time()

        def recovered():
            good = (local_status(node).get("last_good_backup") or {}).get("time")
            moment = good and datetime.fromisoformat(good.replace("Z", "+00:00")).timestamp()
            return moment and moment >= back_at - 1

        wait_for(recovered, 120, "a good backup after S3 came back")
        assert started.process.poll() is None, "the daemon survived the outage"
        assert started.stop() == 0
        started = None
        assert node.restic("check", env=s3.env()).returncode == 0
    finally:
        if started is not None:
            started.close()
        s3.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def test_adhoc_backup_waits_for_the_lock_then_exits_busy(node: Node, monkeypatch):
    from filelock import FileLock

    from drkit.service import context

    monkeypatch.setattr(context, "LOCK_TIMEOUT_SECONDS", 1)
    lock = FileLock(str(node.state / "locks" / "sftp-1.lock"))
    with lock:
        code, document = node.run("backup")
    assert code == 7 and document["error"]["kind"] == "busy"
    assert local_status(node)["last_backup"]["ok"] is False
    code, document = node.run("backup")
    assert code == 0, document
    assert local_status(node)["last_good_backup"]["snapshot_id"] == document["snapshot_id"]


# -- prune -----------------------------------------------------------------------------------

FORGED = [
    "2023-06-15 10:00:00",
    "2024-01-10 08:00:00",
    "2024-01-10 09:00:00",
    "2024-01-10 09:30:00",
    "2024-01-11 09:00:00",
    "2024-01-17 09:00:00",
    "2024-02-01 09:00:00",
    "2024-02-01 09:45:00",
]
EXPECTED_KEPT = {
    "last": ["2024-02-01T09:00:00Z", "2024-02-01T09:45:00Z"],
    "hourly": ["2024-01-11T09:00:00Z", "2024-01-17T09:00:00Z", "2024-02-01T09:45:00Z"],
    "daily": ["2024-01-17T09:00:00Z", "2024-02-01T09:45:00Z"],
    "weekly": ["2024-01-17T09:00:00Z", "2024-02-01T09:45:00Z"],
    "monthly": ["2024-01-17T09:00:00Z", "2024-02-01T09:45:00Z"],
    "yearly": ["2023-06-15T10:00:00Z", "2024-02-01T09:45:00Z"],
}
COUNTS = {"last": 2, "hourly": 3, "daily": 2, "weekly": 2, "monthly": 2, "yearly": 2}


@pytest.fixture
def forged(node: Node) -> Node:
    """The node with snapshots at forged times (and another node's, which prune never touches)."""
    for moment in FORGED:
        made = node.restic(
            "backup", "--host", "sftp-1", "--tag", "drkit", "--tag", "node:sftp-1",
            "--tag", "profile:openssh", "--time", moment, "etc",
            cwd=node.root, env={"TZ": "UTC"},
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
    other = node.restic(
        "backup", "--host", "sftp-old-name", "--tag", "drkit", "--time", "2020-01-01 00:00:00",
        "etc", cwd=node.root, env={"TZ": "UTC"},
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    return node


def test_prune_applies_each_keep_rule(forged: Node):
    node = forged
    for rule, count in COUNTS.items():
        retention = dict.fromkeys(COUNTS, 0)
        retention[rule] = count
        node.settings(retention=retention)
        code, planned = node.run("prune", "--dry-run")
        assert code == 0, planned
        assert planned["dry_run"] is True
        assert [item["time"] for item in planned["kept"]] == EXPECTED_KEPT[rule], rule
        assert len(planned["removed"]) == len(FORGED) - len(EXPECTED_KEPT[rule])
    assert len(node.snapshots()) == len(FORGED) + 1, "dry runs remove nothing"


def test_prune_on_a_locked_bucket_removes_and_records_signed(forged: Node):
    node = forged
    node.settings(retention={**dict.fromkeys(COUNTS, 0), "monthly": 2})
    code, pruned = node.run("prune")
    assert code == 0, pruned
    assert pruned["pruned"] is True and len(pruned["removed"]) == 6
    left = node.snapshots()
    assert sorted(s["hostname"] for s in left) == ["sftp-1", "sftp-1", "sftp-old-name"]
    assert node.restic("check").returncode == 0

    storage = Storage(node.loaded().repository)
    record_key = pruned["record"]
    assert record_key.startswith("records/sftp-1/prune-")
    stored = storage.get_json(record_key)
    signer = keys.verify_signature(stored["signature"], stored["record"].encode())
    assert signer == node.init["signer"]
    record = json.loads(stored["record"])
    assert {item["id"] for item in record["removed"]} == {s["id"] for s in pruned["removed"]}
    # the bucket's lifecycle rule frees what restic deleted once the lock has passed
    assert storage.lifecycle_rule().noncurrent_days == 1 + 7
    code, state = node.run("status")
    assert state["nodes"][0]["last_prune"]["ok"] is True


# -- verify ----------------------------------------------------------------------------------


def test_verify_checks_repository_signatures_and_spots_drift(node: Node):
    code, made = node.run("backup")
    assert code == 0, made
    code, verified = node.run("verify", "--read-data-subset", "50%", "--spot", "5")
    assert code == 0, verified
    assert verified["check"]["ok"] and verified["snapshots"]["verified"] == 1
    assert verified["spot"]["sampled"] == 5 and verified["spot"]["matched"] == 5
    assert verified["drift"] == []

    config_file = node.root / "etc/ssh/sshd_config"
    config_file.write_text(config_file.read_text() + "# changed on the live node\n")
    code, verified = node.run("verify", "--spot", "1000")
    assert code == 0, verified  # drift is reported, not a failure
    assert [item["path"] for item in verified["drift"]] == ["/etc/ssh/sshd_config"]

    # a snapshot drkit did not sign (made behind its back) is a verify problem
    behind = node.restic(
        "backup", "--host", "sftp-1", "--tag", "drkit", "--tag", "node:sftp-1", "etc",
        cwd=node.root,
    )  # fmt: skip
    assert behind.returncode == 0, behind.stderr
    code, verified = node.run("verify", "--spot", "0")
    assert code == 1 and verified["ok"] is False
    assert verified["snapshots"]["verified"] == 1 and len(verified["snapshots"]["failed"]) == 1
    code, state = node.run("status")
    assert state["nodes"][0]["last_verify"]["ok"] is False


# -- status ----------------------------------------------------------------------------------


def test_fleet_status_shows_missing_and_stale_nodes_as_breached(node: Node):
    code, made = node.run("backup")
    assert code == 0, made
    code, mine = node.run("status")
    assert code == 0 and mine["nodes"][0]["rpo_ok"] is True
    assert mine["nodes"][0]["last_backup"]["snapshot_id"] == made["snapshot_id"]

    storage = Storage(node.loaded().repository)
    stale = json.loads(json.dumps(local_status(node)))
    month_ago = (datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    stale.update(node="sftp-2", updated=month_ago)
    stale["last_good_backup"] = {"time": month_ago, "snapshot_id": "0ld"}
    storage.put_json("status/sftp-2.json", stale)
    storage.put_json("status/sftp-3.json", ["not", "a", "status"])
    code, fleet = node.run("status", "--fleet")
    assert code == 1 and fleet["ok"] is False
    by_node = {entry["node"]: entry for entry in fleet["nodes"]}
    assert set(by_node) == {"sftp-1", "sftp-2", "sftp-3"}
    assert by_node["sftp-1"]["rpo_ok"] is True
    assert (
        by_node["sftp-2"]["rpo_ok"] is False and "over the RPO" in by_node["sftp-2"]["problems"][0]
    )
    assert by_node["sftp-3"]["rpo_ok"] is False
    for entry in fleet["nodes"]:
        assert {"last_backup", "last_prune", "last_verify", "last_drill", "rpo_seconds"} <= set(
            entry
        )
        assert {"rpo_ok", "age_seconds"} <= set(entry)


def test_status_of_a_node_that_never_backed_up_is_breached(node: Node):
    code, state = node.run("status")
    assert code == 1 and state["nodes"][0]["rpo_ok"] is False
