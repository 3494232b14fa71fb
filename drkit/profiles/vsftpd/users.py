"""Who logs in to vsftpd and where, as vsftpd 3.0 works it out (twoprocess.c, secutil.c):
anonymous logins are ftp_username, chrooted into anon_root or its home; with guest_enable every
other login is a virtual user mapped to guest_username; otherwise local users are the node's
accounts (an allow list when userlist_deny=NO). A login changes into its home, then into
local_root, and may be chrooted there."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from drkit.engines import accounts
from drkit.model import Manifest, PasswdEntry
from drkit.paths import on_root
from drkit.profiles.common import profile_options, smoke_accounts
from drkit.profiles.vsftpd.config import (
    Config,
    anonymous_names,
    compiled_defaults,
    config_path,
    names_in,
    read_config,
    read_pam,
)
from drkit.profiles.vsftpd.policy import NAME, policy
from drkit.profiles.vsftpd.sandbox import mapped_path


@dataclass(frozen=True)
class Login:
    """A name that logs in, the system account vsftpd runs it as, and how it was found.

    named: an allow list, a per-user file or the smoke user names it (its trees must exist);
    otherwise it is one of the node's accounts that PAM would let in (its trees are taken when
    they exist).
    """

    name: str
    account: str
    kind: str  # local | guest | anonymous
    where: str
    named: bool = True


def _uid_range(root: Path) -> tuple[int, int]:
    low, high = policy().local_uid_min, policy().local_uid_max
    for line in names_in(root, "/etc/login.defs"):
        words = line.split()
        if len(words) == 2 and words[0] == "UID_MIN" and words[1].isdigit():
            low = int(words[1])
    return low, high


def logins(root: Path, config: Config, smoke_user: str | None = None) -> list[Login]:
    """Return every login the node serves, from the server's own sources."""
    found: list[Login] = []
    if config.yes("anonymous_enable"):
        ftp = config.get("ftp_username") or "ftp"
        where = config.where.get("anonymous_enable", "anonymous_enable default YES")
        found.append(Login(ftp, ftp, "anonymous", where))
    if not config.yes("local_enable"):
        return found
    allow_list = config.yes("userlist_enable") and not config.yes("userlist_deny")
    listed = names_in(root, config.get("userlist_file")) if config.yes("userlist_enable") else []
    named = [(name, f"{config.get('user_config_dir')}/{name}") for name in config.user_files]
    if allow_list:
        named += [(name, config.get("userlist_file") or "") for name in listed]
    if config.yes("chroot_list_enable"):
        chroot_list = config.get("chroot_list_file")
        named += [(name, chroot_list or "") for name in names_in(root, chroot_list)]
    pam = read_pam(root, config)
    if smoke_user and smoke_user not in anonymous_names():
        named.append((smoke_user, "smoke_user"))
    if config.yes("guest_enable"):
        guest = config.get("guest_username") or "ftp"
        for store in pam.pwdfiles:
            named += [(name, store) for name in names_in(root, store, ":")]
        for name, where in dict(named).items():  # a user's own file may name another guest
            found.append(Login(name, config.get("guest_username", name) or guest, "guest", where))
        return found
    denied = set(listed if not allow_list else [])
    for deny_file in pam.deny_files:
        denied.update(names_in(root, deny_file))
    for name, where in dict(named).items():
        found.append(Login(name, name, "local", where))
    if not allow_list:
        low, high = _uid_range(root)
        for name, entry in accounts.passwd_entries(root).items():
            uid = entry.uid_number if entry.uid_number is not None else -1
            if low <= uid <= high and name not in denied and name not in dict(named):
                found.append(Login(name, name, "local", "node account", named=False))
    return found


def _in_chroot_list(root: Path, config: Config, name: str) -> bool:
    return config.yes("chroot_list_enable") and name in names_in(
        root, config.get("chroot_list_file")
    )


def is_chrooted(root: Path, config: Config, login: Login) -> bool:
    """chrooted() with chroot_list_file applied (it inverts chroot_local_user for its users)."""
    if login.kind == "anonymous" or (
        login.kind == "guest" and not config.yes("virtual_use_local_privs", login.name)
    ):
        return True
    return config.yes("chroot_local_user") != _in_chroot_list(root, config, login.name)


@dataclass(frozen=True)
class Place:
    """Where a login lands: its home (chdir; missing is fatal) and the directory it is chrooted
    into, or None."""

    home: str | None
    root: str | None
    local_root: str | None


def place_of(root: Path, config: Config, login: Login, passwd: Mapping[str, PasswdEntry]) -> Place:
    """Return the login's home, local_root and chroot directory (node paths, tokens expanded)."""
    entry = passwd.get(login.account)
    home = config.expand(entry.home, login.name) if entry and entry.home else None
    if home in ("/", "/nonexistent", "/dev/null"):
        home = None
    jail_root = None
    if login.kind == "anonymous":
        extra = config.get("anon_root")
    else:
        value = config.get("local_root", login.name)
        extra = config.expand(value, login.name) if value else None
    if home and login.kind != "anonymous" and config.yes("passwd_chroot_enable") and "/./" in home:
        jail_root = home.split("/./", 1)[0] or "/"
    if is_chrooted(root, config, login):
        jail_root = jail_root or extra or home
    return Place(
        posixpath.normpath(home) if home else None,
        posixpath.normpath(jail_root) if jail_root else None,
        posixpath.normpath(extra) if extra else None,
    )


def guest_account(config: Config) -> str | None:
    """Return the account every virtual login runs as, or None without guest logins."""
    if config.yes("guest_enable") and config.yes("local_enable"):
        return config.get("guest_username") or "ftp"
    return None


def system_users(root: Path, config: Config, smoke_user: str | None = None) -> list[str]:
    """Return the system accounts a restored node needs: every login's account, nopriv_user."""
    names = [login.account for login in logins(root, config, smoke_user)]
    names += [guest_account(config) or "", config.get("nopriv_user") or "nobody"]
    return [name for name in dict.fromkeys(names) if name]


def account_entry(root: Path, manifest: Manifest, account: str) -> PasswdEntry | None:
    """Return the node's passwd entry of account, or None when neither node nor host has it."""
    try:
        return smoke_accounts.node_entry(root, manifest, account)
    except KeyError:
        return None


def landing(
    root: Path, manifest: Manifest, config: Config, login: Login
) -> tuple[str | None, Path | None, str]:
    """Return (the path a login's client is shown after login, the host directory it is,
    why) as vsftpd works it out: it changes into the home, then into local_root; a chrooted
    login is then chrooted there and shown "/". (None, None, "") when the account is unknown."""
    entry = account_entry(root, manifest, login.account)
    if entry is None:
        return None, None, ""
    place = place_of(root, config, login, {login.account: entry})
    if place.root:
        key = "anon_root" if login.kind == "anonymous" else "local_root"
        named = place.root == place.local_root
        why = (
            f"chrooted into {key} {place.root}" if named else f"chrooted into the home {place.root}"
        )
        return "/", on_root(root, place.root), why
    where = place.local_root or place.home or "/"
    why = (
        f"local_root {where}, not chrooted"
        if place.local_root
        else f"the home {where}, not chrooted"
    )
    return mapped_path(root, where), on_root(root, where), why


def login_homes(root: Path, manifest: Manifest) -> dict[str, str]:
    """Return {account: node path} of the home vsftpd changes a local login of each of the
    manifest's accounts into (user_sub_token expanded; a missing one is 500 OOPS), as the
    restored config says; local_root and a chroot are the config's own trees."""
    root = Path(root)
    chosen = config_path(profile_options.options_of(manifest, NAME))
    config = read_config(root, chosen, compiled_defaults(root, manifest))
    passwd = accounts.passwd_entries(root)
    homes = {}
    for name in [account.name for account in manifest.accounts]:
        place = place_of(root, config, Login(name, name, "local", "manifest"), passwd)
        if place.home and place.home.startswith("/"):
            homes[name] = place.home
    return homes
