"""The README's five-minute tour, run line by line as a newcomer would, on a local S3.

Every ```sh block of the tour runs in bash against a fresh sample node and a new bucket on the
embedded SeaweedFS; only the places the tour cannot know are replaced (endpoint, bucket, paths,
the smoke user, the signer's fingerprint on record). Each command must exit 0 and print what
the tour says it prints.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from nodes import SMOKE_USER, make_workspace

from devtools import sample_node

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```sh\n(?P<body>.*?)^```$", re.M | re.S)


def tour_blocks() -> list[str]:
    """Return the tour's sh blocks, in order."""
    text = README.read_text()
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    return [match.group("body") for match in FENCE.finditer(section)]


def localised(block: str, places: dict[str, str]) -> str:
    """Return a tour block with the tour's example places replaced by the test's."""
    for example, real in places.items():
        block = block.replace(example, real)
    return block


def run(block: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


@pytest.mark.timeout(600)
def test_the_readme_tour_runs_and_prints_what_it_says(local_s3):
    blocks = tour_blocks()
    assert len(blocks) >= 4, "the tour's sh blocks were not found"
    work = make_workspace()
    root = work / "node"
    sample_node.build(root, smoke_user=SMOKE_USER, chroot=True)
    (work / "home").mkdir()
    env = {
        **os.environ,
        **local_s3.env(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "DRKIT_CONFIG": str(work / "drkit.yaml"),  # the tour's commands after init name none
        "HOME": str(work / "home"),
        "SHELL": "/bin/bash",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    places = {
        "https://s3.example.net": local_s3.endpoint,
        "dr-backups": "tour-" + uuid.uuid4().hex[:10],
        "/etc/drkit/drkit.yaml": str(work / "drkit.yaml"),
        "/etc/drkit/repo.pass": str(work / "repo.pass"),
        "/root/repo.pass": str(work / "repo.pass"),
        "--root /": f"--root {root}",
        "--smoke-user drill": f"--smoke-user {SMOKE_USER}",
        "/srv/rebuild": str(work / "rebuild"),
        "check --target /": f"check --target {root}",
        "--target / --force": f"--target {work / 'bare-metal'} --force",
    }
    init, *rest = blocks
    done = run(localised(init, places).rstrip() + " --json", env, work)
    assert done.returncode == 0, done.stdout + done.stderr
    signer = json.loads(done.stdout)["signer"]
    assert signer.startswith("SHA256:")  # "It prints the signer's fingerprint"
    places["SHA256:..."] = signer
    ran = []
    try:
        for block in rest:
            for line in localised(block, places).replace("\\\n", " ").splitlines():
                command = line.split("#", 1)[0].strip()
                if not command:
                    continue
                done = run(command, env, work)
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                ran.append(command.split()[1])
                said = line.split("#", 1)[1].strip() if "#" in line else ""
                if command == "drkit --version":
                    assert done.stdout.strip() == said, done.stdout
                if command.endswith("--help"):
                    assert "Examples" in done.stdout, done.stdout
                if command == "drkit snapshots":
                    assert "sftp-1" in done.stdout, done.stdout
        assert {"backup", "restore", "check", "--install-completion"} <= set(ran), ran
        assert (work / "home/.bashrc").is_file()  # completion installed for bash
        # bare metal: "The node's drkit.yaml ... is left in /var/lib/drkit/restored/"
        assert (work / "bare-metal/var/lib/drkit/restored/drkit.yaml").is_file()
    finally:
        subprocess.run(["rm", "-rf", str(work)], check=False)
