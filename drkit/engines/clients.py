"""The two clients a smoke run drives, pinned to a signed snapshot: the OpenSSH `sftp` client
(and ssh-keyscan) pinned to the manifest's host keys, and Python's ftplib over explicit TLS
pinned to the manifest's certificate. Nothing here knows a server profile."""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import io
import posixpath
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from drkit import runner
from drkit.engines import keys
from drkit.model import (
    Check,
    HostKeyRecord,
    ServedCertificate,
    ServedKey,
    SmokeResult,
    TransferProtocol,
    failed,
    passed,
    utc_text,
    warned,
)

UPLOAD_DIRS = (".", "upload", "uploads", "incoming")


# ssh-keyscan's -t name of each host key type.
KEYSCAN_TYPES = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
    "ssh-dss": "dsa",
}


def keyscan(
    result: SmokeResult,
    host_keys: list[HostKeyRecord],
    port: int,
    label: str = "",
    not_served: str = "not served",
    *,
    offered: set[str] | None = None,
    loaded: dict[str, str] | None = None,
    omitted_by: str = "the server's host key algorithms",
) -> None:
    """Ask the server for each host key type the manifest holds and compare fingerprints;
    record a check per type ("smoke: [label ]host key TYPE") and each key as served.

    offered: the key types the server offers (None: every type). A type it does not offer is
    not asked for: loaded ({fingerprint: type}, what the server itself reported loading)
    proves the key is there, so its check says "loaded, not offered" (omitted_by names the
    setting) instead of "not served".
    """
    by_type: dict[str, list[str]] = {}
    for entry in host_keys:
        by_type.setdefault(entry.type, []).append(entry.fingerprint)

    def scan(key_type: str) -> runner.Completed | None:
        if offered is not None and key_type not in offered:
            return None
        kind = KEYSCAN_TYPES.get(key_type, key_type)
        argv = ["ssh-keyscan", "-T", "5", "-p", str(port), "-t", kind, "127.0.0.1"]
        return runner.run(argv, timeout=30)

    with ThreadPoolExecutor(max_workers=len(by_type) or 1) as pool:  # one connection per type
        scans = list(pool.map(scan, by_type))
    for (key_type, expected), done in zip(by_type.items(), scans, strict=True):
        name = f"smoke: {label} host key {key_type}" if label else f"smoke: host key {key_type}"
        if done is None:
            result.add(_not_offered(name, key_type, expected, loaded, omitted_by))
            continue
        served = []
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#"):
                info = keys.describe_key(f"{fields[1]} {fields[2]}".encode())
                if info is not None and info.type == key_type:
                    served.append(info)
        if not served:
            result.add(failed(name, not_served))
            continue
        result.host_keys.append(ServedKey(type=key_type, fingerprint=served[0].fingerprint))
        if served[0].fingerprint not in expected:
            detail = f"served {served[0].fingerprint}, the backup has {', '.join(expected)}"
            result.add(failed(name, detail))
        else:
            result.add(passed(name, f"served {served[0].fingerprint} as in the backup"))


def _not_offered(
    name: str, key_type: str, expected: list[str], loaded: dict[str, str] | None, omitted_by: str
) -> Check:
    """The check of a host key type the server does not offer: loaded as in the backup?"""
    why = f"not offered: {omitted_by} omits {key_type}"
    if loaded is None:
        return warned(name, f"{why}; whether it loaded is unknown")
    hit = next((fp for fp in expected if loaded.get(fp) == key_type), None)
    if hit:
        return passed(name, f"loaded {hit} as in the backup, {why}")
    other = [fp for fp, loaded_type in loaded.items() if loaded_type == key_type]
    if other:
        return failed(name, f"loaded {other[0]}, the backup has {', '.join(expected)}; {why}")
    return failed(name, f"not loaded (and {why})")


def _sftp(
    key: Path, known_hosts: Path, port: int, user: str, batch: str, work: Path, only_key: bool
) -> runner.Completed:
    batch_file = work / f"batch-{secrets.token_hex(4)}"
    batch_file.write_text(batch)
    argv = [
        "sftp", "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
        *(["-o", "PreferredAuthentications=publickey"] if only_key else []),
        "-i", str(key), "-P", str(port), "-b", str(batch_file), f"{user}@127.0.0.1",
    ]  # fmt: skip
    return runner.run(argv, env={"SSH_AUTH_SOCK": ""}, timeout=60)


def sftp_session(
    result: SmokeResult,
    host_keys: list[HostKeyRecord],
    user: str,
    port: int,
    key: Path,
    work: Path,
    hint: Callable[[], str] | None = None,
    *,
    label: str = "sftp",
    trip_name: str | None = None,
    upload_dirs: Sequence[str] = UPLOAD_DIRS,
    show_dir: bool = False,
    only_key: bool = True,
) -> None:
    """Log in with the OpenSSH sftp client pinned to host_keys; put, get, compare, remove;
    record the session in result.

    Checks: "smoke: {label} login" and trip_name (default "smoke: {label} round trip");
    show_dir adds the login's working directory to its detail; only_key allows no other
    client authentication method than the key.
    """
    login, trip = _sftp_round_trip(
        host_keys, user, port, key, work, hint, label, trip_name, upload_dirs, show_dir, only_key
    )
    result.session("sftp", login, trip)


def _sftp_round_trip(
    host_keys: list[HostKeyRecord],
    user: str,
    port: int,
    key: Path,
    work: Path,
    hint: Callable[[], str] | None,
    label: str,
    trip_name: str | None,
    upload_dirs: Sequence[str],
    show_dir: bool,
    only_key: bool,
) -> tuple[Check, Check]:
    known_hosts = work / f"known_hosts-{port}"
    known_hosts.write_text("".join(f"[127.0.0.1]:{port} {k.public_line}\n" for k in host_keys))
    login_name, check = f"smoke: {label} login", trip_name or f"smoke: {label} round trip"
    payload = secrets.token_bytes(4096)
    local, back = work / f"payload-{port}", work / f"payload-{port}.back"
    local.write_bytes(payload)
    name, reasons = f".drkit-smoke-{secrets.token_hex(6)}", []

    def trip(directory: str) -> str:
        remote = f"{directory}/{name}"
        return f'put "{local}" "{remote}"\n-get "{remote}" "{back}"\nrm "{remote}"\n'

    started = time.monotonic()
    # the login's session also tries the first directory: a second handshake costs ~0.3 s
    first = "pwd\n" + (trip(upload_dirs[0]) if upload_dirs else "")
    login = _sftp(key, known_hosts, port, user, first, work, only_key)
    where = next(
        (
            line.split(":", 1)[1].strip()
            for line in login.stdout.splitlines()
            if line.startswith("Remote working directory:")
        ),
        None,
    )  # printed by `pwd` once logged in, whatever the round trip did after it
    if where is None or (login.returncode != 0 and not upload_dirs):
        detail = login.stderr_tail.replace("\n", " | ") or "sftp failed"
        extra = hint() if hint else ""
        return (
            failed(login_name, f"{user}: {detail}" + (f" ({extra})" if extra else "")),
            failed(check, "no login"),
        )
    elapsed = time.monotonic() - started
    with_trip = " with a round trip" if upload_dirs else ""
    detail = f"{user} in {elapsed:.2f} s{with_trip}, pinned host key"
    if show_dir:
        detail += f", in {where}"
    logged_in = passed(login_name, detail)
    if not upload_dirs:  # the caller found no directory the user may write to, and said why
        return logged_in, warned(check, "no writable directory found: nothing written")
    for index, directory in enumerate(upload_dirs):
        batch = trip(directory)
        done = login if index == 0 else _sftp(key, known_hosts, port, user, batch, work, only_key)
        if back.is_file():
            if back.read_bytes() != payload:
                return logged_in, failed(check, f"bytes differ after a round trip in {directory}")
            if done.returncode != 0:
                remote = f"{directory}/{name}"
                return logged_in, failed(check, f"read back, but could not remove {remote}")
            detail = f"wrote, read back and removed {len(payload)} bytes in {directory}"
            return logged_in, passed(check, detail)
        last = done.stderr_tail.splitlines()[-1] if done.stderr_tail else "failed"
        reasons.append(f"{directory}: {last}")
    return logged_in, failed(check, "no writable directory; " + "; ".join(reasons))


# --- the FTPS client, pinned -----------------------------------------------------------------


class ReusingFTPS(ftplib.FTP_TLS):
    """ftplib over explicit TLS whose data connections reuse the control session's TLS
    session: ProFTPD and vsftpd refuse data channels that do not (their default)."""

    def ntransfercmd(
        self, cmd: str, rest: int | str | None = None
    ) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        # _prot_p: ftplib's own record of PROT P (no public accessor)
        if getattr(self, "_prot_p", False) and isinstance(self.sock, ssl.SSLSocket):
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


def _ftps_round_trip(client: ftplib.FTP, trip_name: str, upload_dirs: Sequence[str]) -> Check:
    if not upload_dirs:  # the caller found no directory the user may write to
        where = _ftp_listing(client, trip_name, "no writable directory found")
        return warned(trip_name, where.detail)
    payload = secrets.token_bytes(4096)
    name, reasons = f".drkit-smoke-{secrets.token_hex(6)}", []
    for directory in upload_dirs:
        remote = name if directory == "." else posixpath.join(directory, name)
        try:
            client.storbinary(f"STOR {remote}", io.BytesIO(payload))
        except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
            reasons.append(f"{directory}: {str(exc).strip()[:120]}")
            continue
        back = io.BytesIO()
        try:
            client.retrbinary(f"RETR {remote}", back.write)
            client.delete(remote)
        except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
            return failed(trip_name, f"stored in {directory}, then: {exc}")
        if back.getvalue() != payload:
            return failed(trip_name, f"bytes differ after a round trip in {directory}")
        return passed(
            trip_name, f"wrote, read back and removed {len(payload)} bytes in {directory}"
        )
    return failed(trip_name, "no writable directory; " + "; ".join(reasons))


@dataclass(frozen=True)
class FtpTls:
    """How an FTP smoke pins TLS: the PEM it trusts, the name it checks, the certificates
    (sha256 of DER) the server may serve."""

    trusted_pem: str
    server_name: str
    expected: frozenset[str]


def ftp_session(
    result: SmokeResult,
    port: int,
    user: str,
    password: str,
    *,
    tls: FtpTls | None,
    read_only: str | None = None,
    hint: Callable[[], str] | None = None,
    upload_dirs: Sequence[str] = UPLOAD_DIRS,
    expect_dir: str | None = None,
    landing_why: str = "the config",
) -> None:
    """Log in over FTP (explicit TLS pinned as tls says, else plain: the server speaks no TLS
    and the password is a one-run one on 127.0.0.1); put, get, compare, delete in the first of
    upload_dirs that takes the file (none: a listing, as a warning); record the session ("ftps"
    or "ftp") in result.

    read_only names why the server refuses uploads by its config: the round trip is then a
    directory listing over a data connection, reported as a warning (no file moved).
    expect_dir: where the configuration says the login lands (its `pwd`), checked as
    "smoke: {label} landing" (landing_why names the setting).
    """
    label: TransferProtocol = "ftps" if tls else "ftp"
    login_name, trip_name = f"smoke: {label} login", f"smoke: {label} round trip"
    secure: ReusingFTPS | None = None
    if tls:
        context = ssl.create_default_context(cadata=tls.trusted_pem)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.check_hostname = True
        secure = ReusingFTPS(context=context, timeout=15)
    client = secure if secure is not None else ftplib.FTP(timeout=15)
    started, detail = time.monotonic(), ""
    try:
        client.connect("127.0.0.1", port)
        if secure is not None and tls is not None:
            detail = _pinned_handshake(secure, tls, result)
        if not detail:
            client.login(user, password)
            if secure is not None:
                secure.prot_p()
    except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
        extra = hint() if hint else ""
        detail = f"{user}: {type(exc).__name__}: {str(exc).strip()[:200]}"
        detail += f" ({extra})" if extra else ""
    try:
        if detail:
            result.session(label, failed(login_name, detail), failed(trip_name, "no login"))
            return
        elapsed = time.monotonic() - started
        how = (
            f"TLS {_tls_version(secure)}, certificate for {tls.server_name} as in the backup"
            if tls
            else "plain FTP: the config enables no TLS"
        )
        login = passed(login_name, f"{user} in {elapsed:.2f} s, {how}")
        landed = _ftp_landing(client, label, expect_dir, landing_why) if expect_dir else None
        trip = _ftp_listing(client, trip_name, read_only) if read_only else None
        result.session(label, login, trip or _ftps_round_trip(client, trip_name, upload_dirs))
        if landed is not None:
            result.add(landed)
    finally:
        with contextlib.suppress(Exception):
            client.quit()
        with contextlib.suppress(Exception):
            client.close()


def _pinned_handshake(client: ReusingFTPS, tls: FtpTls, result: SmokeResult) -> str:
    """AUTH TLS with SNI and the hostname checked against tls.server_name; record the served
    certificate in result; return why it is refused ("" when it is one of the backup's)."""
    client.host = tls.server_name
    client.auth()
    sock = client.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    if der is None:
        return "the server presented no certificate"
    served = keys.describe_certificate(ssl.DER_cert_to_PEM_cert(der).encode())
    if served is not None:
        result.certificates.append(
            ServedCertificate(
                fingerprint=served.fingerprint,
                subject=served.subject,
                not_after=utc_text(served.not_after),
            )
        )
    fingerprint = hashlib.sha256(der).hexdigest()
    if fingerprint not in tls.expected:
        return f"served certificate {fingerprint[:16]}… is not the backup's"
    return ""


def _tls_version(client: ReusingFTPS | None) -> str:
    sock = client.sock if client is not None else None
    return (sock.version() or "?") if isinstance(sock, ssl.SSLSocket) else "?"


def _ftp_landing(client: ftplib.FTP, label: str, expect_dir: str, why: str) -> Check:
    """Where the login landed (`pwd`) against where the configuration says it lands."""
    name = f"smoke: {label} landing"
    try:
        where = client.pwd()
    except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
        return failed(name, f"pwd failed: {str(exc).strip()[:160]}")
    if posixpath.normpath(where) == posixpath.normpath(expect_dir):
        return passed(name, f"in {where}, as {why} says")
    return failed(name, f"landed in {where}; {why} says {expect_dir}")


def _ftp_listing(client: ftplib.FTP, trip_name: str, read_only: str) -> Check:
    """List the login directory over a data connection: the proof a read-only server allows."""
    try:
        where = client.pwd()
        lines: list[str] = []
        client.retrlines("LIST", lines.append)
    except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
        return failed(trip_name, f"{read_only}; listing failed: {str(exc).strip()[:160]}")
    return warned(
        trip_name, f"{read_only}: listed {len(lines)} entries of {where}, no file written"
    )
