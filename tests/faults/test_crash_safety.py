"""Crash safety: SIGKILL of drkit's whole process group inside each phase, many times over.

Each operation has its phases, seen from outside as their real effects: a restic child of drkit
running `backup`, `forget`, `prune` or `restore` (into staging), or the apply journal growing
on the target. Each trial aims at one phase (or, every fourth, anywhere in the run); a seeded
RNG picks the moment within it from a calibrated run (a fraction of the restic child's
lifetime, or of the journal's final size). After every trial:
- the kill landed in the phase it aimed at (the restic child still ran, the journal was there);
- no restic process of the repository outlives drkit;
- the next run, exactly as an operator would start it (no `restic unlock`, no clean-up),
  succeeds: drkit removes the stale locks the kill left itself;
- for backup and prune, `restic check --no-lock` of the repository is clean;
- for restore and standby sync, the target is wholly as before or wholly the new state once
  the journal of the killed apply has been recovered (`apply.recover`, which is exactly what
  the next run does first), and wholly the new state after the next run.

Seed and trial count: $DRKIT_FAULT_SEED (default 7), $DRKIT_FAULT_TRIALS (default 20).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import figures
import pytest
import yaml
from nodes import Node, fresh_repository, make_workspace

from drkit.engines import apply

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("DRKIT_FAULT_SEED", "7"))
TRIALS = int(os.environ.get("DRKIT_FAULT_TRIALS", "20"))
DRKIT = str(Path(sys.executable).parent / "drkit")
ARCHIVE_FILES = 400  # enough files that an apply takes long enough to be hit mid-way
POLL_SECONDS = 0.005
RESTIC_FRACTION = 0.6  # kills land within this fraction of the time restic holds its lock
JOURNAL_FRACTION = (0.05, 0.8)  # ... or between these fractions of the journal's final size
MISSES_ALLOWED = 0.25  # kills that missed their phase (load varies) are made again, this few
SURVIVOR_WAIT_SECONDS = 10.0
STALE_LOCK_LINE = "removing stale restic lock"


def tree(root: Path) -> dict[str, tuple]:
    """Return the node's files (drkit's own working directory aside) with type, mode, owner,
    content or link target."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        relative_dir = os.path.relpath(directory, root)
        if relative_dir.startswith("var/lib/drkit"):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(directory, name)
            info = path.lstat()
            if path.is_symlink():
                content = os.readlink(path).encode()
            elif path.is_file():
                content = path.read_bytes()
            else:
                content = b""
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, content)
    return found


# -- seeing drkit's phases from outside: /proc and the target ------------------------------


def _state(pid: int) -> tuple[str, int] | None:
    """Return (state letter, parent pid) of a process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def running(pid: int) -> bool:
    """Return True while pid runs (a zombie has exited)."""
    state = _state(pid)
    return state is not None and state[0] != "Z"


def restic_children(parent: int) -> dict[int, str]:
    """Return {pid: restic subcommand} of parent's running restic children."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) <= parent:
            continue  # a child is younger than its parent (no pid wrap-around in a test)
        pid = int(entry.name)
        state = _state(pid)
        if state is None or state[1] != parent or state[0] == "Z":
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 1 and Path(os.fsdecode(argv[0])).name == "restic":
            found[pid] = os.fsdecode(argv[1])
    return found


def restic_of(repository_url: str) -> list[int]:
    """Return the running restic processes (anyone's children) that use the repository."""
    wanted = f"RESTIC_REPOSITORY={repository_url}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if Path(f"/proc/{entry.name}/comm").read_text().strip() != "restic":
                continue
            environ = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ and running(int(entry.name)):
            found.append(int(entry.name))
    return found


def journal_size(target: Path | None) -> int | None:
    """Return the size of the target's apply journal, None when there is none."""
    if target is None:
        return None
    try:
        return apply.journal_path(target).stat().st_size
    except OSError:
        return None


def poll(process: subprocess.Popen, found):
    """Return found()'s first true value, polled while process runs (None once it has ended)."""
    while True:
        value = found()
        if value:
            return value
        try:
            process.wait(timeout=POLL_SECONDS)
            return found() or None
        except subprocess.TimeoutExpired:
            continue


@dataclass
class Timing:
    """What a calibrated run to completion showed: its length, how long each restic child held
    its repository lock, the journal's final size."""

    total: float = 0.0
    held: dict[str, float] = field(default_factory=dict)
    journal: int = 0


def calibrate(command: list[str], seen: Seen, target: Path | None = None) -> Timing:
    """Run command to completion, watching its restic children, their locks and the journal."""
    timing = Timing()
    process = start(*command)
    began = time.monotonic()
    watched: dict[int, tuple[str, set[str], float | None]] = {}  # pid: name, locks before, lock
    while process.poll() is None:
        now = time.monotonic()
        children = restic_children(process.pid)
        keys = seen.lock_keys()
        for pid, name in children.items():
            before = watched.setdefault(pid, (name, keys, None))[1]
            if watched[pid][2] is None and keys - before:
                watched[pid] = (name, before, now)
        for pid, (name, _, locked_at) in list(watched.items()):
            if pid not in children:
                if locked_at is not None:
                    timing.held[name] = max(timing.held.get(name, 0), now - locked_at)
                del watched[pid]
        timing.journal = max(timing.journal, journal_size(target) or 0)
        with_timeout(process, POLL_SECONDS)
    timing.total = time.monotonic() - began
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr[-2000:]
    return timing


def with_timeout(process: subprocess.Popen, seconds: float) -> bool:
    """Wait up to seconds for process to end; return True when it has."""
    try:
        process.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False


@dataclass
class Strike:
    """One kill: what it aimed at, what it landed in, and what it left running."""

    aim: str
    landed: str
    killed: bool
    survivors: list[int]
    locks_left: int

    @property
    def missed(self) -> bool:
        """True when the kill missed the phase it aimed at (a kill anywhere never does)."""
        return self.aim != "anywhere" and self.landed != self.aim

    def problems(self) -> list[str]:
        found = []
        if self.survivors:
            found.append(f"restic outlived drkit: pids {self.survivors}")
        return found


def _now_in(process: subprocess.Popen, target: Path | None) -> str:
    """Name the phase process is in: a running restic child's command, the apply, or drkit."""
    children = restic_children(process.pid)
    if children:
        return sorted(children.values())[0]
    return "apply" if journal_size(target) is not None else "drkit"


def strike(
    command: list[str],
    aim: str,
    rng: random.Random,
    timing: Timing,
    repository: Seen,
    target: Path | None = None,
) -> Strike:
    """Start command, SIGKILL its process group at a seeded moment of the aimed phase, wait
    (bounded) for every restic of the repository to be gone, and count the locks it left."""
    locks_before = repository.lock_keys()
    process = start(*command)
    landed = "drkit"
    if aim == "anywhere":
        with_timeout(process, rng.uniform(0.0, timing.total))
        landed = _now_in(process, target)
    elif aim == "apply":
        size = int(rng.uniform(*JOURNAL_FRACTION) * timing.journal)
        poll(process, lambda: (journal_size(target) or 0) > size)
    else:  # restic's command `aim`, once it holds its lock (before, it has touched nothing)
        before = repository.lock_keys()

        def child() -> list[int]:
            return [pid for pid, name in restic_children(process.pid).items() if name == aim]

        def locked(pid: int) -> str | None:
            if repository.lock_keys() - before:
                return "locked"
            return None if running(pid) else "ended"

        found = poll(process, child)
        if found and poll(process, lambda: locked(found[0])) == "locked":
            # a lock held for less than the calibration's poll (a small restore) was not seen
            held = timing.held.get(aim, POLL_SECONDS)
            with_timeout(process, rng.uniform(0.0, RESTIC_FRACTION * held))
            landed = aim if running(found[0]) else f"after {aim}"
        elif found:
            landed = f"after {aim}"
    killed = process.poll() is None
    if killed:
        os.killpg(process.pid, signal.SIGKILL)
    else:
        landed = "finished"
    process.wait()
    process.communicate()
    if aim == "apply":
        # the journal outlives a kill inside the apply only: a finished apply removes it
        landed = "apply" if journal_size(target) is not None else "after apply"
    # a poll, not wait_for: a restic still there after the wait is the finding, not a failure
    deadline = time.monotonic() + SURVIVOR_WAIT_SECONDS
    survivors = restic_of(repository.restic_url)
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors = restic_of(repository.restic_url)
    return Strike(aim, landed, killed, survivors, len(repository.lock_keys() - locks_before))


class Seen:
    """A repository as the test sees it: its restic URL, and its locks counted straight from
    S3 (no restic, nothing changed)."""

    def __init__(self, repository):
        self.restic_url = repository.restic_url
        with _IN_PROCESS:  # boto3's default session is not thread-safe to build clients from
            self.client = boto3.client(
                "s3", endpoint_url=repository.s3_endpoint, region_name=repository.region
            )
        self.bucket = repository.bucket
        self.prefix = f"{repository.prefix}/locks/"

    def lock_keys(self) -> set[str]:
        listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        return {item["Key"] for item in listed.get("Contents", [])}

    def locks(self) -> int:
        return len(self.lock_keys())


# -- drkit as an operator runs it ------------------------------------------------------------


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [DRKIT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def run(*args: str, timeout: float = 240) -> tuple[int, dict, str]:
    """Run drkit with --json to its end; return its exit code, document and stderr."""
    done = subprocess.run(
        [DRKIT, *args, "--json"], capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        return done.returncode, json.loads(done.stdout), done.stderr
    except ValueError:
        return done.returncode, {"stdout": done.stdout, "stderr": done.stderr[-2000:]}, done.stderr


_IN_PROCESS = threading.Lock()  # CliRunner swaps sys.stdout: one in-process CLI call at a time


def new_node(repository, name: str = "sftp-1") -> Node:
    with _IN_PROCESS:
        return Node(make_workspace(), repository, node=name)


def backup(node: Node) -> str:
    code, document, _ = run("backup", "--config", str(node.config))
    assert code == 0, document
    return document["snapshot_id"]


def restic_check(node: Node) -> list[str]:
    """Return `restic check --no-lock` problems (none when clean): --no-lock neither needs nor
    touches the locks a kill left, which drkit alone is to handle."""
    checked = node.restic("check", "--no-lock")
    return [] if checked.returncode == 0 else [f"restic check: {checked.stderr[-1500:]}"]


def _grow(root: Path, count: int) -> None:
    archive = root / "var/log/sftp/archive"
    archive.mkdir(mode=0o750, exist_ok=True)
    for index in range(count):
        (archive / f"transfer-{index:04d}.log").write_text(f"entry {index}\n" * 3)


def _age(root: Path) -> None:
    """Make root an older state of the node: changed, missing and surplus files."""
    config_file = root / "etc/ssh/sshd_config"
    config_file.write_text(config_file.read_text() + "# an older revision\nMaxSessions 3\n")
    (root / "etc/ssh/ssh_host_ed25519_key.pub").unlink()
    archive = root / "var/log/sftp/archive"
    for index in range(0, ARCHIVE_FILES, 3):
        (archive / f"transfer-{index:04d}.log").write_text("older\n")
    for index in range(1, ARCHIVE_FILES, 7):
        (archive / f"transfer-{index:04d}.log").unlink()


class Outcome:
    def __init__(self, operation: str, aims: tuple[str, ...]):
        self.operation = operation
        self.aims = aims
        self.trials = 0
        self.missed = 0  # kills that missed their phase; made again
        self.misses: Counter = Counter()  # where they landed instead
        self.survived = 0
        self.killed = 0
        self.mid_apply = 0
        self.phases: Counter = Counter()  # aimed kills that landed in their phase
        self.anywhere: Counter = Counter()  # where the kills aimed anywhere landed
        self.restic_survivors = 0
        self.locks_left = 0  # restic locks the kills left in the repository
        self.stale_locks_removed = 0  # ... and those the next runs' drkit removed
        self.failures: list[str] = []

    def aim(self) -> str | None:
        """Return the next trial's phase (a missed one is aimed at again), or None once TRIALS
        kills have landed where they aimed (or too many missed)."""
        landed = self.trials - self.missed
        if landed >= TRIALS or self.missed > MISSES_ALLOWED * TRIALS:
            return None
        return self.aims[landed % len(self.aims)]

    def next_run(self, code: int, document: dict, stderr: str, what: str) -> list[str]:
        """Count the stale locks the next run removed; return its failure, if any."""
        self.stale_locks_removed += stderr.count(STALE_LOCK_LINE)
        return [] if code == 0 else [f"{what} exit {code}: {document}"]

    def judge(self, trial: int, hit: Strike, problems: list[str]) -> None:
        self.trials += 1
        self.locks_left += hit.locks_left
        self.missed += hit.missed
        if hit.missed:
            self.misses[f"{hit.aim}: {hit.landed}"] += 1
        self.killed += hit.killed
        if hit.aim == "anywhere":
            self.anywhere[hit.landed] += 1
        elif hit.landed == hit.aim:
            self.phases[hit.aim] += 1
        self.restic_survivors += len(hit.survivors)
        problems = hit.problems() + problems
        if problems:
            self.failures.append(f"trial {trial}: " + "; ".join(problems))
        else:
            self.survived += 1

    def finish(self, started: float) -> None:
        self.seconds = round(time.monotonic() - started, 1)
        figures.record(
            f"crash_{self.operation}",
            trials=self.trials,
            survived=self.survived,
            killed_mid_run=self.killed,
            rolled_back_mid_apply=self.mid_apply,
            phases_hit=dict(self.phases),
            anywhere_landed_in=dict(self.anywhere),
            missed_and_made_again=dict(self.misses),
            restic_survivors=self.restic_survivors,
            locks_left=self.locks_left,
            stale_locks_removed=self.stale_locks_removed,
            seconds=self.seconds,
            seed=SEED,
        )


@pytest.fixture(scope="module")
def outcomes(local_s3, tmp_path_factory) -> dict[str, Outcome]:
    """Run the four operations' trials side by side (each its own node and bucket: they are
    independent, and mostly wait on restic and S3), so the suite takes minutes, not ten."""
    from concurrent.futures import ThreadPoolExecutor

    directory = tmp_path_factory.mktemp("faults")
    runners = {
        "backup": _backup_trials,
        "prune": _prune_trials,
        "restore": _restore_apply_trials,
        "standby_sync": _standby_sync_trials,
    }
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=len(runners)) as pool:
        futures = {name: pool.submit(job, local_s3, directory) for name, job in runners.items()}
        found = {name: future.result() for name, future in futures.items()}
    figures.record(
        "crash_suite",
        seconds=round(time.monotonic() - started, 1),
        trials=sum(outcome.trials for outcome in found.values()),
        survived=sum(outcome.survived for outcome in found.values()),
    )
    return found


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("operation", ["backup", "prune", "restore", "standby_sync"])
def test_operation_survives_sigkill_in_each_phase(outcomes, operation):
    outcome = outcomes[operation]
    assert not outcome.failures, "\n".join(outcome.failures)
    assert outcome.trials - outcome.missed >= TRIALS, f"{outcome.missed} kills missed their phase"
    aimed = [aim for aim in outcome.aims if aim != "anywhere"]
    assert set(outcome.phases) == set(aimed), outcome.phases  # every phase was hit
    assert outcome.restic_survivors == 0


def _backup_trials(local_s3, secrets_dir) -> Outcome:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-backup")
    node = new_node(fresh_repository(local_s3, secrets_dir, prefix="pool"))
    outcome = Outcome("backup", ("backup", "backup", "backup", "anywhere"))
    seen = Seen(node.repository)
    command = ["backup", "--config", str(node.config)]
    log = node.root / "var/log/sftp/transfer.log"
    try:
        backup(node)
        log.write_text(log.read_text() + "calibration\n")
        timing = calibrate(command, seen)
        for trial in itertools.count():
            if not (aim := outcome.aim()):
                break
            log.write_text(log.read_text() + f"trial {trial} {secrets.token_hex(64)}\n")
            hit = strike(command, aim, rng, timing, seen)
            problems = outcome.next_run(*run(*command), "next backup")
            outcome.judge(trial, hit, problems + restic_check(node))
        # the shared locks the killed backups left block no backup; verify (exclusive) meets
        # them and removes them itself: none is left
        code, document, stderr = run("verify", "--config", str(node.config), "--spot", "3")
        assert code == 0, document  # every snapshot signed, the chain whole
        outcome.next_run(code, document, stderr, "verify")
        assert outcome.locks_left and document["stale_locks"], "no kill left a lock"
        assert not seen.locks()
    finally:
        node.remove()
    outcome.finish(started)
    return outcome


def _prune_trials(local_s3, secrets_dir) -> Outcome:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-prune")
    node = new_node(fresh_repository(local_s3, secrets_dir, prefix="pool"))
    settings = yaml.safe_load(node.config.read_text())
    settings["retention"] = {"last": 1}
    node.config.write_text(yaml.safe_dump(settings))
    outcome = Outcome("prune", ("prune", "forget", "prune", "anywhere"))
    seen = Seen(node.repository)
    command = ["prune", "--config", str(node.config)]
    log = node.root / "var/log/sftp/transfer.log"
    try:
        backup(node)
        backup(node)
        timing = calibrate(command, seen)
        for trial in itertools.count():
            if not (aim := outcome.aim()):
                break
            log.write_text(log.read_text() + f"trial {trial} {secrets.token_hex(256)}\n")
            backup(node)
            hit = strike(command, aim, rng, timing, seen)
            # the next scheduled runs: a backup, which an exclusive lock left by the kill
            # would block, then the prune again
            problems = outcome.next_run(*run("backup", "--config", str(node.config)), "backup")
            problems += outcome.next_run(*run(*command), "next prune")
            outcome.judge(trial, hit, problems + restic_check(node))
        assert outcome.locks_left and outcome.stale_locks_removed, "no kill left a lock"
        assert backup(node)
        assert not seen.locks()
    finally:
        node.remove()
    outcome.finish(started)
    return outcome


def _trials_on_a_target(outcome, rng, command, reset, target, seen):
    reset()
    old = tree(target)
    reset()
    timing = calibrate(command, seen, target)
    new = tree(target)
    assert old != new and timing.journal, "the calibration run applied nothing"
    for trial in itertools.count():
        if not (aim := outcome.aim()):
            break
        reset()
        hit = strike(command, aim, rng, timing, seen, target)
        problems = []
        # recover a copy of what the kill left (journal paths are relative to the target), as
        # the next run does first; the real target then meets the next run as the kill left it
        probe = target.with_name(target.name + "-probe")
        shutil.rmtree(probe, ignore_errors=True)
        subprocess.run(["cp", "-a", str(target), str(probe)], check=True)
        recovered = apply.recover(probe)
        now = tree(probe)
        shutil.rmtree(probe)
        if now not in (old, new):
            differing = sorted(
                path for path in set(now) | set(old) | set(new)
                if now.get(path) != old.get(path) and now.get(path) != new.get(path)
            )  # fmt: skip
            problems.append(f"half-applied after recovery ({recovered}): {differing[:5]}")
        code, document, stderr = run(*command)
        problems += outcome.next_run(code, document, stderr, "next run")
        if code == 0 and tree(target) != new:
            problems.append("next run did not reach the snapshot's state")
        outcome.judge(trial, hit, problems)
        outcome.mid_apply += recovered is not None and "rolled back" in recovered


RESTORE_AIMS = ("apply", "restore", "apply", "anywhere")


def _restore_apply_trials(local_s3, secrets_dir) -> Outcome:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-restore")
    node = new_node(fresh_repository(local_s3, secrets_dir, prefix="pool"))
    outcome = Outcome("restore", RESTORE_AIMS)
    try:
        _grow(node.root, ARCHIVE_FILES)
        snapshot_id = backup(node)
        template = node.workspace / "old-state"
        subprocess.run(["cp", "-a", str(node.root), str(template)], check=True)
        _age(template)
        target = node.workspace / "target"

        def reset() -> None:
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["cp", "-a", str(template), str(target)], check=True)

        command = ["restore", snapshot_id, "--config", str(node.config), "--target",
                   str(target), "--force"]  # fmt: skip
        _trials_on_a_target(outcome, rng, command, reset, target, Seen(node.repository))
        assert not restic_check(node)
    finally:
        node.remove()
    outcome.finish(started)
    return outcome


def _standby_sync_trials(local_s3, secrets_dir) -> Outcome:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-standby")
    repository = fresh_repository(local_s3, secrets_dir, prefix="pool")
    active = new_node(repository, "sftp-1")
    passive = None
    outcome = Outcome("standby_sync", RESTORE_AIMS)
    try:
        _grow(active.root, ARCHIVE_FILES)
        backup(active)
        passive = new_node(repository, "sftp-2")
        settings = yaml.safe_load(passive.config.read_text())
        settings["standby"] = {"source": "sftp-1"}
        settings["trusted_keys"] = [*settings["trusted_keys"], active.signer]
        passive.config.write_text(yaml.safe_dump(settings))
        template = passive.workspace / "old-state"
        subprocess.run(["cp", "-a", str(active.root), str(template)], check=True)
        _age(template)
        state_file = passive.state / "standby" / "sftp-2.json"

        def reset() -> None:
            shutil.rmtree(passive.root, ignore_errors=True)
            subprocess.run(["cp", "-a", str(template), str(passive.root)], check=True)
            state_file.unlink(missing_ok=True)

        command = ["standby", "sync", "--config", str(passive.config)]
        _trials_on_a_target(outcome, rng, command, reset, passive.root, Seen(repository))
        assert not restic_check(active)
    finally:
        active.remove()
        if passive is not None:
            passive.remove()
    outcome.finish(started)
    return outcome
