"""Drills, reports and diffs end to end: real SeaweedFS, restic and sshd; nothing mocked.

One node is backed up once per module; the tests that change it (a broken host key, a config
edit and a key rotation) come last and each makes its own snapshot.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nodes import SMOKE_USER, Node, fresh_node, wait_for

from devtools import sample_node
from drkit.engines.storage import Storage

pytestmark = pytest.mark.integration
DRKIT = str(Path(sys.executable).with_name("drkit"))


@pytest.fixture(scope="module")
def node(local_s3, tmp_path_factory):
    with fresh_node(local_s3, tmp_path_factory.mktemp("secret")) as made:
        made.backup()
        yield made


def _checks(document: dict) -> dict[str, dict]:
    return {check["name"]: check for check in document["checks"]}


def _sandboxes(node: Node) -> list[Path]:
    parent = node.state / "drills"
    return sorted(parent.iterdir()) if parent.is_dir() else []


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in command and str(os.getpid()) != entry.name:
                found.append(f"{entry.name}: {command}")
    return found


def test_drill_passes_measures_and_writes_three_reports(node: Node):
    latest = node.snapshots()[-1]["id"]  # this file's other tests may have backed up first
    code, drilled = node.run("drill")
    assert code == 0, json.dumps(drilled, indent=1)
    assert drilled["ok"] and drilled["snapshot_id"] == latest
    checks = _checks(drilled)
    for name in ("manifest signature", "files verified", "config: sshd -t", "objective: RTO",
                 "objective: RPO"):  # fmt: skip
        assert checks[name]["status"] == "pass", checks[name]
    # RTO: from the drill's start to the first working login and round trip, within the drill.
    assert 0 < drilled["rto_seconds"] <= drilled["duration_seconds"]
    assert drilled["rpo_judged"] and 0 <= drilled["rpo_seconds"] < 600
    assert drilled["objectives"] == {"rpo_seconds": 900, "rto_seconds": 600}
    assert len(drilled["host_keys"]) == 3
    assert all(key["served"] == key["fingerprint"] and key["ok"] for key in drilled["host_keys"])
    assert drilled["certificates"][0]["days_left"] >= 363
    # The sandbox and every process are gone; the live node was never touched.
    assert drilled["sandbox"]["removed"] and _sandboxes(node) == []
    assert _processes_mentioning(str(node.state / "drills")) == []
    with pytest.raises(KeyError):
        pwd.getpwnam(SMOKE_USER)

    paths = {kind: Path(path) for kind, path in drilled["reports"].items()}
    assert set(paths) == {"json", "md", "html"} and all(p.is_file() for p in paths.values())
    assert json.loads(paths["json"].read_text())["snapshot_id"] == latest
    markdown = paths["md"].read_text()
    assert "| smoke: sftp login | pass |" in markdown and "## History" in markdown
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<svg" in page
    assert "RTO per drill" in page and "RPO per drill" in page
    for fetch in ("http://", "https://", "src=", "<link", "<script", "@import"):
        assert fetch not in page, fetch
    for key in drilled["host_keys"]:
        assert key["fingerprint"] in page
    # Uploaded beside the repository, under reports/<node>/ (with earlier drills' reports).
    stored = Storage(node.repository).list_keys("reports/sftp-1/")
    assert len(drilled["uploaded"]) == 3 and set(drilled["uploaded"]) <= set(stored)

    code, status = node.run("status")
    assert status["nodes"][0]["last_drill"]["rto_seconds"] == drilled["rto_seconds"]
    assert status["nodes"][0]["rto_ok"] is True


def test_random_drill_reports_age_without_judging_rpo_and_report_lists_history(node: Node):
    # whatever this file's other tests drilled already (exit 1 when the last drill failed)
    code, before = node.run("report")
    assert code in (0, 1) and "drills" in before, before
    code, drilled = node.run("drill", "--snapshot", "random", "--report-dir", str(node.workspace))
    assert code == 0, drilled
    assert not drilled["rpo_judged"] and drilled["objectives_met"]["rpo"] is None
    assert "objective: RPO" not in _checks(drilled)
    assert Path(drilled["reports"]["html"]).parent == node.workspace
    assert len(drilled["history"]) == len(before["drills"]) + 1

    code, listed = node.run("report")
    assert code == 0, listed
    assert [entry["ok"] for entry in listed["drills"]] == [
        *(entry["ok"] for entry in before["drills"]),
        True,
    ]
    assert set(listed["drills"][-1]) == {
        "node", "time", "ok", "snapshot_id", "rto_seconds", "rpo_seconds", "html",
    }  # fmt: skip
    assert listed["drills"][-1]["html"].startswith("reports/sftp-1/drill-")
    code, opened = node.run("report", "--open", env={"BROWSER": "true"})
    assert code == 0 and Path(opened["page"]).is_file(), opened
    assert "<svg" in Path(opened["page"]).read_text()


def test_sigterm_leaves_no_process_and_no_sandbox(node: Node):
    """SIGTERM in the middle of the smoke run: sshd, the created user and the sandbox go."""
    drills = str(node.state / "drills")
    process = subprocess.Popen(
        [DRKIT, "drill", "--config", str(node.config), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: (
                process.poll() is not None
                or any("sshd" in line for line in _processes_mentioning(drills))
            ),
            120,
            "the smoke's sshd",
            step=0.02,
        )
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, (stdout, stderr)
    assert json.loads(stdout)["error"]["kind"] == "interrupted"
    assert _processes_mentioning(drills) == []
    assert _sandboxes(node) == []
    with pytest.raises(KeyError):
        pwd.getpwnam(SMOKE_USER)


def test_corrupted_host_keys_fail_the_drill_loudly(node: Node):
    keys = [node.root / path.lstrip("/") for path in node.made["host_keys"]]
    saved = {key: key.read_bytes() for key in keys}
    try:
        for key in keys:
            key.write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\ncorrupted\n")
        corrupted = node.backup()
    finally:
        for key, data in saved.items():
            key.write_bytes(data)
    try:
        code, drilled = node.run("drill")
        assert code == 1 and not drilled["ok"]
        checks = _checks(drilled)
        pair = checks["host key pair: /etc/ssh/ssh_host_ed25519_key"]
        assert pair["status"] == "fail" and "does not parse" in pair["detail"]
        # sshd refuses to start without a usable host key: no login, so no RTO, and the check that
        # says so names the cause
        started = checks["smoke: sshd started"]
        assert started["status"] == "fail", started
        assert "host key" in started["detail"] or "hostkeys" in started["detail"], started
        assert drilled["rto_seconds"] is None
        assert checks["objective: RTO"]["status"] == "fail"
        assert all(key["served"] is None and not key["ok"] for key in drilled["host_keys"])
        assert any("smoke: sshd started" in problem for problem in drilled["problems"])
        assert _sandboxes(node) == []
        # The failed drill is on record: in the bucket's history and the status document.
        code, listed = node.run("report")
        assert code == 1 and listed["drills"][-1]["ok"] is False
    finally:  # the shared node as it was: no corrupted snapshot to pick, a healthy latest
        assert node.restic("forget", corrupted).returncode == 0
        node.backup()


def test_diff_names_config_edits_key_rotation_and_new_users(node: Node):
    root = node.root
    config_file = root / "etc/ssh/sshd_config"
    config_file.write_text(
        config_file.read_text().replace("X11Forwarding no\n", "") + "MaxSessions 5\n"
    )
    dropin = root / "etc/ssh/sshd_config.d/10-hardening.conf"
    dropin.write_text(dropin.read_text().replace("LoginGraceTime 30", "LoginGraceTime 20"))
    old_private = (root / "etc/ssh/ssh_host_ed25519_key").read_text()
    sample_node._host_key(sample_node._Node(root), "ed25519")
    new_private = (root / "etc/ssh/ssh_host_ed25519_key").read_text()
    partner_keys = root / "home/partner/.ssh/authorized_keys"
    partner_keys.write_text(partner_keys.read_text() + sample_node._client_key_line("laptop"))
    with open(root / "etc/passwd", "a") as passwd:
        passwd.write("carol:x:2103:2103:carol sftp account:/home/carol:/usr/sbin/nologin\n")
    with open(root / "etc/shadow", "a") as shadow:
        shadow.write("carol:$6$salt$abcdefghijklmnop:19800:0:99999:7:::\n")
    group = root / "etc/group"
    group_name, gid = sample_node.sftp_group()
    members = f"{group_name}:x:{gid}:{SMOKE_USER},partner"
    group.write_text(group.read_text().replace(members, f"{members},carol") + "carol:x:2103:\n")
    sample_node._tls(sample_node._Node(root))
    node.backup()

    code, diffed = node.run("diff", "latest~1", "latest")
    assert code == 0, diffed
    text = json.dumps(diffed)
    assert old_private not in text and new_private not in text
    assert "PRIVATE KEY" not in text and "$6$salt" not in text
    notes = "\n".join(diffed["notes"])
    assert "host key ssh_host_ed25519_key replaced" in notes
    assert "host key ssh_host_rsa_key" not in notes
    assert "new allowed user carol" in notes
    assert (
        "user partner: key SHA256:" in notes
        and "added to /home/partner/.ssh/authorized_keys" in notes
    )
    assert "certificate /etc/ssl/certs/sftp.example.com.pem renewed" in notes
    changes = {change["path"]: change for change in diffed["changes"]}
    config_change = changes["/etc/ssh/sshd_config"]
    assert config_change["category"] == "config" and config_change["change"] == "changed"
    assert "+MaxSessions 5" in config_change["diff"]
    assert "-X11Forwarding no" in config_change["diff"]
    assert (
        "-LoginGraceTime 30\n+LoginGraceTime 20"
        in changes[str(dropin).removeprefix(str(root))]["diff"]
    )
    key_change = changes["/etc/ssh/ssh_host_ed25519_key"]
    assert key_change["category"] == "host_keys" and "diff" not in key_change
    assert "not shown" in key_change["detail"]
    assert changes["/etc/passwd:carol"]["change"] == "added"
