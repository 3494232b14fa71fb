"""A sample SFTP node initialised against the local S3, driven through the CLI (shared helper)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305
from typer.testing import CliRunner

from devtools import sample_node, schemas
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
    """Run the CLI in-process with --json; return the exit code and the one JSON document,
    checked against the command's published JSON Schema (docs/schemas)."""
    result = CliRunner().invoke(app, [*args, "--json"], env=env, catch_exceptions=False)
    document = json.loads(result.stdout)
    schemas.validate([*args, "--json"], document)
    return result.exit_code, document


# -- test repositories: restic's own format, with a key that is cheap to open ----------------
#
# Opening a repository makes restic derive its key with scrypt, at the cost restic calibrated
# at `restic init` (N=2^15, r=8, p=6 here: ~0.6 s of CPU in every restic process, ~3 s for
# init itself), and the suite runs thousands of restic processes on 2 cores. A node's
# repository is therefore laid out before `drkit init` (which adopts it, as it adopts any
# existing repository): a config with its own random id and master key and the chunker
# polynomial of a template that real `restic init` made once per worker, and one key for the
# node's password with scrypt N=2^10, r=8, p=1, as restic's own tests lower it
# (TestUseLowSecurityKDFParameters). Everything after that is real restic on the real files.

TEST_KDF = {"N": 1 << 10, "r": 8, "p": 1}
_TEMPLATE_LOCK = threading.Lock()
_TEMPLATE: dict[str, str] = {}


def _user_key(password: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    """restic's KDF: scrypt to 64 bytes = AES-256 key, Poly1305-AES key k, and r."""
    raw = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=64, maxmem=1 << 30)
    return raw[:32], raw[32:48], raw[48:]


def _mac(key: tuple[bytes, bytes, bytes], nonce: bytes, data: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(key[1]), modes.ECB()).encryptor()
    return Poly1305.generate_tag(key[2] + encryptor.update(nonce) + encryptor.finalize(), data)


def _open(key: tuple[bytes, bytes, bytes], blob: bytes) -> bytes:
    nonce, data, tag = blob[:16], blob[16:-16], blob[-16:]
    if not hmac.compare_digest(_mac(key, nonce, data), tag):
        raise ValueError("restic object: MAC mismatch")
    decryptor = Cipher(algorithms.AES(key[0]), modes.CTR(nonce)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


def _seal(key: tuple[bytes, bytes, bytes], plain: bytes) -> bytes:
    nonce = os.urandom(16)
    encryptor = Cipher(algorithms.AES(key[0]), modes.CTR(nonce)).encryptor()
    data = encryptor.update(plain) + encryptor.finalize()
    return nonce + data + _mac(key, nonce, data)


def _template() -> dict[str, str]:
    """Run `restic init` once (per process) into a local directory and read its config back
    with its own key: the version and chunker polynomial every test repository copies."""
    with _TEMPLATE_LOCK:
        if not _TEMPLATE:
            with tempfile.TemporaryDirectory(prefix="drkit-template-") as directory:
                password = secrets.token_hex(32).encode()
                password_file = Path(directory, "password")
                password_file.write_bytes(password)
                repo = Path(directory, "repo")
                subprocess.run(
                    [RESTIC, "init", "-q", "-r", str(repo), "--password-file", str(password_file)],
                    check=True, capture_output=True, timeout=120,
                )  # fmt: skip
                (key_file,) = (repo / "keys").iterdir()
                key = json.loads(key_file.read_text())
                salt = base64.b64decode(key["salt"])
                user = _user_key(password, salt, key["N"], key["r"], key["p"])
                master = json.loads(_open(user, base64.b64decode(key["data"])))
                master_key = (
                    base64.b64decode(master["encrypt"]),
                    base64.b64decode(master["mac"]["k"]),
                    base64.b64decode(master["mac"]["r"]),
                )
                found = json.loads(_open(master_key, (repo / "config").read_bytes()))
                _TEMPLATE.update(
                    version=found["version"], chunker_polynomial=found["chunker_polynomial"]
                )
        return dict(_TEMPLATE)


def _clamp(r: bytes) -> bytes:
    """Poly1305's clamping of r, which restic applies to the keys it makes."""
    clamped = bytearray(r)
    for index in (3, 7, 11, 15):
        clamped[index] &= 15
    for index in (4, 8, 12):
        clamped[index] &= 252
    return bytes(clamped)


def repository_objects(password: bytes) -> dict[str, bytes]:
    """Return a new restic repository's objects ({'config': ..., 'keys/<id>': ...}): its own
    random id and master key, the template's chunker polynomial, one key (TEST_KDF) for
    password."""
    template = _template()
    master = (os.urandom(32), os.urandom(16), _clamp(os.urandom(16)))
    salt = os.urandom(64)
    user = _user_key(password, salt, TEST_KDF["N"], TEST_KDF["r"], TEST_KDF["p"])
    master_json = {
        "mac": {
            "k": base64.b64encode(master[1]).decode(),
            "r": base64.b64encode(master[2]).decode(),
        },
        "encrypt": base64.b64encode(master[0]).decode(),
    }
    key = {
        "created": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "username": "root",
        "hostname": socket.gethostname(),
        "kdf": "scrypt",
        **TEST_KDF,
        "salt": base64.b64encode(salt).decode(),
        "data": base64.b64encode(_seal(user, json.dumps(master_json).encode())).decode(),
    }
    key_bytes = json.dumps(key).encode()
    config_json = {"version": template["version"], "id": secrets.token_hex(32),
                   "chunker_polynomial": template["chunker_polynomial"]}  # fmt: skip
    return {
        "config": _seal(master, json.dumps(config_json).encode()),
        f"keys/{hashlib.sha256(key_bytes).hexdigest()}": key_bytes,
    }


def prepare_local_repository(directory: Path, password_file: Path) -> None:
    """Lay out a test repository (see above) in a local directory, as restic's local backend
    keeps one."""
    password = Path(password_file).read_text().rstrip("\n").encode()
    for name, body in repository_objects(password).items():
        path = Path(directory, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    for name in ("data", "index", "snapshots", "locks"):
        Path(directory, name).mkdir(exist_ok=True)


def prepare_repository(repository: config.Repository) -> None:
    """Create the repository's bucket as drkit does (drkit's own Storage.init_bucket: object
    lock, versioning, retention) and lay out a test repository (see above) at its prefix, unless
    one is there already (a group's second node). `drkit init` then adopts both."""
    from drkit.engines.storage import Storage

    storage = Storage(repository)
    storage.init_bucket(repository.object_lock)
    prefix = repository.prefix.strip("/")
    listed = storage.client.list_objects_v2(Bucket=repository.bucket, Prefix=f"{prefix}/config")
    if listed.get("KeyCount", 0):
        return
    password = Path(repository.password_file).read_text().rstrip("\n").encode()
    for name, body in repository_objects(password).items():
        storage.client.put_object(Bucket=repository.bucket, Key=f"{prefix}/{name}", Body=body)


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
    prepare_repository(repository)
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
    snapshot_every_run(config)
    return config, document


def snapshot_every_run(config_path: Path) -> None:
    """Set `unchanged: snapshot`: the suite's nodes make a snapshot at every backup, so tests of
    chains, retention, rollbacks and catalogs get one per run; tests/test_freshness.py runs
    the default (an unchanged node confirms its last snapshot)."""
    settings = yaml.safe_load(config_path.read_text())
    settings["unchanged"] = "snapshot"
    config_path.write_text(yaml.safe_dump(settings, sort_keys=False))


# The smallest valid drkit.yaml, for parsing: nothing it names is reachable.
MINIMAL_CONFIG = """
node: sftp-1
servers: [openssh]
repository:
  s3_endpoint: http://127.0.0.1:8333
  bucket: dr-backups
  prefix: sftp-1
  password_file: /etc/drkit/repo.pass
signing_key: /etc/drkit/signing.key
"""


def edit_config(path: Path, **changes) -> None:
    """Set top-level settings in a drkit.yaml."""
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def signer_of(config_path: Path) -> str:
    """Return the fingerprint of the node's own signing key (its first trusted key)."""
    return yaml.safe_load(config_path.read_text())["trusted_keys"][0]


def clone_root(source: Path, target: Path) -> None:
    """Copy a node's tree with owners, modes and links (a group's twin node)."""
    subprocess.run(["cp", "-a", str(source), str(target)], check=True)


def init_group_node(base: Path, name: str, root: Path, repository, group: str) -> Path:
    """Run `drkit init` for one node of a group sharing repository (config and state under
    base/<name>-work); return its config path."""
    work = base / f"{name}-work"
    work.mkdir(mode=0o755, exist_ok=True)
    extra = ("--group", group, "--include", "audit_logs=/var/log/sftp/*")
    return init_node(root, repository, work, None, None, name, *extra)[0]


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
    """A sample SFTP node with drkit initialised against the local S3: its tree under root
    (workspace/root unless given), its config and state under workspace."""

    def __init__(
        self,
        workspace: Path,
        repository,
        node: str = "sftp-1",
        *,
        root: Path | None = None,
        restic_init: bool = False,
        big_file_mb: int = 0,
    ):
        """restic_init: let `drkit init` create the repository with `restic init` (its real
        key cost), instead of adopting a test repository (see prepare_repository);
        big_file_mb: add a random log file that large, for a backup slow enough to be caught
        mid-way."""
        self.workspace = workspace
        self.root = root if root is not None else workspace / "root"
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
        if big_file_mb:
            log_dir = self.root / "var/log/sftp-big"
            log_dir.mkdir(parents=True)
            with open(log_dir / "big.log", "wb") as handle:
                handle.write(os.urandom(big_file_mb << 20))
            includes.append("--include=audit_logs=/var/log/sftp-big/*")
        if not restic_init:
            prepare_repository(repository)
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
        snapshot_every_run(self.config)
        self.signer = self.init["signer"]

    def settings(self, **changes) -> None:
        """Set top-level settings in the node's drkit.yaml."""
        edit_config(self.config, **changes)

    def loaded(self) -> config.Config:
        return config.load_config(self.config)[0]

    def run(self, *args: str, env: dict | None = None) -> tuple[int, dict]:
        return drkit(*args, "--config", str(self.config), env=env)

    def backup(self) -> str:
        code, document = self.run("backup")
        assert code == 0, document
        return document["snapshot_id"]

    def restic(
        self, *args: str, cwd: Path | None = None, env: dict | None = None
    ) -> subprocess.CompletedProcess:
        merged = {
            **os.environ,
            **(env or {}),
            "RESTIC_REPOSITORY": self.repository.restic_url,
            "RESTIC_PASSWORD_FILE": str(self.repository.password_file),
        }
        return subprocess.run(
            [RESTIC, *args], env=merged, cwd=cwd, capture_output=True, text=True, check=False,
            timeout=300,
        )  # fmt: skip

    def snapshots(self, env: dict | None = None) -> list[dict]:
        listed = self.restic("snapshots", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        return json.loads(listed.stdout)

    def lock_objects(self) -> list[str]:
        """Return the keys of the restic locks in the repository (read with boto3: no restic)."""
        import boto3

        client = boto3.client(
            "s3", endpoint_url=self.repository.s3_endpoint, region_name=self.repository.region
        )
        prefix = f"{self.repository.prefix}/locks/"
        listed = client.list_objects_v2(Bucket=self.repository.bucket, Prefix=prefix)
        return [entry["Key"] for entry in listed.get("Contents", [])]

    def remove(self) -> None:
        shutil.rmtree(self.workspace, ignore_errors=True)
        if not self.root.is_relative_to(self.workspace):
            shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def fresh_node(local_s3, directory: Path, prefix: str = "node", **options) -> Iterator[Node]:
    """Yield a Node (options: Node's) in a fresh workspace, on a fresh bucket whose password
    file is written into directory; the workspace goes after, also when init fails."""
    workspace = make_workspace()
    try:
        yield Node(workspace, fresh_repository(local_s3, directory, prefix), **options)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def wait_for(predicate, timeout: float, what: str, step: float = 0.25):
    """Poll predicate every step seconds until it returns a true value, and return that value;
    fail naming what was awaited after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


# -- HA building blocks on loopback (TOOLS.md's HAProxy recipe) ------------------------------

HAPROXY_TCP = (
    "global\n    maxconn 256\ndefaults\n    mode tcp\n    timeout connect 2s\n"
    "    timeout client 60s\n    timeout server 60s\n    retries 2\n    option redispatch\n"
)
HEALTH_CHECK = "check inter 300ms fall 2 rise 2"


def wait_listening(host: str, port: int, timeout: float = 10) -> None:
    """Wait until host:port accepts a TCP connection."""

    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(accepts, timeout, f"a listener on {host}:{port}", step=0.05)


@contextlib.contextmanager
def haproxy(config: Path, proxied: str) -> Iterator[None]:
    """Run HAProxy (Debian's, in the foreground) with config, its TCP defaults prepended, and
    stop it afterwards; proxied is the frontends and backends."""
    config.write_text(HAPROXY_TCP + proxied)
    process = subprocess.Popen(
        ["/usr/sbin/haproxy", "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
