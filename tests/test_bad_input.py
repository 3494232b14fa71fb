"""Bad input, table-driven: every command given something wrong answers with one clear line and
its documented exit code, never a traceback, and nothing is lost.

The table runs against one real node, repository and SeaweedFS. After the table: the node's
files are as they were, the repository still holds its snapshot, and `restic check` is clean.
A hypothesis property test holds config parsing to the same rule: a Config or a ConfigError.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import ssl
import subprocess
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import figures
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nodes import RESTIC, Node, fresh_node
from typer.testing import CliRunner

from drkit import config as config_module
from drkit import errors
from drkit.cli import app


def tree(root: Path) -> dict[str, tuple]:
    """Return the node's files (drkit's own snapshot files, rewritten by each backup, aside)."""
    found = {}
    for path in sorted(root.rglob("*")):
        if "var/lib/drkit/snapshot" in str(path):
            continue
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, content)
    return found


# -- a TLS endpoint whose certificate nobody trusts -----------------------------------------


def _self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(
            __import__("ipaddress").ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class TlsEndpoint:
    """Accepts TLS on 127.0.0.1 with a self-signed certificate, then hangs up."""

    def __init__(self, directory: Path):
        self.cert, key = _self_signed(directory, "untrusted-s3")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(self.cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(connection, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                connection.close()

    def close(self) -> None:
        self.listener.close()


# -- the table -------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    code: int
    fragment: str
    build: Callable[[Context], tuple[list[str], dict | None]]


class Context:
    def __init__(self, node: Node, tls: TlsEndpoint, local_s3):
        self.node = node
        self.tls = tls
        self.local_s3 = local_s3
        self.work = node.workspace / "bad"
        self.work.mkdir()
        self.settings = yaml.safe_load(node.config.read_text())
        self.count = 0

    def file(self, text: str | bytes, mode: int = 0o600, name: str | None = None) -> Path:
        self.count += 1
        path = self.work / (name or f"file-{self.count}")
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        path.chmod(mode)
        return path

    def config_text(self, text: str) -> list[str]:
        return ["--config", str(self.file(text))]

    def config_with(self, change: Callable[[dict], None]) -> list[str]:
        settings = json.loads(json.dumps(self.settings))
        change(settings)
        return self.config_text(yaml.safe_dump(settings))

    def occupied(self) -> Path:
        """Return a target whose sshd_config the snapshot would replace."""
        target = self.work / "t-occupied"
        (target / "etc/ssh").mkdir(parents=True, exist_ok=True)
        (target / "etc/ssh/sshd_config").write_text("Port 2222\n")
        return target

    def restic_wrapper(self, body: str) -> dict:
        script = self.file(
            f'#!/bin/sh\ncase "$1" in version) exec {RESTIC} version;; esac\n{body}\n', 0o755
        )
        return {"DRKIT_RESTIC": str(script)}


def _set(path: str, value) -> Callable[[dict], None]:
    def change(settings: dict) -> None:
        *parents, last = path.split(".")
        for part in parents:
            settings = settings.setdefault(part, {})
        settings[last] = value

    return change


def _drop(path: str) -> Callable[[dict], None]:
    def change(settings: dict) -> None:
        *parents, last = path.split(".")
        for part in parents:
            settings = settings[part]
        settings.pop(last)

    return change


def _rename(path: str, new_name: str) -> Callable[[dict], None]:
    def change(settings: dict) -> None:
        *parents, last = path.split(".")
        for part in parents:
            settings = settings[part]
        settings[new_name] = settings.pop(last)

    return change


def _config_case(name, change, fragment, command=("snapshots",)) -> Case:
    return Case(name, 2, fragment, lambda c: ([*command, *c.config_with(change)], None))


def _password_file(c: Context, text: str = "", mode: int = 0o600, directory=False) -> list[str]:
    if directory:
        path = c.work / f"password-dir-{c.count}"
        path.mkdir()
        c.count += 1
    else:
        path = c.file(text or "x" * 64, mode)
    return c.config_with(_set("repository.password_file", str(path)))


def _make_bucket(c: Context, versioning: bool) -> str:
    name = "t-plain-" + uuid.uuid4().hex[:8]
    c.local_s3.client().create_bucket(Bucket=name)
    return name


CASES: list[Case] = [
    # configuration: syntax, keys, types, values
    Case("malformed YAML", 2, "not valid YAML",
         lambda c: (["snapshots", *c.config_text("node: [unclosed\n")], None)),
    Case("top level is a list", 2, "expected a mapping",
         lambda c: (["backup", *c.config_text("- node\n- sftp-1\n")], None)),
    Case("empty file", 2, "expected a mapping", lambda c: (["status", *c.config_text("")], None)),
    _config_case("unknown top-level key", _set("colour", "blue"), "colour: unknown setting"),
    _config_case("unknown nested key", _set("repository.storage_class", "GLACIER"),
                 "repository.storage_class: unknown setting"),
    _config_case("misspelled nested key", _rename("repository.bucket", "bukcet"),
                 "repository.bukcet: unknown setting, did you mean 'bucket'?"),
    _config_case("wrong type: retention", _set("retention.last", "many"), "retention.last"),
    _config_case("wrong type: servers", _set("servers", "openssh"), "servers"),
    _config_case("unknown server profile", _set("servers", ["iis"]), "servers.0"),
    _config_case("bad duration", _set("objectives.rpo", "15 minutes"), "objectives.rpo"),
    _config_case("negative-looking duration", _set("objectives.rto", "-5m"), "objectives.rto"),
    _config_case("bad cron: minute 61", _set("schedule.backup", "61 * * * *"), "schedule.backup"),
    _config_case("bad cron: four fields", _set("schedule.prune", "0 3 * *"), "schedule.prune"),
    _config_case("bad jitter", _set("schedule.jitter", "soon"), "schedule.jitter"),
    _config_case("missing node", _drop("node"), "node: Field required"),
    _config_case("node name with slash", _set("node", "../etc"), "node"),
    _config_case("endpoint without scheme", _set("repository.s3_endpoint", "s3.example.net"),
                 "is not an http(s):// URL"),
    _config_case("bucket too short", _set("repository.bucket", "ab"), "repository.bucket"),
    _config_case("prefix with ..", _set("repository.prefix", "a/../b"), "repository.prefix"),
    _config_case("unknown include category", _set("includes", {"secrets": ["/x"]}),
                 "unknown category"),
    _config_case("trusted key not a fingerprint", _set("trusted_keys", ["MD5:aa"]),
                 "not a SHA256"),
    _config_case("object lock mode", _set("repository.object_lock.mode", "FOREVER"),
                 "repository.object_lock.mode"),
    _config_case("object lock days 0", _set("repository.object_lock.days", 0),
                 "repository.object_lock.days"),
    _config_case("webhook URL not http", _set("notify.webhook", {"url": "ftp://x"}),
                 "notify.webhook.url"),
    _config_case("alert timeout 0", _set("notify.timeout_seconds", 0), "notify.timeout_seconds"),
    # usage: what Typer parses, answered as drkit answers (also the JSON document)
    Case("misspelled command", 2, "No such command 'snapshotz'", lambda c: (["snapshotz"], None)),
    Case("unknown option", 2, "No such option: --colour",
         lambda c: (["snapshots", "--colour", *c.config_with(lambda s: None)], None)),
    Case("bad option value", 2, "Invalid value for '--spot'",
         lambda c: (["verify", "--spot", "many", *c.config_with(lambda s: None)], None)),
    # files: missing, unreadable, not private
    Case("config file missing", 2, "not found",
         lambda c: (["snapshots", "--config", str(c.work / "nope.yaml")], None)),
    Case("config path is a directory", 2, "cannot read",
         lambda c: (["snapshots", "--config", str(c.work)], None)),
    Case("password file missing", 2, "password file not found",
         lambda c: (["snapshots", *c.config_with(
             _set("repository.password_file", str(c.work / "gone")))], None)),
    Case("password file is a directory", 2, "password file is a directory",
         lambda c: (["snapshots", *_password_file(c, directory=True)], None)),
    Case("password file readable by others", 2, "readable by other users",
         lambda c: (["snapshots", *_password_file(c, mode=0o644)], None)),
    Case("signing key missing", 2, "signing key not found",
         lambda c: (["backup", *c.config_with(_set("signing_key", str(c.work / "none")))], None)),
    Case("signing key not PEM", 2, "not a PEM private key",
         lambda c: (["backup", *c.config_with(_set("signing_key", str(c.file("junk"))))], None)),
    Case("signing key readable by others", 2, "readable by other users",
         lambda c: (["backup", *c.config_with(_set("signing_key", str(c.file(
             Path(c.settings["signing_key"]).read_bytes(), 0o640))))], None)),
    Case("webhook secret readable by others", 2, "readable by other users",
         lambda c: (["backup", *c.config_with(_set("notify.webhook", {
             "url": "http://127.0.0.1:9/hook", "secret_file": str(c.file("s", 0o644))}))], None)),
    Case("CA bundle missing", 2, "ca_bundle",
         lambda c: (["snapshots", *c.config_with(
             _set("repository.ca_bundle", str(c.work / "ca.pem")))], None)),
    # storage: reachability, TLS, posture, credentials
    Case("endpoint unreachable", 4, "unreachable",
         lambda c: (["snapshots", *c.config_with(
             _set("repository.s3_endpoint", "http://127.0.0.1:9"))], None)),
    Case("bucket missing", 4, "does not exist",
         lambda c: (["backup", *c.config_with(
             _set("repository.bucket", "gone-" + uuid.uuid4().hex[:8]))], None)),
    Case("no repository at the prefix", 4, "no restic repository",
         lambda c: (["snapshots", *c.config_with(_set("repository.prefix", "elsewhere"))], None)),
    Case("TLS failure without a CA bundle", 4, "TLS verification",
         lambda c: (["snapshots", *c.config_with(
             _set("repository.s3_endpoint", f"https://127.0.0.1:{c.tls.port}"))], None)),
    Case("TLS failure with the wrong CA bundle", 4, "does the CA bundle",
         lambda c: (["snapshots", *c.config_with(lambda s: (
             _set("repository.s3_endpoint", f"https://127.0.0.1:{c.tls.port}")(s),
             _set("repository.ca_bundle", str(_self_signed(c.work, "other-ca")[0]))(s)))], None)),
    Case("bucket without versioning or lock", 1, "versioning",
         lambda c: (["storage", "verify", *c.config_with(
             _set("repository.bucket", _make_bucket(c, versioning=False)))], None)),
    Case("wrong S3 secret key", 5, "secret key does not match",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    {"AWS_SECRET_ACCESS_KEY": "wrong" + "0" * 35})),
    Case("unknown S3 access key", 5, "refused the credentials",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    {"AWS_ACCESS_KEY_ID": "AKIANOBODY0000000000"})),
    Case("no S3 credentials", 5, "no S3 credentials",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""})),
    Case("wrong repository password", 5, "wrong repository password",
         lambda c: (["snapshots", *_password_file(c, "not the password")], None)),
    # restic: missing, old, killed, truncated, unknown code
    Case("restic missing", 8, "restic not found",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    {"DRKIT_RESTIC": str(c.work / "no-restic")})),
    Case("restic too old", 8, "too old",
         lambda c: (["snapshots", *c.config_with(lambda s: None)], {"DRKIT_RESTIC": str(c.file(
             "#!/bin/sh\necho 'restic 0.14.0 compiled with go1.19 on linux/amd64'\n", 0o755))})),
    Case("not restic at all", 8, "is not restic",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    {"DRKIT_RESTIC": str(c.file("#!/bin/sh\necho hello\n", 0o755))})),
    Case("restic killed", 10, "killed by signal 9",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    c.restic_wrapper("kill -9 $$"))),
    Case("restic output truncated", 10, "cannot parse",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    c.restic_wrapper(f'{RESTIC} "$@" | head -c 40\nexit 0'))),
    Case("restic unknown exit code", 10, "exit 42",
         lambda c: (["snapshots", *c.config_with(lambda s: None)],
                    c.restic_wrapper("echo 'Fatal: something new' >&2\nexit 42"))),
    Case("restic killed mid-restore", 10, "killed",
         lambda c: (["restore", c.node.snapshot_id, "--target", str(c.work / "t-killed"),
                     *c.config_with(lambda s: None)],
                    c.restic_wrapper(f'case "$1" in restore) kill -9 $$;; esac\n'
                                     f'exec {RESTIC} "$@"'))),
    # snapshots, trust, targets
    Case("another node's snapshot", 6, "belongs to node sftp-1",
         lambda c: (["restore", c.node.snapshot_id, "--dry-run",
                     *c.config_with(_set("node", "sftp-2"))], None)),
    Case("snapshot without a manifest", 6, "no drkit manifest",
         lambda c: (["restore", c.node.plain_id, "--target", str(c.work / "t-plain"),
                     *c.config_with(lambda s: None)], None)),
    Case("untrusted signer", 6, "untrusted key",
         lambda c: (["restore", c.node.snapshot_id, "--dry-run",
                     *c.config_with(_set("trusted_keys", ["SHA256:" + "A" * 43]))], None)),
    Case("unknown snapshot id", 2, "no snapshot",
         lambda c: (["restore", "deadbeef", "--dry-run", *c.config_with(lambda s: None)], None)),
    Case("not a snapshot id", 2, "is not a snapshot id",
         lambda c: (["show", "yesterday", *c.config_with(lambda s: None)], None)),
    Case("--at before the first snapshot", 2, "no snapshot at or before",
         lambda c: (["restore", "--at", "2001-01-01T00:00", "--dry-run",
                     *c.config_with(lambda s: None)], None)),
    Case("--at not a time", 2, "is not a time",
         lambda c: (["restore", "--at", "soon", "--dry-run", *c.config_with(lambda s: None)],
                    None)),
    Case("--trust-key malformed", 2, "is not a SHA256",
         lambda c: (["restore", "--trust-key", "abc", "--dry-run",
                     *c.config_with(lambda s: None)], None)),
    Case("bare metal without a bucket", 2, "needs --bucket",
         lambda c: (["restore", "--s3-endpoint", c.node.repository.s3_endpoint,
                     "--password-file", str(c.node.repository.password_file), "--node", "x"],
                    None)),
    Case("bare metal without trust", 6, "untrusted key",
         lambda c: (["restore", c.node.snapshot_id, "--s3-endpoint", c.node.repository.s3_endpoint,
                     "--bucket", c.node.repository.bucket, "--prefix", c.node.repository.prefix,
                     "--password-file", str(c.node.repository.password_file), "--node", "sftp-1",
                     "--target", str(c.work / "t-bare")], None)),
    Case("target is a file", 9, "target",
         lambda c: (["restore", c.node.snapshot_id, "--target", str(c.file("x") / "under"),
                     *c.config_with(lambda s: None)], None)),
    Case("target disk full", 9, "disk full",
         lambda c: (["restore", c.node.snapshot_id, "--target", str(c.small_disk),
                     *c.config_with(lambda s: None)], None)),
    Case("non-empty target without --force", 6, "pass --force",
         lambda c: (["restore", c.node.snapshot_id, "--target", str(c.occupied()),
                     *c.config_with(lambda s: None)], None)),
    # decided from the signed manifest, before anything is downloaded: a restic that dies on
    # `restore` would turn the refusal into exit 10
    Case("non-empty target refused before the download", 6, "see them with --dry-run",
         lambda c: (["restore", c.node.snapshot_id, "--target", str(c.occupied()),
                     *c.config_with(lambda s: None)],
                    c.restic_wrapper(f'case "$1" in restore) kill -9 $$;; esac\n'
                                     f'exec {RESTIC} "$@"'))),
    Case("verify: bad --read-data-subset", 2, "read-data-subset",
         lambda c: (["verify", "--read-data-subset", "lots", *c.config_with(lambda s: None)],
                    None)),
    Case("init: --include without =", 2, "is not CATEGORY=GLOB",
         lambda c: (["init", "--node", "n1", "--s3-endpoint", "http://127.0.0.1:9",
                     "--bucket", "abc", "--password-file", str(c.work / "p"),
                     "--include", "tls", "--config", str(c.work / "init.yaml")], None)),
    Case("standby sync on a node that follows nothing", 2, "no standby section",
         lambda c: (["standby", "sync", *c.config_with(lambda s: None)], None)),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_input_node(local_s3, tmp_path_factory):
    secret_dir = tmp_path_factory.mktemp("bad-input")
    with fresh_node(local_s3, secret_dir, "sftp-1") as node:
        node.snapshot_id = node.backup()
        plain = node.workspace / "plain"
        plain.mkdir()
        (plain / "note.txt").write_text("no manifest here\n")
        made = node.restic("backup", "--json", "--host", "sftp-1", "--tag", "drkit", "note.txt",
                           cwd=plain)  # fmt: skip
        assert made.returncode == 0, made.stderr
        node.plain_id = next(
            json.loads(line)["snapshot_id"]
            for line in made.stdout.splitlines()
            if "summary" in line
        )
        small = node.workspace / "small-disk"
        small.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(small)], check=True)
        tls = TlsEndpoint(secret_dir)
        try:
            yield node, tls, small
        finally:
            tls.close()
            subprocess.run(["umount", str(small)], check=False)


@pytest.mark.integration
def test_every_bad_input_gets_one_clear_line_and_its_exit_code(bad_input_node, local_s3):
    node, tls, small = bad_input_node
    context = Context(node, tls, local_s3)
    context.small_disk = small
    (small / "keep.txt").write_text("operator's file\n")
    node_before, small_before = tree(node.root), tree(small)
    assert len(CASES) >= 40
    handled, failures = 0, []
    for case in CASES:
        for json_mode in (True, False):
            args, env = case.build(context)
            result = CliRunner().invoke(app, [*args, *(["--json"] if json_mode else [])], env=env)
            problem = _judge(case, result, json_mode)
            if problem:
                failures.append(f"{case.name} ({'json' if json_mode else 'text'}): {problem}")
                break
        else:
            handled += 1
    figures.record("bad_inputs", handled=handled, total=len(CASES))
    assert not failures, "\n".join(failures)
    # nothing lost: the node, the full disk's files and the repository are as they were
    assert (context.work / "t-occupied/etc/ssh/sshd_config").read_text() == "Port 2222\n"
    assert tree(node.root) == node_before
    assert tree(small) == small_before
    assert node.restic("check").returncode == 0
    listed = json.loads(node.restic("snapshots", "--json").stdout)
    assert node.snapshot_id in [snapshot["id"] for snapshot in listed]


def _judge(case: Case, result, json_mode: bool) -> str | None:
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return f"raised {type(result.exception).__name__}: {result.exception}"
    if "Traceback" in result.output:
        return "printed a traceback"
    if result.exit_code != case.code:
        return f"exit {result.exit_code}, expected {case.code}: {result.output[-400:]}"
    if json_mode:
        try:
            document = json.loads(result.stdout)
        except ValueError:
            return f"stdout is not one JSON document: {result.stdout[:200]!r}"
        message = (document.get("error") or {}).get("message") or json.dumps(document)
    else:
        lines = [line for line in result.stderr.splitlines() if line.startswith("drkit: error")]
        if case.code == 1:
            message = result.stdout
        elif len(lines) != 1:
            return f"expected one error line on stderr, got {result.stderr[-300:]!r}"
        else:
            message = lines[0]
    if case.fragment not in message:
        return f"message {message[:300]!r} does not say {case.fragment!r}"
    if case.code != 1 and "\n" in message.strip():
        return "message spans several lines"
    return None


# -- property: config parsing gives a Config or one ConfigError line, nothing else ----------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)
_keys = st.sampled_from(
    ["node", "servers", "root", "repository", "includes", "signing_key", "trusted_keys",
     "retention", "schedule", "objectives", "notify", "state_dir", "group", "bogus",
     "s3_endpoint", "bucket", "prefix", "password_file", "rpo", "backup", "last"]
)  # fmt: skip
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)
_VALID = {
    "node": "sftp-1",
    "servers": ["openssh"],
    "repository": {
        "s3_endpoint": "http://127.0.0.1:9000",
        "bucket": "drkit-test",
        "prefix": "sftp-1",
        "password_file": "/etc/drkit/repo.pass",
    },
    "signing_key": "/etc/drkit/signing.key",
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        _values,
        st.dictionaries(_keys, _values, max_size=6).map(lambda extra: {**_VALID, **extra}),
        st.text(max_size=200),
    )
)
def test_config_parsing_returns_a_config_or_one_config_error(value):
    text = value if isinstance(value, str) else yaml.safe_dump(value)
    try:
        parsed = config_module.parse_config(text, "drkit.yaml")
    except errors.ConfigError as exc:
        assert exc.message.startswith("drkit.yaml")
        assert "\n" not in exc.message and "Traceback" not in exc.message
        return
    again = config_module.parse_config(config_module.dump_config(parsed), "again")
    assert again == parsed


def test_bad_input_table_covers_every_exit_code_it_should():
    assert {case.code for case in CASES} >= {1, 2, 4, 5, 6, 8, 9, 10}
    assert len({case.name for case in CASES}) == len(CASES)
    assert os.path.basename(RESTIC) == "restic"
