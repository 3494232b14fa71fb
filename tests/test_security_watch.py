"""The security-change watch: a simulated compromise raises events, a planned change is
acknowledged with a signature, and the last clean snapshot is named for a restore.

Real restic and S3; the node is the sample chrooted SFTP node.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nodes import Node, fresh_repository, make_workspace

from devtools.sample_node import _client_key_line
from drkit.engines import watch
from drkit.model import SecurityEvent

pytestmark = pytest.mark.integration


def _baseline(**changes) -> watch.Baseline:
    fields = {
        "snapshot_id": "a" * 64,
        "file_count": 100,
        "host_keys": {"/etc/ssh/ssh_host_ed25519_key": "SHA256:host"},
        "user_keys": [("/home/alice/.ssh/authorized_keys", "SHA256:alice")],
        "accounts": {"alice": "alice:x:2601:2601::/home/alice:/usr/sbin/nologin"},
        "scripts": {"/usr/local/bin/post-upload": "s1"},
        "directives": {"passwordauthentication": ["no"], "chroot": ["yes"]},
    }
    return watch.Baseline(**{**fields, **changes})


def test_each_kind_of_intrusion_is_classified_with_diffs_words():
    old = _baseline()
    new = _baseline(
        snapshot_id="b" * 64,
        file_count=70,
        host_keys={"/etc/ssh/ssh_host_ed25519_key": "SHA256:other"},
        user_keys=[
            ("/home/alice/.ssh/authorized_keys", "SHA256:alice"),
            ("/home/alice/.ssh/authorized_keys", "SHA256:attacker"),
        ],
        accounts={
            "alice": "alice:x:2601:2601::/home/alice:/usr/sbin/nologin",
            "toor": "toor:x:0:0::/root:/bin/sh",
        },
        scripts={"/usr/local/bin/post-upload": "s2"},
        directives={"passwordauthentication": ["yes"], "permitrootlogin": ["yes"]},
    )
    events = watch.classify(old, new, "2026-12-07T10:00:00Z")
    kinds = sorted(event.kind for event in events)
    assert kinds == sorted([
        "host_key_replaced", "user_key_added", "account_added", "uid0_account",
        "auth_weakened", "auth_weakened", "auth_weakened", "script_changed", "files_dropped",
    ])  # fmt: skip
    details = {event.kind: event.detail for event in events}
    assert details["user_key_added"].startswith("user alice: key SHA256:attacker added")
    assert "clients that pinned the old key" in details["host_key_replaced"]
    assert all(event.snapshot_id == "b" * 64 for event in events)
    assert len({event.id for event in events}) == len(events)
    assert watch.classify(old, old.model_copy(update={"snapshot_id": "c" * 64}), "t") == []


def test_directives_read_from_sshd_vsftpd_and_proftpd_texts():
    found = watch.directives(
        {
            "/etc/ssh/sshd_config": "# PasswordAuthentication yes\nPasswordAuthentication no\n"
            "Match User x\n  ChrootDirectory /srv/%u\n",
            "/etc/vsftpd.conf": "anonymous_enable=YES\n",
        }
    )
    assert found == {
        "passwordauthentication": ["no"],
        "chroot": ["yes"],
        "anonymous_enable": ["yes"],
    }


@pytest.fixture
def node(local_s3, tmp_path: Path):
    workspace = make_workspace()
    sample = Node(workspace, fresh_repository(local_s3, tmp_path, "sftp-1"))
    try:
        yield sample
    finally:
        sample.remove()


def test_a_simulated_compromise_alerts_is_acknowledged_and_names_the_last_clean(node: Node):
    clean = node.backup()
    authorized = node.root / "home" / node.made["smoke_user"] / ".ssh/authorized_keys"
    authorized.write_text(authorized.read_text() + _client_key_line("attacker@evil"))
    config = node.root / "etc/ssh/sshd_config"
    config.write_text(config.read_text().replace("PermitRootLogin no", "PermitRootLogin yes"))

    code, breached = node.run("backup")
    assert code == 0, breached
    kinds = {event["kind"]: event for event in breached["security_events"]}
    assert set(kinds) == {"user_key_added", "auth_weakened"}, breached["security_events"]
    assert f"user {node.made['smoke_user']}: key" in kinds["user_key_added"]["detail"]
    assert kinds["auth_weakened"]["detail"] == "permitrootlogin yes (was no)"

    code, listed = node.run("history")
    assert code == 0 and [e["acknowledged"] for e in listed["events"]] == [False, False]
    # Whoever holds only the bucket cannot silence an event: an unsigned ack is ignored.
    from drkit.config import load_config
    from drkit.engines.storage import Storage

    loaded = load_config(node.config)[0]
    key_event = kinds["user_key_added"]["id"]
    forged = {"record": json.dumps({"kind": "ack", "node": node.name, "event_id": key_event})}
    Storage(loaded.repository).put_json(watch.ack_key(node.name, key_event), forged)
    code, listed = node.run("history")
    assert not any(event["acknowledged"] for event in listed["events"])

    code, acked = node.run("history", "--ack", kinds["auth_weakened"]["id"], "--why", "planned")
    assert code == 0, acked
    open_events = [SecurityEvent(**e) for e in acked["events"] if not e["acknowledged"]]
    assert [event.kind for event in open_events] == ["user_key_added"]

    code, last = node.run("history", "--last-clean", key_event)
    assert code == 0 and last["snapshot_id"] == clean, last
    code, unchanged = node.run("backup")
    assert code == 0 and unchanged["security_events"] == []
