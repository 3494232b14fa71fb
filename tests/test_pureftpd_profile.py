"""Pure-FTPd nodes: the configuration read as Debian's pure-ftpd-wrapper reads it (compared with
the real wrapper's own output), what the checks catch, and a node built from Debian's shipped
configuration with virtual users and TLS through discover, init, backup, destroy, restore
--smoke and drill on the real pure-ftpd on 127.0.0.1.

Real SeaweedFS, restic, pure-ftpd and pure-pw: nothing here is mocked.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nodes import drkit, init_node

from devtools import sample_pureftpd
from devtools.sample_node import certificate_and_key, worker
from drkit import errors
from drkit.engines import accounts, manifest
from drkit.model import Manifest
from drkit.paths import on_root
from drkit.profiles import pureftpd
from drkit.profiles.common import programs
from drkit.profiles.pureftpd import read

pytestmark = pytest.mark.integration

SMOKE_USER = "pfdrill"


@pytest.fixture
def work(work_dir: Path) -> Path:
    """conftest's work_dir, beside node_root."""
    return work_dir


def statuses(document: dict) -> dict[str, str]:
    return {check["name"]: check["status"] for check in document["checks"]}


def recorded(root: Path, options: dict | None = None) -> Manifest:
    found = pureftpd.inventory(root, SMOKE_USER, pureftpd.settings(options))
    return manifest.build(
        root,
        found,
        node="n",
        profiles=["pureftpd"],
        accounts=accounts.read_entries(root, found.users),
        created=datetime.now(UTC),
        profile_options={"pureftpd": options} if options else {},
    )


def run_wrapper(root: Path) -> subprocess.CompletedProcess:
    """Run Debian's real pure-ftpd-wrapper --show-options on the node's /etc/pure-ftpd (bound
    over /etc in a private mount namespace: the wrapper reads fixed paths)."""
    wrapper = programs.find_program("pure-ftpd-wrapper", [read.WRAPPER])
    assert wrapper, "scripts/bootstrap unpacks pure-ftpd-wrapper into .tools/bin"
    script = (
        "mount -t tmpfs none /etc && mkdir /etc/pure-ftpd && "
        f'mount --bind "{on_root(root, "/etc/pure-ftpd")}" /etc/pure-ftpd && '
        f'perl "{wrapper}" --show-options'
    )
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60
    )


def wrapper_options(root: Path) -> list[str]:
    done = run_wrapper(root)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_conf_and_auth_read_as_the_real_wrapper_reads_them(node_root):
    root = node_root / "root"
    sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    on_root(root, "/etc/pure-ftpd/conf/PassivePortRange").write_text("# range\n30000   30099\n")
    on_root(root, "/etc/pure-ftpd/conf/Umask").write_text("\n133 022\n")
    on_root(root, "/etc/pure-ftpd/conf/AutoRename").write_text("off\n")
    on_root(root, "/etc/pure-ftpd/conf/DontResolve").write_text("no\nyes\n")  # "no" yields nothing
    theirs = wrapper_options(root)
    setup = read.read_wrapper(root)
    ours = []
    for option in setup.options:
        if option.flag != "B":  # the init script's STANDALONE_OR_INETD, not the wrapper's
            ours += [f"-{option.flag}"] + ([option.value] if option.value is not None else [])
    pairs = lambda argv: sorted(" ".join(argv).replace(" -", "\n-").splitlines())  # noqa: E731
    assert pairs(ours) == pairs(theirs)
    # the -l methods in the wrapper's order: auth/ links sorted, 50pure before 70pam
    assert [o.value for o in setup.logins()] == ["puredb:/etc/pure-ftpd/pureftpd.pdb", "pam"]
    assert theirs[:4] == ["-l", "puredb:/etc/pure-ftpd/pureftpd.pdb", "-l", "pam"]


@pytest.mark.parametrize(
    ("name", "text"),
    [("MaxIdelTime", "15\n"), ("TLS", "required\n"), ("Umask", "no\n"), ("FortunesFile", "/x\n")],
)
def test_a_file_the_real_wrapper_refuses_is_refused_in_its_words(node_root, name, text):
    root = node_root / "root"
    sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    on_root(root, f"/etc/pure-ftpd/conf/{name}").write_text(text)
    done = run_wrapper(root)
    assert done.returncode != 0
    ((where, why),) = read.read_wrapper(root).refused
    assert where == f"/etc/pure-ftpd/conf/{name}" and why in done.stderr, done.stderr


def test_files_the_wrapper_refuses_fail_the_checks_naming_the_file(node_root):
    root = node_root / "root"
    sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    on_root(root, "/etc/pure-ftpd/conf/MaxIdelTime").write_text("15\n")  # a misspelt option
    found = {check.name: check for check in pureftpd.checks(root, recorded(root))}
    assert found["pureftpd: /etc/pure-ftpd/conf/MaxIdelTime"].status == "fail"
    assert found["config: pure-ftpd starts"].status == "fail"
    assert "pure-ftpd-wrapper refuses" in found["config: pure-ftpd starts"].detail


def test_a_unit_command_line_is_the_configuration(node_root):
    root = node_root / "root"
    sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    shutil.rmtree(on_root(root, "/etc/pure-ftpd/conf"))
    unit = on_root(root, "/etc/systemd/system/pure-ftpd.service")
    unit.parent.mkdir(parents=True)
    command = (
        "/usr/sbin/pure-ftpd -l puredb:/etc/pure-ftpd/pureftpd.pdb -AE --tls=2 "
        "-O clf:/var/log/pure-ftpd/transfer.log -u1000"
    )
    unit.write_text(f"[Service]\nExecStart=/usr/sbin/pure-ftpd-wrapper\nExecStart={command}\n")
    detection = pureftpd.PROFILE.detect(root)
    assert detection.options == {"command": command}
    chosen = pureftpd.settings(detection.options)
    node = pureftpd.read_node(root, chosen)
    assert (node.tls, node.setup.has("A"), node.setup.number("u", 0)) == (2, True, 1000)
    taken = {entry.path for entry in pureftpd.inventory(root, None, chosen).files}
    assert {"/etc/systemd/system/pure-ftpd.service", "/etc/pure-ftpd/pureftpd.pdb"} <= taken
    assert {"/etc/ssl/private/pure-ftpd.pem", "/var/log/pure-ftpd/transfer.log"} <= taken


def test_a_unit_naming_pure_ftpds_own_config_file(node_root, tmp_path):
    """`pure-ftpd /etc/pure-ftpd/pure-ftpd.conf` (upstream's form since 1.0.47): the file's keys
    become options as src/simpleconf_ftpd.h maps them, and the real pure-ftpd runs from them."""
    root = node_root / "root"
    made = sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    shutil.rmtree(on_root(root, "/etc/pure-ftpd/conf"))
    on_root(root, "/etc/pure-ftpd/pure-ftpd.conf").write_text(
        "ChrootEveryone  yes\nNoAnonymous yes   # virtual users only\nDaemonize yes\n"
        f"PureDB {made['puredb']}\nPAMAuthentication no\nMinUID 1000\nUmask 133:022\n"
        "PassivePortRange 30000 30099\nTLS 2\nCertFile /etc/ssl/private/pure-ftpd.pem\n"
        "AltLog clf:/var/log/pure-ftpd/transfer.log\n"
    )
    unit = on_root(root, "/lib/systemd/system/pure-ftpd.service")
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/usr/sbin/pure-ftpd /etc/pure-ftpd/pure-ftpd.conf\n")
    options = pureftpd.PROFILE.detect(root).options
    node = pureftpd.read_node(root, pureftpd.settings(options))
    assert not node.setup.refused
    flags = {(option.flag, option.value) for option in node.setup.options}
    assert {("A", None), ("E", None), ("B", None), ("U", "133:022"), ("p", "30000:30099")} <= flags
    assert ("l", f"puredb:{made['puredb']}") in flags and ("Y", "2") in flags
    assert not any(flag == "l" and value == "pam" for flag, value in flags)  # "no": not added
    before = recorded(root, options)
    assert "/etc/pure-ftpd/pure-ftpd.conf" in {entry.path for entry in before.files}
    found = {check.name: check for check in pureftpd.checks(root, before)}
    assert found["config: pure-ftpd starts"].status == "pass", found["config: pure-ftpd starts"]
    proof = pureftpd.smoke(root, before, SMOKE_USER, tmp_path)
    assert proof.login_ok and proof.round_trip_ok, proof.checks
    conf = on_root(root, "/etc/pure-ftpd/pure-ftpd.conf")
    conf.write_text("chrooteveryone yes\nFooBar 1\n")  # keys in any case; FooBar is none
    setup = pureftpd.read_node(root, pureftpd.settings(options)).setup
    assert setup.has("A")
    where = "/etc/pure-ftpd/pure-ftpd.conf line 2"
    assert setup.refused == [(where, "property not found: [FooBar 1]")]
    found = {check.name: check for check in pureftpd.checks(root, before)}
    assert found[f"pureftpd: {where}"].status == "fail"
    assert "pure-ftpd refuses" in found["config: pure-ftpd starts"].detail


def test_the_loopback_run_changes_only_what_it_must_and_names_each_change(tmp_path):
    command = (
        "/usr/sbin/pure-ftpd -B -6 -P ftp.example.com -V 192.0.2.7 -o -3 /run/certd.sock "
        "-l extauth:/run/authd.sock -l puredb:/etc/pure-ftpd/pureftpd.pdb -l pam "
        "-O w3c:/var/log/pure-ftpd/transfer.log -Y 2 -2 /etc/ftpd/cert.pem,/etc/ftpd/key.pem "
        "-S 192.0.2.7,21 -g /run/pure-ftpd.pid -A -u 1000"
    )
    setup = read.read_command(command, "unit", Path("/"))
    work = tmp_path / "work"
    argv, changes = read.runnable(setup, tmp_path / "root", work, 2121, work / "run.pdb")
    assert argv[:2] == ["-l", f"puredb:{work}/run.pdb"]  # the run's own PureDB, tried first
    for gone in ("-B", "-6", "-P", "-V", "-o", "-3"):
        assert gone not in argv
    assert "extauth:/run/authd.sock" not in " ".join(argv) and argv[2:4] == ["-l", "pam"]
    assert argv[argv.index("-O") + 1] == f"w3c:{work}/altlog"
    root = tmp_path / "root"
    assert argv[argv.index("-2") + 1] == f"{root}/etc/ftpd/cert.pem,{root}/etc/ftpd/key.pem"
    assert argv[-5:] == ["-S", "127.0.0.1,2121", "-4", "-g", str(work / "pure-ftpd.pid")]
    assert {"-A", "-u"} <= set(argv)
    text = "; ".join(changes)
    for named in ("Daemonize", "IPV6Only", "ForcePassiveIP", "TrustedIP", "CallUploadScript",
                  "ExtCert", "ExtAuth", "AltLog", "PureDB", "Bind 127.0.0.1,2121"):  # fmt: skip
        assert named in text, (named, text)


def test_virtual_users_homes_chroots_and_minuid(node_root):
    root = node_root / "root"
    made = sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    node = pureftpd.read_node(root, pureftpd.settings(None))
    homes = {user.name: (user.chroot, user.directory) for user in node.users}
    assert homes[SMOKE_USER] == (f"/srv/ftp/{SMOKE_USER}",) * 2  # pure-pw useradd -d: chrooted
    shutil.rmtree(on_root(root, "/srv/ftp/partner"))
    on_root(root, "/etc/pure-ftpd/conf/MinUID").write_text(f"{made['uids'][SMOKE_USER] + 1}\n")
    found = {check.name: check for check in pureftpd.user_checks(root, node)}
    assert found["pureftpd: user partner"].status == "fail"
    assert "421 Home directory not available" in found["pureftpd: user partner"].detail
    node = pureftpd.read_node(root, pureftpd.settings(None))
    found = {check.name: check for check in pureftpd.user_checks(root, node)}
    assert "I can't trust you" in found[f"pureftpd: user {SMOKE_USER}"].detail
    on_root(root, "/etc/pure-ftpd/conf/CreateHomeDir").write_text("yes\n")
    node = pureftpd.read_node(root, pureftpd.settings(None))
    found = {check.name: check for check in pureftpd.user_checks(root, node)}
    assert found["pureftpd: user partner"].status == "pass"  # created at first login


def test_puredb_rebuilt_from_its_passwd_and_compared(node_root):
    root = node_root / "root"
    made = sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    node = pureftpd.read_node(root, pureftpd.settings(None))
    (check,) = pureftpd.puredb_checks(root, node)
    assert check.status == "pass" and "byte for byte" in check.detail
    passwd = on_root(root, made["passwd"])
    passwd.write_text(passwd.read_text().replace(f"/srv/ftp/{SMOKE_USER}/./", "/srv/ftp/x/./"))
    (check,) = pureftpd.puredb_checks(root, node)
    assert check.status == "warn" and "differs from what pure-pw mkdb builds" in check.detail
    on_root(root, made["puredb"]).write_bytes(b"truncated")
    (check,) = pureftpd.puredb_checks(root, node)
    assert check.status == "fail" and "not a PureDB file" in check.detail


def test_fifos_where_files_belong_never_hang_the_reader(node_root):
    root = node_root / "root"
    made = sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    before = recorded(root)
    for path in ("/etc/pure-ftpd/conf/TLS", made["puredb"], made["passwd"]):
        on_root(root, path).unlink()
        os.mkfifo(on_root(root, path))
    setup = read.read_wrapper(root)
    assert "not a regular file" in dict(setup.refused)["/etc/pure-ftpd/conf/TLS"]
    found = {check.name: check for check in pureftpd.checks(root, before)}
    assert found["config: pure-ftpd starts"].status == "fail"
    assert pureftpd.read_node(root, pureftpd.settings(None)).users == []


def test_profile_options_are_checked_and_a_missing_passwd_warns(node_root):
    root = node_root / "root"
    made = sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    with pytest.raises(errors.ConfigError, match=r"profile_options\.pureftpd\.bogus"):
        pureftpd.settings({"bogus": 1})
    with pytest.raises(errors.ConfigError, match=r"profile_options\.pureftpd\.passwd"):
        pureftpd.settings({"passwd": "etc/pureftpd.passwd"})
    wrong = recorded(root).model_copy(update={"profile_options": {"pureftpd": {"commands": "/x"}}})
    (check,) = pureftpd.checks(root, wrong)
    assert check.status == "fail" and "profile_options.pureftpd.commands" in check.detail
    on_root(root, made["passwd"]).unlink()
    found = pureftpd.inventory(root, SMOKE_USER, pureftpd.settings(None))
    assert any("cannot be rebuilt" in warning for warning in found.warnings), found.warnings
    (check,) = pureftpd.puredb_checks(root, pureftpd.read_node(root, pureftpd.settings(None)))
    assert check.status == "warn" and "is missing" in check.detail


def test_smoke_as_a_system_account_chrooted_by_chroot_everyone(node_root, tmp_path):
    """With PAM or unix logins the smoke user may be a system account: the one-run PureDB line
    takes its uid, gid and home (chrooted: ChrootEveryone), and no host account is made."""
    root = node_root / "root"
    sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    uid = 3000 + worker()[0]
    on_root(root, "/etc/passwd").write_text(
        f"root:x:0:0:root:/root:/bin/bash\nsysftp:x:{uid}:{uid}::/home/sysftp:/bin/sh\n"
    )
    home = on_root(root, "/home/sysftp")
    home.mkdir(parents=True)
    os.chown(home, uid, uid)
    found = pureftpd.inventory(root, "sysftp", pureftpd.settings(None))
    assert "sysftp" in found.users  # PAMAuthentication yes: a login of the node
    proof = pureftpd.smoke(root, recorded(root), "sysftp", tmp_path)
    checks = {check.name: check for check in proof.checks}
    assert "system account sysftp (ChrootEveryone)" in checks["smoke: user"].detail
    assert proof.login_ok and proof.round_trip_ok, proof.checks
    with pytest.raises(KeyError):
        pwd.getpwnam("sysftp")


def test_broken_twin_mismatched_key_in_the_bundle_is_refused_by_the_server_and_the_checks(
    node_root,
):
    """The twin's pem holds another pair's key before the certificate, with TLS 2: the real
    pure-ftpd exits 252 at start; the checks fail naming the bundle and the key."""
    root = node_root / "root"
    made = sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    before = recorded(root)
    certificate, _ = certificate_and_key(sample_pureftpd.TLS_NAME)
    _, other_key = certificate_and_key("other.example.com")
    on_root(root, made["tls"]["bundle"]).write_bytes(other_key + certificate)
    found = {check.name: check for check in pureftpd.checks(root, before)}
    pair = found[f"tls pair: {made['tls']['bundle']}"]
    assert pair.status == "fail" and "does not match" in pair.detail
    assert "exits 252 at start" in pair.detail
    start = found["config: pure-ftpd starts"]
    assert start.status == "fail" and "exit 252 at start" in start.detail, start.detail
    assert made["tls"]["bundle"] in start.detail


def test_pureftpd_backup_destroy_restore_smoke_and_drill(node_root, s3_repository, work):
    root = node_root / "root"
    made = sample_pureftpd.pureftpd(root, smoke_user=SMOKE_USER)
    code, found = drkit("discover", "--root", str(root))
    assert code == 0, found
    assert [server["server"] for server in found["servers"]] == ["pureftpd"], found
    assert "servers:\n- pureftpd" in found["proposed_config"]
    config, _ = init_node(root, s3_repository, work, "auto", SMOKE_USER, "pure-1")
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0 and backup["warnings"] == [], backup
    code, shown = drkit("show", "latest", "--config", str(config))
    assert {"config", "accounts", "tls", "audit_logs", "chroot"} <= set(shown["categories"])
    held = {entry["path"] for entry in shown["files"]}
    assert {made["passwd"], made["puredb"], made["tls"]["bundle"]} <= held
    assert "/etc/pure-ftpd/auth/50pure" in held

    shutil.rmtree(root)
    code, restored = drkit("restore", "latest", "--smoke", "--config", str(config))
    assert code == 0, restored
    assert (root / "etc/pure-ftpd/auth/50pure").is_symlink()  # restored as the link it was
    checks = statuses(restored)
    assert checks.get("config: pure-ftpd starts") == "pass", restored["checks"]
    assert checks.get(f"pureftpd: PureDB {made['puredb']}") == "pass", restored["checks"]
    assert checks.get(f"tls pair: {made['tls']['bundle']}") == "pass", restored["checks"]
    (proof,) = restored["smoke"]
    assert proof["protocols"] == ["ftps"] and proof["login_ok"] and proof["round_trip_ok"], proof
    assert proof["certificates"], "the certificate as pure-ftpd served it"
    # the node's own users are untouched: the one-run user lived in a copy in the work dir
    assert [u.name for u in read.read_passwd(root, made["passwd"])] == made["users"]

    code, drilled = drkit("drill", "--snapshot", "latest", "--config", str(config))
    assert code == 0 and drilled["ok"], drilled["checks"]
    assert 0 < drilled["rto_seconds"] < 120
    print(f"pure-ftpd FTPS drill: RTO {drilled['rto_seconds']:.2f} s")
