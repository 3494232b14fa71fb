"""A ProFTPD node whose accounts live in OpenLDAP (mod_ldap), the way an active-active pool
shares one authority: a real `slapd` on 127.0.0.1 serves the accounts, the node's mod_ldap
settings (LDAPServer with its ssl-ca:, the bind DN secret in an Included 0600 file) are backed up
and checked, and the smoke logs in over SFTP as an LDAP user. With slapd stopped the same
login fails: LDAP really is the authority.

Nothing is mocked: Debian's slapd, ldap-utils, proftpd and mod_ldap, restic and SeaweedFS.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
from nodes import drkit, init_node, wait_for

from devtools.sample_node import _Node, _tls
from drkit.paths import on_root
from drkit.profiles.common import smokerun

pytestmark = pytest.mark.integration

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=drkit,dc=test"
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")


def _worker_number() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return int(worker[2:]) if worker[2:].isdigit() else 0


@pytest.fixture
def slapd(node_root):
    """Start slapd on a free 127.0.0.1 port with one LDAP user (a key-only SFTP account) and
    a read-only bind DN for proftpd; stop it and remove its files afterwards."""
    if not (os.access(SLAPD, os.X_OK) and shutil.which("ldapadd")):
        pytest.fail("slapd/ldap-utils missing: run ./scripts/bootstrap")
    work = node_root / "slapd"
    (work / "db").mkdir(parents=True)
    admin_secret, bind_secret = secrets.token_urlsafe(18), secrets.token_urlsafe(18)
    admin_file = work / "admin.pw"
    admin_file.write_text(admin_secret)  # ldapadd -y reads it: no trailing newline
    admin_file.chmod(0o600)
    port = smokerun.free_port()
    conf = work / "slapd.conf"
    hashed = subprocess.run(
        ["slappasswd", "-T", str(admin_file)], check=True, capture_output=True, text=True
    ).stdout.strip()
    conf.write_text(
        "".join(f"include /etc/ldap/schema/{name}.schema\n" for name in SCHEMAS)
        + f"modulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {work}/slapd.pid\n"
        f'database mdb\nsuffix "{SUFFIX}"\nrootdn "cn=admin,{SUFFIX}"\nrootpw {hashed}\n'
        f"directory {work}/db\n"
        "access to attrs=userPassword by self write by anonymous auth by * none\n"
        "access to * by * read\n"
    )
    conf.chmod(0o600)
    uid = 29500 + _worker_number()
    user = f"lina{_worker_number()}"
    home = work / "home"
    home.mkdir(mode=0o755)
    os.chown(home, uid, uid)
    bind_hash = subprocess.run(
        ["slappasswd", "-T", "/dev/stdin"],
        input=bind_secret,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ldif = work / "entries.ldif"
    ldif.write_text(
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: drkit\ndc: drkit\n\n"
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n"
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n"
        f"dn: cn=proftpd,{SUFFIX}\nobjectClass: organizationalRole\n"
        f"objectClass: simpleSecurityObject\ncn: proftpd\nuserPassword: {bind_hash}\n\n"
        f"dn: uid={user},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\n"
        f"objectClass: posixAccount\nuid: {user}\ncn: Lina\nsn: Lina\nuidNumber: {uid}\n"
        f"gidNumber: {uid}\nhomeDirectory: {home}\nloginShell: /bin/sh\n\n"
        f"dn: cn=ldapftp,ou=groups,{SUFFIX}\nobjectClass: posixGroup\ncn: ldapftp\n"
        f"gidNumber: {uid}\nmemberUid: {user}\n"
    )
    process = subprocess.Popen(
        [SLAPD, "-f", str(conf), "-h", f"ldap://127.0.0.1:{port}/", "-d", "0"],
        stdout=subprocess.DEVNULL,
        stderr=(work / "slapd.log").open("w"),
    )
    try:
        url = f"ldap://127.0.0.1:{port}"

        def added() -> bool:
            done = subprocess.run(
                ["ldapadd", "-x", "-H", url, "-D", f"cn=admin,{SUFFIX}", "-y", str(admin_file),
                 "-f", str(ldif)],
                capture_output=True, text=True,
            )  # fmt: skip
            assert process.poll() is None, (work / "slapd.log").read_text()
            return done.returncode == 0

        wait_for(added, 15, "slapd to take the directory's entries", step=0.2)
        yield {"url": url, "user": user, "uid": uid, "home": home, "bind": bind_secret,
               "process": process}  # fmt: skip
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _ldap_node(root: Path, ldap: dict) -> str:
    """A ProFTPD node on root: SFTP in a VirtualHost, accounts from mod_ldap in <Global>,
    the bind DN and its password in an Included 0600 file."""
    node = _Node(root)
    _, ca_cert = _tls(node)  # an LDAP CA bundle mod_ldap is told to trust (ssl-ca:)
    key = on_root(root, "/etc/proftpd/ssh_host_ed25519_key")
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (root / "etc/proftpd/authorized_keys").mkdir()
    (root / "etc/proftpd/modules.conf").write_text(
        "ModulePath /usr/lib/proftpd\nLoadModule mod_sftp.c\nLoadModule mod_ldap.c\n"
    )
    secret = root / "etc/proftpd/ldap.secret.conf"
    secret.write_text(f'LDAPBindDN "cn=proftpd,{SUFFIX}" "{ldap["bind"]}"\n')
    secret.chmod(0o600)
    (root / "etc/proftpd/proftpd.conf").write_text(
        "Include /etc/proftpd/modules.conf\n"
        "ServerType standalone\nDefaultAddress 127.0.0.1\nSocketBindTight on\nUseIPv6 off\n"
        f"Port {smokerun.free_port()}\nUser nobody\nGroup nogroup\n"
        "<Global>\n"
        "  <IfModule mod_ldap.c>\n"
        f"    LDAPServer {ldap['url']}/??sub ssl-ca:{ca_cert}\n"
        "    Include /etc/proftpd/ldap.secret.conf\n"
        f'    LDAPUsers "ou=people,{SUFFIX}" "(uid=%u)"\n'
        f'    LDAPGroups "ou=groups,{SUFFIX}"\n'
        "    AuthOrder mod_ldap.c\n"
        "  </IfModule>\n"
        "  RequireValidShell off\n"
        "  DefaultRoot ~\n"
        "</Global>\n"
        "<VirtualHost 127.0.0.1>\n"
        f"  Port {smokerun.free_port()}\n"
        "  SFTPEngine on\n"
        "  SFTPHostKey /etc/proftpd/ssh_host_ed25519_key\n"
        "  SFTPAuthMethods publickey\n"
        "  SFTPAuthorizedUserKeys file:/etc/proftpd/authorized_keys/%u\n"
        "  SFTPLog /var/log/proftpd/sftp.log\n"
        "</VirtualHost>\n"
    )
    (root / "var/log/proftpd").mkdir(parents=True)
    return ca_cert


def statuses(document: dict) -> dict[str, dict]:
    return {check["name"]: check for check in document["checks"]}


def test_proftpd_ldap_node_backs_up_restores_and_logs_in_as_an_ldap_user(
    node_root, s3_repository, slapd
):
    root, work = node_root / "root", node_root / "work"
    work.mkdir(mode=0o755)
    ca_cert = _ldap_node(root, slapd)
    config, _ = init_node(root, s3_repository, work, "proftpd", slapd["user"], "ldap-1")
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0, backup
    code, shown = drkit("show", "latest", "--config", str(config))
    held = {entry["path"] for entry in shown["files"]}
    assert {"/etc/proftpd/ldap.secret.conf", "/etc/proftpd/proftpd.conf", ca_cert} <= held, held

    shutil.rmtree(root)
    code, restored = drkit("restore", "latest", "--smoke", "--config", str(config))
    found = statuses(restored)
    assert code == 0, restored
    assert found["smoke: sftp login"]["status"] == "pass", found
    assert slapd["user"] in found["smoke: sftp login"]["detail"]
    assert found["ldap: bind secret /etc/proftpd/ldap.secret.conf"]["status"] == "pass", found
    assert any(n.startswith("ldap: LDAPServer") and c["status"] == "pass" for n, c in found.items())
    assert slapd["bind"] not in str(restored)  # the bind password is never shown

    # A world-readable secret file is reported; the authority gone, the LDAP login fails.
    (root / "etc/proftpd/ldap.secret.conf").chmod(0o644)
    slapd["process"].terminate()
    slapd["process"].wait(10)
    code, checked = drkit("check", "--target", str(root), "--smoke", "--config", str(config))
    found = statuses(checked)
    assert code == 1, checked
    assert found["ldap: bind secret /etc/proftpd/ldap.secret.conf"]["status"] == "warn"
    assert found["smoke: sftp login"]["status"] == "fail", found
