"""SSH keys, X.509 certificates and drkit's Ed25519 manifest-signing key.

Fingerprints are written as `ssh-keygen -l` writes them: SHA256 of the SSH public-key blob,
base64 without padding. Certificates carry the same fingerprint of their public key, so a
certificate matches a key when the two fingerprints are equal.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from drkit import errors
from drkit.model import CertInfo, KeyInfo

_PRIVATE_MARKERS = (b"PRIVATE KEY-----",)
_SSH_PUBLIC_PREFIXES = (b"ssh-", b"ecdsa-sha2-", b"sk-")


def fingerprint_of_blob(blob: bytes) -> str:
    """Given an SSH public-key blob, return 'SHA256:<base64 without padding>'."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _public_line(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def _info_from_public_line(line: str, private: bool) -> KeyInfo:
    key_type, blob_b64 = line.split()[:2]
    blob = base64.b64decode(blob_b64)
    return KeyInfo(key_type, fingerprint_of_blob(blob), f"{key_type} {blob_b64}", private)


def _load_private(data: bytes):
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


def generate_signing_key(path: Path) -> str:
    """Write a new Ed25519 signing key to path (0600) unless one exists; return its fingerprint."""
    if path.exists():
        return signing_fingerprint(load_signing_key(path).public_key())
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return signing_fingerprint(key.public_key())


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


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """Read the Ed25519 signing key; raise ConfigError naming the file when it is unusable
    or readable by others."""
    require_private(path, "signing key")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise errors.ConfigError(f"{path}: signing key not found (drkit init creates it)") from None
    except OSError as exc:
        raise errors.ConfigError(f"{path}: cannot read signing key ({exc.strerror})") from None
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


def sign(key: ed25519.Ed25519PrivateKey, data: bytes) -> dict:
    """Return the signature document for data: signer fingerprint, public key, signature."""
    public = key.public_key()
    return {
        "signer": signing_fingerprint(public),
        "public_key": public_key_line(public),
        "signature": base64.b64encode(key.sign(data)).decode(),
    }


def verify_signature(document: dict, data: bytes) -> str:
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
