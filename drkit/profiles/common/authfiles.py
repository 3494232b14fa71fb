"""Credentials a sandboxed server is given: RFC 4716 public keys (`ssh-keygen -e`), crypt(3)
password hashes, and a throw-away client key authorised for a smoke user."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Callable
from pathlib import Path

from drkit import runner
from drkit.engines import keys
from drkit.model import (
    KeyInfo,
)


def rfc4716(public_line: str, comment: str = "drkit") -> str:
    """Return an OpenSSH one-line public key in RFC 4716 form (`ssh-keygen -e`)."""
    blob = public_line.split()[1]
    lines = [blob[i : i + 70] for i in range(0, len(blob), 70)]
    begin, end = "---- BEGIN SSH2 PUBLIC KEY ----", "---- END SSH2 PUBLIC KEY ----"
    return "\n".join([begin, f'Comment: "{comment}"', *lines, end, ""])


def rfc4716_keys(text: str) -> list[KeyInfo]:
    """Return the keys of an RFC 4716 file (several blocks allowed)."""
    found: list[KeyInfo] = []
    body: list[str] = []
    inside = header_continues = False
    for raw in text.splitlines():
        line = raw.strip()
        if line == "---- BEGIN SSH2 PUBLIC KEY ----":
            inside, body, header_continues = True, [], False
        elif line == "---- END SSH2 PUBLIC KEY ----" and inside:
            inside = False
            with contextlib.suppress(ValueError, IndexError):
                blob = base64.b64decode("".join(body))
                length = int.from_bytes(blob[:4], "big")
                key_type = blob[4 : 4 + length].decode()
                info = keys.describe_key(f"{key_type} {base64.b64encode(blob).decode()}".encode())
                if info:
                    found.append(info)
        elif inside:
            if header_continues or ":" in line:
                header_continues = line.endswith("\\")
                continue
            body.append(line)
    return found


def hash_password(password: str) -> str:
    """Return a SHA-512 crypt(3) hash; the password goes to openssl on stdin, never argv."""
    done = runner.run(["openssl", "passwd", "-6", "-stdin"], input_text=password + "\n")
    if done.returncode != 0 or not done.stdout.startswith("$6$"):
        raise RuntimeError("openssl passwd -6 failed")
    return done.stdout.strip()


def authorized_client_key(
    work: Path, user: str, folder: str, encode: Callable[[str], str] = lambda line: line + "\n"
) -> tuple[Path, Path] | None:
    """Create a throw-away ed25519 client key in work and authorise it for user: its public
    line, as encode writes it, in work/folder/<user>, the per-user key files a sandboxed
    server is pointed at. Return (private key path, work/folder), or None when ssh-keygen
    failed."""
    key = work / "client_key"
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drkit-smoke", "-f", str(key)]
    if runner.run(argv).returncode != 0:
        return None
    public_line = (work / "client_key.pub").read_text().strip()
    keys_dir = work / folder
    keys_dir.mkdir(mode=0o755)
    (keys_dir / user).write_text(encode(public_line))
    (keys_dir / user).chmod(0o644)
    return key, keys_dir
