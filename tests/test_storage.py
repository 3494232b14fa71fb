"""The S3 storage engine and `drkit storage init/verify` against the local S3 and failing ends."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import secrets
import ssl
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from nodes import refusing_port

from drkit import config, errors, runner
from drkit.actions import storage as storage_actions
from drkit.engines.storage import Storage

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(repository: config.Repository, tmp_path: Path) -> config.Config:
    return config.Config(
        node="sftp-1",
        servers=["openssh"],
        repository=repository,
        signing_key=tmp_path / "signing.pem",
        state_dir=tmp_path / "state",
    )


def _repository(tmp_path: Path, endpoint: str, **overrides) -> config.Repository:
    password_file = tmp_path / "password"
    password_file.write_text("x" * 64)
    password_file.chmod(0o600)
    settings = {
        "s3_endpoint": endpoint,
        "bucket": "drkit-test",
        "prefix": "node",
        "password_file": password_file,
        **overrides,
    }
    return config.Repository(**settings)


def _closed_port() -> int:
    return refusing_port()


@pytest.fixture
def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials that no server knows, and no metadata-service lookups."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "drkitfake")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


# -- without a server ---------------------------------------------------------------------------


def test_importing_the_storage_action_does_not_import_boto3():
    code = "import sys, drkit.actions.storage; print('boto3' in sys.modules)"
    result = runner.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.timeout(60)  # interactive commands give up within 60 s (CONVENTIONS.md)
def test_unreachable_endpoint_fails_fast_with_one_line(tmp_path: Path, fake_credentials):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    storage = Storage(_repository(tmp_path, endpoint))
    with pytest.raises(errors.StorageError) as raised:
        storage.probe()
    message = raised.value.message
    assert message.startswith(f"S3 endpoint {endpoint} unreachable")
    assert "connection refused" in message
    assert "\n" not in message
    assert raised.value.exit_code == 4


def test_no_credentials_is_an_authentication_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    storage = Storage(_repository(tmp_path, f"http://127.0.0.1:{_closed_port()}"))
    with pytest.raises(errors.AuthenticationError, match="AWS_ACCESS_KEY_ID") as raised:
        storage.probe()
    assert raised.value.exit_code == 5


def test_missing_ca_bundle_file_is_a_config_error(tmp_path: Path, fake_credentials):
    repository = _repository(tmp_path, "https://127.0.0.1:9", ca_bundle=tmp_path / "missing-ca.pem")
    with pytest.raises(errors.ConfigError, match="ca_bundle"):
        Storage(repository)


def test_keys_inside_the_repository_prefix_are_refused(tmp_path: Path, fake_credentials):
    storage = Storage(_repository(tmp_path, "http://127.0.0.1:9"))
    for key in ("node/config", "node", "/status/x.json", "status/../node/x"):
        with pytest.raises(errors.UsageError):
            storage.put_json(key, {})


# -- TLS: a self-signed HTTPS server on 127.0.0.1 ---------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "drkit test CA")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = tmp_path / "server.pem"
    key_path = tmp_path / "server.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class _BucketHandler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serve HTTPS on 127.0.0.1 with a self-signed certificate; yield (endpoint, cert)."""
    cert_path, key_path = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BucketHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.mark.timeout(60)  # interactive commands give up within 60 s (CONVENTIONS.md)
def test_untrusted_certificate_names_the_ca_bundle(tmp_path: Path, fake_credentials, tls_server):
    endpoint, _cert = tls_server
    storage = Storage(_repository(tmp_path, endpoint))
    with pytest.raises(errors.StorageError) as raised:
        storage.probe()
    message = raised.value.message
    assert message.startswith(f"TLS verification of S3 endpoint {endpoint} failed")
    assert "certificate verify failed" in message
    assert "repository.ca_bundle" in message
    assert "\n" not in message


def test_ca_bundle_makes_the_certificate_trusted(tmp_path: Path, fake_credentials, tls_server):
    endpoint, cert = tls_server
    Storage(_repository(tmp_path, endpoint, ca_bundle=cert)).probe()


# -- against the local S3 -----------------------------------------------------------------------


@pytest.mark.integration
def test_init_creates_a_versioned_locked_bucket(s3_repository, tmp_path: Path):
    result = storage_actions.init(_config(s3_repository, tmp_path), create=True).model_dump()
    assert result["ok"] is True, result
    assert result["created"] is True
    assert result["bucket"] == s3_repository.bucket
    assert result["versioning"] == "Enabled"
    assert result["object_lock"] == {"enabled": True, "mode": "GOVERNANCE", "days": 1}
    assert result["problems"] == []
    assert Storage(s3_repository).posture().model_dump() == {
        "bucket": s3_repository.bucket,
        "exists": True,
        "versioning": "Enabled",
        "object_lock": {"enabled": True, "mode": "GOVERNANCE", "days": 1},
    }


@pytest.mark.integration
def test_second_init_changes_nothing(s3_repository, tmp_path: Path):
    storage_actions.init(_config(s3_repository, tmp_path), create=True)
    again = storage_actions.init(_config(s3_repository, tmp_path), create=True).model_dump()
    assert again["ok"] is True
    assert again["created"] is False
    assert again["changes"] == []


@pytest.mark.integration
def test_verify_ok_after_init(s3_repository, tmp_path: Path):
    configuration = _config(s3_repository, tmp_path)
    storage_actions.init(configuration, create=True)
    result = storage_actions.verify(configuration).model_dump()
    assert result == {
        "ok": True,
        "bucket": s3_repository.bucket,
        "endpoint": s3_repository.s3_endpoint,
        "versioning": "Enabled",
        "object_lock": {"enabled": True, "mode": "GOVERNANCE", "days": 1},
        "lifecycle": {"id": "drkit-noncurrent-versions", "noncurrent_days": 8, "status": "Enabled"},
        "problems": [],
        "copies": [],  # repository.copies names none
    }


@pytest.mark.integration
def test_verify_detects_changed_retention_and_init_repairs_it(
    s3_repository, local_s3, tmp_path: Path
):
    configuration = _config(s3_repository, tmp_path)
    storage_actions.init(configuration, create=True)
    local_s3.client().put_object_lock_configuration(
        Bucket=s3_repository.bucket,
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 5}},
        },
    )
    drifted = storage_actions.verify(configuration).model_dump()
    assert drifted["ok"] is False
    assert drifted["problems"] == ["default retention is 5 days, the config says 1"]

    repaired = storage_actions.init(configuration, create=True).model_dump()
    assert repaired["ok"] is True
    assert repaired["changes"] == ["set default retention GOVERNANCE 1 days"]
    assert storage_actions.verify(configuration).ok is True


@pytest.mark.integration
def test_verify_detects_a_different_retention_mode(s3_repository, tmp_path: Path):
    storage_actions.init(_config(s3_repository, tmp_path), create=True)
    stricter = s3_repository.model_copy(
        update={"object_lock": config.ObjectLock(mode="COMPLIANCE", days=1)}
    )
    result = storage_actions.verify(_config(stricter, tmp_path)).model_dump()
    assert result["ok"] is False
    assert result["problems"] == [
        "default retention mode is GOVERNANCE, the config says COMPLIANCE"
    ]


@pytest.mark.integration
def test_bucket_without_lock_and_suspended_versioning(s3_repository, local_s3, tmp_path: Path):
    client = local_s3.client()
    client.create_bucket(Bucket=s3_repository.bucket)  # plain: no object lock
    for status in ("Enabled", "Suspended"):
        client.put_bucket_versioning(
            Bucket=s3_repository.bucket, VersioningConfiguration={"Status": status}
        )
    configuration = _config(s3_repository, tmp_path)
    result = storage_actions.verify(configuration).model_dump()
    assert result["ok"] is False
    assert result["versioning"] == "Suspended"
    assert result["object_lock"]["enabled"] is False
    assert len(result["problems"]) == 3
    assert result["problems"][0].startswith("versioning is Suspended")
    assert result["problems"][1].startswith("object lock is not enabled")
    assert result["problems"][2].startswith("no lifecycle rule expires noncurrent versions")

    # adopts it, versions it, then locks it
    adopted = storage_actions.init(configuration, create=True).model_dump()
    assert adopted["ok"] is True, adopted
    assert adopted["created"] is False
    assert adopted["changes"] == [
        "enabled versioning",
        "enabled object lock with default retention GOVERNANCE 1 days",
        "noncurrent versions expire after 8 days (lifecycle rule)",
    ]
    assert adopted["versioning"] == "Enabled"
    assert adopted["object_lock"] == {"enabled": True, "mode": "GOVERNANCE", "days": 1}


def test_listings_follow_every_page_and_a_refused_page_is_one_typed_error(
    tmp_path: Path, fake_credentials
):
    from botocore.stub import Stubber

    storage = Storage(_repository(tmp_path, "http://127.0.0.1:9"))
    listing = {"Bucket": "drkit-test", "Prefix": "reports/"}
    moment = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    with Stubber(storage.client) as stub:
        stub.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": "reports/b"}], "IsTruncated": True, "NextContinuationToken": "t"},
            listing,
        )
        stub.add_response(
            "list_objects_v2",
            {"Contents": [{"Key": "reports/a"}], "IsTruncated": False},
            {**listing, "ContinuationToken": "t"},
        )
        assert storage.list_keys("reports/") == ["reports/a", "reports/b"]

        versions = {"Bucket": "drkit-test", "Prefix": "status/n.json"}
        stub.add_response(
            "list_object_versions",
            {
                "Versions": [{"Key": "status/n.json", "VersionId": "v1", "LastModified": moment}],
                "IsTruncated": True,
                "NextKeyMarker": "status/n.json",
                "NextVersionIdMarker": "v1",
            },
            versions,
        )
        stub.add_response(
            "list_object_versions",
            {
                "DeleteMarkers": [
                    {
                        "Key": "status/n.json",
                        "VersionId": "v2",
                        "IsLatest": True,
                        "LastModified": moment + datetime.timedelta(hours=1),
                    }
                ],
                "IsTruncated": False,
            },
            {**versions, "KeyMarker": "status/n.json", "VersionIdMarker": "v1"},
        )
        found = storage.versions("status/n.json")
        assert [(v.version_id, v.latest, v.deleted) for v in found] == [
            ("v2", True, True),
            ("v1", False, False),
        ]

        stub.add_client_error("list_objects_v2", "AccessDenied", http_status_code=403)
        with pytest.raises(errors.AuthenticationError, match="on ListObjectsV2"):
            storage.list_keys("reports/")
        stub.assert_no_pending_responses()


def test_bucket_that_refuses_object_lock_is_reported_not_raised(tmp_path: Path, fake_credentials):
    from botocore.stub import Stubber

    storage = Storage(_repository(tmp_path, "http://127.0.0.1:9"))
    bucket = {"Bucket": "drkit-test"}
    no_lock = "ObjectLockConfigurationNotFoundError"
    with Stubber(storage.client) as stub:
        stub.add_response("head_bucket", {}, bucket)
        stub.add_response("get_bucket_versioning", {"Status": "Enabled"}, bucket)
        stub.add_client_error("get_object_lock_configuration", no_lock, http_status_code=404)
        stub.add_client_error(
            "put_object_lock_configuration", "InvalidBucketState", http_status_code=409
        )
        stub.add_response("head_bucket", {}, bucket)
        stub.add_response("get_bucket_versioning", {"Status": "Enabled"}, bucket)
        stub.add_client_error("get_object_lock_configuration", no_lock, http_status_code=404)
        result = storage.init_bucket(config.ObjectLock(mode="GOVERNANCE", days=7)).model_dump()
        stub.assert_no_pending_responses()
    assert result["created"] is False
    assert result["changes"] == []
    assert result["versioning"] == "Enabled"
    assert result["object_lock"] == {"enabled": False, "mode": None, "days": None}
    assert len(result["problems"]) == 1
    assert "refuses to enable it" in result["problems"][0]


@pytest.mark.integration
def test_locked_object_version_cannot_be_deleted(s3_repository, local_s3, tmp_path: Path):
    import botocore.exceptions

    storage_actions.init(_config(s3_repository, tmp_path), create=True)
    storage = Storage(s3_repository)
    version = storage.put_json("status/sftp-1.json", {"ok": True})
    assert version
    client = local_s3.client()
    head = client.head_object(Bucket=s3_repository.bucket, Key="status/sftp-1.json")
    assert head["ObjectLockMode"] == "GOVERNANCE"
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        client.delete_object(
            Bucket=s3_repository.bucket, Key="status/sftp-1.json", VersionId=version
        )
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # a plain delete only adds a delete marker: the locked version stays readable
    client.delete_object(Bucket=s3_repository.bucket, Key="status/sftp-1.json")
    assert storage.get_json("status/sftp-1.json") is None
    kept = client.get_object(
        Bucket=s3_repository.bucket, Key="status/sftp-1.json", VersionId=version
    )
    assert kept["Body"].read() == b'{\n  "ok": true\n}'


@pytest.mark.integration
def test_json_objects_round_trip(s3_repository, tmp_path: Path):
    storage_actions.init(_config(s3_repository, tmp_path), create=True)
    storage = Storage(s3_repository)
    assert storage.get_json("status/sftp-1.json") is None
    document = {"node": "sftp-1", "last_backup": {"ok": True, "files": 3}}
    storage.put_json("status/sftp-1.json", document)
    storage.put_json("reports/sftp-1/2026-01-01.json", {"ok": False})
    storage.put_json("reports/sftp-2/2026-01-01.json", {"ok": True})
    assert storage.get_json("status/sftp-1.json") == document
    assert storage.list_keys("reports/sftp-1/") == ["reports/sftp-1/2026-01-01.json"]
    assert storage.list_keys("status/") == ["status/sftp-1.json"]
    assert storage.list_keys("nothing/") == []


@pytest.mark.integration
def test_probe_passes_on_an_initialised_bucket(s3_repository, tmp_path: Path):
    storage_actions.init(_config(s3_repository, tmp_path), create=True)
    Storage(s3_repository).probe()


@pytest.mark.integration
def test_missing_bucket_is_a_storage_error(s3_repository, tmp_path: Path):
    with pytest.raises(errors.StorageError) as raised:
        Storage(s3_repository).probe()
    assert raised.value.message.startswith(
        f"bucket {s3_repository.bucket} does not exist at {s3_repository.s3_endpoint} "
        f"(repository prefix {s3_repository.prefix}): check repository.bucket in drkit.yaml; "
        "buckets these credentials see: "
    )
    assert "storage init" not in raised.value.message
    with pytest.raises(errors.StorageError, match="does not exist"):
        storage_actions.verify(_config(s3_repository, tmp_path))


@pytest.mark.integration
def test_wrong_secret_is_an_authentication_error(
    s3_repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    storage_actions.init(_config(s3_repository, tmp_path), create=True)
    wrong = secrets.token_hex(20)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(errors.AuthenticationError) as raised:
        Storage(s3_repository).probe()
    message = raised.value.message
    assert message.startswith("S3 refused the credentials")
    assert "secret key does not match" in message
    assert wrong not in message
    assert "\n" not in message


@pytest.mark.integration
def test_unknown_access_key_is_an_authentication_error(
    s3_repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody" + secrets.token_hex(4))
    with pytest.raises(errors.AuthenticationError, match="access key ID is not known"):
        Storage(s3_repository).probe()


@pytest.mark.integration
def test_nothing_is_written_to_a_missing_or_unprotected_bucket(
    s3_repository, local_s3, tmp_path: Path
):
    storage = Storage(s3_repository)
    with pytest.raises(errors.StorageError, match=r"does not exist .* nothing written"):
        storage.put_json("status/sftp-1.json", {"node": "sftp-1"})
    assert not storage.bucket_exists(), "a write created the misspelled bucket"
    local_s3.client().create_bucket(Bucket=s3_repository.bucket)  # plain: no versioning, no lock
    with pytest.raises(errors.StorageError, match="versioning Off: nothing written"):
        storage.put_json("status/sftp-1.json", {"node": "sftp-1"})
    assert storage.list_keys("status/") == []
    storage_actions.init(_config(s3_repository, tmp_path), create=True)
    storage.put_json("status/sftp-1.json", {"node": "sftp-1"})
    assert storage.get_json("status/sftp-1.json") == {"node": "sftp-1"}
