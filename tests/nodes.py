"""A sample SFTP node initialised against the local S3, driven through the CLI (shared helper)."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import socket
import subprocess
import uuid
from pathlib import Path

from typer.testing import CliRunner

from devtools import sample_node
from drkit import config
from drkit.cli import app
from drkit.engines import restic as restic_engine

RESTIC = str(restic_engine.find_restic(None))
SANDBOX_PARENT = Path("/var/lib/drkit-tests")

# Smoke users are created on the host for a smoke's run and removed after it: one name (and uid,
# and group) per pytest-xdist worker, so two workers' smokes never share an account.
SMOKE_USER = sample_node.smoke_name("drill")
PROFTPD_USER = sample_node.smoke_name("pdrill")
VSFTPD_USER = sample_node.smoke_name("vdrill")


# Ports for servers the tests start themselves: each pytest-xdist worker takes its own range
# below the kernel's ephemeral ports (32768-60999 here), so no other worker, and no outgoing
# connection, can take a port between the moment it is chosen and the server's bind.
PORT_BASE = 20000
PORTS_PER_WORKER = 1000
_WORKER_INDEX = int(os.environ.get("DRKIT_SAMPLE_WORKER") or 0)
_handed_out = itertools.count()


def free_port() -> int:
    """Return a port of this worker's range that is free on 127.0.0.1 now; the range is walked
    in turn, so a port just handed out (its server maybe not bound yet) is not handed out again
    before the other 999."""
    first = PORT_BASE + PORTS_PER_WORKER * _WORKER_INDEX
    for _ in range(PORTS_PER_WORKER):
        port = first + next(_handed_out) % PORTS_PER_WORKER
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {first}-{first + PORTS_PER_WORKER - 1}")


_REFUSING: list[socket.socket] = []


def refusing_port() -> int:
    """Return a 127.0.0.1 port that refuses connections for as long as the test process runs:
    it stays bound and never listens, so nothing else can start listening on it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _REFUSING.append(sock)
    return sock.getsockname()[1]


def drkit(*args: str, env: dict | None = None) -> tuple[int, dict]:
    """Run the CLI in-process with --json; return the exit code and the one JSON document."""
    result = CliRunner().invoke(app, [*args, "--json"], env=env, catch_exceptions=False)
    return result.exit_code, json.loads(result.stdout)


def init_node(
    root: Path,
    repository,
    work: Path,
    server: str | None,
    smoke_user: str | None,
    node: str,
    *extra: str,
) -> tuple[Path, dict]:
    """Run `drkit init` for the node at root (config and state under work; server and smoke
    user left to init's defaults when None, extra flags appended); return the config path and
    init's document."""
    config = work / "drkit.yaml"
    chosen = [*(["--server", server] if server else []),
              *(["--smoke-user", smoke_user] if smoke_user else [])]  # fmt: skip
    code, document = drkit(
        "init",
        "--config", str(config),
        "--node", node,
        "--root", str(root),
        "--s3-endpoint", repository.s3_endpoint,
        "--bucket", repository.bucket,
        "--prefix", repository.prefix,
        "--password-file", str(repository.password_file),
        "--state-dir", str(work / "state"),
        "--lock-days", "1",
        *chosen,
        *extra,
    )  # fmt: skip
    assert code == 0, document
    return config, document


def fresh_repository(local_s3, directory: Path, prefix: str = "node") -> config.Repository:
    """Return a repository section for a new bucket on the local S3 (1-day GOVERNANCE lock),
    with a 0600 password file of its own written into directory."""
    password_file = directory / f"repository-{uuid.uuid4().hex[:6]}.password"
    password_file.write_text(secrets.token_hex(32) + "\n")
    password_file.chmod(0o600)
    return config.Repository(
        s3_endpoint=local_s3.endpoint,
        bucket="t-" + uuid.uuid4().hex[:12],
        prefix=prefix,
        region=local_s3.region,
        password_file=password_file,
        object_lock=config.ObjectLock(mode="GOVERNANCE", days=1),
    )


def make_workspace() -> Path:
    """Return a fresh root-owned 0755 directory under /var/lib/drkit-tests (not /tmp: sshd
    refuses chroots under world-writable directories)."""
    SANDBOX_PARENT.mkdir(mode=0o755, parents=True, exist_ok=True)
    SANDBOX_PARENT.chmod(0o755)
    workspace = SANDBOX_PARENT / f"node-{uuid.uuid4().hex[:10]}"
    workspace.mkdir(mode=0o755)
    return workspace


class Node:
    """A sample SFTP node under a prefix root with drkit initialised against the local S3."""

    def __init__(self, workspace: Path, repository, node: str = "sftp-1"):
        self.workspace = workspace
        self.root = workspace / "root"
        self.repository = repository
        self.name = node
        self.config = workspace / "drkit.yaml"
        self.state = workspace / "state"
        self.made = sample_node.build(self.root, smoke_user=SMOKE_USER, chroot=True)
        includes = [
            f"--include={category}={pattern}"
            for category, patterns in self.made["includes"].items()
            for pattern in patterns
        ]
        code, self.init = drkit(
            "init",
            "--config", str(self.config),
            "--node", node,
            "--root", str(self.root),
            "--s3-endpoint", repository.s3_endpoint,
            "--bucket", repository.bucket,
            "--prefix", repository.prefix,
            "--password-file", str(repository.password_file),
            "--smoke-user", SMOKE_USER,
            "--state-dir", str(self.state),
            "--lock-days", "1",
            *includes,
        )  # fmt: skip
        assert code == 0, self.init
        self.signer = self.init["signer"]

    def run(self, *args: str, env: dict | None = None) -> tuple[int, dict]:
        return drkit(*args, "--config", str(self.config), env=env)

    def backup(self) -> str:
        code, document = self.run("backup")
        assert code == 0, document
        return document["snapshot_id"]

    def restic(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {
            **os.environ,
            "RESTIC_REPOSITORY": self.repository.restic_url,
            "RESTIC_PASSWORD_FILE": str(self.repository.password_file),
        }
        return subprocess.run(
            [RESTIC, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
        )

    def remove(self) -> None:
        shutil.rmtree(self.workspace, ignore_errors=True)
