"""What every action needs: the restic repository, an S3 probe, the node lock, and snapshots."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from drkit import errors, profiles, units
from drkit.config import Config, Repository
from drkit.configtypes import check_fingerprint
from drkit.engines import durable, holder
from drkit.engines import restic as restic_engine
from drkit.model import Database, Entry, Inventory, parse_utc
from drkit.paths import on_root
from drkit.service.spec import Spec

log = logging.getLogger(__name__)

LOCK_TIMEOUT_SECONDS = 60


def trust_keys(values: Iterable[str] | None) -> list[str]:
    """Given --trust-key values, return them as a list; raise UsageError naming the first one
    that is not a fingerprint as `ssh-keygen -l` writes it (config.check_fingerprint's rule)."""
    chosen = list(values or [])
    for value in chosen:
        try:
            check_fingerprint(value)
        except ValueError as exc:
            raise errors.UsageError(f"--trust-key {exc}") from None
    return chosen


def restic_for(
    repository: Repository, binary: Path | None = None, *, outage_limit: float | None = None
) -> restic_engine.Restic:
    """Return the restic engine for a repository, with restic found and version-checked.

    Every restic command it runs is stopped once S3 has failed every outage probe for
    outage_limit seconds (the repository's `outage_limit` by default): restic alone keeps
    retrying for 15 minutes. A command that meets a lock left by a killed run removes it
    (locks.clear_stale) and runs again.
    """
    from drkit.service.locks import clear_stale

    limit = repository.outage_limit_seconds if outage_limit is None else outage_limit
    return restic_engine.Restic(
        restic_engine.find_restic(binary),
        repository.restic_url,
        repository.password_file,
        region=repository.region,
        ca_bundle=repository.ca_bundle,
        stop_when=outage_watch(repository, limit),
        on_locked=clear_stale,
    )


def outage_watch(repository: Repository, limit: float) -> Callable[[], str | None]:
    """Return a stop check that gives a reason once every outage probe of the repository has
    failed for `limit` seconds (boto3 is imported on the first check, not before)."""

    def stop_when() -> str | None:
        from drkit.engines.outage import outage_probe

        return outage_probe(repository).watch(limit)()

    return stop_when


def probe_storage(repository: Repository) -> None:
    """Fail fast, with one line, when S3 is unreachable, refuses us, or the bucket is missing
    (one request with short timeouts and no retries: Storage.probe)."""
    from drkit.engines.storage import Storage

    Storage(repository).probe()


def outage(repository: Repository) -> str | None:
    """Return why the repository is unusable right now (the outage probe), or None."""
    from drkit.engines.outage import outage_probe

    return outage_probe(repository).check()


def disk_problem(state_dir: Path) -> str | None:
    """Return why the node's state directory cannot be written (disk full, read-only,
    missing), or None: a small file is written, synced and removed."""
    probe = state_dir / f".probe-{os.getpid()}"
    try:
        durable.make_dirs(state_dir, 0o755)
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(descriptor, b"\0" * 4096)
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
            probe.unlink(missing_ok=True)
    except errors.LocalFilesystemError as exc:
        return f"the node's state directory is not writable: {exc.message}"
    except OSError as exc:
        return f"the node's state directory {state_dir} is not writable: {exc.strerror}"
    return None


@contextlib.contextmanager
def node_lock(config: Config, wait: float | None = None) -> Iterator[None]:
    """Hold the node's lock (shared by the daemon and ad-hoc commands) for the block.

    A held lock is waited for `wait` seconds (default LOCK_TIMEOUT_SECONDS; 0: not at all),
    saying once who holds it (pid, command, since when), then Busy names the holder.
    """
    from filelock import FileLock, Timeout

    lock_dir = config.state_dir / "locks"
    durable.make_dirs(config.state_dir, 0o755)
    durable.make_dirs(lock_dir, 0o700)
    path = lock_dir / f"{config.node}.lock"
    lock = FileLock(str(path), mode=0o600)
    limit = LOCK_TIMEOUT_SECONDS if wait is None else max(0.0, wait)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if limit > 0:
            log.warning(
                "node %s's lock is held by %s: waiting up to %s (--wait SECONDS)",
                config.node, holder.describe(path), units.duration(limit),
            )  # fmt: skip
        try:
            lock.acquire(timeout=limit)
        except Timeout:
            raise errors.Busy(
                f"node {config.node}'s lock is held by {holder.describe(path)}"
                + (f"; waited {units.duration(limit)}" if limit else "")
                + ": try again later, or wait longer with --wait SECONDS"
            ) from None
    try:
        holder.write(path)
        yield
    finally:
        holder.clear(path)
        lock.release()


def require_configs(
    root: Path, servers: Sequence[str], options: Mapping[str, Mapping[str, object]]
) -> None:
    """Raise ConfigError naming each server whose configuration is not on root: a backup of
    it would be an empty snapshot that restores nothing."""
    missing = []
    for kind in servers:
        profile = profiles.get(kind)
        chosen = options.get(kind) or {}
        if profile.reads_config and profile.main_config(root, profile.options(chosen)) is None:
            looked = chosen.get("config") or " or ".join(profile.signs.configs) or "its config"
            missing.append(f"{kind}: no {looked} under {root}")
    if missing:
        hint = "name the file with profile_options.<server>.config, or fix servers"
        raise errors.ConfigError(f"servers: {'; '.join(missing)} ({hint})")


def collect_inventory(config: Config) -> Inventory:
    """Return what the node's profiles find plus the config's --include extras; raise
    ConfigError when a server's configuration is missing."""
    require_configs(config.root, config.servers, config.profile_options)
    inventory = Inventory()
    for kind in config.servers:
        profile = profiles.get(kind)
        options = config.options_of(kind)
        found = profile.inventory(config.root, config.smoke_user, options)
        inventory.merge(found)
    inventory.merge(expand_includes(config.root, config.includes))
    return inventory


def expand_includes(root: Path, includes: dict[str, list[str]]) -> Inventory:
    """Expand node-path globs per category onto the root; a glob that matches nothing warns."""
    extras = Inventory()
    for category, patterns in includes.items():
        for pattern in patterns:
            if pattern.endswith("/**") and not glob.has_magic(pattern[:-3]):
                pattern = pattern[:-3]  # a whole tree: one directory entry, walked once
            matches = sorted(glob.glob(str(on_root(root, pattern)), recursive=True))
            if not matches:
                extras.warnings.append(f"include {category}={pattern} matches nothing")
            for match in matches:
                entry = Entry(node_path_of(root, match), category)
                (extras.dirs if os.path.isdir(match) else extras.files).append(entry)
                if category == "databases" and not os.path.isdir(match):  # SQLite, by its name
                    extras.databases.append(Database("sqlite", "include", path=entry.path))
    return extras


def node_path_of(root: Path, host_path: str) -> str:
    """Given a host path under root (a string, for speed on large trees), return its node path."""
    base = os.path.normpath(str(root))
    return host_path if base == "/" else host_path[len(base) :] or "/"


def parse_at(text: str) -> datetime:
    """Parse --at (RFC 3339 or 'YYYY-MM-DDTHH:MM'; no zone means UTC)."""
    try:
        moment = parse_utc(text)
    except ValueError:
        raise errors.UsageError(f"--at {text!r} is not a time like 2026-11-20T10:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def select_snapshot(
    restic: restic_engine.Restic, node: str, spec: str | Spec, at: datetime | None = None
) -> restic_engine.Snapshot:
    """Return the node's snapshot named by an id prefix, 'latest' or 'latest~N', or --at.

    A snapshot of another node is refused (exit 6), an unknown one is a usage error.
    """
    return select_from(restic.snapshots(tags=["drkit"]), node, spec, at)


def select_from(
    every: list[restic_engine.Snapshot], node: str, spec: str | Spec, at: datetime | None = None
) -> restic_engine.Snapshot:
    """Return the node's snapshot named by spec (or --at) among a listing of every drkit
    snapshot, by select_snapshot's rules: one listing answers several specs."""
    mine = [snapshot for snapshot in every if snapshot.hostname == node]
    if at is not None:
        earlier = [snapshot for snapshot in mine if snapshot.time <= at]
        if not earlier:
            when = f"{at:%Y-%m-%dT%H:%M:%SZ}"
            raise errors.UsageError(f"node {node} has no snapshot at or before {when}")
        return earlier[-1]
    spec = Spec.of(spec)
    if spec.back is not None:
        if spec.back >= len(mine):
            count = len(mine)
            raise errors.UsageError(f"node {node} has {count} snapshot(s): no {spec}")
        return mine[-1 - spec.back]
    if spec.prefix is None:
        raise errors.UsageError(f"{spec.text!r} is not a snapshot id, 'latest' or 'latest~N'")
    matches = [snapshot for snapshot in every if snapshot.id.startswith(spec.prefix)]
    if not matches:
        raise errors.UsageError(f"no snapshot {spec} in the repository")
    if len(matches) > 1:
        raise errors.UsageError(f"snapshot id {spec} is ambiguous: give more characters")
    if matches[0].hostname != node:
        raise errors.Refused(f"snapshot {spec} belongs to node {matches[0].hostname}, not {node}")
    return matches[0]
