"""The catalog beside the repository: restic processes per command, fallbacks, tampering.

Every command here runs through a restic wrapper that logs each process it starts, on a real
node backed up into SeaweedFS: restore and drill run one restic process (the restore), show and
diff none, verify `check` and one restore. Where the catalog cannot answer (its objects gone,
its head untrusted, a snapshot no head lists) restic answers, and a snapshot reached without a
signed id is screened as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from nodes import RESTIC, Node, fresh_repository, make_workspace

from drkit import errors
from drkit.engines import catalog, keys, manifest
from drkit.engines.storage import Storage
from drkit.model import Manifest

pytestmark = pytest.mark.integration


def backed_up_twice(local_s3, secret_dir: Path) -> Node:
    """A node with two snapshots (the second adds a line to sshd_config) and a restic wrapper
    that counts the processes a command starts."""
    made = Node(make_workspace(), fresh_repository(local_s3, secret_dir, prefix="sftp-1"))
    made.first = made.backup()
    config = made.root / "etc/ssh/sshd_config"
    config.write_text(config.read_text() + "\nClientAliveInterval 120\n")
    made.second = made.backup()
    calls = made.workspace / "restic-calls.log"
    wrapper = made.workspace / "restic-counting"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> "{calls}"\nexec {RESTIC} "$@"\n')
    wrapper.chmod(0o755)
    made.counted = {"DRKIT_RESTIC": str(wrapper)}
    made.calls = calls
    return made


@pytest.fixture(scope="module")
def node(local_s3, tmp_path_factory):
    """The file's shared node: a test that changes its snapshots puts them back."""
    made = backed_up_twice(local_s3, tmp_path_factory.mktemp("catalog-secret"))
    try:
        yield made
    finally:
        made.remove()


@pytest.fixture
def own_node(local_s3, tmp_path: Path):
    """A node of the test's own, for a test that forgets one of its snapshots."""
    made = backed_up_twice(local_s3, tmp_path)
    try:
        yield made
    finally:
        made.remove()


def counted(node: Node, *args: str) -> tuple[int, dict, list[str]]:
    """Run a drkit command through the counting wrapper; return (exit, document, the restic
    processes that opened the repository: `version`, asked once per binary, opens nothing)."""
    node.calls.write_text("")
    code, document = node.run(*args, env=node.counted)
    return code, document, [p for p in node.calls.read_text().split() if p != "version"]


def catalog_key(node: Node) -> bytes:
    """Return the node's catalog key as the repository password unwraps it."""
    blob = Storage(node.repository).get_bytes(catalog.key_object_key(node.name))
    return catalog.unwrap_key(blob, node.repository.password_file, node.name)


def restore_target(node: Node, name: str) -> Path:
    target = node.workspace / name
    shutil.rmtree(target, ignore_errors=True)
    return target


def test_commands_run_the_restic_processes_the_catalog_leaves(node):
    code, document, processes = counted(
        node, "restore", "latest", "--target", str(restore_target(node, "r-latest"))
    )
    assert code == 0 and document["snapshot_id"] == node.second, document
    assert processes == ["restore"]
    code, document, processes = counted(
        node, "restore", "latest~1", "--target", str(restore_target(node, "r-older"))
    )
    assert code == 0 and document["snapshot_id"] == node.first and processes == ["restore"]
    code, document, processes = counted(node, "show", node.second[:10])
    assert code == 0 and document["signer"] == node.signer and processes == []
    code, document, processes = counted(node, "diff", "latest~1", "latest")
    assert code == 0 and processes == [], document
    changed = next(c for c in document["changes"] if c["path"] == "/etc/ssh/sshd_config")
    assert "+ClientAliveInterval 120" in changed["diff"]  # the text came from the sealed object
    code, document, processes = counted(node, "verify")
    assert code == 0 and document["snapshots"]["verified"] == 2, document
    assert processes == ["check", "restore"]


def test_manifest_objects_are_sealed_and_bound_to_their_key(node):
    storage = Storage(node.repository)
    key = catalog.bundle_key(node.name, node.second)
    sealed = storage.get_bytes(key)
    smoke_shadow = next(
        line for line in (node.root / "etc/shadow").read_text().splitlines()
        if line.startswith("drill")
    )  # fmt: skip
    assert b"sshd_config" not in sealed and smoke_shadow.split(":")[1].encode() not in sealed
    seal_key = catalog_key(node)
    bundle = catalog.Bundle.decode(catalog.unseal(seal_key, key, sealed), key)
    inside = node.restic("dump", node.second, manifest.MANIFEST_PATH).stdout.encode()
    assert bundle.manifest == inside  # byte for byte the copy inside the snapshot
    signature = storage.get_bytes(catalog.signature_key(node.name, node.second))
    assert keys.verify_signature(json.loads(signature), inside) == node.signer
    with pytest.raises(errors.Refused, match="does not open"):
        catalog.unseal(seal_key, catalog.bundle_key(node.name, node.first), sealed)


def test_missing_objects_fall_back_to_the_snapshot_still_bound(node):
    storage = Storage(node.repository)
    key = catalog.bundle_key(node.name, node.first)
    body = storage.get_bytes(key)
    storage.client.delete_object(Bucket=storage.bucket, Key=key)  # a delete marker
    try:
        code, document, processes = counted(
            node, "restore", node.first, "--target", str(restore_target(node, "r-fallback"))
        )
        assert code == 0, document
        assert processes == ["dump", "restore"]  # bound by the index: no listing screen
    finally:
        storage.put_bytes(key, body, "application/json")


def test_a_replaced_manifest_object_is_not_used_and_verify_calls_it_tampering(node):
    storage = Storage(node.repository)
    key = catalog.bundle_key(node.name, node.second)
    original = storage.get_bytes(key)
    seal_key = catalog_key(node)
    older = catalog.unseal(
        seal_key, catalog.bundle_key(node.name, node.first),
        storage.get_bytes(catalog.bundle_key(node.name, node.first)),
    )  # fmt: skip
    # an attacker with the password re-seals the older (validly signed) manifest under the
    # newer snapshot's name: the signed index's hash does not match it
    storage.put_bytes(key, catalog.seal(seal_key, key, older), "application/json")
    try:
        code, document, processes = counted(
            node, "restore", "latest", "--target", str(restore_target(node, "r-replaced"))
        )
        assert code == 0 and document["snapshot_id"] == node.second, document
        assert processes == ["dump", "restore"]
        code, document, _ = counted(node, "verify")
        assert code == 1, document
        assert any("tampering" in problem for problem in document["problems"]), document
    finally:
        storage.put_bytes(key, original, "application/json")


def test_an_untrusted_or_missing_head_leaves_restic_to_answer_with_the_screen(node):
    storage = Storage(node.repository)
    head_key = catalog.head_key(node.name)
    head = storage.get_bytes(head_key)
    storage.client.delete_object(Bucket=storage.bucket, Key=head_key)
    try:
        code, document, processes = counted(
            node, "restore", "latest", "--target", str(restore_target(node, "r-headless"))
        )
        assert code == 0 and document["snapshot_id"] == node.second, document
        assert sorted(processes) == ["dump", "ls", "restore"]  # the listing screen is back
    finally:
        storage.put_bytes(head_key, head, "application/json")


def test_a_forged_tree_under_a_legitimately_signed_manifest_is_refused(node):
    """An attacker with the repository password backs up a forged tree that carries the
    node's real signed manifest (copied from its newest snapshot), so it is the repository's
    newest snapshot of the node. No signed head lists it: `latest` is left to restic, which
    finds it, and the screen refuses it; nothing is written to the target."""
    forged_root = node.workspace / "forged"
    shutil.rmtree(forged_root, ignore_errors=True)
    shutil.copytree(node.root, forged_root, symlinks=True)
    config = forged_root / "etc/ssh/sshd_config"
    config.unlink()
    config.symlink_to("/etc/shadow")  # the manifest says a file; the tree holds a symlink
    made = node.restic(
        "backup", "--json", "--host", node.name, "--tag", "drkit", "--tag",
        f"node:{node.name}", "--tag", "profile:openssh",
        *manifest.leaf_paths(Manifest.model_validate_json(
            (node.root / manifest.MANIFEST_PATH.lstrip("/")).read_bytes())),
        manifest.SNAPSHOT_DIR.lstrip("/"), cwd=forged_root,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    forged_id = json.loads(made.stdout.splitlines()[-1])["snapshot_id"]
    try:
        for spec in ("latest", forged_id):
            target = restore_target(node, "r-forged")
            code, document, processes = counted(node, "restore", spec, "--target", str(target))
            assert code == 6, document
            assert "symlink in the snapshot" in document["error"]["message"], document
            assert "restore" not in processes  # refused on the listing, before restic writes
            assert not target.exists() or not any(target.rglob("*"))
    finally:
        node.restic("forget", forged_id)
        shutil.rmtree(forged_root, ignore_errors=True)


def test_keys_rotate_rewraps_the_catalog_key_so_every_object_still_opens(node):
    code, document = node.run("keys", "rotate")
    assert code == 0, document
    code, document, processes = counted(
        node, "restore", node.first, "--target", str(restore_target(node, "r-rotated"))
    )
    assert code == 0 and processes == ["restore"], document
    stored = Storage(node.repository).get_bytes(catalog.key_object_key(node.name))
    assert len(json.loads(stored)["wrappings"]) == 1  # the old password opens it no more
    code, document, processes = counted(node, "verify")
    assert code == 0 and processes == ["check", "restore"], document


def test_a_forgotten_snapshot_leaves_the_index_at_the_next_backup(own_node):
    node = own_node
    done = node.restic("forget", node.first)
    assert done.returncode == 0, done.stderr
    fresh = node.backup()
    head = Storage(node.repository).get_json(catalog.head_key(node.name))
    listed = [entry["id"] for entry in json.loads(head["record"])["snapshots"]]
    assert node.first not in listed and {node.second, fresh} <= set(listed), listed
    code, document, processes = counted(
        node, "restore", "latest", "--target", str(restore_target(node, "r-after-forget"))
    )
    assert code == 0 and document["snapshot_id"] == fresh and processes == ["restore"]
