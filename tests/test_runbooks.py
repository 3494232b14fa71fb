"""Runbooks that cannot rot: every `sh runnable` block runs against a local S3 and a sample node.

Blocks are fenced ```sh runnable (exit 0 expected), ```sh runnable exit=N, or
```sh pending issue-N (commands of an issue not done yet: their drkit commands must not exist
yet, so the marker is switched to runnable the moment they do). Plain ```sh blocks never run.
The placeholders are the variables listed in runbooks/README.md, set here to the test's node.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from nodes import SMOKE_USER, Node, fresh_node, make_workspace

from drkit.cli import app
from drkit.engines import restic as restic_engine

RUNBOOKS = Path(__file__).resolve().parents[1] / "runbooks"
PROCEDURES = sorted(path for path in RUNBOOKS.glob("*.md") if path.name != "README.md")
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
                   re.M | re.S)  # fmt: skip
MARKER = re.compile(
    r"^sh\s+(?:runnable(?:\s+exit=(?P<exit>\d+))?(?:\s+on=(?P<on>[a-z]+))?"
    r"|pending\s+issue-(?P<issue>\d+))$"
)
NODES = ("active", "passive", "returning")
SECTIONS = ("## Purpose", "## Preconditions", "## Steps")


@dataclass
class Block:
    runbook: str
    line: int
    info: str
    body: str

    @property
    def runnable(self) -> bool:
        return self.info.split()[:2] == ["sh", "runnable"]

    @property
    def pending(self) -> bool:
        return self.info.split()[:2] == ["sh", "pending"]

    @property
    def expected_exit(self) -> int:
        match = MARKER.match(self.info)
        return int(match.group("exit") or 0) if match else 0

    @property
    def node(self) -> str:
        """Return which node of the test's pair the block runs on (on=NAME; default active)."""
        match = MARKER.match(self.info)
        return (match.group("on") if match else None) or "active"

    def drkit_commands(self) -> list[list[str]]:
        """Return the drkit command words of each drkit invocation (e.g. ['standby', 'sync'])."""
        joined = self.body.replace("\\\n", " ")
        found = []
        for line in joined.splitlines():
            words = shlex.split(line, comments=True) if line.strip() else []
            if words and words[0] == "drkit":
                found.append([word for word in words[1:3] if not word.startswith("-")])
        return found


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        indent = match.group("indent")
        body = "".join(
            line[len(indent) :] if line.startswith(indent) else line
            for line in match.group("body").splitlines(keepends=True)
        )
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(path.name, line, match.group("info").strip(), body))
    return found


def _cli_commands() -> set[tuple[str, ...]]:
    """Return every command path the CLI has: ('drill',), ('storage', 'verify'), ..."""
    import typer.main

    command = typer.main.get_command(app)
    paths: set[tuple[str, ...]] = set()

    def walk(group, prefix: tuple[str, ...]) -> None:
        for name, sub in getattr(group, "commands", {}).items():
            paths.add((*prefix, name))
            walk(sub, (*prefix, name))

    walk(command, ())
    return paths


def _exists(words: list[str], known: set[tuple[str, ...]]) -> bool:
    """Return True when the CLI has this command (a group's subcommand must exist itself)."""
    if not words:
        return False
    group = any(len(path) == 2 and path[0] == words[0] for path in known)
    return tuple(words[:2]) in known if group else (words[0],) in known


# -- static: every runbook is complete and every marker means what it says -----------------


@pytest.mark.parametrize("path", PROCEDURES, ids=lambda path: path.stem)
def test_runbook_has_its_sections_and_valid_markers(path: Path):
    text = path.read_text()
    for section in SECTIONS:
        assert section in text or section.replace("Steps", "Failover") in text, section
    assert "Expected" in text, "a runbook says what the operator should see"
    assert "ecision" in text or "When it fails" in text, "a runbook names its decision points"
    known = _cli_commands()
    found = blocks(path)
    assert any(block.runnable for block in found), "at least one block runs in CI"
    for block in found:
        where = f"{block.runbook} line {block.line}"
        if block.info.startswith("sh ") or block.info == "sh":
            assert block.info == "sh" or MARKER.match(block.info), f"{where}: bad marker"
            assert block.node in NODES, f"{where}: on= names one of {', '.join(NODES)}"
        commands = block.drkit_commands()
        if block.runnable:
            for words in commands:
                assert _exists(words, known), f"{where}: drkit {' '.join(words)} does not exist"
        if block.pending:
            assert commands, f"{where}: a pending block names the drkit commands it waits for"
            ready = [words for words in commands if _exists(words, known)]
            assert len(ready) < len(commands), (
                f"{where}: every command of this pending block exists now "
                f"({'; '.join(' '.join(w) for w in ready)}): mark it `sh runnable`"
            )


def test_the_marker_grammar():
    assert MARKER.match("sh runnable") and MARKER.match("sh runnable exit=6")
    assert MARKER.match("sh pending issue-6") and not MARKER.match("sh runnable maybe")
    assert Block("x.md", 1, "sh runnable exit=1 on=passive", "").node == "passive"
    assert Block("x.md", 1, "sh runnable exit=1 on=passive", "").expected_exit == 1
    sample = Block("x.md", 1, "sh runnable", "drkit restore latest \\\n  --dry-run\nls\n")
    assert sample.drkit_commands() == [["restore", "latest"]]
    known = {("restore",), ("storage",), ("storage", "verify")}
    assert _exists(["restore", "latest"], known) and _exists(["storage", "verify"], known)
    assert not _exists(["storage", "rotate"], known) and not _exists(["keys", "rotate"], known)


# -- live: run the runnable blocks, runbook by runbook, against one sample node ------------


@pytest.fixture(scope="module")
def environment(local_s3, tmp_path_factory):
    secret_dir = tmp_path_factory.mktemp("runbook-secret")
    with fresh_node(local_s3, secret_dir, "sftp-1") as node:
        repository = node.repository
        node.backup()
        config_file = node.root / "etc/ssh/sshd_config"
        config_file.write_text(config_file.read_text() + "MaxSessions 5\n")
        node.backup()
        venv_bin = Path(sys.executable).parent
        restic_dir = restic_engine.find_restic(None).parent
        env = {
            **os.environ,
            "PATH": f"{venv_bin}:{restic_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "DRKIT_CONFIG": str(node.config),
            "S3_ENDPOINT": repository.s3_endpoint,
            "BUCKET": repository.bucket,
            "PREFIX": repository.prefix,
            "NODE": node.name,
            "PASSWORD_FILE": str(repository.password_file),
            "SMOKE_USER": SMOKE_USER,
            "REPORT_DIR": str(node.workspace / "reports"),
            "COLUMNS": "160",
        }
        yield node, env


def _standby_pair(node: Node) -> tuple[Node, dict[str, Path]]:
    """Add a passive node sftp-2 following sftp-1 (synced once, as its daemon would have), and
    the configuration sftp-1 gets when it comes back as a passive node of sftp-2."""
    passive = Node(make_workspace(), node.repository, node="sftp-2")
    data = yaml.safe_load(passive.config.read_text())
    data["standby"] = {"source": node.name, "local": ["/etc/ssh/sshd_config.d/10-hardening.conf"]}
    # the active node's own trust list: after `keys rotate` (an earlier runbook) it signs with
    # a new key, and still lists the retired one
    active_keys = yaml.safe_load(node.config.read_text())["trusted_keys"]
    data["trusted_keys"] = list(dict.fromkeys([*data.get("trusted_keys", []), *active_keys]))
    passive.config.write_text(yaml.safe_dump(data))
    code, synced = passive.run("standby", "sync")
    assert code == 0, synced
    returning = node.workspace / "returning.yaml"
    data = yaml.safe_load(node.config.read_text())
    data["standby"] = {"source": "sftp-2", "local": ["/etc/ssh/sshd_config.d/10-hardening.conf"]}
    data["trusted_keys"] = [*data.get("trusted_keys", []), passive.signer]
    returning.write_text(yaml.safe_dump(data))
    returning.chmod(0o600)
    return passive, {"passive": passive.config, "returning": returning}


@pytest.mark.integration
@pytest.mark.parametrize("path", PROCEDURES, ids=lambda path: path.stem)
def test_runbook_commands_run(path: Path, environment):
    node, base_env = environment
    target = node.workspace / f"target-{path.stem}"
    # the signer on the operator's record is the newest snapshot's: a runbook run before this
    # one may have rotated the signing key
    code, shown = node.run("show", "latest")
    assert code == 0, shown
    env = {**base_env, "TARGET": str(target), "SIGNER": shown["signer"]}
    found = blocks(path)
    configs = {"active": node.config}
    passive = None
    if any(block.runnable and block.node != "active" for block in found):
        passive, more = _standby_pair(node)
        configs.update(more)
    try:
        _run_blocks(found, node, {**env}, configs)
    finally:
        if passive is not None:
            passive.remove()


def _run_blocks(found: list[Block], node: Node, env: dict, configs: dict[str, Path]) -> None:
    for block in found:
        if not block.runnable:
            continue
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block.body],
            env={**env, "DRKIT_CONFIG": str(configs[block.node])},
            cwd=node.workspace,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == block.expected_exit, (
            f"{block.runbook} line {block.line}: exit {done.returncode}, expected "
            f"{block.expected_exit}\n--- block\n{block.body}--- stdout\n{done.stdout[-3000:]}"
            f"--- stderr\n{done.stderr[-3000:]}"
        )
