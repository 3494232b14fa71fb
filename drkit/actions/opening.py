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
import json
import logging
import re
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from drkit import errors
from drkit.actions import context
from drkit.config import Config, Repository, config_error, parse_config
from drkit.engines import catalog, keys, manifest
from drkit.engines import restic as restic_engine

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

    manifest: dict
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


def open_manifest(origin: Origin, manifest_bytes: bytes, signature: str, config_text: str | None):
    """Verify signature, trust and node of a manifest; return it opened."""
    node_manifest, signer = manifest.open_signed(manifest_bytes, signature)
    trust, embedded = _trust(origin, signer, config_text)
    if node_manifest.get("node") != origin.node:
        raise errors.Refused(
            f"manifest is for node {node_manifest.get('node')}, not {origin.node}: refused"
        )
    return Opened(node_manifest, signer, trust, embedded, manifest_bytes)


def _open_files(origin: Origin, snapshot_id: str, files: dict[str, bytes]) -> Opened:
    """Verify a snapshot's manifest, signature and config (read into memory, never to disk)."""
    if manifest.MANIFEST_PATH not in files or manifest.SIGNATURE_PATH not in files:
        raise errors.Refused(
            f"snapshot {snapshot_id[:8]} has no drkit manifest and signature: not restorable"
        )
    config_bytes = files.get(manifest.CONFIG_PATH)
    return open_manifest(
        origin,
        files[manifest.MANIFEST_PATH],
        files[manifest.SIGNATURE_PATH].decode(errors="replace"),
        config_bytes.decode(errors="replace") if config_bytes is not None else None,
    )


def _read_drkit_files(restic, snapshot: str, host: str | None = None) -> dict[str, bytes]:
    try:
        return restic.dump_directory(snapshot, manifest.SNAPSHOT_DIR, host)
    except errors.ResticFailed:
        return {}


def open_snapshot(origin: Origin, restic, snapshot_id: str) -> Opened:
    """Read (one restic dump) and verify a snapshot's manifest, signature and config before
    anything is written anywhere."""
    return _open_files(origin, snapshot_id, _read_drkit_files(restic, snapshot_id))


def open_record(stored, trusted: set[str], node: str, kind: str) -> dict:
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
        record = json.loads(stored["record"])
    except ValueError:
        raise errors.Refused("the signed record is not JSON") from None
    if not isinstance(record, dict) or record.get("kind") != kind or record.get("node") != node:
        raise errors.Refused(f"not a {kind} record of node {node}")
    return record


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


def _snapshot_of(node: str, entry: catalog.IndexEntry) -> restic_engine.Snapshot:
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
    the sealing key, each fetched once (in parallel, on first use)."""

    def __init__(self, origin: Origin, restic: restic_engine.Restic | None = None):
        from drkit.engines.storage import Storage

        self.origin = origin
        self.restic = restic
        self.storage = Storage(origin.repository)
        self.trusted = set(origin.trusted_keys) | set(origin.trust_keys)
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="catalog")
        repository = origin.repository
        self._seal_key: Future = self._pool.submit(
            catalog.seal_key, repository.password_file, repository.bucket, repository.prefix
        )
        self._listed: Future = self._pool.submit(self.storage.snapshot_ids)
        self._heads: dict[str, Future] = {}
        self._others: set[str] | None = None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the signed index ------------------------------------------------------------------

    def index(self, node: str) -> list[catalog.IndexEntry] | None:
        """Return the node's signed index, oldest first, or None when there is no trusted one."""
        if node not in self._heads:
            self._heads[node] = self._pool.submit(self._read_index, node)
        return self._heads[node].result()

    def _read_index(self, node: str) -> list[catalog.IndexEntry] | None:
        key = catalog.head_key(node)
        try:
            record = open_record(self.storage.get_json(key), self.trusted, node, "head")
            return catalog.parse_index(record.get("snapshots"))
        except (errors.Refused, errors.StorageError, ValueError, TypeError) as exc:
            reason = exc.message if isinstance(exc, errors.DrkitError) else str(exc)
            log.info("catalog: %s not used (%s): restic is asked", key, reason)
            return None

    def listed(self) -> set[str]:
        """Return the ids of every snapshot in the repository (one S3 listing)."""
        return self._listed.result()

    def _covered_by_others(self, node: str, uncovered: set[str]) -> bool:
        """True when the trusted heads of the repository's other nodes list every id of
        uncovered (a group shares one repository)."""
        if self._others is None:
            nodes = {
                key.split("/")[1]
                for key in self.storage.list_keys("records/")
                if key.count("/") == 2 and key.endswith("/head.json")
            } - {node}
            for other in nodes:
                self._heads.setdefault(other, self._pool.submit(self._read_index, other))
            self._others = {entry.id for other in nodes for entry in (self.index(other) or [])}
        return uncovered <= self._others

    def find(self, node: str, spec: str, at: datetime | None = None) -> Found | None:
        """Return the node's snapshot named by spec (or --at) from the signed index, or None
        when the index cannot answer alone (restic must be asked). Raise UsageError or Refused
        as context.select_from does."""
        index = self.index(node)
        if index is None:
            return None
        listed = self.listed()
        by_id = {entry.id: entry for entry in index if entry.id in listed}
        if at is None and not re.fullmatch(r"latest(?:~\d+)?", spec):
            # an id: the listing says whether it names one snapshot, the index whose it is
            valid = re.fullmatch(r"[0-9a-f]{4,64}", spec)
            named = [listed_id for listed_id in listed if valid and listed_id.startswith(spec)]
            entry = by_id.get(named[0]) if len(named) == 1 else None
            return Found(_snapshot_of(node, entry), entry) if entry else None
        uncovered = listed - {entry.id for entry in index}
        if uncovered and not self._covered_by_others(node, uncovered):
            log.info("catalog: %d snapshot(s) no trusted head lists: restic is asked",
                     len(uncovered))  # fmt: skip
            return None
        live = sorted(by_id.values(), key=lambda entry: entry.time)
        chosen = context.select_from([_snapshot_of(node, e) for e in live], node, spec, at)
        return Found(chosen, by_id[chosen.id])

    def find_or_ask(self, node: str, spec: str, at: datetime | None = None) -> Found:
        """Return the node's snapshot named by spec: from the index, else from restic (one
        `restic snapshots`), bound when the index lists the id restic named."""
        found = self.find(node, spec, at)
        if found is not None:
            return found
        chosen = context.select_snapshot(self._restic(), node, spec, at)
        entry = next((e for e in self.index(node) or [] if e.id == chosen.id), None)
        return Found(chosen, entry)

    def _restic(self) -> restic_engine.Restic:
        if self.restic is None:
            self.restic = context.restic_for(self.origin.repository, self.origin.restic)
        return self.restic

    # -- the sealed manifest objects -------------------------------------------------------

    def open(self, node: str, found: Found) -> Opened:
        """Verify and return a found snapshot's manifest: from its sealed object when the
        index binds it (its sha256 must be the index's), else from the snapshot itself (one
        `restic dump`), whose copy must then have the bound hash too."""
        if found.bound:
            opened = self._open_objects(node, found)
            if opened is not None:
                return opened
        files = _read_drkit_files(self._restic(), found.snapshot.id)
        raw = files.get(manifest.MANIFEST_PATH)
        if found.bound and raw is not None and _sha(raw) != found.entry.manifest_sha256:
            raise errors.Refused(
                f"snapshot {found.snapshot.short_id}: its manifest is not the one the signed "
                "index names (the snapshot was tampered with)"
            )
        return _open_files(self.origin, found.snapshot.id, files)

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
            payload = catalog.unseal(self._seal_key.result(), keys_[0], sealed)
            return catalog.Bundle.decode(payload, keys_[0]), signature.decode(errors="replace")
        except (errors.Refused, errors.StorageError, errors.ConfigError) as exc:
            log.warning("catalog: %s: read from the snapshot instead", exc.message)
            return None

    def _open_objects(self, node: str, found: Found) -> Opened | None:
        fetched = self.objects(node, found.snapshot.id)
        if fetched is None:
            return None
        bundle, signature = fetched
        if _sha(bundle.manifest) != found.entry.manifest_sha256:
            log.warning(
                "catalog: the manifest object of %s is not the one the signed index names: "
                "read from the snapshot instead (`drkit verify` reports it)",
                found.snapshot.short_id,
            )
            return None
        opened = open_manifest(self.origin, bundle.manifest, signature, bundle.config)
        opened.bundle = bundle
        return opened


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
