"""ProFTPD (SFTP + FTPS) and vsftpd (FTPS) nodes through the CLI: init, backup, destroy, restore
with a real login over every protocol the server speaks; and what the checks catch.

Real SeaweedFS, restic, proftpd and vsftpd on 127.0.0.1: nothing here is mocked.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from corpus.cases import load_cases, materialise
from nodes import VSFTPD_USER, drkit, init_node

from devtools import sample_nodes
from devtools.sample_node import _Node, _tls
from drkit.engines import accounts, manifest
from drkit.model import Manifest
from drkit.paths import on_root
from drkit.profiles import proftpd, vsftpd

pytestmark = pytest.mark.integration


@pytest.fixture
def work(work_dir: Path) -> Path:
    """conftest's work_dir, beside node_root."""
    return work_dir


def _pam_services_of(work: Path) -> list[Path]:
    """Return the smoke PAM services in /etc/pam.d that belong to this test's node (their
    pwdfile lives under its work directory): other workers' smokes may hold their own."""
    mine = []
    for path in Path("/etc/pam.d").glob("drkit-smoke-*"):
        try:
            if str(work) in path.read_text(errors="replace"):
                mine.append(path)
        except FileNotFoundError:  # another worker's smoke just removed its own
            continue
    return mine


def statuses(document: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in document["checks"]}


def test_proftpd_backup_destroy_restore_sftp_and_ftps_login(node_root, s3_repository, work):
    root = node_root / "root"
    made = sample_nodes.proftpd(root, smoke_user="pdrill")
    config, _ = init_node(root, s3_repository, work, "proftpd", "pdrill", "ftp-1")
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0 and backup["warnings"] == [], backup
    code, shown = drkit("show", "latest", "--config", str(config))
    assert {"config", "host_keys", "user_keys", "accounts", "tls", "audit_logs", "chroot"} <= set(
        shown["categories"]
    ), shown["categories"]
    assert sorted(k["path"] for k in shown["host_keys"]) == sorted(made["host_keys"])

    shutil.rmtree(root)
    code, restored = drkit("restore", "latest", "--smoke", "--config", str(config))
    assert code == 0, restored
    assert statuses(restored).get("config: proftpd -t") == "pass", restored["checks"]
    (proof,) = restored["smoke"]  # one proftpd serving both protocols, each proven
    assert sorted(proof["protocols"]) == ["ftps", "sftp"], proof
    assert proof["login_ok"] and proof["round_trip_ok"], restored["checks"]
    assert {key["type"] for key in proof["host_keys"]} >= {"ssh-ed25519", "ssh-rsa"}
    assert proof["certificates"], "the FTPS certificate as served"
    # The restored node answers the real password too: the smoke's sandbox did not change it.
    users = proftpd.virtual_users(root, proftpd.read_config(root))
    assert "pdrill" in users


def test_proftpd_drill_sftp_and_ftps_node_built_like_the_corpus(node_root, s3_repository, work):
    """`drkit drill` on a ProFTPD node serving SFTP and FTPS: the drill passes, its RTO is
    measured from the logins, and every host key type is served as backed up."""
    from corpus.cases import load_case, materialise

    case = load_case(Path(__file__).parent / "corpus" / "proftpd-debian-sftp-tls")
    root = node_root / "root"
    materialise(case, root, client_dir=node_root / "clients")
    config, _ = init_node(root, s3_repository, work, "proftpd", case.smoke_user, "ftp-drill")
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0, backup
    code, drilled = drkit("drill", "--snapshot", "latest", "--config", str(config))
    assert code == 0 and drilled["ok"], drilled.get("problems") or drilled
    # a measured RTO is the typed proof: every protocol logged in and moved a file
    assert drilled["rto_seconds"] is not None and 0 < drilled["rto_seconds"] < 120
    assert len(drilled["host_keys"]) == 3, drilled["host_keys"]
    assert all(key["ok"] and key["served"] == key["fingerprint"] for key in drilled["host_keys"])
    print(f"proftpd drill: RTO {drilled['rto_seconds']} s")


def _node_manifest(root: Path, profile) -> Manifest:
    found = profile.inventory(root, None, profile.settings({}))
    return manifest.build(
        root,
        found,
        node="n",
        profiles=[profile.NAME],
        accounts=accounts.read_entries(root, found.users),
        created=datetime.now(UTC),
    )


def test_proftpd_checks_catch_mismatched_tls_key_and_readable_host_key(node_root):
    root = node_root / "root"
    made = sample_nodes.proftpd(root, smoke_user="pdrill")
    recorded = _node_manifest(root, proftpd)
    # A new key beside the old certificate: proftpd -t passes, every TLS session would die.
    other = node_root / "other"
    other_key, _ = _tls(_Node(other))
    shutil.copy(on_root(other, other_key), on_root(root, made["tls"]["key"]))
    on_root(root, made["host_keys"][0]).chmod(0o644)
    found = {check.name: check for check in proftpd.checks(root, recorded)}
    assert found[f"tls pair: {made['tls']['certificate']}"].status == "fail"
    assert "does not match" in found[f"tls pair: {made['tls']['certificate']}"].detail
    assert found[f"host key mode: {made['host_keys'][0]}"].status == "fail"
    assert found["config: proftpd -t"].status == "fail"  # proftpd refuses a readable host key


def test_proftpd_checks_catch_one_line_authorized_key(node_root):
    root = node_root / "root"
    sample_nodes.proftpd(root, smoke_user="pdrill")
    recorded = _node_manifest(root, proftpd)
    keys_file = on_root(root, "/etc/proftpd/authorized_keys/pdrill")
    keys_file.write_text(
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBm0pnd1S6jycD5nhcM8z0vGNLZ7i8nwvjVSlr6Tj0Tg x\n"
    )
    found = {check.name: check for check in proftpd.checks(root, recorded)}
    assert found["user keys: /etc/proftpd/authorized_keys/pdrill"].status == "fail"


def test_vsftpd_backup_destroy_restore_ftps_login(node_root, s3_repository, work):
    root = node_root / "root"
    sample_nodes.vsftpd(root, smoke_user=VSFTPD_USER)
    config, _ = init_node(root, s3_repository, work, "vsftpd", VSFTPD_USER, "ftps-1")
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0 and backup["warnings"] == [], backup
    code, shown = drkit("show", "latest", "--config", str(config))
    assert {"config", "accounts", "tls", "audit_logs", "chroot"} <= set(shown["categories"])

    shutil.rmtree(root)
    code, restored = drkit("restore", "latest", "--smoke", "--config", str(config))
    assert code == 0, restored
    assert statuses(restored).get("config: vsftpd starts") == "pass", restored["checks"]
    (proof,) = restored["smoke"]
    assert proof["protocols"] == ["ftps"] and proof["login_ok"] and proof["round_trip_ok"], proof
    assert proof["certificates"], "the certificate as vsftpd served it"
    assert not _pam_services_of(work), "the smoke's PAM service is left"
    with pytest.raises(KeyError):
        import pwd

        pwd.getpwnam(VSFTPD_USER)


def test_vsftpd_drill_on_a_corpus_ftps_node_passes_and_measures_rto(node_root, s3_repository, work):
    """The drill on a node built like the corpus (delfer/docker-alpine-ftp-server: FTPS, a
    local user, non-default config path): restored in the sandbox, vsftpd started from it, a
    pinned FTPS login and round trip; RTO measured from the typed smoke result."""
    case = next(c for c in load_cases() if c.name == "vsftpd-alpine-ftp-server")
    root = node_root / "root"
    materialise(case, root)
    config, _ = init_node(root, s3_repository, work, "vsftpd", case.smoke_user, "ftps-drill")
    document = yaml.safe_load(config.read_text())
    document["profile_options"] = case.profile_options
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0, backup
    code, drilled = drkit("drill", "--snapshot", "latest", "--config", str(config))
    assert code == 0 and drilled["ok"], drilled["checks"]
    assert statuses(drilled).get("config: vsftpd starts") == "pass", drilled["checks"]
    assert isinstance(drilled["rto_seconds"], float | int) and 0 < drilled["rto_seconds"] < 120
    assert not _pam_services_of(work)
    print(f"vsftpd FTPS drill: RTO {drilled['rto_seconds']:.2f} s")


def test_vsftpd_checks_catch_missing_key_and_pam_store(node_root):
    root = node_root / "root"
    made = sample_nodes.vsftpd(root, smoke_user=VSFTPD_USER)
    recorded = _node_manifest(root, vsftpd)
    on_root(root, made["tls"]["key"]).unlink()
    on_root(root, "/etc/vsftpd/ftpd.passwd").unlink()
    found = {check.name: check for check in vsftpd.checks(root, recorded)}
    assert found["config: vsftpd starts"].status == "fail"
    assert "RSA private key" in found["config: vsftpd starts"].detail
    assert found[f"vsftpd: missing {made['tls']['key']}"].status == "fail"
    assert found["vsftpd: missing /etc/vsftpd/ftpd.passwd"].status == "fail"


def test_discover_finds_openssh_and_proftpd_and_init_auto_takes_both(
    node_root, s3_repository, work
):
    from devtools import sample_node

    root = node_root / "root"
    sample_node.build(root, smoke_user="drill", chroot=False)
    sample_nodes.proftpd(root, smoke_user="pdrill")
    code, found = drkit("discover", "--root", str(root))
    assert code == 0, found
    servers = {server["server"]: server for server in found["servers"]}
    assert set(servers) == {"openssh", "proftpd"}
    assert "/etc/ssh/sshd_config" in servers["openssh"]["categories"]["config"]
    assert "/etc/proftpd/ssh_host_rsa_key" in servers["proftpd"]["categories"]["host_keys"]
    assert "servers:\n- openssh\n- proftpd" in found["proposed_config"]
    config, _ = init_node(root, s3_repository, work, "auto", "drill", "mixed-1")
    import yaml

    assert yaml.safe_load(config.read_text())["servers"] == ["openssh", "proftpd"]
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0, backup
    code, listed = drkit("snapshots", "--config", str(config))
    assert code == 0 and len(listed["snapshots"]) == 1
