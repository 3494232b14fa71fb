"""Running one command: exactly one JSON document with --json (else drkit.render for people),
errors as one line, progress steps and log lines on stderr."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pythonjsonlogger.json

from drkit import errors, units
from drkit.engines.resticjson import BackupStatus
from drkit.paths import shown

if TYPE_CHECKING:  # rich is imported when a progress line is shown, not for every command
    from rich import progress
    from rich.console import Console, RenderableType
    from rich.progress import ProgressColumn, Task, TaskID

log = logging.getLogger("drkit")


def setup_logging(verbose: int) -> None:
    """Send drkit's log lines to stderr: warnings by default, -v info, -vv debug."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine("drkit: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("botocore").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)


class _OneLine(logging.Formatter):
    """Log lines stay one line each: names a user chose (newlines, escapes, bytes that are not
    UTF-8) are escaped, never written to the terminal as they are."""

    def format(self, record: logging.LogRecord) -> str:
        return shown(super().format(record))


# The daemon's job of the current thread, named in each JSON log line (None outside a job).
_job = threading.local()


def log_job(name: str | None) -> None:
    """Name the job the current thread runs in the JSON log lines it writes from now on."""
    _job.name = name


class _JobFields(logging.Filter):
    """Give each record the fields a JSON log line carries beside the message."""

    def __init__(self, node: str):
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        created = datetime.fromtimestamp(record.created, UTC)
        record.time = created.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        record.node = self.node
        record.job = getattr(_job, "name", None)
        return True


class JsonLines(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per log line: time, level, node, job, logger, message, and for an error
    logged with its exception, that exception's last line."""

    def __init__(self) -> None:
        super().__init__(
            "%(time)s %(levelname)s %(node)s %(job)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
        )

    def process_log_record(  # JSON edge: pythonjsonlogger's hook, one log line's fields
        self, log_data: dict[str, Any]
    ) -> dict[str, Any]:
        trace = log_data.pop("exc_info", None)
        log_data.pop("stack_info", None)
        log_data["level"] = str(log_data["level"]).lower()
        if trace and log_data["level"] in ("error", "critical"):
            log_data["exception"] = str(trace).splitlines()[-1]
        return log_data


def setup_json_logging(node: str, verbose: int = 0) -> None:
    """Send drkit's log lines to stderr as JSON lines (the daemon): info by default, -v debug."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_JobFields(node))
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("botocore", "urllib3", "boto3", "s3transfer", "filelock", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def error_document(error: errors.DrkitError) -> dict[str, object]:
    """Return the JSON shape of a failure to do the job."""
    return {
        "ok": False,
        "error": {"code": error.exit_code, "kind": error.kind, "message": error.message},
    }


def print_json(document: object) -> None:
    """Print one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def run_command(
    job: Callable[[], object],
    as_json: bool,
    render: Callable[[object], None] | None = None,
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
            from drkit.results import document  # pydantic's models: not built for --help

            print_json(document(result))
        else:
            (render or _default_render())(result)
    except errors.DrkitError as error:
        return fail(error, as_json)
    except KeyboardInterrupt:
        return fail(errors.Interrupted("interrupted"), as_json)
    except PermissionError as exc:  # not a bug: a node's files are root's
        return fail(errors.LocalFilesystemError.permission_denied(exc), as_json)
    except Exception as exc:  # the last line of defence: one line, never a traceback
        log.debug("internal error", exc_info=True)
        return fail(errors.InternalError.from_exception(exc), as_json)
    ok = result.get("ok", True) if isinstance(result, dict) else getattr(result, "ok", True)
    return 0 if ok else 1


def _default_render() -> Callable[[object], None]:
    from drkit.render import render

    return render


def fail(error: errors.DrkitError, as_json: bool) -> int:
    """Report error: its JSON document on stdout, else its line(s) on stderr; return its exit
    code."""
    if as_json:
        print_json(error_document(error))
    else:
        sys.stderr.writelines(f"drkit: error: {shown(line)}\n" for line in error.lines)
    return error.exit_code


def _when_sized(column: ProgressColumn) -> ProgressColumn:
    """Return a rich progress column that shows column only once its task has a total."""
    from rich.progress import ProgressColumn

    class WhenSized(ProgressColumn):
        def render(self, task: Task) -> RenderableType:
            return column.render(task) if task.total else ""

    return WhenSized()


class Progress:
    """What a long command shows on stderr while it runs.

    On a terminal: a live line with a spinner, the current step and, while restic uploads, a
    bar with bytes (IEC) and time left; each finished step stays as a `✓ step` line and the
    live line is cleared at the end. Elsewhere: one `drkit: TITLE: step` line per step. The
    --json document on stdout is never touched (with --json drkit shows nothing: `quiet`).
    """

    def __init__(self, title: str, console: Console | None = None, quiet: bool = False):
        self.title, self.quiet = title, quiet
        self.done: list[str] = []
        self.console = console
        self.live: progress.Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> Progress:
        if self.quiet:
            return self
        from rich import progress
        from rich.console import Console

        self.console = self.console or Console(stderr=True, highlight=False)
        if self.console.is_terminal:
            self.live = progress.Progress(
                progress.SpinnerColumn(),
                progress.TextColumn("{task.description}"),
                progress.BarColumn(),
                *(
                    _when_sized(column)
                    for column in (
                        progress.TaskProgressColumn(),
                        progress.DownloadColumn(binary_units=True),
                        progress.TextColumn("{task.fields[left]}"),  # restic's own estimate
                    )
                ),
                console=self.console,
                transient=True,
            )
            self.live.start()
            self.task = self.live.add_task(f"{self.title}…", total=None, left="")
        return self

    def step(self, text: str) -> None:
        """Show that the step called text has begun (the previous one is done)."""
        if self.quiet:
            return
        if self.live is None:
            sys.stderr.write(f"drkit: {self.title}: {text}\n")
            sys.stderr.flush()
            return
        self._finish_step()
        self.done.append(text)
        if self.task is not None:
            self.live.remove_task(self.task)  # a fresh task: no bytes until restic reports some
        self.task = self.live.add_task(f"{self.title}: {text}", total=None, left="")

    def status(self, message: BackupStatus) -> None:
        """Move the bar by one of restic's --json status lines (bytes_done of total_bytes,
        seconds_remaining)."""
        if self.live is not None and self.task is not None and message.total_bytes:
            left = message.seconds_remaining
            self.live.update(
                self.task,
                total=message.total_bytes,
                completed=message.bytes_done,
                left="" if left is None else f"{units.duration(left)} left",
                refresh=True,  # drawn as restic reports it, not at the next 0.1 s tick
            )

    def _finish_step(self) -> None:
        if self.done and self.live is not None:
            self.live.console.print(f"[green]✓[/green] {self.done[-1]}")

    def __exit__(self, *exc_info: object) -> None:
        if self.live is not None:
            if exc_info[0] is None:
                self._finish_step()
            self.live.stop()


@contextlib.contextmanager
def steps(as_json: bool, title: str) -> Iterator[Callable[[str], None] | None]:
    """Yield the on_step callback of a long command (see Progress); None with --json."""
    with Progress(title, quiet=as_json) as shown:
        yield None if as_json else shown.step
