"""What a live service presents to its clients: SSH host keys, an FTPS certificate, a login.

The identity proof asks the addresses clients use (each node's own, and the shared address in
front of a pair or a pool) what they serve, the way a client meets it: ssh-keyscan for host
keys, an FTP `AUTH TLS` handshake for the certificate, and a real login pinned to the keys
and certificate of a signed snapshot (the client refuses anything else, as partners' pinned
clients do). Nothing here knows a server profile.
"""

from __future__ import annotations

import ftplib
import hashlib
import io
import secrets
import socket
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from drkit import runner
from drkit.engines import clients, keys

KEYSCAN_TYPES = "rsa,ecdsa,ed25519"
TIMEOUT = 10.0


@dataclass(frozen=True)
class Address:
    """host and port of a service, and the protocol it speaks (sftp, ftps or ftp)."""

    host: str
    port: int
    protocol: str

    def __str__(self) -> str:
        return f"{self.protocol}://{self.host}:{self.port}"


def parse_address(text: str, protocol: str | None) -> Address:
    """Given `sftp://h:p`, `ftps://h:p`, `ftp://h:p` or `h:p` with a protocol, return the
    address; raise ValueError with the reason."""
    scheme, found, rest = text.partition("://")
    if not found:
        scheme, rest = protocol or "", text
    if scheme not in ("sftp", "ftps", "ftp"):
        raise ValueError(f"{text}: name the protocol (sftp://, ftps://, ftp:// or --protocol)")
    host, colon, port = rest.rstrip("/").rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text}: not HOST:PORT")
    return Address(host.strip("[]"), int(port), scheme)


def host_keys(address: Address) -> dict[str, str]:
    """Return {key type: fingerprint} of the host keys the address offers (ssh-keyscan)."""
    argv = ["ssh-keyscan", "-T", "5", "-p", str(address.port), "-t", KEYSCAN_TYPES, address.host]
    done = runner.run(argv, timeout=30)
    served: dict[str, str] = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            info = keys.describe_key(f"{fields[1]} {fields[2]}".encode())
            if info is not None:
                served.setdefault(info.type, info.fingerprint)
    return served


def certificate(address: Address) -> str | None:
    """Return the sha256 (hex, of the DER) of the certificate an FTPS service presents after
    `AUTH TLS`, or None when it offers no TLS. The chain is not judged here: the caller pins
    the certificate to the signed snapshot's."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = ftplib.FTP_TLS(context=context, timeout=TIMEOUT)
    try:
        client.connect(address.host, address.port)
        try:
            client.auth()
        except ftplib.error_perm:
            return None
        der = _peer_certificate(client)
        return hashlib.sha256(der).hexdigest() if der else None
    finally:
        _close(client)


@dataclass(frozen=True)
class Login:
    """A live login's outcome: ok, when (monotonic seconds), and what happened."""

    ok: bool
    at: float | None
    detail: str


def sftp_login(
    address: Address, user: str, key_file: Path, known_lines: list[str], *, round_trip: bool
) -> Login:
    """Log in over SFTP pinned to known_lines (the host keys' public lines): the client
    refuses any other host key. round_trip puts, lists and removes one file in the landing
    directory."""
    name = f".drkit-identity-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="drkit-identity-") as work:
        known = Path(work) / "known_hosts"
        target = f"[{address.host}]:{address.port}"
        known.write_text("".join(f"{target} {line.strip()}\n" for line in known_lines))
        known.chmod(0o600)
        payload = Path(work) / name
        payload.write_text("drkit identity round trip\n")
        payload.chmod(0o600)
        batch = f"put {payload} {name}\nls {name}\nrm {name}\n" if round_trip else "pwd\n"
        argv = [
            "sftp", "-b", "-", "-P", str(address.port), "-i", str(key_file),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10",
            f"{user}@{address.host}",
        ]  # fmt: skip
        done = runner.run(argv, input_text=batch, timeout=60)
    if done.returncode == 0:
        return Login(True, time.monotonic(), "pinned login" + (", file round trip" * round_trip))
    why = _last_line(done.stderr) or f"sftp exited {done.returncode}"
    return Login(False, None, why)


def ftps_login(
    address: Address, user: str, password: str, expected: set[str], *, round_trip: bool
) -> Login:
    """Log in over FTPS (explicit TLS) pinned to the expected certificates (sha256 of DER);
    round_trip stores, reads back and deletes one file."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = clients.ReusingFTPS(context=context, timeout=TIMEOUT)
    try:
        client.connect(address.host, address.port)
        client.auth()
        der = _peer_certificate(client)
        served = hashlib.sha256(der).hexdigest() if der else ""
        if served not in expected:
            return Login(False, None, f"certificate {served[:16]}… is not the snapshot's")
        client.login(user, password)
        client.prot_p()
        if round_trip:
            name = f".drkit-identity-{secrets.token_hex(4)}"
            payload = secrets.token_bytes(256)
            client.storbinary(f"STOR {name}", io.BytesIO(payload))
            back = io.BytesIO()  # read back, not listed: servers hide dot files from NLST
            client.retrbinary(f"RETR {name}", back.write)
            client.delete(name)
            if back.getvalue() != payload:
                return Login(False, None, f"{name} read back with other bytes than stored")
        return Login(True, time.monotonic(), "pinned login" + (", file round trip" * round_trip))
    except (ftplib.Error, OSError, EOFError) as exc:
        return Login(False, None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    finally:
        _close(client)


def port_open(address: Address, timeout: float = 2.0) -> bool:
    """Return True when the address accepts a TCP connection now."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return True
    except OSError:
        return False


def _peer_certificate(client: ftplib.FTP_TLS) -> bytes | None:
    """Return the DER certificate the server presented on the control connection."""
    sock = client.sock
    return sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None


def _close(client: ftplib.FTP) -> None:
    try:
        client.quit()
    except (ftplib.Error, OSError, EOFError, AttributeError):
        client.close()


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
