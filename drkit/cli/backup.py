"""Commands that set a node up, back it up, inspect snapshots, restore and check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drkit import output
from drkit.cli.base import (
    ConfigOption,
    DryRunOption,
    FromOption,
    JsonOption,
    RollbackOption,
    TrustOption,
    WaitOption,
    app,
    config_at,
    drkit_command,
    origin_for,
    storage_app,
)
from drkit.results import Result

# --- init and storage -----------------------------------------------------------------------


@drkit_command(
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
) -> Result:
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


@drkit_command(storage_app, "init", examples=["drkit storage init --config /etc/drkit/drkit.yaml"])
def storage_init(
    create: Annotated[
        bool, typer.Option("--create", help="make the bucket when it does not exist yet")
    ] = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Create or adopt the bucket: versioning on, object lock with default retention.

    A bucket that does not exist is made only with --create (a misspelled repository.bucket
    is named, with the buckets the credentials see, instead of becoming a new bucket)."""
    from drkit.actions import storage

    return storage.init(config_at(config), create=create)


@drkit_command(
    storage_app, "verify", examples=["drkit storage verify", "drkit storage verify --json"]
)
def storage_verify(config: ConfigOption = None, as_json: JsonOption = False) -> Result:
    """Report the bucket's posture; exit 1 when it drifted from the config."""
    from drkit.actions import storage

    return storage.verify(config_at(config))


# --- backup and inspection ------------------------------------------------------------------


@drkit_command(app, examples=["drkit backup", "drkit backup --json --config /etc/drkit/drkit.yaml"])
def backup(
    wait: WaitOption = None, config: ConfigOption = None, as_json: JsonOption = False
) -> Result:
    """Take one snapshot of the node now."""
    from drkit.actions import backup as backup_action
    from drkit.service import recorder

    loaded = config_at(config)
    with output.Progress("backup", quiet=as_json) as shown:
        return recorder.recorded(
            loaded,
            "backup",
            lambda: backup_action.run(
                loaded, on_progress=shown.status, on_step=shown.step, lock_wait=wait
            ),
        )


@drkit_command(app, examples=["drkit snapshots", "drkit snapshots --all --json"])
def snapshots(
    config: ConfigOption = None,
    all_nodes: Annotated[bool, typer.Option("--all", help="every node in the repository")] = False,
    from_copy: FromOption = None,
    as_json: JsonOption = False,
) -> Result:
    """List the node's snapshots, oldest first."""
    from drkit.actions import snapshots as snapshots_action
    from drkit.service.opening import Origin

    origin = Origin.from_config(config_at(config).from_copy(from_copy))
    return snapshots_action.list_snapshots(origin, all_nodes)


@drkit_command(app, examples=["drkit show latest", "drkit show latest~1 --json"])
def show(
    snapshot: Annotated[str, typer.Argument(help="id, latest or latest~N")] = "latest",
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Show a snapshot's manifest: files by category, key fingerprints, certificate expiry."""
    from drkit.actions import snapshots as snapshots_action

    return snapshots_action.show(origin_for(config, None), snapshot)


# --- restore and check ----------------------------------------------------------------------


@drkit_command(
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
    restore_databases: Annotated[
        bool,
        typer.Option(
            "--restore-databases",
            help="load the snapshot's database dumps into the target's database server "
            "(default: leave them in /var/lib/drkit/restored/databases with the command)",
        ),
    ] = False,
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
) -> Result:
    """Rebuild the node from a verified snapshot, then check it."""
    from drkit.actions import restore as restore_action
    from drkit.service import context
    from drkit.service.opening import Origin

    if s3_endpoint:
        origin = Origin.bare_metal(
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
        loaded = config_at(config).from_copy(from_copy)
        origin = Origin.from_config(
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
            restore_databases=restore_databases,
        )


@drkit_command(app, examples=["drkit check --target / --smoke"])
def check(
    target: Annotated[Path | None, typer.Option(help="node root to check (default: root)")] = None,
    snapshot: Annotated[str, typer.Option(help="snapshot to compare with")] = "latest",
    smoke: Annotated[bool, typer.Option("--smoke", help="start the server and log in")] = False,
    trust_key: TrustOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Check a node in place against its latest snapshot; restore nothing."""
    from drkit.actions import restore as restore_action
    from drkit.service.opening import Origin

    origin = Origin.from_config(config_at(config), trust_key)
    return restore_action.check(
        origin, target=target or origin.root, snapshot=snapshot, smoke=smoke
    )
