"""The only module that starts processes: argv lists, bounded time, secrets kept out of logs."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from drkit import errors, units

log = logging.getLogger(__name__)

STDERR_TAIL_LINES = 25
TERMINATE_GRACE_SECONDS = 10.0
STOP_CHECK_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[int], Callable[[], None]] | None:
    """Return a factory of preexec functions that make a child die with drkit (Linux), or None.

    Children run in their own session (so a timeout can stop the whole group), which also
    takes them out of drkit's process group: without this, a SIGKILLed drkit would leave its
    restic running on, holding repository locks and writing into a staging directory that the
    next run is about to clean up. The libc function is resolved here, in the parent; the
    child only makes the system call, then exits at once if drkit (`parent`, its pid taken
    before the fork) died before the call took effect.
    """
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.restype = ctypes.c_int

    def dies_with(parent: int) -> Callable[[], None]:
        def preexec() -> None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(128 + signal.SIGKILL)

        return preexec

    return dies_with


_DIES_WITH = _parent_death_signal()


def _preexec() -> Callable[[], None] | None:
    """Return the preexec function for a child of this process (None off Linux)."""
    return _DIES_WITH(os.getpid()) if _DIES_WITH else None


class Stopped(Exception):
    """A command was stopped because its `stop_when` check gave a reason (the message)."""


class CommandTimeout(errors.DrkitError, exit_code=10, kind="timeout"):
    """A command overran the time it was given and was stopped."""

    def __init__(self, program: str, timeout: float):
        super().__init__(
            f"{Path(program).name} did not finish within {units.duration(timeout)} and was stopped"
        )


@dataclass(frozen=True)
class Completed:
    """What a finished process left: its exit code and output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""

    @property
    def stderr_tail(self) -> str:
        """Return the last lines of stderr, the part that names the cause."""
        return "\n".join(self.stderr.strip().splitlines()[-STDERR_TAIL_LINES:])


def _describe(argv: list[str], env: Mapping[str, str] | None) -> str:
    names = " ".join(f"{name}=***" for name in sorted(env or {}))
    return f"{names} {' '.join(argv)}".strip()


def _merged_env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    merged.update(env or {})
    return merged


def _stop_group(process: subprocess.Popen[Any], grace: float = TERMINATE_GRACE_SECONDS) -> None:
    """Send SIGTERM to the process group, then SIGKILL once `grace` seconds have passed."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)


def _spawn(
    argv: list[str],
    env: Mapping[str, str] | None,
    cwd: Path | str | None,
    stdin: int = subprocess.DEVNULL,
    text: bool = True,
) -> subprocess.Popen[Any]:
    log.debug("run: %s", _describe(argv, env))
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_merged_env(env),
            cwd=cwd,
            text=text,
            errors="replace" if text else None,
            start_new_session=True,
            preexec_fn=_preexec(),
        )
    except FileNotFoundError as exc:
        raise errors.UsageError(f"program not found: {argv[0]}") from exc
    except PermissionError as exc:
        raise errors.UsageError(f"program not executable: {argv[0]}") from exc


def _watch(
    process: subprocess.Popen[Any],
    stop_when: Callable[[], str | None] | None,
    finished: threading.Event,
) -> list[str]:
    """Call stop_when every STOP_CHECK_SECONDS until finished is set; once it gives a reason,
    stop the process group. Return the list that receives the reason."""
    reasons: list[str] = []
    if stop_when is None:
        return reasons
    check = stop_when

    def watch() -> None:
        while not finished.wait(STOP_CHECK_SECONDS):
            reason = check()
            if reason and not finished.is_set():
                reasons.append(reason)
                _stop_group(process)
                return

    threading.Thread(target=watch, daemon=True).start()
    return reasons


def run(
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    cwd: Path | str | None = None,
    input_text: str | None = None,
    binary: bool = False,
    stop_when: Callable[[], str | None] | None = None,
) -> Completed:
    """Run argv to completion and return its output; raise CommandTimeout on overrun.

    binary keeps stdout as bytes (in stdout_bytes), for archives. stop_when is as for
    run_lines. The caller interprets the exit code: only the caller knows what a code means.
    """
    stdin = subprocess.PIPE if input_text is not None else subprocess.DEVNULL
    process = _spawn(argv, env, cwd, stdin=stdin, text=not binary)
    finished = threading.Event()
    reasons = _watch(process, stop_when, finished)
    try:
        stdout, stderr = process.communicate(input=input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop_group(process)
        raise CommandTimeout(argv[0], timeout) from None
    except KeyboardInterrupt:
        _stop_group(process)
        raise errors.Interrupted(f"interrupted while running {Path(argv[0]).name}") from None
    finally:
        finished.set()
    if reasons and process.returncode != 0:  # a command that finished well stands
        raise Stopped(reasons[0])
    if binary:
        text_stderr = stderr.decode(errors="replace")
        return Completed(list(argv), process.returncode, "", text_stderr, stdout)
    return Completed(list(argv), process.returncode, stdout, stderr)


def run_lines(
    argv: list[str],
    on_line: Callable[[str], None],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600.0,
    cwd: Path | str | None = None,
    stop_when: Callable[[], str | None] | None = None,
) -> Completed:
    """Run argv, calling on_line for each stdout line as it arrives; keep only stderr's tail.

    stdout is not kept (a backup's status stream can be long); stderr is read by a thread.
    stop_when, when given, is called every STOP_CHECK_SECONDS while the command runs; once it
    returns a reason the command is stopped (SIGTERM to its group) and Stopped(reason) raised.
    """
    process = _spawn(argv, env, cwd)
    stdout, stderr = process.stdout, process.stderr
    assert stdout is not None and stderr is not None  # both are pipes
    tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES * 4)
    reader = threading.Thread(target=lambda: tail.extend(stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    timer = threading.Timer(timeout, _stop_group, args=(process,))
    timer.daemon = True
    timer.start()
    finished = threading.Event()
    reasons = _watch(process, stop_when, finished)
    try:
        for line in stdout:
            on_line(line.rstrip("\n"))
        process.wait()
    except KeyboardInterrupt:
        _stop_group(process)
        raise errors.Interrupted(f"interrupted while running {Path(argv[0]).name}") from None
    except BaseException:
        _stop_group(process)
        raise
    finally:
        timer.cancel()
        finished.set()
    reader.join(timeout=5)
    if reasons and process.returncode != 0:  # a command that finished well stands
        raise Stopped(reasons[0])
    if time.monotonic() >= deadline:
        raise CommandTimeout(argv[0], timeout)
    return Completed(list(argv), process.returncode, "", "".join(tail))


@dataclass
class Service:
    """A long-running process (a server under test or smoke) and how to stop it."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        """Return True while the process runs."""
        return self.process.poll() is None

    def stop(self) -> None:
        """Stop the process group and wait for it."""
        _stop_group(self.process, grace=5.0)

    def log_tail(self) -> str:
        """Return the last lines the service wrote."""
        with contextlib.suppress(OSError):
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-STDERR_TAIL_LINES:])
        return ""


def start_service(
    argv: list[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin_to_log: bool = False,
) -> Service:
    """Start argv in its own process group with stdout and stderr going to log_path.

    stdin_to_log also opens log_path read-write as stdin: vsftpd writes its start-up errors
    to file descriptor 0.
    """
    log.debug("start: %s", _describe(argv, env))
    with open(log_path, "ab") as log_file, open(log_path, "r+b") as input_file:
        try:
            process = subprocess.Popen(
                argv,
                stdin=input_file if stdin_to_log else subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=_merged_env(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_preexec(),
            )
        except FileNotFoundError as exc:
            raise errors.UsageError(f"program not found: {argv[0]}") from exc
    return Service(process, log_path)


@contextlib.contextmanager
def service(
    argv: list[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    stdin_to_log: bool = False,
) -> Iterator[Service]:
    """Run argv as a Service for the duration of the block, stopping it on the way out."""
    started = start_service(argv, log_path, env=env, cwd=cwd, stdin_to_log=stdin_to_log)
    try:
        yield started
    finally:
        started.stop()


def signal_children(sig: int = signal.SIGTERM) -> list[int]:
    """Send sig to the process group of each child of this process (each started in a session
    of its own, so the group is the child's and what it started); return the children's pids.

    SIGTERM lets restic exit 130 and release its lock; SIGKILL is for a restic deaf to it (its
    lock is stale then, removed at the next start)."""
    signalled = []
    for child in psutil.Process().children():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, sig)
            signalled.append(child.pid)
    return signalled


def end_processes_of(uid: int, timeout: float = 10.0) -> None:
    """Send SIGTERM to every live process running as uid (a smoke's user, whose server
    sessions outlive the server's listener by about a second) and wait up to timeout for them
    to end; a zombie has ended, whenever its parent reaps it."""

    def alive() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["uids", "status"]):
            uids, status = process.info["uids"], process.info["status"]
            if uids is not None and uids.effective == uid and status != psutil.STATUS_ZOMBIE:
                found.append(process)
        return found

    for process in alive():
        with contextlib.suppress(psutil.Error):
            process.terminate()
    deadline = time.monotonic() + timeout
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
