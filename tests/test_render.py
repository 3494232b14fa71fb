"""Typed results and the one renderer: JSON shapes, internal errors instead of tracebacks, and
the exit-status epilog generated from errors.EXIT_CODES."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drkit import cli, errors, output, render, results, units
from drkit.model import failed, passed


class Probe(results.Result):
    """A result type only this test renders."""

    value: int = 1


def _broken_renderer(result: Probe) -> None:
    raise KeyError("snapshot_id")


render.render.register(Probe, _broken_renderer)


def _one_error_line(captured) -> str:
    assert "Traceback" not in captured.out + captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def test_a_renderer_that_raises_is_an_internal_error_not_a_traceback(capsys):
    code = output.run_command(lambda: Probe(), as_json=False)
    line = _one_error_line(capsys.readouterr())
    assert code == 11
    assert "KeyError" in line and "snapshot_id" in line
    assert "drkit/" in line and ".py:" in line  # the place: file:line of a drkit frame
    assert f"please report it at {errors.ISSUE_TRACKER}" in line


def test_a_result_missing_a_field_cannot_print_a_traceback(capsys):
    # model_construct skips validation: the backup renderer meets a field that is not there.
    broken = results.BackupResult.model_construct(snapshot_id="0123456789abcdef")
    code = output.run_command(lambda: broken, as_json=False)
    line = _one_error_line(capsys.readouterr())
    assert code == 11
    assert "AttributeError" in line and "drkit/render/__init__.py:" in line


def test_an_action_bug_is_exit_11_never_restic_failed(capsys):
    def job():
        return {}["missing"]

    assert output.run_command(job, as_json=False) == 11
    line = _one_error_line(capsys.readouterr())
    assert "KeyError" in line and "restic" not in line


def test_json_gets_the_internal_error_document(capsys):
    def job():
        raise ValueError("bad\nvalue")

    code = output.run_command(job, as_json=True)
    captured = capsys.readouterr()
    assert code == 11
    assert "Traceback" not in captured.out + captured.err
    document = json.loads(captured.out)
    assert document["ok"] is False
    assert document["error"]["code"] == 11
    assert document["error"]["kind"] == "internal"
    assert "ValueError: bad value" in document["error"]["message"]
    assert "\n" not in document["error"]["message"]
    # --json never runs the renderer: a result with a broken renderer is still its document
    assert output.run_command(lambda: Probe(ok=False), as_json=True) == 1
    assert json.loads(capsys.readouterr().out) == {"ok": False, "value": 1}


def test_the_cli_reports_a_renderer_failure_as_exit_11(monkeypatch, tmp_path):
    from drkit.actions import discover

    monkeypatch.setattr(
        discover, "run", lambda root, smoke_user=None: results.DiscoverResult.model_construct()
    )
    outcome = CliRunner().invoke(cli.app, ["discover", "--root", str(tmp_path)])
    assert outcome.exit_code == 11, outcome.output
    assert "Traceback" not in outcome.output
    assert "AttributeError" in outcome.output


def test_help_epilog_lists_every_exit_code():
    outcome = CliRunner().invoke(
        cli.app, ["--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    )
    assert outcome.exit_code == 0
    text = " ".join(outcome.output.split())
    for code, meaning in errors.EXIT_CODES.items():
        assert f"{code} {' '.join(meaning.split())}" in text, code
    assert errors.EXIT_CODES[11].startswith("internal error")


# -- the JSON documents are the model dumps, in the documented shapes ----------------------


def test_backup_document():
    result = results.BackupResult(
        node="sftp-1",
        snapshot_id="a" * 64,
        time="2024-05-01T03:00:00Z",
        file_count=12,
        bytes_added=2048,
        duration_seconds=1.5,
        signer="SHA256:" + "x" * 43,
        previous=None,
        passes=1,
        warnings=["no smoke user"],
    )
    assert result.model_dump(mode="json") == {
        "ok": True,
        "node": "sftp-1",
        "snapshot_id": "a" * 64,
        "time": "2024-05-01T03:00:00Z",
        "file_count": 12,
        "size": None,
        "bytes_added": 2048,
        "duration_seconds": 1.5,
        "signer": "SHA256:" + "x" * 43,
        "previous": None,
        "passes": 1,
        "warnings": ["no smoke user"],
        "security_events": [],
        "unchanged": False,
    }


def test_snapshots_document_is_an_object_with_its_list():
    entry = {
        "id": "b" * 64,
        "short_id": "b" * 8,
        "time": "2024-05-01T03:00:00Z",
        "node": "sftp-1",
        "file_count": 3,
        "size": None,
        "tags": ["drkit", "node:sftp-1"],
    }
    result = results.SnapshotsResult(snapshots=[results.SnapshotEntry(**entry)])
    assert result.model_dump(mode="json") == {"ok": True, "snapshots": [entry]}


CHECKS = [passed("manifest signature", "signed by SHA256:k"), failed("sshd -t", "bad config")]
CHECK_DOCUMENTS = [
    {"name": "manifest signature", "status": "pass", "detail": "signed by SHA256:k"},
    {"name": "sshd -t", "status": "fail", "detail": "bad config"},
]
COMMON = {"snapshot_id": "c" * 64, "node": "sftp-1", "signer": "SHA256:k", "trust": "config"}


def test_restore_check_and_plan_documents():
    restored = results.RestoreResult(
        ok=False, **COMMON, checks=CHECKS, target="/", applied={"add": 2}, duration_seconds=3.0
    )
    assert restored.model_dump(mode="json") == {
        "ok": False,
        **COMMON,
        "checks": CHECK_DOCUMENTS,
        "target": "/",
        "applied": {"add": 2},
        "duration_seconds": 3.0,
    }
    checked = results.CheckResult(ok=False, **COMMON, checks=CHECKS, target="/srv")
    assert checked.model_dump(mode="json") == {
        "ok": False,
        **COMMON,
        "checks": CHECK_DOCUMENTS,
        "target": "/srv",
    }
    planned = results.RestorePlanResult(
        **COMMON, checks=CHECKS[:1], plan=[{"path": "/etc/ssh/sshd_config", "action": "change"}]
    )
    assert planned.model_dump(mode="json") == {
        "ok": True,
        **COMMON,
        "checks": CHECK_DOCUMENTS[:1],
        "dry_run": True,
        "plan": [{"path": "/etc/ssh/sshd_config", "action": "change"}],
    }


def test_drill_document():
    document = {
        "ok": False,
        "kind": "drill",
        "node": "sftp-1",
        "from_copy": None,
        "snapshot_id": "d" * 64,
        "snapshot": {
            "id": "d" * 64,
            "short_id": "d" * 8,
            "time": "2024-05-01T03:00:00Z",
            "spec": "latest",
        },
        "signer": "SHA256:k",
        "trust": "config",
        "started": "2024-05-01T04:00:00Z",
        "finished": "2024-05-01T04:01:00Z",
        "duration_seconds": 60.0,
        "rto_seconds": None,
        "rpo_seconds": 3600,
        "rpo_judged": True,
        "objectives": {"rpo_seconds": 86400, "rto_seconds": 900},
        "objectives_met": {"rto": False, "rpo": True},
        "checks": CHECK_DOCUMENTS,
        "problems": ["sshd -t: bad config"],
        "host_keys": [{"path": "/etc/ssh/ssh_host_ed25519_key", "served": None}],
        "certificates": [],
        "sandbox": {"path": None, "removed": True},
        "reports": {"json": "/r/d.json", "md": "/r/d.md", "html": "/r/d.html"},
        "uploaded": [],
        "history": [{"node": "sftp-1", "time": "2024-05-01T04:00:00Z", "ok": False}],
    }
    result = results.DrillResult.model_validate(document)
    assert result.model_dump(mode="json") == document
    assert result.checks[1].status == "fail"


def test_status_document():
    entry = {
        "node": "sftp-1",
        "last_backup": {
            "time": "2024-05-01T03:00:00Z",
            "ok": True,
            "snapshot_id": "e" * 64,
            "duration_seconds": 4.2,
            "bytes_added": 10,
        },
        "last_good_backup": {"time": "2024-05-01T03:00:00Z", "snapshot_id": "e" * 64},
        "last_prune": None,
        "last_verify": None,
        "last_drill": None,
        "last_good_drill": None,
        "last_standby": None,
        "standby_lag_seconds": None,
        "rpo_seconds": 86400,
        "rpo_ok": True,
        "backup_rpo_ok": True,
        "age_seconds": 60,
        "prove": "after-backup",
        "last_proven": {"time": "2024-05-01T03:00:10Z", "ok": True, "snapshot_id": "e" * 64},
        "proven_snapshot_id": "e" * 64,
        "proven_snapshot_time": "2024-05-01T03:00:00Z",
        "proven_age_seconds": 60,
        "proven_rpo_ok": True,
        "proven_rpo_breached": False,
        "rto_seconds": 900,
        "rto_ok": None,
        "snapshot_count": 3,
        "updated": "2024-05-01T03:00:05Z",
        "status_age_seconds": 55,
        "problems": [],
    }
    result = results.StatusResult(ok=True, time="2024-05-01T03:01:00Z", nodes=[entry], problems=[])
    assert result.model_dump(mode="json") == {
        "ok": True,
        "time": "2024-05-01T03:01:00Z",
        "nodes": [entry],
        "problems": [],
    }


def test_diff_document_leaves_out_absent_text_diffs():
    side = {"id": "f" * 64, "short_id": "f" * 8, "time": "2024-05-01T03:00:00Z", "signer": "k"}
    changes = [
        {"category": "config", "path": "/etc/ssh/sshd_config", "change": "changed", "detail": ""},
        {"category": "host_keys", "path": "/etc/ssh/k", "change": "added", "detail": "new"},
    ]
    changes[0]["diff"] = "@@ -1 +1 @@\n-a\n+b\n"
    result = results.DiffResult(
        node="sftp-1", old=side, new=side, changes=changes, notes=["host key k replaced"]
    )
    assert result.model_dump(mode="json") == {
        "ok": True,
        "node": "sftp-1",
        "old": side,
        "new": side,
        "changes": changes,
        "notes": ["host key k replaced"],
    }
    assert "diff" not in result.model_dump(mode="json")["changes"][1]


def test_fleet_drift_document():
    nodes = [
        {
            "node": "sftp-1",
            "snapshot_id": "1" * 64,
            "time": "2024-05-01T03:00:00Z",
            "age_seconds": 5,
            "signer": "SHA256:k",
        }
    ]
    findings = [{"node": "sftp-2", "category": "config", "path": "/etc/x", "detail": "differs"}]
    result = results.FleetDriftResult(ok=False, group="pool", nodes=nodes, findings=findings)
    assert result.model_dump(mode="json") == {
        "ok": False,
        "group": "pool",
        "nodes": nodes,
        "findings": findings,
    }


def test_standby_sync_absent_fields_stay_absent_and_nulls_stay_null():
    base = {
        "node": "b",
        "source": "a",
        "snapshot_id": "2" * 64,
        "snapshot_time": "2024-05-01T03:00:00Z",
        "dry_run": True,
    }
    planned = results.StandbySyncResult(
        **base, changed=True, plan=[], kept_local=["/etc/x"], checks=CHECKS[:1]
    )
    assert planned.model_dump(mode="json") == {
        "ok": True,
        **base,
        "changed": True,
        "plan": [],
        "kept_local": ["/etc/x"],
        "checks": CHECK_DOCUMENTS[:1],
    }
    rejected = results.StandbySyncResult(
        ok=False, **base, changed=False, applied_at=None, lag_seconds=None, plan=[], checks=[]
    )
    dumped = rejected.model_dump(mode="json")
    assert dumped["applied_at"] is None and dumped["lag_seconds"] is None
    assert "rolled_back" not in dumped and "up_to_date" not in dumped


def test_a_field_the_model_does_not_declare_is_refused():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        results.FleetDriftResult(ok=True, group=None, nodes=[], findings=[], extra=1)


# -- one vocabulary: sizes in IEC units, durations in one format, words instead of dicts ---


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "none"),
        (0.25, "0.2 s"),
        (4.2, "4.2 s"),
        (45, "45 s"),
        (59.6, "1 min"),
        (258, "4 min 18 s"),
        (900, "15 min"),
        (12000, "3 h 20 min"),
        (7200, "2 h"),
        (183600, "2 d 3 h"),
        (-12, "-12 s"),
    ],
)
def test_durations_have_one_format(seconds, text):
    assert units.duration(seconds) == text


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, ""),
        (512, "512 B"),
        (18227, "17.8 KiB"),
        (5 * 2**30, "5.0 GiB"),
        (3 * 2**40, "3.0 TiB"),
    ],
)
def test_sizes_are_iec(count, text):
    assert units.size(count) == text


def _printed(result, capsys) -> str:
    assert output.run_command(lambda: result, as_json=False) in (0, 1)
    return capsys.readouterr().out


def test_status_ages_use_the_one_duration_format(capsys):
    entry = results.NodeStatus.model_validate(
        {
            "node": "sftp-1",
            "last_backup": {"time": "2024-05-01T03:00:00Z", "ok": True, "snapshot_id": "e" * 64},
            "last_good_backup": None,
            "last_prune": None,
            "last_verify": None,
            "last_drill": None,
            "last_standby": None,
            "standby_lag_seconds": None,
            "rpo_seconds": 900,
            "rpo_ok": True,
            "backup_rpo_ok": True,
            "age_seconds": 258,
            "prove": None,
            "last_proven": None,
            "proven_snapshot_id": None,
            "proven_snapshot_time": None,
            "proven_age_seconds": 3700,
            "proven_rpo_ok": False,
            "proven_rpo_breached": False,
            "rto_seconds": 600,
            "rto_ok": None,
            "snapshot_count": 3,
            "updated": "2024-05-01T03:00:05Z",
            "status_age_seconds": 55,
            "problems": [],
        }
    )
    text = _printed(results.StatusResult(time="t", nodes=[entry], problems=[]), capsys)
    assert "4 min 18 s" in text and "15 min" in text and "1 h 1 min" in text
    assert "4.3m" not in text and "15.0m" not in text


def test_storage_verify_prints_words_not_a_dict(capsys):
    result = results.StorageVerifyResult(
        bucket="dr-backups",
        endpoint="http://127.0.0.1:9000",
        versioning="Enabled",
        object_lock={"enabled": True, "mode": "GOVERNANCE", "days": 30},
        lifecycle={"id": "drkit-noncurrent-versions", "noncurrent_days": 37, "status": "Enabled"},
        problems=[],
    )
    text = _printed(result, capsys)
    assert "object lock  on, GOVERNANCE, 30 days default retention" in text
    assert "noncurrent versions expire after 37 days" in text
    assert "{" not in text and "'enabled'" not in text


def test_backup_text_says_that_drkits_own_files_count(capsys):
    result = results.BackupResult(
        node="sftp-1",
        snapshot_id="a" * 64,
        time="2024-05-01T03:00:00Z",
        file_count=20,
        size=18227,
        bytes_added=33587,
        duration_seconds=258.4,
        signer="SHA256:" + "x" * 43,
        previous=None,
        passes=1,
        warnings=[],
    )
    text = _printed(result, capsys)
    assert "20 files (3 of them drkit's own), 17.8 KiB; 32.8 KiB new data stored in 4 min 18 s" in (
        text
    )


def test_no_module_formats_durations_on_its_own():
    """Durations go through drkit.units: no `{x}s`, `{x:.1f}m` or `/ 60` elsewhere."""
    package = Path(render.__file__).parents[1]  # drkit/, render being a package in it
    pattern = re.compile(r"\}(?:s|m|h|min)\b|/ ?(?:60|3600)\b")
    offenders = [
        f"{path.relative_to(package)}:{number}: {line.strip()}"
        for path in sorted(package.rglob("*"))
        if path.suffix in (".py", ".html", ".md", ".svg") and path.name != "units.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
