"""drkit discover: which transfer servers live on a root, what each would back up, and a
proposed drkit.yaml. `drkit init --server auto` uses the same detection."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from drkit import errors, profiles
from drkit.paths import on_root
from drkit.results import DiscoveredServer, DiscoverResult
from drkit.service.detection import detect, detected_options


def node_name(root: Path) -> str:
    """Return the node's short host name: this host's for '/', else the root's etc/hostname,
    else the root directory's name."""
    if str(root) == "/":
        return socket.gethostname().split(".")[0]
    try:
        written = on_root(root, "/etc/hostname").read_text().strip().split(".")[0]
    except OSError:
        written = ""
    return written or root.name


def run(root: Path, smoke_user: str | None = None) -> DiscoverResult:
    """Return the discover document: servers, their files by category, a proposed config."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise errors.UsageError(f"--root {root}: not a directory")
    servers: list[DiscoveredServer] = []
    detected = detect(root)
    for kind, signs in detected.items():
        profile = profiles.get(kind)
        inventory = profile.inventory(root, smoke_user, profile.options(signs.options))
        categories: dict[str, list[str]] = {}
        for entry in inventory.files:
            categories.setdefault(entry.category, []).append(entry.path)
        servers.append(
            DiscoveredServer(
                server=kind,
                configs=signs.configs,
                binaries=signs.binaries,
                units=signs.units,
                file_count=len(inventory.files),
                categories=categories,
                trees=[entry.path for entry in inventory.dirs],
                accounts=inventory.users,
                warnings=inventory.warnings,
            )
        )
    kinds = [server.server for server in servers]
    node = node_name(root)
    accounts = [name for server in servers for name in server.accounts]
    smoke_user = smoke_user or (accounts[0] if accounts else None)
    proposed = {
        "node": node,
        "servers": kinds or ["generic"],
        "root": str(root),
        "repository": {
            "s3_endpoint": "https://s3.example.net",
            "bucket": "dr-backups",
            "prefix": node,
            "password_file": "/etc/drkit/repo.pass",
        },
        "signing_key": "/etc/drkit/signing.key",
        **({"smoke_user": smoke_user} if smoke_user else {}),
    }
    options = detected_options(detected)
    if options:
        proposed["profile_options"] = options
    node_local = [entry for kind in kinds for entry in profiles.get(kind).node_local]
    if node_local:
        proposed["node_local"] = node_local
    return DiscoverResult(
        root=str(root),
        servers=servers,
        proposed_config=yaml.safe_dump(proposed, sort_keys=False),
    )
