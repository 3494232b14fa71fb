"""Issue 22, OpenSSH: the classes real configurations still broke, each on a sourced configuration.

- a drop-in (or the Include directory) that is a symlink into a checkout: read inside the root,
  link and target inventoried, the keys and chroot it names found and checked
  (tests/corpus/openssh-sftpuser-symlinked-dropin: liberodark/sftp_user README @eb9da3b8);
- host keys loaded but not offered beside Match LocalPort/Address blocks: `sshd -T` needs a
  connection spec (tests/corpus/openssh-devsec-match-blocks: dev-sec/ansible-collection-hardening
  opensshd.conf.j2 @c3822fca with its README's ssh_server_match_* variables);
- `DenyGroups *,!lega` names lega (tests/corpus/openssh-ega-inbox: EGA-archive/LocalEGA
  deploy/images/inbox/sshd_config @e6aa534c);
- the writable directory found, the landing confirmed, every change of the node's config named
  (the two cases above and tests/corpus/openssh-akaku-efs-password: a-kaku/cloud
  Projects/sftp/terraform/module/ssm/sshd_config.tpl @fbc34069).
Each case.yaml lists the changes made to its original.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from corpus.cases import CORPUS, Case, load_case, materialise

from drkit.engines import accounts, keys
from drkit.model import Manifest
from drkit.profiles import openssh
from tests.manifests import partial

WORK_PARENT = Path("/var/lib/drkit-tests")


def build(node_root: Path, name: str) -> tuple[Path, Case]:
    case = load_case(CORPUS / name)
    root = node_root / "root"
    materialise(case, root, client_dir=node_root / "clients")
    return root, case


def options(case: Case) -> dict:
    return case.profile_options.get("openssh", {})


def listed(found) -> set[str]:
    return {entry.path for entry in found.files} | {entry.path for entry in found.dirs}


def manifest_of(root: Path, case: Case, users: list[str]) -> Manifest:
    host_keys = []
    for key in case.generate.host_keys:
        info = keys.describe_key((root / key.path.lstrip("/")).read_bytes())
        host_keys.append(
            {
                "path": key.path,
                "type": info.type,
                "fingerprint": info.fingerprint,
                "public_line": info.public_line,
            }
        )
    return partial(
        host_keys=host_keys,
        accounts=accounts.read_entries(root, users),
        profile_options=case.profile_options,
    )


def by_name(checks) -> dict:
    return {check.name: check for check in checks}


def not_passing(checks) -> dict:
    return {check.name: check.detail for check in checks if check.status != "pass"}


@pytest.fixture
def work_dir():
    path = WORK_PARENT / f"work-{uuid.uuid4().hex[:10]}"
    path.mkdir(mode=0o755, parents=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- 1. a symlinked drop-in, read inside the root ----------------------------------------------


def test_a_symlinked_drop_in_is_read_inside_the_root_and_both_paths_are_listed(node_root):
    root, _ = build(node_root, "openssh-sftpuser-symlinked-dropin")
    link = root / "etc/ssh/sshd_config.d/sftp.conf"
    assert link.is_symlink() and not link.exists()  # on this host the absolute target is absent
    config = openssh.read_config(root)
    assert "/etc/ssh/sshd_config.d/sftp.conf" in config.files
    assert config.links["/etc/ssh/sshd_config.d/sftp.conf"] == (
        "/srv/sshd-config/sftp.conf",
        ["/etc/ssh/sshd_config.d/sftp.conf"],
    )
    chroot = [ln for ln in config.lines if ln.keyword == "chrootdirectory"]
    assert chroot and chroot[0].match == ("Group", "sftpusers")
    found = openssh.inventory(root, None)
    assert found.users == ["acme"]
    assert {
        "/etc/ssh/sshd_config.d/sftp.conf",  # the link
        "/srv/sshd-config/sftp.conf",  # its target
        "/etc/ssh/authorized_keys/acme",  # named only by the drop-in
        "/sftp/acme",  # the chroot it sets
    } <= listed(found)


def test_a_symlinked_include_directory_is_followed_inside_the_root(node_root):
    root, _ = build(node_root, "openssh-sftpuser-symlinked-dropin")
    drop_ins = root / "etc/ssh/sshd_config.d"
    shutil.rmtree(drop_ins)
    (root / "srv/sshd-config/99-local.conf").write_text("MaxAuthTries 3\n")
    drop_ins.symlink_to("/srv/sshd-config")  # the whole directory from the checkout
    config = openssh.read_config(root)
    assert [ln.args for ln in config.lines if ln.keyword == "maxauthtries"] == [("3",)]
    found = openssh.inventory(root, None)
    assert {
        "/etc/ssh/sshd_config.d",
        "/srv/sshd-config/sftp.conf",
        "/srv/sshd-config/99-local.conf",
        "/etc/ssh/authorized_keys/acme",
    } <= listed(found)
    assert "/srv/sshd-config" in {entry.path for entry in found.dirs}


def test_a_link_never_leads_out_of_the_root(node_root):
    root, _ = build(node_root, "openssh-sftpuser-symlinked-dropin")
    link = root / "etc/ssh/sshd_config.d/sftp.conf"
    link.unlink()
    # this host has /etc/ssh/sshd_config; the node's link climbs to its own root and stops there
    link.symlink_to("../../../../../../../../etc/ssh/no-such.conf")
    config = openssh.read_config(root)
    assert "/etc/ssh/sshd_config.d/sftp.conf" not in config.files
    assert not [ln for ln in config.lines if ln.keyword == "chrootdirectory"]


def test_the_chroot_a_symlinked_drop_in_sets_is_checked_as_sshd_checks_it(node_root):
    root, case = build(node_root, "openssh-sftpuser-symlinked-dropin-twin-chroot-owner")
    checks = by_name(openssh.checks(root, manifest_of(root, case, ["acme"])))
    chroot = checks["chroot: /sftp/acme"]
    assert chroot.status == "fail" and "/sftp/acme is owned by uid 3001" in chroot.detail
    assert checks["user keys: /etc/ssh/authorized_keys/acme"].status == "pass"


def test_a_dangling_drop_in_link_fails_sshd_t_in_its_own_words(node_root):
    root, case = build(node_root, "openssh-sftpuser-symlinked-dropin-twin-dangling-link")
    config = openssh.read_config(root)  # glob(3) lists the link; sshd cannot open it
    assert [hit for _, hit in config.missing_includes] == ["/etc/ssh/sshd_config.d/sftp.conf"]
    found = openssh.inventory(root, None)
    assert "/etc/ssh/sshd_config.d/sftp.conf" in listed(found)  # the node's link, as it is
    checks = by_name(openssh.checks(root, manifest_of(root, case, [])))
    test = checks["config: sshd -t"]
    assert test.status == "fail"
    assert test.detail == "exit 1: /etc/ssh/sshd_config.d/sftp.conf: No such file or directory"


# --- 2. loaded but not offered, beside Match LocalPort/Address ---------------------------------


def test_sshd_is_asked_with_a_connection_spec(node_root, tmp_path):
    root, _ = build(node_root, "openssh-devsec-match-blocks")
    copy, _ = openssh.write_copy(root, openssh.read_config(root), tmp_path)
    bare, loaded = openssh.sshd_view("/usr/sbin/sshd", copy)
    assert bare is None and loaded  # sshd -T refuses Match LocalPort without -C, keys loaded
    view, loaded = openssh.sshd_view("/usr/sbin/sshd", copy, "root", 2222)
    ecdsa = keys.describe_key((root / "etc/ssh/ssh_host_ecdsa_key").read_bytes())
    assert openssh.offered(view) == {"ssh-ed25519", "ssh-rsa"}
    assert loaded[ecdsa.fingerprint] == "ecdsa-sha2-nistp256"
    assert view["passwordauthentication"] == ["yes"]  # the LocalPort 2222 block, by sshd itself


# --- 3. groups named by negation --------------------------------------------------------------


def test_deny_groups_exemption_brings_the_group_entry(node_root):
    root, case = build(node_root, "openssh-ega-inbox")
    found = openssh.inventory(root, None, options(case))
    assert found.users == ["egasftp"]  # a member of lega, which `DenyGroups *,!lega` names
    recorded = accounts.read_entries(root, found.users)
    assert "lega:x:1000:" in recorded[0].groups


def test_a_refused_sole_member_is_kept_for_its_group(node_root):
    root, case = build(node_root, "openssh-ega-inbox")
    passwd = root / "etc/passwd"
    passwd.write_text("".join(ln for ln in passwd.open() if not ln.startswith("egasftp:")))
    found = openssh.inventory(root, None, options(case))
    assert found.users == ["lega"]  # DenyUsers lega, but the only account that carries lega
    assert any("kept for the entry of group lega" in w for w in found.warnings)
    passwd.write_text("".join(ln for ln in passwd.open() if not ln.startswith("lega:")))
    found = openssh.inventory(root, None, options(case))
    assert found.users == []
    assert any("group lega" in w and "no member" in w for w in found.warnings)


# --- 4 and 5. the smoke runs the node's config, finds where to write, checks the landing -------


@pytest.mark.integration
def test_a_partner_whose_writable_directory_is_data_passes(node_root, work_dir):
    root, case = build(node_root, "openssh-devsec-match-blocks")
    smoked = openssh.smoke(root, manifest_of(root, case, ["vendor"]), "vendor", work_dir)
    assert not_passing(smoked.checks) == {} and smoked.proven
    checks = by_name(smoked.checks)
    assert "in data" in checks["smoke: file round trip"].detail
    assert (
        "not offered: HostKeyAlgorithms omits"
        in checks["smoke: host key ecdsa-sha2-nistp256"].detail
    )
    assert "ChrootDirectory /home/vendor" in checks["smoke: login landed"].detail


@pytest.mark.integration
def test_the_login_lands_in_the_home_inside_the_chroot(node_root, work_dir):
    root, case = build(node_root, "openssh-sftpuser-symlinked-dropin")
    smoked = openssh.smoke(root, manifest_of(root, case, ["acme"]), "acme", work_dir)
    assert not_passing(smoked.checks) == {} and smoked.proven
    landed = by_name(smoked.checks)["smoke: login landed"]
    assert landed.detail.startswith("in /acme, as the config says")


@pytest.mark.integration
def test_every_change_to_the_nodes_config_is_named(node_root, work_dir):
    root, case = build(node_root, "openssh-akaku-efs-password")
    smoked = openssh.smoke(root, manifest_of(root, case, ["efsuser"]), "efsuser", work_dir)
    differs = {n: d for n, d in not_passing(smoked.checks).items() if "config differs" in n}
    assert sorted(differs.values()) == [
        "AuthenticationMethods password (/etc/ssh/sshd_config line 23) commented out for the "
        "run: no method chain is a key alone; the run logs in with its own key only",
        "PubkeyAuthentication no (/etc/ssh/sshd_config line 24) commented out for the run: "
        "public key login is off on the node; the run logs in with its own key",
    ]
    assert set(not_passing(smoked.checks)) == set(differs)  # nothing else differs or fails
    assert by_name(smoked.checks)["smoke: login landed"].detail.startswith("in /sftp, as")


@pytest.mark.integration
def test_no_writable_directory_is_a_warning(node_root, work_dir):
    root, case = build(node_root, "openssh-devsec-match-blocks")
    for held in ("data", ".ssh"):  # the two directories vendor owns in its chroot
        (root / "home/vendor" / held).chmod(0o555)
    smoked = openssh.smoke(root, manifest_of(root, case, ["vendor"]), "vendor", work_dir)
    bad = not_passing(smoked.checks)
    assert smoked.login_ok and not smoked.proven
    assert "may write to neither / nor a directory in it" in bad["smoke: writable directory"]
    assert set(bad) == {"smoke: writable directory", "smoke: file round trip"}
    assert by_name(smoked.checks)["smoke: file round trip"].status == "warn"


@pytest.mark.integration
def test_a_chroot_sshd_refuses_fails_the_smoke_in_its_own_words(node_root, work_dir):
    root, case = build(node_root, "openssh-sftpuser-symlinked-dropin-twin-chroot-owner")
    smoked = openssh.smoke(root, manifest_of(root, case, ["acme"]), "acme", work_dir)
    login = by_name(smoked.checks)["smoke: sftp login"]
    assert login.status == "fail"
    assert 'bad ownership or modes for chroot directory "/sftp/acme"' in login.detail
