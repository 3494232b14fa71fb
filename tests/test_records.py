"""Signed records: sealed as drkit has always written them (the record's sorted JSON text and
the signature over it), opened typed, an older head still opening and a forged one refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drkit import errors
from drkit.engines import keys, records
from drkit.service.opening import open_record

PRUNE: records.PruneRecord = {
    "kind": "prune",
    "node": "sftp-1",
    "time": "2025-03-01T10:00:00Z",
    "keep_rules": {"last": 3},
    "removed": [{"id": "ab" * 32, "time": "2025-02-01T10:00:00Z"}],
    "kept": ["cd" * 32],
}


@pytest.fixture
def signing(tmp_path: Path):
    fingerprint = keys.generate_signing_key(tmp_path / "signing.key")
    return keys.load_signing_key(tmp_path / "signing.key"), fingerprint


def test_a_sealed_record_is_its_sorted_json_text_and_the_signature_over_it(signing):
    key, fingerprint = signing
    sealed = records.seal(key, PRUNE)
    assert sealed["record"] == json.dumps(PRUNE, sort_keys=True)
    assert keys.verify_signature(sealed["signature"], sealed["record"].encode()) == fingerprint
    stored = json.loads(json.dumps(sealed))  # as the bucket gives it back
    assert open_record(stored, {fingerprint}, "sftp-1", "prune") == PRUNE


def test_an_older_head_without_the_newer_keys_opens_and_unknown_keys_are_kept(signing):
    key, fingerprint = signing
    older = {"kind": "head", "node": "n1", "time": "2024-01-01T00:00:00Z", "later": [1]}
    text = json.dumps(older, sort_keys=True)
    stored = {"record": text, "signature": keys.sign(key, text.encode())}
    head = open_record(stored, {fingerprint}, "n1", "head")
    assert head == older and "snapshots" not in head


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda r: {**r, "node": "other"}, "not a prune record of node sftp-1"),
        (lambda r: {**r, "kind": "head"}, "not a prune record of node sftp-1"),
        (lambda r: {**r, "kept": "everything"}, "not a prune record of node sftp-1"),
    ],
    ids=["other-node", "other-kind", "malformed"],
)
def test_a_record_of_another_node_kind_or_shape_is_refused(signing, change, refusal):
    key, fingerprint = signing
    text = json.dumps(change(PRUNE), sort_keys=True)
    stored = {"record": text, "signature": keys.sign(key, text.encode())}
    with pytest.raises(errors.Refused, match=refusal):
        open_record(stored, {fingerprint}, "sftp-1", "prune")


def test_an_untrusted_or_altered_record_is_refused(signing):
    key, fingerprint = signing
    sealed = records.seal(key, PRUNE)
    with pytest.raises(errors.Refused, match="untrusted key"):
        open_record(sealed, {"SHA256:someone-else"}, "sftp-1", "prune")
    altered = {**sealed, "record": sealed["record"].replace('"last": 3', '"last": 1')}
    with pytest.raises(errors.Refused, match="does not verify"):
        open_record(altered, {fingerprint}, "sftp-1", "prune")
