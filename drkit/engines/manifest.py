"""The signed manifest: what a node's files were at backup time, and the proof on restore.

A manifest lists every file (path, category, type, size, mode, owner, mtime, sha256), the keys
and certificates among them, and the accounts the node needs. drkit stores it, its signature
and the node's drkit.yaml inside the snapshot under SNAPSHOT_DIR, so plain restic restores
them along with the node and a bare machine needs nothing else.
"""

from __future__ import annotations

import functools
import grp
import json
import math
import os
import posixpath
import pwd
import stat
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, JsonValue, TypeAdapter, ValidationError

from drkit import errors
from drkit.engines import durable, keys
from drkit.engines.filehash import HashCache as HashCache  # re-exported: readers use manifest.*
from drkit.engines.filehash import sha256_file as sha256_file
from drkit.engines.filehash import sha256_handle as sha256_handle
from drkit.engines.manifestjson import json_pieces as json_pieces  # freshness reads it here
from drkit.engines.manifestjson import streamed
from drkit.model import (
    AccountRecord,
    CertificateRecord,
    ChainLink,
    Entry,
    FileFields,
    FileRecord,
    GroupEntry,
    HostKeyRecord,
    Inventory,
    KeyRecord,
    Manifest,
    PasswdEntry,
    utc_text,
    utc_text_precise,
)
from drkit.paths import LinkResolver, host_path, on_root, resolve, shown

FORMAT = 1
SNAPSHOT_DIR = "/var/lib/drkit/snapshot"
MANIFEST_PATH = f"{SNAPSHOT_DIR}/manifest.json"
SIGNATURE_PATH = f"{SNAPSHOT_DIR}/manifest.sig"
CONFIG_PATH = f"{SNAPSHOT_DIR}/drkit.yaml"
KEY_CATEGORIES = ("host_keys", "user_keys", "tls")
PARENTS = "parents"  # the category of the directories above backed-up paths
HASHERS = 4  # threads hashing a backup's files
BATCH = 64  # files a hashing thread is given at a time
BIG = 4 << 20  # bytes to hash that make a batch worth a thread
_FACTS = TypeAdapter(dict[str, dict[str, JsonValue]])


class NameBook:
    """uid/gid → names from the node's own /etc/passwd and /etc/group, else the host's."""

    def __init__(self, root: Path) -> None:
        self.users: dict[int, str] = {}
        self.groups: dict[int, str] = {}
        passwd, group = on_root(root, "/etc/passwd"), on_root(root, "/etc/group")
        if passwd.is_file():
            for line in _lines(passwd):
                user = PasswdEntry.parse(line)
                if user.uid_number is not None:
                    self.users.setdefault(user.uid_number, user.name)
            for line in _lines(group) if group.is_file() else []:
                entry = GroupEntry.parse(line)
                if entry.gid.isdigit():
                    self.groups.setdefault(int(entry.gid), entry.name)
        else:
            self.users = {entry.pw_uid: entry.pw_name for entry in pwd.getpwall()}
            self.groups = {entry.gr_gid: entry.gr_name for entry in grp.getgrall()}


def _lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()


def _walk(root: Path, entries: Iterable[Entry]) -> tuple[dict[str, str], list[str]]:
    """Expand the inventory into every path beneath it, never following a link out of the
    tree it is in; return ({node path: category}, the special files skipped).

    A named path reached through symlinks is recorded as each link on the way (the link
    itself: restic stores it as a link) and the file or directory it resolves to inside
    root, as the node's own kernel would resolve it; links met while walking a directory
    are recorded as links and never entered.
    """
    found: dict[str, str] = {}
    skipped: list[str] = []
    root_text = os.path.normpath(str(root))
    strip = 0 if root_text == "/" else len(root_text)
    resolver = LinkResolver(root)
    for entry in entries:
        try:
            resolved, links = resolver.links(entry.path)
        except OSError:  # a loop of links: the links themselves are what the node holds
            resolved, links = resolve(root, entry.path, follow_last=False), []
        for link in links:
            found.setdefault(link, entry.category)
        if resolved == "/":  # a link to the root names no file of its own: never the whole tree
            continue
        found.setdefault(resolved, entry.category)
        host = host_path(root, resolved)
        if _is_real_directory(host):
            for path, special in _tree(host):
                if special:
                    skipped.append(path[strip:])
                else:
                    found.setdefault(path[strip:], entry.category)
    return found, skipped


def _tree(top: str) -> Iterator[tuple[str, bool]]:
    """Yield (host path, whether it is a FIFO, socket or device) of everything beneath top in
    os.walk's order (a directory's subdirectories sorted, then its other names sorted, then
    each subdirectory in turn; links listed, never entered), told apart by the directory
    listing's own types: no stat per file."""
    try:
        with os.scandir(top) as listing:
            entries = list(listing)
    except OSError:
        return
    directories: list[os.DirEntry[str]] = []
    others: list[os.DirEntry[str]] = []
    for entry in entries:
        try:
            directory = entry.is_dir()  # a link to a directory is listed with them, as os.walk does
        except OSError:
            directory = False
        (directories if directory else others).append(entry)
    directories.sort(key=lambda entry: entry.name)
    others.sort(key=lambda entry: entry.name)
    for entry in directories + others:
        yield entry.path, _special_entry(entry)
    for entry in directories:
        if not entry.is_symlink():
            yield from _tree(entry.path)


def _special_entry(entry: os.DirEntry[str]) -> bool:
    """Return True for a FIFO, socket or device node (never backed up: restic would store it
    and no restore recreates it), from the listing's own type."""
    try:
        return not (
            entry.is_file(follow_symlinks=False)
            or entry.is_dir(follow_symlinks=False)
            or entry.is_symlink()
        )
    except OSError:
        return False


def _is_real_directory(host: str) -> bool:
    """Return True for a directory that is not a link (one lstat)."""
    try:
        return stat.S_ISDIR(os.lstat(host).st_mode)
    except OSError:
        return False


def _parents(paths: dict[str, str]) -> set[str]:
    """Return every directory above a backed-up path (the root itself excluded): the manifest
    lists them, so their owner and mode are signed like any entry's."""
    parents: set[str] = set()
    for node_path in paths:
        parent = posixpath.dirname(node_path)
        while parent not in ("/", "") and parent not in parents:
            parents.add(parent)
            parent = posixpath.dirname(parent)
    return {parent for parent in parents if not parent.startswith(SNAPSHOT_DIR)}


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (0600, new parents 0700), atomically and
    durably (durable.write_atomic); raise LocalFilesystemError."""
    durable.write_atomic(path, data, 0o600, 0o700)


def _mtime_text(mtime: float) -> str:
    """Return utc_text(datetime.fromtimestamp(mtime, UTC)), the same text (microseconds
    rounded half to even, as datetime does) from one formatting per second, not per file."""
    second = math.floor(mtime)
    if round((mtime - second) * 1e6) >= 1_000_000:
        second += 1
    return _second_text(second)


@functools.lru_cache(maxsize=1 << 12)
def _second_text(second: int) -> str:
    return utc_text(datetime.fromtimestamp(second, UTC))


@functools.cache
def _mode_text(mode: int) -> str:
    """Return a mode as the manifest writes it (0644): one string per mode, not per file."""
    return f"{mode:04o}"


def _describe(
    root: Path, node_path: str, category: str, names: NameBook
) -> tuple[FileFields, os.stat_result] | None:
    """Return the manifest fields of one path (a regular file's sha256 not yet among them)
    and its stat, or None when it vanished or is no file, directory or symlink."""
    try:
        info = os.lstat(host_path(root, node_path))
    except FileNotFoundError:
        return None
    mode = info.st_mode
    if not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
        return None
    values: FileFields = {
        "path": node_path,
        "category": category,
        "type": "symlink" if stat.S_ISLNK(mode) else "dir" if stat.S_ISDIR(mode) else "file",
        "mode": _mode_text(stat.S_IMODE(mode)),
        "uid": info.st_uid,
        "gid": info.st_gid,
        "user": names.users.get(info.st_uid, str(info.st_uid)),
        "group": names.groups.get(info.st_gid, str(info.st_gid)),
        "mtime": _mtime_text(info.st_mtime),
    }
    if stat.S_ISLNK(mode):
        values["link"] = os.readlink(host_path(root, node_path))
    elif stat.S_ISREG(mode):
        values["size"] = info.st_size
    return values, info


_Described = tuple[FileFields, os.stat_result]
_Hashed = str | OSError | None  # None: nothing to hash (not a regular file, or cached)


def _hash_batch(root: Path, batch: list[_Described]) -> list[_Hashed]:
    """Return the sha256 of each regular file of batch not hashed yet (the error it met)."""
    hashed: list[_Hashed] = []
    for values, _ in batch:
        if values["type"] != "file" or "sha256" in values:
            hashed.append(None)
            continue
        try:
            hashed.append(sha256_file(host_path(root, values["path"])))
        except OSError as exc:
            hashed.append(exc)
    return hashed


def _collect(
    batch: list[_Described], hashes: list[_Hashed], cache: HashCache | None
) -> Iterator[FileRecord]:
    """Yield the entries of a hashed batch; a file that vanished is left out."""
    for (values, info), hashed in zip(batch, hashes, strict=True):
        if isinstance(hashed, FileNotFoundError):
            continue
        if isinstance(hashed, OSError):  # root is refused too: a write-only sysctl, EIO
            raise errors.BackupIncomplete(
                f"{values['path']} could not be read ({hashed.strerror}): no snapshot made"
            )
        if hashed is not None:
            values["sha256"] = hashed
        if cache and "sha256" in values:
            cache.remember(values["path"], info, values["sha256"])
        yield FileRecord.trusted(values)


def describe_files(
    root: Path, paths: Iterable[tuple[str, str]], names: NameBook, cache: HashCache | None
) -> list[FileRecord]:
    """Return the manifest entries of (node path, category) pairs, in their order, leaving out
    paths that vanished. Files the cache does not vouch for are hashed BATCH files (or BIG
    bytes) at a time: a batch holding BIG bytes to hash by one of HASHERS threads while the
    next are described (hashlib releases the GIL on large reads: another core), a batch of
    small files in this thread (threads contending for the GIL over small files were slower
    than one). A few batches are in flight at a time, so memory does not grow with the node."""
    records: list[FileRecord] = []
    in_flight: deque[tuple[list[_Described], Future[list[_Hashed]]]] = deque()
    with ThreadPoolExecutor(HASHERS) as pool:

        def send(batch: list[_Described], unhashed: int) -> None:
            if unhashed >= BIG:
                in_flight.append((batch, pool.submit(_hash_batch, root, batch)))
            else:
                done: Future[list[_Hashed]] = Future()
                done.set_result(_hash_batch(root, batch))
                in_flight.append((batch, done))

        batch: list[_Described] = []
        unhashed = 0  # bytes of the batch's files still to hash
        for node_path, category in paths:
            found = _describe(root, node_path, category, names)
            if found is None:
                continue
            values, info = found
            if values["type"] == "file":
                digest = cache.cached(node_path, info) if cache else None
                if digest is None:
                    unhashed += info.st_size
                else:
                    values["sha256"] = digest
            batch.append(found)
            if len(batch) == BATCH or unhashed >= BIG:
                send(batch, unhashed)
                batch, unhashed = [], 0
            while len(in_flight) > 2 * HASHERS or (in_flight and in_flight[0][1].done()):
                done, future = in_flight.popleft()
                records += _collect(done, future.result(), cache)
        send(batch, unhashed)
        for done, future in in_flight:
            records += _collect(done, future.result(), cache)
    return records


def _keys_and_certificates(
    root: Path, files: list[FileRecord]
) -> tuple[list[KeyRecord], list[CertificateRecord]]:
    found_keys: list[KeyRecord] = []
    certificates: list[CertificateRecord] = []
    for entry in files:
        if entry.type != "file" or entry.category not in KEY_CATEGORIES:
            continue
        if (entry.size or 0) > 1 << 20:
            continue
        data = on_root(root, entry.path).read_bytes()
        key = keys.describe_key(data)
        listed = (
            [key] if key else keys.authorized_keys(data) if entry.category == "user_keys" else []
        )
        found_keys += [
            KeyRecord(
                path=entry.path,
                category=entry.category,
                private=one.private,
                type=one.type,
                fingerprint=one.fingerprint,
                public_line=one.public_line,
            )
            for one in listed
        ]
        certificate = keys.describe_certificate(data)
        if certificate:
            certificates.append(
                CertificateRecord(
                    path=entry.path,
                    subject=certificate.subject,
                    issuer=certificate.issuer,
                    not_after=utc_text(certificate.not_after),
                    fingerprint=certificate.fingerprint,
                    key_fingerprint=certificate.key_fingerprint,
                    key_path=None,
                )
            )
    private_by_fingerprint = {k.fingerprint: k.path for k in found_keys if k.private}
    private_paths = [k.path for k in found_keys if k.private]
    for record in certificates:
        record.key_path = private_by_fingerprint.get(record.key_fingerprint) or _key_by_name(
            record.path, private_paths
        )
    return found_keys, certificates


_PAIR_SUFFIXES = (".pem", ".crt", ".cer", ".cert", ".key", "-cert", "_cert", "-key", "_key")


def _pair_stem(path: str) -> str:
    """Return a file's name without the extensions and suffixes TLS pairs differ by."""
    name = posixpath.basename(path)
    while stripped := next((s for s in _PAIR_SUFFIXES if name.endswith(s) and name != s), None):
        name = name[: -len(stripped)]
    return name


def _key_by_name(certificate: str, private_paths: list[str]) -> str | None:
    """Return the one private key named like certificate (server.crt and server.key,
    tls-cert.pem and tls-key.pem), so that a key that no longer matches its certificate is
    still paired with it, and the check says so; None when no single key is."""
    named = [path for path in private_paths if _pair_stem(path) == _pair_stem(certificate)]
    return named[0] if len(named) == 1 else None


def build(
    root: Path,
    inventory: Inventory,
    *,
    node: str,
    profiles: list[str],
    accounts: list[AccountRecord],
    created: datetime,
    previous: ChainLink | None = None,
    cache: HashCache | None = None,
    profile_options: Mapping[str, Mapping[str, JsonValue]] | None = None,
) -> Manifest:
    """Return the manifest of a node's files as they are on disk now.

    previous ({snapshot_id, manifest_sha256} of the node's last snapshot) links the manifests
    into a signed chain, so a deleted, replaced or re-ordered snapshot shows. profile_options
    (drkit.yaml's, for the profiles in use) are signed with the files: the checks after any
    restore read them from here.
    """
    names = NameBook(root)
    paths, skipped = _walk(root, [*inventory.files, *inventory.dirs])
    for parent in _parents(paths):  # /etc/ssl/private's 0700 is the node's: signed, restored
        paths.setdefault(parent, PARENTS)
    ordered = sorted(paths.items())
    paths.clear()  # not held beside the entries
    files = describe_files(
        root,
        ((path, category) for path, category in ordered if not path.startswith(SNAPSHOT_DIR)),
        names,
        cache,
    )
    del ordered
    found_keys, certificates = _keys_and_certificates(root, files)
    host_keys = [
        HostKeyRecord(
            path=key.path, type=key.type, fingerprint=key.fingerprint, public_line=key.public_line
        )
        for key in found_keys
        if key.category == "host_keys" and key.private
    ]
    return Manifest(
        format=FORMAT,
        node=node,
        profiles=profiles,
        created=utc_text_precise(created),  # two snapshots within one second still order
        files=files,
        keys=found_keys,
        host_keys=host_keys,
        certificates=certificates,
        accounts=accounts,
        previous=previous,
        owned_globs=inventory.owned_globs,
        profile_options={
            kind: dict(options)
            for kind, options in (profile_options or {}).items()
            if kind in profiles
        },
        facts=_FACTS.validate_python(inventory.facts),  # the profiles' facts must be JSON
        warnings=inventory.warnings + _skipped_warning(skipped),
        skipped=skipped,
    )


def _skipped_warning(skipped: list[str]) -> list[str]:
    if not skipped:
        return []
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    return [
        f"{shown(skipped[0])}{more}: FIFO, socket or device node, not backed up "
        "(a restore never recreates one)"
    ]


def leaf_paths(manifest: Manifest) -> list[str]:
    """Return the root-relative paths restic must be given: all but directories with listed
    children (restic would recurse into those and pick up files the manifest never saw)."""
    paths = [entry.path for entry in manifest.files]
    parents = {posixpath.dirname(path) for path in paths}  # no Path object per file
    return [path.lstrip("/") for path in paths if path not in parents]


def encode(manifest: Manifest) -> bytes:
    """Return the exact bytes that are signed and stored: the fields each record was given
    (a stored manifest opened and encoded again gives back its own bytes)."""
    return "".join(json_pieces(manifest, separators=(",", ":"))).encode() + b"\n"


def write_snapshot_files(
    root: Path, manifest_bytes: bytes, signature: keys.Signature, config_text: str
) -> list[str]:
    """Write manifest, signature and config into the node's drkit snapshot directory."""
    directory = on_root(root, SNAPSHOT_DIR)
    durable.make_dirs(directory.parent, 0o755)  # the node's own var/lib, when it lacks one
    durable.make_dirs(directory, 0o700)
    os.chmod(directory, 0o700)
    for node_path, data in (
        (MANIFEST_PATH, manifest_bytes),
        (SIGNATURE_PATH, signature_bytes(signature)),
        (CONFIG_PATH, config_text.encode()),
    ):
        write_private(on_root(root, node_path), data)
    return [SNAPSHOT_DIR.lstrip("/")]


def signature_bytes(signature: keys.Signature) -> bytes:
    """Return the stored form of a signature document (in the snapshot and beside it)."""
    return json.dumps(signature, indent=1).encode() + b"\n"


def open_signed(manifest_bytes: bytes, signature_text: str) -> tuple[Manifest, str]:
    """Verify the signature over the manifest; return (manifest, signer fingerprint)."""
    try:
        signature = json.loads(signature_text)
    except json.JSONDecodeError:
        raise errors.Refused("manifest signature file is not JSON") from None
    if not isinstance(signature, dict):
        raise errors.Refused("manifest signature file is malformed")
    signer = keys.verify_signature(signature, manifest_bytes)
    try:
        document = streamed(manifest_bytes.decode())
    except ValueError:  # UnicodeDecodeError, JSONDecodeError and ValidationError are ones
        return _open_document(manifest_bytes), signer  # says what is wrong with it
    if document.get("format") != FORMAT:
        raise errors.Refused("manifest has an unknown format")
    try:
        opened = Manifest.model_validate(document)
    except ValidationError:
        return _open_document(manifest_bytes), signer
    return opened, signer


def parse(manifest_bytes: bytes) -> Manifest:
    """Return the manifest of bytes drkit wrote itself (its copy on the node's root), streamed
    like a signed one; raise ValueError (pydantic's ValidationError too) when malformed."""
    return Manifest.model_validate(streamed(manifest_bytes.decode()))


class _Stamp(BaseModel):
    """The one field created_of reads (the rest of the manifest is skipped, not built)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    created: str


def created_of(manifest_bytes: bytes) -> str:
    """Return when a manifest was made without building its file entries; raise ValueError
    (pydantic's ValidationError) when it has no such field."""
    return _Stamp.model_validate_json(manifest_bytes).created


def _open_document(manifest_bytes: bytes) -> Manifest:
    """Return the manifest parsed as JSON, then validated, refusing it with the reason."""
    try:
        document = json.loads(manifest_bytes)
    except ValueError:  # not UTF-8 either
        raise errors.Refused("manifest is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise errors.Refused("manifest has an unknown format")
    try:
        return Manifest.model_validate(document)
    except ValidationError as exc:
        raise errors.Refused(f"manifest is malformed: {_first_error(exc)}") from None


def _first_error(exc: ValidationError) -> str:
    """Return where and why a manifest failed validation, in one line."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]


def compare_entry(
    host: str | Path, expected: FileRecord, *, content: bool = True, dir_fd: int | None = None
) -> str | None:
    """Return why host (relative to dir_fd, if given) differs from the manifest entry, or
    None when it matches; a final link is never followed."""
    try:
        info = os.stat(host, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return "missing"
    kind = expected.type
    if kind == "symlink":
        if not stat.S_ISLNK(info.st_mode):
            return "not a symlink"
        link = os.readlink(host, dir_fd=dir_fd)
        return None if link == expected.link else "symlink target differs"
    if kind == "dir" and not stat.S_ISDIR(info.st_mode):
        return "not a directory"
    if kind == "file":
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file"
        if info.st_size != expected.size:
            return f"size {info.st_size} != {expected.size}"
        if content and sha256_file(host, dir_fd) != expected.sha256:
            return "content differs (sha256)"
    if f"{stat.S_IMODE(info.st_mode):04o}" != expected.mode:
        return f"mode {stat.S_IMODE(info.st_mode):04o} != {expected.mode}"
    if (info.st_uid, info.st_gid) != (expected.uid, expected.gid):
        return f"owner {info.st_uid}:{info.st_gid} != {expected.uid}:{expected.gid}"
    return None
