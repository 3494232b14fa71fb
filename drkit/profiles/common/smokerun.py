"""A smoke run's plumbing: a free loopback port, waiting for a server's port or greeting, a
workspace removed afterwards, and the interesting lines of its logs."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from drkit import runner


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def greeting(port: int, server: runner.Service, timeout: float) -> str | None:
    """Wait for the server's first reply line on 127.0.0.1:port; None if it never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as conn:
            conn.settimeout(5)
            return conn.recv(512).decode(errors="replace").strip()
        time.sleep(0.02)
    return None


def wait_port(port: int, server: runner.Service, timeout: float) -> bool:
    """Wait until 127.0.0.1:port accepts connections while the server runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.02)
    return False


@contextlib.contextmanager
def smoke_workspace(work_dir: Path, prefix: str) -> Iterator[Path]:
    """Yield a fresh 0755 directory under work_dir (created when missing) for one smoke run;
    remove it afterwards whatever happens."""
    base = Path(work_dir).resolve()
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    work.chmod(0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


LOG_PATTERN = r"error|fatal|refused|denied|invalid|failed|unable|oops|no such"


def interesting_lines(lines: list[str], pattern: str = LOG_PATTERN) -> list[str]:
    """Return the last three non-blank lines that match pattern (any case), else the last three."""
    lines = [ln for ln in lines if ln.strip()]
    return ([ln for ln in lines if re.search(pattern, ln, re.I)] or lines)[-3:]


def log_hint(*paths: Path) -> str:
    """Return the interesting last lines of server logs, for a failed login's detail."""
    lines: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            lines += path.read_text(errors="replace").splitlines()
    return " | ".join(line.strip()[:200] for line in interesting_lines(lines))
