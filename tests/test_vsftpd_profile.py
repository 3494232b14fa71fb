"""vsftpd's semantics on the corpus configurations, fast: what inventory takes (homes and
local_root with user_sub_token expanded, compiled-in defaults, anonymous roots), what the static
checks judge (a writable chroot root, a key readable by its key group) and profile_options.

Nothing here starts a server; tests/test_corpus_cycle.py runs each case end to end.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from corpus.cases import load_cases, materialise

from drkit import errors
from drkit.engines import accounts, manifest
from drkit.paths import on_root
from drkit.profiles import vsftpd
from drkit.profiles.common import configrefs, keychecks

CASES = {case.name: case for case in load_cases() if case.server == "vsftpd"}


def built(name: str, tmp_path: Path) -> tuple[Path, dict]:
    """Materialise a corpus case; return its root and a manifest of what inventory takes."""
    case = CASES[name]
    root = tmp_path / "root"
    materialise(case, root)
    options = case.profile_options.get("vsftpd") or {}
    found = vsftpd.inventory(root, case.smoke_user, vsftpd.settings(options))
    recorded = manifest.build(
        root,
        found,
        node="n",
        profiles=["vsftpd"],
        accounts=accounts.read_entries(root, found.users),
        created=datetime.now(UTC),
        profile_options=case.profile_options,
    )
    return root, recorded


@pytest.mark.parametrize("name", sorted(CASES))
def test_inventory_holds_every_path_the_config_names(name, tmp_path):
    _, recorded = built(name, tmp_path)
    held = {entry.path for entry in recorded.files}
    assert not set(CASES[name].expect_files) - held
    assert not set(CASES[name].expect_missing_ok) & held - {"/etc/pam.d/ftp"}


def test_user_sub_token_expands_local_root_and_takes_the_trees_it_names(tmp_path):
    root, recorded = built("vsftpd-fauria-virtual", tmp_path)
    config = vsftpd.read_config(root, "/etc/vsftpd/vsftpd.conf")
    refs = {
        (ref.path, ref.directive.split()[0]): ref
        for ref in vsftpd.references(root, config, "admin")
    }
    assert refs[("/home/vsftpd/admin", "local_root")].required  # chrooted there: else 500 OOPS
    assert not [path for path, _ in refs if "$USER" in path]
    assert ("/home/vsftpd", "user_sub_token") in refs  # the directory holding every $USER tree
    assert refs[("/var/ftp", "home")].required  # the guest account's home: vsftpd enters it first
    entry = {e.path: e for e in recorded.files}["/home/vsftpd"]
    assert (entry.type, entry.user) == ("dir", "ftp")  # restored with owner and mode
    assert "ftp" in {account.name for account in recorded.accounts}


def test_a_missing_compiled_in_secure_chroot_dir_fails(tmp_path):
    """The default is the running binary's (Debian's 3.0.3: /var/run/vsftpd/empty), not
    upstream's /usr/share/empty, which is then backed up when present but never required."""
    root, _ = built("vsftpd-upstream-virtual-users", tmp_path)
    default = vsftpd.compiled_defaults(root)["secure_chroot_dir"]
    assert default == "/var/run/vsftpd/empty"  # read from .tools/bin/vsftpd, Debian's build
    on_root(root, default).rmdir()
    config = vsftpd.read_config(root)
    results = configrefs.named_files_check(root, vsftpd.references(root, config), "vsftpd")
    found = {check.name: check for check in results}
    check = found[f"vsftpd: missing {default}"]
    assert check.status == "fail" and "compiled into the node's vsftpd" in check.detail
    assert "vsftpd: missing /usr/share/empty" not in found


def test_a_chroot_root_writable_by_its_account_fails_naming_the_cause(tmp_path):
    root, _ = built("vsftpd-upstream-virtual-users", tmp_path)
    config = vsftpd.read_config(root)
    assert {c.status for c in vsftpd.chroot_checks(root, config, "tom")} == {"pass"}
    on_root(root, "/home/ftpsite").chmod(0o700)  # the README's mode, written for vsftpd 1.1
    (check,) = vsftpd.chroot_checks(root, config, "tom")
    assert check.status == "fail" and "refusing to run with writable root" in check.detail


def test_snakeoil_key_readable_by_ssl_cert_passes_and_by_everyone_fails(tmp_path):
    root, recorded = built("vsftpd-debian-default", tmp_path)
    key = "/etc/ssl/private/ssl-cert-snakeoil.key"
    check = keychecks.tls_key_mode_check(root, key, manifest=recorded)
    assert check.status == "pass" and "group ssl-cert may read it" in check.detail
    # After a restore the node may not know the group: the manifest's record names it.
    group = on_root(root, "/etc/group")
    group.write_text(
        "".join(ln for ln in group.read_text().splitlines(True) if "ssl-cert" not in ln)
    )
    assert keychecks.tls_key_mode_check(root, key, manifest=recorded).status == "pass"
    assert keychecks.tls_key_mode_check(root, key).status == "fail"
    on_root(root, key).chmod(0o644)
    check = keychecks.tls_key_mode_check(root, key, manifest=recorded)
    assert check.status == "fail" and "readable by others" in check.detail
    # SSH host keys get no such allowance.
    on_root(root, key).chmod(0o640)
    assert keychecks.private_key_mode_check(root, key, "host key").status == "fail"


def test_without_local_enable_only_the_anonymous_root_is_served(tmp_path):
    root, _ = built("vsftpd-upstream-default", tmp_path)
    config = vsftpd.read_config(root)
    logins = vsftpd.logins(root, config)
    assert [(login.name, login.kind) for login in logins] == [("ftp", "anonymous")]
    refs = {ref.path for ref in vsftpd.references(root, config)}
    assert "/srv/ftp" in refs and "/home/gina" not in refs
    assert "/usr/share/empty" in refs


def test_local_users_are_the_node_accounts_pam_lets_in(tmp_path):
    root, _ = built("vsftpd-debian-default", tmp_path)
    config = vsftpd.read_config(root)
    names = {login.name for login in vsftpd.logins(root, config)}
    assert "frank" in names and "root" not in names and "nobody" not in names
    on_root(root, "/etc/ftpusers").write_text("frank\n")  # pam_listfile sense=deny
    assert "frank" not in {login.name for login in vsftpd.logins(root, config)}


def test_a_pam_listfile_with_onerr_succeed_may_be_missing(tmp_path):
    """pam_listfile onerr=succeed succeeds without its list (the Ansible role's RHEL stack names
    /etc/vsftpd/ftpusers, which the role never writes): optional; pam_userdb's db is required."""
    root, _ = built("vsftpd-ansible-xat59-virtual", tmp_path)
    config = vsftpd.read_config(root, "/etc/vsftpd/vsftpd.conf")
    stores = {
        r.path: r.required for r in vsftpd.references(root, config) if r.directive == "PAM store"
    }
    assert stores == {"/etc/vsftpd/login.db": True, "/etc/vsftpd/ftpusers": False}


def test_a_user_file_names_its_own_guest_account_and_privileges(tmp_path):
    """users.d/<user> of the Ansible role sets guest_username=www-data and
    virtual_use_local_privs=YES: the login runs as www-data, unchrooted (chroot_local_user=NO),
    and www-data's entry is backed up."""
    root, recorded = built("vsftpd-ansible-xat59-virtual", tmp_path)
    config = vsftpd.read_config(root, "/etc/vsftpd/vsftpd.conf")
    logins = {login.name: login for login in vsftpd.logins(root, config)}
    assert {logins["xat"].account, logins["jdoe"].account} == {"www-data"}
    assert not vsftpd.is_chrooted(root, config, logins["xat"])
    assert "www-data" in {account.name for account in recorded.accounts}


def test_a_log_on_proc_is_never_taken(tmp_path):
    root, _ = built("vsftpd-alpine-ftp-server", tmp_path)
    config = vsftpd.read_config(root, "/etc/vsftpd/vsftpd.conf")
    assert not [ref for ref in vsftpd.references(root, config) if ref.path.startswith("/proc")]


def test_profile_options_config_is_honoured_and_checked(tmp_path):
    root, recorded = built("vsftpd-fauria-virtual", tmp_path)
    assert recorded.profile_options == {"vsftpd": {"config": "/etc/vsftpd/vsftpd.conf"}}
    assert "/etc/vsftpd/vsftpd.conf" in {e.path for e in recorded.files}
    missing = vsftpd.inventory(root, None, vsftpd.settings({"config": "/etc/other.conf"}))
    assert missing.warnings == ["vsftpd: no /etc/other.conf found"] and not missing.files
    with pytest.raises(errors.ConfigError, match=r"profile_options\.vsftpd\.bogus"):
        vsftpd.settings({"bogus": 1})
    with pytest.raises(errors.ConfigError, match=r"profile_options\.vsftpd\.config"):
        vsftpd.settings({"config": "etc/vsftpd.conf"})
    wrong = recorded.model_copy(update={"profile_options": {"vsftpd": {"configs": "/x"}}})
    (check,) = vsftpd.checks(root, wrong)
    assert check.status == "fail" and "profile_options.vsftpd.configs" in check.detail


def test_user_sub_token_with_system_users_and_user_config_dir(tmp_path):
    """The tutorial setup (local_root=/home/$USER/ftp for system users, chrooted) with one user
    moved elsewhere by a user_config_dir file: each login's tree as vsftpd would use it."""
    root, _ = built("vsftpd-debian-default", tmp_path)
    conf = on_root(root, "/etc/vsftpd.conf")
    conf.write_text(
        conf.read_text()
        + "chroot_local_user=YES\nuser_sub_token=$USER\nlocal_root=/home/$USER/ftp\n"
        + "user_config_dir=/etc/vsftpd/users\n"
    )
    for path in ("/home/frank/ftp", "/srv/frank-ftp"):
        on_root(root, path).mkdir(parents=True)
    users = on_root(root, "/etc/vsftpd/users")
    users.mkdir(parents=True)
    (users / "frank").write_text("local_root=/srv/frank-ftp\n")
    config = vsftpd.read_config(root)
    taken = {(ref.path, ref.directive.split()[0]) for ref in vsftpd.references(root, config)}
    assert ("/srv/frank-ftp", "local_root") in taken  # the per-user file wins for frank
    assert ("/home/frank/ftp", "local_root") not in taken
    found = vsftpd.inventory(root, None, vsftpd.settings({}))
    held = {entry.path for entry in found.files} | {entry.path for entry in found.dirs}
    assert {"/etc/vsftpd/users/frank", "/srv/frank-ftp"} <= held
