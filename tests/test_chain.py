"""Tamper evidence end to end: `drkit verify` walks the signed manifest chain and sees a storage
rollback (real SeaweedFS with object lock, real restic)."""

from __future__ import annotations

import json

import pytest
import yaml
from nodes import Node

from drkit.engines.catalog import head_key
from drkit.engines.storage import Storage

pytestmark = pytest.mark.integration


def _verify(node: Node) -> tuple[int, dict]:
    return node.run("verify", "--spot", "0")


def test_chain_links_every_snapshot_and_a_forgotten_one_breaks_it(node: Node):
    ids = [node.backup() for _ in range(3)]
    code, verified = _verify(node)
    assert code == 0, verified
    assert verified["chain"]["ok"] and verified["chain"]["links"] == 2
    assert verified["chain"]["head"]["snapshot_id"] == ids[-1]

    # a snapshot deleted behind drkit's back (plain restic, no signed record)
    forgotten = node.restic("forget", ids[1])
    assert forgotten.returncode == 0, forgotten.stderr
    code, verified = _verify(node)
    assert code == 1 and verified["ok"] is False
    assert [(b["kind"], b["previous"]) for b in verified["chain"]["broken"]] == [
        ("deleted", ids[1])
    ]
    assert any("broken chain" in p and ids[1] in p for p in verified["problems"])

    # a prune record that drkit did not sign explains nothing
    storage = Storage(node.repository)
    forged = {"kind": "prune", "node": "sftp-1", "removed": [{"id": ids[1]}]}
    storage.put_json("records/sftp-1/prune-20260101T000000000000Z.json", {"record": forged})
    code, verified = _verify(node)
    assert code == 1
    assert [b["previous"] for b in verified["chain"]["broken"]] == [ids[1]]
    assert any("prune record" in p and "not a signed record" in p for p in verified["problems"])


def test_a_gap_left_by_drkit_prune_is_explained_by_its_signed_record(node: Node):
    ids = [node.backup() for _ in range(2)]
    settings = yaml.safe_load(node.config.read_text())
    settings["retention"] = {"last": 1, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0}
    settings["retention"]["yearly"] = 0
    node.config.write_text(yaml.safe_dump(settings))
    code, pruned = node.run("prune")
    assert code == 0, pruned
    assert [item["id"] for item in pruned["removed"]] == ids[:1] and pruned["record"]
    code, verified = _verify(node)
    assert code == 0, verified
    assert verified["chain"]["ok"] and verified["chain"]["explained_gaps"] == [ids[0]]
    assert verified["chain"]["broken"] == [] and verified["chain"]["rollback"] == []


def test_rollback_of_the_newest_snapshot_is_seen(node: Node):
    ids = [node.backup() for _ in range(2)]
    assert Storage(node.repository).get_json(head_key("sftp-1")) is not None
    forgotten = node.restic("forget", ids[-1])  # storage rolled back to before the last backup
    assert forgotten.returncode == 0, forgotten.stderr
    code, verified = _verify(node)
    assert code == 1 and verified["ok"] is False
    assert verified["chain"]["broken"] == [], "what is left still links"
    sources = {item["source"] for item in verified["chain"]["rollback"]}
    assert sources == {"signed chain head", "chain record on this machine"}
    assert any(p.startswith("rollback:") and ids[-1] in p for p in verified["problems"])

    # the signed head alone is enough (a rebuilt machine has no local chain record)
    (node.state / "chain" / "sftp-1.json").unlink()
    code, verified = _verify(node)
    assert code == 1
    assert [item["source"] for item in verified["chain"]["rollback"]] == ["signed chain head"]

    # a head put back to the older version, with the snapshots: versioning still holds the newer
    storage = Storage(node.repository)
    versions = storage.versions(head_key("sftp-1"))
    assert len(versions) == 2 and versions[0].latest
    older = storage.get_bytes(head_key("sftp-1"), versions[1].version_id)
    assert ids[0] in older.decode()
    storage.put_bytes(head_key("sftp-1"), older, "application/json")
    code, verified = _verify(node)
    assert code == 1
    by_source = {item["source"]: item for item in verified["chain"]["rollback"]}
    assert set(by_source) == {"versions of the chain head", "signed chain head"}
    assert "put back to an older version" in by_source["versions of the chain head"]["detail"]
    assert verified["chain"]["head"]["snapshot_id"] == ids[-1]

    # and a head hidden behind a delete marker
    storage.client.delete_object(Bucket=storage.bucket, Key=head_key("sftp-1"))
    code, verified = _verify(node)
    assert code == 1
    assert any("was deleted" in p and ids[-1][:8] in p for p in verified["problems"])

    # a head record altered in the bucket is itself a rollback finding
    stored = json.loads(older)
    record = json.loads(stored["record"])
    record["snapshot_id"] = ids[-1]
    stored["record"] = json.dumps(record, sort_keys=True)
    storage.put_json(head_key("sftp-1"), stored)
    code, verified = _verify(node)
    assert code == 1
    assert any("chain head" in p and "does not verify" in p for p in verified["problems"])
