"""Crash safety: SIGKILL of drkit's whole process group at random moments, many times over.

For each operation (backup, prune, restore's apply, standby sync) a seeded RNG picks the moment
of each kill within the operation's measured duration. After every trial:
- `restic check` of the repository is clean;
- the next run of the same command succeeds without any manual step;
- for restore and standby sync, the target is wholly as before or wholly the new state once
  the journal of the killed apply has been recovered (`apply.recover`, which is exactly what
  the next run does first), and wholly the new state after the next run.

Seed and trial count: $DRKIT_FAULT_SEED (default 7), $DRKIT_FAULT_TRIALS (default 20).
"""

from __future__ import annotations

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
from pathlib import Path

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


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [DRKIT, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def kill_group_after(process: subprocess.Popen, delay: float) -> bool:
    """SIGKILL the process group after delay; return True when it was still running."""
    try:
        process.wait(timeout=delay)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    process.communicate()
    return not finished


def run(*args: str, timeout: float = 240) -> tuple[int, dict]:
    done = subprocess.run(
        [DRKIT, *args, "--json"], capture_output=True, text=True, timeout=timeout, check=False
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, {"stdout": done.stdout, "stderr": done.stderr[-2000:]}


def timed(*args: str) -> float:
    began = time.monotonic()
    code, document = run(*args)
    assert code == 0, document
    return time.monotonic() - began


_IN_PROCESS = threading.Lock()  # CliRunner swaps sys.stdout: one in-process CLI call at a time


def new_node(repository, name: str = "sftp-1") -> Node:
    with _IN_PROCESS:
        return Node(make_workspace(), repository, node=name)


def backup(node: Node) -> str:
    code, document = run("backup", "--config", str(node.config))
    assert code == 0, document
    return document["snapshot_id"]


def restic_clean(node: Node) -> tuple[bool, str]:
    """Run `restic check` as an operator would after a crash: `restic unlock` first (it removes
    only locks whose process is gone). A killed process stays a zombie until PID 1 reaps it
    (on these VMs, up to ~2 s), and restic counts a zombie as alive: retry for a few seconds."""
    deadline = time.monotonic() + 10
    while True:
        node.restic("unlock")
        checked = node.restic("check")
        locked = "already locked" in checked.stderr
        if checked.returncode == 0 or not locked or time.monotonic() > deadline:
            return checked.returncode == 0, checked.stderr[-1500:]
        time.sleep(0.5)


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
    def __init__(self, operation: str):
        self.operation = operation
        self.trials = 0
        self.survived = 0
        self.killed = 0
        self.mid_apply = 0
        self.failures: list[str] = []

    def judge(self, trial: int, problems: list[str], was_killed: bool) -> None:
        self.trials += 1
        self.killed += was_killed
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
def test_operation_survives_sigkill_at_random_moments(outcomes, operation):
    outcome = outcomes[operation]
    assert outcome.trials >= TRIALS
    assert not outcome.failures, "\n".join(outcome.failures)


def _backup_trials(local_s3, secrets_dir) -> Outcome:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-backup")
    node = new_node(fresh_repository(local_s3, secrets_dir, prefix="pool"))
    outcome = Outcome("backup")
    try:
        duration = timed("backup", "--config", str(node.config))
        log = node.root / "var/log/sftp/transfer.log"
        for trial in range(TRIALS):
            log.write_text(log.read_text() + f"trial {trial} {secrets.token_hex(64)}\n")
            killed = kill_group_after(
                start("backup", "--config", str(node.config)), rng.uniform(0.0, duration)
            )
            problems = []
            clean, detail = restic_clean(node)
            if not clean:
                problems.append(f"restic check: {detail}")
            code, document = run("backup", "--config", str(node.config))
            if code != 0:
                problems.append(f"next backup exit {code}: {document}")
            outcome.judge(trial, problems, killed)
        code, document = run("verify", "--config", str(node.config), "--spot", "3")
        assert code == 0, document  # every snapshot signed, the chain whole
    finally:
        node.remove()
    outcome.finish(started)
    return outcome


def _prune_trials(local_s3, secrets_dir) -> Outcome:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-prune")
    node = new_node(fresh_repository(local_s3, secrets_dir, prefix="pool"))
    settings = yaml.safe_load(node.config.read_text())
    settings["retention"] = {"last": 1, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0,
                             "yearly": 0}  # fmt: skip
    node.config.write_text(yaml.safe_dump(settings))
    outcome = Outcome("prune")
    log = node.root / "var/log/sftp/transfer.log"
    try:
        backup(node)
        backup(node)
        duration = timed("prune", "--config", str(node.config))
        for trial in range(TRIALS):
            log.write_text(log.read_text() + f"trial {trial} {secrets.token_hex(256)}\n")
            backup(node)
            killed = kill_group_after(
                start("prune", "--config", str(node.config)), rng.uniform(0.0, duration)
            )
            problems = []
            clean, detail = restic_clean(node)
            if not clean:
                problems.append(f"restic check: {detail}")
            code, document = run("prune", "--config", str(node.config))
            if code != 0:
                problems.append(f"next prune exit {code}: {document}")
            outcome.judge(trial, problems, killed)
        assert backup(node)
    finally:
        node.remove()
    outcome.finish(started)
    return outcome


def _calibrate_restore(command: list[str], reset, target: Path) -> tuple[float, float, dict]:
    """Run once to completion from the old state; return (start of apply, end, new tree)."""
    reset()
    process = start(*command)
    began = time.monotonic()
    apply_at = None
    for line in process.stderr:
        if "applying" in line and apply_at is None:
            apply_at = time.monotonic() - began
    process.wait()
    total = time.monotonic() - began
    assert process.returncode == 0, process.stdout.read()
    return apply_at or total / 2, total, tree(target)


def _trials_on_a_target(outcome, rng, command, reset, target, next_run):
    reset()
    old = tree(target)
    apply_at, total, new = _calibrate_restore(command, reset, target)
    assert old != new
    for trial in range(TRIALS):
        reset()
        # half the kills anywhere in the run, half inside the apply window
        if trial % 2:
            delay = rng.uniform(0.0, total)
        else:
            delay = rng.uniform(max(0.0, apply_at - 0.05), total)
        killed = kill_group_after(start(*command), delay)
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
        code, document = next_run()
        if code != 0:
            problems.append(f"next run exit {code}: {document}")
        elif tree(target) != new:
            problems.append("next run did not reach the snapshot's state")
        outcome.judge(trial, problems, killed)
        outcome.mid_apply += recovered is not None and "rolled back" in recovered


def _restore_apply_trials(local_s3, secrets_dir) -> Outcome:
    started = time.monotonic()
    rng = random.Random(f"{SEED}-restore")
    node = new_node(fresh_repository(local_s3, secrets_dir, prefix="pool"))
    outcome = Outcome("restore")
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
        _trials_on_a_target(outcome, rng, command, reset, target, lambda: run(*command))
        clean, detail = restic_clean(node)
        assert clean, detail
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
    outcome = Outcome("standby_sync")
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
        _trials_on_a_target(outcome, rng, command, reset, passive.root, lambda: run(*command))
        clean, detail = restic_clean(active)
        assert clean, detail
    finally:
        active.remove()
        if passive is not None:
            passive.remove()
    outcome.finish(started)
    return outcome
