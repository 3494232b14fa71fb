"""A node's account entries: read them from passwd/group/shadow, merge them back on restore.

The accounts come from `<root>/etc/passwd`, `group` and `shadow` when the root holds a passwd
file (a container rootfs, a mounted disk), else from the host's. The files are never backed up
whole: the manifest records only the entries of the users a profile names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from drkit.engines import beneath
from drkit.model import AccountRecord, GroupEntry, PasswdEntry
from drkit.paths import host_path, on_root

log = logging.getLogger(__name__)

FILES = ("/etc/passwd", "/etc/group", "/etc/shadow")


def source_root(root: Path) -> Path:
    """Return the root whose /etc holds the node's accounts: root itself, else the host '/'."""
    return Path(root) if on_root(root, "/etc/passwd").is_file() else Path("/")


def _lines(path: Path, beneath_root: Path | None = None) -> list[str]:
    """Return a file's lines; with beneath_root, read without following a link on the way or
    opening anything but a regular file (errors.Refused), as a restore reads its target.
    Without, a FIFO, device or socket reads as empty (it is never waited on)."""
    try:
        if beneath_root is None:
            data = beneath.read_any_regular(path)
        else:
            data = beneath.read_bytes(beneath_root, path)
    except (FileNotFoundError, PermissionError):
        return []
    return data.decode(errors="replace").splitlines() if data is not None else []


def _records(lines: list[str]) -> list[str]:
    """Return the entry lines, skipping blanks, comments and NIS +/- lines."""
    return [
        line
        for line in lines
        if line.strip() and not line.startswith(("#", "+", "-")) and ":" in line
    ]


def _by_name(lines: list[str]) -> dict[str, str]:
    """Return {name: line} of the entry lines (of a name listed twice, the last)."""
    return {line.split(":", 1)[0]: line for line in _records(lines)}


def read_entries(root: Path, users: list[str]) -> list[AccountRecord]:
    """Given user names, return the account records of those that exist: the raw passwd and
    shadow lines (shadow None when unreadable or absent) and the group lines whose gid is the
    user's or that list the user as a member."""
    etc = source_root(root)
    passwd = _by_name(_lines(on_root(etc, "/etc/passwd")))
    shadow = _by_name(_lines(on_root(etc, "/etc/shadow")))
    groups = _records(_lines(on_root(etc, "/etc/group")))
    found = []
    for name in dict.fromkeys(users):
        line = passwd.get(name)
        if line is None:
            continue
        gid = PasswdEntry.parse(line).gid
        found.append(
            AccountRecord(
                name=name,
                passwd=line,
                shadow=shadow.get(name),
                groups=[
                    group
                    for group in groups
                    if (entry := GroupEntry.parse(group)).gid == gid or name in entry.members
                ],
            )
        )
    return found


def missing(root: Path, accounts: list[AccountRecord]) -> list[str]:
    """Return the names of recorded accounts that the node (root, else the host) lacks."""
    present = passwd_entries(root)
    return [account.name for account in accounts if account.name not in present]


# Homes that are placeholders, never directories to create.
NO_HOME = ("/", "/nonexistent", "/dev/null", "/var/empty")
LOGIN_UID_MIN = 1000  # login.defs' UID_MIN: below it, system accounts own their own trees
HOME_MODE = 0o700  # a created home, as Debian 12's adduser makes it


def missing_homes(
    root: Path,
    accounts: list[AccountRecord],
    held: set[str],
    landings: dict[str, list[str]] | None = None,
) -> list[tuple[str, int, int]]:
    """Return (home, uid, gid) of each directory a recorded login account (uid >= UID_MIN)
    logs in to that is neither on root nor held in the snapshot (`held` node paths): restore
    creates those, as `useradd -m` would, so a restored user has somewhere to log in to.

    landings: {name: node paths the node's servers put that account in at login} (a chroot
    puts the home inside it); an account without an entry logs in to its passwd home. Each
    path is returned once, owned by the first account that lands there."""
    found: dict[str, tuple[int, int]] = {}
    for account in accounts:
        entry = account.entry
        uid, gid = entry.uid_number, entry.gid_number
        if uid is None or gid is None or uid < LOGIN_UID_MIN:
            continue
        places = [entry.home] if landings is None else landings.get(account.name, [])
        for home in places:
            if not home.startswith("/") or home in NO_HOME or home in held or home in found:
                continue
            if not os.path.lexists(on_root(root, home)):
                found[home] = (uid, gid)
    return [(home, uid, gid) for home, (uid, gid) in found.items()]


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def merge_accounts(
    root: Path, accounts: list[AccountRecord], warnings: list[str] | None = None
) -> dict[Path, str]:
    """Return the new texts of <root>/etc/passwd, group and shadow with missing entries added.

    Existing entries stay as they are, except that a restored user missing from the member
    list of a group it belonged to is added to it (AllowGroups depends on it). A uid or gid
    already used under another name is reported in `warnings` (and logged), not overwritten.
    """
    warnings = warnings if warnings is not None else []
    paths = [Path(host_path(root, name)) for name in FILES]
    passwd, group, shadow = (_lines(path, root) for path in paths)
    present = [PasswdEntry.parse(line) for line in _records(passwd)]
    users = {entry.name for entry in present}
    uids = {entry.uid: entry.name for entry in present if entry.uid}
    shadow_names = set(_by_name(shadow))

    def warn(message: str) -> None:
        log.warning(message)
        warnings.append(message)

    for account in accounts:
        name, entry = account.name, account.entry
        if name not in users:
            if entry.uid in uids and uids[entry.uid] != name:
                warn(f"user {name}: uid {entry.uid} is already {uids[entry.uid]}")
            passwd.append(account.passwd)
            users.add(name)
            uids[entry.uid] = name
        if name not in shadow_names:
            shadow.append(account.shadow or f"{name}:*:::::::")
            shadow_names.add(name)

    for account in accounts:
        for line in account.groups:
            recorded = GroupEntry.parse(line)
            position = _find(group, recorded.name)
            if position is None:
                clash = _find(group, recorded.gid, by_gid=True)
                if clash is not None:
                    known = GroupEntry.parse(group[clash]).name
                    warn(f"group {recorded.name}: gid {recorded.gid} is already {known}")
                group.append(line)
            elif account.name in recorded.members:
                existing = GroupEntry.parse(group[position])
                if account.name not in existing.members:
                    members = (*existing.members, account.name)
                    group[position] = dataclasses.replace(existing, members=members).line()
    return {paths[0]: _text(passwd), paths[1]: _text(group), paths[2]: _text(shadow)}


def _find(lines: list[str], value: str, *, by_gid: bool = False) -> int | None:
    """Return the index of the first group entry named value (by_gid: with gid value), else
    None."""
    for position, line in enumerate(lines):
        if line.startswith(("#", "+", "-")):
            continue
        entry = GroupEntry.parse(line)
        if (entry.gid if by_gid else entry.name) == value:
            return position
    return None


def passwd_entries(root: Path) -> dict[str, PasswdEntry]:
    """Return {name: passwd entry} of the node's accounts (root's files, else the host's)."""
    etc = source_root(root)
    lines = _by_name(_lines(on_root(etc, "/etc/passwd")))
    return {name: PasswdEntry.parse(line) for name, line in lines.items()}


def group_entries(root: Path) -> list[GroupEntry]:
    """Return the group entries of the node's accounts (root's files, else the host's)."""
    lines = _records(_lines(on_root(source_root(root), "/etc/group")))
    return [GroupEntry.parse(line) for line in lines]
