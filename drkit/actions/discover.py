"""drkit discover: which transfer servers live on a root, what each would back up, and a
proposed drkit.yaml. `drkit init --server auto` uses the same detection."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml

from drkit import errors, profiles
from drkit.paths import on_root
from drkit.results import DiscoverResult

# kind -> (config files, binaries, service units); a server is present when a config exists.
SIGNS: dict[str, tuple[list[str], list[str], list[str]]] = {
    "openssh": (
        ["/etc/ssh/sshd_config"],
        ["/usr/sbin/sshd"],
        ["ssh.service", "sshd.service"],
    ),
    "proftpd": (
        ["/etc/proftpd/proftpd.conf"],
        ["/usr/sbin/proftpd"],
        ["proftpd.service"],
    ),
    "vsftpd": (
        ["/etc/vsftpd.conf", "/etc/vsftpd/vsftpd.conf"],
        ["/usr/sbin/vsftpd"],
        ["vsftpd.service"],
    ),
    "sftpplus": (
        ["/opt/sftpplus/configuration/server.ini"],
        ["/opt/sftpplus/bin/admin-commands.sh"],
        ["sftpplus.service", "sftpplus-server.service"],
    ),
}
UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")


def detect(root: Path) -> dict[str, dict]:
    """Return {kind: {configs, binaries, units}} for every server whose config is on root."""
    found = {}
    for kind, (configs, binaries, units) in SIGNS.items():
        present = [path for path in configs if on_root(root, path).is_file()]
        if not present:
            continue
        found[kind] = {
            "configs": present,
            "binaries": [path for path in binaries if on_root(root, path).exists()],
            "units": [
                f"{directory}/{unit}"
                for directory in UNIT_DIRS
                for unit in units
                if on_root(root, f"{directory}/{unit}").exists()
            ],
        }
    return found


def detect_kinds(root: Path) -> list[str]:
    """Return the server kinds found on root, in a stable order."""
    return list(detect(root))


def resolve_servers(requested: list[str], root: Path) -> list[str]:
    """Given --server values and the node's root, return the server kinds, each once, in the
    order given; 'auto' stands for every server found on the root. Raise UsageError when
    'auto' finds none."""
    kinds: list[str] = []
    for value in requested:
        if value == "auto":
            found = detect_kinds(Path(root).resolve())
            if not found:
                raise errors.UsageError(f"--server auto: no known server under {root}")
            kinds += found
        else:
            kinds.append(value)
    return list(dict.fromkeys(kinds))


def run(root: Path, smoke_user: str | None = None) -> DiscoverResult:
    """Return the discover document: servers, their files by category, a proposed config."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise errors.UsageError(f"--root {root}: not a directory")
    servers = []
    for kind, signs in detect(root).items():
        inventory = profiles.inventory(kind, root, smoke_user)
        categories: dict[str, list[str]] = {}
        for entry in inventory.files:
            categories.setdefault(entry.category, []).append(entry.path)
        servers.append(
            {
                "server": kind,
                **signs,
                "files": len(inventory.files),
                "categories": categories,
                "trees": [entry.path for entry in inventory.dirs],
                "accounts": inventory.users,
                "warnings": inventory.warnings,
            }
        )
    kinds = [server["server"] for server in servers]
    proposed = {
        "node": socket.gethostname().split(".")[0] if str(root) == "/" else root.name,
        "servers": kinds or ["generic"],
        "root": str(root),
        "repository": {
            "s3_endpoint": "https://s3.example.net",
            "bucket": "dr-backups",
            "prefix": "NODE",
            "password_file": "/etc/drkit/repo.pass",
        },
        **({"smoke_user": smoke_user} if smoke_user else {}),
    }
    return DiscoverResult(
        root=str(root),
        servers=servers,
        proposed_config=yaml.safe_dump(proposed, sort_keys=False),
    )
