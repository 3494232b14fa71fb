"""An unchanged node confirms its last snapshot: no restic process, a signed freshness entry.

Real restic and S3, the sample node, drkit.yaml's default (`unchanged: confirm`).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from nodes import RESTIC, Node, fresh_node

from drkit.config import load_config
from drkit.engines import catalog, manifest
from drkit.engines.manifest import MANIFEST_PATH
from drkit.engines.storage import Storage

pytestmark = pytest.mark.integration


@pytest.fixture
def node(local_s3, tmp_path: Path):
    with fresh_node(local_s3, tmp_path, "sftp-1") as sample:
        settings = yaml.safe_load(sample.config.read_text())
        settings.pop("unchanged")  # drkit.yaml's default: confirm
        sample.config.write_text(yaml.safe_dump(settings))
        yield sample


def _restic_processes(node: Node, *args: str) -> tuple[int, dict, list[str]]:
    """Run a command through a restic wrapper that logs each process; return (exit, document,
    the restic commands that opened the repository: `version` opens nothing)."""
    calls = node.workspace / "restic-calls.log"
    wrapper = node.workspace / "restic-counting"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> "{calls}"\nexec {RESTIC} "$@"\n')
    wrapper.chmod(0o755)
    calls.write_text("")
    code, document = node.run(*args, env={"DRKIT_RESTIC": str(wrapper)})
    return code, document, [p for p in calls.read_text().split() if p != "version"]


def test_an_unchanged_backup_confirms_the_last_snapshot_without_restic(node: Node):
    first = node.backup()
    code, again, processes = _restic_processes(node, "backup")
    assert code == 0, again
    assert again["unchanged"] is True and again["snapshot_id"] == first
    assert processes == [], "an unchanged backup starts no restic process"

    code, listed = node.run("snapshots")
    assert code == 0, listed
    assert [item.get("confirms") for item in listed["snapshots"]] == [None, first]

    code, state = node.run("status")
    last = state["nodes"][0]["last_good_backup"]
    assert last["time"] == again["time"], state  # the RPO runs from the confirmation
    recorded = json.loads((node.state / "status" / f"{node.name}.json").read_text())
    ends = recorded["last_backup"]["certificates"]  # the fleet page's calendar, either way
    assert [end["path"] for end in ends if end["kind"] == "tls"] == [
        entry.path
        for entry in manifest.parse(
            (node.root / MANIFEST_PATH.lstrip("/")).read_bytes()
        ).certificates
    ] and ends, ends

    code, verified = node.run("verify")
    assert code == 0, verified

    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    code, plan = node.run("restore", "--at", at, "--target", str(node.workspace / "t"), "--dry-run")
    assert code == 0 and plan["snapshot_id"] == first, plan


def test_a_drill_counts_the_rpo_from_the_newest_confirmation(node: Node):
    first = node.backup()
    code, listed = node.run("snapshots")
    snapshot_time = datetime.fromisoformat(listed["snapshots"][0]["time"].replace("Z", "+00:00"))
    time.sleep(3)  # the confirmation is newer than the snapshot by this much: what is measured
    code, again = node.run("backup")
    assert code == 0 and again["unchanged"] is True and again["snapshot_id"] == first, again
    code, drilled = node.run("drill")
    assert drilled["snapshot_id"] == first, drilled
    started = datetime.fromisoformat(drilled["started"].replace("Z", "+00:00"))
    confirmed = datetime.fromisoformat(again["time"].replace("Z", "+00:00"))
    # (the documents' times are whole seconds, the drill measures from the precise ones)
    assert abs(drilled["rpo_seconds"] - (started - confirmed).total_seconds()) <= 1
    assert drilled["rpo_seconds"] < (started - snapshot_time).total_seconds() - 2


def test_a_change_after_an_unchanged_run_makes_a_snapshot(node: Node):
    first = node.backup()
    assert node.run("backup")[1]["unchanged"] is True
    banner = node.root / "etc/issue.net"
    banner.write_text(banner.read_text() + "Changed.\n")
    code, changed = node.run("backup")
    assert code == 0 and changed["unchanged"] is False and changed["snapshot_id"] != first
    assert changed["previous"] == first


def test_a_tampered_freshness_entry_is_not_believed(node: Node):
    first = node.backup()
    node.run("backup")
    loaded = load_config(node.config)[0]
    storage = Storage(loaded.repository)
    head = storage.get_json(catalog.head_key(node.name))
    record = json.loads(head["record"])
    record["confirmations"].append({"snapshot_id": first, "time": "2099-01-01T00:00:00Z"})
    storage.put_json(
        catalog.head_key(node.name), {**head, "record": json.dumps(record, sort_keys=True)}
    )
    code, listed = node.run("snapshots")
    assert code == 0, listed
    assert all(item["time"] < "2099" for item in listed["snapshots"])
    assert [item.get("confirms") for item in listed["snapshots"]] == [None]
