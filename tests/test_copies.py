"""A second copy: the primary bucket deleted outright, the node rebuilt from the copy.

Two SeaweedFS on 127.0.0.1 (the primary's S3 and the copy's), real restic copy, the sample node.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3
import pytest
import yaml
from nodes import Node, fresh_repository, make_workspace

from drkit.engines import manifest
from drkit.locals3 import LocalS3

pytestmark = pytest.mark.integration


@pytest.fixture
def second_s3(local_s3):
    """A second S3 answering the same credentials (restic copy reaches both with one set)."""
    server = LocalS3()
    server.access_key, server.secret_key = local_s3.access_key, local_s3.secret_key
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _delete_bucket(local_s3, bucket: str) -> None:
    """Delete an object-locked bucket outright, as a lost account or region would."""
    client = boto3.client(
        "s3", endpoint_url=local_s3.endpoint, region_name=local_s3.region,
        aws_access_key_id=local_s3.access_key, aws_secret_access_key=local_s3.secret_key,
    )  # fmt: skip
    listed = client.list_object_versions(Bucket=bucket)
    for item in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
        client.delete_object(
            Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"],
            BypassGovernanceRetention=True,
        )  # fmt: skip
    client.delete_bucket(Bucket=bucket)


def test_the_node_is_rebuilt_from_its_copy_after_the_primary_bucket_is_gone(
    local_s3, second_s3, tmp_path: Path
):
    node = Node(make_workspace(), fresh_repository(local_s3, tmp_path, "sftp-1"))
    try:
        copy_bucket = "c-" + uuid.uuid4().hex[:12]
        settings = yaml.safe_load(node.config.read_text())
        settings["repository"]["copies"] = [
            {"name": "offsite", "s3_endpoint": second_s3.endpoint, "bucket": copy_bucket,
             "prefix": "sftp-1", "object_lock": {"mode": "GOVERNANCE", "days": 1}},
        ]  # fmt: skip
        node.config.write_text(yaml.safe_dump(settings))
        code, prepared = node.run("storage", "init", "--create")  # the copy's bucket too
        assert code == 0 and prepared["copies"][0]["bucket"] == copy_bucket, prepared
        assert prepared["copies"][0]["created"] is True
        code, verified = node.run("storage", "verify")
        assert code == 0 and [c["ok"] for c in verified["copies"]] == [True], verified
        node.backup()
        second = node.backup()
        code, primary = node.run("snapshots")
        assert code == 0, primary

        code, copied = node.run("copy")
        assert code == 0, copied
        copied_state = copied["copies"][0]
        assert copied_state["snapshot_count"] == 2 and copied_state["newest"] == second
        code, state = node.run("status")
        copies = state["nodes"][0]["copies"]
        assert [(c["name"], c["rpo_ok"]) for c in copies] == [("offsite", True)], state
        assert copies[0]["lag_seconds"] < 60
        code, again = node.run("copy")  # nothing new: restic skips, head and key refreshed
        assert code == 0 and again["copies"][0]["snapshot_count"] == 2

        # retention per copy: the copy keeps its own number of snapshots, the primary its own
        settings = yaml.safe_load(node.config.read_text())
        settings["retention"] = {"last": 5}
        settings["repository"]["copies"][0]["retention"] = {"last": 1}
        node.config.write_text(yaml.safe_dump(settings))
        code, pruned = node.run("prune")
        assert code == 0, pruned
        assert (len(pruned["kept"]), pruned["removed"]) == (2, []), pruned
        (offsite,) = pruned["copies"]
        assert (offsite["name"], offsite["ok"], offsite["kept"]) == ("offsite", True, 1), offsite
        assert len(offsite["removed"]) == 1 and offsite["keep_rules"] == {"last": 1}

        _delete_bucket(local_s3, node.repository.bucket)
        code, gone = node.run("snapshots")
        assert code == 4, gone
        code, listed = node.run("snapshots", "--from", "offsite")
        assert code == 0, listed
        # restic copy writes new snapshot records (their `original` is the primary's id): the
        # same trees at the same times
        times = [item["time"] for item in listed["snapshots"]]
        assert times == [item["time"] for item in primary["snapshots"]][-1:]  # the copy's last

        target = node.workspace / "rebuilt"
        code, restored = node.run("restore", "latest", "--from", "offsite", "--target", str(target))
        assert code == 0, restored
        assert restored["snapshot_id"] == listed["snapshots"][-1]["id"]
        config_file = target / "etc/ssh/sshd_config"
        original = node.root / "etc/ssh/sshd_config"
        assert manifest.sha256_file(config_file) == manifest.sha256_file(original)
        code, drilled = node.run("drill", "--from", "offsite")  # the primary is gone
        assert code == 0 and drilled["from_copy"] == "offsite", drilled
        assert drilled["snapshot_id"] == restored["snapshot_id"]
        code, unknown = node.run("restore", "latest", "--from", "nowhere", "--target", str(target))
        assert code == 2 and "no copy named nowhere" in unknown["error"]["message"]
    finally:
        node.remove()
