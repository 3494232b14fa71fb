"""Realistic ProFTPD, vsftpd and SFTPPlus nodes built under a root, for the demo and tests.

Each builder writes the files a production node of that kind has (config and includes, host
keys, TLS key and certificate, virtual or system users, data trees, logs) and returns what it
made, with the smoke user's password where the server needs one (tests log in with it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from devtools.sample_node import _Node, _tls, certificate_and_key, worker
from drkit import errors, runner
from drkit.paths import on_root
from drkit.profiles.common import authfiles

FTPS_NAME = "sftp.example.com"  # the name sample_node's certificate is issued for


def _client_public_line() -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def _ssh_host_key(node: _Node, node_path: str, key_type: str) -> str:
    """Write a host key mod_sftp can serve: PEM for rsa/ecdsa, OpenSSH format for ed25519."""
    host = on_root(node.root, node_path)
    for stale in (host, host.with_name(host.name + ".pub")):
        stale.unlink(missing_ok=True)
    pem = ["-m", "PEM"] if key_type != "ed25519" else []
    argv = ["ssh-keygen", "-q", "-t", key_type, *pem, "-N", "", "-C", "", "-f", str(host)]
    done = runner.run(argv, timeout=60)
    if done.returncode != 0:
        raise errors.LocalFilesystemError(f"ssh-keygen -t {key_type} failed: {done.stderr_tail}")
    host.chmod(0o600)
    return node_path


def _base_accounts(node: _Node, extra_passwd: list[str], extra_group: list[str]) -> None:
    node.dir("/etc")
    passwd = [
        "root:x:0:0:root:/root:/bin/bash",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
        *extra_passwd,
    ]
    group = ["root:x:0:", "shadow:x:42:", "nogroup:x:65534:", *extra_group]
    shadow = [f"{line.split(':')[0]}:*:19800:0:99999:7:::" for line in passwd]
    # A root that already holds accounts (an OpenSSH sample node) keeps them: entries are added.
    for path, lines, mode, gid in (
        ("/etc/passwd", passwd, 0o644, 0),
        ("/etc/group", group, 0o644, 0),
        ("/etc/shadow", shadow, 0o640, 42),
    ):
        host = on_root(node.root, path)
        existing = host.read_text().splitlines() if host.is_file() else []
        names = {line.split(":")[0] for line in existing}
        merged = existing + [line for line in lines if line.split(":")[0] not in names]
        node.file(path, "\n".join(merged) + "\n", mode, gid=gid)


def proftpd(root: Path, smoke_user: str = "drill") -> dict:
    """Create a ProFTPD node: FTPS (mod_tls) on 21 and SFTP (mod_sftp) on 2222 in a
    VirtualHost, virtual users in AuthUserFile with RFC 4716 keys, DefaultRoot ~ homes."""
    node = _Node(root)
    node.dir("/")
    _base_accounts(
        node,
        ["proftpd:x:105:65534::/run/proftpd:/usr/sbin/nologin"],
        [],
    )
    users = {smoke_user: 2201, "partner": 2202}
    password = secrets.token_urlsafe(16)
    node.dir("/etc/proftpd", 0o755)
    node.dir("/etc/proftpd/conf.d")
    node.dir("/etc/proftpd/authorized_keys")
    lines = []
    for name, uid in users.items():
        secret = password if name == smoke_user else secrets.token_urlsafe(16)
        lines.append(
            f"{name}:{authfiles.hash_password(secret)}:{uid}:2200::/srv/ftp/{name}:/bin/false"
        )
        node.file(
            f"/etc/proftpd/authorized_keys/{name}",
            authfiles.rfc4716(_client_public_line(), f"{name}@client"),
        )
    node.file("/etc/proftpd/ftpd.passwd", "\n".join(lines) + "\n", 0o640)
    node.file("/etc/proftpd/ftpd.group", f"ftpusers:x:2200:{','.join(users)}\n", 0o644)
    host_keys = [
        _ssh_host_key(node, "/etc/proftpd/ssh_host_ed25519_key", "ed25519"),
        _ssh_host_key(node, "/etc/proftpd/ssh_host_rsa_key", "rsa"),
    ]
    tls_key, tls_cert = _tls(node)
    node.file(
        "/etc/proftpd/modules.conf",
        "# Modules (Debian: /etc/proftpd/modules.conf)\n"
        "ModulePath /usr/lib/proftpd\n"
        "LoadModule mod_tls.c\n"
        "LoadModule mod_sftp.c\n",
    )
    auth = (
        "AuthOrder mod_auth_file.c\n"
        "AuthUserFile /etc/proftpd/ftpd.passwd\n"
        "AuthGroupFile /etc/proftpd/ftpd.group\n"
        "RequireValidShell off\n"
        "DefaultRoot ~\n"
    )
    node.file(
        "/etc/proftpd/proftpd.conf",
        "# Partner file exchange: FTPS on 21, SFTP on 2222 (managed by ops)\n"
        "Include /etc/proftpd/modules.conf\n"
        'ServerName "files.example.com"\n'
        "ServerType standalone\n"
        "DefaultServer on\n"
        "UseIPv6 off\n"
        "Port 21\n"
        "PassivePorts 49152 49200\n"
        "User proftpd\n"
        "Group nogroup\n"
        "Umask 022 022\n"
        "AllowOverwrite on\n"
        "WtmpLog off\n"
        "PidFile /run/proftpd.pid\n"
        "ScoreboardFile /run/proftpd/proftpd.scoreboard\n"
        + auth
        + "TransferLog /var/log/proftpd/xferlog\n"
        "SystemLog /var/log/proftpd/proftpd.log\n"
        "Include /etc/proftpd/tls.conf\n"
        "Include /etc/proftpd/conf.d/\n",
    )
    node.file(
        "/etc/proftpd/tls.conf",
        "<IfModule mod_tls.c>\n"
        "  TLSEngine on\n"
        "  TLSLog /var/log/proftpd/tls.log\n"
        "  TLSProtocol TLSv1.2 TLSv1.3\n"
        f"  TLSECCertificateFile {tls_cert}\n"
        f"  TLSECCertificateKeyFile {tls_key}\n"
        "  TLSRequired on\n"
        "  TLSVerifyClient off\n"
        "</IfModule>\n",
    )
    node.file(
        "/etc/proftpd/conf.d/sftp.conf",
        "<IfModule mod_sftp.c>\n"
        "<VirtualHost 0.0.0.0>\n"
        "  Port 2222\n"
        "  SFTPEngine on\n"
        "  SFTPLog /var/log/proftpd/sftp.log\n"
        + "".join(f"  SFTPHostKey {path}\n" for path in host_keys)
        + "  SFTPAuthMethods publickey password\n"
        "  SFTPAuthorizedUserKeys file:/etc/proftpd/authorized_keys/%u\n"
        "  WtmpLog off\n"
        + "".join(f"  {line}\n" for line in auth.splitlines())
        + "  TransferLog /var/log/proftpd/xferlog\n"
        "</VirtualHost>\n"
        "</IfModule>\n",
    )
    node.dir("/srv")
    node.dir("/srv/ftp")
    for name, uid in users.items():
        node.dir(f"/srv/ftp/{name}", 0o755, uid, 2200)
        node.dir(f"/srv/ftp/{name}/upload", 0o755, uid, 2200)
        node.file(f"/srv/ftp/{name}/upload/order-1.csv", "id,qty\n1,5\n", 0o644, uid, 2200)
    node.dir("/var/log/proftpd", 0o750)
    logs = ["/var/log/proftpd/xferlog", "/var/log/proftpd/tls.log", "/var/log/proftpd/sftp.log"]
    node.file(
        logs[0],
        "Mon May  6 10:00:00 2024 0 10.0.0.9 12 /upload/order-1.csv b _ i r "
        f"{smoke_user} ftp 0 * c\n",
        0o640,
    )
    node.file(
        logs[1], "2024-05-06 10:00:00,100 mod_tls/2.9.2[1]: TLSv1.3 connection accepted\n", 0o640
    )
    node.file(logs[2], "2024-05-06 10:01:00,100 mod_sftp/1.1.1[2]: client connected\n", 0o640)
    node.file("/var/log/proftpd/proftpd.log", "2024-05-06 09:59:00,000 server started\n", 0o640)
    return {
        "root": str(root),
        "config": "/etc/proftpd/proftpd.conf",
        "host_keys": host_keys,
        "tls": {"key": tls_key, "certificate": tls_cert, "name": FTPS_NAME},
        "users": list(users),
        "smoke_user": smoke_user,
        "password": password,
        "audit_logs": logs,
    }


def vsftpd(root: Path, smoke_user: str = "drill") -> dict:
    """Create a vsftpd FTPS node: system users authenticated by PAM (pam_pwdfile), a userlist,
    per-user config with local_root, forced TLS, xferlog."""
    node = _Node(root)
    node.dir("/")
    offset, suffix = worker()
    gid = 2300 + offset
    users = {smoke_user: 2301 + offset, "partner": 2302 + offset}
    _base_accounts(
        node,
        [
            f"{name}:x:{uid}:{gid}:{name} ftps:/srv/ftp/{name}:/usr/sbin/nologin"
            for name, uid in users.items()
        ],
        [f"ftpusers{suffix}:x:{gid}:" + ",".join(users)],
    )
    password = secrets.token_urlsafe(16)
    node.dir("/etc/vsftpd", 0o755)
    node.dir("/etc/vsftpd/user_conf", 0o755)
    credentials = []
    for name in users:
        secret = password if name == smoke_user else secrets.token_urlsafe(16)
        credentials.append(f"{name}:{authfiles.hash_password(secret)}")
        node.file(f"/etc/vsftpd/user_conf/{name}", f"local_root=/srv/ftp/{name}\n")
    node.file("/etc/vsftpd/ftpd.passwd", "\n".join(credentials) + "\n", 0o600)
    node.file("/etc/vsftpd.userlist", "\n".join(users) + "\n")
    node.file(
        "/etc/pam.d/vsftpd",
        "# vsftpd: accounts from /etc/vsftpd/ftpd.passwd only\n"
        "auth     required pam_pwdfile.so pwdfile=/etc/vsftpd/ftpd.passwd\n"
        "account  required pam_permit.so\n"
        "session  required pam_permit.so\n",
    )
    tls_key, tls_cert = _tls(node)
    node.file(
        "/etc/vsftpd.conf",
        "# FTPS for partners (managed by ops)\n"
        "listen=YES\nlisten_ipv6=NO\nlisten_port=21\n"
        "anonymous_enable=NO\nlocal_enable=YES\nwrite_enable=YES\nlocal_umask=022\n"
        "chroot_local_user=YES\n"
        "secure_chroot_dir=/var/run/vsftpd/empty\n"
        "pam_service_name=vsftpd\n"
        "userlist_enable=YES\nuserlist_deny=NO\nuserlist_file=/etc/vsftpd.userlist\n"
        "user_config_dir=/etc/vsftpd/user_conf\n"
        "xferlog_enable=YES\nxferlog_file=/var/log/vsftpd/xferlog\n"
        "pasv_min_port=50000\npasv_max_port=50100\n"
        "ssl_enable=YES\n"
        f"rsa_cert_file={tls_cert}\nrsa_private_key_file={tls_key}\n"
        "force_local_logins_ssl=YES\nforce_local_data_ssl=YES\n"
        "ssl_tlsv1=NO\nssl_sslv2=NO\nssl_sslv3=NO\n",
    )
    node.dir("/srv")
    node.dir("/srv/ftp")
    for name, uid in users.items():
        node.dir(f"/srv/ftp/{name}", 0o755)  # vsftpd refuses a writable chroot root
        node.dir(f"/srv/ftp/{name}/upload", 0o755, uid, gid)
        node.file(f"/srv/ftp/{name}/upload/statement.txt", "balance 10\n", 0o644, uid, gid)
    node.dir("/var/run/vsftpd/empty")  # secure_chroot_dir: without it vsftpd answers 500 OOPS
    node.dir("/var/log/vsftpd", 0o750)
    log = "/var/log/vsftpd/xferlog"
    node.file(
        log,
        "Mon May  6 10:00:00 2024 1 10.0.0.7 11 /upload/statement.txt b _ o r "
        f"{smoke_user} ftp 0 * c\n",
        0o640,
    )
    return {
        "root": str(root),
        "config": "/etc/vsftpd.conf",
        "tls": {"key": tls_key, "certificate": tls_cert, "name": FTPS_NAME},
        "users": list(users),
        "smoke_user": smoke_user,
        "password": password,
        "audit_logs": [log],
    }


SFTPPLUS_UID = 2400
SFTPPLUS_UUID = "5bd8e7ab-3f1e-4c60-9d3a-4d1b2c6f0e11"


def sftpplus(root: Path, smoke_user: str = "drill", install: str = "/opt/sftpplus") -> dict:
    """Create an SFTPPlus node as the product lays it out (the product itself is not installed:
    no bin/): configuration/ with server.ini (services, authentications, accounts, event
    handlers, resources, vault items both external and inline), server.override.ini, vault
    files for the SSH host keys and the FTPS certificate, an older-release manager certificate
    and key named by ssl_certificate/ssl_key, cache.db3; extension/, an event-handler script,
    an account's authorized keys and home, log/ (server.log, server.db3), the systemd unit
    and the `sftpplus` service user owning it all."""
    import sqlite3

    node = _Node(root)
    node.dir("/")
    uid = SFTPPLUS_UID
    _base_accounts(
        node,
        [f"sftpplus:x:{uid}:{uid}:SFTPPlus service:{install}:/usr/sbin/nologin"],
        [f"sftpplus:x:{uid}:"],
    )
    node.dir("/opt")
    node.dir(install, 0o755, uid, uid)
    for name in ("configuration", "configuration/vault", "configuration/keys", "extension"):
        node.dir(f"{install}/{name}", 0o750 if name != "extension" else 0o755, uid, uid)
    node.dir(f"{install}/log", 0o750, uid, uid)
    node.dir(f"{install}/scripts", 0o755)

    vault = f"{install}/configuration/vault"
    host_keys = [
        _ssh_host_key(node, f"{vault}/ssh-host-ed25519.key", "ed25519"),
        _ssh_host_key(node, f"{vault}/ssh-host-rsa.key", "rsa"),
    ]
    for path in host_keys:
        on_root(root, path + ".pub").unlink(missing_ok=True)  # the vault holds the key only
        os.chown(on_root(root, path), uid, uid)
    ftps_certificate, ftps_key = certificate_and_key(FTPS_NAME)
    ftps = f"{vault}/ftps-certificate.pem"
    node.file(ftps, ftps_certificate + ftps_key, 0o600, uid, uid)
    manager_certificate, manager_key = certificate_and_key("manager.example.com")
    manager = {
        "certificate": f"{install}/configuration/manager.crt",
        "key": f"{install}/configuration/manager.key",
    }
    node.file(manager["certificate"], manager_certificate, 0o644, uid, uid)
    node.file(manager["key"], manager_key, 0o600, uid, uid)
    partner_ca, _ = certificate_and_key("Partner Issuing CA", days=3650)
    secrets_vault = f"{install}/configuration/secrets.vault"
    node.file(
        secrets_vault,
        "# SFTPPlus encrypted vault\n" + secrets.token_hex(64) + "\n",
        0o600,
        uid,
        uid,
    )
    cache = on_root(root, f"{install}/configuration/cache.db3")
    with contextlib.closing(sqlite3.connect(cache)) as database, database:
        database.execute("CREATE TABLE cache (key TEXT PRIMARY KEY, value BLOB)")
        database.execute("INSERT INTO cache VALUES ('schema', '4.30')")
    os.chown(cache, uid, uid)
    cache.chmod(0o600)

    authorized = f"{install}/configuration/keys/partner.pub"
    node.file(authorized, _client_public_line() + " partner@client\n", 0o600, uid, uid)
    home = "/srv/sftpplus/partner"
    node.dir("/srv")
    node.dir("/srv/sftpplus")
    node.dir(home, 0o750, uid, uid)
    node.dir(f"{home}/inbox", 0o750, uid, uid)
    node.file(f"{home}/inbox/payroll-2024-05.csv", "id,amount\n1,1200.00\n", 0o640, uid, uid)
    script = f"{install}/scripts/post-upload.sh"
    node.file(
        script,
        "#!/bin/sh\n# Called by SFTPPlus after each upload: queue the file for processing.\n"
        'set -eu\nmv "$1" /srv/queue/\n',
        0o755,
    )
    node.file(
        f"{install}/extension/partner_routing.py",
        '"""SFTPPlus extension: route partner uploads by file name."""\n\n\n'
        "def route(path):\n    return 'payroll' if 'payroll' in path else 'default'\n",
        0o644,
        uid,
        uid,
    )
    pem_block = "\n".join("    " + line for line in partner_ca.decode().strip().splitlines())
    server_ini = f"""# SFTPPlus configuration, managed by ops. Restart the service after editing.
[server]
uuid = {SFTPPLUS_UUID}
name = sftpplus-1
authentications = DEFAULT-AUTHENTICATION, ban-ip
manager_authentications = DEFAULT-AUTHENTICATION
ssh_server_keys = ssh-host-ed25519, ssh-host-rsa
tls_private_certificate = ftps-certificate
password_minimum_strength = 4

[services/sftp-1]
enabled = Yes
name = sftp-1
type = ssh
address = 0.0.0.0
port = 10022
ssh_cipher_list = secure

[services/ftps-1]
enabled = Yes
name = ftps-1
type = ftpsi
address = 0.0.0.0
port = 10990
passive_port_range = 50000-50100

[services/manager]
enabled = Yes
name = manager
type = manager
address = 127.0.0.1
port = 10020
ssl_certificate = configuration/manager.crt
ssl_key = configuration/manager.key

[authentications/DEFAULT-AUTHENTICATION]
enabled = Yes
type = application
name = SFTPPlus Accounts

[authentications/ban-ip]
enabled = Yes
type = ip-time-ban
name = Ban IP after failed logins
ban_interval = 300

[groups/DEFAULT_GROUP]
enabled = Yes
name = DEFAULT_GROUP
allow_certificate_authentication = Yes

[accounts/7b2e9f0c-partner]
enabled = Yes
type = application
name = partner
group = DEFAULT_GROUP
home_folder_path = {home}
ssh_authorized_keys_path = configuration/keys/partner.pub
password = $5$T2ZVaMHqEOJvPIYZ$tYqlGHJYZrCpXCnSWxXDhQgSKYEqH6HRMqGvCnSHbB0

[event-handlers/a1d7c3e2-post-upload]
enabled = Yes
type = external-executable
name = Queue finished uploads
target = finished-upload
executable_path = {script}

[event-handlers/b3e1f9a4-activity-log]
enabled = Yes
type = local-file
name = Activity log
path = log/activity.log

[event-handlers/DEFAULT-DATABASE]
enabled = Yes
type = database
name = Event database
path = log/server.db3

[resources/DEFAULT-VAULT]
enabled = Yes
type = vault
name = Credentials vault
external_vault_file = configuration/secrets.vault

[vault-items/ssh-host-ed25519]
type = ssh-key
name = SSH host key (ed25519)
content = external-file:configuration/vault/ssh-host-ed25519.key

[vault-items/ssh-host-rsa]
type = ssh-key
name = SSH host key (rsa)
content = external-file:{vault}/ssh-host-rsa.key

[vault-items/ftps-certificate]
type = x509-certificate
name = FTPS certificate and key
content = external-file:configuration/vault/ftps-certificate.pem

[vault-items/partner-ca]
type = x509-certificate
name = Partner issuing CA
content =
{pem_block}
"""
    config = f"{install}/configuration/server.ini"
    node.file(config, server_ini, 0o600, uid, uid)
    override = f"{install}/configuration/server.override.ini"
    node.file(
        override,
        "# Node-local settings, applied on top of server.ini.\n"
        "[services/sftp-1]\naddress = 10.0.0.21\n",
        0o600,
        uid,
        uid,
    )
    logs = [f"{install}/log/server.log", f"{install}/log/activity.log", f"{install}/log/server.db3"]
    node.file(
        logs[0],
        "2024-05-06 10:00:00 | 20156 | Service sftp-1 started on 0.0.0.0:10022\n",
        0o640,
        uid,
        uid,
    )
    node.file(
        logs[1],
        f"2024-05-06 10:01:02 | partner | upload {home}/inbox/payroll-2024-05.csv\n",
        0o640,
        uid,
        uid,
    )
    events = on_root(root, logs[2])
    with contextlib.closing(sqlite3.connect(events)) as database, database:
        database.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, time TEXT, message TEXT)")
        database.execute(
            "INSERT INTO events (time, message) VALUES ('2024-05-06T10:00:00Z', 'started')"
        )
    os.chown(events, uid, uid)
    events.chmod(0o640)
    unit = "/etc/systemd/system/sftpplus.service"
    node.dir("/etc/systemd")
    node.dir("/etc/systemd/system")
    node.file(
        unit,
        "[Unit]\nDescription=SFTPPlus file transfer server\nAfter=network.target\n\n"
        f"[Service]\nType=simple\nUser=sftpplus\nWorkingDirectory={install}\n"
        f"ExecStart={install}/bin/admin-commands.sh start-in-foreground\n\n"
        "[Install]\nWantedBy=multi-user.target\n",
    )
    return {
        "root": str(root),
        "install": install,
        "config": config,
        "override": override,
        "uuid": SFTPPLUS_UUID,
        "host_keys": host_keys,
        "tls": {"certificate": ftps, "name": FTPS_NAME},
        "manager_tls": manager,
        "vault_files": [*host_keys, ftps, secrets_vault],
        "secrets_vault": secrets_vault,
        "authorized_keys": [authorized],
        "homes": [home],
        "scripts": [script, f"{install}/extension/partner_routing.py"],
        "audit_logs": logs,
        "cache": f"{install}/configuration/cache.db3",
        "unit": unit,
        "service_user": "sftpplus",
        "smoke_user": smoke_user,
    }
