"""What the CLI hands to actions: init's options, --include, --server auto, --trust-key,
bare-metal flags, and the one status recorder. No S3, no restic."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from drkit import config, errors
from drkit.actions import discover
from drkit.actions import init as init_action
from drkit.actions.restore import Origin
from drkit.engines import status
from drkit.service import context, detection, recorder

FINGERPRINT = "SHA256:" + "A" * 43


def test_include_is_repeatable_and_several_globs_share_a_category():
    items = ["tls=/etc/ssl/a.key", "audit_logs=/var/log/sftp/*", "tls=/etc/ssl/b.pem"]
    assert init_action.parse_includes(items) == {
        "tls": ["/etc/ssl/a.key", "/etc/ssl/b.pem"],
        "audit_logs": ["/var/log/sftp/*"],
    }


@pytest.mark.parametrize("item", ["tls", "tls=", "=/etc/x"])
def test_include_without_category_and_glob_is_a_usage_error(item):
    with pytest.raises(errors.UsageError, match="is not CATEGORY=GLOB"):
        init_action.parse_includes([item])


def test_init_settings_are_a_valid_config(tmp_path: Path):
    (tmp_path / "etc/ssh").mkdir(parents=True)
    (tmp_path / "etc/ssh/sshd_config").write_text("Port 22\n")
    options = init_action.InitOptions(
        node="sftp-1",
        s3_endpoint="http://127.0.0.1:9",
        bucket="dr-backups",
        password_file=tmp_path / "repo.pass",
        servers=["auto", "openssh", "generic"],
        root=tmp_path,
        includes=["tls=/etc/ssl/a.key", "tls=/etc/ssl/b.key"],
        group="pool",
    )
    settings = init_action.settings_for(options, tmp_path / "drkit.yaml")
    assert settings["servers"] == ["openssh", "generic"]  # auto found openssh; each once
    assert settings["repository"]["prefix"] == "sftp-1"
    assert settings["signing_key"] == str(tmp_path / "signing.key")
    loaded = config.validate_config(settings, "init")
    assert loaded.includes == {"tls": ["/etc/ssl/a.key", "/etc/ssl/b.key"]}
    assert loaded.group == "pool"


def test_server_auto_on_an_empty_root_is_a_usage_error(tmp_path: Path):
    with pytest.raises(errors.UsageError, match="--server auto: no known server"):
        detection.resolve_servers(["auto"], tmp_path)


def test_trust_key_is_held_to_the_config_fingerprint_rule():
    assert context.trust_keys([FINGERPRINT]) == [FINGERPRINT]
    assert context.trust_keys(None) == []
    with pytest.raises(errors.UsageError, match="--trust-key 'MD5:aa' is not a SHA256"):
        context.trust_keys(["MD5:aa"])
    with pytest.raises(ValueError):
        config.check_fingerprint(FINGERPRINT + "=")


def test_bare_metal_origin_names_missing_flags_then_every_bad_one(tmp_path: Path):
    with pytest.raises(errors.UsageError, match="needs --bucket, --node"):
        Origin.bare_metal(
            node=None, s3_endpoint="http://s3", bucket=None, password_file=tmp_path / "p"
        )
    with pytest.raises(errors.ConfigError) as refused:
        Origin.bare_metal(
            node="sftp-1", s3_endpoint="s3.example.net", bucket="ab", password_file=tmp_path
        )
    message = refused.value.message
    assert message.startswith("bare-metal restore: ")
    assert "--s3-endpoint: 's3.example.net' is not an http(s):// URL" in message
    assert "--bucket: " in message
    origin = Origin.bare_metal(
        node="sftp-1",
        s3_endpoint="http://s3",
        bucket="dr-backups",
        password_file=tmp_path / "p",
        extra_trust=[FINGERPRINT],
        trust_snapshot_signer=True,
    )
    assert origin.repository.prefix == "sftp-1" and origin.root == Path("/")
    assert origin.trust_keys == [FINGERPRINT] and origin.trust_snapshot_signer


def test_config_errors_name_every_field():
    try:
        config.Config.model_validate({"colour": "blue", "servers": []})
    except ValidationError as exc:
        message = config.config_error(exc, "drkit.yaml").message
    assert message.startswith("drkit.yaml: ")
    for field in ("node", "servers", "repository", "signing_key", "colour: unknown setting"):
        assert field in message


def _node_config(tmp_path: Path) -> config.Config:
    return config.Config(
        node="sftp-1",
        servers=["generic"],
        repository=config.Repository(
            s3_endpoint="http://127.0.0.1:9", bucket="dr-b", prefix="p", password_file="/p"
        ),
        signing_key=tmp_path / "k",
        state_dir=tmp_path / "state",
    )


def test_the_recorder_records_runs_and_errors_but_not_dry_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(status, "publish", lambda configuration, document: False)
    configuration = _node_config(tmp_path)
    result = {"ok": True, "kept": [], "removed": [], "snapshot_count": 3}
    assert recorder.recorded(configuration, "prune", lambda: result, dry_run=True) is result
    assert status.load_local(configuration) is None
    assert recorder.recorded(configuration, "prune", lambda: result) is result
    with pytest.raises(errors.Busy):
        recorder.recorded(configuration, "verify", _raise(errors.Busy("locked")))
    with pytest.raises(KeyError):
        recorder.recorded(configuration, "drill", _raise(KeyError("rto")))
    document = status.load_local(configuration)
    assert document["last_prune"]["ok"] is True and document["snapshots"] == 3
    assert document["last_verify"]["error"] == "locked"
    assert document["last_drill"]["error_kind"] == "internal"


def test_the_daemon_and_the_cli_record_a_backup_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setattr(status, "publish", lambda configuration, document: False)
    configuration = _node_config(tmp_path)
    started = datetime(2026, 1, 1, tzinfo=UTC)
    result = {"ok": True, "snapshot_id": "c0ffee", "time": "2026-01-01T00:00:05Z"}
    outcome = recorder.record_run(
        configuration, "backup", started, 1.5, result=result, count_snapshots=lambda: 7
    )
    assert outcome["ok"] and outcome["snapshot_id"] == "c0ffee"
    document = status.load_local(configuration)
    assert document["last_good_backup"] == {"time": "2026-01-01T00:00:05Z", "snapshot_id": "c0ffee"}
    assert document["snapshots"] == 7


def _raise(error: BaseException):
    def action():
        raise error

    return action


def _write(root: Path, node_path: str, text: str) -> None:
    path = root / node_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_discover_finds_the_config_a_unit_names_and_init_records_it(tmp_path: Path):
    _write(tmp_path, "/etc/ega/sshd_config", "Port 22\n")
    _write(tmp_path, "/lib/systemd/system/ssh.service", "[Service]\nExecStart=/usr/sbin/sshd -D\n")
    # a drop-in resets ExecStart and names the real config, as `systemctl edit` writes it
    _write(
        tmp_path,
        "/lib/systemd/system/ssh.service.d/override.conf",
        "[Service]\nExecStart=\nExecStart=/usr/sbin/sshd -D -f /etc/ega/sshd_config\n",
    )
    _write(tmp_path, "/etc/vsftpd/ftps.conf", "listen=YES\n")
    _write(
        tmp_path,
        "/etc/systemd/system/vsftpd.service",
        "ExecStart=/usr/sbin/vsftpd /etc/vsftpd/ftps.conf\n",
    )
    _write(tmp_path, "/srv/ftp/proftpd.conf", "ServerName x\n")
    _write(
        tmp_path,
        "/lib/systemd/system/proftpd.service",
        "ExecStart=/usr/sbin/proftpd --nodaemon -c /srv/ftp/proftpd.conf\n",
    )
    found = detection.detect(tmp_path)
    assert found["proftpd"].options == {"config": "/srv/ftp/proftpd.conf"}
    assert found["openssh"].configs == ["/etc/ega/sshd_config"]
    assert found["openssh"].options == {"config": "/etc/ega/sshd_config"}
    assert found["vsftpd"].options == {"config": "/etc/vsftpd/ftps.conf"}
    _write(tmp_path, "/etc/hostname", "ega-inbox-1.example.net\n")
    proposed = yaml.safe_load(discover.run(tmp_path).proposed_config)
    assert proposed["node"] == proposed["repository"]["prefix"] == "ega-inbox-1"
    assert proposed["profile_options"]["openssh"] == {"config": "/etc/ega/sshd_config"}
    assert "sshd_config:ListenAddress" in proposed["node_local"]
    config.validate_config(proposed, "discover's proposal")  # usable as it is
    options = init_action.InitOptions(
        node="n", s3_endpoint="http://127.0.0.1:9", bucket="b", password_file=tmp_path / "p",
        servers=["auto"], root=tmp_path,
    )  # fmt: skip
    settings = init_action.settings_for(options, tmp_path / "drkit.yaml")
    assert settings["profile_options"] == {
        "openssh": {"config": "/etc/ega/sshd_config"},
        "proftpd": {"config": "/srv/ftp/proftpd.conf"},
        "vsftpd": {"config": "/etc/vsftpd/ftps.conf"},
    }


def test_a_server_without_its_config_is_a_config_error_for_init(tmp_path: Path):
    options = init_action.InitOptions(
        node="n", s3_endpoint="http://127.0.0.1:9", bucket="b", password_file=tmp_path / "p",
        servers=["openssh", "proftpd"], root=tmp_path,
    )  # fmt: skip
    with pytest.raises(errors.ConfigError) as caught:
        init_action.settings_for(options, tmp_path / "drkit.yaml")
    assert caught.value.exit_code == 2
    assert "openssh: no /etc/ssh/sshd_config under" in caught.value.message
    assert "proftpd: no /etc/proftpd/proftpd.conf under" in caught.value.message
    _write(tmp_path, "/srv/sshd.conf", "Port 22\n")
    _write(tmp_path, "/etc/proftpd/proftpd.conf", "Port 21\n")
    options.profile_options = ["openssh.config=/srv/sshd.conf"]
    settings = init_action.settings_for(options, tmp_path / "drkit.yaml")
    assert settings["profile_options"] == {"openssh": {"config": "/srv/sshd.conf"}}


def test_profile_options_are_server_key_value():
    assert init_action.parse_profile_options(
        ["sftpplus.install_dir=/opt/x", "sftpplus.validate_timeout_seconds=30", "openssh.config=/a"]
    ) == {
        "sftpplus": {"install_dir": "/opt/x", "validate_timeout_seconds": 30},
        "openssh": {"config": "/a"},
    }
    for bad in ("openssh=/a", "config=/a", "openssh.config="):
        with pytest.raises(errors.UsageError, match=r"SERVER\.KEY=VALUE"):
            init_action.parse_profile_options([bad])


def test_a_held_node_lock_names_its_holder_and_wait_bounds_the_wait(tmp_path: Path):
    import threading
    import time

    from nodes import MINIMAL_CONFIG

    text = MINIMAL_CONFIG.replace("/var/lib/drkit", str(tmp_path))
    loaded = config.parse_config(text, "drkit.yaml")
    loaded = loaded.model_copy(update={"state_dir": tmp_path})
    held, release = threading.Event(), threading.Event()

    def holder():
        with context.node_lock(loaded):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        started = time.monotonic()
        with pytest.raises(errors.Busy) as caught, context.node_lock(loaded, wait=0):
            pass
        assert time.monotonic() - started < 1  # --wait 0 fails at once
        assert f"held by pid {os.getpid()} (drkit" in caught.value.message
        assert "since 20" in caught.value.message and "--wait SECONDS" in caught.value.message
        with (
            pytest.raises(errors.Busy, match=r"waited 0\.3 s"),
            context.node_lock(loaded, wait=0.3),
        ):
            pass
    finally:
        release.set()
        thread.join()
    with context.node_lock(loaded, wait=0):  # free again, and its holder file gone with it
        assert len(list((tmp_path / "locks").glob("*.holder"))) == 1
    assert list((tmp_path / "locks").glob("*.holder")) == []
