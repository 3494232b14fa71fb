"""Rollback protection end to end (real SeaweedFS with versioning, real restic): `latest` that
resolves to an older signed state than the node published is refused by restore, drill and
standby sync (exit 6, naming both snapshots) unless --allow-rollback."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from nodes import SMOKE_USER, Node, drkit, init_node

from devtools import sample_node
from drkit.engines import manifest
from drkit.engines.catalog import head_key
from drkit.engines.storage import Storage
from drkit.model import Manifest

pytestmark = pytest.mark.integration


def _two_states(node: Node) -> tuple[str, str]:
    """Back up the node, revoke a user key, back up again; return both snapshot ids."""
    first = node.backup()
    keys = sorted(node.root.glob("home/*/.ssh/authorized_keys")) or sorted(
        node.root.glob("srv/**/authorized_keys")
    )
    if keys:
        keys[0].write_text("")  # the revoked key: the newer state holds none
    else:
        (node.root / "etc/issue.net").write_text("newer state\n")
    second = node.backup()
    assert first != second
    return first, second


def _refused(document: dict, older: str, newer: str) -> None:
    message = document["error"]["message"]
    assert "rollback" in message and "--allow-rollback" in message, message
    assert older[:8] in message and newer[:8] in message, message


def test_an_old_signed_snapshot_backed_up_again_is_refused_as_latest(node: Node, tmp_path: Path):
    first, second = _two_states(node)
    # the attacker (repository password) restores the old snapshot and backs it up again
    old_tree = node.workspace / "old-tree"
    restored = node.restic("restore", first, "--target", str(old_tree))
    assert restored.returncode == 0, restored.stderr
    listed = json.loads((old_tree / manifest.MANIFEST_PATH.lstrip("/")).read_bytes())
    leaves = manifest.leaf_paths(Manifest.model_validate(listed))
    made = node.restic(
        "backup", "--json", "--host", node.name, "--tag", "drkit", "--tag",
        f"node:{node.name}", "--tag", "profile:openssh", *leaves,
        manifest.SNAPSHOT_DIR.lstrip("/"), cwd=old_tree,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    replayed = json.loads(made.stdout.splitlines()[-1])["snapshot_id"]

    target = tmp_path / "target"
    code, document = node.run("restore", "latest", "--target", str(target))
    assert code == 6, (first[:8], second[:8], replayed[:8], node.restic("snapshots").stdout)
    _refused(document, replayed, second)
    assert not target.exists() or not any(target.rglob("*"))

    code, document = node.run("drill")
    assert code == 6, document
    _refused(document, replayed, second)

    # an explicit id is the operator's choice; --allow-rollback takes `latest` as it is
    code, document = node.run("restore", "latest", "--target", str(target), "--allow-rollback")
    assert code == 0 and document["snapshot_id"] == replayed, document
    shutil.rmtree(old_tree, ignore_errors=True)


def test_a_delete_marker_on_the_newest_snapshot_is_refused(node: Node, tmp_path: Path):
    first, second = _two_states(node)
    storage = Storage(node.repository)
    key = f"{node.repository.prefix.strip('/')}/snapshots/{second}"
    storage.client.delete_object(Bucket=storage.bucket, Key=key)  # a marker, not a deletion

    target = tmp_path / "target"
    code, document = node.run("restore", "latest", "--target", str(target))
    assert code == 6, document
    _refused(document, first, second)
    assert not target.exists() or not any(target.rglob("*"))

    # a rebuilt machine (bare metal: no state directory of its own) has the signed head
    code, document = drkit(
        "restore", "latest", "--target", str(target),
        "--s3-endpoint", node.repository.s3_endpoint, "--bucket", node.repository.bucket,
        "--prefix", node.repository.prefix, "--node", node.name,
        "--password-file", str(node.repository.password_file), "--trust-key", node.signer,
    )  # fmt: skip
    assert code == 6, document
    _refused(document, first, second)

    code, document = node.run("restore", first, "--target", str(target))
    assert code == 0 and document["snapshot_id"] == first, document


def test_this_machines_record_refuses_a_rollback_the_head_no_longer_shows(
    node: Node, tmp_path: Path
):
    first, second = _two_states(node)
    seen = list((node.state / "seen").glob(f"{node.name}-*.json"))
    assert len(seen) == 1 and json.loads(seen[0].read_text())["snapshot_id"] == second
    assert oct(seen[0].stat().st_mode & 0o777) == "0o600"
    # plain restic forgets the newest snapshot, and the head object is deleted outright
    assert node.restic("forget", second).returncode == 0
    storage = Storage(node.repository)
    for version in storage.versions(f"records/{node.name}/head.json"):
        storage.client.delete_object(
            Bucket=storage.bucket, Key=f"records/{node.name}/head.json",
            VersionId=version.version_id, BypassGovernanceRetention=True,
        )  # fmt: skip
    code, document = node.run("restore", "latest", "--target", str(tmp_path / "target"))
    assert code == 6, document
    _refused(document, first, second)
    assert "this machine's record" in document["error"]["message"]


def test_standby_sync_refuses_an_older_latest(node_root: Path, s3_repository):
    active_root, passive_root = node_root / "active", node_root / "passive"
    sample_node.build(active_root, smoke_user=SMOKE_USER, chroot=True)
    subprocess.run(["cp", "-a", str(active_root), str(passive_root)], check=True)
    works = []
    for name in ("active", "passive"):
        works.append(node_root / f"{name}-work")
        works[-1].mkdir(mode=0o755)
    active, _ = init_node(active_root, s3_repository, works[0], None, None, "sftp-1")
    passive, _ = init_node(passive_root, s3_repository, works[1], None, None, "sftp-2")
    settings = yaml.safe_load(passive.read_text())
    settings["standby"] = {"source": "sftp-1"}
    settings["trusted_keys"] += yaml.safe_load(active.read_text())["trusted_keys"]
    passive.write_text(yaml.safe_dump(settings, sort_keys=False))
    ids = []
    for text in ("first state\n", "second state\n"):
        (active_root / "etc/issue.net").write_text(text)
        code, document = drkit("backup", "--config", str(active))
        assert code == 0, document
        ids.append(document["snapshot_id"])
    storage = Storage(s3_repository)
    head = json.loads(storage.get_json(head_key("sftp-1"))["record"])
    assert head["snapshot_id"] == ids[1], "the head names the newest snapshot"
    key = f"{s3_repository.prefix.strip('/')}/snapshots/{ids[1]}"
    storage.client.delete_object(Bucket=storage.bucket, Key=key)
    code, document = drkit("standby", "sync", "--config", str(passive))
    assert code == 6, (ids, document)
    _refused(document, ids[0], ids[1])
    code, document = drkit("standby", "sync", "--allow-rollback", "--config", str(passive))
    assert code == 0 and document["snapshot_id"] == ids[0], document
