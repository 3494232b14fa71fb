"""Typed documents stay the bytes drkit has always written: the status document read and
written back, an older drkit's partial one, and the bucket posture's object lock."""

from __future__ import annotations

import json

from drkit.engines import statusdoc

WRITTEN = {
    "format": 1,
    "node": "sftp-1",
    "group": "pool",
    "updated": "2025-03-01T10:00:05.123456Z",
    "objectives": {"rpo_seconds": 86400, "rto_seconds": 900},
    "last_backup": {
        "time": "2025-03-01T10:00:00Z",
        "ok": True,
        "duration_seconds": 4,
        "error": None,
        "snapshot_id": "ab" * 32,
        "bytes_added": 1024,
        "file_count": 12,
        "certificates": [{"path": "/etc/x.pem", "kind": "tls", "not_after": "2026-01-01Z"}],
    },
    "last_good_backup": {"time": "2025-03-01T10:00:00Z", "snapshot_id": "ab" * 32},
    "last_prune": {"time": "2025-03-01T11:00:00Z", "ok": True, "duration_seconds": 1.5,
                   "error": None, "removed": 2, "kept": 7},
    "last_verify": None,
    "last_drill": {"time": "2025-03-01T12:00:00Z", "ok": False, "duration_seconds": 30.25,
                   "error": "login failed", "snapshot_id": None, "rto_seconds": None,
                   "rpo_seconds": 7200},
    "last_good_drill": None,
    "prove": "after-backup",
    "last_proven": None,
    "last_good_proof": None,
    "last_success": {"backup": "2025-03-01T10:00:00Z"},
    "snapshots": 9,
    "copies": {"offsite": "2025-03-01T10:05:00Z"},
    "written_by_a_newer_drkit": {"kept": [1, 2]},
}  # fmt: skip


def _bytes(document: object) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()


def test_a_status_document_read_and_written_back_is_byte_for_byte_the_same():
    read = statusdoc.document_of(json.loads(_bytes(WRITTEN)))
    assert read is not None and _bytes(read) == _bytes(WRITTEN)
    assert read["last_backup"]["duration_seconds"] == 4  # an int stays an int


def test_an_older_partial_document_reads_with_its_missing_entries_absent():
    older = {"format": 1, "node": "n", "last_backup": {"time": "2024-01-01T00:00:00Z", "ok": True}}
    read = statusdoc.document_of(older)
    assert read == older and "group" not in read


def test_what_is_not_a_status_document_reads_as_none():
    assert statusdoc.document_of(None) is None
    assert statusdoc.document_of(["a list"]) is None
    assert statusdoc.document_of({"node": "n", "last_backup": {"ok": "perhaps"}}) is None


def test_the_object_lock_posture_dumps_as_before_years_only_when_set():
    from drkit.engines.posture import ObjectLockState

    assert ObjectLockState().model_dump() == {"enabled": False, "mode": None, "days": None}
    in_years = ObjectLockState(enabled=True, mode="COMPLIANCE", years=1)
    assert in_years.model_dump() == {
        "enabled": True,
        "mode": "COMPLIANCE",
        "days": None,
        "years": 1,
    }
