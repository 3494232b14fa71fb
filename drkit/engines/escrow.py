"""Key escrow: the repository password split into SLIP-39 shares, each also encrypted to an age
recipient, so that K of N holders can rebuild it and fewer learn nothing.

The master secret SLIP-39 splits is the password's bytes: drkit's generated password is 32
random bytes whose hex is the restic password, so those 32 bytes are split. An operator-chosen
password is length-prefixed (one byte) and zero-padded to an even length of at least 16 bytes
(SLIP-39's rule), never to exactly 32, so a recovered secret of 32 bytes always means "hex".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from drkit import errors

GENERATED = re.compile(r"^[0-9a-f]{64}$")
AGE_HEADER = b"age-encryption.org/"


def master_secret(password: str) -> bytes:
    """Return the bytes SLIP-39 splits for a repository password."""
    if GENERATED.fullmatch(password):
        return bytes.fromhex(password)
    data = password.encode()
    if not data or len(data) > 255:
        raise errors.UsageError("a password to escrow must have 1 to 255 bytes")
    padded = bytes([len(data)]) + data
    length = max(16, len(padded) + len(padded) % 2)
    if length == 32:
        length = 34
    return padded.ljust(length, b"\0")


def password_of(secret: bytes) -> str:
    """Return the repository password a recovered master secret stands for."""
    if len(secret) == 32:
        return secret.hex()
    length = secret[0] if secret else 0
    data = secret[1 : 1 + length]
    if len(data) != length or any(secret[1 + length :]):
        raise errors.Refused("the recovered secret is not a drkit escrow of a password")
    return data.decode()


def split(password: str, threshold: int, count: int) -> list[str]:
    """Return count SLIP-39 mnemonics, any threshold of which rebuild the password."""
    import shamir_mnemonic

    if not 1 <= threshold <= count <= 16:
        raise errors.UsageError(
            f"--threshold {threshold} of {count} holder(s): need 1 <= threshold <= holders <= 16"
        )
    if threshold == 1 and count > 1:
        raise errors.UsageError("--threshold 1 would give every holder the whole password")
    groups: list[list[str]] = shamir_mnemonic.generate_mnemonics(
        1, [(threshold, count)], master_secret(password)
    )
    return groups[0]


def combine(mnemonics: list[str]) -> str:
    """Return the password rebuilt from K mnemonics; raise Refused when they do not fit."""
    import shamir_mnemonic

    try:
        secret = shamir_mnemonic.combine_mnemonics([" ".join(m.split()) for m in mnemonics])
    except shamir_mnemonic.MnemonicError as exc:
        raise errors.Refused(f"the shares do not rebuild a secret: {exc}") from None
    return password_of(secret)


@dataclass(frozen=True)
class Recipient:
    """An age X25519 recipient, checked: its 'age1...' text."""

    text: str


def recipient(text: str) -> Recipient:
    """Return the age recipient written in text (one 'age1...' line; comments allowed)."""
    import pyrage

    lines = [line.strip() for line in text.splitlines()]
    found = [line for line in lines if line and not line.startswith("#")]
    if len(found) != 1:
        raise errors.UsageError("a recipients file holds exactly one age recipient (age1...)")
    try:
        pyrage.x25519.Recipient.from_str(found[0])
    except Exception:
        raise errors.UsageError(f"{found[0][:20]}... is not an age X25519 recipient") from None
    return Recipient(found[0])


def encrypt(share: str, to: Recipient) -> bytes:
    """Return the share encrypted to one age recipient (binary age format)."""
    import pyrage

    encrypted: bytes = pyrage.encrypt(share.encode(), [pyrage.x25519.Recipient.from_str(to.text)])
    return encrypted


def decrypt(data: bytes, identities_text: list[str]) -> str:
    """Return a share decrypted with any of the given age identity files' keys."""
    import pyrage

    identities = []
    for text in identities_text:
        for line in text.splitlines():
            if line.strip().startswith("AGE-SECRET-KEY-"):
                identities.append(pyrage.x25519.Identity.from_str(line.strip()))
    if not identities:
        raise errors.UsageError("an age-encrypted share needs --identity FILE (AGE-SECRET-KEY-...)")
    try:
        decrypted: bytes = pyrage.decrypt(data, identities)
        return decrypted.decode()
    except Exception:
        raise errors.Refused("no given identity decrypts this share") from None


def new_identity() -> tuple[str, str]:
    """Return (identity, recipient) of a new age X25519 key pair."""
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    return str(identity), str(identity.to_public())
