"""A passive node in the daemon: the standby job is scheduled instead of backup, its runs are
recorded, its lag is a metric, and its RPO is judged on the copy it serves."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemons import offline_config

from drkit import config, daemon, model
from drkit.engines import metrics, status


def _config(tmp_path: Path) -> config.Config:
    return offline_config(
        tmp_path,
        node="sftp-2",
        standby=config.Standby(source="sftp-1"),
        schedule=config.ScheduleConfig(standby="every 30s"),
        objectives=config.Objectives(rpo="5m"),
    )


def _sync_result(snapshot_time: datetime, ok: bool = True) -> dict:
    return {
        "ok": ok,
        "source": "sftp-1",
        "snapshot_id": "ab12cd34" * 8,
        "snapshot_time": model.utc_text(snapshot_time),
        "changed": True,
        "lag_seconds": 60,
        "checks": [] if ok else [{"name": "config: sshd -t", "status": "fail", "detail": "bad"}],
    }


def test_daemon_schedules_standby_instead_of_backup(tmp_path: Path):
    assert "standby" in daemon.JOBS and "standby" in status.JOBS
    planned = daemon.Daemon(_config(tmp_path)).actions
    assert "standby" in planned and "backup" not in planned


def test_standby_lag_metric_and_rpo_follow_the_applied_snapshot(tmp_path: Path):
    configuration = _config(tmp_path)
    collector = metrics.StatusCollector(
        "sftp-2", lambda: status.load_local(configuration), status.objectives_of(configuration)
    )
    now = datetime.now(UTC)
    applied = now - timedelta(minutes=1)
    outcome = status.outcome_of("standby", now, 2.0, result=_sync_result(applied))
    status.record(configuration, "standby", outcome, upload=False)
    entry = collector.evaluate()
    assert entry["rpo_ok"] is True, entry["problems"]
    assert 55 <= entry["standby_lag_seconds"] <= 70
    text = metrics.Metrics(collector).exposition().decode()
    labels = '{job="standby",node="sftp-2"}'
    assert f"drkit_last_run_ok{labels} 1.0" in text
    assert f"drkit_standby_lag_seconds{labels}" in text

    # A rejected snapshot: the run fails, the node keeps serving (and is judged on) the old copy.
    newer = now - timedelta(seconds=5)
    rejected = status.outcome_of("standby", now, 2.0, result=_sync_result(newer, ok=False))
    assert rejected["error"] == "config: sshd -t: bad"
    status.record(configuration, "standby", rejected, upload=False)
    document = status.load_local(configuration)
    assert document["last_good_standby"]["time"] == model.utc_text(applied)
    document["last_good_standby"]["time"] = model.utc_text(now - timedelta(minutes=10))
    status.local_path(configuration).write_text(json.dumps(document))
    entry = collector.evaluate()
    assert entry["rpo_ok"] is False
    assert "standby of sftp-1" in entry["problems"][0]
    assert f"drkit_last_run_ok{labels} 0.0" in metrics.Metrics(collector).exposition().decode()
