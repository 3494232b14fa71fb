"""Commands of scheduled operation (daemon, prune, verify, status), drills, reports, diffs,
history and copies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drkit import output
from drkit.cli.base import (
    ConfigOption,
    FromOption,
    JsonOption,
    RollbackOption,
    TrustOption,
    WaitOption,
    app,
    config_at,
    drkit_command,
    logging_verbose,
    origin_for,
    trust_keys,
)
from drkit.results import Result

# --- scheduled operation: daemon, prune, verify, status ------------------------------------


@drkit_command(app, examples=["drkit daemon --metrics 127.0.0.1:9109"])
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
) -> Result:
    """Run the scheduled backup, prune, verify and drill jobs until SIGTERM; exit 0 once stopped."""
    from drkit import daemon as daemon_module

    loaded = config_at(config)
    output.setup_json_logging(loaded.node, verbose=int(logging_verbose()))
    return daemon_module.Daemon(
        loaded,
        metrics_address=metrics,
        textfile=metrics_textfile,
        stop_timeout=stop_timeout,
    ).run()


@drkit_command(app, examples=["drkit prune --dry-run", "drkit prune"])
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="show what would go, remove nothing")
    ] = False,
    wait: WaitOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Apply the retention rules to this node's snapshots and free unused data."""
    from drkit.actions import prune as prune_action
    from drkit.service import recorder

    loaded = config_at(config)
    return recorder.recorded(
        loaded,
        "prune",
        lambda: prune_action.run(loaded, dry_run=dry_run, lock_wait=wait),
        dry_run=dry_run,
    )


@drkit_command(app, examples=["drkit verify --read-data-subset 5% --spot 20"])
def verify(
    read_data_subset: Annotated[
        str | None, typer.Option(help="also read this share of the data: 5%, 1/10, 500M")
    ] = None,
    spot: Annotated[int, typer.Option(help="files of the latest snapshot to spot-check")] = 20,
    trust_key: TrustOption = None,
    wait: WaitOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Check the repository, every snapshot's signature, and a sample against the live node."""
    from drkit.actions import verify as verify_action
    from drkit.service import recorder

    loaded = config_at(config)
    trusted = trust_keys(trust_key)
    return recorder.recorded(
        loaded,
        "verify",
        lambda: verify_action.run(
            loaded, read_data_subset=read_data_subset, spot=spot, trust=trusted, lock_wait=wait
        ),
    )


@drkit_command(app, examples=["drkit status", "drkit status --fleet --json"])
def status(
    fleet: Annotated[bool, typer.Option("--fleet", help="every node reporting to the bucket")] = (
        False
    ),
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Show whether this node (or every node) is within its RPO; exit 1 when one is not."""
    from drkit.actions import status as status_action

    return status_action.run(config_at(config), fleet=fleet)


# --- drills, reports and diffs --------------------------------------------------------------


@drkit_command(app, examples=["drkit drill", "drkit drill --snapshot random --json"])
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
) -> Result:
    """Rebuild the node in a sandbox, log in for real, measure RTO and RPO; write reports.

    Exit 1 when a check fails or an objective is missed.
    """
    from drkit.actions import drill as drill_action
    from drkit.service import recorder

    loaded = config_at(config)
    trusted = trust_keys(trust_key)
    with output.steps(as_json, "drill") as on_step:
        return recorder.recorded(
            loaded,
            "drill",
            lambda: drill_action.run(
                loaded,
                from_copy=from_copy,
                snapshot=snapshot,
                report_dir=report_dir,
                trust=trusted,
                on_step=on_step,
                allow_rollback=allow_rollback,
            ),
        )


@drkit_command(app, examples=["drkit report --open", "drkit report --all --json"])
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
) -> Result:
    """List the drill reports in the bucket, oldest first; --open shows the latest page.

    --fleet writes one self-contained HTML page (and its JSON beside it) from the bucket
    alone; exit 1 when a node is breached.
    """
    from drkit.actions import report as report_action

    if fleet:
        return report_action.fleet(config_at(config), out=out, open_page=open_page)
    return report_action.run(config_at(config), all_nodes=all_nodes, open_page=open_page)


@drkit_command(app, examples=["drkit diff latest~1 latest"])
def diff(
    old: Annotated[str, typer.Argument(help="id, latest or latest~N")],
    new: Annotated[str, typer.Argument(help="id, latest or latest~N")] = "latest",
    trust_key: TrustOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Show what changed between two snapshots: files by category, config diffs, keys, certs."""
    from drkit.actions import diff as diff_action

    return diff_action.run(origin_for(config, trust_key), old, new)


@drkit_command(
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
) -> Result:
    """List the node's security events (keys added, host keys replaced, logins weakened, ...)."""
    from drkit.actions import history as history_action
    from drkit.service import context

    return history_action.run(
        config_at(config),
        since=context.parse_at(since) if since else None,
        ack=ack,
        why=why,
        last_clean=last_clean,
    )


@drkit_command(app, examples=["drkit copy", "drkit copy --name offsite --json"])
def copy(
    name: Annotated[str | None, typer.Option(help="only this copy (repository.copies)")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Copy the node's snapshots and signed catalog to its further repositories (3-2-1)."""
    from drkit.actions import copy as copy_action
    from drkit.service import recorder

    loaded = config_at(config)
    return recorder.recorded(loaded, "copy", lambda: copy_action.run(loaded, name))
