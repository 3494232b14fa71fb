"""The command line as people meet it: usage errors (also with --json), configuration errors
that name every field, --version, shell completion, and help that teaches by example."""

from __future__ import annotations

import io
import json
from importlib import metadata

import pytest
import typer
import yaml
from rich.console import Console
from typer.testing import CliRunner

from drkit import output
from drkit.cli import app
from drkit.engines.resticjson import BackupStatus

USAGE_MISTAKES = {
    "misspelled command": ["snapshotz"],
    "misspelled subcommand": ["storage", "verfy"],
    "unknown option": ["snapshots", "--bogus"],
    "missing argument": ["diff"],
    "bad value": ["verify", "--spot", "many"],
    "missing required option": ["keys", "holder"],
}


def _invoke(args: list[str], **extra):
    return CliRunner().invoke(app, args, prog_name="drkit", **extra)


@pytest.mark.parametrize("args", USAGE_MISTAKES.values(), ids=USAGE_MISTAKES.keys())
def test_a_usage_error_with_json_is_the_error_document_on_stdout(args):
    result = _invoke([*args, "--json"])
    assert result.exit_code == 2, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert document["error"]["code"] == 2 and document["error"]["kind"] == "usage"
    assert "\n" not in document["error"]["message"] and document["error"]["message"]
    assert "╭" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("args", USAGE_MISTAKES.values(), ids=USAGE_MISTAKES.keys())
def test_a_usage_error_without_json_is_one_line_and_the_usage_hint(args):
    result = _invoke(args)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("drkit: error: ")]
    assert len(errors) == 1, result.stderr
    assert "Usage: drkit" in result.stderr and "--help' for help." in result.stderr
    assert "╭" not in result.stderr and "Traceback" not in result.stderr


def test_a_misspelled_command_suggests_the_right_one():
    result = _invoke(["snapshotz", "--json"])
    assert "snapshots" in json.loads(result.stdout)["error"]["message"]


def test_version_prints_the_installed_version():
    result = _invoke(["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"drkit {metadata.version('drkit')}\n"


def test_shell_completion_can_be_shown_and_installed():
    assert "--install-completion" in _invoke(["--help"]).stdout
    result = _invoke(["--show-completion", "bash"])
    assert result.exit_code == 0, result.output
    assert "_drkit_completion" in result.stdout and "complete " in result.stdout


def _commands(group, path=()):
    """Yield the argv path of every command of the click tree under group."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


ALL_COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_command_tree_is_walked():
    assert len(ALL_COMMANDS) >= 25
    assert ("storage", "verify") in ALL_COMMANDS and ("keys", "rotate") in ALL_COMMANDS


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example_and_no_python_placeholders(path):
    result = _invoke([*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "<bool>" not in text and "<list[" not in text, text
    examples = text.split("Examples:", 1)
    assert len(examples) == 2, f"{' '.join(path)} --help has no examples"
    assert f"drkit {' '.join(path)}" in examples[1]


# -- configuration errors: every field, one line each, the nearest valid key ---------------

VALID = {
    "node": "sftp-1",
    "servers": ["openssh"],
    "repository": {
        "s3_endpoint": "http://127.0.0.1:9",
        "bucket": "drkit-test",
        "prefix": "sftp-1",
        "password_file": "/etc/drkit/repo.pass",
    },
    "signing_key": "/etc/drkit/signing.key",
}


def _config_file(tmp_path, settings: dict):
    path = tmp_path / "drkit.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_nested_typo_is_named_with_the_key_it_meant(tmp_path):
    settings = json.loads(json.dumps(VALID))
    settings["repository"]["bukcet"] = settings["repository"].pop("bucket")
    path = _config_file(tmp_path, settings)
    result = _invoke(["snapshots", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"drkit: error: {path}: repository.bukcet: unknown setting, did you mean 'bucket'?\n"
    )
    assert "more)" not in result.stderr


def test_every_bad_field_gets_its_own_line_naming_the_file(tmp_path):
    settings = json.loads(json.dumps(VALID))
    settings["retention"] = {"lats": 3}
    settings["schedule"] = {"backup": "61 * * * *"}
    settings["objectives"] = {"rpo": "soon"}
    settings["colour"] = "blue"
    del settings["node"]
    path = _config_file(tmp_path, settings)
    result = _invoke(["backup", "--config", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert all(line.startswith(f"drkit: error: {path}: ") for line in lines), lines
    fields = sorted(line.removeprefix(f"drkit: error: {path}: ").split(":")[0] for line in lines)
    assert fields == ["colour", "node", "objectives.rpo", "retention.lats", "schedule.backup"]
    assert "retention.lats: unknown setting, did you mean 'last'?" in result.stderr
    assert "colour: unknown setting; valid: node, servers" in result.stderr

    document = json.loads(_invoke(["backup", "--config", str(path), "--json"]).stdout)
    assert document["error"]["kind"] == "config" and document["error"]["code"] == 2
    message = document["error"]["message"]
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert all(field in message for field in fields)


# -- progress: a moving bar on a terminal, step lines elsewhere, nothing with --json ------


def _run_steps(shown: output.Progress) -> None:
    with shown:
        shown.step("reading the node's files")
        shown.step("uploading 12 paths with restic")
        for done in (0, 10240, 30720):
            shown.status(
                BackupStatus(message_type="status", total_bytes=40960, bytes_done=done,
                             seconds_remaining=258 - done // 1024)
            )  # fmt: skip
        shown.step("storing the signed chain head")


def test_progress_without_a_terminal_prints_one_line_per_step(capsys):
    _run_steps(output.Progress("backup", console=Console(file=io.StringIO())))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "drkit: backup: reading the node's files",
        "drkit: backup: uploading 12 paths with restic",
        "drkit: backup: storing the signed chain head",
    ]


def test_progress_on_a_terminal_moves_with_restic_and_leaves_only_the_done_steps(capsys):
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=120, color_system=None)
    _run_steps(output.Progress("backup", console=terminal))
    drawn = screen.getvalue()
    assert "75%" in drawn and "30.0/40.0 KiB" in drawn  # the bar followed restic's bytes
    assert "3 min 48 s left" in drawn  # restic's estimate, in drkit's duration format
    assert "0/? bytes" not in drawn and "-:--:--" not in drawn
    final = drawn.rsplit("\x1b[?25h", 1)[0]  # what stays once the live line is cleared
    assert [line.split("✓ ", 1)[1] for line in final.split("\n") if "✓ " in line] == [
        "reading the node's files",
        "uploading 12 paths with restic",
        "storing the signed chain head",
    ]
    assert drawn.endswith("\x1b[2K")  # the live line is erased
    assert capsys.readouterr().err == ""


def test_progress_with_json_shows_nothing(capsys):
    _run_steps(output.Progress("backup", quiet=True))
    assert capsys.readouterr() == ("", "")


# -- against a real node and S3: the step lines of a backup, the same file counts everywhere


@pytest.mark.integration
def test_backup_steps_and_one_file_count_in_backup_snapshots_and_show(local_s3, tmp_path):
    from nodes import Node, fresh_repository, make_workspace

    node = Node(make_workspace(), fresh_repository(local_s3, tmp_path, prefix="counts"))
    try:
        config = ["--config", str(node.config)]
        text = _invoke(["backup", *config])  # CliRunner's stderr is no terminal: step lines
        assert text.exit_code == 0, text.output
        steps = [line for line in text.stderr.splitlines() if line.startswith("drkit: backup: ")]
        assert steps[0] == "drkit: backup: reading the node's files"
        assert "drkit: backup: storing the signed chain head and the manifest objects" in steps
        assert len(steps) >= 4
        assert "(3 of them drkit's own)" in text.stdout and "KiB" in text.stdout

        backup = _invoke(["backup", "--json", *config])
        assert backup.exit_code == 0 and backup.stderr == ""  # --json: nothing but the document
        made = json.loads(backup.stdout)
        listed = json.loads(_invoke(["snapshots", "--json", *config]).stdout)
        shown = json.loads(_invoke(["show", "latest", "--json", *config]).stdout)
        newest = listed["snapshots"][-1]
        assert newest["id"] == made["snapshot_id"] == shown["snapshot_id"]
        node_files = sum(1 for entry in shown["files"] if entry["type"] == "file")
        assert made["file_count"] == newest["file_count"] == shown["file_count"] == node_files + 3
        assert made["size"] == newest["size"]
    finally:
        node.remove()


def test_a_permission_error_is_exit_9_and_says_to_run_as_root(monkeypatch, capsys):
    from drkit import output

    def job():
        raise PermissionError(13, "Permission denied", "/etc/ssh/ssh_host_ed25519_key")

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert output.run_command(job, as_json=False) == 9
    line = capsys.readouterr().err.strip()
    assert line.endswith(
        "/etc/ssh/ssh_host_ed25519_key: permission denied; drkit reads and restores node files "
        "as root: run it as root"
    ), line
    assert "Errno" not in line and "Traceback" not in line
