"""drkit backup: inventory the node, sign its manifest, and snapshot both with restic."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from cryptography.hazmat.primitives.asymmetric import ed25519

from drkit import errors, timing
from drkit.config import Config, dump_config
from drkit.engines import (
    accounts,
    catalog,
    freshness,
    keys,
    manifest,
    records,
    reports,
    screen,
    sqlite_copies,
    watch,
)
from drkit.engines.records import EventsRecord, HeadRecord
from drkit.engines.restic import BackupSummary, Restic
from drkit.engines.resticjson import BackupStatus
from drkit.model import ChainLink, Manifest, SecurityEvent, parse_utc, utc_text
from drkit.paths import host_path, shown
from drkit.results import BackupResult
from drkit.service import chain, context, databases
from drkit.service.chain import mark_in_flight, record_chain
from drkit.service.rollback import chain_path

log = logging.getLogger(__name__)
SigningKey = ed25519.Ed25519PrivateKey
_Read = TypeVar("_Read")
PASSES = 3  # a file written to while restic reads it gets a fresh manifest and snapshot


def publish(
    config: Config,
    signing_key: SigningKey,
    link: chain.Link,
    index: list[catalog.IndexEntry],
    objects: dict[str, bytes],
) -> None:
    """Store the snapshot's sealed manifest and signature objects, and a signed chain head
    naming the node's newest snapshot and holding its index (so `verify` sees a rollback and
    every command finds and opens snapshots without restic), in parallel."""
    from drkit.engines.storage import Storage

    record = HeadRecord(
        kind="head",
        node=config.node,
        snapshot_id=link["snapshot_id"],
        manifest_sha256=link["manifest_sha256"],
        time=utc_text(datetime.now(UTC)),
        written_ns=time.time_ns(),  # orders two heads signed within the same second
        snapshots=[entry.as_dict() for entry in index],
        confirmations=freshness.confirmations(chain.read(config).get("confirmations")),
    )
    down = context.outage(config.repository)
    if down:
        log.warning("chain head and manifest objects not stored: %s", down)
        return
    storage = Storage(config.repository)
    head = records.seal(signing_key, record)
    with ThreadPoolExecutor(max_workers=len(objects) + 1) as pool:
        futures = {
            key: pool.submit(storage.put_bytes, key, body, "application/json")
            for key, body in objects.items()
        }
        head_key = catalog.head_key(config.node)
        futures[head_key] = pool.submit(storage.put_json, head_key, head)
    for key, future in futures.items():
        try:
            future.result()
        except errors.DrkitError as exc:
            log.warning("%s not stored: %s", key, exc.message)


class _Sealer:
    """Seals this run's manifest objects under the node's catalog key: the stored one (read
    while restic backs up; an unchanged node makes no snapshot and never reads it, nor pays
    its scrypt), else a new one, stored with the first objects it seals."""

    def __init__(self, config: Config, pool: ThreadPoolExecutor, probe: Future[None]) -> None:
        self.config = config
        self._pool, self._probe = pool, probe
        self._stored: Future[bytes | None] | None = None
        self._key: bytes | None = None

    def prefetch(self) -> Future[bytes | None]:
        """Start reading the stored key (once the S3 probe has passed), in the background."""
        if self._stored is None:
            self._stored = self._pool.submit(
                _after_probe, self._probe, _stored_catalog_key, self.config
            )
        return self._stored

    def objects(
        self,
        snapshot_id: str,
        manifest_bytes: bytes,
        signature: keys.Signature,
        node_manifest: Manifest,
    ) -> dict[str, bytes]:
        """Return the snapshot's catalog objects: its sealed manifest (with drkit.yaml and the
        text files a diff shows), its signature, and a new key object when there was none;
        none when the stored key cannot be read."""
        config, objects = self.config, dict[str, bytes]()
        if self._key is None:
            try:
                self._key = self.prefetch().result()
            except errors.DrkitError as exc:
                log.warning("manifest objects not stored: %s", exc.message)
                return {}
            if self._key is None:
                self._key = catalog.new_catalog_key()
                objects[catalog.key_object_key(config.node)] = catalog.wrap_key(
                    self._key, [config.repository.password_file], config.node
                )
        texts = catalog.read_texts(config.root, node_manifest, catalog.text_paths(node_manifest))
        bundle = catalog.Bundle(manifest_bytes, dump_config(config), texts)
        sealed_key = catalog.bundle_key(config.node, snapshot_id)
        objects[sealed_key] = catalog.seal(self._key, sealed_key, bundle.encode())
        objects[catalog.signature_key(config.node, snapshot_id)] = manifest.signature_bytes(
            signature
        )
        return objects


def _after_probe(probe: Future[None], read: Callable[[Config], _Read], config: Config) -> _Read:
    """Run read(config) once the S3 probe has passed: its first request is the probe's, so an
    S3 that fails from the start is reported by the probe, with its one line."""
    probe.result()
    return read(config)


def _stored_catalog_key(config: Config) -> bytes | None:
    """Return the node's catalog key from the bucket, or None when there is none or it does
    not open with the repository password (changed outside drkit: a new key takes over)."""
    from drkit.engines.storage import Storage

    blob = Storage(config.repository).get_bytes(catalog.key_object_key(config.node))
    if blob is None:
        return None
    remembered = config.state_dir / "cache" / f"{config.node}.catalog-key.json"
    key = catalog.unwrap_key_remembered(
        blob, config.repository.password_file, config.node, remembered
    )
    if key is None:
        log.warning(
            "node %s's catalog key does not open with the repository password (changed "
            "outside drkit?): a new key seals its manifest objects from now on",
            config.node,
        )
    return key


def _index_entry(
    config: Config, summary: BackupSummary, snapshot_id: str, manifest_bytes: bytes
) -> catalog.IndexEntry:
    when = parse_utc(summary.backup_start) if summary.backup_start else datetime.now(UTC)
    return catalog.IndexEntry(
        id=snapshot_id,
        time=when,
        manifest_sha256=hashlib.sha256(manifest_bytes).hexdigest(),
        files=summary.total_files_processed,
        size=summary.total_bytes_processed,
        tags=tuple(_tags(config)),
    )


def _listed_snapshots(config: Config) -> set[str] | None:
    """Return the ids of the repository's snapshots (one S3 listing), or None when unreadable."""
    from drkit.engines.storage import Storage

    try:
        return Storage(config.repository).snapshot_ids()
    except errors.DrkitError as exc:
        log.info("snapshots not listed (%s): the index keeps every entry", exc.message)
        return None


def _still_listed(
    index: list[catalog.IndexEntry], listed: Future[set[str] | None]
) -> list[catalog.IndexEntry]:
    """Return the index without the snapshots the repository no longer holds (forgotten)."""
    try:
        present = listed.result()
    except errors.DrkitError:  # the probe's failure: reported by the backup itself
        present = None
    return index if present is None else [entry for entry in index if entry.id in present]


def _tags(config: Config) -> list[str]:
    return [
        "drkit",
        f"node:{config.node}",
        *(f"profile:{p}" for p in config.servers),
        *([f"group:{config.group}"] if config.group else []),
    ]


def _previous_state(
    config: Config, restic: Restic, probe: Future[None], signer: str
) -> tuple[chain.Link | None, list[catalog.IndexEntry]]:
    """Return ({snapshot_id, manifest_sha256} of the node's last snapshot, the node's index).

    The local record answers without a round trip; without one (a rebuilt machine, a record
    from before the index), or when the run that wrote it died while restic may have been
    making a snapshot (in_flight), the signed head and the repository are asked, once the S3
    probe has answered: snapshots the head does not list join the index, bound to their
    manifest only when it is signed by this node's key.
    """
    record = chain.read(config)
    if not record.get("in_flight") and "index" in record:
        return record.get("previous"), catalog.parse_index(record["index"])
    probe.result()
    index = _signed_index(config, {signer, *config.trusted_keys})
    mine = restic.snapshots(host=config.node, tags=["drkit"])
    listed = {entry.id for entry in index}
    link: chain.Link | None = None
    for position, snapshot in enumerate(mine):
        newest = position == len(mine) - 1
        if snapshot.id in listed and not newest:
            continue
        digest = _own_manifest_sha(restic, snapshot.id, signer) if newest else None
        if newest and digest:
            link = {"snapshot_id": snapshot.id, "manifest_sha256": digest}
        if snapshot.id not in listed:
            index = catalog.extend_index(
                index,
                catalog.IndexEntry(
                    snapshot.id, snapshot.time, digest, snapshot.files, snapshot.size,
                    tuple(snapshot.tags),
                ),
            )  # fmt: skip
    return link, index


def _signed_index(config: Config, trusted: set[str]) -> list[catalog.IndexEntry]:
    """Return the index of the node's signed head in the bucket, or [] when there is none."""
    from drkit.engines.storage import Storage
    from drkit.service.opening import open_record

    try:
        stored = Storage(config.repository).get_json(catalog.head_key(config.node))
        if stored is None:
            return []
        record = open_record(stored, trusted, config.node, "head")
        return catalog.parse_index(record.get("snapshots") or [])
    except (errors.DrkitError, ValueError, TypeError) as exc:
        log.warning("the node's signed head is not usable (%s): its index starts again", exc)
        return []


def _own_manifest_sha(restic: Restic, snapshot_id: str, signer: str) -> str | None:
    """Return the sha256 of a snapshot's manifest when this node's key signed it, else None."""
    try:
        files = restic.dump_directory(snapshot_id, manifest.SNAPSHOT_DIR)
        raw = files[manifest.MANIFEST_PATH]
        _, signed_by = manifest.open_signed(raw, files[manifest.SIGNATURE_PATH].decode())
    except (errors.DrkitError, KeyError, UnicodeDecodeError):
        return None
    return hashlib.sha256(raw).hexdigest() if signed_by == signer else None


def _snapshot_id(summary: BackupSummary) -> str:
    """Return the id of the snapshot restic made (Restic.backup raises when there is none)."""
    if not summary.snapshot_id:
        raise errors.ResticFailed("restic backup reported no snapshot id")
    return summary.snapshot_id


def _unless_probe_failed(
    probe: Future[None], watch: Callable[[], str | None] | None
) -> Callable[[], str | None]:
    """Return restic's stop check: stop once the S3 probe has failed (restic is still deriving
    its key then, and would retry an unreachable S3 for minutes), else ask the outage watch."""

    def stop_when() -> str | None:
        if probe.done() and probe.exception() is not None:
            return "the S3 probe failed"
        return watch() if watch else None

    return stop_when


def run(
    config: Config,
    on_progress: Callable[[BackupStatus], None] | None = None,
    on_step: Callable[[str], None] | None = None,
    lock_wait: float | None = None,
) -> BackupResult:
    """Take one snapshot of the node now; return the backup document. on_progress gets
    restic's status lines, on_step a short line as each step begins (progress display)."""
    step = on_step or (lambda text: None)
    if config.standby is not None:
        raise errors.UsageError(
            f"node {config.node} follows {config.standby.source} (standby) and does not back "
            "itself up: run `drkit standby sync`, or `drkit standby promote` to take over"
        )
    restic = context.restic_for(config.repository, config.restic)
    signing_key = keys.load_signing_key(config.signing_key)
    signer = keys.require_trusted(signing_key, config.trusted_keys, config.signing_key)
    # The S3 probe (boto3 import, client, HEAD bucket) and the catalog key's read overlap
    # the inventory, the hashing and restic's start (its key derivation); a failed probe stops
    # restic and is the error.
    with ThreadPoolExecutor(max_workers=2) as pool, context.node_lock(config, lock_wait):
        probe = pool.submit(context.probe_storage, config.repository)
        sealer = _Sealer(config, pool, probe)
        listed = pool.submit(_after_probe, probe, _listed_snapshots, config)
        started = time.monotonic()
        step("reading the node's files")
        with timing.phase("inventory"):
            inventory = context.collect_inventory(config)
        with timing.phase("database dumps"):
            dumped = databases.take_dumps(config.root, inventory)
        for warning in inventory.warnings:
            log.warning("%s", warning)
        with timing.phase("chain"):
            previous, index = _previous_state(config, restic, probe, signer)
        first_previous = previous
        for attempt in range(1, PASSES + 1):
            step("hashing and signing the manifest" + (f" (pass {attempt})" if attempt > 1 else ""))
            cache = manifest.HashCache(config.state_dir / "cache" / f"{config.node}.json")
            with timing.phase("SQLite online-backup copies"):
                copies, copy_warnings = sqlite_copies.copy_all(config.root, inventory.databases)
            with timing.phase("manifest (hashing)"):
                node_manifest = manifest.build(
                    config.root,
                    inventory,
                    node=config.node,
                    profiles=list(config.servers),
                    accounts=accounts.read_entries(config.root, inventory.users),
                    created=datetime.now(UTC),
                    previous=ChainLink.model_validate(previous) if previous else None,
                    cache=cache,
                    profile_options=config.profile_options,
                )
                unread = sqlite_copies.seal(node_manifest, copies, copy_warnings, cache)
                if dumped:
                    node_manifest.databases = dumped
            content = freshness.content_digest(node_manifest, dump_config(config))
            if attempt == 1 and previous and _unchanged(config, previous, content, listed):
                cache.save()
                step("unchanged: confirming the last snapshot in the signed chain head")
                return _confirm(config, signing_key, previous, index, node_manifest, started)
            with timing.phase("manifest signing"):
                manifest_bytes = manifest.encode(node_manifest)
                signature = keys.sign(signing_key, manifest_bytes)
                snapshot_dir = manifest.write_snapshot_files(
                    config.root, manifest_bytes, signature, dump_config(config)
                )
            paths = manifest.leaf_paths(node_manifest)
            log.info("backing up %d paths of node %s", len(paths), config.node)
            step(f"uploading {len(paths)} paths with restic")
            sealer.prefetch()
            mark_in_flight(config, previous, index)
            with timing.phase("restic backup (s3 probe overlapped)"):
                try:
                    summary = restic.backup(
                        paths + snapshot_dir,
                        cwd=config.root,
                        host=config.node,
                        tags=_tags(config),
                        on_progress=on_progress,
                        stop_when=_unless_probe_failed(probe, restic.stop_when),
                        exclude=[
                            host_path(config.root, path)
                            for path in [*node_manifest.skipped, *unread]
                        ],
                    )
                except errors.DrkitError:
                    probe.result()  # a failed probe names the cause better than restic does
                    raise
                probe.result()
            cache.save()
            if attempt == 1:  # listed before this run's first snapshot: drop the forgotten
                index = _still_listed(index, listed)
            snapshot_id = _snapshot_id(summary)
            entry = _index_entry(config, summary, snapshot_id, manifest_bytes)
            index = catalog.extend_index(index, entry)
            previous = record_chain(config, snapshot_id, manifest_bytes, index, content)
            step("storing the signed chain head and the manifest objects")
            with timing.phase("chain head and manifest objects"):
                objects = sealer.objects(snapshot_id, manifest_bytes, signature, node_manifest)
                if previous is not None:
                    publish(config, signing_key, previous, index, objects)
            with timing.phase("changed during backup"):
                moving = cache.changed_since(config.root) + screen.unexpected(
                    summary.stored, node_manifest
                )
            if not moving:
                break
            log.warning(
                "%d file(s) changed while restic read them (first: %s); pass %d of %d",
                len(moving), shown(moving[0]), attempt, PASSES,
            )  # fmt: skip
        else:
            raise errors.BackupIncomplete(
                f"snapshot {snapshot_id[:8]} made, but {len(moving)} file(s) kept "
                f"changing during {PASSES} passes (first: {shown(moving[0])}); its manifest cannot "
                "vouch for them, so restore will refuse that snapshot"
            )
        with timing.phase("security-change watch"):
            events = _watch(config, snapshot_id, node_manifest, signing_key)
    return BackupResult(
        node=config.node,
        snapshot_id=snapshot_id,
        time=utc_text(parse_utc(node_manifest.created)),
        file_count=summary.total_files_processed,  # restic's count, as snapshots and show give it
        size=summary.total_bytes_processed,
        bytes_added=summary.data_added,
        duration_seconds=round(time.monotonic() - started, 3),
        signer=signature["signer"],
        previous=first_previous["snapshot_id"] if first_previous else None,
        passes=attempt,
        warnings=node_manifest.warnings,
        security_events=events,
    ).with_certificate_ends(reports.certificate_expiries(config.root, node_manifest))


def _unchanged(
    config: Config, previous: chain.Link | None, content: str, listed: Future[set[str] | None]
) -> bool:
    """Return True when the node's content is its last snapshot's, and that snapshot is still
    in the repository (one S3 listing, made beside the inventory)."""
    record = chain.read(config)
    if config.unchanged != "confirm" or previous is None or record.get("in_flight"):
        return False
    if record.get("content") != content:
        return False
    present = listed.result()
    return present is not None and previous["snapshot_id"] in present


def _confirm(
    config: Config,
    signing_key: SigningKey,
    previous: chain.Link,
    index: list[catalog.IndexEntry],
    node_manifest: Manifest,
    started: float,
) -> BackupResult:
    """Sign a freshness entry for the unchanged node's last snapshot into the chain head."""
    now = utc_text(datetime.now(UTC))
    record = chain.read(config)
    entries = freshness.confirmations(record.get("confirmations"))
    record["confirmations"] = freshness.confirmations(
        [*entries, {"snapshot_id": previous["snapshot_id"], "time": now}]
    )
    manifest.write_private(chain_path(config), json.dumps(record).encode())
    publish(config, signing_key, previous, index, {})
    confirmed = next((entry for entry in index if entry.id == previous["snapshot_id"]), None)
    log.info("node unchanged: snapshot %s confirmed", previous["snapshot_id"][:8])
    return BackupResult(
        node=config.node,
        snapshot_id=previous["snapshot_id"],
        time=now,
        file_count=confirmed.files if confirmed and confirmed.files is not None else 0,
        size=confirmed.size if confirmed else None,
        bytes_added=0,
        duration_seconds=round(time.monotonic() - started, 3),
        signer=keys.signing_fingerprint(signing_key.public_key()),
        previous=previous["snapshot_id"],
        passes=0,
        warnings=node_manifest.warnings,
        unchanged=True,
    ).with_certificate_ends(reports.certificate_expiries(config.root, node_manifest))


def _watch(
    config: Config, snapshot_id: str, node_manifest: Manifest, signing_key: SigningKey
) -> list[SecurityEvent]:
    """Classify this snapshot's changes against the node's previous one (the baseline kept in
    state_dir), store the events found as a signed record beside the repository, keep this
    snapshot as the next baseline; return the events. A first backup, or one on a machine
    without a baseline, has none to compare with."""
    texts = catalog.read_texts(config.root, node_manifest, catalog.text_paths(node_manifest))
    new = watch.baseline(snapshot_id, node_manifest, texts)
    path = config.state_dir / "watch" / f"{config.node}.json"
    try:
        old = watch.Baseline.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        old = None
    created = utc_text(parse_utc(node_manifest.created))
    found = watch.classify(old, new, created) if old else []
    for event in found:
        log.warning("security change: %s (event %s)", event.detail, event.id)
    if found:
        stored = records.seal(
            signing_key,
            EventsRecord(
                kind="events",
                node=config.node,
                snapshot_id=snapshot_id,
                time=created,
                events=[event.model_dump(exclude={"acknowledged"}) for event in found],
            ),
        )
        try:
            from drkit.engines.storage import Storage

            Storage(config.repository).put_json(watch.events_key(config.node, snapshot_id), stored)
        except errors.DrkitError as exc:
            log.warning("security events not stored: %s", exc.message)
    manifest.write_private(path, new.model_dump_json().encode())
    return found
