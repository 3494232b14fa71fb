"""The fleet page, `status --fleet` and the drill page's charts (issue 15 part 3, items 7 and 11).

Unit tests judge status documents and render pages; the integration tests read a real bucket
on the local SeaweedFS (real `drkit init`, real CLI, nothing mocked).
"""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import pytest
from fleets import (
    NOW,
    OBJECTIVES,
    bucket_config,
    drill_history,
    failed_drill,
    status_document,
    write_fleet,
)
from nodes import Node, fresh_repository, make_workspace

from drkit import config, errors
from drkit.actions import report as report_action
from drkit.actions import status as status_action
from drkit.engines import reports
from drkit.engines import status as status_engine
from drkit.engines.storage import Storage
from drkit.model import utc_text
from drkit.service import recorder


def fleet_entry(document: dict | None, node: str = "n") -> dict:
    entry = status_engine.evaluate(document, node=node, now=NOW, default_objectives=OBJECTIVES)
    return reports.fleet_node(entry, document, NOW)


def cert(path: str, days: float, kind: str = "tls") -> dict:
    end = utc_text(NOW + timedelta(days=days))
    return {"path": path, "kind": kind, "subject": "CN=x", "not_after": end}


# -- judging nodes ---------------------------------------------------------------------------


def test_a_node_registered_but_never_run_is_breached():
    entry = fleet_entry(status_document("fresh", backup_age=None))
    assert entry["breached"] and entry["backup_age_seconds"] is None
    assert entry["problems"] == ["no successful backup recorded"]


def test_a_failed_last_backup_within_the_rpo_breaches_the_node():
    entry = fleet_entry(status_document("n", backup_age=60, ok=False))
    assert entry["breached"] and entry["backup_rpo_ok"]
    assert entry["problems"] == ["last backup failed: S3 refused the upload"]


def test_a_drill_that_failed_before_any_login_missed_the_rto():
    drill = {"time": utc_text(NOW), "ok": False, "error": "storage unreachable"}
    entry = fleet_entry(status_document("n", backup_age=60, last_drill=drill))
    assert entry["rto_ok"] is False
    assert entry["problems"] == [f"last drill failed at {utc_text(NOW)}: storage unreachable"]


def test_proven_rpo_comes_from_the_last_proof_or_a_passing_drill():
    drill = {"time": utc_text(NOW - timedelta(hours=1)), "ok": True, "rpo_seconds": 600}
    drill["rto_seconds"] = 4.0
    entry = fleet_entry(status_document("n", backup_age=60, last_drill=drill))
    assert entry["proven_age_seconds"] == 4200 and entry["proven_rpo_ok"] is False
    assert not entry["breached"]  # a node that does not prove every snapshot: shown, not judged
    proof = {"ok": True, "snapshot_time": utc_text(NOW - timedelta(hours=2))}
    proving = {"prove": "after-backup", "last_proven": proof, "last_good_proof": proof}
    entry = fleet_entry(status_document("n", backup_age=60, last_drill=drill, **proving))
    assert entry["proven_age_seconds"] == 4200 and entry["breached"]
    assert entry["problems"][0].startswith("newest proven snapshot: 1 h 10 min old")


def test_certificates_within_90_days_are_listed_and_an_expired_one_breaches():
    backup = {
        "time": utc_text(NOW),
        "ok": True,
        "certificates": [
            cert("/etc/ssl/late.pem", 200),
            cert("/etc/ssh/ssh_host_ed25519_key-cert.pub", 40, "host"),
            cert("/etc/ssl/old.pem", -2),
        ],
    }
    document = status_document("n", backup_age=60)
    document["last_backup"] = backup
    entry = fleet_entry(document)
    assert [(item["path"], item["days_left"]) for item in entry["expiring"]] == [
        ("/etc/ssl/old.pem", -2),
        ("/etc/ssh/ssh_host_ed25519_key-cert.pub", 40),
    ]
    assert entry["problems"] == [
        f"certificate /etc/ssl/old.pem expired {utc_text(NOW - timedelta(days=2))}"
    ]
    weeks = reports.calendar([entry], NOW)
    assert weeks[0]["label"] == "expired" and weeks[0]["entries"][0]["path"] == "/etc/ssl/old.pem"
    host = [row for row in weeks if any(item["kind"] == "host" for item in row["entries"])]
    assert host[0]["label"] == "week of 2027-01-04"  # NOW + 40 d is Saturday 2027-01-09


def test_the_fleet_document_puts_breached_nodes_first_then_by_name():
    nodes = [
        fleet_entry(status_document(name, backup_age=age), name)
        for name, age in (("a-fine", 60), ("b-stale", 7200), ("c-fine", 30), ("d-never", None))
    ]
    document = reports.fleet_document(nodes, [], bucket="b", now=NOW)
    assert [node["node"] for node in document["nodes"]] == [
        "b-stale",
        "d-never",
        "a-fine",
        "c-fine",
    ]
    assert document["ok"] is False and document["breached"] == 2


def test_fleet_page_escapes_node_text_and_fetches_nothing():
    drift = {
        "group": "g",
        "time": utc_text(NOW),
        "ok": False,
        "findings": [{"node": "n", "category": "config", "path": "/x", "detail": "<script>x"}],
    }
    nodes = [fleet_entry(status_document("n", backup_age=60, group="g"), "n")]
    page = reports.render_fleet_html(reports.fleet_document(nodes, [drift], bucket="b", now=NOW))
    assert "<script>x" not in page and "&lt;script&gt;x" in page
    for fetch in ("http://", "https://", "src=", "<link"):
        assert fetch not in page
    assert 'id="node-n"' in page and 'id="drift-g"' in page


# -- the drill page's charts (item 11) -------------------------------------------------------


def circles(svg: str) -> list[float]:
    tree = ElementTree.fromstring(svg)
    return [float(circle.get("cy")) for circle in tree.iter("circle")]


def test_rto_chart_fits_seconds_not_the_objective():
    svg = reports.chart_svg(drill_history([3.1, 10.0, 5.5]), "rto_seconds", 720, "RTO")
    heights = circles(svg)
    assert max(heights) - min(heights) > 80  # 3 s and 10 s: half of a 160 px plot apart
    ticks = re.findall(r'class="y-tick"[^>]*>([^<]+)<', svg)
    assert ticks and all(tick.endswith(" s") for tick in ticks), ticks
    assert "objective 12 min (off scale, above)" in svg


def test_rto_chart_draws_a_near_objective_on_the_scale():
    svg = reports.chart_svg(drill_history([200, 320]), "rto_seconds", 600, "RTO")
    ticks = re.findall(r'class="y-tick"[^>]*>([^<]+)<', svg)
    assert all(tick.endswith(" min") for tick in ticks), ticks
    assert "objective 10 min<" in svg and "off scale" not in svg


def test_x_labels_differ_when_the_dates_repeat():
    svg = reports.chart_svg(drill_history([3, 4]), "rto_seconds", 600, "RTO")
    labels = re.findall(r'class="x-label"[^>]*>([^<]+)<', svg)
    assert labels == ["2026-11-30 08:00", "2026-11-30 08:07"]
    assert reports.time_labels(["2026-11-01T00:00:00Z", "2026-11-30T00:00:00Z"]) == [
        "2026-11-01",
        "2026-11-30",
    ]


def test_a_failed_drill_says_what_failed_at_the_top():
    page = reports.render_html(failed_drill(), drill_history([3, 4, 9]))
    top = page.split("<h2>Objectives</h2>")[0]
    assert 'id="what-failed"' in top and "smoke: sftp login</b>: Permission denied" in top
    markdown = reports.render_markdown(failed_drill(), drill_history([3]))
    assert markdown.index("smoke: sftp login") < markdown.index("## Objectives")


def test_not_judged_is_not_a_warning_and_fingerprints_do_not_wrap():
    page = reports.render_html(failed_drill(), drill_history([3]))
    badge = re.search(r'class="verdict (\w+)">not judged<', page)
    assert badge and badge.group(1) == "neutral"
    assert "break-all" not in page and "code.fp{white-space:nowrap" in page
    assert page.count('<code class="fp">SHA256:') == 3  # signer, backed up, served


# -- the bucket: status --fleet, report --fleet, init's registration, items 7 ----------------


@pytest.fixture
def bucket(local_s3, tmp_path: Path) -> config.Config:
    """Return a node's config on a fresh bucket of the local S3 (no restic repository)."""
    return bucket_config(local_s3, tmp_path)


def breached_names(documents: dict[str, dict]) -> set[str]:
    return {
        name
        for name, document in documents.items()
        if document["last_backup"]["time"] < utc_text(datetime.now(UTC) - timedelta(minutes=15))
        or not document["last_backup"]["ok"]
    }


@pytest.mark.integration
def test_report_fleet_and_status_fleet_read_every_node_from_the_bucket(bucket, tmp_path):
    storage = Storage(bucket.repository)
    documents = write_fleet(storage, 240)
    storage.put_json(
        reports.drift_key("g"), {"group": "g", "time": utc_text(NOW), "ok": True, "findings": []}
    )
    out = tmp_path / "out" / "fleet.html"
    result = report_action.fleet(bucket, out=out)
    names = [node.node for node in result.nodes]
    assert sorted(names) == sorted(documents)
    breached = breached_names(documents)
    assert set(names[: len(breached)]) == breached and result.breached == len(breached)
    assert result.ok is False and result.html == str(out)
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [node["node"] for node in saved["nodes"]] == names and saved["drift"][0]["group"] == "g"
    page = out.read_text()
    assert all(f'id="node-{name}"' in page for name in documents)
    state = status_action.run(bucket, fleet=True)
    assert state.ok is False and len(state.nodes) == len(documents)
    assert {entry.node for entry in state.nodes if entry.problems} == breached


@pytest.mark.integration
def test_init_registers_a_node_that_never_ran_and_the_cli_shows_it_breached(local_s3):
    workspace = make_workspace()
    try:
        node = Node(workspace, fresh_repository(local_s3, workspace), node="never-ran")
        out = workspace / "fleet.html"
        code, document = node.run("report", "--fleet", "--out", str(out))
        assert code == 1, document
        assert [entry["node"] for entry in document["nodes"]] == ["never-ran"]
        assert document["nodes"][0]["breached"] and document["nodes"][0]["problems"] == [
            "no successful backup recorded"
        ]
        assert 'data-node="never-ran" data-breached="true"' in out.read_text()
        code, state = node.run("status", "--fleet")
        assert code == 1 and state["nodes"][0]["node"] == "never-ran"
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


@pytest.mark.integration
def test_an_interrupted_drill_leaves_status_and_report_naming_the_same_drill(bucket):
    storage = Storage(bucket.repository)
    started = datetime.now(UTC) - timedelta(seconds=30)
    passed = {"ok": True, "snapshot_id": "cd" * 32, "rto_seconds": 4.5, "rpo_seconds": 20}
    recorder.record_run(bucket, "backup", started, 1.0, result={"snapshot_id": "cd" * 32})
    recorder.record_run(bucket, "drill", started, 9.0, result=passed)
    report = {**failed_drill(), **passed, "node": bucket.node, "started": utc_text(started)}
    storage.put_json(
        reports.bucket_prefix(bucket.node) + reports.base_name(report) + ".json", report
    )
    recorder.record_run(
        bucket, "drill", datetime.now(UTC), 2.0, error=errors.Interrupted("interrupted")
    )
    state = status_action.run(bucket)
    drills = report_action.run(bucket).drills
    assert state.nodes[0].rto_ok is True and state.nodes[0].last_drill["rto_seconds"] == 4.5
    assert drills[-1].time == state.nodes[0].last_drill["time"] and drills[-1].rto_seconds == 4.5
    # a drill that failed before writing a report is the last drill of both, failed
    recorder.record_run(
        bucket, "drill", datetime.now(UTC), 2.0, error=errors.StorageError("S3 is down")
    )
    state = status_action.run(bucket)
    drills = report_action.run(bucket).drills
    assert state.nodes[0].rto_ok is False and state.ok is False
    assert drills[-1].time == state.nodes[0].last_drill["time"] and drills[-1].ok is False


@pytest.mark.integration
def test_status_exits_1_when_the_last_backup_failed_within_the_rpo(bucket):
    started = datetime.now(UTC)
    recorder.record_run(bucket, "backup", started, 1.0, result={"snapshot_id": "ef" * 32})
    assert status_action.run(bucket).ok is True
    recorder.record_run(bucket, "backup", started, 1.0, error=errors.StorageError("down"))
    state = status_action.run(bucket)
    assert state.nodes[0].rpo_ok is True and state.ok is False
    assert state.nodes[0].problems == ["last backup failed: down"]


@pytest.mark.integration
def test_the_daemon_hook_uploads_the_fleet_page_only_when_report_fleet_is_set(bucket):
    storage = Storage(bucket.repository)
    write_fleet(storage, 3)
    report_action.refresh_fleet_page(bucket)
    assert storage.get_bytes(reports.FLEET_HTML) is None
    chosen = bucket.model_copy(update={"report": config.ReportSettings(fleet=True)})
    report_action.refresh_fleet_page(chosen)
    page = storage.get_bytes(reports.FLEET_HTML).decode()
    assert all(f'id="node-n-000{index}"' in page for index in range(3))
    assert json.loads(storage.get_bytes(reports.FLEET_JSON))["kind"] == "fleet"


def test_report_fleet_key_is_validated():
    with pytest.raises(Exception, match="fleet"):
        config.ReportSettings.model_validate({"fleet": "sometimes"})
    with pytest.raises(Exception, match="flet"):
        config.ReportSettings.model_validate({"flet": True})
