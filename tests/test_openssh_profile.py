"""The OpenSSH profile: parsing sshd_config, static checks, and a smoke run of the real sshd."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from corpus.cases import CORPUS, Case, load_case, materialise
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nodes import SMOKE_USER

from devtools import sample_node
from drkit import errors, runner
from drkit.engines import accounts, clients, keys
from drkit.model import HostKeyRecord, Manifest, SmokeResult
from drkit.profiles import openssh
from drkit.profiles.common import configtext
from tests.manifests import partial

WORK_PARENT = Path("/var/lib/drkit-tests")

PASSWD = """root:x:0:0:root:/root:/bin/bash
alice:x:3001:3001::/home/alice:/usr/sbin/nologin
bob:x:3002:3002::/home/bob:/usr/sbin/nologin
carol:x:3003:3003::/home/carol:/usr/sbin/nologin
dave:x:3004:3004::/home/dave:/usr/sbin/nologin
erin:x:3005:3005::/home/erin:/usr/sbin/nologin
frank:x:3006:3006::/nonexistent:/usr/sbin/nologin
"""
GROUP = "root:x:0:\nadmins:x:3100:erin\nsftp:x:3200:bob\n"

MAIN = """# a hand-written config
Include sshd_config.d/*.conf
Include /etc/ssh/extra.conf
HOSTKEY /etc/ssh/ssh_host_ed25519_key
HostKey=/etc/ssh/ssh_host_gone_key
AuthorizedKeysFile /etc/ssh/keys/%u .ssh/authorized_keys
AuthorizedKeysFile /etc/ssh/ignored/%u
Banner "/etc/issue.net"
Subsystem sftp /usr/lib/openssh/sftp-server -l INFO
UsePAM yes
AllowGroups sftp admins
Match Group admins
    AuthorizedKeysFile /etc/ssh/admin_keys/%%/%u
Match User alice,!bob
    ChrootDirectory /srv/%u
    ForceCommand /usr/local/bin/wrap --flag
"""
DROPIN = """AllowUsers carol@10.0.0.0/8
Match User dave
    AuthorizedPrincipalsFile /etc/ssh/principals/%u
"""


def put(root: Path, node_path: str, text: str = "x\n", mode: int = 0o644, uid: int = 0) -> Path:
    host = root / node_path.lstrip("/")
    host.parent.mkdir(parents=True, exist_ok=True)
    host.write_text(text)
    os.chown(host, uid, uid)
    host.chmod(mode)
    return host


@pytest.fixture
def hand_node(node_root: Path) -> Path:
    """A node with a hand-written config exercising Include, Match and tokens (no real keys)."""
    put(node_root, "/etc/passwd", PASSWD)
    put(node_root, "/etc/group", GROUP)
    put(node_root, "/etc/ssh/sshd_config", MAIN)
    put(node_root, "/etc/ssh/sshd_config.d/50-site.conf", DROPIN)
    put(node_root, "/etc/ssh/ssh_host_ed25519_key", "key\n", 0o600)
    put(node_root, "/etc/ssh/ssh_host_ed25519_key.pub", "pub\n")
    put(node_root, "/etc/ssh/keys/carol")
    put(node_root, "/etc/ssh/keys/bob")
    put(node_root, "/etc/ssh/ignored/carol")
    put(node_root, "/etc/ssh/admin_keys/%/erin")
    put(node_root, "/etc/ssh/principals/dave")
    put(node_root, "/home/alice/.ssh/authorized_keys", uid=3001)
    put(node_root, "/home/dave/.ssh/authorized_keys", uid=3004)
    put(node_root, "/etc/issue.net", "hello\n")
    put(node_root, "/etc/pam.d/sshd", "@include common-auth\n")
    put(node_root, "/usr/lib/openssh/sftp-server", "#!/bin/sh\n", 0o755)
    put(node_root, "/usr/local/bin/wrap", "#!/bin/sh\n", 0o755)
    put(node_root, "/srv/alice/upload/a.txt")
    return node_root


def paths(found, category: str) -> set[str]:
    return {entry.path for entry in found.files if entry.category == category}


# --- parsing ------------------------------------------------------------------------------------


def test_split_args_handles_quotes_escapes_and_comments():
    assert configtext.split_args('"/a b/c" d\\"e # comment') == ["/a b/c", 'd"e']
    assert configtext.split_args("'x y' z") == ["x y", "z"]
    assert openssh.parse_line("Port=2222") == ("Port", "port", ["2222"])
    assert openssh.parse_line("  # only a comment") is None


def test_include_match_and_tokens(hand_node: Path):
    found = openssh.inventory(hand_node, None)
    assert paths(found, "config") == {
        "/etc/ssh/sshd_config",
        "/etc/ssh/sshd_config.d/50-site.conf",
        "/etc/issue.net",
        "/etc/pam.d/sshd",
    }
    assert paths(found, "host_keys") == {
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/ssh/ssh_host_ed25519_key.pub",
    }
    assert paths(found, "user_keys") == {
        "/etc/ssh/keys/bob",
        "/etc/ssh/keys/carol",
        "/etc/ssh/admin_keys/%/erin",
        "/etc/ssh/principals/dave",
        "/home/alice/.ssh/authorized_keys",
        "/home/dave/.ssh/authorized_keys",
    }
    # The packaged sftp-server is checked but not carried: the distribution restores it.
    assert paths(found, "scripts") == {"/usr/local/bin/wrap"}
    # The chroot tree, the Include glob's directory, and the homes of the named users that
    # have one (carol's and bob's are absent, erin's /home/erin too).
    assert [entry.path for entry in found.dirs] == [
        "/srv/alice",
        "/etc/ssh/sshd_config.d",
        "/home/dave",
        "/home/alice",
    ]
    assert paths(found, "chroot") == {"/srv/alice/upload/a.txt"}
    assert found.users == ["carol", "dave", "bob", "erin", "alice"]  # in the order sshd reads
    assert "/etc/ssh/sshd_config.d/*.conf" in found.owned_globs


def test_first_value_wins_and_match_in_include_does_not_leak(hand_node: Path):
    config = openssh.read_config(hand_node)
    assert config.first("authorizedkeysfile").args == ("/etc/ssh/keys/%u", ".ssh/authorized_keys")
    assert "/etc/ssh/ignored/carol" not in paths(openssh.inventory(hand_node, None), "user_keys")
    banner = config.first("banner")
    assert banner is not None and banner.match is None and banner.source == "/etc/ssh/sshd_config"
    principals = next(ln for ln in config.lines if ln.keyword == "authorizedprincipalsfile")
    assert principals.match == ("User", "dave")


def test_missing_named_files_are_warnings(hand_node: Path):
    found = openssh.inventory(hand_node, "ghost")
    text = "\n".join(found.warnings)
    assert "Include /etc/ssh/extra.conf (/etc/ssh/sshd_config line 3) is missing" in text
    assert "HostKey /etc/ssh/ssh_host_gone_key (/etc/ssh/sshd_config line 5) is missing" in text
    assert "user ghost is named by the config but not in the node's accounts" in text
    assert "/etc/ssh/ssh_host_gone_key" not in paths(found, "host_keys")


def test_unknown_keyword_still_inventories(hand_node: Path):
    put(hand_node, "/etc/ssh/sshd_config", "NoSuchKeyword yes\n" + MAIN)
    found = openssh.inventory(hand_node, None)
    assert "/etc/ssh/ssh_host_ed25519_key" in paths(found, "host_keys")
    assert "/etc/ssh/sshd_config.d/50-site.conf" in paths(found, "config")


def test_default_host_keys_and_authorized_keys(node_root: Path):
    put(node_root, "/etc/passwd", PASSWD)
    put(node_root, "/etc/ssh/sshd_config", "Subsystem sftp internal-sftp\n")
    put(node_root, "/etc/ssh/ssh_host_rsa_key", "k\n", 0o600)
    put(node_root, "/home/erin/.ssh/authorized_keys", uid=3005)
    found = openssh.inventory(node_root, None)
    assert paths(found, "host_keys") == {"/etc/ssh/ssh_host_rsa_key"}
    assert paths(found, "user_keys") == {"/home/erin/.ssh/authorized_keys"}
    assert found.users == ["erin"]
    assert found.warnings == []


def test_copy_maps_node_paths_onto_a_prefix_root(hand_node: Path, tmp_path: Path):
    config = openssh.read_config(hand_node)
    copy, names = openssh.write_copy(hand_node, config, tmp_path)
    text = copy.read_text()
    dropin = tmp_path / "etc/ssh/sshd_config.d/50-site.conf"
    assert f"Include {dropin}\n" in text
    assert "# Include /etc/ssh/extra.conf" in text
    assert f"HOSTKEY {hand_node}/etc/ssh/ssh_host_ed25519_key\n" in text
    assert f"AuthorizedKeysFile {hand_node}/etc/ssh/keys/%u .ssh/authorized_keys\n" in text
    assert f"ChrootDirectory {hand_node}/srv/%u\n" in text
    assert f"ForceCommand {hand_node}/usr/local/bin/wrap --flag\n" in text
    assert names[str(copy)] == ("/etc/ssh/sshd_config", 0)


def test_missing_sshd_config_is_a_warning(node_root: Path):
    found = openssh.inventory(node_root, "drill")
    assert found.files == [] and "/etc/ssh/sshd_config: cannot read" in found.warnings[0]
    assert openssh.checks(node_root, partial())[0].status == "fail"


def test_smoke_refuses_a_work_dir_sshd_would_reject(tmp_path: Path):
    smoked = openssh.smoke(tmp_path, partial(), "drill", tmp_path / "work")
    (result,) = smoked.checks
    assert smoked.judged and not smoked.proven and not smoked.protocols
    assert result.status == "fail" and "/tmp is group/world-writable" in result.detail


# --- a real sample node -------------------------------------------------------------------------


def host_key_manifest(root: Path, info: dict) -> Manifest:
    """Return a manifest as the lead's builder makes it, for the sample node's keys."""
    host_keys = []
    for path in info["host_keys"]:
        key = keys.describe_key((root / path.lstrip("/")).read_bytes())
        host_keys.append(
            {
                "path": path,
                "type": key.type,
                "fingerprint": key.fingerprint,
                "public_line": key.public_line,
            }
        )
    cert_path, key_path = info["tls"]["certificate"], info["tls"]["key"]
    cert = keys.describe_certificate((root / cert_path.lstrip("/")).read_bytes())
    return partial(
        host_keys=host_keys,
        certificates=[{"path": cert_path, **cert.as_dict(), "key_path": key_path}],
        accounts=accounts.read_entries(root, info["users"]),
    )


@pytest.fixture
def sample(node_root: Path) -> tuple[Path, dict, Manifest]:
    info = sample_node.build(node_root, smoke_user=SMOKE_USER)
    return node_root, info, host_key_manifest(node_root, info)


@pytest.fixture
def work_dir():
    path = WORK_PARENT / f"work-{uuid.uuid4().hex[:10]}"
    path.mkdir(mode=0o755, parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def by_name(results) -> dict:
    return {check.name: check for check in results}


def failing(results) -> dict:
    return {check.name: check.detail for check in results if check.status != "pass"}


def regenerate(root: Path, node_path: str, key_type: str = "ed25519") -> None:
    host = root / node_path.lstrip("/")
    host.unlink()
    Path(f"{host}.pub").unlink()
    runner.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(host)])


@pytest.mark.integration
def test_sample_node_passes_every_check(sample):
    root, _, manifest = sample
    results = openssh.checks(root, manifest)
    assert failing(results) == {}
    names = by_name(results)
    assert "config: sshd -t" in names and f"chroot: /srv/sftp/{SMOKE_USER}" in names
    assert "certificate: /etc/ssl/certs/sftp.example.com.pem" in names


@pytest.mark.integration
def test_loose_host_key_fails(sample):
    root, _, manifest = sample
    (root / "etc/ssh/ssh_host_rsa_key").chmod(0o644)
    bad = failing(openssh.checks(root, manifest))
    assert "Unable to load host key" in bad["config: sshd -t"]
    assert '"/etc/ssh/ssh_host_rsa_key"' in bad["config: sshd -t"]
    assert "mode 0644" in bad["host key mode: /etc/ssh/ssh_host_rsa_key"]


@pytest.mark.integration
def test_replaced_pub_fails(sample, tmp_path: Path):
    root, _, manifest = sample
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")])
    shutil.copy(tmp_path / "other.pub", root / "etc/ssh/ssh_host_ed25519_key.pub")
    bad = failing(openssh.checks(root, manifest))
    assert "does not match" in bad["host key pair: /etc/ssh/ssh_host_ed25519_key"]
    assert set(bad) <= {"host key pair: /etc/ssh/ssh_host_ed25519_key", "config: sshd -t"}


@pytest.mark.integration
def test_replaced_host_key_differs_from_manifest(sample):
    root, _, manifest = sample
    regenerate(root, "/etc/ssh/ssh_host_ecdsa_key", "ecdsa")
    bad = failing(openssh.checks(root, manifest))
    assert list(bad) == ["host key: /etc/ssh/ssh_host_ecdsa_key"]
    assert "the backup had SHA256:" in bad["host key: /etc/ssh/ssh_host_ecdsa_key"]


@pytest.mark.integration
def test_missing_include_and_banner_fail(sample):
    root, _, manifest = sample
    config = root / "etc/ssh/sshd_config"
    config.write_text(
        config.read_text().replace(
            "Include /etc/ssh/sshd_config.d/*.conf", "Include sshd_config.d/10-hardening.conf"
        )
    )
    assert failing(openssh.checks(root, manifest)) == {}
    (root / "etc/ssh/sshd_config.d/10-hardening.conf").unlink()
    (root / "etc/issue.net").unlink()
    bad = failing(openssh.checks(root, manifest))
    assert (
        "Include (/etc/ssh/sshd_config line 2)"
        in bad["config: missing /etc/ssh/sshd_config.d/10-hardening.conf"]
    )
    assert "Banner" in bad["config: missing /etc/issue.net"]
    assert "config: sshd -t" not in bad


@pytest.mark.integration
def test_group_writable_chroot_and_home_fail(sample):
    root, _, manifest = sample
    (root / "srv/sftp").chmod(0o775)
    (root / "home/partner/.ssh").chmod(0o770)
    bad = failing(openssh.checks(root, manifest))
    assert "/srv/sftp is group/world-writable (0775)" in bad[f"chroot: /srv/sftp/{SMOKE_USER}"]
    assert (
        "/home/partner/.ssh is group/world-writable"
        in bad["user keys: /home/partner/.ssh/authorized_keys"]
    )


@pytest.mark.integration
def test_root_only_authorized_keys_fails(sample):
    root, _, manifest = sample
    path = root / f"home/{SMOKE_USER}/.ssh/authorized_keys"
    os.chown(path, 0, 0)
    path.chmod(0o600)
    bad = failing(openssh.checks(root, manifest))
    found = bad[f"user keys: /home/{SMOKE_USER}/.ssh/authorized_keys"]
    assert f"not readable by {SMOKE_USER}" in found


@pytest.mark.integration
def test_unknown_keyword_fails_sshd_t_with_node_line(sample):
    root, _, manifest = sample
    dropin = root / "etc/ssh/sshd_config.d/10-hardening.conf"
    dropin.write_text(dropin.read_text() + "FrobnicateAll yes\n")
    bad = failing(openssh.checks(root, manifest))
    detail = bad["config: sshd -t"]
    assert "exit 255" in detail
    assert "/etc/ssh/sshd_config.d/10-hardening.conf: line 6: Bad configuration" in detail
    assert str(root) not in detail


def certificate(key, days: float, name: str = "sftp.example.com") -> bytes:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=400))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.integration
def test_certificate_expiry_and_key_mismatch(sample):
    root, info, manifest = sample
    cert_path = root / info["tls"]["certificate"].lstrip("/")
    key_path = root / info["tls"]["key"].lstrip("/")
    name = f"certificate: {info['tls']['certificate']}"
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    entry = manifest.certificates[0]

    cert_path.write_bytes(certificate(key, days=10))
    entry.fingerprint = keys.describe_certificate(cert_path.read_bytes()).fingerprint
    assert by_name(openssh.checks(root, manifest))[name].status == "warn"

    cert_path.write_bytes(certificate(key, days=-1))
    entry.fingerprint = keys.describe_certificate(cert_path.read_bytes()).fingerprint
    assert "expired" in failing(openssh.checks(root, manifest))[name]

    cert_path.write_bytes(certificate(ec.generate_private_key(ec.SECP256R1()), days=90))
    assert "does not match its key" in failing(openssh.checks(root, manifest))[name]


# --- smoke: the real sshd -----------------------------------------------------------------------


def assert_nothing_left(root: Path, work_dir: Path) -> None:
    """No sshd of this run alive, no temporary user or group, no work files."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        assert str(work_dir) not in cmdline and str(root) not in cmdline, cmdline
    for name in (SMOKE_USER, "partner"):
        with pytest.raises(KeyError):
            pwd.getpwnam(name)
    for name in (SMOKE_USER, sample_node.sftp_group()[0]):
        with pytest.raises(KeyError):
            grp.getgrnam(name)
    assert list(work_dir.iterdir()) == []


@pytest.mark.integration
def test_smoke_passes_on_chrooted_prefix_root(sample, work_dir: Path):
    root, _, manifest = sample
    smoked = openssh.smoke(root, manifest, SMOKE_USER, work_dir)
    assert failing(smoked.checks) == {}
    assert smoked.proven and smoked.protocols == ["sftp"]
    assert smoked.login_at <= smoked.round_trip_at == smoked.proven_at
    assert {key.type: key.fingerprint for key in smoked.host_keys} == {
        entry.type: entry.fingerprint for entry in manifest.host_keys
    }
    names = by_name(smoked.checks)
    assert f"created {SMOKE_USER}" in names["smoke: user"].detail
    for key_type in ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256"):
        assert names[f"smoke: host key {key_type}"].status == "pass"
    assert "in /" in names["smoke: sftp login"].detail
    assert "in upload" in names["smoke: file round trip"].detail
    assert sorted(p.name for p in (root / f"srv/sftp/{SMOKE_USER}/upload").iterdir()) == [
        "invoice-0001.csv"
    ]
    assert_nothing_left(root, work_dir)


@pytest.mark.integration
def test_smoke_without_chroot_uses_the_node_home(node_root: Path, work_dir: Path):
    info = sample_node.build(node_root, smoke_user=SMOKE_USER, chroot=False)
    smoked = openssh.smoke(node_root, host_key_manifest(node_root, info), SMOKE_USER, work_dir)
    assert failing(smoked.checks) == {} and smoked.proven
    assert "in ." in by_name(smoked.checks)["smoke: file round trip"].detail
    assert_nothing_left(node_root, work_dir)


@pytest.mark.integration
def test_smoke_fails_when_a_host_key_was_replaced(sample, work_dir: Path):
    root, _, manifest = sample
    regenerate(root, "/etc/ssh/ssh_host_ed25519_key")
    smoked = openssh.smoke(root, manifest, SMOKE_USER, work_dir)
    assert not smoked.login_ok and not smoked.proven and smoked.proven_at is None
    bad = failing(smoked.checks)
    assert "the backup has SHA256:" in bad["smoke: host key ssh-ed25519"]
    assert "Host key verification failed" in bad["smoke: sftp login"]
    assert set(bad) == {
        "smoke: host key ssh-ed25519",
        "smoke: sftp login",
        "smoke: file round trip",
    }
    assert_nothing_left(root, work_dir)


@pytest.mark.integration
def test_smoke_reports_a_bad_chroot_and_cleans_up(sample, work_dir: Path):
    root, _, manifest = sample
    (root / f"srv/sftp/{SMOKE_USER}").chmod(0o775)
    bad = failing(openssh.smoke(root, manifest, SMOKE_USER, work_dir).checks)
    assert "smoke: sftp login" in bad or "smoke: file round trip" in bad
    assert "bad ownership or modes for chroot directory" in " ".join(bad.values())
    assert_nothing_left(root, work_dir)


# --- issue 13: sshd's own semantics, on corpus cases and hand-built roots -----------------------


def corpus_root(node_root: Path, name: str) -> tuple[Path, Case]:
    """Materialise corpus case openssh-NAME under node_root; return (its root, the case)."""
    case = load_case(CORPUS / f"openssh-{name}")
    root = node_root / "root"
    materialise(case, root, client_dir=node_root / "clients")
    return root, case


def options(case: Case) -> dict:
    return case.profile_options.get("openssh", {})


def test_without_an_allow_list_every_account_sshd_lets_in_is_kept(node_root: Path):
    root, _ = corpus_root(node_root, "atmoz-sftp")
    found = openssh.inventory(root, None)
    # bar and baz are password users: no allow list names them, ChrootDirectory %h is theirs.
    assert found.users == ["foo", "bar", "baz"]
    assert {"/home/foo", "/home/bar", "/home/baz"} <= {entry.path for entry in found.dirs}
    assert "/home/foo/.ssh/authorized_keys" in paths(found, "user_keys")


def test_sshd_refuses_locked_shell_less_and_denied_accounts(node_root: Path):
    put(node_root, "/etc/passwd", PASSWD + "gina:x:3007:3007::/home/gina:/no/such/shell\n")
    put(node_root, "/etc/group", GROUP)
    put(node_root, "/etc/shadow", "alice:!$6$x:19000::::::\nbob:$6$salt$hash:19000::::::\n")
    put(
        node_root,
        "/etc/ssh/sshd_config",
        "DenyUsers carol\nMatch User dave\n  ChrootDirectory /srv\n",
    )
    for user, uid in (("alice", 3001), ("carol", 3003), ("dave", 3004), ("gina", 3007)):
        put(node_root, f"/home/{user}/.ssh/authorized_keys", uid=uid)
    found = openssh.inventory(node_root, None)
    # alice: locked (UsePAM no); bob: a password hash, PasswordAuthentication's default yes;
    # carol: DenyUsers; dave: chrooted, so no shell check; gina: her shell does not exist.
    assert found.users == ["dave", "bob"]
    assert "DenyUsers" not in " ".join(found.warnings)


def test_a_named_user_that_deny_users_refuses_is_left_out_with_a_warning(node_root: Path):
    put(node_root, "/etc/passwd", PASSWD)
    put(node_root, "/etc/ssh/sshd_config", "AllowUsers alice bob\nDenyUsers bob\n")
    found = openssh.inventory(node_root, None)
    assert found.users == ["alice"]
    assert "user bob is named by the config, but sshd refuses it: listed in DenyUsers" in (
        " ".join(found.warnings)
    )


def test_tokens_and_tilde_per_directive(node_root: Path):
    put(node_root, "/etc/passwd", PASSWD.replace("/root:", "/var/root:"))
    put(
        node_root,
        "/etc/ssh/sshd_config",
        "AllowUsers alice\n"
        "AuthorizedKeysFile ~/keys/%u ~bob/shared/%U keys/%h-ignored %x/bad\n"
        "AuthorizedPrincipalsFile principals/%u\n"
        "RevokedKeys revoked\n"
        "TrustedUserCAKeys ~/ca.pub\n"
        "Match User alice\n"
        "  ChrootDirectory ~/jail\n",
    )
    for path in (
        "/var/root/keys/alice",  # ~ in AuthorizedKeysFile is sshd's own (root's) home
        "/home/bob/shared/3001",  # ~bob, then %U = alice's uid
        "/home/alice/principals/alice",  # relative: under alice's home
        "/revoked",  # RevokedKeys relative: sshd's working directory
        "/var/root/ca.pub",
        "/home/alice/jail/upload/x",  # ChrootDirectory ~ is the user's own home
    ):
        put(node_root, path)
    found = openssh.inventory(node_root, None)
    assert paths(found, "user_keys") == {
        "/var/root/keys/alice",
        "/home/bob/shared/3001",
        "/home/alice/principals/alice",
        "/revoked",
        "/var/root/ca.pub",
    }
    assert "/home/alice/jail" in [entry.path for entry in found.dirs]


def test_match_overrides_the_global_value_for_its_users_only(node_root: Path):
    put(node_root, "/etc/passwd", PASSWD)
    put(node_root, "/etc/group", GROUP)
    put(
        node_root,
        "/etc/ssh/sshd_config",
        "AllowUsers bob erin\nChrootDirectory /srv/all\n"
        "Match Group admins\n  ChrootDirectory /srv/%u\n",
    )
    put(node_root, "/srv/all/x")
    put(node_root, "/srv/erin/x")
    config = openssh.read_config(node_root)
    db = openssh.Accounts.of(node_root)
    refs = openssh.references(node_root, config, db, ["bob", "erin"])
    chroots = {(r.user, r.path) for r in refs if r.directive == "chrootdirectory"}
    assert chroots == {("bob", "/srv/all"), ("erin", "/srv/erin")}


def test_non_default_config_and_pam_service_from_the_options(node_root: Path):
    root, case = corpus_root(node_root, "ega-inbox")
    found = openssh.inventory(root, case.smoke_user, options(case))
    assert {"/etc/ega/sshd_config", "/etc/pam.d/ega", "/ega/banner"} <= paths(found, "config")
    # AuthorizedKeysCommand programs are node files, backed up wherever they are.
    assert "/usr/local/bin/ega_ssh_keys" in paths(found, "scripts")
    assert "/etc/ega/sshd_config" in found.owned_globs
    assert openssh.inventory(root, None).files == []  # /etc/ssh/sshd_config: not this node's


def test_an_unknown_option_is_a_config_error_naming_it(node_root: Path):
    with pytest.raises(errors.ConfigError, match=r"profile_options\.openssh\.conf: unknown"):
        openssh.inventory(node_root, None, {"conf": "/etc/ega/sshd_config"})
    with pytest.raises(errors.ConfigError, match=r"profile_options\.openssh\.config: must be"):
        openssh.inventory(node_root, None, {"config": "etc/ega/sshd_config"})
    manifest = partial(profile_options={"openssh": {"bogus": 1}})
    (result,) = openssh.checks(node_root, manifest)
    assert result.status == "fail" and "profile_options.openssh.bogus" in result.detail


def test_checks_read_the_config_location_from_the_manifest(node_root: Path):
    root, case = corpus_root(node_root, "ega-inbox")
    manifest = partial(profile_options={"openssh": options(case)})
    results = by_name(openssh.checks(root, manifest))
    assert "config: sshd_config" not in results
    assert results["config: sshd -t"].status == "pass", results["config: sshd -t"].detail
    assert results["config: named files"].status == "pass"


def test_packaged_subsystem_is_looked_for_on_the_host_not_in_the_target(node_root: Path):
    root, _ = corpus_root(node_root, "debian-default")
    results = by_name(openssh.checks(root, partial()))
    assert "config: missing /usr/lib/openssh/sftp-server" not in results
    program = results["program: /usr/lib/openssh/sftp-server"]
    assert program.status == "pass" and "found on this host" in program.detail
    assert failing(results.values()) == {}


def test_a_packaged_program_missing_on_the_host_warns_and_says_where_it_looked(node_root: Path):
    root, _ = corpus_root(node_root, "upstream-portable")
    results = by_name(openssh.checks(root, partial()))
    program = results["program: /usr/libexec/sftp-server"]
    assert program.status == "warn" and "looked at /usr/libexec/sftp-server" in program.detail
    assert failing(results.values()) == {"program: /usr/libexec/sftp-server": program.detail}


def test_include_glob_directory_is_backed_up(node_root: Path):
    root, _ = corpus_root(node_root, "debian-default")
    found = openssh.inventory(root, None)
    assert "/etc/ssh/sshd_config.d" in [entry.path for entry in found.dirs]
    assert found.users == ["alice"] and "/home/alice" in [entry.path for entry in found.dirs]


def test_sshd_reports_ecdsa_loaded_but_not_offered(node_root: Path, tmp_path: Path):
    root, _ = corpus_root(node_root, "devsec-hardening")
    copy, _ = openssh.write_copy(root, openssh.read_config(root), tmp_path)
    view, loaded = openssh.sshd_view("/usr/sbin/sshd", copy)
    offered = openssh.offered(view)
    ecdsa = keys.describe_key((root / "etc/ssh/ssh_host_ecdsa_key").read_bytes())
    assert offered >= {"ssh-ed25519", "ssh-rsa"} and "ecdsa-sha2-nistp256" not in offered
    assert loaded[ecdsa.fingerprint] == "ecdsa-sha2-nistp256"


def test_keyscan_says_loaded_not_offered_instead_of_not_served():
    entry = HostKeyRecord(
        path="/etc/ssh/k", type="ecdsa-sha2-nistp256", fingerprint="SHA256:aaa", public_line="x"
    )
    kwargs = {"offered": {"ssh-ed25519"}, "omitted_by": "HostKeyAlgorithms"}
    result = SmokeResult(profile="openssh")
    clients.keyscan(result, [entry], 1, loaded={"SHA256:aaa": "ecdsa-sha2-nistp256"}, **kwargs)
    clients.keyscan(result, [entry], 1, loaded={"SHA256:bbb": "ecdsa-sha2-nistp256"}, **kwargs)
    clients.keyscan(result, [entry], 1, loaded={}, **kwargs)
    good, replaced, missing = result.checks
    assert (
        good.status == "pass" and "loaded SHA256:aaa as in the backup, not offered" in good.detail
    )
    assert "HostKeyAlgorithms omits ecdsa-sha2-nistp256" in good.detail
    assert (
        replaced.status == "fail"
        and "loaded SHA256:bbb, the backup has SHA256:aaa" in replaced.detail
    )
    assert missing.status == "fail" and missing.detail.startswith("not loaded")
    assert result.host_keys == []


def host_certificate(root: Path, tmp_path: Path, validity: str, key: str = "ed25519") -> None:
    """Sign root's host key (or, key="other", an unrelated one) with a new CA into
    /etc/ssh/ssh_host_ed25519_key-cert.pub."""
    ca = tmp_path / f"ca-{uuid.uuid4().hex[:6]}"
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ca)])
    subject = root / "etc/ssh/ssh_host_ed25519_key.pub"
    if key == "other":
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "o")])
        subject = tmp_path / "o.pub"
    work = tmp_path / "signing.pub"
    shutil.copy(subject, work)
    argv = ["ssh-keygen", "-q", "-s", str(ca), "-h", "-I", "node", "-n", "sftp.example.test"]
    assert runner.run([*argv, "-V", validity, str(work)]).returncode == 0
    shutil.copy(tmp_path / "signing-cert.pub", root / "etc/ssh/ssh_host_ed25519_key-cert.pub")


@pytest.mark.parametrize(
    ("validity", "key", "status", "says"),
    [
        ("-1d:+90d", "ed25519", "pass", "valid until"),
        ("-1d:+5d", "ed25519", "warn", "in 4 days"),
        ("20200101:20200102", "ed25519", "fail", "expired 2020-01-0"),
        ("-1d:+90d", "other", "fail", "which no HostKey holds"),
    ],
)
def test_host_certificate_expiry_and_key(node_root, tmp_path, validity, key, status, says):
    root, _ = corpus_root(node_root, "devsec-hardening")
    config = root / "etc/ssh/sshd_config"
    certificate = "/etc/ssh/ssh_host_ed25519_key-cert.pub"
    config.write_text(f"HostCertificate {certificate}\n" + config.read_text())
    host_certificate(root, tmp_path, validity, key)
    found = openssh.inventory(root, None)
    assert certificate in paths(found, "host_keys")
    result = by_name(openssh.checks(root, partial()))[f"host certificate: {certificate}"]
    assert result.status == status and says in result.detail, result.detail


@pytest.mark.parametrize(
    ("spoil", "says"),
    [
        (None, None),
        (lambda p: p.chmod(0o775), "/usr/local/bin/ega_ssh_keys is group/world-writable (0775)"),
        (lambda p: p.parent.chmod(0o777), "/usr/local/bin is group/world-writable (0777)"),
        (lambda p: os.chown(p, 1000, 1000), "/usr/local/bin/ega_ssh_keys is owned by uid 1000"),
        (lambda p: p.chmod(0o644), "is not executable"),
    ],
)
def test_authorized_keys_command_is_checked_as_sshd_does(node_root: Path, spoil, says):
    root, case = corpus_root(node_root, "ega-inbox")
    program = root / "usr/local/bin/ega_ssh_keys"
    if spoil:
        spoil(program)
    manifest = partial(profile_options={"openssh": options(case)})
    result = by_name(openssh.checks(root, manifest))[
        "AuthorizedKeysCommand: /usr/local/bin/ega_ssh_keys"
    ]
    if says is None:
        assert result.status == "pass", result.detail
    else:
        assert result.status == "fail" and says in result.detail, result.detail


def test_ldap_and_sssd_integration_files_are_backed_up_and_checked(node_root: Path, tmp_path):
    root, case = corpus_root(node_root, "ega-inbox")
    key = ec.generate_private_key(ec.SECP256R1())
    put(root, "/etc/ssl/ldap-ca.pem", certificate(key, days=-1).decode())
    put(root, "/etc/sssd/sssd.conf", "[domain/x]\nldap_tls_cacert = /etc/ssl/ldap-ca.pem\n", 0o644)
    put(
        root,
        "/etc/nslcd.conf",
        "uri ldap://ldap\nbindpw secret\ntls_cacertfile /etc/ssl/gone.pem\n",
    )
    put(root, "/etc/ldap/ldap.conf", "TLS_CACERT /etc/ssl/ldap-ca.pem\n")
    found = openssh.inventory(root, None, options(case))
    assert {"/etc/sssd/sssd.conf", "/etc/nslcd.conf", "/etc/ldap/ldap.conf"} <= paths(
        found, "config"
    )
    assert "/etc/ssl/ldap-ca.pem" in paths(found, "tls")
    bad = failing(openssh.checks(root, partial(profile_options={"openssh": options(case)})))
    assert "requires 0600 root" in bad["integration: /etc/sssd/sssd.conf"]
    assert "holds bindpw and is readable by others" in bad["integration: /etc/nslcd.conf"]
    assert "expired" in bad["certificate: /etc/ssl/ldap-ca.pem"]
    assert "tls_cacertfile" in bad["config: missing /etc/ssl/gone.pem"]
    (root / "etc/sssd/sssd.conf").chmod(0o600)
    (root / "etc/nslcd.conf").chmod(0o640)
    put(root, "/etc/ssl/ldap-ca.pem", certificate(key, days=90).decode())
    put(root, "/etc/ssl/gone.pem", certificate(key, days=90).decode())
    assert failing(openssh.checks(root, partial(profile_options={"openssh": options(case)}))) == {}


def test_pam_includes_are_backed_up_when_present(node_root: Path):
    root, _ = corpus_root(node_root, "debian-default")
    put(root, "/etc/pam.d/common-auth", "auth required pam_unix.so\n")
    found = openssh.inventory(root, None)
    assert {"/etc/pam.d/sshd", "/etc/pam.d/common-auth"} <= paths(found, "config")
    assert not any("common-account" in warning for warning in found.warnings)


def test_default_host_keys_are_the_nodes_in_a_copy_not_this_hosts(node_root: Path, tmp_path):
    root, _ = corpus_root(node_root, "debian-default")
    copy, names = openssh.write_copy(root, openssh.read_config(root), tmp_path)
    _, loaded = openssh.sshd_view("/usr/sbin/sshd", copy)
    node_keys = {
        keys.describe_key((root / path.lstrip("/")).read_bytes()).fingerprint
        for path in openssh.policy().defaults.host_keys
    }
    assert set(loaded) == node_keys
    assert names[str(copy)] == ("/etc/ssh/sshd_config", 4)  # a comment and three HostKey lines


def test_the_keys_commands_account_is_kept_and_root_needs_no_entry(node_root: Path):
    root, case = corpus_root(node_root, "ega-inbox")
    config = root / "etc/ega/sshd_config"
    found = openssh.inventory(root, None, options(case))
    # root (the command's account) is on every node, not an account to restore; egasftp is a
    # member of lega, the group DenyGroups *,!lega exempts (issue 22)
    assert found.users == ["egasftp"]
    passwd = root / "etc/passwd"  # a restore target holds only the restored accounts
    passwd.write_text("".join(ln for ln in passwd.open() if not ln.startswith("root:")))
    manifest = partial(profile_options={"openssh": options(case)})
    name = "AuthorizedKeysCommand: /usr/local/bin/ega_ssh_keys"
    assert by_name(openssh.checks(root, manifest))[name].status == "pass"
    config.write_text(config.read_text().replace("CommandUser root", "CommandUser nobody"))
    assert openssh.inventory(root, None, options(case)).users == ["egasftp", "nobody"]
