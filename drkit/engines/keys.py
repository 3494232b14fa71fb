"""SSH keys, X.509 certificates and drkit's Ed25519 manifest-signing key.

Fingerprints are written as `ssh-keygen -l` writes them: SHA256 of the SSH public-key blob,
base64 without padding. Certificates carry the same fingerprint of their public key, so a
certificate matches a key when the two fingerprints are equal.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TypedDict

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.hazmat.primitives.serialization.ssh import (
    SSHPrivateKeyTypes,
    SSHPublicKeyTypes,
)

from drkit import errors
from drkit.engines import durable
from drkit.model import CertInfo, KeyInfo

_PRIVATE_MARKERS = (b"PRIVATE KEY-----",)
_SSH_PUBLIC_PREFIXES = (b"ssh-", b"ecdsa-sha2-", b"sk-")


def fingerprint_of_blob(blob: bytes) -> str:
    """Given an SSH public-key blob, return 'SHA256:<base64 without padding>'."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _public_line(public_key: PublicKeyTypes | SSHPublicKeyTypes) -> str:
    return public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def _info_from_public_line(line: str, private: bool) -> KeyInfo:
    key_type, blob_b64 = line.split()[:2]
    blob = base64.b64decode(blob_b64)
    return KeyInfo(key_type, fingerprint_of_blob(blob), f"{key_type} {blob_b64}", private)


def _load_private(data: bytes) -> PrivateKeyTypes | SSHPrivateKeyTypes:
    """Load a private key to learn its public half.

    RSA validation (a costly primality check, ~0.2 s per key) is skipped: drkit only derives
    fingerprints here and signs nothing with these keys; `sshd -t` judges the key itself.
    """
    if b"OPENSSH PRIVATE KEY" in data:
        return serialization.load_ssh_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    return serialization.load_pem_private_key(
        data, password=None, unsafe_skip_rsa_key_validation=True
    )


def describe_key(data: bytes) -> KeyInfo | None:
    """Given file contents, return the key they hold (private or one-line public), else None.

    Encrypted or unsupported private keys return None: drkit records what it can prove.
    """
    stripped = data.strip()
    try:
        if any(marker in stripped for marker in _PRIVATE_MARKERS):
            key = _load_private(stripped)
            return _info_from_public_line(_public_line(key.public_key()), private=True)
        if stripped.startswith(_SSH_PUBLIC_PREFIXES) and b"\n" not in stripped:
            serialization.load_ssh_public_key(stripped)
            return _info_from_public_line(stripped.decode(), private=False)
    except (ValueError, TypeError, UnsupportedAlgorithm, UnicodeDecodeError, IndexError):
        return None
    return None


def authorized_keys(data: bytes) -> list[KeyInfo]:
    """Given an authorized_keys file, return the keys it lists (options before a key allowed)."""
    found = []
    for raw in data.decode(errors="replace").splitlines():
        fields = raw.strip().split()
        for position, field in enumerate(fields):
            if field.startswith(("ssh-", "ecdsa-sha2-", "sk-")) and position + 1 < len(fields):
                info = describe_key(f"{field} {fields[position + 1]}".encode())
                if info:
                    found.append(info)
                break
    return found


def describe_certificate(data: bytes) -> CertInfo | None:
    """Given PEM contents, return the first certificate they hold, else None."""
    if b"-----BEGIN CERTIFICATE-----" not in data:
        return None
    try:
        cert = x509.load_pem_x509_certificate(data)
        key_line = _public_line(cert.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return None
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest(),
        key_fingerprint=_info_from_public_line(key_line, private=False).fingerprint,
    )


# --- the manifest-signing key -------------------------------------------------------------


def _new_key_pem() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, signing_fingerprint(key.public_key())


def generate_signing_key(path: Path) -> str:
    """Write a new Ed25519 signing key to path (0600, atomically) unless one exists; return
    its fingerprint."""
    if path.exists():
        return signing_fingerprint(load_signing_key(path).public_key())
    pem, fingerprint = _new_key_pem()
    durable.write_atomic(path, pem, 0o600, 0o700)
    return fingerprint


def require_private(path: Path, what: str) -> None:
    """Raise ConfigError when a secret file can be read by anyone but its owner."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # the reader reports a missing file in its own words
    if mode & 0o077:
        raise errors.ConfigError(
            f"{path}: {what} is readable by other users (mode {mode & 0o777:04o}): chmod 600 it"
        )


def read_regular(path: Path, what: str, limit: int) -> bytes:
    """Return the bytes of a regular file of at most limit bytes; raise ConfigError (one line)
    when it is missing, unreadable, larger, or not a regular file. A FIFO or device is never
    read (opened non-blocking, checked with fstat), so nothing hangs on one."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise errors.ConfigError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    chunks: list[bytes] = []
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            kind = {stat.S_IFIFO: "a FIFO", stat.S_IFDIR: "a directory"}.get(
                stat.S_IFMT(mode), "not a regular file"
            )
            raise errors.ConfigError(f"{path}: {what} is {kind}, cannot read it: name a file")
        while (size := sum(map(len, chunks))) <= limit:
            chunk = os.read(descriptor, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read {what} ({exc.strerror})") from None
    finally:
        os.close(descriptor)
    data = b"".join(chunks)
    if len(data) > limit:
        raise errors.ConfigError(f"{path}: {what} is larger than {limit} bytes")
    return data


def read_password(
    path: Path, what: str = "repository password file", private: bool = True
) -> bytes:
    """Return the password a password file holds (without its line end); raise ConfigError
    when the file is missing, not a regular file, empty, or (private) readable by others."""
    password = read_regular(path, what, 64 * 1024).rstrip(b"\r\n")
    if private:
        require_private(path, what)
    if not password.strip():
        raise errors.ConfigError(f"password file {path} is empty: it must hold the password")
    return password


def missing_signing_key(path: Path) -> errors.ConfigError:
    """Return the error of a signing key that is not there, with the recoveries that keep the
    node's configuration and the snapshots it signed."""
    return errors.ConfigError(
        f"{path}: signing key not found: put back the copy you keep of it, or make a new signer "
        "with `drkit keys rotate` (the lost one stays in trusted_keys, so its snapshots still "
        "restore)"
    )


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Read the Ed25519 signing key; raise ConfigError naming the file when it is unusable
    or readable by others."""
    require_private(path, "signing key")
    if not os.path.lexists(path):
        raise missing_signing_key(path)
    try:
        key = serialization.load_pem_private_key(
            read_regular(path, "signing key", 64 * 1024), password=None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise errors.ConfigError(f"{path}: not a PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise errors.ConfigError(f"{path}: signing key must be Ed25519")
    return key


def signing_fingerprint(public_key: ed25519.Ed25519PublicKey) -> str:
    """Return the ssh-keygen style fingerprint of an Ed25519 public key."""
    return _info_from_public_line(_public_line(public_key), private=False).fingerprint


def public_key_line(public_key: ed25519.Ed25519PublicKey) -> str:
    """Return the OpenSSH one-line form of the public key, as stored beside a signature."""
    return _public_line(public_key)


class Signature(TypedDict):
    """A signature document: the signer's fingerprint, its public key, the signature."""

    signer: str
    public_key: str
    signature: str


def sign(key: ed25519.Ed25519PrivateKey, data: bytes) -> Signature:
    """Return the signature document for data: signer fingerprint, public key, signature."""
    public = key.public_key()
    return Signature(
        signer=signing_fingerprint(public),
        public_key=public_key_line(public),
        signature=base64.b64encode(key.sign(data)).decode(),
    )


def verify_signature(document: Mapping[str, object], data: bytes) -> str:
    """Check a signature document over data; return the signer's fingerprint.

    The fingerprint is recomputed from the embedded public key, so a document cannot claim a
    signer it was not made by. Raise Refused when anything does not hold.
    """
    try:
        public = serialization.load_ssh_public_key(str(document["public_key"]).encode())
        signature = base64.b64decode(str(document["signature"]), validate=True)
    except (KeyError, ValueError, TypeError, UnsupportedAlgorithm):
        raise errors.Refused("manifest signature is malformed") from None
    if not isinstance(public, ed25519.Ed25519PublicKey):
        raise errors.Refused("manifest is signed with a key that is not Ed25519")
    try:
        public.verify(signature, data)
    except InvalidSignature:
        raise errors.Refused("manifest signature does not verify: it was altered") from None
    return signing_fingerprint(public)


def load_trusted_signing_key(path: Path, trusted: list[str]) -> ed25519.Ed25519PrivateKey:
    """Return the signing key at path when the config trusts it (see require_trusted)."""
    key = load_signing_key(path)
    require_trusted(key, trusted, path)
    return key


def require_trusted(key: ed25519.Ed25519PrivateKey, trusted: list[str], path: Path) -> str:
    """Return the key's fingerprint when the config trusts it; raise ConfigError otherwise (a
    backup never signs what its own config would refuse)."""
    signer = signing_fingerprint(key.public_key())
    if signer not in trusted:
        raise errors.ConfigError(
            f"{path}: signing key {signer} is not in trusted_keys: nothing is signed with it "
            "(add it to trusted_keys, or restart a daemon started before `drkit keys rotate`)"
        )
    return signer


# --- rotating the signing key, journalled ---------------------------------------------------

ROTATION_JOURNAL = "key-rotation.json"


def rotation_journal(state_dir: Path) -> Path:
    """Return the journal of a signing-key rotation in progress."""
    return state_dir / ROTATION_JOURNAL


def restic_rotation_journal(state_dir: Path) -> Path:
    """Return the journal naming the old restic keys a rotation still has to remove."""
    return state_dir / "key-rotation-restic.json"


def next_key_path(key_path: Path) -> Path:
    """Return where a rotation writes the new signing key before it replaces the old one."""
    return key_path.with_name(key_path.name + ".next")


def fingerprint_at(path: Path) -> str | None:
    """Return the fingerprint of the signing key at path, or None when there is no usable one."""
    try:
        return signing_fingerprint(load_signing_key(path).public_key())
    except errors.ConfigError:
        return None


@contextlib.contextmanager
def _rotation_lock(state_dir: Path, wait: float) -> Iterator[bool]:
    """Hold the rotation lock; yield False (held by none) when another process holds it."""
    from filelock import FileLock, Timeout

    lock_dir = state_dir / "locks"
    durable.make_dirs(state_dir, 0o755)
    durable.make_dirs(lock_dir, 0o700)
    lock = FileLock(str(lock_dir / "key-rotation.lock"), mode=0o600)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def rotate_signing_key(
    state_dir: Path, key_path: Path, trust: Callable[[list[str]], None]
) -> tuple[str | None, str]:
    """Replace the signing key with a new one; return (old, new) fingerprints (old None when
    the key was lost: a new one is written in its place).

    Journalled, every step idempotent, so that the next command finishes or undoes it
    (finish_rotation) whatever instant a kill lands: 1. the journal names the key and its
    signer; 2. the new key is written beside the old one (`<key>.next`); 3. trust([old, new])
    makes the config trust both; 4. a rename puts the new key in the old one's place; 5. the
    journal goes. The key file always holds a whole key, and the config trusts it.
    """
    with _rotation_lock(state_dir, 30) as held:
        if not held:
            raise errors.Busy(f"{state_dir}: another run is rotating the signing key")
        if not os.path.lexists(key_path):  # lost: a new signer; the lost one stays trusted
            new = generate_signing_key(key_path)
            trust([new])
            return None, new
        old = signing_fingerprint(load_signing_key(key_path).public_key())
        record = {"signing_key": str(key_path), "old": old}
        durable.write_atomic(rotation_journal(state_dir), json.dumps(record).encode())
        pem, new = _new_key_pem()
        durable.write_atomic(next_key_path(key_path), pem, 0o600, 0o700)
        _complete(state_dir, key_path, old, new, trust)
    return old, new


def _complete(
    state_dir: Path, key_path: Path, old: str, new: str, trust: Callable[[list[str]], None]
) -> None:
    """Steps 3 to 5 of a rotation (see rotate_signing_key)."""
    trust([old, new])
    try:
        os.replace(next_key_path(key_path), key_path)
        durable.sync_dir(key_path.parent)
    except OSError as exc:
        raise errors.LocalFilesystemError(f"{key_path}: cannot replace ({exc.strerror})") from None
    durable.remove(rotation_journal(state_dir))


def finish_rotation(
    state_dir: Path, key_path: Path, trusted: list[str], trust: Callable[[list[str]], None]
) -> str | None:
    """Finish or undo a signing-key rotation a kill interrupted (its journal, or the
    `<key>.retiring` file an older drkit left); return what was done, None when nothing was
    pending. A rotation running in another process right now is left to finish itself."""
    journal = rotation_journal(state_dir)
    retiring = key_path.with_name(key_path.name + ".retiring")
    if not journal.exists() and not retiring.exists():
        return None
    with _rotation_lock(state_dir, 0) as held:
        if not held:
            return None
        if journal.exists():
            return _replay(journal, state_dir, key_path, trust)
        if retiring.exists():
            return _settle_retiring(retiring, key_path, trusted)
    return None


def _replay(
    journal: Path, state_dir: Path, key_path: Path, trust: Callable[[list[str]], None]
) -> str | None:
    try:
        record = json.loads(read_regular(journal, "key rotation journal", 64 * 1024))
    except (errors.ConfigError, ValueError):
        record = None
    if isinstance(record, dict) and record.get("signing_key") not in (None, str(key_path)):
        return None  # the journal of another config's key
    pending = next_key_path(key_path)
    old = record.get("old") if isinstance(record, dict) else None
    new = fingerprint_at(pending)
    if old and new:
        _complete(state_dir, key_path, old, new, trust)
        return f"an interrupted key rotation was finished: {new} signs from now on"
    for leftover in (pending, pending.with_name(pending.name + ".tmp")):
        durable.remove(leftover)
    durable.remove(journal)
    current = fingerprint_at(key_path)
    if current == old:
        return f"an interrupted key rotation was undone: {current} still signs"
    return f"an interrupted key rotation was finished: {current} signs"


def _settle_retiring(retiring: Path, key_path: Path, trusted: list[str]) -> str | None:
    """An older drkit's rotation moved the old key to `<key>.retiring` before writing the new
    one: keep the key the config trusts."""
    current, previous = fingerprint_at(key_path), fingerprint_at(retiring)
    if current is not None and current in trusted:
        durable.remove(retiring)
        return f"an interrupted key rotation was finished: {current} signs"
    if previous is not None and previous in trusted:
        try:
            os.replace(retiring, key_path)
            durable.sync_dir(key_path.parent)
        except OSError as exc:
            raise errors.LocalFilesystemError(
                f"{retiring}: cannot restore ({exc.strerror})"
            ) from None
        return f"an interrupted key rotation was undone: {previous} signs again"
    return None
