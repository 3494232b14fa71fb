"""Signed-manifest models from the few fields a test cares about."""

from __future__ import annotations

from typing import Any

from drkit.model import FileRecord, KeyRecord, Manifest

FILE_DEFAULTS = {"category": "config", "type": "file", "mode": "0644", "uid": 0, "gid": 0,
                 "user": "root", "group": "root", "mtime": "2026-01-01T00:00:00Z"}  # fmt: skip
KEY_DEFAULTS = {"category": "host_keys", "private": True, "type": "ssh-ed25519",
                "fingerprint": "SHA256:x", "public_line": "ssh-ed25519 AAAA"}  # fmt: skip


def file_record(**fields: Any) -> FileRecord:
    """Return a manifest file entry: the fields given, plain defaults for the rest (a regular
    file's size and sha256, a symlink's target)."""
    given = {**FILE_DEFAULTS, **fields}
    if given["type"] == "file":
        given = {"size": 0, "sha256": "0" * 64, **given}
    if given["type"] == "symlink":
        given = {"link": "/", **given}
    return FileRecord.model_validate(given)


def partial(**document: Any) -> Manifest:
    """Return a manifest of the sections given; a file or key given as a dict gets plain
    defaults for the fields it leaves out."""
    files = [
        f if isinstance(f, FileRecord) else file_record(**f) for f in document.pop("files", [])
    ]
    found = [
        k if isinstance(k, KeyRecord) else KeyRecord.model_validate({**KEY_DEFAULTS, **k})
        for k in document.pop("keys", [])
    ]
    header = {"format": 1, "node": "sftp-1", "created": "2026-01-01T00:00:00.000000Z"}
    return Manifest.model_validate({**header, **document, "files": files, "keys": found})
