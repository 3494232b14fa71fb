"""The IAM policies in policies/iam/: valid documents that grant what each role needs and deny
what would let a leaked key destroy history."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

POLICIES = Path(__file__).resolve().parents[1] / "policies" / "iam"
DESTRUCTIVE = {"s3:DeleteObjectVersion", "s3:BypassGovernanceRetention"}


def _statements(name: str) -> list[dict]:
    document = json.loads((POLICIES / name).read_text())
    assert document["Version"] == "2012-10-17"
    return document["Statement"]


def _actions(statement: dict) -> set[str]:
    actions = statement.get("Action", [])
    return {actions} if isinstance(actions, str) else set(actions)


def _allowed(name: str) -> set[str]:
    return set().union(*(_actions(s) for s in _statements(name) if s["Effect"] == "Allow"))


def _denied(name: str) -> set[str]:
    return set().union(*(_actions(s) for s in _statements(name) if s["Effect"] == "Deny"))


@pytest.mark.parametrize("name", ["backup-role.json", "restore-role.json", "admin-role.json"])
def test_policy_is_valid_and_scoped_to_the_bucket(name):
    for statement in _statements(name):
        assert statement["Effect"] in ("Allow", "Deny") and statement.get("Sid")
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            assert resource.startswith("arn:aws:s3:::BUCKET"), resource
        assert not any(action in ("*", "s3:*") for action in _actions(statement))


def test_backup_role_writes_but_cannot_destroy_history():
    allowed, denied = _allowed("backup-role.json"), _denied("backup-role.json")
    assert {"s3:PutObject", "s3:GetObject", "s3:ListBucket"} <= allowed
    assert denied >= DESTRUCTIVE and not DESTRUCTIVE & allowed
    assert {"s3:PutBucketVersioning", "s3:PutBucketObjectLockConfiguration",
            "s3:PutObjectRetention", "s3:PutLifecycleConfiguration"} <= denied  # fmt: skip
    deletes = [s for s in _statements("backup-role.json")
               if s["Effect"] == "Allow" and "s3:DeleteObject" in _actions(s)]  # fmt: skip
    assert all(s["Resource"] == "arn:aws:s3:::BUCKET/PREFIX/locks/*" for s in deletes)


def test_restore_role_only_reads():
    allowed = _allowed("restore-role.json")
    assert {"s3:GetObject", "s3:ListBucket"} <= allowed
    assert not DESTRUCTIVE & allowed
    writes = [s for s in _statements("restore-role.json")
              if s["Effect"] == "Allow" and "s3:PutObject" in _actions(s)]  # fmt: skip
    assert all(s["Resource"] == "arn:aws:s3:::BUCKET/PREFIX/locks/*" for s in writes)


def test_admin_role_destroys_history_only_with_mfa():
    for statement in _statements("admin-role.json"):
        if DESTRUCTIVE & _actions(statement):
            assert statement["Condition"] == {"Bool": {"aws:MultiFactorAuthPresent": "true"}}
