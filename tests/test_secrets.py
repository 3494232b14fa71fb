"""Secrets stay secret: every artefact of a full day's commands, held against every secret.

The repository password, the S3 secret key, the webhook secret and the signing key (its PEM
and its raw key bytes) must never appear in any process's argv (`/proc/*/cmdline`, sampled every
few milliseconds while the commands run, restic included), nor in stdout, stderr (at -vv), the
status documents and other state files, the objects drkit writes beside the repository
(status/, records/, reports/), drill reports, diffs or error text.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import figures
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from nodes import Node, fresh_node

pytestmark = pytest.mark.integration
DRKIT = str(Path(sys.executable).parent / "drkit")


class ArgvSampler:
    """Reads every process's command line until stopped."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                            self.seen.add(handle.read())
                    except OSError:
                        continue
            self.samples += 1
            self._stop.wait(0.005)  # the sampling period

    def __enter__(self) -> ArgvSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def secret_node(local_s3, tmp_path_factory):
    with fresh_node(local_s3, tmp_path_factory.mktemp("secrets"), "sftp-1") as node:
        hook_secret = node.workspace / "hook.secret"
        hook_secret.write_text("whsec-" + secrets.token_hex(16) + "\n")
        hook_secret.chmod(0o600)
        settings = yaml.safe_load(node.config.read_text())
        settings["notify"] = {"webhook": {"url": "http://127.0.0.1:9/hook",
                                          "secret_file": str(hook_secret)}}  # fmt: skip
        node.config.write_text(yaml.safe_dump(settings))
        yield node, hook_secret, Path(settings["signing_key"])


def _secrets(node: Node, hook_secret: Path, signing_key: Path, local_s3) -> dict[str, bytes]:
    key = serialization.load_pem_private_key(signing_key.read_bytes(), password=None)
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pem_body = b"".join(signing_key.read_bytes().splitlines()[1:-1])
    return {
        "repository password": node.repository.password_file.read_bytes().strip(),
        "S3 secret key": local_s3.secret_key.encode(),
        "webhook secret": hook_secret.read_bytes().strip(),
        "signing key (PEM)": pem_body,
        "signing key (raw, hex)": raw.hex().encode(),
        "signing key (raw, base64)": base64.b64encode(raw).rstrip(b"="),
    }


def test_no_secret_in_argv_logs_documents_reports_or_errors(secret_node, local_s3):
    node, hook_secret, signing_key = secret_node
    config = ["--config", str(node.config)]
    target = node.workspace / "target"
    wrong = node.workspace / "wrong.password"
    wrong.write_text("not-the-password\n")
    wrong.chmod(0o600)
    bad_config = node.workspace / "bad.yaml"
    bad_config.write_text(
        node.config.read_text().replace(str(node.repository.password_file), str(wrong))
    )
    commands = [
        ["backup", *config],
        ["backup", *config],
        ["snapshots", *config],
        ["show", "latest", *config],
        ["diff", "latest~1", "latest", *config],
        ["restore", "latest", "--dry-run", *config],
        ["restore", "latest", "--target", str(target), *config],
        ["check", *config],
        ["verify", "--spot", "5", *config],
        ["prune", "--dry-run", *config],
        ["status", *config],
        ["drill", "--report-dir", str(node.workspace / "reports"), *config],
        ["snapshots", "--config", str(bad_config)],  # wrong password: error text
    ]
    artefacts: dict[str, bytes] = {}
    with ArgvSampler() as sampler:
        for index, command in enumerate(commands):
            for json_mode in ([], ["--json"]):
                done = subprocess.run(
                    [DRKIT, "-vv", *command, *json_mode], capture_output=True, timeout=300,
                    check=False,
                    env={**os.environ, "AWS_SECRET_ACCESS_KEY": local_s3.secret_key},
                )  # fmt: skip
                name = f"{index}:{' '.join(command[:2])}{' --json' if json_mode else ''}"
                artefacts[f"{name} stdout"] = done.stdout
                artefacts[f"{name} stderr"] = done.stderr
        bad_credentials = subprocess.run(
            [DRKIT, "-vv", "snapshots", *config, "--json"], capture_output=True, timeout=120,
            check=False, env={**os.environ, "AWS_SECRET_ACCESS_KEY": "x" + local_s3.secret_key},
        )  # fmt: skip
        artefacts["refused credentials stdout"] = bad_credentials.stdout
        artefacts["refused credentials stderr"] = bad_credentials.stderr
    assert bad_credentials.returncode == 5
    # state files, reports, restored files, and drkit's objects in the bucket
    for directory in (node.state, node.workspace / "reports", target / "var/lib/drkit"):
        for path in directory.rglob("*"):
            if path.is_file():
                artefacts[str(path)] = path.read_bytes()
    client = local_s3.client()
    listed = client.list_objects_v2(Bucket=node.repository.bucket)
    for item in listed.get("Contents", []):
        if not item["Key"].startswith(f"{node.repository.prefix}/"):
            body = client.get_object(Bucket=node.repository.bucket, Key=item["Key"])["Body"]
            artefacts[f"s3://{item['Key']}"] = body.read()
    for index, argv in enumerate(sampler.seen):
        artefacts[f"argv {index}"] = argv
    held = _secrets(node, hook_secret, signing_key, local_s3)
    leaks = [
        f"{secret_name} in {artefact}"
        for artefact, data in artefacts.items()
        for secret_name, secret in held.items()
        if secret and secret in data
    ]
    reports = [name for name in artefacts if name.endswith((".html", ".md"))]
    figures.record(
        "secrets",
        secrets=len(held),
        artefacts=len(artefacts),
        argv_samples=sampler.samples,
        processes_seen=len(sampler.seen),
        leaked=len(leaks),
    )
    assert sampler.samples > 100 and any(b"restic" in argv for argv in sampler.seen)
    assert reports, "the drill wrote its reports"
    assert any(name.startswith("s3://status/") for name in artefacts)
    assert not leaks, "\n".join(leaks)


def test_secret_files_are_created_private_and_refused_when_shared(secret_node):
    node, hook_secret, signing_key = secret_node
    for path in (node.repository.password_file, signing_key, node.config):
        assert path.stat().st_mode & 0o077 == 0, path
    for path, fragment in ((signing_key, "signing key"), (hook_secret, "secret_file")):
        path.chmod(0o640)
        try:
            done = subprocess.run(
                [DRKIT, "backup", "--config", str(node.config)], capture_output=True,
                text=True, timeout=120, check=False,
            )  # fmt: skip
        finally:
            path.chmod(0o600)
        assert done.returncode == 2, done.stderr
        assert "readable by other users" in done.stderr and fragment in done.stderr
