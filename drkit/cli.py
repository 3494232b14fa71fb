"""drkit's command line: parse, load config, call one action, render its result, exit.

Exit codes are documented in the README and drkit.errors.EXIT_CODES.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
import typer.core

from drkit import errors, output, timing

# Click's exceptions, from wherever this Typer takes Click (recent releases vendor it).
click_errors = sys.modules[typer.BadParameter.__module__]

EPILOG = "Exit status:\n\n" + "\n".join(
    f"{code}  {meaning}" for code, meaning in errors.EXIT_CODES.items()
)
_TYPE_NAMES = {"str": "TEXT", "path": "PATH", "int": "INTEGER", "float": "NUMBER"}


def _plain_metavars(params: list, ctx) -> list:
    """Give options a metavar people read (TEXT, PATH, INTEGER; none for a flag) instead of
    Typer's Python placeholders (<bool>, <list[str]>)."""
    for param in params:
        if param.param_type_name != "option" or param.metavar is not None:
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

    def get_params(self, ctx):
        return _plain_metavars(super().get_params(ctx), ctx)


class DrkitGroup(typer.core.TyperGroup):
    """drkit and its command groups: plain metavars in help, and a usage error (unknown command
    or option, missing argument, bad value) is one `drkit: error:` line and the usage hint, or
    with --json the error document on stdout; exit 2."""

    def get_params(self, ctx):
        return _plain_metavars(super().get_params(ctx), ctx)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        argv = sys.argv[1:] if args is None else list(args)
        options = list(itertools.takewhile(lambda arg: arg.startswith("-"), argv))
        if "--version" in options and "--json" in options:
            sys.exit(_version_document())
        try:
            code = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as shown:
            shown.show()
            code = shown.exit_code
        except click_errors.ClickException as error:
            code = _usage_error(error, _json_asked(argv))
        except typer.Abort:
            code = output.fail(errors.Interrupted("interrupted"), _json_asked(argv))
        sys.exit(code if isinstance(code, int) else 0)


def _usage_error(error, as_json: bool) -> int:
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


def _command(group: typer.Typer, name: str | None = None, *, examples: list[str]):
    """Register a function as a command of group, its examples the help's epilog.

    The function's parameters are the command's arguments and options (`as_json` among them)
    and its docstring the help; it calls one action and returns the result, which
    output.run_command renders (or prints as JSON) inside the error guard; the command exits
    with the result's code.
    """

    def register(function):
        @functools.wraps(function)
        def command(**options) -> None:
            code = output.run_command(lambda: function(**options), options["as_json"])
            if timing.enabled():
                timing.print_report()
            raise typer.Exit(code)

        return group.command(name, cls=DrkitCommand, epilog=_examples(*examples))(command)

    return register


def _config(path: Path | None):
    from drkit.config import load_config

    return load_config(path)[0]


def _trust_keys(values: list[str] | None) -> list[str]:
    from drkit.service import context

    return context.trust_keys(values)


def _origin(config_path: Path | None, trust: list[str] | None):
    from drkit.actions.restore import Origin

    return Origin.from_config(_config(config_path), trust)


# --- init and storage -----------------------------------------------------------------------


@_command(
    app,
    examples=[
        "drkit init --config /etc/drkit/drkit.yaml --node sftp-1 --server auto --s3-endpoint "
        "https://s3.example.net --bucket dr-backups --password-file /etc/drkit/repo.pass "
        "--smoke-user drill --include tls=/etc/ssl/private/transfer.key"
    ],
)
def init(
    ctx: typer.Context,
    node: Annotated[str, typer.Option(help="this node's name, e.g. sftp-1")],
    s3_endpoint: Annotated[str, typer.Option(help="S3 endpoint URL")],
    bucket: Annotated[str, typer.Option(help="bucket name")],
    password_file: Annotated[Path, typer.Option(help="repository password file (created 0600)")],
    prefix: Annotated[str | None, typer.Option(help="repository folder (default: node)")] = None,
    server: Annotated[
        list[str] | None,
        typer.Option(
            help="server profile, repeatable: auto, openssh, proftpd, vsftpd, pureftpd, sftpplus, "
            "generic"
        ),
    ] = None,
    group: Annotated[
        str | None, typer.Option(help="pool sharing this repository (tags group:NAME)")
    ] = None,
    root: Annotated[Path, typer.Option(help="where the node's filesystem is")] = Path("/"),
    region: Annotated[str, typer.Option(help="S3 region")] = "us-east-1",
    ca_bundle: Annotated[Path | None, typer.Option(help="CA bundle for the endpoint")] = None,
    smoke_user: Annotated[str | None, typer.Option(help="account for smoke logins")] = None,
    include: Annotated[
        list[str] | None, typer.Option(help="extra files: CATEGORY=GLOB (repeatable)")
    ] = None,
    profile_option: Annotated[
        list[str] | None,
        typer.Option(help="a profile setting: SERVER.KEY=VALUE, e.g. openssh.config=/etc/x"),
    ] = None,
    signing_key: Annotated[Path | None, typer.Option(help="default: beside the config")] = None,
    state_dir: Annotated[Path, typer.Option(help="drkit's local state")] = Path("/var/lib/drkit"),
    lock_days: Annotated[int, typer.Option(help="object lock default retention days")] = 30,
    lock_mode: Annotated[str, typer.Option(help="GOVERNANCE or COMPLIANCE")] = "GOVERNANCE",
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="apply the settings named here to an existing drkit.yaml, keeping the rest",
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Write drkit.yaml, a repository password and signing key; prepare bucket and repository.

    An existing drkit.yaml is never replaced: the same settings change nothing, other ones are
    refused naming each difference (exit 2) unless --update."""
    from drkit.actions import init as init_action

    renamed = {"server": "servers", "include": "includes", "profile_option": "profile_options"}
    named = {
        renamed.get(name, name)
        for name in ctx.params
        if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"
    }

    options = init_action.InitOptions(
        node=node,
        s3_endpoint=s3_endpoint,
        bucket=bucket,
        password_file=password_file,
        prefix=prefix,
        servers=server or ["openssh"],
        group=group,
        root=root,
        region=region,
        ca_bundle=ca_bundle,
        smoke_user=smoke_user,
        includes=include or [],
        profile_options=profile_option or [],
        signing_key=signing_key,
        state_dir=state_dir,
        lock_days=lock_days,
        lock_mode=lock_mode,
        config=config,
        update=update,
        named=named,
    )
    return init_action.init(options)


@_command(storage_app, "init", examples=["drkit storage init --config /etc/drkit/drkit.yaml"])
def storage_init(
    create: Annotated[
        bool, typer.Option("--create", help="make the bucket when it does not exist yet")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Create or adopt the bucket: versioning on, object lock with default retention.

    A bucket that does not exist is made only with --create (a misspelled repository.bucket
    is named, with the buckets the credentials see, instead of becoming a new bucket)."""
    from drkit.actions import storage

    return storage.init(_config(config), create=create)


@_command(storage_app, "verify", examples=["drkit storage verify", "drkit storage verify --json"])
def storage_verify(config: ConfigOption = None, as_json: JsonOption = False):
    """Report the bucket's posture; exit 1 when it drifted from the config."""
    from drkit.actions import storage

    return storage.verify(_config(config))


# --- backup and inspection ------------------------------------------------------------------


@_command(app, examples=["drkit backup", "drkit backup --json --config /etc/drkit/drkit.yaml"])
def backup(wait: WaitOption = None, config: ConfigOption = None, as_json: JsonOption = False):
    """Take one snapshot of the node now."""
    from drkit.actions import backup as backup_action
    from drkit.actions import status as status_action

    loaded = _config(config)
    with output.Progress("backup", quiet=as_json) as shown:
        return status_action.recorded(
            loaded,
            "backup",
            lambda: backup_action.run(
                loaded, on_progress=shown.status, on_step=shown.step, lock_wait=wait
            ),
        )


@_command(app, examples=["drkit snapshots", "drkit snapshots --all --json"])
def snapshots(
    config: ConfigOption = None,
    all_nodes: Annotated[bool, typer.Option("--all", help="every node in the repository")] = False,
    from_copy: FromOption = None,
    as_json: JsonOption = False,
):
    """List the node's snapshots, oldest first."""
    from drkit.actions import snapshots as snapshots_action
    from drkit.service.opening import Origin

    origin = Origin.from_config(_config(config).from_copy(from_copy))
    return snapshots_action.list_snapshots(origin, all_nodes)


@_command(app, examples=["drkit show latest", "drkit show latest~1 --json"])
def show(
    snapshot: Annotated[str, typer.Argument(help="id, latest or latest~N")] = "latest",
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Show a snapshot's manifest: files by category, key fingerprints, certificate expiry."""
    from drkit.actions import snapshots as snapshots_action

    return snapshots_action.show(_origin(config, None), snapshot)


# --- restore and check ----------------------------------------------------------------------


@_command(
    app,
    examples=[
        "drkit restore latest --target /srv/rebuild --dry-run",
        "drkit restore latest --target /srv/rebuild --smoke",
        "drkit restore --at 2026-01-31T12:00 --target /srv/rebuild",
        "drkit restore latest --s3-endpoint https://s3.example.net --bucket dr-backups --prefix "
        "sftp-1 --password-file /root/repo.pass --node sftp-1 --trust-key SHA256:... --target / "
        "--force",
    ],
)
def restore(
    snapshot: Annotated[str, typer.Argument(help="id, latest or latest~N")] = "latest",
    target: Annotated[Path | None, typer.Option(help="where to rebuild (default: root)")] = None,
    dry_run: DryRunOption = False,
    force: Annotated[
        bool, typer.Option("--force", help="replace or remove existing files")
    ] = False,
    smoke: Annotated[bool, typer.Option("--smoke", help="start the server and log in")] = False,
    at: Annotated[str | None, typer.Option(help="newest snapshot at or before (UTC)")] = None,
    trust_key: TrustOption = None,
    trust_snapshot_signer: Annotated[
        bool,
        typer.Option(
            "--trust-snapshot-signer",
            help="bare metal: trust the signer the snapshot's config lists",
        ),
    ] = False,
    s3_endpoint: Annotated[str | None, typer.Option(help="bare metal: S3 endpoint")] = None,
    bucket: Annotated[str | None, typer.Option(help="bare metal: bucket")] = None,
    prefix: Annotated[str | None, typer.Option(help="bare metal: repository folder")] = None,
    region: Annotated[str, typer.Option(help="bare metal: region")] = "us-east-1",
    ca_bundle: Annotated[Path | None, typer.Option(help="bare metal: CA bundle")] = None,
    password_file: Annotated[Path | None, typer.Option(help="bare metal: password file")] = None,
    node: Annotated[str | None, typer.Option(help="bare metal: node to restore")] = None,
    smoke_user: Annotated[str | None, typer.Option(help="account for the smoke login")] = None,
    allow_rollback: RollbackOption = False,
    from_copy: FromOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Rebuild the node from a verified snapshot, then check it."""
    from drkit.actions import restore as restore_action
    from drkit.service import context

    if s3_endpoint:
        origin = restore_action.Origin.bare_metal(
            node=node,
            s3_endpoint=s3_endpoint,
            bucket=bucket,
            password_file=password_file,
            prefix=prefix,
            region=region,
            ca_bundle=ca_bundle,
            extra_trust=trust_key,
            trust_snapshot_signer=trust_snapshot_signer,
            smoke_user=smoke_user,
        )
    else:
        loaded = _config(config).from_copy(from_copy)
        origin = restore_action.Origin.from_config(
            loaded, trust_key, trust_snapshot_signer=trust_snapshot_signer, smoke_user=smoke_user
        )
    with output.steps(as_json, "restore") as on_step:
        return restore_action.restore(
            origin,
            snapshot=snapshot,
            target=target or origin.root,
            at=context.parse_at(at) if at else None,
            dry_run=dry_run,
            force=force,
            smoke=smoke,
            on_step=on_step,
            allow_rollback=allow_rollback,
        )


@_command(app, examples=["drkit check --target / --smoke"])
def check(
    target: Annotated[Path | None, typer.Option(help="node root to check (default: root)")] = None,
    snapshot: Annotated[str, typer.Option(help="snapshot to compare with")] = "latest",
    smoke: Annotated[bool, typer.Option("--smoke", help="start the server and log in")] = False,
    trust_key: TrustOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Check a node in place against its latest snapshot; restore nothing."""
    from drkit.actions import restore as restore_action

    origin = restore_action.Origin.from_config(_config(config), trust_key)
    return restore_action.check(
        origin, target=target or origin.root, snapshot=snapshot, smoke=smoke
    )


# --- scheduled operation: daemon, prune, verify, status ------------------------------------


@_command(app, examples=["drkit daemon --metrics 127.0.0.1:9109"])
def daemon(
    metrics: Annotated[
        str | None, typer.Option(help="serve /metrics and /healthz on HOST:PORT")
    ] = None,
    metrics_textfile: Annotated[
        Path | None, typer.Option(help="also write metrics to this textfile-collector file")
    ] = None,
    stop_timeout: Annotated[
        float, typer.Option(help="seconds a running job may take to finish on SIGTERM")
    ] = 60.0,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Run the scheduled backup, prune, verify and drill jobs until SIGTERM; exit 0 once stopped."""
    from drkit import daemon as daemon_module

    loaded = _config(config)
    daemon_module.setup_logging(loaded.node, verbose=int(logging_verbose()))
    return daemon_module.Daemon(
        loaded,
        metrics_address=metrics,
        textfile=metrics_textfile,
        stop_timeout=stop_timeout,
    ).run()


def logging_verbose() -> bool:
    """Return True when -v asked for debug lines (the daemon logs info by default)."""
    import logging

    return logging.getLogger().level <= logging.DEBUG


@_command(app, examples=["drkit prune --dry-run", "drkit prune"])
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would go, remove nothing")
    ] = False,
    wait: WaitOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Apply the retention rules to this node's snapshots and free unused data."""
    from drkit.actions import prune as prune_action
    from drkit.actions import status as status_action

    loaded = _config(config)
    return status_action.recorded(
        loaded,
        "prune",
        lambda: prune_action.run(loaded, dry_run=dry_run, lock_wait=wait),
        dry_run=dry_run,
    )


@_command(app, examples=["drkit verify --read-data-subset 5% --spot 20"])
def verify(
    read_data_subset: Annotated[
        str | None, typer.Option(help="also read this share of the data: 5%, 1/10, 500M")
    ] = None,
    spot: Annotated[int, typer.Option(help="files of the latest snapshot to spot-check")] = 20,
    trust_key: TrustOption = None,
    wait: WaitOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Check the repository, every snapshot's signature, and a sample against the live node."""
    from drkit.actions import status as status_action
    from drkit.actions import verify as verify_action

    loaded = _config(config)
    trusted = _trust_keys(trust_key)
    return status_action.recorded(
        loaded,
        "verify",
        lambda: verify_action.run(
            loaded, read_data_subset=read_data_subset, spot=spot, trust=trusted, lock_wait=wait
        ),
    )


@_command(app, examples=["drkit status", "drkit status --fleet --json"])
def status(
    fleet: Annotated[bool, typer.Option("--fleet", help="every node reporting to the bucket")] = (
        False
    ),
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Show whether this node (or every node) is within its RPO; exit 1 when one is not."""
    from drkit.actions import status as status_action

    return status_action.run(_config(config), fleet=fleet)


# --- drills, reports and diffs --------------------------------------------------------------


@_command(app, examples=["drkit drill", "drkit drill --snapshot random --json"])
def drill(
    snapshot: Annotated[
        str, typer.Option(help="latest, latest~N, an id, or random (within retention)")
    ] = "latest",
    report_dir: Annotated[
        Path | None, typer.Option(help="where to write reports (default: state_dir/reports/NODE)")
    ] = None,
    trust_key: TrustOption = None,
    allow_rollback: RollbackOption = False,
    from_copy: FromOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Rebuild the node in a sandbox, log in for real, measure RTO and RPO; write reports.

    Exit 1 when a check fails or an objective is missed.
    """
    from drkit.actions import drill as drill_action
    from drkit.actions import status as status_action

    loaded = _config(config)
    trusted = _trust_keys(trust_key)
    with output.steps(as_json, "drill") as on_step:
        return status_action.recorded(
            loaded,
            "drill",
            lambda: drill_action.run(
                loaded.from_copy(from_copy),
                snapshot=snapshot,
                report_dir=report_dir,
                trust=trusted,
                on_step=on_step,
                allow_rollback=allow_rollback,
            ),
        )


@_command(app, examples=["drkit report --open", "drkit report --all --json"])
def report(
    open_page: Annotated[
        bool, typer.Option("--open", help="open the latest drill's HTML page in a browser")
    ] = False,
    all_nodes: Annotated[bool, typer.Option("--all", help="every node's drills")] = False,
    fleet: Annotated[
        bool,
        typer.Option("--fleet", help="one page for every node in the bucket, breached first"),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="where --fleet writes its page (default: state_dir/reports/fleet.html)"),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """List the drill reports in the bucket, oldest first; --open shows the latest page.

    --fleet writes one self-contained HTML page (and its JSON beside it) from the bucket
    alone; exit 1 when a node is breached.
    """
    from drkit.actions import report as report_action

    if fleet:
        return report_action.fleet(_config(config), out=out, open_page=open_page)
    return report_action.run(_config(config), all_nodes=all_nodes, open_page=open_page)


@_command(app, examples=["drkit diff latest~1 latest"])
def diff(
    old: Annotated[str, typer.Argument(help="id, latest or latest~N")],
    new: Annotated[str, typer.Argument(help="id, latest or latest~N")] = "latest",
    trust_key: TrustOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Show what changed between two snapshots: files by category, config diffs, keys, certs."""
    from drkit.actions import diff as diff_action

    return diff_action.run(_origin(config, trust_key), old, new)


@_command(
    app,
    examples=[
        "drkit history",
        "drkit history --ack 1a2b3c4d-5e6f7a8b --why 'partner key change, ticket 4711'",
        "drkit history --last-clean 1a2b3c4d-5e6f7a8b --json",
    ],
)
def history(
    since: Annotated[str | None, typer.Option(help="only events from this time on")] = None,
    ack: Annotated[
        list[str] | None, typer.Option("--ack", help="event id to acknowledge as planned")
    ] = None,
    why: Annotated[str | None, typer.Option(help="the reason, signed with --ack")] = None,
    last_clean: Annotated[
        str | None, typer.Option(help="name the newest snapshot before this event")
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """List the node's security events (keys added, host keys replaced, logins weakened, ...)."""
    from drkit.actions import history as history_action
    from drkit.service import context

    return history_action.run(
        _config(config),
        since=context.parse_at(since) if since else None,
        ack=ack,
        why=why,
        last_clean=last_clean,
    )


@_command(app, examples=["drkit copy", "drkit copy --name offsite --json"])
def copy(
    name: Annotated[str | None, typer.Option(help="only this copy (repository.copies)")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Copy the node's snapshots and signed catalog to its further repositories (3-2-1)."""
    from drkit.actions import copy as copy_action
    from drkit.actions import status as status_action

    loaded = _config(config)
    return status_action.recorded(loaded, "copy", lambda: copy_action.run(loaded, name))


# --- what clients see: identity proof and failover rehearsal ---------------------------------

identity_app = typer.Typer(cls=DrkitGroup, help="Prove what clients see at each address.")
app.add_typer(identity_app, name="identity")
failover_app = typer.Typer(cls=DrkitGroup, help="Rehearse a failover as a pinned client sees it.")
app.add_typer(failover_app, name="failover")
ProtocolOption = Annotated[
    str | None, typer.Option(help="sftp, ftps or ftp, for addresses given as HOST:PORT")
]


@_command(
    identity_app,
    "check",
    examples=[
        "drkit identity check --address sftp://10.0.0.11:22 --address sftp://10.0.0.12:22 "
        "--via sftp://sftp.example.net:22"
    ],
)
def identity_check(
    address: Annotated[
        list[str] | None, typer.Option("--address", help="a node's own address")
    ] = None,
    via: Annotated[
        str | None, typer.Option(help="the shared address clients use: also log in there")
    ] = None,
    protocol: ProtocolOption = None,
    node: Annotated[str | None, typer.Option(help="the node whose snapshot is the truth")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Compare the host keys and certificates each address serves with the signed snapshot."""
    from drkit.actions import identity

    return identity.check(_config(config), address or [], protocol=protocol, via=via, node=node)


@_command(
    failover_app,
    "rehearse",
    examples=[
        "drkit failover rehearse --via sftp://sftp.example.net:22 --stop-command "
        "'ssh active systemctl stop ssh' --start-command 'ssh active systemctl start ssh' --yes"
    ],
)
def failover_rehearse(
    via: Annotated[str, typer.Option(help="the shared address clients use")],
    stop_command: Annotated[str, typer.Option(help="stops (or drains) the active node")],
    start_command: Annotated[str, typer.Option(help="starts the active node again")],
    yes: Annotated[bool, typer.Option("--yes", help="consent to stopping the active")] = False,
    protocol: ProtocolOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Stop the active, time a pinned login and file round trip through --via, start it again."""
    from drkit.actions import identity

    return identity.rehearse(
        _config(config),
        via,
        stop_command=stop_command,
        start_command=start_command,
        protocol=protocol,
        yes=yes,
    )


# --- server discovery, standby (active-passive) and fleet drift (active-active) -----------

standby_app = typer.Typer(cls=DrkitGroup, help="Active-passive: follow an active node's snapshots.")
app.add_typer(standby_app, name="standby")
fleet_app = typer.Typer(cls=DrkitGroup, help="Active-active: compare the nodes of a group.")
app.add_typer(fleet_app, name="fleet")


@_command(app, examples=["drkit discover --root /", "drkit discover --root /mnt/old-node --json"])
def discover(
    root: Annotated[Path, typer.Option(help="where the node's filesystem is")] = Path("/"),
    smoke_user: Annotated[str | None, typer.Option(help="account for smoke logins")] = None,
    as_json: JsonOption = False,
):
    """Find the transfer servers on a root, the files each would back up, and a config."""
    from drkit.actions import discover as discover_action

    return discover_action.run(root, smoke_user)


@_command(standby_app, "sync", examples=["drkit standby sync --dry-run", "drkit standby sync"])
def standby_sync(
    dry_run: DryRunOption = False,
    trust_key: TrustOption = None,
    wait: WaitOption = None,
    allow_rollback: RollbackOption = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Apply the source node's newest snapshot here, keeping standby.local; roll back on a
    failed check."""
    from drkit.actions import standby
    from drkit.actions import status as status_action

    loaded = _config(config)
    trusted = _trust_keys(trust_key)
    return status_action.recorded(
        loaded,
        "standby",
        lambda: standby.sync(
            loaded,
            trust_keys=trusted,
            dry_run=dry_run,
            lock_wait=wait,
            allow_rollback=allow_rollback,
        ),
        dry_run=dry_run,
    )


@_command(standby_app, "status", examples=["drkit standby status --json"])
def standby_status(config: ConfigOption = None, as_json: JsonOption = False):
    """Show the source node, the snapshot applied, when, and the lag; exit 1 beyond the RPO."""
    from drkit.actions import standby

    return standby.status(_config(config))


@_command(standby_app, "promote", examples=["drkit standby promote"])
def standby_promote(config: ConfigOption = None, as_json: JsonOption = False):
    """Stop following the source: this node now backs itself up."""
    from drkit.actions import standby
    from drkit.config import load_config

    loaded, path = load_config(config)
    return standby.promote(loaded, path)


@_command(fleet_app, "drift", examples=["drkit fleet drift --group sftp-prod"])
def fleet_drift(
    group: Annotated[str | None, typer.Option(help="group to compare (default: config)")] = None,
    trust_key: TrustOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Compare the newest snapshot of every node of the group; exit 1 on drift."""
    from drkit.actions import fleet

    return fleet.drift(_config(config), group=group, trust_keys=_trust_keys(trust_key))


# --- key escrow, recovery and rotation ------------------------------------------------------

keys_app = typer.Typer(
    cls=DrkitGroup, help="Escrow, recover and rotate the repository password and keys."
)
app.add_typer(keys_app, name="keys")


@_command(
    keys_app,
    "escrow",
    examples=[
        "drkit keys escrow --recipients alice.pub --recipients bob.pub --recipients carol.pub "
        "--threshold 2 --out /root/escrow"
    ],
)
def keys_escrow(
    recipients: Annotated[
        list[Path], typer.Option("--recipients", help="one holder's age recipient file (repeat)")
    ],
    threshold: Annotated[int, typer.Option(help="shares needed to recover (K of N)")],
    out: Annotated[Path, typer.Option(help="directory for the encrypted shares")] = Path("."),
    config: ConfigOption = None,
    as_json: JsonOption = False,
):
    """Split the repository password into SLIP-39 shares, one per holder, each age-encrypted."""
    from drkit.actions import keys as keys_action

    return keys_action.escrow_password(_config(config), recipients, threshold, out)


@_command(keys_app, "holder", examples=["drkit keys holder --identity ~/drkit-holder.key"])
def keys_holder(
    identity: Annotated[Path, typer.Option(help="where to write the new age identity (0600)")],
    as_json: JsonOption = False,
):
    """Create an age key pair for an escrow holder; print the recipient to escrow to."""
    from drkit.actions import keys as keys_action

    return keys_action.new_holder(identity)


@_command(
    keys_app,
    "reveal",
    examples=["drkit keys reveal --share share-alice.age --identity ~/drkit-holder.key"],
)
def keys_reveal(
    share: Annotated[Path, typer.Option(help="the holder's .age share")],
    identity: Annotated[list[Path], typer.Option(help="the holder's age identity file")],
    as_json: JsonOption = False,
):
    """Decrypt a holder's share and print its words, to be written on paper."""
    from drkit.actions import keys as keys_action

    return keys_action.reveal(share, identity)


@_command(
    keys_app,
    "recover",
    examples=[
        "drkit keys recover --out /etc/drkit/repo.pass --share share-alice.age --share "
        "share-bob.age --identity alice.key --identity bob.key",
        "drkit keys recover --out /etc/drkit/repo.pass   (then type the words of K shares, one "
        "share per line)",
    ],
)
def keys_recover(
    out: Annotated[Path, typer.Option(help="new password file to write (0600, must not exist)")],
    share: Annotated[
        list[Path] | None, typer.Option(help="a share: .age file or words copied from paper")
    ] = None,
    identity: Annotated[
        list[Path] | None, typer.Option(help="age identity file for .age shares (repeat)")
    ] = None,
    as_json: JsonOption = False,
):
    """Rebuild the repository password from K shares (files, or typed one per line on stdin)."""
    import sys

    from drkit.actions import keys as keys_action

    typed = [] if share else [line for line in sys.stdin.read().splitlines() if line.strip()]
    return keys_action.recover(share or [], identity or [], out, typed)


@_command(keys_app, "rotate", examples=["drkit keys rotate"])
def keys_rotate(config: ConfigOption = None, as_json: JsonOption = False):
    """Add a new restic key and signing key; retire the old ones without losing a snapshot."""
    from drkit.actions import keys as keys_action
    from drkit.config import load_config

    loaded, path = load_config(config)
    return keys_action.rotate(loaded, path)


def main() -> None:
    """Entry point of the drkit command."""
    app()
