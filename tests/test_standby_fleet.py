"""Active-passive (standby sync/status/promote) and active-active (fleet drift) through the CLI.

Real SeaweedFS, restic and sshd checks: the nodes are sample OpenSSH nodes under prefix roots
sharing one repository, as a group's nodes do.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from nodes import (
    SMOKE_USER,
    clone_root,
    drkit,
    edit_config,
    init_group_node,
    signer_of,
)

from devtools import sample_node
from drkit.paths import on_root

pytestmark = pytest.mark.integration


@pytest.fixture
def pool_dir(node_root: Path) -> Path:
    """A root-owned directory holding several nodes' roots and work dirs."""
    return node_root


def test_standby_follows_active_keeps_local_and_rolls_back_broken(pool_dir, s3_repository):
    active_root, passive_root = pool_dir / "active", pool_dir / "passive"
    sample_node.build(active_root, smoke_user=SMOKE_USER, chroot=True)
    clone_root(active_root, passive_root)
    listen = "/etc/ssh/sshd_config.d/10-listen.conf"
    on_root(active_root, listen).write_text("ListenAddress 10.0.0.1\n")
    on_root(passive_root, listen).write_text("ListenAddress 10.0.0.2\n")
    config_file = "/etc/ssh/sshd_config"
    passive_text = on_root(passive_root, config_file).read_text()
    on_root(passive_root, config_file).write_text(passive_text.replace("Port 22\n", "Port 2022\n"))
    active = init_group_node(pool_dir, "sftp-1", active_root, s3_repository, "sftp-prod")
    passive = init_group_node(pool_dir, "sftp-2", passive_root, s3_repository, "sftp-prod")
    marker = pool_dir / "reloaded"
    edit_config(
        passive,
        standby={
            "source": "sftp-1",
            "reload": f"touch {marker}",
            "local": [listen, f"{config_file}:Port"],
        },
        trusted_keys=[signer_of(passive), signer_of(active)],
    )
    code, document = drkit("backup", "--config", str(passive))
    assert code == 2 and "standby" in document["error"]["message"]

    # An edit on the active appears on the passive after one sync; local things stay.
    on_root(active_root, "/etc/issue.net").write_text("Maintenance tonight 22:00 UTC.\n")
    text = on_root(active_root, config_file).read_text()
    on_root(active_root, config_file).write_text(text + "MaxSessions 5\n")
    code, backup = drkit("backup", "--config", str(active))
    assert code == 0, backup
    code, dry = drkit("standby", "sync", "--dry-run", "--config", str(passive))
    assert code == 0 and dry["changed"] and not marker.exists(), dry
    code, synced = drkit("standby", "sync", "--config", str(passive))
    assert code == 0, synced
    assert synced["changed"] and synced["snapshot_id"] == backup["snapshot_id"]
    assert marker.exists(), "reload did not run after a changed sync"
    assert on_root(passive_root, "/etc/issue.net").read_text().startswith("Maintenance")
    assert on_root(passive_root, listen).read_text() == "ListenAddress 10.0.0.2\n"
    merged = on_root(passive_root, config_file).read_text()
    assert "MaxSessions 5" in merged and "Port 2022" in merged and "Port 22\n" not in merged

    code, status = drkit("standby", "status", "--config", str(passive))
    assert code == 0, status
    assert status["source"] == "sftp-1" and status["snapshot_id"] == backup["snapshot_id"]
    assert status["applied_at"].endswith("Z") and 0 <= status["lag_seconds"] < 600

    marker.unlink()
    code, again = drkit("standby", "sync", "--config", str(passive))
    assert code == 0 and again["up_to_date"] and not again["changed"] and not marker.exists()

    # A broken source snapshot (sshd would not start) is applied, checked, and rolled back.
    before = on_root(passive_root, config_file).read_bytes()
    before_banner = on_root(passive_root, "/etc/issue.net").read_bytes()
    on_root(active_root, "/etc/issue.net").write_text("Broken release.\n")
    on_root(active_root, config_file).write_text(text + "NoSuchKeyword yes\n")
    code, broken = drkit("backup", "--config", str(active))
    assert code == 0, broken
    code, refused = drkit("standby", "sync", "--config", str(passive))
    assert code == 1 and refused["rolled_back"], refused
    assert any(c["status"] == "fail" and "sshd" in c["name"] for c in refused["checks"])
    assert on_root(passive_root, config_file).read_bytes() == before
    assert on_root(passive_root, "/etc/issue.net").read_bytes() == before_banner
    code, status = drkit("standby", "status", "--config", str(passive))
    assert status["snapshot_id"] == backup["snapshot_id"]
    assert status["rejected"] == broken["snapshot_id"] and code == 1

    # Promote: the passive stops following and backs itself up.
    code, promoted = drkit("standby", "promote", "--config", str(passive))
    assert code == 0 and promoted["promoted_from"] == "sftp-1"
    assert "standby" not in yaml.safe_load(passive.read_text())
    code, own = drkit("backup", "--config", str(passive))
    assert code == 0, own


def test_fleet_drift_names_rotated_host_key_and_truncated_log(pool_dir, s3_repository):
    roots = {name: pool_dir / name for name in ("sftp-1", "sftp-2", "sftp-3")}
    sample_node.build(roots["sftp-1"], smoke_user=SMOKE_USER, chroot=True)
    clone_root(roots["sftp-1"], roots["sftp-2"])
    clone_root(roots["sftp-1"], roots["sftp-3"])
    config_file = "/etc/ssh/sshd_config"
    for index, root in enumerate(roots.values(), 1):
        text = on_root(root, config_file).read_text()
        on_root(root, config_file).write_text(
            text.replace("ListenAddress 0.0.0.0", f"ListenAddress 10.0.0.{index}")
        )
    configs = {
        name: init_group_node(pool_dir, name, root, s3_repository, "sftp-prod")
        for name, root in roots.items()
    }
    for config in configs.values():
        edit_config(config, node_local=[f"{config_file}:ListenAddress"])
    trust = [arg for config in configs.values() for arg in ("--trust-key", signer_of(config))]
    for config in configs.values():
        code, document = drkit("backup", "--config", str(config))
        assert code == 0, document
    code, clean = drkit("fleet", "drift", "--config", str(configs["sftp-1"]), *trust)
    assert code == 0 and clean["ok"], clean["findings"]
    assert [n["node"] for n in clean["nodes"]] == ["sftp-1", "sftp-2", "sftp-3"]

    # sftp-2's host key is rotated; sftp-3's audit log is truncated; sftp-1's log grows.
    key = on_root(roots["sftp-2"], "/etc/ssh/ssh_host_ed25519_key")
    key.unlink()
    key.with_name(key.name + ".pub").unlink()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    log = "/var/log/sftp/transfer.log"
    on_root(roots["sftp-3"], log).write_text("")
    with on_root(roots["sftp-1"], log).open("a") as handle:
        handle.write("2024-05-02T10:00:00Z drill put upload/invoice-0002.csv 20\n")
    for config in configs.values():
        code, document = drkit("backup", "--config", str(config))
        assert code == 0, document
    code, drift = drkit("fleet", "drift", "--config", str(configs["sftp-1"]), *trust)
    assert code == 1 and not drift["ok"]
    found = {(f["node"], f["category"], f["path"]) for f in drift["findings"]}
    assert ("sftp-2", "host_keys", "/etc/ssh/ssh_host_ed25519_key") in found, drift["findings"]
    assert ("sftp-3", "audit_logs", log) in found, drift["findings"]
    assert not any(f["node"] == "sftp-1" for f in drift["findings"]), drift["findings"]
    truncated = next(f for f in drift["findings"] if f["category"] == "audit_logs")
    assert "truncated" in truncated["detail"]
    assert all("ListenAddress" not in f["detail"] for f in drift["findings"])

    # Untrusted nodes are not compared: without --trust-key they show as trust findings.
    code, untrusted = drkit("fleet", "drift", "--config", str(configs["sftp-1"]))
    assert code == 1
    assert {f["node"] for f in untrusted["findings"] if f["category"] == "trust"} == {
        "sftp-2",
        "sftp-3",
    }


def test_a_passive_nodes_daemon_syncs_each_new_snapshot_of_its_source(pool_dir, s3_repository):
    """The passive node's daemon runs standby sync on schedule.standby (and no backup, no
    proof): it applies the source's snapshot, then one the source makes while it runs, with
    the reload after each change; last_standby records what it applied."""
    import json
    import signal
    from types import SimpleNamespace

    from daemons import DaemonProcess
    from nodes import wait_for

    active_root, passive_root = pool_dir / "active", pool_dir / "passive"
    sample_node.build(active_root, smoke_user=SMOKE_USER, chroot=True)
    clone_root(active_root, passive_root)
    active = init_group_node(pool_dir, "sftp-1", active_root, s3_repository, "sftp-prod")
    passive = init_group_node(pool_dir, "sftp-2", passive_root, s3_repository, "sftp-prod")
    marker = pool_dir / "reloaded"
    edit_config(
        passive,
        standby={"source": "sftp-1", "reload": f"touch {marker}"},
        trusted_keys=[signer_of(passive), signer_of(active)],
        schedule={"standby": "every 2s", "prune": None, "verify": None, "drill": None,
                  "prove": "after-backup"},
        objectives={"rpo": "10m", "rto": "10m"},
    )  # fmt: skip
    banner = "/etc/issue.net"
    on_root(active_root, banner).write_text("First release.\n")
    code, first = drkit("backup", "--config", str(active))
    assert code == 0, first
    work = pool_dir / "sftp-2-work"
    status_file = work / "state" / "status" / "sftp-2.json"

    def applied(snapshot_id: str):
        try:
            last = json.loads(status_file.read_text()).get("last_standby") or {}
        except (FileNotFoundError, ValueError):
            return None
        return last if last.get("snapshot_id") == snapshot_id else None

    daemon = DaemonProcess(SimpleNamespace(config=passive, workspace=work), stop_timeout=60)
    try:
        synced = wait_for(lambda: applied(first["snapshot_id"]), 60, "the first sync")
        assert synced["ok"] and synced["changed"], synced
        assert on_root(passive_root, banner).read_text() == "First release.\n"
        assert marker.exists(), "reload did not run after a changed sync"
        marker.unlink()
        on_root(active_root, banner).write_text("Second release.\n")
        code, second = drkit("backup", "--config", str(active))
        assert code == 0, second
        synced = wait_for(lambda: applied(second["snapshot_id"]), 60, "the new snapshot synced")
    finally:
        code = daemon.stop(signal.SIGTERM, timeout=120)
    assert code == 0, daemon.log.read_text()[-3000:]
    assert synced["ok"] and synced["changed"], synced
    assert on_root(passive_root, banner).read_text() == "Second release.\n"
    assert marker.exists(), "reload did not run after the second sync"
    summary = json.loads(daemon.out.read_text())
    assert set(summary["runs"]) == {"standby"}, summary  # a passive node backs up nothing
    assert summary["runs"]["standby"]["failed"] == 0, daemon.log.read_text()[-3000:]
    code, status = drkit("standby", "status", "--config", str(passive))
    assert code == 0 and status["snapshot_id"] == second["snapshot_id"], status
