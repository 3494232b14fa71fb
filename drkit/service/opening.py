"""Finding and opening a node's snapshot: through the signed catalog, else through restic.

A snapshot named by `latest`, `latest~N`, `--at` or an id is found in the node's signed index
(its chain head) and the S3 listing of the repository's snapshots, and opened from its sealed
manifest object: no restic process. Where the catalog cannot answer (no head, a head this
origin does not trust, a snapshot of the repository no trusted head lists, objects missing),
restic answers as before, and a snapshot reached without a signed id is screened by the
caller before anything is restored from it.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, overload

from pydantic import ValidationError

from drkit import errors
from drkit.config import Config, Repository, parse_config
from drkit.configtypes import config_error
from drkit.engines import catalog, freshness, keys, manifest, records
from drkit.engines import restic as restic_engine
from drkit.model import Manifest
from drkit.service import context
from drkit.service.spec import Spec

log = logging.getLogger(__name__)


@dataclass
class Origin:
    """Where snapshots come from and whom to trust: from drkit.yaml or bare-metal flags."""

    node: str
    repository: Repository
    restic: Path | None = None
    trusted_keys: list[str] = field(default_factory=list)
    trust_keys: list[str] = field(default_factory=list)
    smoke_user: str | None = None
    state_dir: Path = Path("/var/lib/drkit")
    trust_snapshot_signer: bool = False
    root: Path = Path("/")  # the node's root: where restore and check look by default

    @classmethod
    def from_config(
        cls,
        config: Config,
        extra_trust: list[str] | None = None,
        *,
        trust_snapshot_signer: bool = False,
        smoke_user: str | None = None,
    ) -> Origin:
        """Given drkit.yaml and --trust-key values, return the origin; raise UsageError on a
        --trust-key that is not a fingerprint."""
        return cls(
            node=config.node,
            repository=config.repository,
            restic=config.restic,
            trusted_keys=list(config.trusted_keys),
            trust_keys=context.trust_keys(extra_trust),
            smoke_user=smoke_user or config.smoke_user,
            state_dir=config.state_dir,
            trust_snapshot_signer=trust_snapshot_signer,
            root=config.root,
        )

    @classmethod
    def bare_metal(
        cls,
        *,
        node: str | None,
        s3_endpoint: str,
        bucket: str | None,
        password_file: Path | None,
        prefix: str | None = None,
        region: str = "us-east-1",
        ca_bundle: Path | None = None,
        extra_trust: list[str] | None = None,
        trust_snapshot_signer: bool = False,
        smoke_user: str | None = None,
    ) -> Origin:
        """Given bare-metal restore's flags (no drkit.yaml on the machine, no trust store),
        return the origin, rooted at /; raise UsageError naming the missing flags and
        ConfigError naming every flag with a bad value."""
        flags = (("--bucket", bucket), ("--password-file", password_file), ("--node", node))
        missing = [flag for flag, value in flags if not value]
        if missing:
            raise errors.UsageError(f"bare-metal restore needs {', '.join(missing)}")
        try:
            repository = Repository(
                s3_endpoint=s3_endpoint,
                bucket=bucket,
                prefix=prefix or node,
                region=region,
                ca_bundle=ca_bundle,
                password_file=password_file,
            )
        except ValidationError as exc:
            raise config_error(
                exc, "bare-metal restore", lambda field: "--" + field.replace("_", "-")
            ) from None
        return cls(
            node=str(node),
            repository=repository,
            trust_keys=context.trust_keys(extra_trust),
            smoke_user=smoke_user,
            trust_snapshot_signer=trust_snapshot_signer,
        )


@dataclass
class Opened:
    """A snapshot's manifest after its signature and signer were checked."""

    manifest: Manifest
    signer: str
    trust: str
    embedded_config: Config | None
    raw: bytes
    bundle: catalog.Bundle | None = None  # from the sealed object: the texts a diff shows


def _trust(origin: Origin, signer: str, config_text: str | None) -> tuple[str, Config | None]:
    """Decide whether the signer is trusted; return how.

    'config': drkit.yaml's trusted_keys; 'key': --trust-key; 'snapshot': the snapshot's own
    config under --trust-snapshot-signer (trust on first use, announced on stderr).
    """
    embedded = None
    if config_text:
        try:
            embedded = parse_config(config_text, "the snapshot's drkit.yaml")
        except errors.ConfigError as exc:
            log.warning("%s", exc.message)
    if signer in origin.trusted_keys:
        return "config", embedded
    if signer in origin.trust_keys:
        return "key", embedded
    if origin.trust_snapshot_signer:
        if embedded and signer in embedded.trusted_keys:
            print(
                f"drkit: trusting signer {signer} because the snapshot's own config lists it "
                "(--trust-snapshot-signer)",
                file=sys.stderr,
            )
            return "snapshot", embedded
        raise errors.Refused(f"snapshot signer {signer} is not listed in the snapshot's config")
    raise errors.Refused(
        f"manifest signed by untrusted key {signer}: add it to trusted_keys or pass --trust-key"
    )


def open_manifest(
    origin: Origin, manifest_bytes: bytes, signature: str, config_text: str | None
) -> Opened:
    """Verify signature, trust and node of a manifest; return it opened."""
    node_manifest, signer = manifest.open_signed(manifest_bytes, signature)
    trust, embedded = _trust(origin, signer, config_text)
    if node_manifest.node != origin.node:
        raise errors.Refused(
            f"manifest is for node {node_manifest.node}, not {origin.node}: refused"
        )
    return Opened(node_manifest, signer, trust, embedded, manifest_bytes)


def signed_parts(snapshot_id: str, files: dict[str, bytes]) -> tuple[bytes, str, str | None]:
    """Return (manifest bytes, signature text, drkit.yaml) of a snapshot's drkit directory as
    read into memory; raise Refused when the manifest or its signature is missing."""
    if manifest.MANIFEST_PATH not in files or manifest.SIGNATURE_PATH not in files:
        raise errors.Refused(
            f"snapshot {snapshot_id[:8]} has no drkit manifest and signature: not restorable"
        )
    config_bytes = files.get(manifest.CONFIG_PATH)
    return (
        files[manifest.MANIFEST_PATH],
        files[manifest.SIGNATURE_PATH].decode(errors="replace"),
        config_bytes.decode(errors="replace") if config_bytes is not None else None,
    )


def open_files(origin: Origin, snapshot_id: str, files: dict[str, bytes]) -> Opened:
    """Verify a snapshot's manifest, signature and config (read into memory, never to disk)."""
    return open_manifest(origin, *signed_parts(snapshot_id, files))


def read_drkit_files(
    restic: restic_engine.Restic, snapshot: str, host: str | None = None
) -> dict[str, bytes]:
    try:
        return restic.dump_directory(snapshot, manifest.SNAPSHOT_DIR, host)
    except errors.ResticFailed:
        return {}


@overload
def open_record(
    stored: object, trusted: set[str], node: str, kind: Literal["head"]
) -> records.HeadRecord: ...
@overload
def open_record(
    stored: object, trusted: set[str], node: str, kind: Literal["prune"]
) -> records.PruneRecord: ...
@overload
def open_record(
    stored: object, trusted: set[str], node: str, kind: Literal["ack"]
) -> records.AckRecord: ...
@overload
def open_record(
    stored: object, trusted: set[str], node: str, kind: Literal["events"]
) -> records.EventsRecord: ...
@overload
def open_record(stored: object, trusted: set[str], node: str, kind: str) -> records.Record: ...
def open_record(stored: object, trusted: set[str], node: str, kind: str) -> records.Record:
    """Return a signed record ({record, signature}) opened; raise Refused when it does not hold."""
    if not isinstance(stored, dict) or not isinstance(stored.get("record"), str):
        raise errors.Refused("not a signed record")
    if not isinstance(stored.get("signature"), dict):
        raise errors.Refused("the record has no signature")
    try:
        signer = keys.verify_signature(stored["signature"], stored["record"].encode())
    except errors.Refused:
        raise errors.Refused("the record's signature does not verify") from None
    if signer not in trusted:
        raise errors.Refused(f"the record is signed by untrusted key {signer}")
    try:
        record = records.RECORD.validate_json(stored["record"])
    except ValidationError:
        raise errors.Refused(f"not a {kind} record of node {node}") from None
    if record["kind"] != kind or record["node"] != node:
        raise errors.Refused(f"not a {kind} record of node {node}")
    return record


def signed_confirmations(origin: Origin, node: str) -> list[freshness.Confirmation]:
    """Return the freshness entries of a node's signed chain head in the bucket, newest last
    (none when the head is missing or does not verify against the trusted keys)."""
    from drkit.engines.storage import Storage

    try:
        stored = Storage(origin.repository).get_json(catalog.head_key(node))
        if stored is None:
            return []
        record = open_record(stored, {*origin.trusted_keys, *origin.trust_keys}, node, "head")
    except (errors.DrkitError, ValueError, TypeError):
        return []
    return freshness.confirmations(record.get("confirmations"))


@dataclass(frozen=True)
class Found:
    """A snapshot found for a command; entry is its signed index entry, None when it was
    reached without one."""

    snapshot: restic_engine.Snapshot
    entry: catalog.IndexEntry | None = None

    @property
    def bound(self) -> bool:
        """True when a trusted signed index binds this snapshot id to its manifest's hash."""
        return self.entry is not None and self.entry.manifest_sha256 is not None


def snapshot_of(node: str, entry: catalog.IndexEntry) -> restic_engine.Snapshot:
    """Return the snapshot record of a signed index entry, as restic would list it."""
    return restic_engine.Snapshot(
        id=entry.id,
        short_id=entry.id[:8],
        time=entry.time,
        hostname=node,
        tags=list(entry.tags),
        paths=[],
        files=entry.files,
        size=entry.size,
    )


class Catalog:
    """One origin's view of the catalog: the trusted heads, the repository's snapshot ids and
    the nodes' catalog keys, each fetched once (in parallel; the origin node's at once)."""

    def __init__(self, origin: Origin, restic: restic_engine.Restic | None = None):
        from drkit.engines.storage import Storage

        self.origin = origin
        self.restic = restic
        self.storage = Storage(origin.repository)
        self.trusted = set(origin.trusted_keys) | set(origin.trust_keys)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="catalog")
        self._listed: Future[set[str]] = self._pool.submit(self.storage.snapshot_ids)
        self._heads: dict[str, Future[list[catalog.IndexEntry] | None]] = {}
        self._keys: dict[str, Future[bytes | None]] = {}
        self._start(origin.node)  # the head and key a command reads first, read at once
        self._others: set[str] | None = None
        self.anomalies: list[str] = []  # objects that did not match or open: tampering

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the signed index ------------------------------------------------------------------

    def _start(self, node: str) -> None:
        """Start reading the node's head and catalog key, once each."""
        if node not in self._heads:
            self._heads[node] = self._pool.submit(self._read_index, node)
            self._keys[node] = self._pool.submit(self._read_key, node)

    def index(self, node: str) -> list[catalog.IndexEntry] | None:
        """Return the node's signed index, oldest first, or None when there is no trusted one."""
        self._start(node)
        return self._heads[node].result()

    def _read_index(self, node: str) -> list[catalog.IndexEntry] | None:
        key = catalog.head_key(node)
        try:
            record = open_record(self.storage.get_json(key), self.trusted, node, "head")
            return catalog.parse_index(record.get("snapshots"))
        except (
            errors.Refused,
            errors.StorageError,
            errors.AuthenticationError,
            ValueError,
            TypeError,
        ) as exc:
            reason = exc.message if isinstance(exc, errors.DrkitError) else str(exc)
            log.info("catalog: %s not used (%s): restic is asked", key, reason)
            return None

    def listed(self) -> set[str]:
        """Return the ids of every snapshot in the repository (one S3 listing)."""
        return self._listed.result()

    def _head_nodes(self) -> set[str]:
        """Return the nodes with a chain head in the bucket; their heads start loading."""
        nodes = {
            key.split("/")[1]
            for key in self.storage.list_keys("records/")
            if key.count("/") == 2 and key.endswith("/head.json")
        }
        for node in nodes:
            self._start(node)
        return nodes

    def _complete(self, node: str, index: list[catalog.IndexEntry]) -> bool:
        """True when every snapshot the repository holds is listed by the node's index or by
        the trusted head of another node (a group shares one repository): then the index
        alone says which of them is the node's latest, and a head put back to an older
        version cannot hide a newer snapshot."""
        uncovered = self.listed() - {entry.id for entry in index}
        if uncovered and not uncovered <= self._other_ids(node):
            log.info("catalog: %d snapshot(s) no trusted head lists: restic is asked",
                     len(uncovered))  # fmt: skip
            return False
        return True

    def _other_ids(self, node: str) -> set[str]:
        """Return the snapshot ids the trusted heads of the other nodes list."""
        if self._others is None:
            nodes = self._head_nodes() - {node}
            self._others = {entry.id for other in nodes for entry in (self.index(other) or [])}
        return self._others

    def find(self, node: str, spec: str | Spec, at: datetime | None = None) -> Found | None:
        """Return the node's snapshot named by spec (or --at) from the signed index, or None
        when the index cannot answer alone (restic must be asked). Raise UsageError or Refused
        as context.select_from does."""
        spec = Spec.of(spec) if at is None else spec
        index = self.index(node)
        if index is None:
            return None
        listed = self.listed()
        by_id = {entry.id: entry for entry in index if entry.id in listed}
        if isinstance(spec, Spec) and spec.prefix is not None:
            # an id: the listing says whether it names one snapshot, the index whose it is
            named = [listed_id for listed_id in listed if listed_id.startswith(spec.prefix)]
            entry = by_id.get(named[0]) if len(named) == 1 else None
            return Found(snapshot_of(node, entry), entry) if entry else None
        if not self._complete(node, index):
            return None
        live = sorted(by_id.values(), key=lambda entry: entry.time)
        chosen = context.select_from([snapshot_of(node, e) for e in live], node, spec, at)
        return Found(chosen, by_id[chosen.id])

    def every_index(self) -> dict[str, list[catalog.IndexEntry]] | None:
        """Return every node's live index entries (the nodes with a head under records/), or
        None when a head is not trusted or the heads do not list every snapshot the
        repository holds."""
        nodes = self._head_nodes()
        indexes: dict[str, list[catalog.IndexEntry]] = {}
        for node in sorted(nodes):
            index = self.index(node)
            if index is None:
                return None
            indexes[node] = index
        listed = self.listed()
        if listed - {entry.id for index in indexes.values() for entry in index}:
            return None
        return {
            node: [entry for entry in index if entry.id in listed]
            for node, index in indexes.items()
        }

    def entry(self, node: str, snapshot_id: str) -> catalog.IndexEntry | None:
        """Return the node's signed index entry for a snapshot id, or None."""
        return next((e for e in self.index(node) or [] if e.id == snapshot_id), None)

    def node_snapshots(self, node: str) -> list[Found]:
        """Return every snapshot of the node, oldest first: from its signed index when that
        lists all the repository holds, else from one `restic snapshots`."""
        index = self.index(node)
        if index is not None and self._complete(node, index):
            listed = self.listed()
            return [Found(snapshot_of(node, e), e) for e in index if e.id in listed]
        found = self.ask_restic().snapshots(host=node, tags=["drkit"])
        return [Found(snapshot, self.entry(node, snapshot.id)) for snapshot in found]

    def find_or_ask(self, node: str, spec: str | Spec, at: datetime | None = None) -> Found:
        """Return the node's snapshot named by spec: from the index, else from restic (one
        `restic snapshots`), bound when the index lists the id restic named."""
        found = self.find(node, spec, at)
        if found is not None:
            return found
        chosen = context.select_snapshot(self.ask_restic(), node, spec, at)
        return Found(chosen, self.entry(node, chosen.id))

    def ask_restic(self) -> restic_engine.Restic:
        """Return the restic engine, for what the catalog cannot answer."""
        if self.restic is None:
            self.restic = context.restic_for(self.origin.repository, self.origin.restic)
        return self.restic

    # -- the sealed manifest objects -------------------------------------------------------

    def open(self, node: str, found: Found) -> Opened:
        """Verify signature, trust and node of a found snapshot's manifest; return it opened."""
        raw, signature, config_text, bundle = self.signed(node, found)
        opened = open_manifest(self.origin, raw, signature, config_text)
        opened.bundle = bundle
        return opened

    def signed(
        self, node: str, found: Found
    ) -> tuple[bytes, str, str | None, catalog.Bundle | None]:
        """Return a found snapshot's (manifest bytes, signature text, drkit.yaml, bundle), its
        signature not yet checked: from its sealed object when the index binds it (its sha256
        must be the index's), else from the snapshot itself (one `restic dump`), whose copy
        must then have the bound hash too."""
        snapshot = found.snapshot
        bound = found.entry.manifest_sha256 if found.entry is not None else None
        if bound is not None:
            fetched = self.objects(node, snapshot.id)
            if fetched is not None and _sha(fetched[0].manifest) == bound:
                bundle, signature = fetched
                return bundle.manifest, signature, bundle.config, bundle
            if fetched is not None:
                self._anomaly(
                    f"snapshot {snapshot.short_id}: tampering: its manifest object "
                    f"{catalog.bundle_key(node, snapshot.id)} is not the manifest its signed "
                    "index names"
                )
        raw, signature, config_text = signed_parts(
            snapshot.id, read_drkit_files(self.ask_restic(), snapshot.id)
        )
        if bound is not None and _sha(raw) != bound:
            raise errors.Refused(
                f"snapshot {snapshot.short_id}: its manifest is not the one the signed index "
                "names (the snapshot was tampered with)"
            )
        return raw, signature, config_text, None

    def objects(self, node: str, snapshot_id: str) -> tuple[catalog.Bundle, str] | None:
        """Return a snapshot's unsealed manifest object and its signature text, or None when
        either is missing or does not open (the reason is logged)."""
        keys_ = catalog.bundle_key(node, snapshot_id), catalog.signature_key(node, snapshot_id)
        try:
            sealed, signature = self._pool.map(self.storage.get_bytes, keys_)
            if sealed is None or signature is None:
                log.info("catalog: no manifest object for %s: read from the snapshot",
                         snapshot_id[:8])  # fmt: skip
                return None
            key = self.catalog_key(node)
            payload = catalog.unseal(key, keys_[0], sealed) if key else None
            if payload is None:
                log.info("catalog: %s is sealed under a key this password does not open: "
                         "read from the snapshot", keys_[0])  # fmt: skip
                return None
            return catalog.Bundle.decode(payload, keys_[0]), signature.decode(errors="replace")
        except errors.Refused as exc:
            self._anomaly(f"snapshot {snapshot_id[:8]}: tampering: {exc.message}")
            return None
        except (errors.StorageError, errors.AuthenticationError, errors.ConfigError) as exc:
            log.warning("catalog: %s: read from the snapshot instead", exc.message)
            return None

    def catalog_key(self, node: str) -> bytes | None:
        """Return the node's catalog key (its key object unwrapped with the repository
        password), or None when there is none this password opens."""
        self._start(node)
        return self._keys[node].result()

    def _read_key(self, node: str) -> bytes | None:
        try:
            blob = self.storage.get_bytes(catalog.key_object_key(node))
            if blob is None:
                return None
            return catalog.unwrap_key(blob, self.origin.repository.password_file, node)
        except (errors.StorageError, errors.AuthenticationError, errors.ConfigError) as exc:
            log.info("catalog: the key of node %s is not readable (%s)", node, exc.message)
            return None

    def _anomaly(self, text: str) -> None:
        log.warning("%s: read from the snapshot instead (`drkit verify` reports it)", text)
        self.anomalies.append(text)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
