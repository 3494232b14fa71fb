"""The foundation end to end through the CLI: init, backup, destroy, restore, checks, smoke.

Real SeaweedFS, real restic, real sshd: nothing here is mocked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from nodes import SMOKE_USER, Node, drkit

from drkit.engines import manifest
from drkit.model import Manifest

pytestmark = pytest.mark.integration


def tree_state(root: Path) -> dict[str, tuple]:
    """Return every path under root with its content, mode and owner (for 'untouched')."""
    state = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        state[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, content)
    return state


@pytest.fixture
def initialised_node(node_root: Path, s3_repository) -> Node:
    """A node whose repository `drkit init` created itself, with `restic init` (every other
    test's init adopts one laid out by nodes.prepare_repository)."""
    return Node(node_root, s3_repository, restic_init=True)


@pytest.fixture
def backed_up(node: Node) -> Node:
    code, document = node.run("backup")
    assert code == 0, document
    node.snapshot_id = document["snapshot_id"]
    return node


def test_backup_destroy_restore_smoke(backed_up: Node, monkeypatch):
    node = backed_up
    code, listed = node.run("snapshots")
    assert code == 0 and [s["id"] for s in listed["snapshots"]] == [node.snapshot_id]
    listed = listed["snapshots"]
    assert listed[0]["node"] == "sftp-1" and listed[0]["time"].endswith("Z")
    code, shown = node.run("show", "latest")
    assert code == 0
    assert shown["signer"] == node.init["signer"] and shown["trusted"]
    assert {"config", "host_keys", "user_keys", "tls"} <= set(shown["categories"])
    assert len(shown["host_keys"]) == 3
    before = tree_state(node.root)

    shutil.rmtree(node.root)
    code, restored = node.run("restore", "latest", "--smoke")
    assert code == 0, restored
    assert restored["ok"] and restored["snapshot_id"] == node.snapshot_id
    (proof,) = restored["smoke"]  # the typed proof of the real sshd started from the restore
    assert proof["profile"] == "openssh" and proof["protocols"] == ["sftp"], proof
    assert proof["login_ok"] and proof["round_trip_ok"], restored["checks"]
    served = {key["type"]: key["fingerprint"] for key in proof["host_keys"]}
    assert served == {key["type"]: key["fingerprint"] for key in shown["host_keys"]}
    after = tree_state(node.root)
    accounts = ("etc/passwd", "etc/group", "etc/shadow")
    signed = json.loads((node.root / "var/lib/drkit/restored/manifest.json").read_text())
    listed = {entry["path"].lstrip("/") for entry in signed["files"]}
    for path, state in before.items():
        if not path.startswith("var/lib/drkit") and path not in accounts:
            if path in listed or state[0] & 0o170000 != 0o040000:
                assert after.get(path) == state, path
            else:  # a directory the signed manifest does not list: root's 0755, never guessed
                assert after.get(path) == (0o040755, 0, 0, b""), path
    # Accounts are merged, not overwritten: the node's users are back, nothing else is invented.
    passwd = (node.root / "etc/passwd").read_text()
    assert all(f"\n{user}:" in "\n" + passwd for user in node.made["users"])

    # check takes --target as an operator types it, relative to where they stand
    monkeypatch.chdir(node.root.parent)
    code, checked = node.run("check", "--target", node.root.name, "--smoke")
    assert code == 0 and checked["target"] == str(node.root), checked
    assert [(p["login_ok"], p["round_trip_ok"]) for p in checked["smoke"]] == [(True, True)]


def test_plain_restic_reads_the_repository(backed_up: Node, tmp_path: Path):
    node = backed_up
    listed = node.restic("snapshots", "--json")
    assert listed.returncode == 0, listed.stderr
    snapshot = json.loads(listed.stdout)[0]
    assert snapshot["hostname"] == "sftp-1"
    assert {"drkit", "node:sftp-1", "profile:openssh"} <= set(snapshot["tags"])
    assert node.restic("check").returncode == 0
    restored = node.restic("restore", "latest", "--target", str(tmp_path / "plain"))
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "plain/etc/ssh/sshd_config").read_bytes() == (
        node.root / "etc/ssh/sshd_config"
    ).read_bytes()
    assert (tmp_path / "plain/var/lib/drkit/snapshot/manifest.json").is_file()


def test_dry_run_touches_nothing_and_force_is_needed(backed_up: Node):
    node = backed_up
    config_file = node.root / "etc/ssh/sshd_config"
    config_file.write_text(config_file.read_text() + "# edited after the backup\n")
    (node.root / "etc/ssh/ssh_host_ed25519_key.pub").unlink()
    before = tree_state(node.root)

    code, planned = node.run("restore", "latest", "--dry-run")
    assert code == 0, planned
    actions = {step["path"]: step["action"] for step in planned["plan"]}
    assert actions["/etc/ssh/sshd_config"] == "change"
    assert actions["/etc/ssh/ssh_host_ed25519_key.pub"] == "add"
    assert actions["/etc/ssh/ssh_host_rsa_key"] == "unchanged"
    assert tree_state(node.root) == before

    code, refused = node.run("restore", "latest")
    assert code == 6 and "--force" in refused["error"]["message"]
    assert tree_state(node.root) == before

    code, restored = node.run("restore", "latest", "--force")
    assert code == 0, restored
    assert "# edited after the backup" not in config_file.read_text()
    assert (node.root / "etc/ssh/ssh_host_ed25519_key.pub").is_file()


def test_restore_adds_missing_files_without_force(backed_up: Node):
    node = backed_up
    (node.root / "etc/ssh/ssh_host_rsa_key.pub").unlink()
    code, restored = node.run("restore", "latest")
    assert code == 0, restored
    assert (node.root / "etc/ssh/ssh_host_rsa_key.pub").is_file()


def _back_up_behind_drkits_back(node: Node, extra: tuple[str, ...] = ()) -> None:
    """Make a snapshot with plain restic of the manifest's paths as they are now, plus extra."""
    listed = Manifest.model_validate_json(
        (node.root / "var/lib/drkit/snapshot/manifest.json").read_bytes()
    )
    paths = [*manifest.leaf_paths(listed), "var/lib/drkit/snapshot", *extra]
    made = node.restic(
        "backup", "--host", "sftp-1", "--tag", "drkit", "--tag", "node:sftp-1",
        "--tag", "profile:openssh", *paths, cwd=node.root,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr


def test_tampered_manifest_is_refused(backed_up: Node, tmp_path: Path):
    node = backed_up
    manifest_file = node.root / "var/lib/drkit/snapshot/manifest.json"
    recorded = json.loads(manifest_file.read_text())
    recorded["files"][0]["mode"] = "0777"  # loosen a recorded mode, keep the old signature
    manifest_file.write_text(json.dumps(recorded, sort_keys=True, separators=(",", ":")) + "\n")
    _back_up_behind_drkits_back(node)
    target = tmp_path / "target"
    code, refused = node.run("restore", "latest", "--target", str(target))
    assert code == 6 and "signature" in refused["error"]["message"]
    assert not target.exists() or not any(target.rglob("*"))


def test_tampered_file_is_refused(backed_up: Node, tmp_path: Path):
    node = backed_up
    key = node.root / "etc/ssh/ssh_host_ed25519_key.pub"
    key.write_text(key.read_text().replace("AAAA", "BBBB", 1))
    _back_up_behind_drkits_back(node)
    target = tmp_path / "target"
    code, refused = node.run("restore", "latest", "--target", str(target))
    assert code == 6, refused
    assert "ssh_host_ed25519_key.pub" in refused["error"]["message"]
    assert not target.exists() or not any(target.rglob("*"))


def test_entry_outside_the_manifest_is_refused(backed_up: Node, tmp_path: Path):
    node = backed_up
    (node.root / "etc/ssh/sshd_config.d/99-backdoor.conf").write_text("PermitRootLogin yes\n")
    _back_up_behind_drkits_back(node, extra=("etc/ssh/sshd_config.d/99-backdoor.conf",))
    target = tmp_path / "target"
    code, refused = node.run("restore", "latest", "--target", str(target))
    assert (
        code == 6 and "99-backdoor.conf: not in the signed manifest" in refused["error"]["message"]
    )
    assert not target.exists()


def test_bare_metal_restore_needs_trust(backed_up: Node, tmp_path: Path):
    node = backed_up
    coordinates = [
        "--s3-endpoint", node.repository.s3_endpoint, "--bucket", node.repository.bucket,
        "--prefix", node.repository.prefix, "--password-file", str(node.repository.password_file),
        "--node", "sftp-1",
    ]  # fmt: skip
    target = tmp_path / "bare"
    code, refused = drkit("restore", "latest", *coordinates, "--target", str(target))
    assert code == 6 and node.init["signer"] in refused["error"]["message"]
    assert not target.exists() or not any(target.rglob("*"))

    code, restored = drkit(
        "restore", "latest", *coordinates, "--target", str(target),
        "--trust-key", node.init["signer"],
    )  # fmt: skip
    assert code == 0, restored
    assert restored["trust"] == "key"
    code, restored = drkit(
        "restore", "latest", *coordinates, "--target", str(tmp_path / "tofu"),
        "--trust-snapshot-signer",
    )  # fmt: skip
    assert code == 0 and restored["trust"] == "snapshot"


def test_check_in_place(backed_up: Node):
    node = backed_up
    code, checked = node.run("check")
    assert code == 0, checked
    assert {c["name"]: c["status"] for c in checked["checks"]}["matches snapshot"] == "pass"
    (node.root / "etc/ssh/ssh_host_ed25519_key").chmod(0o644)
    code, checked = node.run("check")
    assert code == 1 and not checked["ok"]


def test_restore_at_and_snapshot_selection_errors(backed_up: Node):
    node = backed_up
    code, document = node.run("restore", "latest", "--at", "2001-01-01T00:00", "--dry-run")
    assert code == 2 and "no snapshot at or before" in document["error"]["message"]
    code, document = node.run("restore", "deadbeef", "--dry-run")
    assert code == 2
    code, document = node.run("restore", "latest~5", "--dry-run")
    assert code == 2
    code, document = node.run("restore", "latest", "--at", "yesterday", "--dry-run")
    assert code == 2


def test_snapshot_of_another_node_is_refused(backed_up: Node):
    node = backed_up
    text = node.config.read_text().replace("node: sftp-1", "node: sftp-2")
    other = node.config.with_name("other.yaml")
    other.write_text(text)
    code, document = drkit("restore", node.snapshot_id[:8], "--dry-run", "--config", str(other))
    assert code == 6 and "belongs to node sftp-1" in document["error"]["message"]


def test_wrong_password_exits_5(backed_up: Node, tmp_path: Path):
    node = backed_up
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not the password\n")
    wrong.chmod(0o600)
    config = node.config.read_text().replace(str(node.repository.password_file), str(wrong))
    node.config.write_text(config)
    code, document = node.run("snapshots")
    assert code == 5, document
    assert "not the password" not in json.dumps(document)


def test_missing_bucket_and_unreachable_s3_exit_4(node: Node, tmp_path: Path):
    text = node.config.read_text()
    node.config.write_text(text.replace(node.repository.bucket, "no-such-bucket-here"))
    code, document = node.run("backup")
    assert code == 4 and "does not exist" in document["error"]["message"]
    node.config.write_text(text.replace(node.repository.s3_endpoint, "http://127.0.0.1:9"))
    code, document = node.run("snapshots")
    assert code == 4 and "unreachable" in document["error"]["message"]


def test_restic_missing_or_too_old_exits_8(node: Node, tmp_path: Path):
    code, document = node.run("snapshots", env={"DRKIT_RESTIC": str(tmp_path / "nope")})
    assert code == 8 and "restic" in document["error"]["message"]
    old = tmp_path / "restic"
    old.write_text("#!/bin/sh\necho 'restic 0.14.0 compiled with go1.19 on linux/amd64'\n")
    old.chmod(0o755)
    code, document = node.run("snapshots", env={"DRKIT_RESTIC": str(old)})
    assert code == 8 and "too old" in document["error"]["message"]


def test_unwritable_target_exits_9(backed_up: Node, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code, document = backed_up.run("restore", "latest", "--target", str(blocker / "under"))
    assert code == 9, document
    assert blocker.read_text() == "not a directory\n"


def test_full_disk_leaves_the_target_as_it_was(backed_up: Node):
    mount_point = backed_up.workspace / "small"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount_point)], check=True
    )
    try:
        (mount_point / "keep.txt").write_text("operator's file\n")
        before = tree_state(mount_point)
        code, document = backed_up.run("restore", "latest", "--target", str(mount_point))
        assert code == 9 and "disk full" in document["error"]["message"], document
        assert tree_state(mount_point) == before
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)
        mount_point.rmdir()


def test_init_is_idempotent_and_password_file_must_be_private(initialised_node: Node):
    node = initialised_node
    config_before = node.config.read_text()
    code, again = node.run(
        "init", "--node", "sftp-1", "--root", str(node.root),
        "--s3-endpoint", node.repository.s3_endpoint, "--bucket", node.repository.bucket,
        "--prefix", node.repository.prefix, "--password-file", str(node.repository.password_file),
        "--smoke-user", SMOKE_USER, "--state-dir", str(node.state),
        "--lock-days", "1",
        *[f"--include={c}={p}" for c, ps in node.made["includes"].items() for p in ps],
    )  # fmt: skip
    assert code == 0, again
    assert node.init["repository_created"]
    assert not again["repository_created"] and not again["password_created"]
    assert again["signer"] == node.init["signer"]
    assert node.config.read_text() == config_before
    assert node.backup()  # the repository restic init made takes the chain's first snapshot
    node.repository.password_file.chmod(0o644)
    code, document = node.run("snapshots")
    assert code == 2 and "readable by other users" in document["error"]["message"]
