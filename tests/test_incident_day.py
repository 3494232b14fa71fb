"""The incident day, round two (issue 24): advice that cannot make things worse, no silent
minutes, no lost history. Each test reproduces what an operator under stress tripped on."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from nodes import (
    Node,
    drkit,
    free_port,
    fresh_node,
    fresh_repository,
    make_workspace,
    refusing_port,
)
from typer.testing import CliRunner

from drkit.cli import app
from drkit.locals3 import LocalS3

pytestmark = pytest.mark.integration


@pytest.fixture
def node(local_s3, tmp_path):
    with fresh_node(local_s3, tmp_path, "incident") as made:
        yield made


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


# -- 3. every command bounded on a dead or hung S3 -------------------------------------------

BOUND_SECONDS = 30
DEAD_S3_COMMANDS = [
    ["snapshots"],
    ["backup"],
    ["show", "latest"],
    ["restore", "latest", "--dry-run", "--target", "/nonexistent-target"],
    ["drill"],
    ["prune", "--dry-run"],
    ["verify"],
    ["storage", "verify"],
    ["diff", "latest~1", "latest"],
    ["report"],
]


@pytest.fixture
def hung_port():
    """A 127.0.0.1 port that accepts connections and never answers (stopped after)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for connection in [*held, listener]:
        connection.close()


@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_every_command_fails_within_30_s_naming_storage(node: Node, hung_port, outage):
    node.backup()
    settings = yaml.safe_load(node.config.read_text())
    port = refusing_port() if outage == "refused" else hung_port
    settings["repository"]["s3_endpoint"] = f"http://127.0.0.1:{port}"
    node.config.write_text(yaml.safe_dump(settings, sort_keys=False))
    measured = {}
    for command in DEAD_S3_COMMANDS:
        started = time.monotonic()
        code, failed = node.run(*command)
        measured[" ".join(command)] = (round(time.monotonic() - started, 1), code, failed)
    print(outage, {name: seconds for name, (seconds, _, _) in measured.items()})
    for name, (seconds, code, failed) in measured.items():
        assert seconds < BOUND_SECONDS, (name, seconds, failed)
        assert code == 4, (name, failed)
        message = failed["error"]["message"]
        assert "\n" not in message and f"127.0.0.1:{port}" in message, (name, message)


# -- 4. history is kept -----------------------------------------------------------------------


def test_a_failed_drill_and_a_new_state_dir_keep_the_history(node: Node, local_s3):
    node.backup()
    code, drilled = node.run("drill")
    assert code == 0, drilled
    code, before = node.run("status")
    passed = before["nodes"][0]
    assert passed["proven_snapshot_id"] == drilled["snapshot_id"], passed

    good = node.config.read_text()
    settings = yaml.safe_load(good)
    settings["repository"]["s3_endpoint"] = f"http://127.0.0.1:{refusing_port()}"
    node.config.write_text(yaml.safe_dump(settings, sort_keys=False))
    code, failed = node.run("drill")
    assert code == 4, failed
    node.config.write_text(good)
    code, after = node.run("status")
    entry = after["nodes"][0]
    assert entry["last_drill"]["ok"] is False  # the failure is on record...
    assert entry["last_good_drill"]["snapshot_id"] == drilled["snapshot_id"]  # ...beside this
    for key in ("proven_snapshot_id", "proven_snapshot_time"):
        assert entry[key] == passed[key], key
    assert any(p.startswith("last drill failed at ") and "unreachable" in p
               for p in entry["problems"]), entry["problems"]  # fmt: skip

    # a new state_dir knows nothing: its first run merges with the bucket's document
    settings = yaml.safe_load(good)
    settings["state_dir"] = str(node.workspace / "state-2")
    node.config.write_text(yaml.safe_dump(settings, sort_keys=False))
    code, pruned = node.run("prune")
    assert code == 0, pruned
    stored = local_s3.client().get_object(
        Bucket=node.repository.bucket, Key=f"status/{node.name}.json"
    )
    document = json.loads(stored["Body"].read())
    assert document["last_good_backup"]["snapshot_id"] == entry["last_good_backup"]["snapshot_id"]
    assert document["last_good_drill"]["snapshot_id"] == drilled["snapshot_id"]
    assert document["last_prune"]["ok"] is True
    code, status = node.run("status")
    entry = status["nodes"][0]
    assert entry["age_seconds"] is not None
    assert entry["proven_snapshot_id"] == drilled["snapshot_id"]


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
        shutil.rmtree(workspace, ignore_errors=True)


# -- 8. the embedded S3 keeps its endpoint across a restart ----------------------------------


def test_the_embedded_s3_keeps_its_port_across_a_restart(tmp_path: Path):
    port, data = free_port(), tmp_path / "s3"
    with LocalS3(data, s3_port=port) as first:
        assert first.endpoint == f"http://127.0.0.1:{port}"
        first.client().create_bucket(Bucket="kept")
    with LocalS3(data, s3_port=port) as second:  # drkit.yaml's endpoint still answers
        assert second.endpoint == f"http://127.0.0.1:{port}"
        assert [b["Name"] for b in second.client().list_buckets()["Buckets"]] == ["kept"]


def test_the_readme_says_where_drkit_is_and_its_own_node_block_runs(tmp_path: Path):
    checkout = Path(__file__).resolve().parents[1]
    text = (checkout / "README.md").read_text()
    assert ".venv/bin/drkit" in text
    section = text.split("## Trying it on your own node", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```$", section, re.M | re.S).group(1)
    port = free_port()
    for example, real in {
        "8333": str(port),
        "/var/lib/drkit-s3": str(tmp_path / "s3"),
        "/root/drkit-s3.env": str(tmp_path / "s3.env"),
    }.items():
        block = block.replace(example, real)
    script = f'{block}\necho "$DRKIT_S3_ENDPOINT"\nkill %1\nwait\n'
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=checkout, capture_output=True,
        text=True, timeout=120, check=False, env={**os.environ, "DRKIT_S3_ENDPOINT": ""},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0].startswith("drkit ")
    assert done.stdout.splitlines()[-1] == f"http://127.0.0.1:{port}"
