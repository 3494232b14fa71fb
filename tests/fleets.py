"""Status documents, drill histories and fleets of them in a bucket, as the fleet page and
the drill page read them (shared test data builders)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from nodes import fresh_repository

from drkit import config
from drkit.engines.storage import Storage
from drkit.model import utc_text

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
OBJECTIVES = {"rpo_seconds": 900, "rto_seconds": 600}


def status_document(node: str, *, backup_age: float | None, ok: bool = True, **extra) -> dict:
    """Return a status document as engines.status.record writes it, its last backup (good when
    ok) backup_age seconds before NOW; None: a node registered by init that never ran."""
    document = {
        "format": 1,
        "node": node,
        "group": extra.pop("group", None),
        "updated": utc_text(NOW),
        "objectives": OBJECTIVES,
        "last_backup": None,
        "last_good_backup": None,
        "last_prune": None,
        "last_verify": None,
        "last_drill": None,
        "last_success": {},
        "snapshots": None,
    }
    if backup_age is not None:
        when = utc_text(NOW - timedelta(seconds=backup_age))
        document["last_backup"] = {"time": when, "ok": ok, "snapshot_id": "ab" * 32}
        document["last_good_backup"] = {"time": when, "snapshot_id": "ab" * 32}
        if not ok:
            document["last_backup"]["error"] = "S3 refused the upload"
    document.update(extra)
    return document


def drill_history(rtos: list[float], start: str = "2026-11-30T08:00:00Z") -> list[dict]:
    first = datetime.fromisoformat(start.replace("Z", "+00:00"))
    return [
        {
            "time": utc_text(first + timedelta(minutes=7 * index)),
            "ok": True,
            "rto_seconds": rto,
            "rpo_seconds": 40.0 + index,
        }
        for index, rto in enumerate(rtos)
    ]


def failed_drill() -> dict:
    checks = [{"name": f"check {index}", "status": "pass", "detail": "ok"} for index in range(25)]
    checks.append({"name": "smoke: sftp login", "status": "fail", "detail": "Permission denied"})
    checks.append({"name": "objective: RTO", "status": "pass", "detail": "4.0 s"})
    return {
        "ok": False,
        "kind": "drill",
        "node": "sftp-1",
        "snapshot_id": "0123456789abcdef",
        "snapshot": {"id": "0123456789abcdef", "time": utc_text(NOW), "spec": "random"},
        "signer": "SHA256:" + "A" * 43,
        "trust": "config",
        "started": utc_text(NOW),
        "finished": utc_text(NOW),
        "duration_seconds": 9.0,
        "rto_seconds": 4.0,
        "rpo_seconds": 3600,
        "rpo_judged": False,
        "objectives": OBJECTIVES,
        "objectives_met": {"rto": True, "rpo": None},
        "checks": checks,
        "host_keys": [
            {
                "path": "/etc/ssh/ssh_host_ed25519_key",
                "type": "ED25519",
                "fingerprint": "SHA256:" + "B" * 43,
                "served": "SHA256:" + "B" * 43,
                "ok": True,
            }
        ],
        "certificates": [],
        "sandbox": {"path": "/var/lib/drkit/drills/x", "removed": True},
    }


def bucket_config(local_s3, tmp_path: Path) -> config.Config:
    """Return a node's config on a fresh bucket of the local S3 (no restic repository)."""
    repository = fresh_repository(local_s3, tmp_path)
    Storage(repository).init_bucket(repository.object_lock)  # versioned and locked
    return config.Config(
        node="n-0000",
        servers=["openssh"],
        repository=repository,
        signing_key=tmp_path / "signing.key",
        state_dir=tmp_path / "state",
    )


def write_fleet(storage: Storage, count: int) -> dict[str, dict]:
    """Store count nodes' status documents, every fifth stale and every seventh failed."""
    from concurrent.futures import ThreadPoolExecutor

    now = datetime.now(UTC)
    documents = {}
    for index in range(count):
        name = f"n-{index:04d}"
        age = 7200 if index % 5 == 4 else 60
        document = status_document(name, backup_age=age, ok=index % 7 != 6, group="g")
        document["updated"] = utc_text(now)
        for job in ("last_backup", "last_good_backup"):
            document[job]["time"] = utc_text(now - timedelta(seconds=age))
        documents[name] = document
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda item: storage.put_json(f"status/{item[0]}.json", item[1]), documents.items()
            )
        )
    return documents
