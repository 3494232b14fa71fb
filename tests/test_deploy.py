"""deploy/ and the Dockerfile: the unit parses and the image copies only what the repository has.

No container engine and no systemd PID 1 here: both are checked statically, never run.
"""

from __future__ import annotations

import re
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

from drkit import runner

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"


def test_unit_runs_the_daemon_hardened_and_stops_gracefully():
    text = (DEPLOY / "drkit.service").read_text()
    assert re.search(r"^ExecStart=\S+/drkit daemon --config \S+", text, re.MULTILINE)
    for setting in (
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/drkit",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "KillSignal=SIGTERM",
        "Restart=on-failure",
    ):
        assert setting in text.splitlines(), setting
    timeout = int(re.search(r"^TimeoutStopSec=(\d+)", text, re.MULTILINE).group(1))
    assert timeout > 60 + 20, "systemd must wait longer than --stop-timeout plus restic's grace"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_parses_with_systemd_analyze(tmp_path: Path):
    drkit = Path(sys.executable).parent / "drkit"
    text = (DEPLOY / "drkit.service").read_text()
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={drkit}", text, flags=re.MULTILINE)
    unit = tmp_path / "drkit.service"
    unit.write_text(text)
    checked = runner.run(["systemd-analyze", "verify", str(unit)], timeout=60)
    assert checked.returncode == 0, checked.stderr
    assert "drkit.service" not in checked.stderr, checked.stderr


def test_dockerfile_copies_only_what_the_repository_has_and_runs_the_daemon():
    text = (REPO_ROOT / "Dockerfile").read_text()
    sources = []
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert sources
    for source in sources:
        assert (REPO_ROOT / source).exists(), source
    assert 'CMD ["daemon"' in text
    assert "restic" in text and "DRKIT_RESTIC=/usr/local/bin/restic" in text
    assert "/healthz" in text


def test_wheel_and_image_carry_only_the_runtime_package():
    """The demo and test fixtures live in devtools/, outside drkit: neither ships."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(str(REPO_ROOT), include=include)
    assert "drkit" in packages
    assert all(name == "drkit" or name.startswith("drkit.") for name in packages), packages
    modules = {path.stem for path in (REPO_ROOT / "drkit").rglob("*.py")}
    assert not modules & {"sample_node", "sample_nodes", "demo_report"}
    copied = [
        line.split()[1:-1]
        for line in (REPO_ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY") and "--from=" not in line
    ]
    assert not [source for sources in copied for source in sources if "devtools" in source]
