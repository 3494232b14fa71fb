"""Rendering: exactly one JSON document with --json, rich tables for humans; errors as one line."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from drkit import errors

log = logging.getLogger("drkit")


def setup_logging(verbose: int) -> None:
    """Send drkit's log lines to stderr: warnings by default, -v info, -vv debug."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="drkit: %(message)s", stream=sys.stderr)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


def error_document(error: errors.DrkitError) -> dict:
    """Return the JSON shape of a failure to do the job."""
    return {
        "ok": False,
        "error": {"code": error.exit_code, "kind": error.kind, "message": error.message},
    }


def print_json(document: Any) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def run_command(
    job: Callable[[], Any],
    as_json: bool,
    render: Callable[[Any], None],
) -> int:
    """Run one action and render its result; return the exit code.

    A DrkitError becomes one line on stderr (or the JSON error document) and its exit code; a
    result whose `ok` is false exits 1. Nothing escapes as a traceback.
    """
    try:
        result = job()
    except errors.DrkitError as error:
        return _fail(error, as_json)
    except KeyboardInterrupt:
        return _fail(errors.Interrupted("interrupted"), as_json)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        log.debug("unexpected error", exc_info=True)
        return _fail(errors.ResticFailed(f"unexpected {type(exc).__name__}: {exc}"), as_json)
    if as_json:
        print_json(result)
    else:
        render(result)
    ok = result.get("ok", True) if isinstance(result, dict) else True
    return 0 if ok else 1


def _fail(error: errors.DrkitError, as_json: bool) -> int:
    if as_json:
        print_json(error_document(error))
    else:
        sys.stderr.write(f"drkit: error: {error.message}\n")
    return error.exit_code


def console():
    """Return a rich console on stdout."""
    from rich.console import Console

    wide = None if sys.stdout.isatty() else 160  # logs and pipes keep whole fingerprints
    return Console(highlight=False, width=wide)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a rich table."""
    from rich.table import Table

    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    console().print(grid)


STATUS_STYLE = {
    "pass": "[green]pass[/green]",
    "warn": "[yellow]warn[/yellow]",
    "fail": "[red]FAIL[/red]",
}


def render_checks(result: dict) -> None:
    """Print a restore/check document: one line per check, then the verdict."""
    out = console()
    for check in result.get("checks", []):
        out.print(f"{STATUS_STYLE[check['status']]}  {check['name']}: {check['detail']}")
    verdict = "[green]OK[/green]" if result["ok"] else "[red]FAILED[/red]"
    out.print(f"{verdict}  snapshot {result['snapshot_id'][:8]} of node {result.get('node')}")


def human_size(size: int | None) -> str:
    """Return a byte count as 1.2 MiB."""
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(size)


@contextlib.contextmanager
def steps(as_json: bool, title: str) -> Iterator[Callable[[str], None] | None]:
    """Yield the on_step callback of a long command: a live step list with a spinner on a
    terminal, plain `drkit: TITLE: step` lines on stderr otherwise, nothing at all with --json
    (stdout then holds only the JSON document)."""
    if as_json:
        yield None
        return
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    if not err.is_terminal:
        yield lambda text: (sys.stderr.write(f"drkit: {title}: {text}\n"), sys.stderr.flush())
        return
    current: list[str] = []
    with err.status(f"{title}…") as spinner:

        def on_step(text: str) -> None:
            if current:
                err.print(f"[green]✓[/green] {current[-1]}")
            current.append(text)
            spinner.update(f"{title}: {text}")

        yield on_step
        if current:
            err.print(f"[green]✓[/green] {current[-1]}")
