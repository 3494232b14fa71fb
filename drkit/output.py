"""Running one command: exactly one JSON document with --json (else drkit.render for people),
errors as one line, progress steps and log lines on stderr."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

from drkit import errors, results

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
    render: Callable[[Any], None] | None = None,
) -> int:
    """Run one action and render its result (drkit.render.render unless given); return the
    exit code.

    The action and its rendering run inside one guard: a DrkitError becomes one line on stderr
    (or the JSON error document) and its exit code; any other exception is a drkit bug, reported
    as an InternalError (exit 11) naming the exception and where it happened. A result whose
    `ok` is false exits 1. Nothing escapes as a traceback.
    """
    try:
        result = job()
        if as_json:
            print_json(results.document(result))
        else:
            (render or _default_render())(result)
    except errors.DrkitError as error:
        return fail(error, as_json)
    except KeyboardInterrupt:
        return fail(errors.Interrupted("interrupted"), as_json)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        log.debug("internal error", exc_info=True)
        return fail(errors.InternalError.from_exception(exc), as_json)
    ok = result.get("ok", True) if isinstance(result, dict) else getattr(result, "ok", True)
    return 0 if ok else 1


def _default_render() -> Callable[[Any], None]:
    from drkit.render import render

    return render


def fail(error: errors.DrkitError, as_json: bool) -> int:
    """Report error: its JSON document on stdout, else its line(s) on stderr; return its exit
    code."""
    if as_json:
        print_json(error_document(error))
    else:
        sys.stderr.writelines(f"drkit: error: {line}\n" for line in error.lines)
    return error.exit_code


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
