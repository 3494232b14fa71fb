"""The catalog engine: sealing, the signed index's entries, the texts a sealed object carries."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from drkit import errors
from drkit.engines import catalog
from tests.manifests import partial

ID = "a" * 64


def password_file(tmp_path, text: str = "correct horse\n"):
    path = tmp_path / "password"
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_a_sealed_object_opens_only_with_its_key_under_its_own_name():
    key, other = catalog.new_catalog_key(), catalog.new_catalog_key()
    name = catalog.bundle_key("sftp-1", ID)
    sealed = catalog.seal(key, name, b"shadow:$6$secret")
    assert b"secret" not in sealed
    assert catalog.unseal(key, name, sealed) == b"shadow:$6$secret"
    assert catalog.unseal(other, name, sealed) is None  # sealed under another catalog key
    with pytest.raises(errors.Refused, match="does not open"):
        catalog.unseal(key, name + "x", sealed)  # moved under another snapshot's name
    document = json.loads(sealed)
    document["data"] = document["data"][:-8] + "AAAAAAA="
    with pytest.raises(errors.Refused):
        catalog.unseal(key, name, json.dumps(document).encode())
    with pytest.raises(errors.Refused, match="not a sealed drkit object"):
        catalog.unseal(key, name, b"{}")


def test_the_catalog_key_unwraps_with_each_password_it_was_wrapped_under(tmp_path):
    old, new = password_file(tmp_path, "old\n"), tmp_path / "new"
    new.write_text("new")  # no trailing newline: the same rule as with one
    key = catalog.new_catalog_key()
    both = catalog.wrap_key(key, [old, new], "sftp-1")
    assert key.hex() not in both.decode() and b"old" not in both
    assert catalog.unwrap_key(both, old, "sftp-1") == key
    assert catalog.unwrap_key(both, new, "sftp-1") == key
    assert catalog.unwrap_key(both, new, "sftp-2") is None  # another node's key object
    only_new = catalog.wrap_key(key, [new], "sftp-1")
    assert catalog.unwrap_key(only_new, old, "sftp-1") is None
    assert catalog.unwrap_key(b"not json", old, "sftp-1") is None
    with pytest.raises(errors.ConfigError, match="password_file"):
        catalog.unwrap_key(only_new, tmp_path / "missing", "sftp-1")


def test_a_remembered_catalog_key_is_unwrapped_again_once_password_or_object_change(
    tmp_path, monkeypatch
):
    password, remembered = password_file(tmp_path, "old\n"), tmp_path / "cache" / "n.key.json"
    key = catalog.new_catalog_key()
    blob = catalog.wrap_key(key, [password], "sftp-1")
    scrypts: list[int] = []
    real = catalog.unwrap_key
    monkeypatch.setattr(catalog, "unwrap_key", lambda *a: scrypts.append(1) or real(*a))
    for _ in range(2):
        assert catalog.unwrap_key_remembered(blob, password, "sftp-1", remembered) == key
    assert len(scrypts) == 1 and remembered.stat().st_mode & 0o777 == 0o600
    password.write_text("new\n")  # changed outside drkit: no longer opens the object
    assert catalog.unwrap_key_remembered(blob, password, "sftp-1", remembered) is None
    rewrapped = catalog.wrap_key(key, [password], "sftp-1")
    assert catalog.unwrap_key_remembered(rewrapped, password, "sftp-1", remembered) == key
    remembered.write_text('{"identity": "x", "key": "not base64!"}')
    assert catalog.unwrap_key_remembered(rewrapped, password, "sftp-1", remembered) == key
    assert len(scrypts) == 4


def test_index_entries_round_trip_and_malformed_ones_are_refused():
    now = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
    entry = catalog.IndexEntry(ID, now, "b" * 64, 12, 3400, ("drkit", "node:sftp-1"))
    assert catalog.parse_index([entry.as_dict()]) == [entry]
    for bad in ({"id": "short", "time": "2026-12-04T01:00:00Z"},
                {"id": ID, "time": "2026-12-04T01:00:00Z", "manifest_sha256": "zz"}):  # fmt: skip
        with pytest.raises(ValueError):
            catalog.parse_index([bad])
    with pytest.raises(ValueError):
        catalog.parse_index({"not": "a list"})


def test_extending_the_index_replaces_an_id_keeps_time_order_and_the_limit(monkeypatch):
    start = datetime(2026, 1, 1, tzinfo=UTC)
    entries = [catalog.IndexEntry(f"{n:064x}", start + timedelta(hours=n), None) for n in range(5)]
    index: list[catalog.IndexEntry] = []
    for entry in reversed(entries):
        index = catalog.extend_index(index, entry)
    assert index == entries
    again = catalog.IndexEntry(entries[2].id, entries[2].time, "c" * 64)
    assert catalog.extend_index(index, again)[2] == again
    monkeypatch.setattr(catalog, "INDEX_LIMIT", 3)
    assert catalog.extend_index(index, entries[0]) == entries[2:]


def test_a_sealed_object_carries_config_texts_but_never_a_key(tmp_path):
    root = tmp_path / "root"
    (root / "etc/ssh").mkdir(parents=True)
    (root / "etc/ssh/sshd_config").write_text("Port 22\n")
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (root / "etc/ssh/changed").write_text("now\n")

    def entry(path: str, category: str, data: bytes) -> dict[str, object]:
        return {"path": path, "category": category, "type": "file", "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest()}  # fmt: skip

    node_manifest = partial(
        files=[
            entry("/etc/ssh/sshd_config", "config", b"Port 22\n"),
            entry("/etc/ssh/ssh_host_ed25519_key", "config", b"x"),
            entry("/etc/ssh/changed", "config", b"then\n"),
            entry("/var/log/sftp.log", "audit_logs", b"log"),
        ],
        keys=[{"path": "/etc/ssh/ssh_host_ed25519_key"}],
    )
    paths = catalog.text_paths(node_manifest)
    assert paths == ["/etc/ssh/sshd_config", "/etc/ssh/changed"]
    texts = catalog.read_texts(root, node_manifest, paths)
    assert texts == {"/etc/ssh/sshd_config": "Port 22\n"}  # changed since: left to restic
    bundle = catalog.Bundle(b'{"format":1}\n', "node: x\n", {**texts, "/etc/ssh/changed": "now\n"})
    opened = catalog.Bundle.decode(bundle.encode(), "k")
    assert opened.manifest == b'{"format":1}\n' and opened.config == "node: x\n"
    assert opened.text(node_manifest, "/etc/ssh/sshd_config") == "Port 22\n"
    assert opened.text(node_manifest, "/etc/ssh/changed") is None  # not what the manifest says
    with pytest.raises(errors.Refused, match="holds no drkit manifest"):
        catalog.Bundle.decode(b'{"texts": {}}\n', "k")


def test_the_texts_of_one_object_stop_at_their_budget(monkeypatch):
    monkeypatch.setattr(catalog, "TEXTS_MAX_BYTES", 10)
    files = [{"path": f"/etc/{n}", "category": "config", "type": "file", "size": size}
             for n, size in enumerate((4, 5, 3, 1))]  # fmt: skip
    assert catalog.text_paths(partial(files=files)) == ["/etc/0", "/etc/1", "/etc/3"]
