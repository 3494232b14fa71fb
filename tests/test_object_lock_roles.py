"""With object lock on, the backup role's credentials cannot delete locked history: a local S3
with a second, non-admin identity (Read/Write/List, as policies/iam/ gives the backup role),
real restic and drkit."""

from __future__ import annotations

import botocore.exceptions
import pytest
from nodes import Node, fresh_repository, make_workspace

from drkit.locals3 import LocalS3

pytestmark = pytest.mark.integration


@pytest.fixture
def roles_s3(monkeypatch):
    """A local S3 of its own with an admin and a backup identity; the admin's in os.environ."""
    server = LocalS3(backup_identity=True)
    server.start()
    try:
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in server.env().items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        yield server
    finally:
        server.stop()


def _refused(call) -> str:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"]
    return "allowed"


def test_backup_role_cannot_delete_locked_versions(roles_s3: LocalS3, tmp_path):
    repository = fresh_repository(roles_s3, tmp_path, prefix="node")
    node = Node(make_workspace(), repository)  # the admin makes the locked bucket
    try:
        # the backup role is enough to back up
        code, made = node.run("backup", env=roles_s3.backup_env())
        assert code == 0, made
        backup, admin = roles_s3.client("backup"), roles_s3.client()
        bucket = repository.bucket
        for suffix in ("json", "sig"):  # and to store the catalog beside the repository
            key = f"manifests/{node.name}/{made['snapshot_id']}.{suffix}"
            assert backup.head_object(Bucket=bucket, Key=key)["ContentLength"] > 0
        versions = backup.list_object_versions(Bucket=bucket, Prefix="node/")["Versions"]
        assert len(versions) >= 5  # config, keys, snapshot, index, data
        snapshot_keys = [v["Key"] for v in versions if v["Key"].startswith("node/snapshots/")]
        assert snapshot_keys

        # permanent deletion of any locked version is refused, with or without the bypass
        for bypass in (False, True):
            refusals = {
                _refused(
                    lambda v=v, bypass=bypass: backup.delete_object(
                        Bucket=bucket,
                        Key=v["Key"],
                        VersionId=v["VersionId"],
                        BypassGovernanceRetention=bypass,
                    )
                )
                for v in versions
            }
            assert refusals == {"AccessDenied"}, bypass
        batch = backup.delete_objects(
            Bucket=bucket,
            BypassGovernanceRetention=True,
            Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]},
        )
        assert len(batch.get("Errors", [])) == len(versions) and not batch.get("Deleted")
        # nor can it shorten a retention or switch the lock or versioning off
        first = versions[0]
        assert (
            _refused(
                lambda: backup.put_object_retention(
                    Bucket=bucket,
                    Key=first["Key"],
                    VersionId=first["VersionId"],
                    BypassGovernanceRetention=True,
                    Retention={"Mode": "GOVERNANCE", "RetainUntilDate": "2020-01-01T00:00:00Z"},
                )
            )
            == "AccessDenied"
        )
        off = {"ObjectLockEnabled": "Enabled"}
        assert (
            _refused(
                lambda: backup.put_object_lock_configuration(
                    Bucket=bucket, ObjectLockConfiguration=off
                )
            )
            == "AccessDenied"
        )
        suspend = {"Status": "Suspended"}
        assert _refused(
            lambda: backup.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=suspend)
        ) in {"AccessDenied", "InvalidBucketState"}

        # a plain delete (what a thief with these credentials can do) only adds delete markers
        for key in snapshot_keys:
            marker = backup.delete_object(Bucket=bucket, Key=key)
            assert marker.get("DeleteMarker") is True
        assert node.restic("snapshots", "--json").stdout.strip() in ("[]", "null")
        listed = admin.list_object_versions(Bucket=bucket, Prefix="node/")
        assert {(v["Key"], v["VersionId"]) for v in versions} <= {
            (v["Key"], v["VersionId"]) for v in listed["Versions"]
        }, "every locked version is still there"

        # recovery: the admin removes the markers, and the repository is intact
        # (only the markers the thief added: restic's own removed locks stay removed)
        for item in listed.get("DeleteMarkers", []):
            if item["Key"] in snapshot_keys and item["IsLatest"]:
                admin.delete_object(Bucket=bucket, Key=item["Key"], VersionId=item["VersionId"])
        checked = node.restic("check")
        assert checked.returncode == 0, checked.stderr
        code, verified = node.run("verify", "--spot", "3")
        assert code == 0, verified
        assert verified["snapshots"]["verified"] == 1
        assert verified["chain"]["ok"]
    finally:
        node.remove()
