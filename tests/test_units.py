"""Fast unit tests: config validation, signing, manifest, apply/rollback, CLI error shapes."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nodes import MINIMAL_CONFIG
from typer.testing import CliRunner

from drkit import errors, runner
from drkit.cli import app
from drkit.config import parse_config
from drkit.engines import apply, keys, manifest, resticbin, staged
from drkit.engines import restic as restic_engine
from drkit.engines.resticjson import SnapshotRecord
from drkit.model import Entry, Inventory, Manifest


def test_config_defaults_and_repository_url():
    config = parse_config(MINIMAL_CONFIG, "drkit.yaml")
    assert config.repository.restic_url == "s3:http://127.0.0.1:8333/dr-backups/sftp-1"
    assert config.objectives.rpo == "15m" and config.root == Path("/")
    assert (config.objectives.rpo_seconds, config.objectives.rto_seconds) == (900, 600)


def test_profile_options_are_validated_at_load_kept_and_written_as_given():
    text = MINIMAL_CONFIG + "profile_options: {openssh: {config: /srv/sshd_config}}\n"
    config = parse_config(text, "drkit.yaml")
    options = config.options_of("openssh")
    assert options is config.options_of("openssh")  # validated once, kept
    assert options.config == "/srv/sshd_config"
    assert config.profile_options == {"openssh": {"config": "/srv/sshd_config"}}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("node: [", "is not valid YAML"),
        ("- a list", "expected a mapping"),
        (MINIMAL_CONFIG + "colour: blue\n", "colour: unknown setting"),
        (MINIMAL_CONFIG.replace("http://127.0.0.1:8333", "ftp://x"), "repository.s3_endpoint"),
        (MINIMAL_CONFIG.replace("bucket: dr-backups", "bucket: x"), "repository.bucket"),
        (MINIMAL_CONFIG.replace("node: sftp-1", "node: 'bad name'"), "node"),
        (MINIMAL_CONFIG + "objectives: {rpo: soon}\n", "objectives.rpo"),
        (MINIMAL_CONFIG + "schedule: {backup: '61 * * * *'}\n", "schedule.backup"),
        (MINIMAL_CONFIG + "includes: {secrets: [/x]}\n", "unknown category"),
        (MINIMAL_CONFIG + "trusted_keys: [abc]\n", "trusted_keys"),
        (MINIMAL_CONFIG.replace("servers: [openssh]", "servers: [iis]"), "servers.0"),
        (MINIMAL_CONFIG.replace("  prefix: sftp-1\n", ""), "repository.prefix"),
        (
            MINIMAL_CONFIG + "profile_options: {iis: {config: /x}}\n",
            "profile_options.iis: unknown profile",
        ),
        (
            MINIMAL_CONFIG + "profile_options: {openssh: {colour: blue}}\n",
            "openssh.colour: unknown",
        ),
    ],
)
def test_config_errors_name_file_and_field(text, expected):
    with pytest.raises(errors.ConfigError) as caught:
        parse_config(text, "/etc/drkit/drkit.yaml")
    assert caught.value.message.startswith("/etc/drkit/drkit.yaml:")
    assert expected in caught.value.message


def test_signing_fingerprint_matches_ssh_keygen_and_detects_tampering(tmp_path: Path):
    fingerprint = keys.generate_signing_key(tmp_path / "signing.key")
    assert (tmp_path / "signing.key").stat().st_mode & 0o777 == 0o600
    key = keys.load_signing_key(tmp_path / "signing.key")
    document = keys.sign(key, b"manifest bytes")
    assert document["signer"] == fingerprint
    assert keys.verify_signature(document, b"manifest bytes") == fingerprint
    (tmp_path / "signing.pub").write_text(document["public_key"] + "\n")
    from drkit import runner

    listed = runner.run(["ssh-keygen", "-l", "-f", str(tmp_path / "signing.pub")])
    assert listed.stdout.split()[1] == fingerprint
    with pytest.raises(errors.Refused):
        keys.verify_signature(document, b"manifest bytes!")
    assert keys.generate_signing_key(tmp_path / "signing.key") == fingerprint


def _tree(root: Path) -> Inventory:
    (root / "etc/app").mkdir(parents=True)
    (root / "etc/app/server.ini").write_text("[server]\nname = one\n")
    (root / "etc/app/tls.key").write_text("secret\n")
    (root / "etc/app/tls.key").chmod(0o600)
    (root / "etc/app/link").symlink_to("server.ini")
    files = [Entry("/etc/app/server.ini", "config"), Entry("/etc/app/tls.key", "tls")]
    return Inventory(files=files, dirs=[Entry("/etc/app", "config")])


def _build(root: Path, inventory: Inventory) -> Manifest:
    return manifest.build(
        root, inventory, node="n", profiles=["openssh"], accounts=[], created=datetime.now(UTC)
    )


def test_manifest_records_files_and_detects_differences(tmp_path: Path):
    inventory = _tree(tmp_path)
    built = _build(tmp_path, inventory)
    by_path = {entry.path: entry for entry in built.files}
    assert by_path["/etc/app/tls.key"].mode == "0600"
    link = by_path["/etc/app/link"]
    assert (link.type, link.link) == ("symlink", "server.ini")
    assert manifest.leaf_paths(built) == ["etc/app/link", "etc/app/server.ini", "etc/app/tls.key"]
    entry = by_path["/etc/app/server.ini"]
    assert manifest.compare_entry(tmp_path / "etc/app/server.ini", entry) is None
    (tmp_path / "etc/app/server.ini").write_text("[server]\nname = two\n")
    assert "sha256" in manifest.compare_entry(tmp_path / "etc/app/server.ini", entry)
    os.chmod(tmp_path / "etc/app/server.ini", 0o666)
    (tmp_path / "etc/app/server.ini").write_text("[server]\nname = one\n")
    assert "mode" in manifest.compare_entry(tmp_path / "etc/app/server.ini", entry)


def test_staged_verifier_hashes_early_and_still_catches_a_file_changed_afterwards(tmp_path: Path):
    inventory = _tree(tmp_path)
    built = _build(tmp_path, inventory)
    with staged.StagedVerifier(tmp_path, built) as verifier:
        verifier.restored("/etc/app/server.ini")
        verifier.restored("/etc/app/link")  # not a file: checked only at the end
        assert verifier.problems() == []
    assert set(verifier.hashed) == {"/etc/app/server.ini"}

    with staged.StagedVerifier(tmp_path, built) as verifier:
        verifier.restored("/etc/app/server.ini")
        verifier.restored("/etc/app/tls.key")
        verifier._stop()  # both hashed; now the key is replaced by a same-sized impostor
        key = tmp_path / "etc/app/tls.key"
        impostor = key.with_name("impostor")
        impostor.write_bytes(bytes(len(key.read_bytes())))
        impostor.chmod(0o600)
        os.replace(impostor, key)
        assert verifier.problems() == ["/etc/app/tls.key: content differs (sha256)"]


def test_apply_rolls_back_everything_on_failure(tmp_path: Path):
    staging, target = tmp_path / "staging", tmp_path / "target"
    built = _build(staging, _tree(staging))
    (target / "etc/app").mkdir(parents=True)
    (target / "etc/app/server.ini").write_text("old\n")
    before = (target / "etc/app/server.ini").read_text()
    steps = apply.plan(target, built)
    assert {s.path: s.action for s in steps}["/etc/app/server.ini"] == "change"
    entries = {entry.path: entry for entry in built.files}
    (staging / "etc/app/tls.key").unlink()  # the copy of the last file fails
    applier = apply.Applier(target, staging, tmp_path / "kept")
    with pytest.raises(errors.LocalFilesystemError):
        applier.apply([s for s in steps if s.action != "unchanged"], entries)
    assert (target / "etc/app/server.ini").read_text() == before
    assert sorted(p.name for p in (target / "etc/app").iterdir()) == ["server.ini"]


def test_apply_replaces_and_keeps_modes(tmp_path: Path):
    staging, target = tmp_path / "staging", tmp_path / "target"
    built = _build(staging, _tree(staging))
    entries = {entry.path: entry for entry in built.files}
    steps = apply.plan(target, built)
    assert {s.action for s in steps} == {"add"}
    apply.Applier(target, staging, tmp_path / "kept").apply(steps, entries)
    assert (target / "etc/app/tls.key").stat().st_mode & 0o777 == 0o600
    assert os.readlink(target / "etc/app/link") == "server.ini"
    assert all(step.action == "unchanged" for step in apply.plan(target, built))


def test_apply_lock_excludes_a_second_apply_on_one_target_and_leaves_no_directory(
    tmp_path: Path,
):
    import subprocess
    import sys

    target = tmp_path / "target"
    target.mkdir()
    with apply.target_lock(target, timeout=0) as staging_parent:
        assert staging_parent == target / "var/lib/drkit/staging" and staging_parent.is_dir()
        started = time.monotonic()
        with (
            pytest.raises(errors.Busy, match=f"applying to {target}") as busy,
            apply.target_lock(target, timeout=0.5),
        ):
            pass
        assert busy.value.exit_code == 7 and time.monotonic() - started >= 0.5
        holder = (
            "import sys; from pathlib import Path; from drkit.engines import apply\n"
            "try:\n    with apply.target_lock(Path(sys.argv[1]), timeout=0): pass\n"
            "except Exception as exc: print(type(exc).__name__)"
        )
        other = subprocess.run(
            [sys.executable, "-c", holder, str(target)], capture_output=True, text=True, check=True
        )
        assert other.stdout.strip() == "Busy"  # another process is excluded as well
        staging_parent.rmdir()  # as restore does on failure, with the lock held
    assert list(target.iterdir()) == []  # what the lock made is gone: the target is as it was
    with apply.target_lock(target, timeout=0) as again:  # released: the next apply gets it
        again.rmdir()
    assert list(target.iterdir()) == []


def test_named_restic_that_is_missing_or_old_is_refused(tmp_path: Path, monkeypatch):
    with pytest.raises(errors.ResticMissing, match="not found"):
        restic_engine.find_restic(tmp_path / "restic")
    old = tmp_path / "old-restic"
    old.write_text("#!/bin/sh\necho 'restic 0.14.0 compiled with go1.19 on linux/amd64'\n")
    old.chmod(0o755)
    monkeypatch.setenv("DRKIT_RESTIC", str(old))
    with pytest.raises(errors.ResticMissing, match=r"too old.*bootstrap"):
        restic_engine.find_restic(None)
    monkeypatch.delenv("DRKIT_RESTIC")
    found = restic_engine.find_restic(None)
    assert found.name == "restic"


def test_restic_version_is_asked_once_per_installed_binary(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    real = restic_engine.find_restic(None)
    calls = tmp_path / "calls.log"
    wrapper = tmp_path / "restic"
    wrapper.write_text(f'#!/bin/sh\necho "$1" >> {calls}\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    for _ in range(3):
        assert restic_engine.find_restic(wrapper) == wrapper
    assert calls.read_text().split() == ["version"]
    wrapper.write_text(wrapper.read_text() + "# upgraded\n")  # another size: asked again
    restic_engine.find_restic(wrapper)
    assert calls.read_text().split() == ["version", "version"]
    cached = json.loads(resticbin.version_cache_path().read_text())
    mine = [version for key, version in cached.items() if key.startswith(f"{wrapper}:")]
    assert len(mine) == 1  # the replaced binary's entry is dropped
    assert tuple(mine[0]) >= resticbin.MINIMUM_VERSION


def test_cli_errors_are_one_json_document_or_one_line(tmp_path: Path):
    runner = CliRunner()
    missing = str(tmp_path / "none.yaml")
    result = runner.invoke(app, ["backup", "--config", missing, "--json"])
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["error"]["kind"] == "config"
    result = runner.invoke(app, ["backup", "--config", missing])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    result = runner.invoke(app, ["restore", "--trust-key", "nope", "--config", missing, "--json"])
    assert result.exit_code == 2


def test_hash_cache_reuses_unchanged_files_and_sees_moving_ones(tmp_path: Path):
    inventory = _tree(tmp_path)
    cache_file = tmp_path / "cache.json"
    first = manifest.HashCache(cache_file)
    built = manifest.build(
        tmp_path, inventory, node="n", profiles=[], accounts=[], created=datetime.now(UTC),
        cache=first,
    )  # fmt: skip
    first.save()
    assert first.changed_since(tmp_path) == []
    with open(tmp_path / "etc/app/server.ini", "a") as handle:
        handle.write("appended while restic read it\n")
    assert first.changed_since(tmp_path) == ["/etc/app/server.ini"]
    again = manifest.HashCache(cache_file)
    rebuilt = manifest.build(
        tmp_path, inventory, node="n", profiles=[], accounts=[], created=datetime.now(UTC),
        cache=again,
    )  # fmt: skip
    digests = {e.path: e.sha256 for e in rebuilt.files}
    old = {e.path: e.sha256 for e in built.files}
    assert digests["/etc/app/tls.key"] == old["/etc/app/tls.key"]
    assert digests["/etc/app/server.ini"] != old["/etc/app/server.ini"]


def test_run_lines_stops_a_command_when_its_watch_gives_a_reason(monkeypatch):
    monkeypatch.setattr(runner, "STOP_CHECK_SECONDS", 0.05)
    checks = []

    def outage() -> str | None:
        checks.append(1)
        return "S3 down" if len(checks) >= 2 else None

    started = time.monotonic()
    with pytest.raises(runner.Stopped, match="S3 down"):
        runner.run_lines(["sleep", "30"], lambda line: None, stop_when=outage)
    assert time.monotonic() - started < 15 and len(checks) == 2

    lines = []  # a watch that never objects changes nothing
    done = runner.run_lines(["echo", "hi"], lines.append, stop_when=lambda: None)
    assert done.returncode == 0 and lines == ["hi"]


@pytest.mark.parametrize("verb", ["recover", "reveal"])
def test_keys_with_a_missing_share_file_is_one_line_exit_2(tmp_path: Path, verb: str):
    missing = tmp_path / "holder-1.age"
    extra = ["--out", str(tmp_path / "pass")] if verb == "recover" else []
    args = ["keys", verb, "--share", str(missing), "--identity", str(tmp_path / "id"), *extra]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 2, result.stdout
    error = json.loads(result.stdout)["error"]
    assert error["message"] == f"{missing}: cannot read (No such file or directory)"


def test_discover_of_a_missing_root_and_a_holder_file_that_cannot_be_made_are_exit_2_and_9(
    tmp_path: Path,
):
    result = CliRunner().invoke(app, ["discover", "--root", str(tmp_path / "gone"), "--json"])
    assert result.exit_code == 2, result.stdout
    assert json.loads(result.stdout)["error"]["message"].endswith("gone: not a directory")
    blocked = tmp_path / "file"
    blocked.write_text("not a directory\n")
    identity = blocked / "holder.key"
    result = CliRunner().invoke(app, ["keys", "holder", "--identity", str(identity), "--json"])
    assert result.exit_code == 9, result.stdout
    assert json.loads(result.stdout)["error"]["message"].startswith(str(identity))


def test_a_snapshot_time_restic_printed_unreadably_is_restics_failure_not_a_drkit_bug():
    from drkit import errors

    with pytest.raises(errors.ResticFailed, match="cannot read"):
        record = SnapshotRecord(id="ab" * 32, time="yesterday")
        restic_engine.Snapshot.from_record(record)


def test_an_included_tls_certificate_is_paired_by_name_when_its_key_no_longer_matches(tmp_path):
    from devtools.sample_node import certificate_and_key
    from drkit.profiles.common import keychecks

    certificate, _ = certificate_and_key("partner.example.net")
    _, unrelated = certificate_and_key("other.example.net")
    (tmp_path / "etc/ssl").mkdir(parents=True)
    (tmp_path / "etc/ssl/partner.crt").write_bytes(certificate)
    (tmp_path / "etc/ssl/partner.key").write_bytes(unrelated)
    (tmp_path / "etc/ssl/partner.key").chmod(0o600)
    found = Inventory(files=[Entry(f"/etc/ssl/partner.{ext}", "tls") for ext in ("crt", "key")])
    built = manifest.build(
        tmp_path, found, node="n", profiles=["openssh"], accounts=[], created=datetime.now(UTC)
    )
    (entry,) = built.certificates
    assert entry.key_path == "/etc/ssl/partner.key"
    check = keychecks.certificate_check(tmp_path, entry, key_path=entry.key_path)
    assert check.status == "fail" and "does not match its key /etc/ssl/partner.key" in check.detail
