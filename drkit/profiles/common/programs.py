"""Finding a server's programs on this host, and judging a validate or smoke command by its exit."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from drkit import errors, runner
from drkit.model import (
    Check,
    failed,
    passed,
)


def find_program(name: str, candidates: list[str]) -> str | None:
    """Return the first executable among candidates (absolute paths, or names on PATH), then
    <drkit's installation>/.tools/bin/<name> (where bootstrap unpacks a conflicting package)."""
    for candidate in candidates:
        found = candidate if candidate.startswith("/") else shutil.which(candidate)
        if found and os.access(found, os.X_OK) and Path(found).is_file():
            return found
    package_dir = Path(__file__).resolve().parents[3]
    venv_parent = Path(sys.prefix).resolve().parent
    for base in dict.fromkeys([package_dir, venv_parent]):
        bundled = base / ".tools" / "bin" / name
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return None


def command_output(done: runner.Completed, root: Path) -> str:
    """Return a command's last output on one line (stderr, else stdout), node paths unmapped."""
    output = (done.stderr_tail or done.stdout.strip()).replace("\n", " | ")[-300:]
    if str(root) != "/":
        output = output.replace(str(root).rstrip("/") + "/", "/")
    return output


def command_check(
    name: str, argv: list[str], root: Path, timeout: float, cwd: Path | None = None
) -> Check:
    """Run a validate or smoke command (no shell) and judge it: exit 0 passes; otherwise its
    last output, with node paths as the node names them, says why."""
    try:
        done = runner.run(argv, timeout=timeout, cwd=cwd)
    except errors.DrkitError as exc:
        return failed(name, exc.message)
    program = Path(argv[0]).name
    if done.returncode != 0:
        output = command_output(done, root) or "no output"
        return failed(name, f"{program} exit {done.returncode}: {output}")
    return passed(name, f"{program} exit 0")
