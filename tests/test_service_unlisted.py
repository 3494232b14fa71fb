"""Directories carry only signed owners and modes (real restic and S3). The manifest lists every
directory above a backed-up path, so a snapshot made with plain restic under drkit's tags that
gives /etc mode 0777 and uid 6666 is refused; the few directories it does not list (those above
drkit's own snapshot files) restore root-owned 0755 whatever the snapshot says, on a fresh
target as on bare metal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from nodes import Node, drkit

from drkit.engines import manifest
from drkit.model import Manifest

pytestmark = pytest.mark.integration

FORGED_UID = 6666


def _unlisted_dirs(listed: dict) -> set[str]:
    """Return the parent directories of the manifest's entries that it does not list itself."""
    paths = {entry["path"] for entry in listed["files"]}
    parents = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            parents.add(parent)
            parent = os.path.dirname(parent)
    return parents - paths


def _forged(node: Node, listed: dict, directories: set[str]) -> str:
    """Return the id of a plain-restic snapshot of the node whose directories are 0777 6666."""
    forged = node.workspace / "forged"
    subprocess.run(["cp", "-a", str(node.root), str(forged)], check=True)
    for path in directories:
        host = forged / path.lstrip("/")
        os.chown(host, FORGED_UID, FORGED_UID)
        host.chmod(0o777)
    leaves = manifest.leaf_paths(Manifest.model_validate(listed))
    made = node.restic(
        "backup", "--json", "--host", node.name, "--tag", "drkit", "--tag",
        f"node:{node.name}", "--tag", "profile:openssh", *leaves,
        manifest.SNAPSHOT_DIR.lstrip("/"), cwd=forged,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    shutil.rmtree(forged)
    return json.loads(made.stdout.splitlines()[-1])["snapshot_id"]


def test_a_forged_mode_on_a_signed_directory_is_refused(node: Node):
    node.backup()
    listed = json.loads((node.root / manifest.MANIFEST_PATH.lstrip("/")).read_bytes())
    kinds = {entry["path"]: entry for entry in listed["files"]}
    assert kinds["/etc/ssl/private"]["type"] == "dir" and kinds["/etc"]["category"] == "parents"
    forged_id = _forged(node, listed, {"/etc", "/etc/ssl/private"})
    target = node.workspace / "target-signed"
    code, document = node.run("restore", forged_id, "--target", str(target))
    assert code == 6 and "/etc" in document["error"]["message"], document
    assert not (target / "etc").exists()


def test_unlisted_directories_never_carry_the_snapshots_owner_or_mode(node: Node):
    node.backup()
    listed = json.loads((node.root / manifest.MANIFEST_PATH.lstrip("/")).read_bytes())
    assert _unlisted_dirs(listed) == set()  # every directory above a backed-up path is signed
    paths = {entry["path"] for entry in listed["files"]}
    unlisted = {"/var/lib", "/var/lib/drkit"} - paths  # above drkit's own snapshot files
    assert unlisted == {"/var/lib", "/var/lib/drkit"}, sorted(paths)
    forged_id = _forged(node, listed, unlisted)

    bare_metal = (
        "--s3-endpoint", node.repository.s3_endpoint,
        "--bucket", node.repository.bucket, "--prefix", node.repository.prefix,
        "--node", node.name, "--password-file", str(node.repository.password_file),
        "--trust-key", node.signer,
    )  # fmt: skip
    for label, extra in (("configured", ("--config", str(node.config))), ("bare", bare_metal)):
        target = node.workspace / f"target-{label}"
        code, document = drkit("restore", forged_id, "--target", str(target), *extra)
        assert code == 0 and document["snapshot_id"] == forged_id, document
        for path in sorted(unlisted):
            info = (target / path.lstrip("/")).stat()
            assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (0, 0, 0o755), (
                label,
                path,
                oct(info.st_mode),
                info.st_uid,
            )
        shutil.rmtree(target)
