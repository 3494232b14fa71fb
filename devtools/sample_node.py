"""A realistic OpenSSH SFTP node built under a root, for the demo, drills and tests."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from drkit import errors, runner
from drkit.paths import on_root

SFTP_GID = 2100
SFTP_GROUP = "sftpusers"
HOST_KEY_TYPES = ("ed25519", "rsa", "ecdsa")
TLS_NAME = "sftp.example.com"


def worker() -> tuple[int, str]:
    """Return (id offset, name suffix) for parallel test workers.

    A smoke creates the node's smoke user (and its groups) on the host for its run, so two
    workers building sample nodes must not share a user, group, uid or gid. $DRKIT_SAMPLE_WORKER
    (a small integer, one per worker) shifts the sample nodes' uids and gids by 1000 per worker
    and suffixes their group names with `-w<N>`; unset: (0, ""). The demo leaves it unset.
    """
    value = os.environ.get("DRKIT_SAMPLE_WORKER", "")
    if not value.isdigit():
        return 0, ""
    return 1000 * (int(value) + 1), f"-w{int(value)}"


def smoke_name(base: str = "drill") -> str:
    """Return the smoke user's name for this worker: base, suffixed per worker (see worker())."""
    return base + worker()[1]


def sftp_group() -> tuple[str, int]:
    """Return the sample node's sftp group name and gid (per worker, see worker())."""
    offset, suffix = worker()
    return SFTP_GROUP + suffix, SFTP_GID + offset


class _Node:
    """Writes node paths under a root with explicit owner and mode."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def dir(self, node_path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Path:
        host = on_root(self.root, node_path)
        host.mkdir(parents=True, exist_ok=True)
        os.chown(host, uid, gid)
        host.chmod(mode)
        return host

    def file(
        self, node_path: str, data: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0
    ):
        host = on_root(self.root, node_path)
        parent = "/" + str(Path(node_path).parent).lstrip("/")
        if not host.parent.is_dir():
            self.dir(parent)
        host.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chown(host, uid, gid)
        host.chmod(mode)
        return host


def _client_key_line(comment: str) -> str:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{line.decode()} {comment}\n"


def _host_key(node: _Node, key_type: str) -> str:
    path = f"/etc/ssh/ssh_host_{key_type}_key"
    host = on_root(node.root, path)
    for stale in (host, host.with_name(host.name + ".pub")):
        stale.unlink(missing_ok=True)
    argv = ["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", f"root@{TLS_NAME}", "-f", str(host)]
    done = runner.run(argv, timeout=60)
    if done.returncode != 0:
        raise errors.LocalFilesystemError(f"ssh-keygen -t {key_type} failed: {done.stderr_tail}")
    host.chmod(0o600)
    return path


def certificate_and_key(name: str, days: int = 365) -> tuple[bytes, bytes]:
    """Return (certificate PEM, private key PEM) of a fresh self-signed EC certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return certificate.public_bytes(serialization.Encoding.PEM), pem


def _tls(node: _Node) -> tuple[str, str]:
    certificate, pem = certificate_and_key(TLS_NAME)
    key_path, cert_path = f"/etc/ssl/private/{TLS_NAME}.key", f"/etc/ssl/certs/{TLS_NAME}.pem"
    node.dir("/etc/ssl/private", 0o700)
    node.dir("/etc/ssl/certs")
    node.file(key_path, pem, 0o600)
    node.file(cert_path, certificate)
    return key_path, cert_path


def build(root: Path, smoke_user: str = "drill", chroot: bool = True) -> dict:
    """Create a sample SFTP node under root and return what it holds.

    The node has sshd_config with a drop-in, fresh ed25519/rsa/ecdsa host keys, a banner,
    internal-sftp, public-key logins only, users smoke_user and partner (group sftpusers,
    authorized keys in their homes), a chroot for smoke_user when chroot is true, a TLS key and
    self-signed certificate, a post-upload script and audit logs.
    """
    node = _Node(root)
    node.dir("/")
    offset, _ = worker()
    group_name, group_id = sftp_group()
    users = {smoke_user: 2101 + offset, "partner": 2102 + offset}
    node.dir("/etc")
    passwd = [
        "root:x:0:0:root:/root:/bin/bash",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ]
    group = [
        "root:x:0:",
        "shadow:x:42:",
        "nogroup:x:65534:",
        f"{group_name}:x:{group_id}:{','.join(users)}",
    ]
    shadow = ["root:*:19800:0:99999:7:::", "nobody:*:19800:0:99999:7:::"]
    for name, uid in users.items():
        passwd.append(f"{name}:x:{uid}:{uid}:{name} sftp account:/home/{name}:/usr/sbin/nologin")
        group.append(f"{name}:x:{uid}:")
        shadow.append(f"{name}:*:19800:0:99999:7:::")
    node.file("/etc/passwd", "\n".join(passwd) + "\n")
    node.file("/etc/group", "\n".join(group) + "\n")
    node.file("/etc/shadow", "\n".join(shadow) + "\n", 0o640, gid=42)

    authorized = {}
    node.dir("/home")
    for name, uid in users.items():
        node.dir(f"/home/{name}", 0o755, uid, uid)
        node.dir(f"/home/{name}/.ssh", 0o700, uid, uid)
        path = f"/home/{name}/.ssh/authorized_keys"
        node.file(path, _client_key_line(f"{name}@client"), 0o644, uid, uid)
        authorized[name] = path

    node.dir("/etc/ssh")
    node.dir("/etc/ssh/sshd_config.d")
    host_keys = [_host_key(node, key_type) for key_type in HOST_KEY_TYPES]
    dropin = "/etc/ssh/sshd_config.d/10-hardening.conf"
    node.file(
        dropin,
        "# Site policy: sftp accounts only, short grace time.\n"
        f"AllowGroups {group_name}\n"
        "LoginGraceTime 30\n"
        "MaxAuthTries 4\n"
        "ClientAliveInterval 300\n",
    )
    match = (
        f"\nMatch User {smoke_user}\n"
        "    ChrootDirectory /srv/sftp/%u\n"
        "    ForceCommand internal-sftp -l INFO\n"
        "    AllowTcpForwarding no\n"
        if chroot
        else ""
    )
    node.file(
        "/etc/ssh/sshd_config",
        "# SFTP server for partner file exchange (managed by ops)\n"
        "Include /etc/ssh/sshd_config.d/*.conf\n\n"
        "Port 22\n"
        "ListenAddress 0.0.0.0\n"
        + "".join(f"HostKey {path}\n" for path in host_keys)
        + "\nPermitRootLogin no\n"
        "PubkeyAuthentication yes\n"
        "AuthorizedKeysFile .ssh/authorized_keys\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UsePAM no\n"
        "X11Forwarding no\n"
        "AllowTcpForwarding no\n"
        "Banner /etc/issue.net\n"
        "Subsystem sftp internal-sftp -f AUTHPRIV -l INFO\n" + match,
    )
    node.file("/etc/issue.net", "Authorised use only. Transfers are logged.\n")

    chroot_dir = None
    if chroot:
        uid = users[smoke_user]
        for path in ("/srv", "/srv/sftp", f"/srv/sftp/{smoke_user}"):
            node.dir(path)
        chroot_dir = f"/srv/sftp/{smoke_user}"
        node.dir(f"{chroot_dir}/upload", 0o755, uid, uid)
        node.file(f"{chroot_dir}/upload/invoice-0001.csv", "id,amount\n1,100.00\n", 0o644, uid, uid)

    tls_key, tls_cert = _tls(node)
    script = "/usr/local/bin/sftp-post-upload"
    node.file(
        script,
        "#!/bin/sh\n# Moves a finished upload to the processing queue.\n"
        'set -eu\nlogger -t sftp-post-upload "received $1"\nmv "$1" /srv/queue/\n',
        0o755,
    )
    node.dir("/var/log/sftp", 0o750)
    logs = ["/var/log/sftp/transfer.log", "/var/log/sftp/auth.log"]
    node.file(logs[0], f"2024-05-01T10:00:00Z {smoke_user} put upload/invoice-0001.csv 20\n", 0o640)
    node.file(logs[1], f"2024-05-01T09:59:58Z accepted publickey for {smoke_user}\n", 0o640)
    return {
        "root": str(root),
        "config": "/etc/ssh/sshd_config",
        "config_files": ["/etc/ssh/sshd_config", dropin],
        "host_keys": host_keys,
        "banner": "/etc/issue.net",
        "users": list(users),
        "smoke_user": smoke_user,
        "uids": users,
        "authorized_keys": authorized,
        "chroot": chroot_dir,
        "tls": {"key": tls_key, "certificate": tls_cert},
        "scripts": [script],
        "audit_logs": logs,
        "includes": {
            "tls": [tls_key, tls_cert],
            "scripts": [script],
            "audit_logs": ["/var/log/sftp/*"],
        },
    }


def main(argv: list[str] | None = None) -> None:
    """python -m devtools.sample_node ROOT [--smoke-user NAME] [--no-chroot] [--json]"""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m devtools.sample_node", description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--smoke-user", default="drill")
    parser.add_argument("--no-chroot", action="store_true")
    parser.add_argument("--json", action="store_true", help="print what was made as JSON")
    options = parser.parse_args(argv)
    made = build(options.root, smoke_user=options.smoke_user, chroot=not options.no_chroot)
    print(json.dumps(made, indent=2) if options.json else f"sample node built under {options.root}")


if __name__ == "__main__":
    main()
