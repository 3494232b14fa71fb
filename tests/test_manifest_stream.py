"""The manifest parsed and encoded a piece at a time: the same bytes, the same refusals, and
file entries that share their field sets without one entry's change reaching another."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from drkit import errors
from drkit.engines import freshness, keys, manifest, manifestjson
from drkit.model import Entry, FileRecord, Inventory, Manifest, utc_text

STORED = Path(__file__).parent / "data" / "manifest-format1.json"


def _open(raw: bytes) -> Manifest:
    key = ed25519.Ed25519PrivateKey.generate()
    return manifest.open_signed(raw, json.dumps(keys.sign(key, raw)))[0]


def _entry(index: int, **extra: object) -> dict[str, object]:
    return {
        "path": f"/srv/sftp/u/upload/f-{index:05d}-é.csv",
        "category": "chroot", "type": "file", "mode": "0644", "uid": 1000, "gid": 1000,
        "user": "u", "group": "u", "mtime": "2026-12-07T10:00:00Z", "size": index,
        "sha256": f"{index:064x}", **extra,
    }  # fmt: skip


def _many(count: int) -> bytes:
    """A manifest of count files (more than one piece), a directory, a symlink, an entry with
    a field this version does not know, and a facts value named like the files array."""
    files = [
        {"path": "/srv", "category": "parents", "type": "dir", "mode": "0755", "uid": 0,
         "gid": 0, "user": "root", "group": "root", "mtime": "2026-12-07T09:00:00Z"},
        {"path": "/srv/link", "category": "chroot", "type": "symlink", "mode": "0777", "uid": 0,
         "gid": 0, "user": "root", "group": "root", "mtime": "2026-12-07T09:00:00Z",
         "link": "sftp"},
        *(_entry(i) for i in range(count)),
        _entry(count, from_a_newer_drkit={"kept": [1, 2.5, None]}),
    ]  # fmt: skip
    document = {"format": 1, "node": "n", "created": "2026-12-07T10:00:00.000001Z",
                "files": files, "facts": {"files": {"files": []}}, "warnings": ["w"]}  # fmt: skip
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def test_a_manifest_of_several_pieces_opens_and_encodes_back_to_its_own_bytes():
    raw = _many(2 * manifestjson.PIECE + 7)
    opened = _open(raw)
    assert len(opened.files) == 2 * manifestjson.PIECE + 10
    assert manifest.encode(opened) == raw
    assert manifest.parse(raw) == opened  # drkit's own copy, unsigned, the same way
    assert manifest.encode(_open(STORED.read_bytes())) == STORED.read_bytes()
    spaced = json.dumps(json.loads(raw), indent=2).encode()  # valid JSON, not drkit's spacing
    assert _open(spaced).files == opened.files


def test_the_freshness_digest_is_the_one_of_the_whole_document():
    opened = _open(_many(manifestjson.PIECE + 1))
    document = opened.model_dump(exclude_unset=True)
    stable = {k: v for k, v in document.items() if k not in freshness.VOLATILE}
    stable["files"] = [
        {k: v for k, v in entry.items() if k != "mtime"} if entry["type"] == "dir" else entry
        for entry in document["files"]
    ]
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode())
    digest.update(b"\0config")
    assert freshness.content_digest(opened, "config") == digest.hexdigest()


@pytest.mark.parametrize(
    ("raw", "refusal"),
    [
        (b'{"created":"c","files":[],"format":1 "node":"n"}', "manifest is not JSON"),
        (b'{"created":"c","files":[],"format":1,"node":"n",}', "manifest is not JSON"),
        (b'{"created":"c","files":[{}, ],"format":1,"node":"n"}', "manifest is not JSON"),
        (b'{"created":"c","files":[],"format":1,"node":"n"} {}', "manifest is not JSON"),
        (b'\xff{"format":1}', "manifest is not JSON"),
        (b'{"created":"c","files":[],"format":2,"node":"n"}', "manifest has an unknown format"),
        (b'{"created":"c","files":[{"path":1}],"format":2,"node":"n"}', "unknown format"),
        (b"[1]", "manifest has an unknown format"),
        (
            json.dumps(
                {
                    "created": "c",
                    "files": [_entry(0), {**_entry(1), "size": None}],
                    "format": 1,
                    "node": "n",
                }
            ).encode(),
            "manifest is malformed: files.1: Value error, a regular file's entry needs",
        ),
    ],
)
def test_what_the_pieces_cannot_read_is_refused_as_the_whole_document_was(raw, refusal):
    with pytest.raises(errors.Refused, match=refusal):
        _open(raw)


def test_entries_sharing_a_field_set_keep_their_own_when_one_changes():
    opened = _open(_many(3))
    first, second = [entry for entry in opened.files if entry.type == "file"][:2]
    assert first.__pydantic_fields_set__ is second.__pydantic_fields_set__
    first.link = "set where it was absent"
    assert "link" in first.model_fields_set and "link" not in second.model_fields_set
    assert '"link"' not in json.dumps(second.model_dump(exclude_unset=True))
    assert first.user is second.user  # equal repeated values are one object


def test_built_entries_hash_every_file_across_the_threads(tmp_path: Path):
    tree = tmp_path / "data"
    for index in range(3 * manifest.BATCH + 5):
        (tree / f"d{index % 7}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{index % 7}" / f"f{index}").write_bytes(str(index).encode() * (index + 1))
        if index % 50 == 0:  # a batch holding BIG bytes is hashed by a thread
            (tree / f"d{index % 7}" / f"g{index}").write_bytes(bytes([index % 256]) * manifest.BIG)
    built = manifest.build(
        tmp_path, Inventory(dirs=[Entry("/data", "config")]), node="n", profiles=[],
        accounts=[], created=datetime.now(UTC),
    )  # fmt: skip
    files = [entry for entry in built.files if entry.type == "file"]
    assert len(files) == 3 * manifest.BATCH + 5 + len(range(0, 3 * manifest.BATCH + 5, 50))
    for entry in files:
        data = (tmp_path / entry.path.lstrip("/")).read_bytes()
        assert (entry.sha256, entry.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert [entry.path for entry in built.files] == sorted(entry.path for entry in built.files)
    assert manifest.encode(_open(manifest.encode(built))) == manifest.encode(built)


@pytest.mark.parametrize(
    "mtime",
    [0.0, 1733569199.9999995, 1733569199.9999994, 1733569199.9999996, 1733569200.0000004,
     -0.5, -1.9999996, 1733569199.5, 2**31 + 0.999999999, 1e9 + 0.123456789],
)  # fmt: skip
def test_an_mtime_is_written_as_datetime_writes_it(mtime: float):
    assert manifest._mtime_text(mtime) == utc_text(datetime.fromtimestamp(mtime, UTC))


@pytest.mark.parametrize(
    "extra",
    [
        {"type": "file", "size": 3, "sha256": "ab"},
        {"type": "symlink", "link": "x"},
        {"type": "dir"},
    ],
)
def test_a_trusted_entry_is_the_validated_one(extra: dict[str, object]):
    values = {
        "path": "/a",
        "category": "config",
        "mode": "0644",
        "uid": 0,
        "gid": 0,
        "user": "root",
        "group": "root",
        "mtime": "2026-12-07T10:00:00Z",
        **extra,
    }
    trusted, validated = FileRecord.trusted(values), FileRecord.model_validate(values)
    assert trusted == validated and repr(trusted) == repr(validated)
    assert trusted.model_fields_set == validated.model_fields_set
    assert trusted.model_dump_json(exclude_unset=True) == validated.model_dump_json(
        exclude_unset=True
    )
