"""Documented retention behaviour: `group_pruner: false` forgets this node's snapshots but
leaves the repository-wide `restic prune` to the group's pruner (no pack is removed)."""

from __future__ import annotations

import json
import os

import boto3
import pytest
import yaml
from nodes import Node

pytestmark = pytest.mark.integration


def packs(node: Node) -> set[str]:
    repository = node.repository
    client = boto3.client("s3", endpoint_url=repository.s3_endpoint, region_name=repository.region)
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=repository.bucket, Prefix=f"{repository.prefix}/data/"
    )
    return {entry["Key"] for page in pages for entry in page.get("Contents", [])}


def test_group_pruner_false_forgets_without_pruning(node: Node):
    changing = node.root / "var/log/sftp/changing.log"
    made = []
    for _ in range(3):
        changing.write_bytes(os.urandom(64 << 10))  # each snapshot has data of its own
        made.append(node.backup())
    data = yaml.safe_load(node.config.read_text())
    data.update(group_pruner=False, retention={"last": 1})
    node.config.write_text(yaml.safe_dump(data))
    before = packs(node)

    code, pruned = node.run("prune")
    assert code == 0, pruned
    assert pruned["pruned"] is False, pruned
    removed = sorted(item["id"][:8] for item in pruned["removed"])
    assert removed == sorted(snapshot[:8] for snapshot in made[:2]), pruned
    listed = node.restic("snapshots", "--json", "--host", node.name)
    assert listed.returncode == 0, listed.stderr
    assert [s["id"] for s in json.loads(listed.stdout)] == [made[-1]]
    assert packs(node) == before, "no restic prune: the forgotten snapshots' packs stay"
