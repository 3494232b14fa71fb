"""A Pure-FTPd FTPS node built under a root, for tests and the demo: Debian's shipped
configuration with virtual users and TLS switched on.

Source of the shipped files: Debian 12's pure-ftpd-common 1.0.50-2.1 (/etc/pure-ftpd/conf/*,
the auth/65unix and auth/70pam links, /etc/pam.d/pure-ftpd). What an operator adds to turn on
virtual users and FTPS, as README.Virtual-Users and README.TLS of the same package say:
auth/50pure -> ../conf/PureDB, conf/ChrootEveryone yes, conf/TLS 2 (TLS required for
logins), users made with `pure-pw useradd -d` (chrooted at their homes) and `pure-pw mkdb`,
and /etc/ssl/private/pure-ftpd.pem holding the key and the certificate, mode 0600.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from devtools.sample_node import _Node, certificate_and_key, worker
from drkit import errors, runner
from drkit.paths import on_root
from drkit.profiles.common import authfiles, programs

TLS_NAME = "ftp.example.com"
PEM = "/etc/ssl/private/pure-ftpd.pem"
PASSWD = "/etc/pure-ftpd/pureftpd.passwd"
PDB = "/etc/pure-ftpd/pureftpd.pdb"

# /etc/pure-ftpd/conf/* as pure-ftpd-common 1.0.50-2.1 ships them (one value per file).
DEBIAN_CONF = {
    "AltLog": "clf:/var/log/pure-ftpd/transfer.log",
    "FSCharset": "UTF-8",
    "MinUID": "1000",
    "NoAnonymous": "yes",
    "PAMAuthentication": "yes",
    "PureDB": PDB,
    "TLSCipherSuite": "HIGH",
    "UnixAuthentication": "no",
}
DEBIAN_AUTH = {"65unix": "../conf/UnixAuthentication", "70pam": "../conf/PAMAuthentication"}
DEBIAN_PAM = """# PAM config for pure-ftpd

# Standard behaviour for ftpd(8).
auth	required	pam_listfile.so item=user sense=deny file=/etc/ftpusers onerr=succeed

# Uncomment next line to allow non-anonymous ftp access ONLY for users,
# listed in /etc/ftpallow
#auth    required        pam_listfile.so item=user sense=allow file=/etc/ftpallow onerr=fail

# Note: pure-ftpd handles anonymous logins on its own. Do not enable pam_ftp.so.

# Standard pam includes
@include common-account
@include common-session
@include common-auth
auth	required	pam_shells.so
"""


def pure_pw(*args: str, password: str | None = None) -> None:
    """Run pure-pw (the host's, else .tools/bin's); a password goes on stdin, twice."""
    program = programs.find_program("pure-pw", ["/usr/bin/pure-pw"])
    if program is None:
        raise errors.UsageError("pure-pw is not installed (scripts/bootstrap unpacks it)")
    secret = f"{password}\n{password}\n" if password is not None else None
    done = runner.run([program, *args], input_text=secret, timeout=120)
    if done.returncode != 0:
        raise errors.LocalFilesystemError(f"pure-pw {args[0]} failed: {done.stderr_tail}")


def pureftpd(root: Path, smoke_user: str = "drill", tls_level: int = 2) -> dict:
    """Create a Pure-FTPd node: Debian's conf/ and auth/ plus PureDB virtual users (the smoke
    user made by pure-pw useradd -d, a partner line with a crypt hash; both chrooted),
    ChrootEveryone, TLS tls_level with a key+certificate
    bundle, an AltLog; return what was made, with the smoke user's password."""
    node = _Node(root)
    node.dir("/")
    offset, _ = worker()
    gid = 2900 + offset
    users = {smoke_user: 2901 + offset, "partner": 2902 + offset}
    for path in ("/etc", "/etc/pure-ftpd", "/etc/pure-ftpd/conf", "/etc/pure-ftpd/auth"):
        node.dir(path)
    node.file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\n")
    node.file("/etc/group", "root:x:0:\n")
    conf = {**DEBIAN_CONF, "ChrootEveryone": "yes", "TLS": str(tls_level)}
    for name, value in conf.items():
        node.file(f"/etc/pure-ftpd/conf/{name}", value + "\n")
    for name, target in {**DEBIAN_AUTH, "50pure": "../conf/PureDB"}.items():
        on_root(root, f"/etc/pure-ftpd/auth/{name}").symlink_to(target)
    node.file("/etc/pam.d/pure-ftpd", DEBIAN_PAM)
    node.file("/etc/ftpusers", "root\ndaemon\nnobody\n")
    node.file("/etc/default/pure-ftpd-common", "STANDALONE_OR_INETD=standalone\n"
              "VIRTUALCHROOT=false\nUPLOADSCRIPT=\nUPLOADUID=\nUPLOADGID=\n")  # fmt: skip
    password = secrets.token_urlsafe(16)
    passwd, pdb = on_root(root, PASSWD), on_root(root, PDB)
    node.dir("/srv")
    node.dir("/srv/ftp")
    for name, uid in users.items():
        home = f"/srv/ftp/{name}"
        if name == smoke_user:  # pure-pw 1.0.50's argon2id hash (~1 s of CPU per user)
            pure_pw("useradd", name, "-u", str(uid), "-g", str(gid), "-d", home,
                    "-f", str(passwd), password=password)  # fmt: skip
        else:  # a crypt(3) SHA-512 line, as older pure-pw releases wrote (pure-ftpd takes both)
            secret = authfiles.hash_password(secrets.token_urlsafe(16))
            with passwd.open("a") as out:
                out.write(f"{name}:{secret}:{uid}:{gid}::{home}/./::::::::::::\n")
        node.dir(home, 0o755, uid, gid)
        node.file(f"{home}/statement.txt", "balance 10\n", 0o644, uid, gid)
    # pure-pw writes node paths into the passwd file; the PureDB is built from it.
    pure_pw("mkdb", str(pdb), "-f", str(passwd))
    passwd.chmod(0o600)
    pdb.chmod(0o600)
    certificate, key = certificate_and_key(TLS_NAME)
    node.dir("/etc/ssl")
    node.dir("/etc/ssl/private", 0o700)
    node.file(PEM, key + certificate, 0o600)
    node.dir("/var/log/pure-ftpd", 0o755)
    log = "/var/log/pure-ftpd/transfer.log"
    node.file(log, f'127.0.0.1 - {smoke_user} [06/May/2024:10:00:00 +0000] "PUT /x" 200 11\n')
    return {
        "root": str(root),
        "config": "/etc/pure-ftpd/conf",
        "tls": {"bundle": PEM, "name": TLS_NAME},
        "users": list(users),
        "uids": users,
        "smoke_user": smoke_user,
        "password": password,
        "passwd": PASSWD,
        "puredb": PDB,
        "audit_logs": [log],
    }
