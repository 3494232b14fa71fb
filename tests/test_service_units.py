"""The service layer's pure parts: the snapshot spec parsed once, and the rollback rules on
signed manifests and this machine's record (no S3, no restic)."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drkit import errors
from drkit.config import Repository
from drkit.model import Manifest
from drkit.service import rollback
from drkit.service.opening import Opened
from drkit.service.spec import Spec

OLD, NEW = "a" * 64, "b" * 64


@pytest.mark.parametrize(
    ("text", "back", "prefix"),
    [("latest", 0, None), ("latest~3", 3, None), ("abcd", None, "abcd"), (OLD, None, OLD)],
)
def test_a_spec_is_parsed_once(text: str, back: int | None, prefix: str | None):
    spec = Spec.parse(text)
    assert (spec.back, spec.prefix, spec.random, str(spec)) == (back, prefix, False, text)
    assert spec.latest == (text == "latest") and Spec.of(spec) is spec


@pytest.mark.parametrize("text", ["", "latest~", "latest~-1", "abc", "ABCD", "random", "x" * 5])
def test_a_spec_that_names_nothing_is_a_usage_error(text: str):
    with pytest.raises(errors.UsageError, match="is not a snapshot id, 'latest' or 'latest~N'"):
        Spec.parse(text)


def test_random_is_a_spec_only_where_it_is_allowed():
    assert Spec.parse("random", allow_random=True).random
    with pytest.raises(errors.UsageError, match="or 'random'"):
        Spec.parse("sometimes", allow_random=True)


def _opened(created: str, body: str = "") -> Opened:
    document = {"format": 1, "node": "sftp-1", "created": created, "files": [], "body": body}
    raw = json.dumps(document).encode()
    return Opened(Manifest.model_validate_json(raw), "SHA256:x", "config", None, raw)


def _known(snapshot_id: str, opened: Opened | None, when: str) -> rollback.Known:
    sha = hashlib.sha256(opened.raw).hexdigest() if opened else None
    moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    return rollback.Known(snapshot_id, moment, sha, "the signed chain head")


def test_an_older_signed_state_is_refused_naming_both_snapshots():
    older, newer = _opened("2026-12-01T10:00:00Z"), _opened("2026-12-02T10:00:00Z", "new")
    witness = _known(NEW, newer, "2026-12-02T10:00:05Z")
    replayed = "c" * 64  # the old manifest backed up again: a new id, the old signed state
    with pytest.raises(errors.Refused) as refused:
        rollback.refuse_rollback(replayed, older, [witness], allow=False)
    assert replayed[:8] in refused.value.message and NEW[:8] in refused.value.message
    assert "--allow-rollback" in refused.value.message
    rollback.refuse_rollback(replayed, older, [witness], allow=True)  # the operator's choice


def test_the_same_signed_state_or_a_newer_one_passes():
    newer = _opened("2026-12-02T10:00:00Z", "new")
    witness = _known(NEW, newer, "2026-12-02T10:00:05Z")
    rollback.refuse_rollback(NEW, newer, [witness, None], allow=False)
    rollback.refuse_rollback("d" * 64, newer, [witness], allow=False)  # same manifest, new id
    newest = _opened("2026-12-03T10:00:00Z", "newest")  # the head was not written yet
    rollback.refuse_rollback("e" * 64, newest, [witness], allow=False)


def test_the_same_id_with_another_manifest_is_refused():
    signed, other = _opened("2026-12-02T10:00:00Z", "new"), _opened("2026-12-02T10:00:00Z", "x")
    with pytest.raises(errors.Refused, match="not the one"):
        rollback.refuse_rollback(NEW, other, [_known(NEW, signed, "2026-12-02T10:00:05Z")],
                                 allow=False)  # fmt: skip


def test_this_machines_record_keeps_the_newest_and_is_private(tmp_path: Path):
    repository = Repository(
        s3_endpoint="http://127.0.0.1:1",
        bucket="drkit-units",
        prefix="p",
        password_file=tmp_path / "pw",
    )
    older, newer = _opened("2026-12-01T10:00:00Z"), _opened("2026-12-02T10:00:00Z", "new")
    os.umask(0o000)
    try:
        rollback.remember(tmp_path, repository, "sftp-1", NEW, newer.raw)
        rollback.remember(tmp_path, repository, "sftp-1", OLD, older.raw)  # older: kept as is
    finally:
        os.umask(0o022)
    known = rollback.remembered(tmp_path, repository, "sftp-1")
    assert known is not None and known.snapshot_id == NEW
    assert known.time == datetime(2026, 12, 2, 10, tzinfo=UTC)
    path = rollback.seen_path(tmp_path, repository, "sftp-1")
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700
    other = repository.model_copy(update={"prefix": "q"})
    assert rollback.remembered(tmp_path, other, "sftp-1") is None  # one record per repository


def test_a_record_that_is_not_a_small_regular_file_is_no_witness(tmp_path: Path):
    repository = Repository(
        s3_endpoint="http://127.0.0.1:1",
        bucket="drkit-units",
        prefix="p",
        password_file=tmp_path / "pw",
    )
    path = rollback.seen_path(tmp_path, repository, "sftp-1")
    path.parent.mkdir(parents=True)
    os.mkfifo(path)  # never waited on
    assert rollback.remembered(tmp_path, repository, "sftp-1") is None
    path.unlink()
    path.write_text("[" * 100_000)
    assert rollback.remembered(tmp_path, repository, "sftp-1") is None
