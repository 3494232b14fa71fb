"""Shared fixtures: sandbox roots under a root-owned directory (sshd refuses chroots under /tmp),
the session's local S3, a fresh bucket per test, a sample node per test.

Rules the suite keeps (issue 23 part 7):
- Shared builders live in one place: fixtures here; node builders (Node, fresh_node for a
  file's module-scoped node), ports, repositories and wait_for in nodes.py; the daemon
  process, webhook recorder and offline config in daemons.py; status documents and fleets in
  fleets.py. A test file imports nothing from another test file.
- Each test stands alone: it sets up what it needs. A module-scoped node is shared only by tests
  that leave it as they found it (in a finally), or that work whatever the others did; a test
  that changes it for good gets a node of its own. A file passes in reverse order too.
- No fixed sleep waits for a condition: wait_for(predicate, timeout, what) polls it. A sleep
  that is the behaviour under test (time passing for an RPO, an outage that lasts) says so.
- No test overrides or patches drkit's private names: it goes through public seams (Daemon's
  clock=, actions=, count_snapshots=; LocalS3's s3_port; a public attribute such as
  Daemon.breach).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

# One identity per pytest-xdist worker (gw0, gw1, ...), set before any test module imports the
# sample builders: their smoke users, uids and groups are suffixed and shifted by it.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    os.environ["DRKIT_SAMPLE_WORKER"] = _WORKER[2:]

from drkit import config  # noqa: E402


@pytest.fixture
def node_root() -> Iterator[Path]:
    """Return a fresh, root-owned 0755 directory to hold a node's filesystem; removed afterwards."""
    from nodes import make_workspace

    root = make_workspace()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def work_dir(node_root: Path) -> Iterator[Path]:
    """Return a fresh root-owned 0755 directory beside node_root (config, state, reports)."""
    work = node_root.parent / f"{node_root.name}-work"
    work.mkdir(mode=0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def recorder():
    """Return a webhook/ping recorder on 127.0.0.1 (daemons.Recorder); closed after."""
    from daemons import Recorder

    server = Recorder()
    try:
        yield server
    finally:
        server.close()


# -- the embedded S3 (SeaweedFS), one per test session ----------------------------------------

_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_EC2_METADATA_DISABLED",
)


@pytest.fixture(scope="session")
def local_s3():
    """Start one local S3 for the session with its credentials in os.environ; stop it after."""
    from drkit.locals3 import LocalS3

    saved = {name: os.environ.get(name) for name in _AWS_VARIABLES}
    server = LocalS3()
    server.start()
    try:
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            os.environ.pop(name, None)
        os.environ.update(server.env())
        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"  # never ask a metadata service
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_repository(local_s3, tmp_path: Path) -> config.Repository:
    """Return a repository section for a fresh bucket on the local S3 (1-day GOVERNANCE lock)."""
    from nodes import fresh_repository

    return fresh_repository(local_s3, tmp_path)


@pytest.fixture
def node(node_root: Path, s3_repository: config.Repository):
    """Return a sample SFTP node (nodes.Node) in node_root, initialised against a fresh bucket,
    not backed up yet; removed with node_root. A file's own `node` fixture overrides it."""
    from nodes import Node

    return Node(node_root, s3_repository)


# -- order: longest files first, so parallel workers finish together ------------------------

# Seconds each file took in a measured run (./scripts/test, 3 workers on 2 cores): only a
# schedule hint for --dist loadfile, which hands out files in collection order. The longest
# start first (the crash suite at once, on a worker of its own), the short ones fill the end.
# A file not listed counts 20 s when it has an integration test, else 0 (the unit files).
MEASURED_SECONDS = {
    "faults/test_crash_safety.py": 273,
    "test_alert_latency.py": 223,
    "test_runbooks.py": 177,
    "test_corpus_cycle.py": 140,
    "test_corpus_cycle_proftpd.py": 110,
    "test_corpus_cycle_other.py": 110,
    "test_state_safety.py": 150,
    "test_pureftpd_profile.py": 67,
    "test_daemon.py": 96,
    "test_cycle.py": 87,
    "test_secrets.py": 79,
    "test_bad_input.py": 68,
    "test_behaviours_apply.py": 83,
    "test_behaviours_daemon.py": 70,
    "test_behaviours_prove.py": 35,
    "test_hostile.py": 59,
    "test_openssh_profile.py": 38,
    "faults/test_s3_faults.py": 37,
    "test_chain.py": 36,
    "test_keys.py": 36,
    "test_ftp_profiles.py": 34,
    "test_drill.py": 33,
    "test_standby_fleet.py": 32,
    "test_daemon_units.py": 17,
    # this stop's files, measured one by one on a loaded machine (seconds, rounded)
    "test_identity.py": 110,
    "test_identity_ftps.py": 60,
    "test_sqlite_databases.py": 60,
    "test_postgres_databases.py": 50,
    "test_copies.py": 45,
    "test_freshness.py": 45,
}
TESTS_DIR = Path(__file__).parent


def _weight(item) -> float:
    relative = item.path.relative_to(TESTS_DIR).as_posix() if TESTS_DIR in item.path.parents else ""
    if relative in MEASURED_SECONDS:
        return MEASURED_SECONDS[relative]
    return 20 if item.get_closest_marker("integration") else 0


def pytest_collection_modifyitems(items) -> None:
    """Order files by weight, heaviest first (see MEASURED_SECONDS). The sort is stable and
    keyed by file, so tests keep their order within a file and a file stays in one piece."""
    weights: dict = {}
    for item in items:
        weights[item.path] = max(weights.get(item.path, 0), _weight(item))
    items.sort(key=lambda item: -weights[item.path])


# -- reliability figures: printed at the end of a run that measured them ---------------------

_SESSION_START: list[float] = []


def pytest_sessionstart(session) -> None:
    import time

    _SESSION_START.append(time.time())


def pytest_terminal_summary(terminalreporter) -> None:
    import json

    import figures

    start = _SESSION_START[0] if _SESSION_START else 0.0
    fresh = {
        name: values
        for name, values in figures.collected().items()
        if (figures.directory() / f"{name}.json").stat().st_mtime >= start
    }
    if fresh:
        terminalreporter.section("drkit reliability figures")
        for name, values in fresh.items():
            terminalreporter.write_line(f"{name}: {json.dumps(values, sort_keys=True)}")
