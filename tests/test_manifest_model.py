"""The signed manifest as a typed model: stored bytes open and encode back byte for byte."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from drkit import errors
from drkit.engines import keys, manifest
from drkit.model import AccountRecord, ChainLink, Entry, Inventory, Manifest

# Written by drkit before the manifest was a model (dict-built, commit 403c649): a node with
# a host key, an authorized key, a TLS pair, a symlink, two accounts (one without shadow),
# a chain link, facts and profile options.
STORED = Path(__file__).parent / "data" / "manifest-format1.json"


def _signed(raw: bytes) -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return json.dumps(keys.sign(key, raw))


def test_a_stored_manifest_opens_and_encodes_back_to_its_own_bytes():
    raw = STORED.read_bytes()
    opened, _ = manifest.open_signed(raw, _signed(raw))
    assert manifest.encode(opened) == raw
    assert opened.previous == ChainLink(snapshot_id="ab" * 32, manifest_sha256="cd" * 32)
    by_path = {entry.path: entry for entry in opened.files}
    link = by_path["/etc/ssh/sshd_config.d/link.conf"]
    assert (link.type, link.link, link.size, link.sha256) == (
        "symlink",
        "../sshd_config",
        None,
        None,
    )
    assert opened.certificates[0].key_path == "/etc/ssl/private/sftp.key"
    guest = opened.account("guest")
    assert guest is not None and guest.shadow is None and guest.entry.home == "/srv/guest"
    assert opened.options_of("openssh") == {"config": "/etc/ssh/sshd_config", "pam_service": "sshd"}
    assert opened.facts["vsftpd"]["program"] == "/usr/sbin/vsftpd"


def test_fields_an_older_manifest_lacks_stay_absent_and_unknown_ones_are_kept():
    document = json.loads(STORED.read_bytes())
    for absent in ("previous", "skipped", "facts", "profile_options", "host_keys"):
        del document[absent]
    del document["files"][0]["user"]
    document["files"][0]["user"] = "root"  # re-added: order never matters, keys are sorted
    document["from_a_newer_drkit"] = {"anything": [1, 2.5, None]}
    document["accounts"][0]["note"] = "kept"
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    opened, _ = manifest.open_signed(raw, _signed(raw))
    assert manifest.encode(opened) == raw
    assert "previous" not in opened.model_fields_set and opened.previous is None
    assert opened.host_keys == [] and opened.skipped == []


@pytest.mark.parametrize(
    "edit, why",
    [
        (lambda d: d["files"][0].update(type="fifo"), "files.0.type"),
        (lambda d: d["files"][0].update(uid="0"), "files.0.uid"),
        (lambda d: d["accounts"][0].pop("passwd"), "accounts.0.passwd"),
        (lambda d: d.update(previous={"snapshot_id": "ab"}), "previous.manifest_sha256"),
    ],
    ids=["fifo-entry", "uid-as-text", "account-without-passwd", "half-a-link"],
)
def test_a_malformed_signed_manifest_is_refused_naming_the_field(edit, why):
    document = json.loads(STORED.read_bytes())
    edit(document)
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    with pytest.raises(errors.Refused, match=f"manifest is malformed: {why}"):
        manifest.open_signed(raw, _signed(raw))


def _fields(document: dict) -> dict[str, set[frozenset[str]]]:
    """Return the key sets of the top level and of each kind of record (files by type)."""
    shapes: dict[str, set[frozenset[str]]] = {"manifest": {frozenset(document)}}
    for entry in document["files"]:
        shapes.setdefault(f"file:{entry['type']}", set()).add(frozenset(entry))
    for section in ("keys", "host_keys", "certificates", "accounts"):
        shapes[section] = {frozenset(record) for record in document[section]}
    shapes["previous"] = {frozenset(document["previous"])}
    return shapes


def test_build_writes_the_fields_the_stored_manifest_has_no_more_no_fewer(tmp_path: Path):
    from devtools.sample_node import certificate_and_key

    root = tmp_path
    (root / "etc/ssh/sshd_config.d").mkdir(parents=True)
    (root / "etc/ssl/private").mkdir(parents=True)
    (root / "home/drill/.ssh").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text("Port 22\n")
    (root / "etc/ssh/sshd_config.d/link.conf").symlink_to("../sshd_config")
    host_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    (root / "etc/ssh/ssh_host_ed25519_key").write_bytes(host_key)
    os.chmod(root / "etc/ssh/ssh_host_ed25519_key", 0o600)
    line = keys.describe_key((root / "etc/ssh/ssh_host_ed25519_key").read_bytes())
    assert line is not None
    (root / "home/drill/.ssh/authorized_keys").write_text(line.public_line + " drill@laptop\n")
    certificate, tls_key = certificate_and_key("sftp.example.net")
    (root / "etc/ssl/sftp.crt").write_bytes(certificate)
    (root / "etc/ssl/private/sftp.key").write_bytes(tls_key)
    inventory = Inventory(
        files=[
            Entry("/etc/ssh/sshd_config", "config"),
            Entry("/etc/ssh/ssh_host_ed25519_key", "host_keys"),
            Entry("/home/drill/.ssh/authorized_keys", "user_keys"),
            Entry("/etc/ssl/sftp.crt", "tls"),
            Entry("/etc/ssl/private/sftp.key", "tls"),
        ],
        dirs=[Entry("/etc/ssh/sshd_config.d", "config")],
        facts={"vsftpd": {"program": "/usr/sbin/vsftpd"}},
    )
    built = manifest.build(
        root,
        inventory,
        node="sftp-1",
        profiles=["openssh"],
        accounts=[
            AccountRecord(
                name="drill",
                passwd="drill:x:2101:2101::/home/drill:/bin/sh",
                shadow="drill:*:19800:0:99999:7:::",
                groups=["drill:x:2101:"],
            ),
            AccountRecord(
                name="guest", passwd="guest:x:2102:2102::/srv/guest:/bin/sh", shadow=None, groups=[]
            ),
        ],
        created=datetime.now(UTC),
        previous=ChainLink(snapshot_id="ab" * 32, manifest_sha256="cd" * 32),
        profile_options={"openssh": {"config": "/etc/ssh/sshd_config"}},
    )
    raw = manifest.encode(built)
    made = _fields(json.loads(raw))
    stored = _fields(json.loads(STORED.read_bytes()))
    assert made == stored
    assert manifest.encode(Manifest.model_validate_json(raw)) == raw
