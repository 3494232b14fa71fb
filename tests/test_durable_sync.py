"""The staged tree is made durable with one filesystem sync before the apply moves anything,
and the target's filesystem once more before the commit record (issue 25 part 3); a drill's
throwaway sandbox is never synced; an added directory moves into place whole, journalled."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from drkit.engines import apply, durable, planning
from drkit.model import FileRecord


def _entry(path: str, data: bytes | None = None) -> FileRecord:
    kind = {"type": "dir", "mode": "0755"} if data is None else {
        "type": "file", "mode": "0640", "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }  # fmt: skip
    return FileRecord(
        path=path, category="data", uid=0, gid=0, user="root", group="root",
        mtime="2026-12-07T00:00:00Z", **kind,
    )  # fmt: skip


def test_sync_filesystem_flushes_a_directory_and_names_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x" * 4096)
    durable.sync_filesystem(tmp_path)
    with pytest.raises(FileNotFoundError):
        durable.sync_filesystem(tmp_path / "missing")


def test_the_apply_syncs_staging_before_its_first_step_and_the_target_before_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, staging = tmp_path / "target", tmp_path / "target" / ".staging"
    staging.mkdir(parents=True)
    data = b"restored\n"
    (staging / "srv").mkdir()
    (staging / "srv" / "data.txt").write_bytes(data)
    entry = _entry("/srv/data.txt", data)
    synced: list[tuple[Path, bool]] = []  # (path, whether the target had the file then)
    real = durable.sync_filesystem

    def recording(path: Path) -> None:
        synced.append((path, (target / "srv" / "data.txt").exists()))
        real(path)

    monkeypatch.setattr(durable, "sync_filesystem", recording)
    applier = apply.Applier.journaled(target, staging, "0" * 64)
    applier.apply([apply.Step(entry.path, "add")], {entry.path: entry})
    assert synced == [(staging, False)]  # before the file moved: one sync, not one per file
    applier.commit()
    assert synced == [(staging, False), (target, True)]
    assert (target / "srv" / "data.txt").read_bytes() == data
    assert not apply.journal_path(target).exists()


def test_a_throwaway_apply_never_syncs_the_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill's sandbox is removed once checked: flushing the node's filesystem for it would
    only burden the live server the drill runs beside."""
    target, staging = tmp_path / "target", tmp_path / "target" / ".staging"
    (staging / "srv").mkdir(parents=True)
    (staging / "srv" / "data.txt").write_bytes(b"x")
    entry = _entry("/srv/data.txt", b"x")
    synced: list[Path] = []
    monkeypatch.setattr(durable, "sync_filesystem", synced.append)
    applier = apply.Applier.journaled(target, staging, "0" * 64, flush=False)
    applier.apply([apply.Step(entry.path, "add")], {entry.path: entry})
    applier.commit()
    assert synced == [] and (target / "srv" / "data.txt").read_bytes() == b"x"


def test_an_added_directory_moves_in_whole_and_a_killed_apply_takes_it_out_again(tmp_path: Path):
    target, staging = tmp_path / "target", tmp_path / "target" / ".staging"
    files = {"/srv/in/a/one.csv": b"1\n", "/srv/in/two.csv": b"2\n", "/srv/own.txt": b"3\n"}
    for path, data in files.items():
        (staging / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (staging / path.lstrip("/")).write_bytes(data)
    (target / "srv").mkdir(mode=0o755)
    entries = {p: _entry(p) for p in ("/srv", "/srv/in", "/srv/in/a")}
    entries |= {path: _entry(path, data) for path, data in files.items()}
    steps = [apply.Step(path, "add") for path in sorted(entries) if path != "/srv"]
    assert planning.whole_trees(steps, entries) == {"/srv/in", "/srv/in/a"}
    # a listed entry left out of the plan (standby sync's local path) keeps the tree file by file
    left_out = [step for step in steps if step.path != "/srv/in/two.csv"]
    assert planning.whole_trees(left_out, entries) == {"/srv/in/a"}

    applier = apply.Applier.journaled(target, staging, "0" * 64)
    applier.apply(steps, entries)
    assert (target / "srv/in/a/one.csv").read_bytes() == b"1\n"
    assert not (staging / "srv/in").exists(), "moved in whole, not file by file"
    journal = apply.journal_path(target).read_text()
    assert '"op": "added_tree"' in journal and "one.csv" not in journal

    # the process killed before its commit: the next run rolls the whole tree back
    assert "rolled back" in (apply.recover(target) or "")
    assert sorted(p.name for p in (target / "srv").iterdir()) == []
