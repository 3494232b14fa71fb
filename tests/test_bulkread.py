"""The fleet views' lean bucket reader (engines.bulkread): every status document read, the
unchanged ones from the cache by ETag, a tampered cache never believed, anything unexpected read
again through the one door (same problems, same `malformed`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nodes import fresh_repository

from drkit.engines import bulkread
from drkit.engines.storage import Storage
from drkit.service.status import fleet_documents

pytestmark = pytest.mark.integration


class CountingReader(bulkread.BulkReader):
    """A reader that counts its lean GETs of objects (listings not counted)."""

    gets = 0

    def _get(self, url: str, params, limit: int) -> bytes:
        if not params:
            CountingReader.gets += 1
        return super()._get(url, params, limit)


def document(node: str, note: str = "") -> dict:
    return {"format": 1, "node": node, "updated": "2026-12-01T00:00:00Z", "group": note or None}


@pytest.fixture
def storage(local_s3, tmp_path: Path) -> Storage:
    repository = fresh_repository(local_s3, tmp_path)
    storage = Storage(repository)
    storage.init_bucket(repository.object_lock)
    for index in range(12):
        storage.put_json(f"status/n-{index:02d}.json", document(f"n-{index:02d}"))
    return storage


def read_all(storage: Storage, cache: Path) -> tuple[dict[str, object], list[str]]:
    reader = CountingReader(storage, workers=4, cache=cache)
    found = reader.read(reader.listing("status/"))
    return found, reader.problems


def test_unchanged_documents_come_from_the_cache_and_changed_ones_from_the_bucket(
    storage, tmp_path
):
    cache = bulkread.cache_file(tmp_path / "state", storage)
    CountingReader.gets = 0
    first, problems = read_all(storage, cache)
    assert CountingReader.gets == 12 and not problems
    assert first["status/n-03.json"] == document("n-03")
    assert cache.stat().st_mode & 0o777 == 0o600
    storage.put_json("status/n-03.json", document("n-03", "changed"))
    CountingReader.gets = 0
    second, _ = read_all(storage, cache)
    assert CountingReader.gets == 1  # only the changed one
    assert second["status/n-03.json"] == document("n-03", "changed")
    assert {key: value for key, value in second.items() if key != "status/n-03.json"} == {
        key: value for key, value in first.items() if key != "status/n-03.json"
    }


def test_a_tampered_cache_is_not_believed(storage, tmp_path):
    cache = bulkread.cache_file(tmp_path / "state", storage)
    read_all(storage, cache)
    stored = json.loads(cache.read_text())
    stored["objects"]["status/n-05.json"] = json.dumps(document("n-05", "planted"))
    stored["objects"]["status/n-06.json"] = "[" * 40 + "]" * 40
    cache.write_text(json.dumps(stored))
    CountingReader.gets = 0
    found, _ = read_all(storage, cache)
    assert CountingReader.gets == 2  # neither planted body matches the listed ETag
    assert found["status/n-05.json"] == document("n-05")
    assert found["status/n-06.json"] == document("n-06")
    for planted in ("not json", "[]", '{"format": 1, "objects": []}'):
        cache.write_text(planted)
        assert read_all(storage, cache)[0] == found


def test_a_malformed_document_is_read_again_through_the_door(storage, tmp_path):
    deep = b"[" * 40 + b"]" * 40
    storage.put_bytes("status/n-07.json", deep, "application/json")
    storage.put_bytes("status/n-08.json", b"{not json", "application/json")
    documents, problems = fleet_documents(storage, tmp_path / "state")
    assert documents["n-07"] is None and documents["n-08"] is None and not problems
    assert documents["n-09"] == document("n-09")
    assert sum("n-07.json" in line or "n-08.json" in line for line in storage.malformed) == 2


def test_without_the_lean_path_every_document_is_still_read(storage, tmp_path, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # the lean path steps aside
    CountingReader.gets = 0
    found, problems = read_all(storage, bulkread.cache_file(tmp_path / "state", storage))
    assert found["status/n-11.json"] == document("n-11") and len(found) == 12 and not problems


def test_a_large_fleet_table_lists_every_node_with_a_problem_and_says_what_it_leaves_out(
    capsys,
):
    from drkit import output, render, results

    def entry(index: int) -> results.NodeStatus:
        problems = ["outside its RPO"] if index >= render.FLEET_TABLE_ROWS + 100 else []
        return results.NodeStatus.model_validate(
            {
                "node": f"n-{index:05d}",
                "last_backup": None,
                "last_good_backup": None,
                "last_prune": None,
                "last_verify": None,
                "last_drill": None,
                "last_standby": None,
                "standby_lag_seconds": None,
                "rpo_seconds": 900,
                "rpo_ok": not problems,
                "backup_rpo_ok": not problems,
                "age_seconds": 60,
                "prove": None,
                "last_proven": None,
                "proven_snapshot_id": None,
                "proven_snapshot_time": None,
                "proven_age_seconds": None,
                "proven_rpo_ok": None,
                "proven_rpo_breached": False,
                "rto_seconds": 600,
                "rto_ok": None,
                "snapshot_count": 1,
                "updated": None,
                "status_age_seconds": None,
                "problems": problems,
            }
        )

    count = render.FLEET_TABLE_ROWS + 103  # the last three have a problem
    nodes = [entry(i) for i in range(count)]
    result = results.StatusResult(ok=False, time="t", nodes=nodes, problems=[])
    assert output.run_command(lambda: result, as_json=False) == 1
    text = capsys.readouterr().out
    assert all(f"n-{index:05d}" in text for index in range(count - 3, count))
    assert "n-00000" in text and f"n-{render.FLEET_TABLE_ROWS - 3:05d}" not in text
    assert "103 more nodes not listed (0 of them with problems)" in text
