"""The incident day, round two (issue 24): advice that cannot make things worse, no silent
minutes, no lost history. Each test reproduces what an operator under stress tripped on."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from nodes import Node, drkit, fresh_repository, make_workspace

pytestmark = pytest.mark.integration


@pytest.fixture
def node(local_s3, tmp_path):
    made = Node(make_workspace(), fresh_repository(local_s3, tmp_path, prefix="incident"))
    yield made
    made.remove()


def _tour_init(node: Node, *extra: str) -> tuple[int, dict]:
    """`drkit init` as the README's tour runs it: no --include, no --lock-days."""
    return drkit(
        "init",
        "--config", str(node.config),
        "--node", node.name,
        "--root", str(node.root),
        "--s3-endpoint", node.repository.s3_endpoint,
        "--bucket", node.repository.bucket,
        "--prefix", node.repository.prefix,
        "--password-file", str(node.repository.password_file),
        "--state-dir", str(node.state),
        *extra,
    )  # fmt: skip


def _object_lock_days(local_s3, bucket: str) -> int:
    answer = local_s3.client().get_object_lock_configuration(Bucket=bucket)
    return answer["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Days"]


# -- 1. init never overwrites ----------------------------------------------------------------


def test_init_again_keeps_the_node_and_refuses_other_settings(node: Node, local_s3):
    settings = yaml.safe_load(node.config.read_text())
    settings["objectives"] = {"rpo": "2h", "rto": "30m"}  # added by hand
    node.config.write_text(yaml.safe_dump(settings, sort_keys=False))
    before = node.config.read_bytes()
    includes = settings["includes"]
    assert includes, "the sample node has --include items"

    code, again = _tour_init(node)  # fewer flags: nothing named differs, nothing changes
    assert code == 0, again
    assert node.config.read_bytes() == before and again["changes"] == []
    assert again["signer"] == node.signer and not again["config_written"]
    assert _object_lock_days(local_s3, node.repository.bucket) == 1

    code, refused = _tour_init(node, "--lock-days", "30", "--smoke-user", "nobody")
    assert code == 2, refused
    message = refused["error"]["message"]
    assert "--update" in message and "nothing was changed" in message
    assert node.config.read_bytes() == before
    assert _object_lock_days(local_s3, node.repository.bucket) == 1
    from typer.testing import CliRunner

    from drkit.cli import app

    text = CliRunner().invoke(app, ["init", *_tour_args(node), "--lock-days", "30"])
    assert text.exit_code == 2
    assert "repository.object_lock.days: 1 -> 30 (the bucket's default object-lock retention" in (
        text.stderr
    )

    code, updated = _tour_init(
        node, "--update", "--lock-days", "2", "--include", "audit_logs=/srv/x/*"
    )
    assert code == 0, updated
    assert updated["changes"] == [
        "repository.object_lock.days: 1 -> 2 (the bucket's default object-lock retention, in days)",
        "includes.audit_logs: add /srv/x/*",
    ]
    after = yaml.safe_load(node.config.read_text())
    assert after["objectives"] == {"rpo": "2h", "rto": "30m"}  # not named: kept
    for category, patterns in includes.items():
        assert after["includes"][category][: len(patterns)] == patterns
    assert "/srv/x/*" in after["includes"]["audit_logs"]
    assert after["smoke_user"] == settings["smoke_user"]
    assert _object_lock_days(local_s3, node.repository.bucket) == 2


def _tour_args(node: Node) -> list[str]:
    return [
        "--config", str(node.config), "--node", node.name, "--root", str(node.root),
        "--s3-endpoint", node.repository.s3_endpoint, "--bucket", node.repository.bucket,
        "--prefix", node.repository.prefix,
        "--password-file", str(node.repository.password_file), "--state-dir", str(node.state),
    ]  # fmt: skip


def test_a_missing_signing_key_names_its_own_recovery(node: Node):
    key = Path(yaml.safe_load(node.config.read_text())["signing_key"])
    key.unlink()
    code, failed = node.run("backup")
    assert code == 2, failed
    message = failed["error"]["message"]
    assert "keys rotate" in message and "drkit init" not in message

    code, refused = _tour_init(node)  # init makes no new signer for an existing node
    assert code == 2 and "keys rotate" in refused["error"]["message"], refused
    assert not key.exists()

    code, rotated = node.run("keys", "rotate")
    assert code == 0, rotated
    assert rotated["signer"]["retired"] is None and rotated["signer"]["new"] != node.signer
    assert {node.signer, rotated["signer"]["new"]} <= set(rotated["trusted_keys"])
    assert node.run("backup")[0] == 0


def test_no_error_advises_a_command_that_replaces_the_configuration():
    root = Path(__file__).resolve().parents[1] / "drkit"
    for path in root.rglob("*.py"):
        text = path.read_text()
        for advice in ("init creates", "run drkit init", "run `drkit init`"):
            assert advice not in text, f"{path}: {advice}"


# -- 2. storage advice that cannot hurt -------------------------------------------------------


def test_a_mistyped_bucket_is_named_with_the_buckets_that_exist(node: Node, local_s3):
    settings = yaml.safe_load(node.config.read_text())
    real = settings["repository"]["bucket"]
    typo = real[:-1] + ("x" if real[-1] != "x" else "y")
    settings["repository"]["bucket"] = typo
    node.config.write_text(yaml.safe_dump(settings, sort_keys=False))
    for command in (["snapshots"], ["backup"], ["storage", "verify"], ["status"]):
        code, failed = node.run(*command)
        if command == ["status"]:
            continue  # status reads the local document too; its problems name the storage
        message = failed["error"]["message"]
        assert code == 4, (command, failed)
        assert f"bucket {typo} does not exist at {node.repository.s3_endpoint}" in message
        assert f"prefix {node.repository.prefix}" in message
        assert "check repository.bucket" in message and real in message, message
        assert "gone" not in message and "storage init" not in message, message

    code, refused = node.run("storage", "init")  # no config or flag asked for this name
    assert code == 4 and "--create" in refused["error"]["message"], refused
    names = [bucket["Name"] for bucket in local_s3.client().list_buckets()["Buckets"]]
    assert typo not in names
    code, made = node.run("storage", "init", "--create")
    assert code == 0 and made["created"] is True, made


# -- 5. state_dir is validated at init -------------------------------------------------------


@pytest.mark.parametrize("parent", ["/tmp", "/var/tmp"])
def test_init_refuses_a_state_dir_under_a_world_writable_directory(local_s3, tmp_path, parent):
    workspace = make_workspace()
    repository = fresh_repository(local_s3, tmp_path, prefix="tmpstate")
    try:
        state = Path(parent) / f"drkit-state-{uuid.uuid4().hex[:8]}"
        code, refused = drkit(
            "init", "--config", str(workspace / "drkit.yaml"), "--node", "sftp-1",
            "--root", str(workspace), "--s3-endpoint", repository.s3_endpoint,
            "--bucket", repository.bucket, "--password-file", str(repository.password_file),
            "--state-dir", str(state), "--server", "generic",
        )  # fmt: skip
        assert code == 2, refused
        message = refused["error"]["message"]
        assert f"lies under {parent}, which is world-writable" in message and "sshd" in message
        assert not (workspace / "drkit.yaml").exists() and not state.exists()
    finally:
        import shutil

        shutil.rmtree(workspace, ignore_errors=True)
