"""Words an auditor reads: a key change is attributed to the account whose logins it serves."""

from __future__ import annotations

from drkit.engines import diff
from drkit.model import Manifest
from tests.manifests import partial


def _manifest(fingerprints: list[str], path: str, uid: int, user: str) -> Manifest:
    return partial(
        accounts=[
            {"name": "alice", "passwd": "alice:x:2601:2601::/upload:/usr/sbin/nologin"},
            {"name": "bob", "passwd": "bob:x:2602:2602::/home/bob:/bin/sh"},
        ],
        files=[{"path": path, "type": "file", "uid": uid, "user": user}],
        keys=[
            {
                "path": path,
                "category": "user_keys",
                "private": False,
                "type": "ssh-ed25519",
                "fingerprint": fingerprint,
            }
            for fingerprint in fingerprints
        ],
    )


def test_a_root_owned_keys_file_named_after_the_user_is_that_users():
    path = "/etc/ssh/authorized_keys/alice"
    old = _manifest(["SHA256:old"], path, 0, "root")
    new = _manifest(["SHA256:new"], path, 0, "root")
    notes = diff.user_key_notes(old, new)
    assert notes == [
        f"user alice: key SHA256:new (ssh-ed25519) added to {path}",
        f"user alice: key SHA256:old (ssh-ed25519) removed from {path}",
    ]


def test_a_keys_file_in_a_home_is_the_home_owners():
    path = "/home/bob/.ssh/authorized_keys"
    notes = diff.user_key_notes(
        _manifest([], path, 0, "root"), _manifest(["SHA256:k"], path, 0, "root")
    )
    assert notes == [f"user bob: key SHA256:k (ssh-ed25519) added to {path}"]


def test_a_drill_that_failed_before_its_snapshot_prints_no_empty_fields():
    from drkit.engines import reports

    document = {
        "ok": False,
        "node": "sftp-1",
        "started": "2026-12-07T10:00:00Z",
        "finished": "2026-12-07T10:00:30Z",
        "duration_seconds": 30,
        "snapshot": {"spec": "latest"},
        "checks": [{"name": "storage", "status": "fail", "detail": "S3 unreachable"}],
    }
    for page in (reports.render_html(document, []), reports.render_markdown(document, [])):
        assert "trust: )" not in page and "()" not in page and "signed by ``" not in page
        assert "none in this snapshot" not in page
        assert "no snapshot was opened" in page.lower()


def test_a_diff_ends_with_its_counts(capsys):
    from drkit import render, results

    snapshot = {"id": "a" * 64, "short_id": "aaaaaaaa", "time": "t", "signer": "s"}
    changes = [
        {"category": "config", "path": f"/srv/f{index}", "change": "added", "detail": "new"}
        for index in range(3)
    ] + [{"category": "tls", "path": "/etc/k", "change": "removed", "detail": "gone"}]
    result = results.DiffResult(
        node="n", old=snapshot, new={**snapshot, "short_id": "bbbbbbbb"}, changes=changes,
        notes=["user alice: key x added to /etc/ssh/authorized_keys/alice"],
    )  # fmt: skip
    render.render(result)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "summary: 3 added, 1 removed, 0 changed, 1 note(s)"
