"""restic driven with --json: argv building, typed messages, and its exit codes as drkit errors.

The password reaches restic through RESTIC_PASSWORD_FILE, never argv. restic's scripting docs
define the exit codes: 0 ok, 1 failure, 3 incomplete snapshot, 10 no repository, 11 lock
failed, 12 wrong password, 130 interrupted; an unknown code is a failure.

A command that meets a lock (exit 11) is run once more after `on_locked` (drkit.service.locks
.clear_stale) has removed the stale locks, so a lock left by a killed run needs no manual
`restic unlock`. Commands that wait for a lock (--retry-lock) wait only on that second run: a
stale lock would otherwise hold the first for the whole wait before anything could remove it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from drkit import errors, runner
from drkit.engines import keys
from drkit.engines import resticjson as messages
from drkit.engines.resticbin import find_restic as find_restic  # re-exported for callers
from drkit.engines.resticjson import (
    BackupStatus,
    ForgetGroup,
    KeyRecord,
    LockRecord,
    SnapshotRecord,
    TreeNode,
)
from drkit.model import parse_utc

log = logging.getLogger(__name__)

LOCK_WAIT = "2m"


@dataclass(frozen=True)
class Snapshot:
    """One restic snapshot as `restic snapshots --json` describes it."""

    id: str
    short_id: str
    time: datetime
    hostname: str
    tags: list[str]
    paths: list[str]
    files: int | None
    size: int | None

    @classmethod
    def from_record(cls, record: SnapshotRecord) -> Snapshot:
        try:
            time = parse_utc(record.time)
        except ValueError:
            raise errors.ResticFailed(
                f"restic printed a time drkit cannot read: {record.time!r}"
            ) from None
        summary = record.summary
        return cls(
            id=record.id,
            short_id=record.short,
            time=time,
            hostname=record.hostname,
            tags=list(record.tags),
            paths=list(record.paths),
            files=summary.total_files_processed if summary else None,
            size=summary.total_bytes_processed if summary else None,
        )


@dataclass
class BackupSummary:
    """The summary line of `restic backup --json`, with every field defaulted."""

    snapshot_id: str | None = None
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    data_added: int = 0
    backup_start: str | None = None  # restic 0.17+: when the run began, about its snapshot time
    errors: list[str] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)  # each file and directory restic stored


STORED_ACTIONS = ("new", "modified", "unchanged")  # backup's per-item verbose_status actions


def exclude_pattern(host_path: str) -> str:
    """Return restic's --exclude pattern that matches exactly one absolute host path (its glob
    characters escaped)."""
    return re.sub(r"([\\*?\[])", r"\\\1", host_path)


class Restic:
    """One restic repository, reached with a given binary, password file and S3 options.

    stop_when (see runner.run_lines), when given, watches every command: once it gives a
    reason, restic is stopped and a StorageError names it.
    """

    def __init__(
        self,
        binary: Path,
        repository_url: str,
        password_file: Path,
        *,
        region: str = "us-east-1",
        ca_bundle: Path | None = None,
        stop_when: Callable[[], str | None] | None = None,
        on_locked: Callable[[Restic], Sequence[object]] | None = None,
    ):
        self.binary = binary
        self.repository_url = repository_url
        self.password_file = password_file
        self.region = region
        self.ca_bundle = ca_bundle
        self.stop_when = stop_when
        self.on_locked = on_locked

    def _argv(self, *args: str) -> list[str]:
        argv = [str(self.binary), *args, "--json", "-o", f"s3.region={self.region}"]
        argv += ["-o", "s3.bucket-lookup=path"]
        if self.ca_bundle:
            argv += ["--cacert", str(self.ca_bundle)]
        return argv

    def _env(self) -> dict[str, str]:
        keys.read_password(self.password_file)  # missing, shared, FIFO, empty: one line
        return {
            "RESTIC_REPOSITORY": self.repository_url,
            "RESTIC_PASSWORD_FILE": str(self.password_file),
            "AWS_DEFAULT_REGION": self.region,
            "RESTIC_PROGRESS_FPS": "2",
        }

    def _raise_for(self, completed: runner.Completed, doing: str) -> None:
        code = completed.returncode
        if code == 0:
            return
        cause = messages.error_line(completed.stderr)
        if code == 10:
            raise errors.RepositoryMissing(
                f"no restic repository at {self.repository_url}: check repository.bucket and "
                "repository.prefix in drkit.yaml (a new node's repository is made by `drkit "
                "init` with that node's settings)"
            )
        if code == 11:
            raise errors.Busy(f"repository is locked by another run while {doing}: {cause}")
        if code == 12:
            raise errors.AuthenticationError(
                f"wrong repository password (file {self.password_file}) for {self.repository_url}"
            )
        if code == 130:
            raise errors.Interrupted(f"restic was interrupted while {doing}")
        if code == 3:
            raise errors.BackupIncomplete(
                f"snapshot made but some files could not be read: {cause}"
            )
        if "no space left on device" in completed.stderr:
            raise errors.LocalFilesystemError(f"disk full while {doing}: {cause}")
        if code < 0:
            raise errors.ResticFailed(f"restic was killed by signal {-code} while {doing}")
        raise errors.ResticFailed(f"restic failed while {doing} (exit {code}): {cause}")

    def _unlocking(
        self,
        doing: str,
        attempt: Callable[[list[str]], runner.Completed],
        *,
        wait_lock: bool = False,
    ) -> runner.Completed:
        """Run attempt (given extra argv); on exit 11 remove stale locks once and run it again.

        With wait_lock the second run waits up to LOCK_WAIT for a live lock (a concurrent prune
        delays a backup instead of failing it); without, it is made only when a lock was removed.
        """
        completed = attempt([])
        if completed.returncode != 11:
            return completed
        removed = self.on_locked(self) if self.on_locked else []
        if removed:
            log.warning(
                "repository locked while %s: removed %d stale lock(s), running restic again",
                doing,
                len(removed),
            )
        elif not wait_lock:
            return completed
        else:
            log.info("repository locked while %s: waiting up to %s for the lock", doing, LOCK_WAIT)
        return attempt(["--retry-lock", LOCK_WAIT] if wait_lock else [])

    def _run(
        self,
        doing: str,
        *args: str,
        timeout: float = 300,
        binary: bool = False,
        wait_lock: bool = False,
    ) -> runner.Completed:
        with self._stoppable(doing):
            completed = self._unlocking(
                doing,
                lambda extra: runner.run(
                    self._argv(*args, *extra),
                    env=self._env(),
                    timeout=timeout,
                    binary=binary,
                    stop_when=self.stop_when,
                ),
                wait_lock=wait_lock,
            )
        self._raise_for(completed, doing)
        return completed

    def _lines(
        self, doing: str, argv: list[str], on_line: Callable[[str], None], timeout: float
    ) -> runner.Completed:
        with self._stoppable(doing):
            completed = self._unlocking(
                doing,
                lambda extra: runner.run_lines(
                    argv, on_line, env=self._env(), timeout=timeout, stop_when=self.stop_when
                ),
            )
        self._raise_for(completed, doing)
        return completed

    @staticmethod
    @contextlib.contextmanager
    def _stoppable(doing: str) -> Iterator[None]:
        try:
            yield
        except runner.Stopped as stopped:
            raise errors.StorageError(f"{stopped}: restic was stopped while {doing}") from None

    def exists(self) -> bool:
        """Return True when a repository answers at the location with this password."""
        try:
            self._run("opening the repository", "cat", "config", timeout=120)
        except errors.RepositoryMissing:
            return False
        return True

    def copy_from(self, source: Restic, snapshot_ids: list[str], timeout: float = 6 * 3600) -> None:
        """Copy snapshots from source into this repository (restic copy: snapshots already
        here are skipped, data is deduplicated against what is here). One restic process,
        both repositories' keys derived; both reached with the same S3 credentials."""
        if not snapshot_ids:
            return
        keys.read_password(source.password_file)
        argv = self._argv("copy", *snapshot_ids)
        env = {
            **self._env(),
            "RESTIC_FROM_REPOSITORY": source.repository_url,
            "RESTIC_FROM_PASSWORD_FILE": str(source.password_file),
        }
        doing = f"copying {len(snapshot_ids)} snapshot(s) to {self.repository_url}"
        with self._stoppable(doing):
            completed = runner.run(argv, env=env, timeout=timeout, stop_when=self.stop_when)
        self._raise_for(completed, doing)

    def init_copy_of(self, source: Restic) -> None:
        """Create this repository with source's chunker parameters (so a copy deduplicates
        as the source does)."""
        keys.read_password(source.password_file)
        argv = self._argv("init", "--copy-chunker-params")
        env = {
            **self._env(),
            "RESTIC_FROM_REPOSITORY": source.repository_url,
            "RESTIC_FROM_PASSWORD_FILE": str(source.password_file),
        }
        with self._stoppable("initialising the copy"):
            completed = runner.run(argv, env=env, timeout=120, stop_when=self.stop_when)
        self._raise_for(completed, "initialising the copy")

    def init(self) -> bool:
        """Create the repository unless it exists; return True when it was created."""
        if self.exists():
            return False
        self._run("initialising the repository", "init", timeout=120)
        return True

    def backup(
        self,
        relative_paths: list[str],
        *,
        cwd: Path,
        host: str,
        tags: list[str],
        on_progress: Callable[[BackupStatus], None] | None = None,
        stop_when: Callable[[], str | None] | None = None,
        exclude: list[str] | None = None,
        timeout: float = 6 * 3600,
    ) -> BackupSummary:
        """Back up paths relative to cwd; return the summary; errors in the stream count.

        Paths come from a NUL-separated file list (--files-from-raw) so that every name POSIX
        allows survives, newlines and bytes that are not UTF-8 included. exclude names host
        paths restic must skip inside the directories it is given (special files). stop_when
        (see runner.run_lines; the engine's own by default) may stop restic with a reason: a
        StorageError.
        """
        descriptor, list_name = tempfile.mkstemp(prefix="drkit-files-", suffix=".list")
        list_file = Path(list_name)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(b"".join(os.fsencode(p) + b"\0" for p in relative_paths))
        argv = self._argv(
            "backup", "--host", host, "--files-from-raw", str(list_file), "--verbose=2"
        )
        for tag in tags:
            argv += ["--tag", tag]
        for path in exclude or []:
            argv += ["--exclude", exclude_pattern(path)]
        summary = BackupSummary()

        def on_line(line: str) -> None:
            message = messages.backup_line(line)
            if isinstance(message, messages.VerboseStatus):
                if message.action in STORED_ACTIONS and message.item:
                    summary.stored.append(message.item.rstrip("/") or "/")
            elif isinstance(message, messages.BackupSummaryMessage):
                fields = message.model_dump(exclude={"message_type"}, exclude_unset=True)
                for name, value in fields.items():
                    setattr(summary, name, value)
            elif isinstance(message, messages.ErrorMessage):
                cause = (message.error.message if message.error else "") or "unreadable"
                summary.errors.append(f"{message.item}: {cause}".strip(": "))
            elif isinstance(message, BackupStatus) and on_progress:
                on_progress(message)

        try:
            completed = self._unlocking(
                "backing up",
                lambda extra: runner.run_lines(
                    [*argv, *extra],
                    on_line,
                    env=self._env(),
                    cwd=cwd,
                    timeout=timeout,
                    stop_when=stop_when or self.stop_when,
                ),
                wait_lock=True,
            )
        except runner.Stopped as stopped:
            raise errors.StorageError(
                f"{stopped}: restic was stopped and no snapshot was made"
            ) from None
        finally:
            list_file.unlink(missing_ok=True)
        for line in completed.stderr.splitlines():
            if '"message_type":"error"' in line.replace(" ", ""):
                on_line(line)
        if completed.returncode == 3 and summary.errors:  # name the files, not restic's summary
            raise errors.BackupIncomplete(
                f"snapshot {(summary.snapshot_id or '')[:8] or '(none)'} made but "
                f"{len(summary.errors)} file(s) could not be read: {summary.errors[0]}"
            )
        self._raise_for(completed, "backing up")
        if not summary.snapshot_id:
            raise errors.ResticFailed("restic finished without reporting a snapshot id")
        if summary.errors:
            raise errors.BackupIncomplete(
                f"snapshot {summary.snapshot_id[:8]} made but {len(summary.errors)} file(s) "
                f"could not be read: {summary.errors[0]}"
            )
        return summary

    def snapshots(self, host: str | None = None, tags: list[str] | None = None) -> list[Snapshot]:
        """Return the repository's snapshots, oldest first, optionally for one host and tags."""
        args = ["snapshots"]
        if host:
            args += ["--host", host]
        if tags:  # one --tag a,b: snapshots with all of them (repeated --tag means any of them)
            args += ["--tag", ",".join(tags)]
        completed = self._run("listing snapshots", *args, timeout=120)
        listed = messages.parsed(messages.SNAPSHOTS, completed.stdout, "listing snapshots")
        found = [Snapshot.from_record(record) for record in listed or []]
        return sorted(found, key=lambda snapshot: snapshot.time)

    def dump_text(self, snapshot_id: str, node_path: str) -> str:
        """Return one text file's contents from a snapshot (drkit's manifest and config)."""
        doing = f"reading {node_path} from snapshot {snapshot_id[:8]}"
        return self._run(doing, "dump", snapshot_id, node_path, timeout=300).stdout

    def list_tree(
        self, snapshot: str, host: str | None = None
    ) -> tuple[SnapshotRecord, list[TreeNode]]:
        """Return a snapshot's own record and its nodes from `restic ls --json`.

        With host, `latest` means that host's newest drkit snapshot.
        """
        records: list[SnapshotRecord] = []
        nodes: list[TreeNode] = []

        def on_line(line: str) -> None:
            # streamed, and only what screening reads: large trees stay small
            if '"struct_type":"node"' in line or '"message_type":"node"' in line:
                with contextlib.suppress(ValueError):
                    nodes.append(TreeNode.model_validate_json(line))
            elif '"struct_type":"snapshot"' in line or '"message_type":"snapshot"' in line:
                with contextlib.suppress(ValueError):
                    records.append(SnapshotRecord.model_validate_json(line))

        argv = self._argv("ls", *self._latest_filter(host), snapshot)
        self._lines(f"listing snapshot {snapshot[:8]}", argv, on_line, timeout=600)
        if not records or not records[0].id:
            raise errors.ResticFailed(f"restic ls named no snapshot for {snapshot[:8]}")
        return records[0], nodes

    def dump_directory(
        self, snapshot: str, directory: str, host: str | None = None
    ) -> dict[str, bytes]:
        """Return the regular files under a snapshot directory, read in one pass (a tar)."""
        args = ["dump", *self._latest_filter(host), snapshot, directory]
        doing = f"reading {directory} from snapshot {snapshot[:8]}"
        completed = self._run(doing, *args, timeout=300, binary=True)
        files: dict[str, bytes] = {}
        try:
            with tarfile.open(fileobj=io.BytesIO(completed.stdout_bytes), mode="r:") as archive:
                for member in archive:
                    extracted = archive.extractfile(member) if member.isreg() else None
                    if extracted is not None:
                        files["/" + member.name.lstrip("/")] = extracted.read()
        except tarfile.TarError:
            raise errors.ResticFailed(f"unreadable archive from restic while {doing}") from None
        return files

    @staticmethod
    def _latest_filter(host: str | None) -> list[str]:
        return ["--host", host, "--tag", "drkit"] if host else []

    def restore(
        self,
        snapshot_id: str,
        target: Path,
        on_restored: Callable[[str], None] | None = None,
        timeout: float = 6 * 3600,
    ) -> None:
        """Restore a whole snapshot into target (an empty staging directory).

        on_restored, when given, is called with each item's snapshot path as soon as restic
        has written all of it (restic's per-item `verbose_status`, action `restored`).
        """
        argv = self._argv("restore", snapshot_id, "--target", str(target))
        if on_restored is not None:
            argv.append("--verbose=2")

        def on_line(line: str) -> None:
            if on_restored and line.startswith('{"message_type":"verbose_status"'):
                message = messages.VerboseStatus.model_validate_json(line)
                if message.action == "restored":
                    on_restored(message.item)

        self._lines(f"restoring snapshot {snapshot_id[:8]}", argv, on_line, timeout)

    # -- retention, locks and verification (the daemon's jobs) ---------------------------

    def forget(
        self,
        *,
        host: str,
        tags: list[str],
        keep: Mapping[str, int | None],
        dry_run: bool = False,
    ) -> list[ForgetGroup]:
        """Apply keep rules to one host's snapshots, grouped by host and tags; remove nothing
        when dry_run. Return restic's groups (keep, remove, and the reasons for keeping).

        Only the rules with a count above 0 are passed. With none, nothing is removed (restic
        itself refuses a forget without a policy): every snapshot is listed as kept.

        Filtering on the host means another node's (or a renamed machine's former) snapshots
        are never touched by this node's rules.
        """
        rules = {rule: count for rule, count in keep.items() if count}
        if not rules:
            args = ["snapshots", "--host", host]
            for tag in tags:
                args += ["--tag", tag]
            completed = self._run("listing snapshots", *args, timeout=120)
            listed = messages.parsed(messages.SNAPSHOTS, completed.stdout, "listing snapshots")
            kept = [record for record in listed or [] if record.hostname == host]
            return [ForgetGroup(host=host, tags=tags, keep=kept)]
        args = ["forget", "--host", host, "--group-by", "host,tags"]
        for tag in tags:
            args += ["--tag", tag]
        for rule, count in rules.items():
            args += [f"--keep-{rule}", str(count)]
        if dry_run:
            args.append("--dry-run")
        completed = self._run("forgetting snapshots", *args, timeout=600, wait_lock=True)
        return messages.parsed(messages.FORGET_GROUPS, completed.stdout, "forgetting") or []

    def prune(self, timeout: float = 6 * 3600) -> None:
        """Remove data no snapshot references any more (repository-wide, exclusive lock)."""
        self._run("pruning the repository", "prune", timeout=timeout, wait_lock=True)

    def locks(self) -> list[LockRecord]:
        """Return the repository's locks, each with its id."""
        listed = self._run("listing locks", "list", "locks", "--no-lock", timeout=120)
        found: list[LockRecord] = []
        for lock_id in listed.stdout.split():
            if not re.fullmatch(r"[0-9a-f]{64}", lock_id):
                continue
            try:
                described = self._run("reading a lock", "cat", "lock", lock_id, "--no-lock")
            except errors.ResticFailed:
                continue  # removed meanwhile: its owner finished
            info = messages.parsed(messages.LOCK, described.stdout, "reading a lock")
            found.append(info.model_copy(update={"id": lock_id}))
        return found

    def unlock(self) -> None:
        """Remove the locks restic itself judges stale (owner gone on this host, or not
        refreshed for 30 minutes); live locks are left alone."""
        self._run("removing stale locks", "unlock", timeout=120)

    def check_report(self, read_data_subset: str | None = None) -> tuple[bool, list[str]]:
        """Run restic check; return (clean, the lines that describe problems).

        Exit 1 is a finding (damage), not a failure to run; other codes raise as usual.
        """
        args = ["check"]
        if read_data_subset:
            args += ["--read-data-subset", read_data_subset]
        with self._stoppable("checking the repository"):
            completed = self._unlocking(
                "checking the repository",
                lambda extra: runner.run(
                    self._argv(*args, *extra),
                    env=self._env(),
                    timeout=6 * 3600,
                    stop_when=self.stop_when,
                ),
                wait_lock=True,
            )
        if completed.returncode == 1:
            lines: list[str] = []
            broken: list[str] = []
            for line in (completed.stdout + "\n" + completed.stderr).splitlines():
                if not line.startswith("{"):
                    lines += [line.strip()] if line.strip() else []
                    continue
                # with --json, restic check writes its findings as JSON messages
                message = messages.check_line(line)
                if isinstance(message, messages.CheckSummary):
                    broken = [f"damaged pack {pack}" for pack in message.broken_packs]
                elif isinstance(message, messages.ErrorMessage):
                    first = message.message.strip().splitlines()
                    lines += [f"error: {first[0]}"] if first else []
            problems = [line for line in lines if "error" in line.lower()] or lines[-5:]
            return False, (broken + problems)[:20]
        self._raise_for(completed, "checking the repository")
        return True, []

    def restore_paths(self, snapshot_id: str, target: Path, node_paths: list[str]) -> None:
        """Restore only the named node paths of a snapshot into target (a spot check)."""
        argv = self._argv("restore", snapshot_id, "--target", str(target))
        for path in node_paths:
            argv += ["--include", path]
        doing = f"restoring files of snapshot {snapshot_id[:8]}"
        self._lines(doing, argv, lambda line: None, timeout=3600)

    # -- keys (rotation) -----------------------------------------------------------------

    def key_add(self, new_password_file: Path) -> None:
        """Add a key whose password is in new_password_file (the current one opens the repo)."""
        self._run("adding a key", "key", "add", "--new-password-file", str(new_password_file))

    def key_list(self) -> list[KeyRecord]:
        """Return the repository's keys (`current`: the one this engine opens it with)."""
        completed = self._run("listing keys", "key", "list", timeout=120)
        return messages.parsed(messages.KEYS, completed.stdout, "listing keys") or []

    def key_remove(self, key_id: str) -> None:
        """Remove a key that is not the one this engine opens the repository with."""
        self._run("removing a key", "key", "remove", key_id, timeout=120)
