"""A node's account entries: read them from passwd/group/shadow, merge them back on restore.

The accounts come from `<root>/etc/passwd`, `group` and `shadow` when the root holds a passwd
file (a container rootfs, a mounted disk), else from the host's. The files are never backed up
whole: the manifest records only the entries of the users a profile names.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from drkit.engines import beneath
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


def _entries(lines: list[str]) -> list[list[str]]:
    """Return the colon-split records, skipping blanks, comments and NIS +/- lines."""
    return [
        line.split(":")
        for line in lines
        if line.strip() and not line.startswith(("#", "+", "-")) and ":" in line
    ]


def _members(fields: list[str]) -> list[str]:
    return [name for name in (fields[3].split(",") if len(fields) > 3 else []) if name]


def read_entries(root: Path, users: list[str]) -> list[dict]:
    """Given user names, return [{name, passwd, shadow, groups}] for those that exist.

    passwd and shadow are the raw lines (shadow None when unreadable or absent); groups are
    the group lines whose gid is the user's or that list the user as a member.
    """
    etc = source_root(root)
    passwd = {f[0]: ":".join(f) for f in _entries(_lines(on_root(etc, "/etc/passwd")))}
    shadow = {f[0]: ":".join(f) for f in _entries(_lines(on_root(etc, "/etc/shadow")))}
    groups = _entries(_lines(on_root(etc, "/etc/group")))
    found = []
    for name in dict.fromkeys(users):
        line = passwd.get(name)
        if line is None:
            continue
        fields = line.split(":")
        gid = fields[3] if len(fields) > 3 else ""
        found.append(
            {
                "name": name,
                "passwd": line,
                "shadow": shadow.get(name),
                "groups": [
                    ":".join(g)
                    for g in groups
                    if (len(g) > 2 and g[2] == gid) or name in _members(g)
                ],
            }
        )
    return found


def missing(root: Path, accounts: list[dict]) -> list[str]:
    """Return the names of recorded accounts that the node (root, else the host) lacks."""
    etc = source_root(root)
    present = {f[0] for f in _entries(_lines(on_root(etc, "/etc/passwd")))}
    return [account["name"] for account in accounts if account["name"] not in present]


# Homes that are placeholders, never directories to create.
NO_HOME = ("/", "/nonexistent", "/dev/null", "/var/empty")
LOGIN_UID_MIN = 1000  # login.defs' UID_MIN: below it, system accounts own their own trees
HOME_MODE = 0o700  # a created home, as Debian 12's adduser makes it


def missing_homes(
    root: Path,
    accounts: list[dict],
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
        fields = (account["passwd"].split(":") + [""] * 7)[:7]
        uid, gid = fields[2], fields[3]
        if not (uid.isdigit() and gid.isdigit()) or int(uid) < LOGIN_UID_MIN:
            continue
        places = [fields[5]] if landings is None else landings.get(account["name"], [])
        for home in places:
            if not home.startswith("/") or home in NO_HOME or home in held or home in found:
                continue
            if not os.path.lexists(on_root(root, home)):
                found[home] = (int(uid), int(gid))
    return [(home, uid, gid) for home, (uid, gid) in found.items()]


def _text(lines: list[str]) -> str:
    return "\n".join(lines) + "\n" if lines else ""


def merge_accounts(
    root: Path, accounts: list[dict], warnings: list[str] | None = None
) -> dict[Path, str]:
    """Return the new texts of <root>/etc/passwd, group and shadow with missing entries added.

    Existing entries stay as they are, except that a restored user missing from the member
    list of a group it belonged to is added to it (AllowGroups depends on it). A uid or gid
    already used under another name is reported in `warnings` (and logged), not overwritten.
    """
    warnings = warnings if warnings is not None else []
    paths = [Path(host_path(root, name)) for name in FILES]
    passwd, group, shadow = (_lines(path, root) for path in paths)
    users = {f[0]: f for f in _entries(passwd)}
    uids = {f[2]: f[0] for f in _entries(passwd) if len(f) > 2}
    shadow_names = {f[0] for f in _entries(shadow)}

    def warn(message: str) -> None:
        log.warning(message)
        warnings.append(message)

    for account in accounts:
        name, fields = account["name"], account["passwd"].split(":")
        if name not in users:
            uid = fields[2] if len(fields) > 2 else ""
            if uid in uids and uids[uid] != name:
                warn(f"user {name}: uid {uid} is already {uids[uid]}")
            passwd.append(account["passwd"])
            users[name], uids[uid] = fields, name
        if name not in shadow_names:
            shadow.append(account.get("shadow") or f"{name}:*:::::::")
            shadow_names.add(name)

    for account in accounts:
        for line in account.get("groups", []):
            fields = line.split(":")
            position = _find(group, 0, fields[0])
            if position is None:
                gid = fields[2] if len(fields) > 2 else ""
                clash = _find(group, 2, gid)
                if clash is not None:
                    warn(f"group {fields[0]}: gid {gid} is already {group[clash].split(':')[0]}")
                group.append(line)
            elif account["name"] in _members(fields):
                existing = group[position].split(":")
                if account["name"] not in _members(existing):
                    existing += [""] * (4 - len(existing))
                    existing[3] = ",".join([*_members(existing), account["name"]])
                    group[position] = ":".join(existing)
    return {paths[0]: _text(passwd), paths[1]: _text(group), paths[2]: _text(shadow)}


def _find(lines: list[str], field: int, value: str) -> int | None:
    """Return the index of the first entry whose field equals value, else None."""
    for position, line in enumerate(lines):
        fields = line.split(":")
        if not line.startswith(("#", "+", "-")) and len(fields) > field and fields[field] == value:
            return position
    return None


def passwd_entries(root: Path) -> dict[str, list[str]]:
    """Return {name: passwd fields} of the node's accounts (root's files, else the host's)."""
    etc = source_root(root)
    return {f[0]: f + [""] * (7 - len(f)) for f in _entries(_lines(on_root(etc, "/etc/passwd")))}


def group_entries(root: Path) -> list[list[str]]:
    """Return the group records (fields) of the node's accounts (root's files, else the host's)."""
    return [
        f + [""] * (4 - len(f)) for f in _entries(_lines(on_root(source_root(root), "/etc/group")))
    ]


def group_members(users: dict[str, list[str]], groups: list[list[str]], name: str) -> list[str]:
    """Return the users in group `name`: listed members and users whose primary gid it is."""
    found: list[str] = []
    for fields in groups:
        if fields[0] == name:
            found += _members(fields)
            found += [user for user, entry in users.items() if entry[3] == fields[2]]
    return list(dict.fromkeys(found))
