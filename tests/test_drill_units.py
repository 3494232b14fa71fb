"""Drill, report and diff logic without servers: manifests in, sentences and pages out."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from xml.etree import ElementTree

from drkit import model as checks
from drkit.actions import drill
from drkit.engines import diff as diff_engine
from drkit.engines import reports
from drkit.model import Manifest, SmokeResult
from tests.manifests import partial

OLD = {
    "files": [
        {"path": "/etc/ssh/sshd_config", "category": "config", "type": "file", "size": 10,
         "mode": "0644", "uid": 0, "gid": 0, "user": "root", "group": "root", "sha256": "a"},
        {"path": "/etc/ssh/ssh_host_ed25519_key", "category": "host_keys", "type": "file",
         "size": 400, "mode": "0600", "uid": 0, "gid": 0, "user": "root", "group": "root",
         "sha256": "k1"},
        {"path": "/home/partner/.ssh/authorized_keys", "category": "user_keys", "type": "file",
         "size": 90, "mode": "0644", "uid": 2102, "gid": 2102, "user": "partner",
         "group": "partner", "sha256": "u1"},
    ],
    "keys": [
        {"path": "/etc/ssh/ssh_host_ed25519_key", "category": "host_keys", "private": True,
         "type": "ED25519", "fingerprint": "SHA256:old", "public_line": "ssh-ed25519 AAAAold"},
        {"path": "/home/partner/.ssh/authorized_keys", "category": "user_keys", "private": False,
         "type": "ED25519", "fingerprint": "SHA256:first", "public_line": "ssh-ed25519 AAAA1"},
    ],
    "host_keys": [
        {"path": "/etc/ssh/ssh_host_ed25519_key", "type": "ED25519", "fingerprint": "SHA256:old",
         "public_line": "ssh-ed25519 AAAAold"},
    ],
    "certificates": [
        {"path": "/etc/ssl/certs/x.pem", "subject": "CN=x", "issuer": "CN=x",
         "not_after": "2027-01-01T00:00:00Z", "fingerprint": "c1", "key_fingerprint": "p1"},
    ],
    "accounts": [
        {"name": "partner", "passwd": "partner:x:2102:2102::/home/partner:/usr/sbin/nologin",
         "shadow": "partner:$6$salt$oldhash:19800:0:99999:7:::", "groups": ["partner:x:2102:"]},
    ],
}  # fmt: skip


def _m(document: dict) -> Manifest:
    return partial(**copy.deepcopy(document))


def _new() -> dict:
    new = copy.deepcopy(OLD)
    new["files"][0]["sha256"], new["files"][0]["size"] = "b", 12
    new["files"][1]["sha256"] = "k2"
    new["keys"][0]["fingerprint"] = new["host_keys"][0]["fingerprint"] = "SHA256:new"
    new["keys"].append({**new["keys"][1], "fingerprint": "SHA256:second"})
    new["keys"].pop(1)
    new["certificates"][0].update(fingerprint="c2", not_after="2026-06-01T00:00:00Z")
    new["accounts"][0]["shadow"] = "partner:$6$salt$newhash:19800:0:99999:7:::"
    new["accounts"].append(
        {"name": "carol", "passwd": "carol:x:2103:2103::/home/carol:/usr/sbin/nologin",
         "shadow": "carol:$6$x$y:1:::::::", "groups": []}
    )  # fmt: skip
    return new


def test_compare_names_key_certificate_and_account_changes_in_words():
    changes, notes = diff_engine.compare(_m(OLD), _m(_new()))
    assert (
        "host key ssh_host_ed25519_key replaced: SHA256:old → SHA256:new; clients that pinned "
        "the old key will refuse to connect"
    ) in notes
    assert any(
        "certificate /etc/ssl/certs/x.pem replaced and now expires sooner" in n for n in notes
    )
    assert (
        "user partner: key SHA256:second (ED25519) added to /home/partner/.ssh/authorized_keys"
        in notes
    )
    assert any(n.startswith("user partner: key SHA256:first (ED25519) removed") for n in notes)
    assert "new allowed user carol" in notes
    assert "account partner changed: password hash changed (not shown)" in notes
    by_path = {change["path"]: change for change in changes}
    assert by_path["/etc/ssh/ssh_host_ed25519_key"]["detail"] == (
        "private key content changed (not shown)"
    )
    assert by_path["/etc/ssh/sshd_config"]["detail"] == "content changed (10 → 12 bytes)"
    assert by_path["/etc/passwd:carol"]["change"] == "added"
    everything = repr((changes, notes))
    assert "oldhash" not in everything and "newhash" not in everything and "$6$" not in everything


def test_a_snapshot_compared_with_itself_has_no_changes():
    assert diff_engine.compare(_m(OLD), _m(OLD)) == ([], [])


def test_certificate_renewal_is_called_renewed():
    new = copy.deepcopy(OLD)
    new["certificates"][0].update(fingerprint="c2", not_after="2028-01-01T00:00:00Z")
    assert diff_engine.certificate_notes(_m(OLD), _m(new)) == [
        "certificate /etc/ssl/certs/x.pem renewed: expires 2028-01-01T00:00:00Z "
        "(was 2027-01-01T00:00:00Z)"
    ]


def test_host_keys_and_certificates_added_and_removed_are_named_with_what_they_are():
    new = copy.deepcopy(OLD)
    new["host_keys"] = [{**OLD["host_keys"][0], "path": "/etc/ssh/ssh_host_rsa_key",
                         "type": "RSA", "fingerprint": "SHA256:rsa"}]  # fmt: skip
    new["certificates"] = [{**OLD["certificates"][0], "path": "/etc/ssl/certs/y.pem",
                            "subject": "CN=y", "fingerprint": "c3"}]  # fmt: skip
    assert diff_engine.host_key_notes(_m(OLD), _m(new)) == [
        "host key ssh_host_ed25519_key removed (was SHA256:old)",
        "host key ssh_host_rsa_key added (RSA SHA256:rsa)",
    ]
    assert diff_engine.certificate_notes(_m(OLD), _m(new)) == [
        "certificate /etc/ssl/certs/x.pem removed (CN=x)",
        "certificate /etc/ssl/certs/y.pem added (CN=y, expires 2027-01-01T00:00:00Z)",
    ]


def test_text_diffs_only_for_config_and_never_for_keys_or_private_material():
    new = _new()
    changes, _ = diff_engine.compare(_m(OLD), _m(new))
    wanted = [c["path"] for c in changes if diff_engine.wants_text_diff(c, _m(OLD), _m(new))]
    assert wanted == ["/etc/ssh/sshd_config"]
    assert diff_engine.unified("/x", "a\n", "-----BEGIN OPENSSH PRIVATE KEY-----\nb\n") is None
    text = diff_engine.unified("/etc/x", "user:$6$abc$def:1\n", "user:$y$j9T$xyz:2\n")
    assert "$6$abc" not in text and "$y$j9T" not in text and "[hash not shown]" in text
    assert diff_engine.unified("/etc/x", "A 1\n", "A 2\n").splitlines()[2:] == [
        "@@ -1 +1 @@",
        "-A 1",
        "+A 2",
    ]


def _document(**extra) -> dict:
    document = {
        "ok": False,
        "kind": "drill",
        "node": "sftp-1",
        "snapshot_id": "0123456789abcdef",
        "snapshot": {
            "id": "0123456789abcdef",
            "short_id": "01234567",
            "time": "2026-11-30T07:00:00Z",
            "spec": "latest",
        },
        "signer": "SHA256:signer",
        "trust": "config",
        "started": "2026-11-30T08:00:00Z",
        "finished": "2026-11-30T08:00:09Z",
        "duration_seconds": 9.1,
        "rto_seconds": None,
        "rpo_seconds": 3600,
        "rpo_judged": True,
        "objectives": {"rpo_seconds": 900, "rto_seconds": 600},
        "objectives_met": {"rto": False, "rpo": False},
        "checks": [{"name": "smoke: sftp login", "status": "fail", "detail": "<script>x</script>"}],
        "host_keys": [
            {
                "path": "/etc/ssh/k",
                "type": "ED25519",
                "fingerprint": "SHA256:f",
                "served": None,
                "ok": False,
            }
        ],
        "certificates": [],
        "sandbox": {"path": "/var/lib/drkit/drills/x", "removed": True},
    }
    document.update(extra)
    return document


def test_html_report_is_self_contained_and_escapes_node_text():
    document = _document()
    history = [
        reports.summary(_document(ok=True, rto_seconds=4.2, started="2026-10-01T05:00:00Z")),
        reports.summary(document),
    ]
    page = reports.render_html(document, history)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count("<svg") == 2 and "<polyline" not in page.split("RPO per drill")[0][-10:]
    assert "objective 10 min" in page and "FAILED" in page
    for fetch in ("http://", "https://", "src=", "<link"):
        assert fetch not in page
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        ElementTree.fromstring(svg)  # well-formed: browsers render inline SVG strictly
    markdown = reports.render_markdown(document, history)
    assert "| RTO (drill start to first login and file round trip) | none | 10 min | MISSED |" in (
        markdown
    )
    assert reports.base_name(document) == "drill-20261130T080000Z-01234567"


def test_rto_ends_when_every_tried_server_made_its_round_trip():
    sftp = SmokeResult(profile="proftpd")
    sftp.session(
        "sftp",
        checks.Check("smoke: sftp login", "pass", "", at=105.0),
        checks.Check("smoke: sftp round trip", "pass", "", at=106.5),
    )
    assert drill._rto([sftp], 100.0) == 6.5
    ftps = SmokeResult(profile="vsftpd")
    ftps.session(
        "ftps",
        checks.Check("smoke: ftps login", "pass", "", at=107.0),
        checks.Check("smoke: ftps round trip", "pass", "", at=109.0),
    )
    untried = SmokeResult.not_judged("sftpplus", "cannot run here")
    assert drill._rto([sftp, ftps, untried], 100.0) == 9.0
    assert drill._rto([untried], 100.0) is None
    broken = SmokeResult(profile="openssh")
    broken.session(
        "sftp",
        checks.Check("smoke: sftp login", "pass", "", at=105.0),
        checks.failed("smoke: file round trip", "no writable directory"),
    )
    assert not broken.proven and broken.login_ok and not broken.round_trip_ok
    assert drill._rto([sftp, broken], 100.0) is None
    assert checks.Check("a", "pass", "x").as_dict() == {
        "name": "a",
        "status": "pass",
        "detail": "x",
    }


def test_sandbox_paths_under_world_writable_directories_are_refused(tmp_path: Path):
    assert "world-writable" in (drill.unsafe_component(Path("/tmp/drkit/drills")) or "")
    assert drill.unsafe_component(Path("/var/lib")) is None


def test_the_daemon_schedules_drills_and_metrics_show_the_last_one(tmp_path: Path):
    from datetime import UTC, datetime

    from drkit import config, daemon
    from drkit.engines import metrics, status

    password = tmp_path / "password"
    password.write_text("x" * 64)
    password.chmod(0o600)
    configuration = config.Config(
        node="sftp-1",
        servers=["openssh"],
        repository=config.Repository(
            s3_endpoint="http://127.0.0.1:9", bucket="drkit-unit", prefix="node",
            password_file=password,
        ),
        signing_key=tmp_path / "signing.pem",
        state_dir=tmp_path / "state",
    )  # fmt: skip
    assert "drill" in daemon.Daemon(configuration).actions  # schedule.drill defaults to monthly
    result = {"ok": True, "snapshot_id": "abc", "rto_seconds": 4.5, "rpo_seconds": 60}
    outcome = status.outcome_of("drill", datetime.now(UTC), 9.0, result=result)
    status.record(configuration, "drill", outcome, upload=False)
    collector = metrics.StatusCollector(
        "sftp-1", lambda: status.load_local(configuration), status.objectives_of(configuration)
    )
    text = metrics.Metrics(collector).exposition().decode()
    assert 'drkit_drill_rto_seconds{job="drill",node="sftp-1"} 4.5' in text
    assert 'drkit_rto_seconds{job="drill",node="sftp-1"} 600.0' in text
    assert 'drkit_last_run_ok{job="drill",node="sftp-1"} 1.0' in text
