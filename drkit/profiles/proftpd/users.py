"""Who logs in to a ProFTPD server context and where: every `AuthUserFile` entry and, where
mod_auth_unix answers, the node's regular accounts that may log in (not in /etc/ftpusers or a
PAM deny list, a valid shell); `%u` and `~` expanded as mod_auth and mod_sftp expand them at
login; the directory DefaultRoot lands each login in."""

from __future__ import annotations

import dataclasses
import posixpath
from pathlib import Path

from drkit.engines import accounts
from drkit.model import Manifest
from drkit.paths import on_root
from drkit.profiles.common import pamfiles, profile_options
from drkit.profiles.proftpd import sql
from drkit.profiles.proftpd.config import Config, module_name, read_config, server_contexts
from drkit.profiles.proftpd.policy import NAME, policy, settings
from drkit.profiles.proftpd.sandbox import mapped_path


def virtual_users(root: Path, config: Config, server: int | None = None) -> dict[str, list[str]]:
    """Return {name: passwd fields} of every AuthUserFile (of one server context when given),
    then of the SQLite databases mod_sql authenticates users from."""
    users: dict[str, list[str]] = {}
    for line in config.of("authuserfile", server):
        if not line.args:
            continue
        try:
            text = on_root(root, line.args[0]).read_text(errors="replace")
        except OSError:
            continue
        for raw in text.splitlines():
            fields = raw.split(":")
            if len(fields) >= 7 and not raw.startswith("#"):
                users.setdefault(fields[0], fields[:7])
    for name, fields in sql.virtual_users(root, config, server).items():
        users.setdefault(name, fields)
    return users


def _auth_modules(config: Config, server: int) -> set[str] | None:
    """Return the modules AuthOrder names for a server context, None when it names none (every
    loaded auth module answers)."""
    line = config.first("authorder", server)
    return {module_name(arg).rstrip("*") for arg in line.args} if line and line.args else None


def list_file(root: Path, node_path: str) -> set[str]:
    """Return the non-blank, non-comment lines of a node file (empty when it is missing)."""
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError:
        return set()
    return {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}


def _login_defs(root: Path) -> tuple[int, int]:
    """Return (UID_MIN, UID_MAX) of the node's /etc/login.defs (1000, 60000 by default)."""
    found = {"UID_MIN": 1000, "UID_MAX": 60000}
    for raw in list_file(root, "/etc/login.defs"):
        fields = raw.split()
        if len(fields) == 2 and fields[0] in found and fields[1].isdigit():
            found[fields[0]] = int(fields[1])
    return found["UID_MIN"], found["UID_MAX"]


def pam_services(config: Config, server: int) -> list[str]:
    """Return the PAM services proftpd uses in a server context (none when PAM is off)."""
    order = _auth_modules(config, server)
    if "mod_auth_pam" not in (order or {"mod_auth_pam"}) or config.is_off("authpam", server):
        return []
    line = config.first("authpamconfig", server)
    return [line.args[0]] if line and line.args else list(policy().pam.default_services)


def _pam_denied(root: Path, services: list[str]) -> set[str]:
    """Return the users a pam_listfile `sense=deny item=user` line of these services refuses."""
    denied: set[str] = set()
    for service in services:
        for deny_file in pamfiles.read_pam(root, f"/etc/pam.d/{service}").deny_files:
            denied |= list_file(root, deny_file)
    return denied


def system_logins(root: Path, config: Config, server: int) -> dict[str, list[str]]:
    """Return {name: passwd fields} of the node's accounts that may log in to a server context
    through mod_auth_unix: regular uids (login.defs), not root, not in /etc/ftpusers
    (UseFtpUsers) or a PAM deny list, with a valid shell when RequireValidShell is on and the
    node has /etc/shells."""
    order = _auth_modules(config, server)
    if order is not None and "mod_auth_unix" not in order:
        return {}
    low, high = _login_defs(root)
    denied = set() if config.is_off("useftpusers", server) else list_file(root, "/etc/ftpusers")
    denied |= _pam_denied(root, pam_services(config, server))
    shells = None if config.is_off("requirevalidshell", server) else list_file(root, "/etc/shells")
    found = {}
    for name, entry in accounts.passwd_entries(root).items():
        uid = entry.uid_number
        if uid is None or not low <= uid <= high or name in denied:
            continue
        if shells and entry.shell not in shells:
            continue
        found[name] = list(dataclasses.astuple(entry))  # as AuthUserFile entries are read
    return found


def logins(root: Path, config: Config, server: int) -> dict[str, list[str]]:
    """Return every user who may log in to a server context: AuthUserFile, then system."""
    found = dict(system_logins(root, config, server))
    found.update(virtual_users(root, config, server))
    return found


def groups_of(root: Path, name: str, fields: list[str]) -> set[str]:
    """Return the groups of a user: its primary group and every group listing it."""
    groups = accounts.group_entries(root)
    return {g.name for g in groups if g.gid == fields[3] or name in g.members}


def group_expr_matches(expr: tuple[str, ...], groups: set[str]) -> bool:
    """pr_expr_eval_group_and: every comma-separated group (or !group) must hold."""
    terms = [t for arg in expr for t in arg.split(",") if t]
    return all((t[1:] not in groups) if t.startswith("!") else (t in groups) for t in terms)


def expand(path: str, user: str, home: str, homes: dict[str, str]) -> str | None:
    """Expand %u, then ~ or ~name, as path_subst_uservar and pr_fs_interpolate do; None when
    ~name names no account."""
    path = path.replace("%u", user)
    if not path.startswith("~"):
        return posixpath.normpath(path)
    name, _, rest = path[1:].partition("/")
    base = home if not name else homes.get(name)
    if not base:
        return None
    return posixpath.normpath(posixpath.join(base, rest)) if rest else posixpath.normpath(base)


def run_accounts(root: Path, config: Config) -> tuple[list[str], list[str]]:
    """Return (system accounts the node needs, warnings): the User the daemon runs as, each
    <Anonymous> User and every user who may log in; a Group/GroupOwner naming no group and an
    <Anonymous ~name> naming no account are warnings."""
    passwd = accounts.passwd_entries(root)
    groups = {g.name for g in accounts.group_entries(root)}
    names, warnings = [], []
    for line in config.of("user", anon=True):
        if line.args:
            names.append(line.args[0])
            if line.args[0] not in passwd:
                warnings.append(f"User {line.args[0]} ({line.where}) is not an account here")
    for keyword in ("group", "groupowner"):
        for line in config.of(keyword, anon=True):
            if line.args and line.args[0] not in groups and passwd:
                token = "GroupOwner" if keyword == "groupowner" else "Group"
                warnings.append(f"{token} {line.args[0]} ({line.where}) is not a group here")
    for line in config.lines:
        if line.keyword == "<anonymous" and line.active and line.args:
            first = line.args[0]
            if first.startswith("~"):
                name = first[1:].split("/", 1)[0]
                names.append(name)
                if name not in passwd:
                    warnings.append(f"<Anonymous {first}> ({line.where}): no account {name}")
    for s in range(config.servers):
        names += list(system_logins(root, config, s))
    return list(dict.fromkeys(names)), warnings


def landing(
    root: Path, config: Config, server: int, user: str, fields: list[str]
) -> tuple[Path, str, str]:
    """Return (the host directory a login lands in, the path its client is shown there, why):
    DefaultRoot (the first whose group expression holds) chroots it, into its home when the
    home is inside the chroot."""
    home = posixpath.normpath(fields[5] or "/")
    for line in config.of("defaultroot", server):
        if not line.args:
            continue
        expr = line.args[1:]
        if expr and not group_expr_matches(expr, groups_of(root, user, fields)):
            continue
        jail = expand(line.args[0], user, home, {user: home})
        if not jail or jail == "/":
            break
        inside = home == jail or home.startswith(jail.rstrip("/") + "/")
        seen = "/" + posixpath.relpath(home, jail) if inside and home != jail else "/"
        why = f"DefaultRoot {' '.join(line.args)} ({line.where})"
        return on_root(root, home if inside else jail), seen, why
    return on_root(root, home), mapped_path(root, home), "no DefaultRoot: the home, not chrooted"


def login_homes(root: Path, manifest: Manifest) -> dict[str, str]:
    """Return {account: node path} of the home a login of each of the manifest's accounts
    changes into: its passwd home when no DefaultRoot applies or the home lies inside the
    chroot DefaultRoot makes (in any server context); a login jailed away from its home
    starts at the jail's root and needs none."""
    root = Path(root)
    config = read_config(root, settings(profile_options.options_of(manifest, NAME)).config)
    passwd = accounts.passwd_entries(root)
    homes = {}
    for name in [account.name for account in manifest.accounts]:
        entry = passwd.get(name)
        if not entry or not entry.home.startswith("/"):
            continue
        home, fields = posixpath.normpath(entry.home), list(dataclasses.astuple(entry))
        for server in server_contexts(config):
            if landing(root, config, server, name, fields)[0] == on_root(root, home):
                homes[name] = home
    return homes
