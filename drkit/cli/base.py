"""drkit's command line: parse, load config, call one action, render its result, exit.

Exit codes are documented in the README and drkit.errors.EXIT_CODES.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
import typer.core

if TYPE_CHECKING:  # Typer's Click, vendored since Typer 0.29
    from typer._click import ClickException, Parameter
    from typer._click import Context as ClickContext

    from drkit.config import Config
    from drkit.results import Result
    from drkit.service.opening import Origin

from drkit import errors, output, timing

# Click's exceptions, from wherever this Typer takes Click (recent releases vendor it).
click_errors = sys.modules[typer.BadParameter.__module__]

EPILOG = "Exit status:\n\n" + "\n".join(
    f"{code}  {meaning}" for code, meaning in errors.EXIT_CODES.items()
)
_TYPE_NAMES = {"str": "TEXT", "path": "PATH", "int": "INTEGER", "float": "NUMBER"}


def _plain_metavars(params: list[Parameter], ctx: ClickContext) -> list[Parameter]:
    """Give options a metavar people read (TEXT, PATH, INTEGER; none for a flag) instead of
    Typer's Python placeholders (<bool>, <list[str]>)."""
    for param in params:
        if not isinstance(param, typer.core.TyperOption) or param.metavar is not None:
            continue
        if param.is_flag or param.count:
            param.metavar = ""
        else:
            label = param.display_type(ctx).strip("<>").removeprefix("list[").removesuffix("]")
            param.metavar = _TYPE_NAMES.get(label, label)
    return params


def _json_asked(argv: list[str]) -> bool:
    """Return True when argv asks for --json (before a `--` that ends the options)."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


class DrkitCommand(typer.core.TyperCommand):
    """A drkit command: its help shows plain metavars."""

    def get_params(self, ctx: ClickContext) -> list[Parameter]:
        return _plain_metavars(super().get_params(ctx), ctx)


class DrkitGroup(typer.core.TyperGroup):
    """drkit and its command groups: plain metavars in help, and a usage error (unknown command
    or option, missing argument, bad value) is one `drkit: error:` line and the usage hint, or
    with --json the error document on stdout; exit 2."""

    def get_params(self, ctx: ClickContext) -> list[Parameter]:
        return _plain_metavars(super().get_params(ctx), ctx)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: object,
    ) -> object:
        if not standalone_mode:
            return super().main(
                args, prog_name, complete_var, standalone_mode, windows_expand_args, **extra
            )
        argv = sys.argv[1:] if args is None else list(args)
        options = list(itertools.takewhile(lambda arg: arg.startswith("-"), argv))
        if "--version" in options and "--json" in options:
            sys.exit(_version_document())
        try:
            code = super().main(argv, prog_name, complete_var, False, windows_expand_args, **extra)
        except click_errors.NoArgsIsHelpError as shown:
            shown.show()
            code = shown.exit_code
        except click_errors.ClickException as error:
            code = _usage_error(error, _json_asked(argv))
        except typer.Abort:
            code = output.fail(errors.Interrupted("interrupted"), _json_asked(argv))
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(error: ClickException, as_json: bool) -> int:
    """Report a Click error as drkit reports every error; return its exit code (2)."""
    usage = errors.UsageError(" ".join(error.format_message().split()))
    code = output.fail(usage, as_json)
    context = getattr(error, "ctx", None)
    if not as_json and context is not None:
        sys.stderr.write(f"{context.get_usage()}\nTry '{context.command_path} --help' for help.\n")
    return code


def _version(value: bool) -> None:
    if value:
        from importlib import metadata

        print(f"drkit {metadata.version('drkit')}")
        raise typer.Exit(0)


def _version_document() -> int:
    """Print `{"ok": true, "version": ...}` (`drkit --version --json`); return 0."""
    from importlib import metadata

    from drkit.results import VersionResult, document

    output.print_json(document(VersionResult(version=metadata.version("drkit"))))
    return 0


def _examples(*lines: str) -> str:
    """Return a command's help epilog: its examples, one per paragraph."""
    return "Examples:\n\n" + "\n\n".join(lines)


app = typer.Typer(
    cls=DrkitGroup,
    help="Disaster-recovery backup and restore for SFTP/FTPS transfer server nodes.",
    epilog=_examples(
        "drkit init --config /etc/drkit/drkit.yaml --node sftp-1 --s3-endpoint "
        "https://s3.example.net --bucket dr-backups --password-file /etc/drkit/repo.pass",
        "drkit backup",
        "drkit --install-completion   (TAB then completes commands and options)",
    )
    + "\n\n"
    + EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
storage_app = typer.Typer(
    cls=DrkitGroup, help="Prepare and check the S3 bucket.", no_args_is_help=True
)
app.add_typer(storage_app, name="storage")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="drkit.yaml (default: $DRKIT_CONFIG, ./drkit.yaml)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print one JSON document on stdout")]
WaitOption = Annotated[
    float | None,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        help="wait this long for the node lock another run holds (default 60; 0: fail at once)",
    ),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="print the plan, touch nothing")]
RollbackOption = Annotated[
    bool,
    typer.Option(
        "--allow-rollback",
        help="use `latest` even when it is older than the newest signed state known",
    ),
]
FromOption = Annotated[
    str | None,
    typer.Option("--from", help="read from this copy (repository.copies) instead of the primary"),
]
TrustOption = Annotated[
    list[str] | None, typer.Option("--trust-key", help="trust this signer fingerprint (repeatable)")
]


@app.callback()
def main_options(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="more log lines")] = 0,
    profile: Annotated[
        bool, typer.Option("--profile", help="print the time per phase on stderr")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print drkit's version"),
    ] = False,
) -> None:
    """Disaster-recovery backup and restore for SFTP/FTPS transfer server nodes."""
    output.setup_logging(verbose)
    if profile:
        os.environ["DRKIT_PROFILE"] = "1"


def drkit_command(
    group: typer.Typer, name: str | None = None, *, examples: list[str]
) -> Callable[[Callable[..., Result]], Callable[..., None]]:
    """Register a function as a command of group, its examples the help's epilog.

    The function's parameters are the command's arguments and options (`as_json` among them)
    and its docstring the help; it calls one action and returns the result, which
    output.run_command renders (or prints as JSON) inside the error guard; the command exits
    with the result's code.
    """

    def register(function: Callable[..., Result]) -> Callable[..., None]:
        @functools.wraps(function)
        def command(**options: object) -> None:
            code = output.run_command(lambda: function(**options), options["as_json"] is True)
            if timing.enabled():
                timing.print_report()
            raise typer.Exit(code)

        registered: Callable[..., None] = group.command(
            name, cls=DrkitCommand, epilog=_examples(*examples)
        )(command)
        return registered

    return register


def config_at(path: Path | None) -> Config:
    """Return the config found at path, else where drkit looks for it."""
    from drkit.config import load_config

    return load_config(path)[0]


def trust_keys(values: list[str] | None) -> list[str]:
    """Return the --trust-key fingerprints, each checked."""
    from drkit.service import context

    return context.trust_keys(values)


def origin_for(config_path: Path | None, trust: list[str] | None) -> Origin:
    """Return where snapshots are read from, as the config at config_path says."""
    from drkit.service.opening import Origin

    return Origin.from_config(config_at(config_path), trust)


def logging_verbose() -> bool:
    """Return True when -v asked for debug lines (the daemon logs info by default)."""
    import logging

    return logging.getLogger().level <= logging.DEBUG
