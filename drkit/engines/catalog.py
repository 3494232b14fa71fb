"""The catalog beside the repository: sealed manifest objects and the signed snapshot index.

Every backup stores, at the bucket root, `manifests/<node>/<snapshot-id>.json` (the manifest,
sealed) and `.sig` (its signature, the same document as in the snapshot), and its chain head
(`records/<node>/head.json`) signs an index of the node's snapshots: id, time, manifest
sha256. With them a command finds and opens a snapshot with a few S3 requests instead of
restic processes (each one derives the repository key with scrypt before it reads anything).

Why sealed: the manifest carries the account entries of the users the server needs (their
shadow lines) and the node's drkit.yaml; the bucket is readable by roles that never hold the
repository password (the report reader, the auditor). The object is AES-256-GCM under the
node's catalog key, a random key stored beside it (`manifests/<node>/key.json`) wrapped under a
key scrypt derives from the repository password, so every machine holding the password opens
it and `keys rotate` re-wraps one small object instead of re-sealing every manifest; unsealed,
it holds the manifest byte for byte as it is inside the snapshot. The object's key is the
authenticated data, so a sealed manifest cannot be moved under another snapshot's name.

Why an id is enough: restic names a snapshot file by the sha256 of its stored bytes and checks
that hash on every load, and names every tree and blob by the sha256 of its content and checks
that too; a snapshot id signed after the backup therefore fixes everything restic restores from
it (README, "The catalog").
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from drkit import errors
from drkit.engines import durable, keys
from drkit.model import Manifest, parse_utc, utc_text_precise
from drkit.paths import on_root

SEAL_FORMAT = 1
SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}  # 32 MiB, about 0.1 s: once per command
INDEX_LIMIT = 5000  # entries a head keeps; older ones resolve through restic
SNAPSHOT_ID = re.compile(r"[0-9a-f]{64}")


def head_key(node: str) -> str:
    """Return the bucket key of the node's signed chain head, which holds its index."""
    return f"records/{node}/head.json"


def bundle_key(node: str, snapshot_id: str) -> str:
    """Return the bucket key of a snapshot's sealed manifest."""
    return f"manifests/{node}/{snapshot_id}.json"


def signature_key(node: str, snapshot_id: str) -> str:
    """Return the bucket key of a snapshot's manifest signature."""
    return f"manifests/{node}/{snapshot_id}.sig"


def key_object_key(node: str) -> str:
    """Return the bucket key of the node's catalog key, wrapped under the repository password."""
    return f"manifests/{node}/key.json"


# -- limits on what is read from the bucket ---------------------------------------------------
# Anyone with write access to the bucket (not the repository password) can put anything at
# these keys: an object larger than its limit, or JSON nested deeper than JSON_DEPTH_LIMIT (a
# 400 KB `[[[[...` exhausts a recursive parser), is not drkit's and counts as absent.

JSON_DEPTH_LIMIT = 32  # drkit's own documents nest 6 deep at most
DEFAULT_OBJECT_LIMIT = 64 << 20
_OBJECT_LIMITS = (
    (re.compile(r"manifests/[^/]+/key\.json"), 64 << 10),
    (re.compile(r".*\.sig"), 64 << 10),
    (re.compile(r"manifests/.*\.json"), 512 << 20),  # a sealed manifest of a very large tree
    (re.compile(r"(records|status)/.*"), 16 << 20),  # a head holds INDEX_LIMIT entries
)
_JSON_SYNTAX = re.compile(rb'["\[\]{}]')
WRAPPINGS_LIMIT = 8  # a key object holds one wrapping per password, two during `keys rotate`


def object_limit(key: str) -> int:
    """Return the largest object drkit reads at key (bytes)."""
    return next((limit for pattern, limit in _OBJECT_LIMITS if pattern.fullmatch(key)),
                DEFAULT_OBJECT_LIMIT)  # fmt: skip


def shape_problem(key: str, body: bytes) -> str | None:
    """Return why the JSON object read at key cannot be one drkit wrote (nested deeper than
    JSON_DEPTH_LIMIT), or None; objects that are not JSON (report pages) are not judged.
    Brackets are counted without parsing; a string is skipped whole (to its unescaped quote)."""
    if not key.endswith((".json", ".sig")):
        return None
    if body.count(b"{") + body.count(b"[") <= JSON_DEPTH_LIMIT:
        return None  # fewer brackets than the limit cannot nest deeper (a status document)
    depth, position = 0, 0
    while (match := _JSON_SYNTAX.search(body, position)) is not None:
        at = match.start()
        if body[at] == 0x22:  # a string: its end is the next quote not escaped by a backslash
            while True:
                at = body.find(b'"', at + 1)
                if at < 0:
                    return None  # unterminated: the JSON parser says so
                before = at - 1
                while body[before] == 0x5C:
                    before -= 1
                if (at - 1 - before) % 2 == 0:
                    break
        elif body[at] in b"[{":
            depth += 1
            if depth > JSON_DEPTH_LIMIT:
                return f"JSON nested deeper than {JSON_DEPTH_LIMIT} levels"
        else:
            depth -= 1
        position = at + 1
    return None


def _password(password_file: Path) -> bytes:
    return keys.read_password(password_file, "repository.password_file", private=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def new_catalog_key() -> bytes:
    """Return a fresh catalog key (what seals the node's manifest objects)."""
    return os.urandom(32)


def key_id(catalog_key: bytes) -> str:
    """Return the short name of a catalog key that sealed objects carry (not secret)."""
    return hashlib.sha256(b"drkit catalog key id\0" + catalog_key).hexdigest()[:16]


def wrap_key(catalog_key: bytes, password_files: list[Path], node: str) -> bytes:
    """Return the node's key object: the catalog key wrapped (AES-256-GCM) under a key scrypt
    derives from each password with a salt of its own (two while `keys rotate` runs)."""
    wrappings = []
    for password_file in password_files:
        salt, nonce = os.urandom(16), os.urandom(12)
        wrapping_key = hashlib.scrypt(
            _password(password_file), salt=salt, dklen=32, maxmem=64 << 20, **SCRYPT
        )
        data = AESGCM(wrapping_key).encrypt(nonce, catalog_key, f"drkit key {node}".encode())
        wrappings.append({"salt": _b64(salt), "nonce": _b64(nonce), "data": _b64(data)})
    document = {
        "drkit_catalog_key": SEAL_FORMAT,
        "key_id": key_id(catalog_key),
        "kdf": "scrypt N=2^15 r=8 p=1 of the repository password, AES-256-GCM",
        "wrappings": wrappings,
    }
    return json.dumps(document, sort_keys=True).encode() + b"\n"


def unwrap_key(blob: bytes, password_file: Path, node: str) -> bytes | None:
    """Return the catalog key from the node's key object, or None when no wrapping opens with
    this password (it was changed outside drkit) or the object is malformed."""
    password = _password(password_file)
    try:
        wrappings = json.loads(blob)["wrappings"]
        if not isinstance(wrappings, list) or len(wrappings) > WRAPPINGS_LIMIT:
            return None  # each wrapping costs an scrypt: a planted list of thousands is not ours
        for wrapping in wrappings:
            salt, nonce, data = (
                base64.b64decode(wrapping[name]) for name in ("salt", "nonce", "data")
            )
            wrapping_key = hashlib.scrypt(password, salt=salt, dklen=32, maxmem=64 << 20, **SCRYPT)
            with contextlib.suppress(InvalidTag):
                return AESGCM(wrapping_key).decrypt(nonce, data, f"drkit key {node}".encode())
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return None


def unwrap_key_remembered(
    blob: bytes, password_file: Path, node: str, remembered: Path
) -> bytes | None:
    """unwrap_key, its answer kept in remembered (0600, in the node's state directory) for this
    very key object and password file (its inode, size and change time): the next backup of
    the node skips the scrypt (32 MiB and ~0.1 s of CPU). A changed password file or key
    object (a rotation, a password changed outside drkit) unwraps again. The file holds what
    the password file beside it already opens, with the same owner-only mode."""
    info = os.stat(password_file)
    kept_for = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    identity = ":".join([hashlib.sha256(blob).hexdigest(), *map(str, kept_for)])
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        kept = json.loads(remembered.read_bytes())
        if kept["identity"] == identity:
            return base64.b64decode(kept["key"], validate=True)
    key = unwrap_key(blob, password_file, node)
    if key is not None:
        with contextlib.suppress(OSError, errors.DrkitError):
            document = {"identity": identity, "key": _b64(key)}
            durable.write_atomic(remembered, json.dumps(document).encode(), 0o600, 0o700)
    return key


def seal(key: bytes, object_key: str, payload: bytes) -> bytes:
    """Return the sealed object of payload stored at object_key."""
    nonce = os.urandom(12)
    data = AESGCM(key).encrypt(nonce, gzip.compress(payload, 6), object_key.encode())
    document = {
        "drkit_sealed": SEAL_FORMAT,
        "cipher": "AES-256-GCM",
        "key_id": key_id(key),
        "nonce": _b64(nonce),
        "data": _b64(data),
    }
    return json.dumps(document, sort_keys=True).encode() + b"\n"


def unseal(key: bytes, object_key: str, blob: bytes) -> bytes | None:
    """Return the payload of a sealed object, or None when another catalog key sealed it (one
    the node had before its password was changed outside drkit); raise Refused when it does not
    open with the key that sealed it (altered) or is not a sealed object."""
    try:
        document = json.loads(blob)
        if document.get("drkit_sealed") != SEAL_FORMAT:
            raise ValueError("unknown format")
        if document.get("key_id") != key_id(key):
            return None
        nonce, data = (base64.b64decode(document[name]) for name in ("nonce", "data"))
        return gzip.decompress(AESGCM(key).decrypt(nonce, data, object_key.encode()))
    except InvalidTag:
        raise errors.Refused(f"{object_key} does not open with the key that sealed it") from None
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        raise errors.Refused(f"{object_key} is not a sealed drkit object") from None


@dataclass
class Bundle:
    """What a sealed manifest object holds: the manifest bytes, the node's drkit.yaml, and the
    text files (config, scripts) a diff shows, each as its manifest entry vouches."""

    manifest: bytes
    config: str | None = None
    texts: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Return the payload: one JSON line (config, texts), then the manifest bytes as they
        are (a 30 k-file manifest is not escaped into a second copy)."""
        header = json.dumps({"config": self.config, "texts": self.texts}, sort_keys=True)
        return header.encode() + b"\n" + self.manifest

    @classmethod
    def decode(cls, payload: bytes, object_key: str) -> Bundle:
        header, _, manifest_bytes = payload.partition(b"\n")
        try:
            document = json.loads(header)
            texts = document.get("texts") or {}
            if not isinstance(texts, dict) or not manifest_bytes:
                raise TypeError
            return cls(manifest_bytes, document.get("config"), texts)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise errors.Refused(f"{object_key} holds no drkit manifest") from None

    def text(self, node_manifest: Manifest, path: str) -> str | None:
        """Return a file's text when the bundle holds it and its sha256 is the manifest's."""
        text = self.texts.get(path)
        if text is None:
            return None
        expected = next((e.sha256 for e in node_manifest.files if e.path == path), "")
        return text if hashlib.sha256(text.encode()).hexdigest() == expected else None


TEXT_CATEGORIES = ("config", "scripts", "accounts")  # what diff and fleet drift show as text
TEXT_MAX_BYTES = 256 * 1024
TEXTS_MAX_BYTES = 1 << 20  # per object: every backup seals, uploads and every open reads it


def text_paths(node_manifest: Manifest) -> list[str]:
    """Return the files a sealed manifest object carries as text: config, scripts and account
    files up to TEXT_MAX_BYTES that hold no key (keys never leave the snapshot), in manifest
    order while they add up to TEXTS_MAX_BYTES (a node's own config is far smaller; the rest
    of a larger tree is read from restic when a diff needs it)."""
    key_paths = {key.path for key in node_manifest.keys}
    chosen, total = [], 0
    for entry in node_manifest.files:
        size = entry.size or 0
        if (
            entry.category in TEXT_CATEGORIES
            and entry.type == "file"
            and size <= TEXT_MAX_BYTES
            and entry.path not in key_paths
            and total + size <= TEXTS_MAX_BYTES
        ):
            chosen.append(entry.path)
            total += size
    return chosen


def read_texts(root: Path, node_manifest: Manifest, paths: list[str]) -> dict[str, str]:
    """Return the UTF-8 text of each path on root whose bytes still hash as the manifest says
    (a file that changed since, or is not text, is left out: a diff reads it from restic)."""
    wanted = set(paths)
    texts = {}
    for entry in node_manifest.files:
        if entry.path not in wanted:
            continue
        try:
            data = on_root(root, entry.path).read_bytes()
            if hashlib.sha256(data).hexdigest() == entry.sha256:
                texts[entry.path] = data.decode()
        except (OSError, UnicodeDecodeError):
            continue
    return texts


@dataclass(frozen=True)
class IndexEntry:
    """One snapshot of the node as its signed chain head lists it. manifest_sha256 is None
    for a snapshot listed from the repository when the index began (no manifest bound)."""

    id: str
    time: datetime
    manifest_sha256: str | None
    files: int | None = None
    size: int | None = None
    tags: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "time": utc_text_precise(self.time),
            "manifest_sha256": self.manifest_sha256,
            "files": self.files,
            "size": self.size,
            "tags": list(self.tags),
        }

    @classmethod
    def of(cls, item: object) -> IndexEntry:
        """Return the entry of a signed index item; raise ValueError when it is malformed."""
        if not isinstance(item, dict) or not SNAPSHOT_ID.fullmatch(str(item.get("id"))):
            raise ValueError("index entry without a snapshot id")
        digest = item.get("manifest_sha256")
        if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", str(digest)):
            raise ValueError("index entry with a malformed manifest hash")
        return cls(
            id=item["id"],
            time=parse_utc(str(item["time"])),
            manifest_sha256=digest,
            files=item.get("files"),
            size=item.get("size"),
            tags=tuple(item.get("tags") or ()),
        )


def parse_index(items: object) -> list[IndexEntry]:
    """Return a signed head's index, oldest first; raise ValueError when it is malformed."""
    if not isinstance(items, list) or len(items) > 2 * INDEX_LIMIT:
        raise ValueError("the head holds no index of drkit's shape")
    return sorted((IndexEntry.of(item) for item in items), key=lambda entry: entry.time)


def extend_index(index: list[IndexEntry], entry: IndexEntry) -> list[IndexEntry]:
    """Return the index with entry appended (replacing an entry of the same id), at most
    INDEX_LIMIT long."""
    kept = [item for item in index if item.id != entry.id] + [entry]
    return sorted(kept, key=lambda item: item.time)[-INDEX_LIMIT:]
