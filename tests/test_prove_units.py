"""Every snapshot proven, without S3: the proven RPO's judgement, its metrics and alerts, the
prove schedule line, and the daemon handing each backup's snapshot to its proof."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from daemons import Recorder, offline_config
from nodes import wait_for

from drkit import config, daemon, errors, model
from drkit.actions import init as init_action
from drkit.engines import metrics, notify, status

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
OBJECTIVES = {"rpo_seconds": 900, "rto_seconds": 600}


def ago(seconds: float) -> str:
    return model.utc_text(NOW - timedelta(seconds=seconds))


def document(*, prove: str | None = "after-backup", proof_age: float | None = None, **extra):
    """A status document with a good backup a minute old; a good proof of a snapshot
    proof_age seconds old when given."""
    made = {
        "node": "sftp-1",
        "updated": ago(0),
        "objectives": OBJECTIVES,
        "prove": prove,
        "last_backup": {"time": ago(60), "ok": True, "snapshot_id": "b" * 64},
        "last_good_backup": {"time": ago(60), "snapshot_id": "b" * 64},
        "last_proven": None,
        "last_good_proof": None,
    }
    if proof_age is not None:
        proof = {
            "time": ago(proof_age - 5),
            "snapshot_id": "a" * 64,
            "snapshot_time": ago(proof_age),
        }
        made["last_proven"] = {**proof, "ok": True, "rto_seconds": 3.1, "error": None}
        made["last_good_proof"] = proof
    made.update(extra)
    return made


def judged(made: dict | None) -> dict:
    return status.evaluate(made, node="sftp-1", now=NOW, default_objectives=OBJECTIVES)


# -- judgement -------------------------------------------------------------------------------


def test_a_node_that_proves_is_breached_by_an_old_proof_whatever_it_backed_up_since():
    fresh = judged(document(proof_age=120))
    assert fresh["rpo_ok"] and fresh["proven_rpo_ok"] and not fresh["proven_rpo_breached"]
    assert fresh["proven_age_seconds"] == 120 and fresh["proven_snapshot_id"] == "a" * 64
    old = judged(document(proof_age=3600))
    assert old["backup_rpo_ok"] is True and old["age_seconds"] == 60
    assert old["rpo_ok"] is False and old["proven_rpo_breached"] is True
    assert old["problems"] == ["newest proven snapshot: 1 h old, over the RPO of 15 min"]


def test_a_failed_proof_is_a_problem_and_the_last_good_proof_still_dates_the_node():
    made = document(proof_age=120)
    made["last_proven"] = {"time": ago(1), "ok": False, "snapshot_id": "b" * 64, "error": "x"}
    entry = judged(made)
    assert entry["proven_age_seconds"] == 120 and entry["rpo_ok"] is True
    assert entry["problems"] == ["last proof failed: x"]
    never = judged(document(last_proven=made["last_proven"]))  # its first proof failed
    assert never["rpo_ok"] is False and never["proven_age_seconds"] is None
    assert never["problems"][0] == "newest proven snapshot: none, no snapshot proven yet"


def test_without_prove_or_before_the_first_proof_the_proven_age_is_shown_not_judged():
    drill = {"time": ago(3000), "ok": True, "rpo_seconds": 600, "snapshot_id": "d" * 64}
    shown = judged(document(prove=None, last_drill=drill))
    assert shown["proven_age_seconds"] == 3600 and shown["proven_rpo_ok"] is False
    assert shown["rpo_ok"] is True and shown["problems"] == []
    waiting = judged(document())  # proving, no proof tried yet (the daemon proves at start)
    assert waiting["rpo_ok"] is True and waiting["proven_rpo_ok"] is None
    failed_before = document(prove=None, proof_age=3600)
    failed_before["last_proven"] = {**failed_before["last_proven"], "ok": False, "error": "x"}
    assert judged(failed_before)["problems"] == []


def test_a_proof_is_recorded_as_last_proven_and_a_good_one_as_last_good_proof(tmp_path: Path):
    configuration = offline_config(tmp_path, schedule=config.ScheduleConfig(prove="after-backup"))
    good = {"ok": True, "snapshot_id": "a" * 64, "snapshot_time": ago(30), "rto_seconds": 2.5}
    outcome = status.outcome_of("prove", NOW, 7.0, result=good)
    recorded = status.record(configuration, "prove", outcome, upload=False)
    assert recorded["prove"] == "after-backup" and recorded["last_success"]["prove"]
    assert recorded["last_proven"] == {
        "time": model.utc_text(NOW),
        "ok": True,
        "duration_seconds": 7.0,
        "error": None,
        "snapshot_id": "a" * 64,
        "snapshot_time": ago(30),
        "rto_seconds": 2.5,
    }
    failed = status.outcome_of("prove", NOW, 1.0, error=errors.Refused("manifest tampered"))
    recorded = status.record(configuration, "prove", failed, upload=False)
    assert recorded["last_proven"]["ok"] is False and recorded["last_proven"]["rto_seconds"] is None
    assert recorded["last_proven"]["error"] == "manifest tampered"
    assert recorded["last_good_proof"] == {
        "time": model.utc_text(NOW),
        "snapshot_id": "a" * 64,
        "snapshot_time": ago(30),
    }


# -- metrics, alerts, configuration ----------------------------------------------------------


def scraped(made: dict) -> str:
    collector = metrics.StatusCollector("sftp-1", lambda: made, OBJECTIVES)
    return metrics.Metrics(collector).exposition().decode()


def test_metrics_carry_the_newest_proven_snapshot_and_the_proven_breach():
    labels = '{job="prove",node="sftp-1"}'
    made = document(proof_age=3600)
    made["last_good_proof"]["snapshot_time"] = "2024-05-01T11:00:00Z"
    text = scraped(made)
    assert f"drkit_last_proven_timestamp_seconds{labels} 1.7145612e+09" in text
    assert f"drkit_proven_rpo_breached{labels} 1.0" in text  # an hour old (judged now, not NOW)
    assert f"drkit_last_run_ok{labels} 1.0" in text
    text = scraped(document(prove=None, proof_age=3600))
    assert f"drkit_proven_rpo_breached{labels} 0.0" in text
    assert "drkit_last_proven_timestamp_seconds{" in text


def test_a_failed_proof_pings_the_backup_fail_unless_it_has_pings_of_its_own(recorder: Recorder):
    settings = config.Notify(ping=config.Ping(url=recorder.url + "/ping"))
    notifier = notify.Notifier(settings, "sftp-1")
    notifier.start("prove")
    notifier.finish("prove", ok=True)
    notifier.finish("prove", ok=False, error="manifest tampered", event="proof_failed")
    assert recorder.paths() == ["/ping/fail"]
    assert recorder.requests[0][3] == b"manifest tampered"
    recorder.requests.clear()
    own = config.Ping(url=recorder.url + "/ping", jobs={"prove": recorder.url + "/proofs"})
    notifier = notify.Notifier(config.Notify(ping=own), "sftp-1")
    notifier.start("prove")
    notifier.finish("prove", ok=False, error="x")
    assert recorder.paths() == ["/proofs/start", "/proofs/fail"]


def test_the_prove_line_is_after_backup_or_a_schedule_and_init_writes_it(tmp_path: Path):
    assert config.ScheduleConfig(prove="after-backup").prove == "after-backup"
    assert config.ScheduleConfig(prove="0 * * * *").prove == "0 * * * *"
    assert config.ScheduleConfig().prove is None  # configs without it prove nothing
    with pytest.raises(ValueError, match="nor 'after-backup'"):
        config.ScheduleConfig(prove="after backups")
    options = init_action.InitOptions(
        node="sftp-1",
        s3_endpoint="http://127.0.0.1:9",
        bucket="b",
        password_file=tmp_path / "password",
        root=tmp_path,
    )
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/ssh/sshd_config").write_text("Port 22\n")
    settings = init_action.settings_for(options, tmp_path / "drkit.yaml")
    assert settings["schedule"] == {"prove": "after-backup"}


# -- the daemon ------------------------------------------------------------------------------


def hooks(recorder: Recorder) -> list[dict]:
    return [json.loads(body) for _, path, _, body in recorder.requests if path == "/hook"]


@pytest.mark.timeout(60)
def test_the_daemon_proves_each_backup_on_its_own_thread_and_alerts_a_failed_proof(
    tmp_path: Path, recorder: Recorder
):
    configuration = offline_config(
        tmp_path,
        notify=config.Notify(
            webhook=config.Webhook(url=recorder.url + "/hook"),
            ping=config.Ping(url=recorder.url + "/ping"),
        ),
        objectives=config.Objectives(rpo="2s"),
        schedule=config.ScheduleConfig(backup="every 1h", prove="after-backup", retry_window="1s"),
    )
    snapshots = iter(["1" * 64, "2" * 64])
    proofs: list[str | None] = []
    release = threading.Event()

    def backup() -> dict:
        return {
            "ok": True,
            "snapshot_id": next(snapshots),
            "time": model.utc_text(datetime.now(UTC)),
        }

    def prove() -> dict:
        target = runner.proofs.target
        proofs.append(target)
        release.wait(20)  # a proof holds no lock: the next backup runs meanwhile
        if target == "2" * 64:
            raise errors.Refused("snapshot 22222222: manifest.json does not match its signature")
        return {
            "ok": True,
            "snapshot_id": target,
            "snapshot_time": model.utc_text(datetime.now(UTC)),
        }

    runner = daemon.Daemon(
        configuration, actions={"backup": backup, "prove": prove}, count_snapshots=lambda: 1
    )
    worker = threading.Thread(
        target=runner.proofs.worker, args=[runner.prove, runner.stopping], daemon=True
    )
    worker.start()
    try:
        runner.breach.check()  # the baseline: proving, nothing tried yet, not breached
        runner.run_job("backup")
        wait_for(lambda: proofs == ["1" * 64], 20, "the first proof", step=0.05)
        assert runner.run_job("backup")["ok"] is True  # while the first proof runs
        release.set()
        wait_for(
            lambda: len(proofs) == 2 and not runner.jobs.busy(), 20, "the second proof", step=0.05
        )
        assert proofs == ["1" * 64, "2" * 64]
        local = status.load_local(configuration)
        assert (
            local["last_proven"]["ok"] is False and local["last_proven"]["snapshot_id"] == "2" * 64
        )
        assert local["last_good_proof"]["snapshot_id"] == "1" * 64
        time.sleep(2.5)  # the behaviour under test: the good proof's snapshot passes the 2 s RPO
        runner.breach.check()
    finally:
        runner.request_stop("test")
        worker.join(5)
    events = [(hook["event"], hook["job"]) for hook in hooks(recorder)]
    assert ("proof_failed", "prove") in events and ("proven_rpo_breached", "prove") in events
    failed = next(hook for hook in hooks(recorder) if hook["event"] == "proof_failed")
    assert failed["snapshot_id"] == "2" * 64 and "signature" in failed["error"]
    assert "/ping/fail" in recorder.paths()
    breach = next(hook for hook in hooks(recorder) if hook["event"] == "proven_rpo_breached")
    assert breach["snapshot_id"] == "1" * 64 and "newest proven snapshot" in breach["error"]


@pytest.mark.parametrize("line", ["after-backup", "every 1h"])
def test_a_node_with_no_snapshot_proven_within_the_rpo_proves_its_latest_at_start(
    tmp_path: Path, line: str, caplog
):
    configuration = offline_config(
        tmp_path, schedule=config.ScheduleConfig(backup="every 1h", prove=line)
    )
    good = {"ok": True, "snapshot_id": "b" * 64, "time": model.utc_text(datetime.now(UTC))}
    outcome = status.outcome_of("backup", NOW, 1.0, result=good)
    status.record(configuration, "backup", outcome, upload=False)
    runner = daemon.Daemon(configuration, actions={"backup": dict, "prove": dict})
    with caplog.at_level("INFO", logger="drkit.daemon"):
        assert runner.schedule() == {"backup": "every 1h", "prove": line}
    messages = [record.getMessage() for record in caplog.records]
    assert any(text.startswith("catch-up proof of the latest") for text in messages)
    assert not any(text.startswith("catch-up backup") for text in messages)
    if line == "after-backup":  # the proof thread proves the latest, no scheduler job
        assert runner.proofs.wanted.is_set() and runner.proofs.next is None
        assert runner.scheduler.get_job("prove") is None
    else:
        job = runner.scheduler.get_job("prove")
        assert job.func == runner.prove and tuple(job.args) == ()
