"""Exact retention against real restic and SeaweedFS: a `retention` section applies exactly the
keep rules it names (the defaults only when the section is absent), and `prune --dry-run` names
the rule that keeps each snapshot, from restic's own reasons.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from nodes import Node
from typer.testing import CliRunner

from drkit.cli import app
from drkit.config import DEFAULT_RETENTION

pytestmark = pytest.mark.integration

# five snapshots on five days: under the old defaults-filled rules (daily 14, …) all five stay
DAYS = [f"2025-03-0{day} 10:00:00" for day in range(1, 6)]


@pytest.fixture
def node(node_root: Path, s3_repository) -> Node:
    made = Node(node_root, s3_repository)
    for moment in DAYS:
        done = made.restic(
            "backup", "--host", "sftp-1", "--tag", "drkit", "--tag", "node:sftp-1",
            "--tag", "profile:openssh", "--time", moment, "-o", "s3.bucket-lookup=path",
            "etc", cwd=made.root,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return made


def _set_retention(node: Node, retention: dict | None) -> None:
    data = yaml.safe_load(node.config.read_text())
    if retention is None:
        data.pop("retention", None)
    else:
        data["retention"] = retention
    node.config.write_text(yaml.safe_dump(data))


def _times(items: list[dict]) -> list[str]:
    return [item["time"] for item in items]


def test_init_writes_the_full_retention_section(node: Node):
    assert yaml.safe_load(node.config.read_text())["retention"] == DEFAULT_RETENTION


def test_last_3_keeps_exactly_3_and_dry_run_names_the_rule(node: Node):
    _set_retention(node, {"last": 3})
    code, planned = node.run("prune", "--dry-run")
    assert code == 0, planned
    assert planned["keep_rules"] == {"last": 3}
    assert "keep" not in planned and "remove" not in planned  # one pair: kept and removed
    assert _times(planned["kept"]) == [f"2025-03-0{day}T10:00:00Z" for day in (3, 4, 5)]
    assert [item["rules"] for item in planned["kept"]] == [["last"]] * 3
    assert _times(planned["removed"]) == ["2025-03-01T10:00:00Z", "2025-03-02T10:00:00Z"]
    assert set(planned["removed"][0]) == {"id", "short_id", "time", "tags"}
    assert planned["snapshot_count"] == 3

    # the human output names the keeping rule on each kept snapshot's line
    shown = CliRunner().invoke(
        app, ["prune", "--dry-run", "--config", str(node.config)], env={"COLUMNS": "200"}
    )
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.output.splitlines() if "2025-03-0" in line]
    assert [("keep" in row, "last" in row) for row in rows] == [(False, False)] * 2 + [
        (True, True)
    ] * 3, shown.output
    assert "would remove 2, kept 3" in shown.output

    code, pruned = node.run("prune")
    assert code == 0, pruned
    listed = node.restic("snapshots", "--json", "-o", "s3.bucket-lookup=path")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 3


def test_no_section_applies_the_defaults(node: Node):
    _set_retention(node, None)
    code, planned = node.run("prune", "--dry-run")
    assert code == 0, planned
    assert planned["keep_rules"] == DEFAULT_RETENTION
    assert len(planned["kept"]) == 5 and planned["removed"] == []
    newest = planned["kept"][-1]["rules"]
    assert {"last", "daily", "weekly", "monthly", "yearly"} <= set(newest), newest
    assert all("daily" in item["rules"] for item in planned["kept"])
