"""Accounts for a smoke run: the node's record of a user, the host user created for the run
and removed after it, and the directories the user may write to."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from drkit import runner
from drkit.engines import accounts
from drkit.model import (
    AccountRecord,
    Check,
    Manifest,
    PasswdEntry,
    failed,
    passed,
)
from drkit.paths import on_root

Key = TypeVar("Key", str, int)


def node_account(root: Path, manifest: Manifest, user: str) -> AccountRecord | None:
    """Return the node's account record of user: the root's files, else the manifest's."""
    if accounts.source_root(root) == Path(root):
        found = accounts.read_entries(root, [user])
        if found:
            return found[0]
    return manifest.account(user)


def node_entry(root: Path, manifest: Manifest, user: str) -> PasswdEntry:
    """Return the node's passwd entry of user (the host's when the node has none); raise
    KeyError when neither has it."""
    account = node_account(root, manifest, user)
    if account:
        return account.entry
    host = pwd.getpwnam(user)
    uid, gid = str(host.pw_uid), str(host.pw_gid)
    return PasswdEntry(user, "x", uid, gid, "", host.pw_dir, host.pw_shell)


def host_has(lookup: Callable[[Key], object], key: Key) -> bool:
    """Return whether the host's pwd/grp lookup finds key."""
    try:
        lookup(key)
    except KeyError:
        return False
    return True


def ensure_user(root: Path, manifest: Manifest, user: str, created: list[tuple[str, str]]) -> Check:
    """Make sure user exists on the host; create it for the run from the node's entry.

    What was created is appended to `created` for removal afterwards.
    """
    name = "smoke: user"
    if host_has(pwd.getpwnam, user):
        return passed(name, f"{user} exists on the host")
    account = node_account(root, manifest, user)
    if account is None:
        return failed(name, f"{user} is neither on the host nor in the node's accounts")
    entry = account.entry
    uid, gid, home, shell = entry.uid, entry.gid, entry.home or "/", entry.shell
    argv = ["useradd", "-M", "-p", "*"]
    for group in account.group_entries:
        group_name, group_gid = group.name, group.gid
        primary = group_gid == gid
        if not primary and user not in group.members:
            continue
        if not host_has(grp.getgrnam, group_name) and not host_has(grp.getgrgid, int(group_gid)):
            done = runner.run(["groupadd", "-g", group_gid, group_name])
            if done.returncode == 0:
                created.append(("group", group_name))
        if host_has(grp.getgrnam, group_name):
            argv += ["-g", group_name] if primary else ["-G", group_name]
    if "-g" not in argv and gid.isdigit() and host_has(grp.getgrgid, int(gid)):
        argv += ["-g", gid]
    if uid.isdigit() and not host_has(pwd.getpwuid, int(uid)):
        argv += ["-u", uid]
    host_home = home if str(root) == "/" else str(on_root(root, home))
    usable_shell = shell if shell and os.access(shell, os.X_OK) else "/usr/sbin/nologin"
    had_group = host_has(grp.getgrnam, user)
    done = runner.run([*argv, "-d", host_home, "-s", usable_shell, user])
    if done.returncode != 0:
        return failed(name, f"useradd {user} failed: {done.stderr_tail}")
    created.append(("user", user))
    if not had_group and host_has(grp.getgrnam, user):
        created.append(("group", user))
    return passed(name, f"created {user} (uid {pwd.getpwnam(user).pw_uid}) for the run")


def remove_created(created: list[tuple[str, str]]) -> None:
    """Remove the users and groups created for the run, once their sessions have ended: the
    server is stopped by then, so what still runs as a user made for the run is a session of
    the smoke's own (sshd's per-connection processes outlive its listener by about a second)
    and is ended."""
    for kind, name in reversed(created):
        if kind == "user" and host_has(pwd.getpwnam, name):
            runner.end_processes_of(pwd.getpwnam(name).pw_uid)
            if runner.run(["userdel", name]).returncode != 0:
                runner.run(["userdel", "-f", name])
        elif kind == "group" and host_has(grp.getgrnam, name):
            runner.run(["groupdel", name])


def writable_places(root: Path, landed: Path, entry: PasswdEntry) -> list[tuple[str, Path]]:
    """Return (name relative to landed, host path) of landed and its subdirectories that the
    account (passwd fields: its uid, primary gid and the node's groups naming it) may write by
    owner and mode, landed first: where a smoke uploads, found rather than guessed."""
    uid, gid = entry.uid_number, entry.gid_number
    if uid is None or gid is None:
        return []
    gids = {gid} | {
        int(group.gid)
        for group in accounts.group_entries(root)
        if entry.name in group.members and group.gid.isdigit()
    }
    try:
        children = sorted(c for c in landed.iterdir() if c.is_dir() and not c.is_symlink())
    except OSError:
        return []
    found = []
    for folder in [landed, *children[:64]]:
        try:
            info = folder.stat()
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if (
            uid == 0
            or (info.st_uid == uid and mode & 0o200)
            or (info.st_gid in gids and mode & 0o020)
            or mode & 0o002
        ):
            found.append(("." if folder == landed else folder.name, folder))
    return found
