"""Commands for what clients see, discovery, standby, fleet drift and keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from drkit.cli.base import (
    ConfigOption,
    DrkitGroup,
    DryRunOption,
    JsonOption,
    RollbackOption,
    TrustOption,
    WaitOption,
    app,
    config_at,
    drkit_command,
    trust_keys,
)
from drkit.results import Result

# --- what clients see: identity proof and failover rehearsal ---------------------------------

identity_app = typer.Typer(cls=DrkitGroup, help="Prove what clients see at each address.")
app.add_typer(identity_app, name="identity")
failover_app = typer.Typer(cls=DrkitGroup, help="Rehearse a failover as a pinned client sees it.")
app.add_typer(failover_app, name="failover")
ProtocolOption = Annotated[
    str | None, typer.Option(help="sftp, ftps or ftp, for addresses given as HOST:PORT")
]


@drkit_command(
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
) -> Result:
    """Compare the host keys and certificates each address serves with the signed snapshot."""
    from drkit.actions import identity

    return identity.check(config_at(config), address or [], protocol=protocol, via=via, node=node)


@drkit_command(
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
) -> Result:
    """Stop the active, time a pinned login and file round trip through --via, start it again."""
    from drkit.actions import identity

    return identity.rehearse(
        config_at(config),
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


@drkit_command(
    app, examples=["drkit discover --root /", "drkit discover --root /mnt/old-node --json"]
)
def discover(
    root: Annotated[Path, typer.Option(help="where the node's filesystem is")] = Path("/"),
    smoke_user: Annotated[str | None, typer.Option(help="account for smoke logins")] = None,
    as_json: JsonOption = False,
) -> Result:
    """Find the transfer servers on a root, the files each would back up, and a config."""
    from drkit.actions import discover as discover_action

    return discover_action.run(root, smoke_user)


@drkit_command(standby_app, "sync", examples=["drkit standby sync --dry-run", "drkit standby sync"])
def standby_sync(
    dry_run: DryRunOption = False,
    trust_key: TrustOption = None,
    wait: WaitOption = None,
    allow_rollback: RollbackOption = False,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Apply the source node's newest snapshot here, keeping standby.local; roll back on a
    failed check."""
    from drkit.actions import standby
    from drkit.service import recorder

    loaded = config_at(config)
    trusted = trust_keys(trust_key)
    return recorder.recorded(
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


@drkit_command(standby_app, "status", examples=["drkit standby status --json"])
def standby_status(config: ConfigOption = None, as_json: JsonOption = False) -> Result:
    """Show the source node, the snapshot applied, when, and the lag; exit 1 beyond the RPO."""
    from drkit.actions import standby

    return standby.status(config_at(config))


@drkit_command(standby_app, "promote", examples=["drkit standby promote"])
def standby_promote(config: ConfigOption = None, as_json: JsonOption = False) -> Result:
    """Stop following the source: this node now backs itself up."""
    from drkit.actions import standby
    from drkit.config import load_config

    loaded, path = load_config(config)
    return standby.promote(loaded, path)


@drkit_command(fleet_app, "drift", examples=["drkit fleet drift --group sftp-prod"])
def fleet_drift(
    group: Annotated[str | None, typer.Option(help="group to compare (default: config)")] = None,
    trust_key: TrustOption = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> Result:
    """Compare the newest snapshot of every node of the group; exit 1 on drift."""
    from drkit.actions import fleet

    return fleet.drift(config_at(config), group=group, trust_keys=trust_keys(trust_key))


# --- key escrow, recovery and rotation ------------------------------------------------------

keys_app = typer.Typer(
    cls=DrkitGroup, help="Escrow, recover and rotate the repository password and keys."
)
app.add_typer(keys_app, name="keys")


@drkit_command(
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
) -> Result:
    """Split the repository password into SLIP-39 shares, one per holder, each age-encrypted."""
    from drkit.actions import keys as keys_action

    return keys_action.escrow_password(config_at(config), recipients, threshold, out)


@drkit_command(keys_app, "holder", examples=["drkit keys holder --identity ~/drkit-holder.key"])
def keys_holder(
    identity: Annotated[Path, typer.Option(help="where to write the new age identity (0600)")],
    as_json: JsonOption = False,
) -> Result:
    """Create an age key pair for an escrow holder; print the recipient to escrow to."""
    from drkit.actions import keys as keys_action

    return keys_action.new_holder(identity)


@drkit_command(
    keys_app,
    "reveal",
    examples=["drkit keys reveal --share share-alice.age --identity ~/drkit-holder.key"],
)
def keys_reveal(
    share: Annotated[Path, typer.Option(help="the holder's .age share")],
    identity: Annotated[list[Path], typer.Option(help="the holder's age identity file")],
    as_json: JsonOption = False,
) -> Result:
    """Decrypt a holder's share and print its words, to be written on paper."""
    from drkit.actions import keys as keys_action

    return keys_action.reveal(share, identity)


@drkit_command(
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
) -> Result:
    """Rebuild the repository password from K shares (files, or typed one per line on stdin)."""
    import sys

    from drkit.actions import keys as keys_action

    typed = [] if share else [line for line in sys.stdin.read().splitlines() if line.strip()]
    return keys_action.recover(share or [], identity or [], out, typed)


@drkit_command(keys_app, "rotate", examples=["drkit keys rotate"])
def keys_rotate(config: ConfigOption = None, as_json: JsonOption = False) -> Result:
    """Add a new restic key and signing key; retire the old ones without losing a snapshot."""
    from drkit.actions import keys as keys_action
    from drkit.config import load_config

    loaded, path = load_config(config)
    return keys_action.rotate(loaded, path)
