"""Per-user settings (Match blocks), per-user paths, who sshd lets in and where logins land.

Match blocks are evaluated here, not by `sshd -T -C user=...`: sshd looks a Match Group up in
this host's accounts, not the node root's; it answers one connection, where a backup takes
every Match Address/Host/LocalPort block as possibly applying; it exits on a config a backup
must still read; and it would be one sshd run per account. tests/test_openssh_match.py holds
this evaluation to sshd's for User, Group and All criteria. The smoke, which has one
connection, asks sshd itself (sandbox.sshd_view).
"""

from __future__ import annotations

import fnmatch
import glob
import posixpath
import re
import time
from pathlib import Path

from drkit.model import Manifest, PasswdEntry
from drkit.paths import on_root
from drkit.profiles.common.configrefs import is_file
from drkit.profiles.common.profile_options import options_of
from drkit.profiles.openssh.config import Config, Line, read_config
from drkit.profiles.openssh.passwd import Accounts, tilde
from drkit.profiles.openssh.policy import NAME, policy, settings

_TOKEN = re.compile(r"%(.)")


def _match_list(name: str, patterns: str) -> bool:
    """sshd's match_pattern_list: some positive pattern matches and no negated one does."""
    positive = negative = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            negative |= fnmatch.fnmatchcase(name, pattern[1:])
        elif pattern:
            positive |= fnmatch.fnmatchcase(name, pattern)
    return positive and not negative


def _applies(criteria: tuple[str, ...], user: str, db: Accounts) -> str:
    """Return whether a Match line applies to user's connections: "yes", "no" or "maybe" (it
    also tests the client's address, host or port, which only a connection knows)."""
    words = [part for word in criteria for part in word.split("=", 1) if part]
    verdicts, index = [], 0
    while index < len(words):
        key = words[index].lower()
        value = words[index + 1] if index + 1 < len(words) else ""
        index += 1 if key == "all" else 2
        if key == "all":
            verdicts.append("yes")
        elif key == "user":
            verdicts.append("yes" if _match_list(user, value) else "no")
        elif key == "group":
            names = db.groups_of(user)
            negated = any(
                fnmatch.fnmatchcase(g, p[1:])
                for g in names
                for p in value.split(",")
                if p[:1] == "!"
            )
            hit = any(_match_list(g, value) for g in names)
            verdicts.append("yes" if hit and not negated else "no")
        else:
            verdicts.append("maybe")
    if "no" in verdicts:
        return "no"
    return "maybe" if "maybe" in verdicts else "yes"


def _lines_for(config: Config, db: Accounts, user: str, keyword: str) -> list[Line]:
    """Return the lines that may set keyword for user, as sshd applies them: a Match block
    that applies overrides the global value (the first such block wins); blocks that depend on
    the connection may apply too, so they are all returned up to the first certain one."""
    found: list[Line] = []
    for line in config.lines:
        if line.keyword != keyword or line.match is None:
            continue
        verdict = _applies(line.match, user, db)
        if verdict == "yes":
            return [*found, line]
        if verdict == "maybe":
            found.append(line)
    top = [ln for ln in config.lines if ln.keyword == keyword and ln.match is None]
    return found + (top if keyword in policy().multi_valued else top[:1])


def user_setting(config: Config, db: Accounts, user: str, keyword: str, default: str) -> str:
    """Return the value sshd takes for user (a connection-dependent block counts when it is
    the only candidate)."""
    lines = _lines_for(config, db, user, keyword)
    line = lines[-1] if lines else None
    return line.args[0].lower() if line and line.args else default


def _percent(text: str, user: str, entry: PasswdEntry) -> str | None:
    """percent_expand with %h %u %U %%; None when an unknown token makes sshd give up."""
    values = {"%": "%", "u": user, "h": entry.home or "/", "U": entry.uid}
    try:
        return _TOKEN.sub(lambda token: values[token.group(1)], text)
    except KeyError:
        return None


def expand(kind: str, pattern: str, user: str, db: Accounts) -> str | None:
    """Expand a per-user path as sshd does for its directive kind (see policies/openssh.yaml):
    user_path: ~ as root at parse time, tokens, relative to the home; chroot: ~ as the user,
    tokens, absolute only."""
    entry = db.users[user]
    text = tilde(pattern, db, "root" if kind == "user_path" else user)
    text = _percent(text, user, entry) if text is not None else None
    if text is None:
        return None
    if not text.startswith("/"):
        if kind == "chroot":
            return None  # sshd: "chroot path does not begin at root"
        text = (entry.home or "/").rstrip("/") + "/" + text
    return posixpath.normpath(text)


def file_path(path: str, db: Accounts) -> str | None:
    """derelativise_path: ~ is root's home, a relative path is under sshd's working directory."""
    text = tilde(path, db, "root")
    if text is None:
        return None
    return posixpath.normpath(posixpath.join(policy().defaults.working_directory, text))


def user_paths(config: Config, db: Accounts, user: str, keyword: str) -> list[tuple[str, str]]:
    """Return [(node path, where)] of a per-user directive, expanded for user."""
    kind = policy().directives[keyword].kind
    lines = _lines_for(config, db, user, keyword)
    found: list[tuple[str, str]] = []
    if keyword == "authorizedkeysfile" and not any(ln.match is None for ln in lines):
        found += [(p, "default") for p in policy().defaults.authorized_keys_file]
    for line in lines:
        found += [(arg, line.where) for arg in line.args if arg.lower() != "none"]
    expanded = [(expand(kind, pattern, user, db), where) for pattern, where in found]
    return list(dict.fromkeys((path, where) for path, where in expanded if path))


def _refusal(config: Config, db: Accounts, root: Path, user: str) -> str | None:
    """Return why sshd's allowed_user() refuses user (auth.c), or None. Only a connection
    knows the client's host: an AllowUsers user@host pattern is taken to let the user in, a
    DenyUsers one not to keep it out."""
    pol = policy().defaults
    entry = db.users[user]
    use_pam = config.value("usepam", pol.use_pam) == "yes"
    secret = db.password(user)
    if not use_pam and secret.startswith("!"):
        return "its password is locked (UsePAM no)"
    shadow = db.shadow.get(user)
    expires = shadow.expire if shadow else ""
    if not use_pam and expires.isdigit() and int(expires) <= int(time.time() // 86400):
        return "its account has expired (UsePAM no)"
    chroot = user_setting(config, db, user, "chrootdirectory", "none")
    if chroot == "none":
        shell = entry.shell or pol.shell
        if not _executable(root, shell):
            return f"its shell {shell} does not exist or is not executable"
    groups = db.groups_of(user)
    for line in _lines_for(config, db, user, "denyusers"):
        if any(fnmatch.fnmatchcase(user, p) for p in line.args if "@" not in p):
            return f"listed in DenyUsers ({line.where})"
    allow = _lines_for(config, db, user, "allowusers")
    patterns = [p.split("@", 1)[0] for line in allow for p in line.args]
    if allow and not any(fnmatch.fnmatchcase(user, p) for p in patterns):
        return f"not listed in AllowUsers ({allow[0].where})"
    for line in _lines_for(config, db, user, "denygroups"):
        if any(fnmatch.fnmatchcase(g, p) for g in groups for p in line.args):
            return f"a group of it is listed in DenyGroups ({line.where})"
    allow = _lines_for(config, db, user, "allowgroups")
    if allow and not any(
        fnmatch.fnmatchcase(g, p) for g in groups for ln in allow for p in ln.args
    ):
        return f"none of its groups is listed in AllowGroups ({allow[0].where})"
    return None


def _executable(root: Path, program: str) -> bool:
    """Return whether a packaged program (a shell) is an executable file on the node, or on
    this host when the root does not hold it (a restore target, a config-only tree)."""
    for host in (on_root(root, program), Path(program)):
        if host.is_file():
            return bool(host.stat().st_mode & 0o111)
    return False


def can_authenticate(config: Config, db: Accounts, root: Path, user: str) -> bool:
    """Return whether user holds a credential sshd would take: an authorized keys or
    principals file, or a password hash where password or keyboard-interactive login is on
    (and allowed for root), within AuthenticationMethods."""
    pol = policy().defaults

    def on(keyword: str, default: str) -> bool:
        return user_setting(config, db, user, keyword, default) == "yes"

    key = on("pubkeyauthentication", pol.pubkey_authentication) and any(
        is_file(root, path)
        for keyword in ("authorizedkeysfile", "authorizedprincipalsfile")
        for path, _ in user_paths(config, db, user, keyword)
    )
    secret = db.password(user)
    usable = secret not in ("", "x") and not secret.startswith(("*", "!"))
    empty = secret == "" and on("permitemptypasswords", pol.permit_empty_passwords)
    use_pam = config.value("usepam", pol.use_pam) == "yes"
    password = (usable or empty) and (
        on("passwordauthentication", pol.password_authentication)
        or (use_pam and on("kbdinteractiveauthentication", pol.kbd_interactive_authentication))
    )
    if db.users[user].uid == "0":
        permit = user_setting(config, db, user, "permitrootlogin", pol.permit_root_login)
        password = password and permit == "yes"
        key = key and permit != "no"
    methods = user_setting(config, db, user, "authenticationmethods", "any")
    if methods != "any":
        lines = _lines_for(config, db, user, "authenticationmethods")
        have = {"publickey": key, "password": password, "keyboard-interactive": password}
        return any(
            all(have.get(method.split(":", 1)[0], False) for method in chain.split(","))
            for chain in (lines[-1].args if lines else ())
        )
    return key or password


def node_users(
    config: Config, db: Accounts, root: Path, smoke_user: str | None
) -> tuple[list[str], list[str]]:
    """Return (the users whose accounts, keys and homes belong to the node, warnings).

    Named users come from AllowUsers, AllowGroups, Match User/Group blocks, the groups a
    DenyGroups list exempts (`*,!lega`) and the accounts the key and principals commands run
    as; without an allow list, every account of the node that sshd lets in and that holds a
    credential. A named user that DenyUsers or DenyGroups refuses is left out with a warning,
    unless it is the only member of a named group: the manifest carries a group's entry with
    its members, so that one is kept (and the warning says so).
    """
    named: list[str] = []
    groups = _named_groups(config, db)
    for line in config.lines:
        if line.keyword == "allowusers":
            for pattern in line.args:
                user = pattern.split("@", 1)[0]
                matched = [n for n in db.users if fnmatch.fnmatchcase(n, user)]
                named += matched or ([user] if not glob.has_magic(user) else [])
        elif line.keyword in ("allowgroups", "denygroups"):
            in_line = [g for g, where in groups.items() if where == line.where]
            named += [u for g in in_line for u in db.members(g)]
        elif line.keyword == "match":
            named += _match_named(line.args or ("all",), db)
        elif line.keyword in _RUN_AS and line.args and line.args[0] != "root":
            named.append(line.args[0])  # the account sshd runs the command as
    if smoke_user:
        named.append(smoke_user)
    names, warnings, refused = [], [], []
    for user in dict.fromkeys(named):
        if user not in db.users:
            warnings.append(f"user {user} is named by the config but not in the node's accounts")
            continue
        why = _refusal(config, db, root, user)
        if why and "Deny" in why and user != smoke_user:
            refused.append((user, why))
            continue
        names.append(user)
    if not any(ln.keyword in ("allowusers", "allowgroups") for ln in config.lines):
        names += [
            user
            for user in db.users
            if user not in names
            and user not in named
            and _refusal(config, db, root, user) is None
            and can_authenticate(config, db, root, user)
        ]
    for user, why in refused:
        carried = [
            f"{group} ({where})"
            for group, where in groups.items()
            if user in db.members(group) and not set(names) & set(db.members(group))
        ]
        if carried:
            names.append(user)
            warnings.append(
                f"user {user} is kept for the entry of group {', '.join(carried)}, of which no "
                f"other account is kept, though sshd refuses it: {why}"
            )
        else:
            warnings.append(f"user {user} is named by the config, but sshd refuses it: {why}")
    for group, where in groups.items():
        if not db.members(group):
            warnings.append(
                f"group {group} ({where}) has no member among the node's accounts: the "
                "snapshot carries no entry of it (groups are recorded with their members)"
            )
    return names, warnings


def _named_groups(config: Config, db: Accounts) -> dict[str, str]:
    """Return {group: where} of the node's groups the config names: AllowGroups words (a comma
    list's items too), the exemptions of a DenyGroups list (`*,!lega` names lega) and the
    literal groups of Match Group lists, negated ones included."""
    found: dict[str, str] = {}
    for line in config.lines:
        if line.keyword == "match":
            words = [part for word in line.args for part in word.split("=", 1) if part]
            keys = [word.lower() for word in words]
            items = [
                item.lstrip("!")
                for at, key in enumerate(keys[:-1])
                if key == "group"
                for item in words[at + 1].split(",")
                if not glob.has_magic(item.lstrip("!"))
            ]
        elif line.keyword in ("allowgroups", "denygroups"):
            negated = line.keyword == "denygroups"
            items = [
                item.lstrip("!")
                for word in line.args
                for item in word.split(",")
                if item and (item.startswith("!") == negated)
            ]
        else:
            continue
        for pattern in items:
            for entry in db.groups:
                if pattern and fnmatch.fnmatchcase(entry.name, pattern):
                    found.setdefault(entry.name, line.where)
    return found


_RUN_AS = ("authorizedkeyscommanduser", "authorizedprincipalscommanduser")


def _match_named(criteria: tuple[str, ...], db: Accounts) -> list[str]:
    """Return the users a Match block with User or Group criteria may apply to (the literal
    names of a User list included, so an account missing from the node is reported)."""
    words = [part for word in criteria for part in word.split("=", 1) if part]
    keys = [w.lower() for w in words]
    if "user" not in keys and "group" not in keys:
        return []
    found = [u for u in db.users if _applies(criteria, u, db) != "no"]
    if "user" in keys:
        value = words[keys.index("user") + 1] if keys.index("user") + 1 < len(words) else ""
        found += [p for p in value.split(",") if p and p[0] != "!" and not glob.has_magic(p)]
    return found


def login_homes(root: Path, manifest: Manifest) -> dict[str, str]:
    """Return {account: node path} where sshd starts each of the manifest's accounts: its
    passwd home, inside its ChrootDirectory (tokens and ~ expanded, the Match block that
    applies) when it has one. A home that is a placeholder names no directory."""
    root = Path(root)
    config = read_config(root, settings(options_of(manifest, NAME)).config)
    db = Accounts.of(root)
    no_home = set(policy().defaults.no_home)
    homes = {}
    for name in [account.name for account in manifest.accounts]:
        home = db.home(name)
        if home is None or not home.startswith("/") or home in no_home:
            continue
        lines = _lines_for(config, db, name, "chrootdirectory")
        chroot = lines[-1].args[0] if lines and lines[-1].args else "none"
        if chroot.lower() == "none":
            homes[name] = posixpath.normpath(home)
            continue
        inside = expand("chroot", chroot, name, db)
        if inside is not None:
            homes[name] = posixpath.normpath(posixpath.join(inside, home.lstrip("/")))
    return homes
