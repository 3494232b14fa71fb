"""Real configurations drkit handled wrongly (issue 22), each a regression test: the smoke runs
the node's own configuration, a start check runs it for real, runtime files are never the
host's, compiled-in defaults come from the binary, PAM arguments are read as the module reads
them, SFTPPlus homes the product makes are not required, and the writable directory and the
landing are found, not guessed.

Every node is built from a sourced configuration (tests/corpus, or the source named in the
test); real proftpd and vsftpd on 127.0.0.1, nothing mocked.
"""

from __future__ import annotations

import ftplib
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

import pytest
from corpus.cases import load_case, materialise

from drkit import runner
from drkit.engines import accounts, manifest
from drkit.model import Manifest
from drkit.paths import on_root
from drkit.profiles import proftpd, sftpplus, vsftpd
from drkit.profiles.common import configrefs, pamfiles, smokerun
from tests.manifests import partial

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).parent / "corpus"


def node_of(name: str, node_root: Path, profile=None):
    """Materialise a corpus case under node_root; return (case, root, manifest)."""
    case = load_case(CORPUS / name)
    root = node_root / "root"
    materialise(case, root, client_dir=node_root / "clients")
    module = profile or {"proftpd": proftpd, "vsftpd": vsftpd}[case.server]
    options = case.profile_options.get(case.server) or {}
    found = module.inventory(root, case.smoke_user, module.settings(options))
    recorded = manifest.build(
        root,
        found,
        node="n",
        profiles=[case.server],
        accounts=accounts.read_entries(root, found.users),
        created=datetime.now(UTC),
        profile_options=case.profile_options,
    )
    return case, root, recorded


def by_name(checks) -> dict:
    return {check.name: check for check in checks}


def smoke_of(module, root: Path, recorded: Manifest, user: str, node_root: Path):
    work = node_root / "work"
    work.mkdir(mode=0o755, exist_ok=True)
    return by_name(module.smoke(root, recorded, user, work).checks)


# --- ProFTPD: what the real server refuses at start ----------------------------------------


def test_tls_and_sftp_side_by_side_fail_the_start_check_in_proftpd_words(node_root):
    """Debian proftpd-core 1.3.8's templates tls.conf and sftp.conf included side by side (the
    broken twin proftpd-debian-sftp-tls-twin-same-host): `proftpd -t` accepts it, proftpd
    refuses to start. Before: every check passed and only the smoke's start failed, its detail
    cut to the log's timestamps."""
    _, root, recorded = node_of("proftpd-debian-sftp-tls-twin-same-host", node_root)
    found = by_name(proftpd.checks(root, recorded))
    assert found["config: proftpd -t"].status == "pass"  # -t exits 0: why a start check exists
    started = found["config: proftpd starts"]
    assert started.status == "fail", started
    assert (
        "mod_sftp/1.1.1: Server 'Debian': cannot support both FTPS (TLSEngine on) and SFTP "
        "(SFTPEngine on) for the same host" in started.detail
    )
    assert not re.search(r"\d{4}-\d\d-\d\d \d\d:", started.detail)  # the words, no timestamps
    smoke = smoke_of(proftpd, root, recorded, "dave", node_root)
    assert smoke["smoke: proftpd started"].status == "fail"
    assert "cannot support both FTPS" in smoke["smoke: proftpd started"].detail


def test_world_writable_auth_user_file_fails_the_smoke_as_proftpd_refuses_it(node_root):
    """proftpd/proftpd's complex-virtual.conf with its vhost's AuthUserFile made 0666 (the
    broken twin): proftpd refuses to start. Before: the smoke swapped in its own user file and
    reported "proftpd started, ftp login, round trip"."""
    _, root, recorded = node_of(
        "proftpd-upstream-complex-virtual-twin-authuserfile-mode", node_root
    )
    node_file = "/var/conf/ftp/authfiles/passwd.ftp.ftech.net"
    found = by_name(proftpd.checks(root, recorded))
    assert found["config: proftpd starts"].status == "fail"
    assert f"unable to use world-readable AuthUserFile '{node_file}' (perms 0666)" in (
        found["config: proftpd starts"].detail
    )
    assert "line 147 of '/etc/proftpd/proftpd.conf'" in found["config: proftpd -t"].detail
    smoke = smoke_of(proftpd, root, recorded, "webby", node_root)
    assert smoke["smoke: proftpd started"].status == "fail"
    assert f"AuthUserFile '{node_file}' (perms 0666)" in smoke["smoke: proftpd started"].detail
    assert "smoke: ftp login" not in smoke


def test_smoke_credentials_are_added_beside_the_nodes_own(node_root):
    """complex-virtual.conf as its source has it: during a smoke run the vhost's own virtual
    user still logs in with the node's own password (the AuthUserFile is the node's, homes
    mapped), and the smoke's one-run PAM password works beside it."""
    case, root, _ = node_of("proftpd-upstream-complex-virtual", node_root)
    pubadmin = next(user for user in case.users if user.name == "pubadmin")
    config = proftpd.read_config(root)
    work = node_root / "run"
    work.mkdir(mode=0o755)
    password = secrets.token_urlsafe(12)
    pam_path = pamfiles.one_run_pam_service(work, "pubadmin", password)
    run = proftpd.Run(
        work,
        ports={index: smokerun.free_port() for index in range(config.servers)},
        run_as=proftpd.sandbox.run_as(root, config),
        pam_service=pam_path.name,
    )
    server = None
    try:
        proftpd.loopback.auth_copies(root, config, run, None)
        server, words, _ = proftpd.sandbox.start(root, config, run, proftpd.proftpd_program())
        assert server is not None, words
        vhost = max(run.ports)  # the ftp.ftech.net vhost: the last one, its own AuthUserFile
        for secret in (pubadmin.password, password):
            client = ftplib.FTP(timeout=10)
            client.connect("127.0.0.1", run.ports[vhost])
            client.login("pubadmin", secret)
            assert client.pwd() == "/"  # DefaultRoot ~ in that vhost
            client.quit()
        node_file = "/var/conf/ftp/authfiles/passwd.ftp.ftech.net"
        assert set(run.auth_files) == {node_file}  # the node's file, homes mapped, not ours
        assert run.auth_files[node_file].stat().st_mode & 0o777 == 0o600  # its mode kept
    finally:
        if server is not None:
            server.stop()
        pam_path.unlink(missing_ok=True)


# --- ProFTPD: runtime files are the work dir's, their directories the node's -------------------


def test_scoreboard_of_the_restored_node_never_the_hosts(node_root):
    """A FreeBSD wiki memo's proftpd.conf (corpus proftpd-freebsd-wiki) with its ScoreboardFile
    moved to a directory this host lacks (/var/lib/proftpd-wiki-<hex>, only on the node):
    `proftpd -t` and the start check run the restored copy with the scoreboard in their work
    dir, so the node passes; the directory is backed up, and a restore without it fails
    naming it. Before: `proftpd -t` ran against the host's path and failed "ScoreboardFile:
    unable to use ..." on a working node."""
    case = load_case(CORPUS / "proftpd-freebsd-wiki")
    root = node_root / "root"
    materialise(case, root, client_dir=node_root / "clients")
    folder = f"/var/lib/proftpd-wiki-{secrets.token_hex(4)}"
    assert not Path(folder).exists()
    conf = on_root(root, "/usr/local/etc/proftpd.conf")
    conf.write_text(conf.read_text().replace("/var/run/proftpd/", f"{folder}/"))
    on_root(root, folder).mkdir(mode=0o755, parents=True)
    options = case.profile_options["proftpd"]
    found = proftpd.inventory(root, "taro", proftpd.settings(options))
    assert folder in {entry.path for entry in found.dirs}
    recorded = partial(profile_options=case.profile_options)
    checks = by_name(proftpd.checks(root, recorded))
    assert checks["config: proftpd -t"].status == "pass", checks["config: proftpd -t"]
    assert checks["config: proftpd starts"].status == "pass", checks["config: proftpd starts"]
    assert checks[f"proftpd: {folder} (proftpd.scoreboard)"].status == "pass"
    on_root(root, folder).rmdir()
    checks = by_name(proftpd.checks(root, recorded))
    assert checks[f"proftpd: {folder} (proftpd.scoreboard)"].status == "fail"
    assert "proftpd cannot start" in checks[f"proftpd: {folder} (proftpd.scoreboard)"].detail
    copy, _ = proftpd.write_copy(
        root, proftpd.read_config(root, options["config"]), node_root / "t"
    )
    assert f"ScoreboardFile {node_root / 't' / 'proftpd.scoreboard'}" in copy.read_text()


def test_freebsd_wiki_node_smoke_lands_in_the_home_and_uploads_there(node_root):
    _, root, recorded = node_of("proftpd-freebsd-wiki", node_root)
    smoke = smoke_of(proftpd, root, recorded, "taro", node_root)
    assert smoke["smoke: ftp landing"].status == "pass", smoke["smoke: ftp landing"]
    assert "DefaultRoot ~ !wheel" in smoke["smoke: ftp landing"].detail
    assert smoke["smoke: ftp round trip"].status == "pass", smoke["smoke: ftp round trip"]
    # the node's account served beside the node's sources, said as a warning
    assert smoke["smoke: differs from the node's config"].status == "warn"


# --- vsftpd: the binary's defaults, the writable directory, the landing -----------------------


def test_vsftpd_user_writes_into_files_of_its_chroot(node_root):
    """ochouikh/inception's vsftpd.conf and tools/script.sh (corpus vsftpd-inception-files-dir):
    chrooted into local_root /home/ftp_user/ftp (nobody 0555), writable files/. Before: the
    round trip failed trying . upload uploads incoming."""
    _, root, recorded = node_of("vsftpd-inception-files-dir", node_root)
    smoke = smoke_of(vsftpd, root, recorded, "ftp_user", node_root)
    assert smoke["smoke: ftp login"].status == "pass", smoke["smoke: ftp login"]
    assert smoke["smoke: ftp landing"].status == "pass", smoke["smoke: ftp landing"]
    assert "local_root /home/ftp_user/ftp" in smoke["smoke: ftp landing"].detail
    trip = smoke["smoke: ftp round trip"]
    assert trip.status == "pass" and trip.detail.endswith(" in files"), trip


def test_vsftpd_no_writable_directory_is_a_warning(node_root):
    _, root, recorded = node_of("vsftpd-inception-files-dir", node_root)
    on_root(root, "/home/ftp_user/ftp/files").chmod(0o555)  # nothing left for ftp_user
    smoke = smoke_of(vsftpd, root, recorded, "ftp_user", node_root)
    trip = smoke["smoke: ftp round trip"]
    assert trip.status == "warn" and "no writable directory found" in trip.detail, trip


def test_vsftpd_secure_chroot_dir_comes_from_the_binary_and_travels_in_the_manifest(node_root):
    """vsftpd-upstream-default (no secure_chroot_dir): the running binary is Debian's 3.0.3
    (.tools/bin/vsftpd), compiled with /var/run/vsftpd/empty; the backup records it, and a
    restore elsewhere judges by the recorded value, not this host's binary."""
    _, root, recorded = node_of("vsftpd-upstream-default", node_root)
    facts = recorded.facts["vsftpd"]
    assert facts["compiled"] == {"secure_chroot_dir": "/var/run/vsftpd/empty"}
    assert str(facts["program"]).endswith("vsftpd")
    assert by_name(vsftpd.checks(root, recorded))["vsftpd: named files"].status == "pass"
    # a node built with upstream's default, restored here: its recorded value is required
    compiled = {"vsftpd": {"compiled": {"secure_chroot_dir": "/srv/e"}}}
    elsewhere = recorded.model_copy(update={"facts": compiled})
    found = by_name(vsftpd.checks(root, elsewhere))
    assert found["vsftpd: missing /srv/e"].status == "fail"
    assert "compiled into the node's vsftpd" in found["vsftpd: missing /srv/e"].detail


def test_pam_pwdfile_with_a_space_names_the_virtual_users_store(node_root):
    """cwjohnston/chef-vsftpd's files/default/vsftpd-pam (verbatim): `auth required
    pam_pwdfile.so pwdfile /etc/vsftpd.passwd`, the module's second argument form. Before: the
    store was missed (only pwdfile=FILE was read)."""
    root = node_root / "root"
    files = {
        "/etc/vsftpd.conf": "listen=YES\nlocal_enable=YES\nguest_enable=YES\n"
        "pam_service_name=vsftpd\nuser_sub_token=$USER\nlocal_root=/home/$USER\n",
        "/etc/pam.d/vsftpd": "auth required pam_pwdfile.so pwdfile /etc/vsftpd.passwd\n"
        "account required pam_permit.so\n",
        "/etc/vsftpd.passwd": "alice:$1$abc$def\nbob:$1$abc$ghi\n",
        "/etc/passwd": "root:x:0:0::/root:/bin/sh\nftp:x:101:65534::/srv/ftp:/bin/false\n",
    }
    for path, text in files.items():
        on_root(root, path).parent.mkdir(parents=True, exist_ok=True)
        on_root(root, path).write_text(text)
    for home in ("/home/alice", "/home/bob", "/srv/ftp"):
        on_root(root, home).mkdir(parents=True)
    stack = pamfiles.read_pam(root, "/etc/pam.d/vsftpd")
    assert stack.pwdfiles == ["/etc/vsftpd.passwd"]
    found = vsftpd.inventory(root, None, vsftpd.settings({}))
    assert "/etc/vsftpd.passwd" in {entry.path for entry in found.files}
    logins = {login.name for login in vsftpd.logins(root, vsftpd.read_config(root))}
    assert {"alice", "bob"} <= logins  # the virtual users, read from the store
    assert "/home/alice" in {entry.path for entry in found.dirs}
    assert pamfiles.pam_store_args("pam_pwdfile.so", ["pwdfile", "/x"]) == [("pwdfile", "/x")]
    assert pamfiles.pam_store_args("pam_unix.so", ["pwdfile", "/x"]) == []


# --- SFTPPlus: what the product creates itself -----------------------------------------------


def test_sftpplus_homes_the_product_makes_are_not_required(node_root):
    """sftpplus/sftpplus-docker's server.ini @7fa46dfc (corpus sftpplus-docker-2020): test_user's
    home /srv/storage/test_user removed. With create_home_folder = No it is required; with
    create_home_folder = yes (the product makes it at first login) or the account disabled, no
    check fails for it."""
    case = load_case(CORPUS / "sftpplus-docker-2020")
    root = node_root / "root"
    materialise(case, root, client_dir=node_root / "clients")
    ini = on_root(root, "/opt/sftpplus/configuration/server.ini")
    original = ini.read_text()
    home = "/srv/storage/test_user"
    runner.run(["rm", "-rf", str(on_root(root, home))])

    def missing(text: str) -> list[str]:
        ini.write_text(text)
        config = sftpplus.read_config(root, "/opt/sftpplus")
        refs = sftpplus.references(root, config).refs
        found = configrefs.named_files_check(root, refs, "sftpplus")
        return [c.name for c in found if "missing" in c.name]

    assert f"sftpplus: missing {home}" in missing(original)
    account = "[accounts/bdb99c31-1119-4b8b-b609-63672a9a0b6f]"
    section = original.index(account)
    created = original[:section] + original[section:].replace(
        "create_home_folder = No", "create_home_folder = yes", 1
    )
    assert f"sftpplus: missing {home}" not in missing(created)
    disabled = original[:section] + original[section:].replace("enabled = yes", "enabled = No", 1)
    assert f"sftpplus: missing {home}" not in missing(disabled)
