"""A lock left by a killed restic needs no manual step: the next command removes it (once it
is provably stale) and runs again; a live lock is never removed. Real restic, local repository."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from nodes import wait_for

from drkit import errors
from drkit.engines import restic as restic_engine
from drkit.service import locks


@pytest.fixture
def repository(tmp_path: Path) -> restic_engine.Restic:
    password = tmp_path / "password"
    password.write_text(secrets.token_hex(16) + "\n")
    password.chmod(0o600)
    restic = restic_engine.Restic(
        restic_engine.find_restic(None),
        str(tmp_path / "repo"),
        password,
        on_locked=locks.clear_stale,
    )
    restic.init()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_text("content\n")
    return restic


def _written(lock_dir: Path) -> bool:
    """Return True once a lock file is there and whole (restic writes it in place)."""
    sizes = [path.stat().st_size for path in lock_dir.iterdir()]
    if not sizes or 0 in sizes:
        return False
    time.sleep(0.05)  # a lock file still the same size 50 ms on is whole
    return sizes == [path.stat().st_size for path in lock_dir.iterdir()]


def _exclusive_lock(restic: restic_engine.Restic, lock_dir: Path) -> subprocess.Popen:
    """Start a restic that holds the repository's exclusive lock; return it once it does."""
    env = {**os.environ, **restic._env()}
    holder = subprocess.Popen(
        [str(restic.binary), "prune"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(
        lambda: _written(lock_dir) or holder.poll() is not None, 30, "restic's lock", step=0.01
    )
    assert _written(lock_dir), "restic prune took no lock"
    holder.send_signal(signal.SIGSTOP)  # holds it while the test needs it
    return holder


def test_a_lock_left_by_a_killed_restic_is_removed_and_the_command_runs(
    repository, tmp_path, caplog
):
    lock_dir = tmp_path / "repo" / "locks"
    holder = _exclusive_lock(repository, lock_dir)
    holder.kill()
    # the killed restic stays a zombie (restic would judge its lock live) until reaped here
    reaper = threading.Timer(1.0, holder.wait)
    reaper.start()
    with caplog.at_level(logging.INFO):
        summary = repository.backup(["data"], cwd=tmp_path, host="n1", tags=["drkit"])
    reaper.join()
    assert summary.snapshot_id
    assert not any(lock_dir.iterdir())
    assert "removing stale restic lock" in caplog.text
    assert "removed 1 stale lock(s), running restic again" in caplog.text


def test_a_live_lock_is_left_alone(repository, tmp_path, monkeypatch):
    lock_dir = tmp_path / "repo" / "locks"
    holder = _exclusive_lock(repository, lock_dir)
    monkeypatch.setattr(restic_engine, "LOCK_WAIT", "1s")
    try:
        with pytest.raises(errors.Busy, match="locked exclusively by PID"):
            repository.snapshots()
        with pytest.raises(errors.Busy):
            repository.backup(["data"], cwd=tmp_path, host="n1", tags=["drkit"])
        assert any(lock_dir.iterdir())
    finally:
        holder.kill()
        holder.wait()
