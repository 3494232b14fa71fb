"""S3 faults: every `drkit backup` through a fault-injecting proxy (503, dropped connections,
lost answers, slow answers for a seeded fraction of requests) succeeds through retries, with no
manual step between runs; an outage fails with one clear error; never a corrupt repository or
a false success.

Seed: $DRKIT_FAULT_SEED (default 7); the proxy's decisions are repeatable from it (s3proxy).
"""

from __future__ import annotations

import json
import os
import time

import figures
import pytest
import yaml
from nodes import Node
from s3proxy import FaultProxy

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("DRKIT_FAULT_SEED", "7"))
RUNS = 3
FRACTION = 0.15


def _endpoint(node: Node, endpoint: str) -> None:
    settings = yaml.safe_load(node.config.read_text())
    settings["repository"]["s3_endpoint"] = endpoint
    node.config.write_text(yaml.safe_dump(settings))


def _check_clean(node: Node) -> None:
    """`restic check` without taking a lock: whatever locks a run left are drkit's to handle."""
    checked = node.restic("check", "--no-lock")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_backup_through_s3_faults_succeeds(node: Node, local_s3):
    made: list[str] = []
    started = time.monotonic()
    with FaultProxy(local_s3.endpoint, fraction=FRACTION, seed=SEED) as proxy:
        _endpoint(node, proxy.endpoint)
        for run in range(RUNS):
            (node.root / "srv" / f"fault-{run}.txt").parent.mkdir(exist_ok=True)
            (node.root / "srv" / f"fault-{run}.txt").write_text(f"run {run}\n" * 1000)
            code, document = node.run("backup")
            assert code == 0 and document["ok"] is True, (run, document, dict(proxy.counts))
            made.append(document["snapshot_id"])
        counts = dict(proxy.counts)
    faults = {name: counts.get(name, 0) for name in ("503", "drop", "lost", "slow")}
    assert sum(faults.values()) > 0, counts
    figures.record(
        "s3_faults",
        backups=RUNS,
        succeeded=len(made),
        requests=counts["requests"],
        faults=faults,
        fraction=FRACTION,
        seconds=round(time.monotonic() - started, 1),
        seed=SEED,
    )

    # no false success: every snapshot reported made is in the repository, signed and chained
    _endpoint(node, local_s3.endpoint)
    _check_clean(node)
    listed = json.loads(node.restic("snapshots", "--json").stdout)
    assert set(made) == {item["id"] for item in listed}
    code, verified = node.run("verify", "--spot", "3")
    assert code == 0, verified
    assert verified["snapshots"]["verified"] == len(listed) == RUNS


def test_an_s3_outage_during_a_backup_gives_up_in_bounded_time_and_leaves_no_snapshot(
    node: Node, local_s3
):
    before = node.backup()
    settings = yaml.safe_load(node.config.read_text())
    settings["repository"]["outage_limit"] = "10s"
    node.config.write_text(yaml.safe_dump(settings))
    # the backup's own probe passes; restic then meets nothing but 503s and dropped connections
    with FaultProxy(
        local_s3.endpoint, fraction=0.0, seed=SEED, faults=("503", "drop"), outage_after=1
    ) as proxy:
        _endpoint(node, proxy.endpoint)
        started = time.monotonic()
        code, document = node.run("backup")
        took = time.monotonic() - started
    assert code == 4 and document["ok"] is False, document
    error = document["error"]["message"]
    assert "S3 failed every probe" in error and "no snapshot was made" in error
    assert "\n" not in error and "Traceback" not in json.dumps(document)
    assert took < 90, f"gave up after {took:.0f} s"
    figures.record("s3_outage", gave_up_after_seconds=round(took, 1), outage_limit="10s")

    _endpoint(node, local_s3.endpoint)
    listed = json.loads(node.restic("snapshots", "--json").stdout)
    assert [item["id"] for item in listed] == [before], "no false success"
    _check_clean(node)
    after = node.backup()  # the next run needs no manual step
    assert after != before
