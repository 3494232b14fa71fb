"""OpenSSH sftp nodes: read sshd_config as sshd does, back up what it names, prove a restore.

The raw config is parsed here (not `sshd -T`): Include lines only show in the raw files, and a
config with an unknown keyword must still be backed up; files are read through their symlinks
resolved inside the node root. The smoke runs the node's own config and asks sshd itself
(`sshd -T -C`) what applies to its user. What the profile backs up, which directives name
files and the mode rules come from policies/openssh.yaml.
"""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import posixpath
import pwd
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

from drkit import errors, runner
from drkit.engines import accounts, keys
from drkit.model import Check, Entry, Inventory, SmokeResult, failed, passed, utc_text, warned
from drkit.paths import on_root, to_node
from drkit.profiles import common
from drkit.profiles.common import Ref
from drkit.profiles.interface import ModuleProfile, Signs

NAME = "openssh"
POLICY_FILE = "openssh.yaml"
_TOKEN = re.compile(r"%(.)")
_KEYWORD = re.compile(r"^\s*([^\s=]+)\s*(?:=\s*|\s+|$)(.*)$")


@functools.cache
def policy() -> dict:
    """Return policies/openssh.yaml."""
    return yaml.safe_load((common.policy_dir() / POLICY_FILE).read_text())


# --- reading sshd_config ----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One directive: lower-case keyword, arguments, where it is, and its Match criteria."""

    keyword: str
    args: tuple[str, ...]
    source: str
    number: int
    match: tuple[str, ...] | None

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"


@dataclass
class Config:
    """Every directive of sshd_config and its Includes, in the order sshd reads them."""

    main: str = ""
    lines: list[Line] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    include_hits: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    include_patterns: list[str] = field(default_factory=list)
    missing_includes: list[tuple[Line, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # {file as named: (the file it resolves to inside the root, the links on the way)}
    links: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def first(self, keyword: str) -> Line | None:
        """Return the global line that sets keyword (the first one wins), else None."""
        return next((ln for ln in self.lines if ln.keyword == keyword and ln.match is None), None)

    def value(self, keyword: str, default: str) -> str:
        line = self.first(keyword)
        return line.args[0].lower() if line and line.args else default

    def effective(self, keyword: str) -> list[Line]:
        """Return the global line(s) that take effect, then every Match-block line."""
        multi = keyword in policy()["multi_valued"]
        top = [ln for ln in self.lines if ln.keyword == keyword and ln.match is None]
        in_match = [ln for ln in self.lines if ln.keyword == keyword and ln.match is not None]
        return (top if multi else top[:1]) + in_match


def parse_line(raw: str) -> tuple[str, str, list[str]] | None:
    """Return (keyword as written, lower-case keyword, args) of a config line, else None."""
    stripped = raw.strip()
    if not stripped or stripped.startswith("#"):
        return None
    found = _KEYWORD.match(stripped)
    if not found:
        return None
    return found.group(1), found.group(1).lower(), common.split_args(found.group(2))


def _alias(keyword: str) -> str:
    """Return the keyword sshd reads a (lower-case) keyword as."""
    return policy()["aliases"].get(keyword, keyword)


def _glob(root: Path, pattern: str) -> list[str]:
    """Return the node paths of the files that match a node glob, sorted as glob(3) does; every
    symlink on the way is followed inside root (a node's link never leads out of it)."""
    current = ["/"]
    for part in [p for p in posixpath.normpath("/" + pattern.lstrip("/")).split("/") if p]:
        if not glob.has_magic(part):
            current = [posixpath.join(base, part) for base in current]
            continue
        found = []
        for base in current:
            try:
                names = sorted(os.listdir(on_root(root, _node_links(root, base)[0])))
            except OSError:
                continue
            found += [
                posixpath.join(base, name)
                for name in names
                if fnmatch.fnmatchcase(name, part) and (part[0] == "." or name[0] != ".")
            ]
        current = found
    return sorted(p for p in current if _globbed(root, p))


def _globbed(root: Path, node_path: str) -> bool:
    """Return whether glob(3) lists node_path as sshd's Include takes it: a file, or a symlink
    whatever it points to (sshd then fails to open a dangling one), not a directory."""
    real = on_root(root, _node_links(root, node_path)[0])
    if real.is_file():
        return True
    parent = on_root(root, _node_links(root, posixpath.dirname(node_path))[0])
    return (parent / posixpath.basename(node_path)).is_symlink() and not real.is_dir()


def _node_links(root: Path, node_path: str) -> tuple[str, list[str]]:
    """Return (node_path with its symlinks resolved inside root, the node paths of the links
    followed on the way): an absolute target starts again at root, `..` stops at root, so a
    link never leads out of it. A missing component ends the walk (the rest kept as written)."""
    parts = [p for p in node_path.split("/") if p]
    resolved, links = "/", []
    while parts:
        name = parts.pop(0)
        if name in (".", ".."):
            resolved = resolved if name == "." else posixpath.dirname(resolved)
            continue
        current = posixpath.join(resolved, name)
        host = Path(str(root).rstrip("/") + current)
        if not host.is_symlink() or len(links) >= 40:
            resolved = current
            if not host.exists() and not host.is_symlink():
                return posixpath.join(resolved, *parts), links
            continue
        links.append(current)
        target = os.readlink(host)
        parts = [p for p in target.split("/") if p] + parts
        resolved = "/" if target.startswith("/") else resolved
    return resolved, links


def _node_realpath(root: Path, node_path: str) -> str:
    """Resolve symlinks of a node path within root (absolute targets are node paths)."""
    return _node_links(root, node_path)[0]


def read_config(root: Path, main: str | None = None) -> Config:
    """Parse the node's sshd_config and everything it Includes (missing parts become warnings)."""
    config = Config(main=main or policy()["config"]["main"])
    _read_file(Path(root), config.main, None, config, ())
    return config


def _read_file(root: Path, node_path: str, match, config: Config, stack: tuple[str, ...]) -> None:
    settings = policy()["config"]
    real, links = _node_links(root, node_path)
    known = real in config.files
    text = common.read_config_text(root, real, config)
    if text is None:
        return
    if real != node_path:  # read through links as sshd reads it; named as the config names it
        if not known:
            config.files.remove(real)
        config.files.append(node_path)
        config.texts[node_path] = text
        config.links[node_path] = (real, links)
    for number, _, keyword, args in common.parsed_lines(text, parse_line):
        keyword = _alias(keyword)
        if keyword == "match":
            match = tuple(args) or ("all",)
        line = Line(keyword, tuple(args), node_path, number, match)
        config.lines.append(line)
        if keyword != "include":
            continue
        hits: list[str] = []
        for pattern in args:
            if pattern.startswith("~"):  # glob(3) GLOB_TILDE, as root
                pattern = _tilde(pattern, Accounts.of(root), "root") or pattern
            absolute = posixpath.normpath(posixpath.join(settings["include_base"], pattern))
            config.include_patterns.append(absolute)
            matched = _glob(root, absolute)
            if not matched and not glob.has_magic(absolute):
                config.missing_includes.append((line, absolute))
            hits += matched
        config.include_hits[(node_path, number)] = hits
        for hit in hits:
            if not on_root(root, _node_realpath(root, hit)).is_file():
                config.missing_includes.append((line, hit))  # a dangling link: sshd cannot open it
                continue
            if hit in stack or len(stack) >= settings["max_include_depth"]:
                config.warnings.append(f"Include {hit} ({line.where}) nests too deep; skipped")
                continue
            _read_file(root, hit, match, config, (*stack, node_path))


# --- options ----------------------------------------------------------------------------------


def settings(options: dict | None) -> dict:
    """Return profile_options.openssh over the policy's defaults; raise ConfigError naming the
    first unknown or malformed setting."""
    pol, options = policy(), dict(options or {})
    unknown = sorted(set(options) - set(pol["options"]))
    if unknown:
        raise errors.ConfigError(f"profile_options.openssh.{unknown[0]}: unknown setting")
    config = options.get("config", pol["config"]["main"])
    if not isinstance(config, str) or not config.startswith("/"):
        raise errors.ConfigError("profile_options.openssh.config: must be an absolute node path")
    service = options.get("pam_service", pol["config"]["pam_service"])
    if not isinstance(service, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", service):
        raise errors.ConfigError("profile_options.openssh.pam_service: must be a PAM service name")
    return {"config": posixpath.normpath(config), "pam_service": service}


# --- accounts and per-user paths --------------------------------------------------------------


@dataclass
class Accounts:
    """The node's passwd, group and shadow records."""

    users: dict[str, list[str]]
    groups: list[list[str]]
    shadow: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, root: Path) -> Accounts:
        users = accounts.passwd_entries(root)
        shadow = {
            entry["name"]: (entry["shadow"].split(":") + [""] * 9)[:9]
            for entry in accounts.read_entries(root, list(users))
            if entry.get("shadow")
        }
        return cls(users, accounts.group_entries(root), shadow)

    def groups_of(self, user: str) -> list[str]:
        """Return the names of user's primary and supplementary groups."""
        gid = self.users[user][3] if user in self.users else None
        return [g[0] for g in self.groups if g[2] == gid or user in g[3].split(",")]

    def home(self, user: str) -> str | None:
        entry = self.users.get(user)
        return (entry[5] or "/") if entry else None


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
    return found + (top if keyword in policy()["multi_valued"] else top[:1])


def _setting(config: Config, db: Accounts, user: str, keyword: str, default: str) -> str:
    """Return the value sshd takes for user (a connection-dependent block counts when it is
    the only candidate)."""
    lines = _lines_for(config, db, user, keyword)
    line = lines[-1] if lines else None
    return line.args[0].lower() if line and line.args else default


def _tilde(path: str, db: Accounts, as_user: str) -> str | None:
    """tilde_expand_filename: ~/ is as_user's home, ~name/ name's; None for an unknown name."""
    if not path.startswith("~"):
        return path
    head, _, rest = path[1:].partition("/")
    home = db.home(head or as_user)
    if home is None:
        return "/root/" + rest if not head and as_user == "root" else None
    return home.rstrip("/") + "/" + rest


def _percent(text: str, user: str, entry: list[str]) -> str | None:
    """percent_expand with %h %u %U %%; None when an unknown token makes sshd give up."""
    values = {"%": "%", "u": user, "h": entry[5] or "/", "U": entry[2]}
    try:
        return _TOKEN.sub(lambda token: values[token.group(1)], text)
    except KeyError:
        return None


def _expand(kind: str, pattern: str, user: str, db: Accounts) -> str | None:
    """Expand a per-user path as sshd does for its directive kind (see policies/openssh.yaml):
    user_path: ~ as root at parse time, tokens, relative to the home; chroot: ~ as the user,
    tokens, absolute only."""
    entry = db.users[user]
    text = _tilde(pattern, db, "root" if kind == "user_path" else user)
    text = _percent(text, user, entry) if text is not None else None
    if text is None:
        return None
    if not text.startswith("/"):
        if kind == "chroot":
            return None  # sshd: "chroot path does not begin at root"
        text = (entry[5] or "/").rstrip("/") + "/" + text
    return posixpath.normpath(text)


def _file_path(path: str, db: Accounts) -> str | None:
    """derelativise_path: ~ is root's home, a relative path is under sshd's working directory."""
    text = _tilde(path, db, "root")
    if text is None:
        return None
    return posixpath.normpath(posixpath.join(policy()["defaults"]["working_directory"], text))


def _user_paths(config: Config, db: Accounts, user: str, keyword: str) -> list[tuple[str, str]]:
    """Return [(node path, where)] of a per-user directive, expanded for user."""
    kind = policy()["directives"][keyword]["kind"]
    lines = _lines_for(config, db, user, keyword)
    found: list[tuple[str, str]] = []
    if keyword == "authorizedkeysfile" and not any(ln.match is None for ln in lines):
        found += [(p, "default") for p in policy()["defaults"]["authorized_keys_file"]]
    for line in lines:
        found += [(arg, line.where) for arg in line.args if arg.lower() != "none"]
    expanded = [(_expand(kind, pattern, user, db), where) for pattern, where in found]
    return list(dict.fromkeys((path, where) for path, where in expanded if path))


# --- who sshd lets in -------------------------------------------------------------------------


def _refusal(config: Config, db: Accounts, root: Path, user: str) -> str | None:
    """Return why sshd's allowed_user() refuses user (auth.c), or None. Only a connection
    knows the client's host: an AllowUsers user@host pattern is taken to let the user in, a
    DenyUsers one not to keep it out."""
    pol = policy()["defaults"]
    entry = db.users[user]
    use_pam = config.value("usepam", pol["use_pam"]) == "yes"
    secret = db.shadow.get(user, ["", entry[1]])[1]
    if not use_pam and secret.startswith("!"):
        return "its password is locked (UsePAM no)"
    expires = db.shadow.get(user, [""] * 9)[7]
    if not use_pam and expires.isdigit() and int(expires) <= int(time.time() // 86400):
        return "its account has expired (UsePAM no)"
    chroot = _setting(config, db, user, "chrootdirectory", "none")
    if chroot == "none":
        shell = entry[6] or pol["shell"]
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


def _can_authenticate(config: Config, db: Accounts, root: Path, user: str) -> bool:
    """Return whether user holds a credential sshd would take: an authorized keys or
    principals file, or a password hash where password or keyboard-interactive login is on
    (and allowed for root), within AuthenticationMethods."""
    pol = policy()["defaults"]

    def on(keyword: str, default: str) -> bool:
        return _setting(config, db, user, keyword, default) == "yes"

    key = on("pubkeyauthentication", pol["pubkey_authentication"]) and any(
        common.is_file(root, path)
        for keyword in ("authorizedkeysfile", "authorizedprincipalsfile")
        for path, _ in _user_paths(config, db, user, keyword)
    )
    secret = db.shadow.get(user, ["", db.users[user][1]])[1]
    usable = secret not in ("", "x") and not secret.startswith(("*", "!"))
    empty = secret == "" and on("permitemptypasswords", pol["permit_empty_passwords"])
    use_pam = config.value("usepam", pol["use_pam"]) == "yes"
    password = (usable or empty) and (
        on("passwordauthentication", pol["password_authentication"])
        or (use_pam and on("kbdinteractiveauthentication", pol["kbd_interactive_authentication"]))
    )
    if db.users[user][2] == "0":
        permit = _setting(config, db, user, "permitrootlogin", pol["permit_root_login"])
        password = password and permit == "yes"
        key = key and permit != "no"
    methods = _setting(config, db, user, "authenticationmethods", "any")
    if methods != "any":
        lines = _lines_for(config, db, user, "authenticationmethods")
        have = {"publickey": key, "password": password, "keyboard-interactive": password}
        return any(
            all(have.get(method.split(":", 1)[0], False) for method in chain.split(","))
            for chain in (lines[-1].args if lines else ())
        )
    return key or password


def _users(config: Config, db: Accounts, root: Path, smoke_user: str | None):
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
            named += [u for g in in_line for u in accounts.group_members(db.users, db.groups, g)]
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
            and _can_authenticate(config, db, root, user)
        ]
    for user, why in refused:
        carried = [
            f"{group} ({where})"
            for group, where in groups.items()
            if user in accounts.group_members(db.users, db.groups, group)
            and not set(names) & set(accounts.group_members(db.users, db.groups, group))
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
        if not accounts.group_members(db.users, db.groups, group):
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
                if pattern and fnmatch.fnmatchcase(entry[0], pattern):
                    found.setdefault(entry[0], line.where)
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


# --- what the config names ----------------------------------------------------------------------


def references(
    root: Path, config: Config, db: Accounts, users: list[str], pam_service: str | None = None
) -> list[Ref]:
    """Return every node path the config names, with category and whether it must exist."""
    pol = policy()
    refs = [
        Ref(path, "config", "include", line.where, True) for line, path in config.missing_includes
    ]
    for keyword, rule in pol["directives"].items():
        kind, category, required = rule["kind"], rule["category"], rule["required"]
        if kind in ("user_path", "chroot"):
            for user in users:
                refs += [
                    Ref(path, category, keyword, where, required, kind == "chroot", user)
                    for path, where in _user_paths(config, db, user, keyword)
                    if path != "/"
                ]
            continue
        for line in config.effective(keyword):
            args = line.args
            if kind in ("path", "paths") and args and args[0].lower() != "none":
                for arg in args if kind == "paths" else args[:1]:
                    path = _file_path(arg, db)
                    if path:
                        refs.append(Ref(path, category, keyword, line.where, required))
            elif kind == "command" and args and args[0].startswith("/"):
                refs.append(Ref(args[0], category, keyword, line.where, required))
                if keyword in pol["node_programs"]:
                    refs += [
                        Ref(arg, "config", keyword, line.where, False)
                        for arg in args[1:]
                        if arg.startswith("/") and "%" not in arg and common.is_file(root, arg)
                    ]
            elif kind == "subsystem" and len(args) > 1 and args[1].startswith("/"):
                refs.append(Ref(args[1], category, keyword, line.where, required))
    if not config.effective("hostkey"):
        refs += [
            Ref(p, "host_keys", "hostkey", "default", False) for p in pol["defaults"]["host_keys"]
        ]
    if not config.effective("modulifile"):
        refs.append(Ref(pol["defaults"]["moduli"], "config", "modulifile", "default", False))
    for pattern in config.include_patterns:
        if glob.has_magic(pattern):
            parent = pattern
            while glob.has_magic(parent):
                parent = posixpath.dirname(parent)
            refs.append(Ref(parent, "config", "include", "Include glob", False, True))
    if config.value("usepam", pol["defaults"]["use_pam"]) == "yes":
        refs += _pam_refs(root, config, pam_service or pol["config"]["pam_service"])
    refs += _integration_refs(root)
    no_home = set(pol["defaults"]["no_home"])
    for user in users:
        home = db.home(user)
        if home and home not in no_home and db.users[user][2] != "0":
            refs.append(
                Ref(posixpath.normpath(home), "chroot", "home", "passwd", False, True, user)
            )
    return list(dict.fromkeys(refs))


def _pam_refs(root: Path, config: Config, service: str) -> list[Ref]:
    """The PAM service file UsePAM reads and the files it includes (@include, include,
    substack), as far as they are on the node (common.read_pam, as vsftpd and proftpd read
    theirs)."""
    pam_dir = policy()["config"]["pam_dir"]
    usepam = config.first("usepam")
    service_file = f"{pam_dir}/{service}"
    stack = common.read_pam(root, service_file, pam_dir)
    return [
        Ref(service_file, "config", "usepam", usepam.where, True),
        *(Ref(path, "config", "pam", where, False) for path, where in stack.includes),
    ]


def _integration_refs(root: Path) -> list[Ref]:
    """NSS, LDAP and sssd files on the node (how accounts and keys reach sshd from an
    authority) and the CA bundles, certificates and keys they name."""
    rules = policy()["integration"]
    found = [path for path in rules["files"] if common.is_file(root, path)]
    for pattern in rules["globs"]:
        found += _glob(root, pattern)
    refs = []
    for path in found:
        refs.append(Ref(path, "config", "integration", "present on the node", False))
        for setting, value, where in _tls_settings(root, path):
            directory = setting.endswith("dir")
            refs.append(Ref(value, "tls", setting, where, True, directory))
    return refs


def _tls_settings(root: Path, path: str) -> list[tuple[str, str, str]]:
    """Return (setting, node path, where) of the CA/certificate/key settings in a file."""
    wanted = set(policy()["integration"]["tls_settings"])
    found = []
    try:
        text = on_root(root, path).read_text(errors="replace")
    except OSError:
        return []
    for number, raw in enumerate(text.splitlines(), 1):
        hit = re.match(r"\s*([A-Za-z_]+)\s*(?:=\s*|\s+)(/\S*)\s*$", raw)
        if hit and hit.group(1).lower() in wanted:
            found.append((hit.group(1).lower(), hit.group(2), f"{path} line {number}"))
    return found


def _packaged(ref: Ref) -> bool:
    """A program from a package (sftp-server): checked on the host, never backed up."""
    pol = policy()
    return (
        ref.category == "scripts"
        and ref.directive not in pol["node_programs"]
        and ref.path.startswith(tuple(pol["packaged_programs"]))
    )


def inventory(root: Path, smoke_user: str | None, options: dict | None = None) -> Inventory:
    """Return what makes this OpenSSH node: its files, chroot trees and homes, users and
    warnings. options: profile_options.openssh (config, pam_service)."""
    pol, root, chosen = policy(), Path(root), settings(options)
    config = read_config(root, chosen["config"])
    found = Inventory(owned_globs=list(pol["owned_globs"]), warnings=list(config.warnings))
    base = pol["config"]["include_base"].rstrip("/") + "/"
    for pattern in config.include_patterns:
        if pattern.startswith(base) and pattern not in found.owned_globs:
            found.owned_globs.append(pattern)
    if config.main not in config.files:
        return found
    if config.main not in found.owned_globs:
        found.owned_globs.append(config.main)
    seen: set[str] = set()

    def add(path: str, category: str) -> None:
        if path not in seen:
            seen.add(path)
            found.files.append(Entry(path, category))

    for path in config.files:  # a file read through links: each link and its target
        real, links = config.links.get(path, (path, []))
        for each in (*links, real):
            add(each, "config")
    db = Accounts.of(root)
    users, warnings = _users(config, db, root, smoke_user)
    found.users, found.warnings = users, found.warnings + warnings
    refs = references(root, config, db, users, chosen["pam_service"])
    for ref in refs:
        real, links = _node_links(root, ref.path)
        host = on_root(root, real)
        if _packaged(ref):
            continue  # the distribution's own program: the package restores it, not drkit
        for link in links:  # the node's links on the way are part of it, as its target is
            add(link, ref.category)
        if ref.directory and host.is_dir():
            if real not in {entry.path for entry in found.dirs}:
                found.dirs.append(Entry(real, ref.category))
                for path in common.walk_files(root, real):
                    add(path, ref.category)
        elif not ref.directory and host.is_file():
            add(real, ref.category)
            pub = ref.path + ".pub"
            if ref.directive == "hostkey" and common.is_file(root, _node_realpath(root, pub)):
                for each in (*_node_links(root, pub)[1], _node_realpath(root, pub)):
                    add(each, ref.category)
        elif ref.required:
            found.warnings.append(f"{_label(ref)} {ref.path} ({ref.where}) is missing")
    if not any(r.directive == "hostkey" and common.is_file(root, r.path) for r in refs):
        found.warnings.append("no host key found: clients will see a new server")
    for user in users:
        if not _can_authenticate(config, db, root, user):
            found.warnings.append(f"user {user} has no authorized keys file or password")
    found.warnings = list(dict.fromkeys(found.warnings))
    return found


def _label(ref: Ref) -> str:
    """Return the directive's name as sshd_config spells it."""
    names = {"usepam": "UsePAM", "home": "home of", "pam": "PAM include", "integration": "file"}
    if ref.directive in names:
        return names[ref.directive]
    return policy()["directives"].get(ref.directive, {}).get("name", ref.directive)


# --- a runnable copy of the config ---------------------------------------------------------


def _quote(arg: str) -> str:
    if arg and not re.search(r"[\s\"'#\\]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _onto(root: Path, path: str) -> str:
    """Map a path onto root, keeping %-tokens; a leading %h or ~ is a home, also mapped."""
    if str(root) == "/":
        return path
    if path.startswith(("%h", "~")):
        return str(root).rstrip("/") + (path if path.startswith("%h") else "%h" + path[1:])
    return str(on_root(root, path)) if path.startswith("/") else path


def _map_line(root: Path, keyword: str, args: list[str], smoke: dict | None) -> list[str] | None:
    """Return the arguments with node paths mapped onto root, or None when nothing changes."""
    rule = policy()["directives"].get(keyword)
    if rule is None or not args:
        return None
    kind, new = rule["kind"], list(args)
    if kind in ("path", "paths") and args[0].lower() != "none":
        count = len(args) if kind == "paths" else 1
        new[:count] = [str(on_root(root, arg)) for arg in args[:count]]
    elif kind == "user_path":
        new = [a if a.lower() == "none" else _onto(root, a) for a in args]
    elif kind == "chroot" and args[0].lower() != "none":
        expanded = smoke and _expand("chroot", args[0], smoke["user"], smoke["db"])
        new[0] = str(on_root(root, expanded)) if expanded else _onto(root, args[0])
    elif kind in ("command", "subsystem"):
        position = 0 if kind == "command" else 1
        program = args[position] if len(args) > position else ""
        if program.startswith("/") and on_root(root, program).exists():
            new[position] = str(on_root(root, program))
        elif (
            smoke and kind == "subsystem" and program.startswith("/") and not Path(program).exists()
        ):
            new[position] = policy()["smoke"]["missing_subsystem"]
            smoke.setdefault("replaced", []).append((args[0], program))
    return new if new != args else None


def write_copy(root: Path, config: Config, out_dir: Path, smoke: dict | None = None):
    """Write runnable copies of the config files under out_dir, node paths mapped onto root.

    smoke adds {"prepend": [lines], "authorized_keys": path, "user", "db"}: the listen and
    runtime keywords (policy smoke.drop) are dropped, the sandbox key file is added beside
    every AuthorizedKeysFile's own, and a `PubkeyAuthentication no` or an AuthenticationMethods
    no key alone satisfies is commented out, each such change listed in smoke["differences"]
    (the smoke warns of them); prepended lines win.
    Return (main copy, {copy path: (node path, lines prepended)}).
    """
    root, pol = Path(root), policy()
    main = config.main
    copies = {node: out_dir / node.lstrip("/") for node in config.files}
    drop = set(pol["smoke"]["drop"]) if smoke else set()
    names: dict[str, tuple[str, int]] = {}
    # Without HostKey lines sshd loads its compiled-in defaults, which a copy would take from
    # this host: name the root's own.
    default_keys = [
        f"HostKey {_quote(str(on_root(root, path)))}"
        for path in ([] if config.effective("hostkey") else pol["defaults"]["host_keys"])
        if common.is_file(root, path)
    ]
    if default_keys:
        default_keys.insert(0, "# drkit: sshd's default host keys, from the node")
    prepend = list(smoke["prepend"]) if smoke else []
    if smoke and config.first("authorizedkeysfile") is None:
        defaults = pol["defaults"]["authorized_keys_file"]
        prepend.append(
            f"AuthorizedKeysFile {' '.join(map(_quote, [smoke['authorized_keys'], *defaults]))}"
        )

    def rewrite(node: str, number: int, raw: str, token: str, keyword: str, args: list[str]):
        if keyword in drop:
            return [f"# drkit smoke: {raw.strip()}"]
        if smoke and (why := _keeps_the_key_out(keyword, args)):
            smoke.setdefault("differences", []).append(
                f"{raw.strip()} ({node} line {number}) commented out for the run: {why}"
            )
            return [f"# drkit smoke: {raw.strip()}"]
        if smoke and keyword == "authorizedkeysfile":
            own = [
                a for a in (_map_line(root, keyword, args, smoke) or args) if a.lower() != "none"
            ]
            return [f"{token} {' '.join(map(_quote, [smoke['authorized_keys'], *own]))}"]
        if keyword == "include":
            hits = config.include_hits.get((node, number), [])
            for hit in (h for h in hits if h not in copies):  # a link the node cannot open:
                dangling = out_dir / hit.lstrip("/")  # the copy holds one too, sshd says so
                dangling.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not dangling.is_symlink():
                    dangling.symlink_to(on_root(root, _node_realpath(root, hit)))
                names[str(dangling)] = (hit, 0)
            hits = [str(copies.get(hit, out_dir / hit.lstrip("/"))) for hit in hits]
            return [f"{token} {' '.join(map(_quote, hits))}" if hits else f"# {raw.strip()}"]
        if (mapped := _map_line(root, keyword, args, smoke)) is not None:
            return [f"{token} {' '.join(map(_quote, mapped))}"]
        return [raw]

    for node, copy in copies.items():
        out = common.rewritten_lines(
            config.texts[node], parse_line, functools.partial(rewrite, node)
        )
        first = [*prepend, *default_keys] if node == main else []
        common.write_config_copy(copy, [*first, *out])
        names[str(copy)] = (node, len(first))
    return copies[main], names


def _keeps_the_key_out(keyword: str, args: list[str]) -> str | None:
    """Return why a line would refuse the smoke's one-run key (PubkeyAuthentication no, an
    AuthenticationMethods list in which no chain is the key alone), else None."""
    if keyword == "pubkeyauthentication" and args and args[0].lower() == "no":
        return "public key login is off on the node; the run logs in with its own key"
    chains = [a.lower() for a in args]
    if keyword == "authenticationmethods" and chains and not {"any", "publickey"} & set(chains):
        return "no method chain is a key alone; the run logs in with its own key only"
    return None


def _node_text(text: str, names: dict[str, tuple[str, int]], root: Path) -> str:
    """Rewrite sshd's messages about copies into node paths and line numbers."""
    for copy, (node, offset) in names.items():
        text = re.sub(
            re.escape(copy) + r"(\W+line )(\d+)",
            lambda m, node=node, offset=offset: f"{node}{m.group(1)}{int(m.group(2)) - offset}",
            text,
        )
        text = text.replace(copy, node)
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


# --- static checks ------------------------------------------------------------------------------


@common.options_fail_as("config: profile options")
def checks(root: Path, manifest: dict) -> list[Check]:
    """Return the static checks of a restored (or live) node against its manifest."""
    root = Path(root)
    chosen = settings(common.options_of(manifest, NAME))
    config = read_config(root, chosen["config"])
    if config.main not in config.files:
        return [failed("config: sshd_config", f"{config.main} is missing or unreadable")]
    db = Accounts.of(root)
    users, _ = _users(config, db, root, None)
    users += [a["name"] for a in manifest.get("accounts", []) if a["name"] in db.users]
    refs = references(root, config, db, list(dict.fromkeys(users)), chosen["pam_service"])
    in_target = [r for r in refs if not _packaged(r)]
    return [
        _config_test(root, config),
        *common.named_files_check(root, in_target, directive_name=_label),
        *_host_program_checks(root, [r for r in refs if _packaged(r)]),
        *_host_key_checks(root, refs, manifest),
        *_host_certificate_checks(root, refs),
        *_user_key_checks(root, refs, config, db),
        *_chroot_checks(root, refs),
        *_command_checks(root, refs, config, db),
        *_integration_checks(root, refs),
        *_certificate_checks(root, manifest),
    ]


def _host_program_checks(root: Path, refs: list[Ref]) -> list[Check]:
    """Packaged programs (Subsystem sftp-server, ...) on the host that runs the server: this
    one. A node checked in place (root /) fails without them; a restore target only warns,
    since the machine that will run it may install the package."""
    return [_host_program_check(root, ref) for ref in {r.path: r for r in reversed(refs)}.values()]


def _host_program_check(root: Path, ref: Ref) -> Check:
    name, said, host = f"program: {ref.path}", f"{_label(ref)} ({ref.where})", Path(ref.path)
    if host.is_file() and os.access(host, os.X_OK):
        return passed(name, f"{said}: packaged, found on this host at {host}")
    if str(root) == "/":
        return failed(name, f"{said}: not on this node (looked at {host})")
    detail = f"{said}: packaged, not on this host (looked at {host}); install it where the"
    return warned(name, f"{detail} restored server will run")


def _host_certificate_checks(root: Path, refs: list[Ref]) -> list[Check]:
    """Each HostCertificate: an OpenSSH host certificate, certifying one of the HostKeys,
    valid now (fail when expired, warn within warn_days)."""
    held = {}
    for ref in refs:
        if ref.directive == "hostkey" and common.is_file(root, ref.path):
            info = common.describe_file(root, ref.path)
            if info is not None:
                held[info.fingerprint] = ref.path
    results = []
    for ref in refs:
        if ref.directive != "hostcertificate" or not common.is_file(root, ref.path):
            continue
        results.append(_host_certificate_check(root, ref.path, held))
    return results


def _host_certificate_check(root: Path, path: str, held: dict[str, str]) -> Check:
    from cryptography.hazmat.primitives import serialization

    name = f"host certificate: {path}"
    try:
        cert = serialization.load_ssh_public_identity(on_root(root, path).read_bytes().strip())
    except (OSError, ValueError, TypeError) as exc:
        return failed(name, f"not an OpenSSH certificate ({exc})")
    if not isinstance(cert, serialization.SSHCertificate):
        return failed(name, "a plain public key, not a certificate")
    if cert.type != serialization.SSHCertificateType.HOST:
        return failed(name, "a user certificate, not a host certificate")
    line = cert.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    certified = keys.describe_key(line)
    fingerprint = certified.fingerprint if certified else "?"
    if fingerprint not in held:
        return failed(
            name, f"certifies {fingerprint}, which no HostKey holds: sshd cannot serve it"
        )
    now, warn_days = time.time(), policy()["certificates"]["warn_days"]
    until = "forever" if cert.valid_before >= 2**64 - 1 else utc_text(_utc(cert.valid_before))
    if cert.valid_before < now:
        return failed(name, f"expired {until}: clients that trust the CA refuse the host")
    if cert.valid_after > now:
        return warned(name, f"not valid before {utc_text(_utc(cert.valid_after))}")
    if cert.valid_before - now <= warn_days * 86400:
        days = int((cert.valid_before - now) // 86400)
        return warned(name, f"expires {until}, in {days} days")
    principals = ",".join(p.decode(errors="replace") for p in cert.valid_principals) or "any host"
    return passed(name, f"for {principals}, valid until {until}, certifies {held[fingerprint]}")


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _command_checks(root: Path, refs: list[Ref], config: Config, db: Accounts) -> list[Check]:
    """AuthorizedKeysCommand and AuthorizedPrincipalsCommand programs as sshd's subprocess()
    checks them (safe_path in misc.c): an executable regular file, owned by root and not
    group/world-writable, and so is every directory above it; and a run-as user that exists."""
    rule = policy()["modes"]["command_program"]
    results = []
    for ref in refs:
        if ref.directive not in policy()["node_programs"] or ref.category != "scripts":
            continue
        name = f"{_label(ref)}: {ref.path}"
        real = _node_realpath(root, ref.path)
        host = on_root(root, real)
        if not host.exists():
            continue  # named_files_check reports it missing
        problems = _path_problems(
            root, real, "/", _uids(rule["owner"], None), int(rule["forbid"], 8)
        )
        if not host.is_file():
            problems.append(f"{real} is not a regular file")
        elif not host.stat().st_mode & 0o111:
            problems.append(f"{real} is not executable")
        runs_as = config.first(ref.directive + "user")
        if runs_as is None or not runs_as.args:
            problems.append(f"no {_label(ref)}User: sshd skips the command")
        elif runs_as.args[0] not in db.users and runs_as.args[0] != "root":
            problems.append(f"{_label(ref)}User {runs_as.args[0]} is not an account of the node")
        detail = f"{real}: root-owned, no group/world write on it or above; sshd runs it"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _integration_checks(root: Path, refs: list[Ref]) -> list[Check]:
    """sssd.conf (and conf.d) exactly 0600 and root-owned, as sssd requires; files holding an
    LDAP bind password not readable by others; the CA bundles and certificates they name
    parse and are not expired."""
    rules = policy()["integration"]
    by_path = {**rules["files"]}
    results = []
    for ref in refs:
        if ref.directive != "integration":
            continue
        rule = by_path.get(ref.path) or next(
            (r for pattern, r in rules["globs"].items() if fnmatch.fnmatchcase(ref.path, pattern)),
            {},
        )
        info = os.stat(on_root(root, ref.path))
        mode, name = stat.S_IMODE(info.st_mode), f"integration: {ref.path}"
        if rule.get("mode") and (mode != int(rule["mode"], 8) or info.st_uid != 0):
            detail = f"mode {mode:04o} uid {info.st_uid}: the daemon requires {rule['mode']} root"
            results.append(failed(name, detail))
        elif rule.get("secret") and mode & 0o004 and _has_setting(root, ref.path, rule["secret"]):
            results.append(
                failed(name, f"holds {rule['secret']} and is readable by others ({mode:04o})")
            )
        else:
            results.append(passed(name, f"{mode:04o}, owned by uid {info.st_uid}"))
    for ref in refs:
        if ref.category == "tls" and not ref.directory and common.is_file(root, ref.path):
            if ref.directive.endswith("key"):
                results.append(
                    common.private_key_mode_check(root, ref.path, "integration key", forbid=0o037)
                )
            else:
                results.append(_bundle_check(root, ref))
    return results


def _has_setting(root: Path, path: str, setting: str) -> bool:
    text = on_root(root, path).read_text(errors="replace")
    return re.search(rf"(?im)^\s*{re.escape(setting)}\b", text) is not None


def _bundle_check(root: Path, ref: Ref) -> Check:
    """A CA bundle or certificate an integration file names: PEM certificates, not expired
    (a bundle of several passes while one is valid)."""
    from cryptography import x509

    name = f"certificate: {ref.path}"
    try:
        found = x509.load_pem_x509_certificates(on_root(root, ref.path).read_bytes())
    except (OSError, ValueError) as exc:
        return failed(name, f"{_label(ref)} ({ref.where}): not PEM certificates ({exc})")
    now = datetime.now(UTC)
    valid = [c for c in found if c.not_valid_after_utc > now]
    if not valid:
        return failed(name, f"expired {utc_text(found[-1].not_valid_after_utc)} ({ref.where})")
    soonest = min(c.not_valid_after_utc for c in valid)
    days = (soonest - now).days
    if len(found) == 1 and days <= policy()["certificates"]["warn_days"]:
        return warned(name, f"expires {utc_text(soonest)}, in {days} days ({ref.where})")
    return passed(name, f"{len(valid)} of {len(found)} certificates valid ({ref.where})")


def _config_test(root: Path, config: Config) -> Check:
    pol = policy()
    name = "config: sshd -t"
    work = Path(tempfile.mkdtemp(prefix="drkit-sshd-t-"))
    try:
        copy, names = write_copy(root, config, work)
        runner.run(["install", "-d", "-m755", pol["smoke"]["privsep_dir"]])
        argv = [arg.replace("{config}", str(copy)) for arg in pol["validate"]["argv"]]
        done = runner.run(argv, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [ln.strip("@ \t") for ln in _node_text(done.stderr, names, root).splitlines()]
    lines = [ln for ln in lines if ln]
    bad = [ln for ln in lines if any(p in ln for p in pol["validate"]["fail_patterns"])]
    if done.returncode != 0:
        cause = next((ln for ln in lines if " line " in ln), lines[0] if lines else "no output")
        return failed(name, f"exit {done.returncode}: {cause}")
    if bad:
        useful = [ln for ln in bad if "UNPROTECTED" not in ln] or bad
        return failed(name, "; ".join(dict.fromkeys(useful)))
    return passed(name, "sshd accepts the config and loads every host key")


def _host_key_checks(root: Path, refs: list[Ref], manifest: dict) -> list[Check]:
    rule = policy()["modes"]["host_private_key"]
    forbid = int(rule["forbid"], 8)
    results = []
    configured = [r.path for r in refs if r.directive == "hostkey" and common.is_file(root, r.path)]
    for path in configured:
        info = os.stat(on_root(root, path))
        mode, problems = stat.S_IMODE(info.st_mode), []
        if mode & forbid:
            problems.append(f"mode {mode:04o}, must be 0600 or 0400")
        if info.st_uid not in _uids(rule["owner"], None):
            problems.append(f"owned by uid {info.st_uid}, not root")
        name = f"host key mode: {path}"
        results.append(
            failed(name, "; ".join(problems)) if problems else passed(name, f"{mode:04o} root")
        )
        if common.is_file(root, path + ".pub"):
            private = common.describe_file(root, path)
            public = common.describe_file(root, path + ".pub")
            name = f"host key pair: {path}"
            if private is None or public is None:
                which = "private key" if private is None else ".pub"
                results.append(failed(name, f"the {which} does not parse"))
            elif private.fingerprint != public.fingerprint:
                detail = (
                    f".pub ({public.fingerprint}) does not match the key ({private.fingerprint})"
                )
                results.append(failed(name, detail))
            else:
                results.append(passed(name, f"{private.type} {private.fingerprint}"))
    recorded = manifest.get("host_keys", [])
    for entry in recorded:
        name, info = f"host key: {entry['path']}", common.describe_file(root, entry["path"])
        if not common.is_file(root, entry["path"]):
            results.append(failed(name, "missing"))
        elif info is None:
            results.append(failed(name, "not a readable key"))
        elif info.fingerprint != entry["fingerprint"]:
            detail = f"is {info.fingerprint}, the backup had {entry['fingerprint']}"
            results.append(failed(name, detail))
        else:
            results.append(passed(name, f"{info.type} {info.fingerprint} as in the backup"))
    known = {entry["path"] for entry in recorded}
    if "host_keys" in manifest:
        results += [
            warned(f"host key: {p}", "configured but not in the backup")
            for p in configured
            if p not in known
        ]
    return results


def _uids(owners: list[str], user_uid: int | None) -> set[int]:
    return {0 if owner == "root" else user_uid for owner in owners} - {None}


def _path_problems(
    root: Path, node_path: str, stop: str, owners: set[int], forbid: int, must_be_dir: bool = False
) -> list[str]:
    """Check node_path and its parents up to stop (or '/'): owner and forbidden mode bits."""
    problems, current = [], node_path
    while True:
        try:
            info = os.stat(on_root(root, current))
        except OSError:
            return [f"{current} is missing"]
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid not in owners:
            problems.append(f"{current} is owned by uid {info.st_uid}")
        if mode & forbid:
            problems.append(f"{current} is group/world-writable ({mode:04o})")
        if must_be_dir and not stat.S_ISDIR(info.st_mode):
            problems.append(f"{current} is not a directory")
        if current in (stop, "/"):
            return problems
        current = posixpath.dirname(current)


def _user_key_checks(root: Path, refs: list[Ref], config: Config, db: Accounts) -> list[Check]:
    pol = policy()
    strict = config.value("strictmodes", pol["defaults"]["strict_modes"]) != "no"
    file_rule, path_rule = (
        pol["modes"]["authorized_keys_file"],
        pol["modes"]["authorized_keys_path"],
    )
    results, seen = [], set()
    for ref in refs:
        if ref.directive != "authorizedkeysfile" or ref.path in seen:
            continue
        seen.add(ref.path)
        if not common.is_file(root, ref.path):
            continue
        entry = db.users[ref.user]
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
        name = f"user keys: {ref.path}"
        try:
            info = os.stat(on_root(root, ref.path))
        except OSError as exc:
            results.append(failed(name, f"unreadable ({exc.strerror})"))
            continue
        mode, problems = stat.S_IMODE(info.st_mode), []
        readable = (
            (info.st_uid == uid and mode & 0o400)
            or mode & 0o004
            or (mode & 0o040 and (info.st_gid == gid or _in_group(db, ref.user, info.st_gid)))
        )
        if not readable:
            problems.append(f"{ref.path} ({mode:04o}) is not readable by {ref.user}")
        if strict:
            owners = _uids(file_rule["owner"], uid)
            problems += _path_problems(
                root, ref.path, ref.path, owners, int(file_rule["forbid"], 8)
            )
            parent = posixpath.dirname(ref.path)
            stop = home if (ref.path + "/").startswith(home.rstrip("/") + "/") else "/"
            owners = _uids(path_rule["owner"], uid)
            problems += _path_problems(root, parent, stop, owners, int(path_rule["forbid"], 8))
        detail = f"{mode:04o}, path safe for {ref.user}" if strict else "StrictModes no"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _in_group(db: Accounts, user: str, gid: int) -> bool:
    return any(user in g[3].split(",") for g in db.groups if g[2] == str(gid))


def _chroot_checks(root: Path, refs: list[Ref]) -> list[Check]:
    rule = policy()["modes"]["chroot_path"]
    results = []
    for path in dict.fromkeys(r.path for r in refs if r.directive == "chrootdirectory"):
        if not on_root(root, path).is_dir():
            continue
        problems = _path_problems(
            root, path, "/", _uids(rule["owner"], None), int(rule["forbid"], 8), must_be_dir=True
        )
        name = f"chroot: {path}"
        detail = "every component root-owned, not group/world-writable"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _certificate_checks(root: Path, manifest: dict) -> list[Check]:
    warn_days = policy()["certificates"]["warn_days"]
    return [
        common.certificate_check(root, entry, warn_days, entry.get("key_path"), ok_note=None)
        for entry in manifest.get("certificates", [])
    ]


# --- smoke: the real sshd on a sandbox port -----------------------------------------------------


def _log_hint(server: runner.Service) -> str:
    pattern = r"error|fatal|refused|not allowed|bad ownership|denied|invalid"
    return " | ".join(common.interesting_lines(server.log_tail().splitlines(), pattern))


def smoke(root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
    """Start the real sshd on a copy of the restored config (127.0.0.1, free port) and prove it.

    Records: served host key per type against the manifest, an SFTP login of `user` with a
    throw-away key, and a file round trip. sshd is stopped, a user created for the run is
    removed and the work files are deleted whatever happens.
    """
    pol, root = policy(), Path(root)
    run = pol["smoke"]
    result = SmokeResult(profile=NAME)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    unsafe = _path_problems(Path("/"), str(work_dir), "/", {0}, 0o022)
    if unsafe:
        result.add(failed("smoke: sshd started", f"work dir unusable for sshd: {unsafe[0]}"))
        return result
    created: list[tuple[str, str]] = []
    server: runner.Service | None = None
    with common.smoke_workspace(work_dir, "smoke-") as work:
        try:
            try:
                config = read_config(root, settings(common.options_of(manifest, NAME))["config"])
            except errors.ConfigError as exc:
                result.add(failed("smoke: sshd started", exc.message))
                return result
            if config.main not in config.files:
                result.add(failed("smoke: sshd started", f"{config.main} is missing"))
                return result
            account = common.ensure_user(root, manifest, user, created)
            result.add(account)
            if account.status == "fail":
                return result
            made = common.authorized_client_key(work, user, "authorized_keys")
            if made is None:
                result.add(failed("smoke: sshd started", "ssh-keygen failed"))
                return result
            key, sandbox = made
            entry = common.node_fields(root, manifest, user)
            port = common.free_port()
            prepend = [
                "# drkit smoke run: these lines win over the node's own",
                f"Port {port}",
                f"ListenAddress 127.0.0.1:{port}",
                f"PidFile {work / 'sshd.pid'}",
            ]
            plan = {"prepend": prepend, "authorized_keys": f"{sandbox}/%u", "user": user}
            db = Accounts.of(root)
            db.users[user] = entry  # the node's fields: its home, not the host's mapping
            plan["db"] = db
            copy, names = write_copy(root, config, work / "config", plan)
            for subsystem, program in plan.get("replaced", []):
                detail = (
                    f"{program} is on neither the restored root nor this host: the run used "
                    f"{run['missing_subsystem']}; install it where the server will run"
                )
                result.add(warned(f"smoke: Subsystem {subsystem}", detail))
            for number, difference in enumerate(plan.get("differences", []), 1):
                result.add(warned(f"smoke: config differs #{number}", difference))
            runner.run(["install", "-d", "-m755", run["privsep_dir"]])
            view, loaded = sshd_view(run["sshd"], copy, user, port)
            chrooted = (view or {}).get("chrootdirectory", ["none"])[0] != "none"
            if chrooted and ("user", user) in created and entry[5]:
                # inside a chroot the home is the node's own path, not one mapped onto the root
                runner.run(["usermod", "-d", entry[5], user])
            offered = _offered(view)
            server = runner.start_service(
                [run["sshd"], "-D", "-e", "-f", str(copy)], work / "sshd.log"
            )
            started = time.monotonic()
            if not common.wait_port(port, server, run["start_timeout_seconds"]):
                said = _node_text(_log_hint(server), names, root)
                result.add(failed("smoke: sshd started", said or "no output"))
                return result
            waited = time.monotonic() - started
            result.add(passed("smoke: sshd started", f"127.0.0.1:{port} in {waited:.2f} s"))
            host_keys = manifest.get("host_keys", [])
            not_served = (
                "not served: sshd offers that type, ssh-keyscan got no key"
                if offered is not None
                else "not served (sshd could not say which host key types it offers)"
            )
            common.keyscan(
                result, host_keys, port, not_served=not_served, offered=offered,
                loaded=loaded or None,
                omitted_by="HostKeyAlgorithms",
            )  # fmt: skip

            def hint() -> str:
                found = _node_text(_log_hint(server), names, root)
                return f"sshd: {found}" if found else ""

            landing = _landing(root, view, user, entry)
            if not landing.writable:
                result.add(warned("smoke: writable directory", landing.no_write))
            common.sftp_session(
                result, host_keys, user, port, key, work, hint,
                trip_name="smoke: file round trip", upload_dirs=landing.writable,
                show_dir=True, only_key=False,
            )  # fmt: skip
            login = next(c for c in result.checks if c.name == "smoke: sftp login")
            if login.status == "pass":
                result.add(_landing_check(landing, login.detail.rsplit(", in ", 1)[-1]))
            return result
        finally:
            if server is not None:
                server.stop()
            common.remove_created(created)


@dataclass
class Landing:
    """Where the config puts a login of the smoke's user, and where it may write there."""

    start: str | None  # the directory the session starts in, as sftp shows it (None: unknown)
    said: str  # what the config says, for messages
    writable: list[str]  # directories (relative to start) the user may write to, "." first
    no_write: str  # why none was found
    run_start: str | None = None  # where the run's own account starts, when that differs


def _sftp_args(view: dict[str, list[str]]) -> list[str]:
    """Return the arguments sshd gives the session's SFTP server: ForceCommand's when it runs
    internal-sftp or sftp-server, else the sftp Subsystem's."""
    force = (view.get("forcecommand") or ["none"])[0]
    words = force.split() if force != "none" else []
    if words:
        return words[1:] if posixpath.basename(words[0]) in ("internal-sftp", "sftp-server") else []
    for value in view.get("subsystem", []):
        words = value.split()
        if words[:1] == ["sftp"]:
            return words[2:]
    return []


def _landing(root: Path, view: dict | None, user: str, entry: list[str]) -> Landing:
    """Work out, from sshd's own view of the config for this user (`sshd -T -C`) and the
    restored tree's owners and modes, where the login lands (ChrootDirectory, then the home
    inside it or /, then internal-sftp -d) and the directories there the user may write to."""
    if not view:
        return Landing(None, "sshd -T could not say", ["."], "")
    home = entry[5] or "/"
    args = _sftp_args(view)
    start_dir = next(
        (
            a[2:] or (args[i + 1] if i + 1 < len(args) else "")
            for i, a in enumerate(args)
            if a.startswith("-d")
        ),
        "",
    )
    host_account = pwd.getpwnam(user)
    chroot = (view.get("chrootdirectory") or ["none"])[0]
    said, run_start = [], None
    if chroot != "none":
        chroot_host = Path(chroot)
        shown_chroot = to_node(root, chroot_host) if chroot.startswith(str(root)) else chroot
        start = home if (chroot_host / home.lstrip("/")).is_dir() else "/"
        inside = "in it" if start == home else "not in it: /"
        said.append(f"ChrootDirectory {shown_chroot}, home {home} {inside}")
        run_home = host_account.pw_dir
        run_start = run_home if (chroot_host / run_home.lstrip("/")).is_dir() else "/"
        base = chroot_host
    else:
        said.append(f"home {home}, no ChrootDirectory")
        start, base = str(on_root(root, home)), Path("/")
        run_start = host_account.pw_dir
    if start_dir:
        said.append(f"internal-sftp -d {start_dir}")
        wanted = start_dir.replace("%d", home).replace("%u", user).replace("%%", "%")
        wanted = posixpath.normpath(posixpath.join(start, wanted))
        if chroot == "none":
            wanted = str(on_root(root, wanted)) if start_dir.startswith("/") else wanted
        start = wanted if (base / wanted.lstrip("/")).is_dir() else start
        run_start = start
    # sftp shows realpath("."): resolved inside the chroot, or on this host without one
    start, run_start = (
        (_node_links(base, path)[0] if chroot != "none" else os.path.realpath(path))
        for path in (start, run_start)
    )
    here = base / start.lstrip("/")
    gids = set(os.getgrouplist(user, host_account.pw_gid))
    writable = [
        name
        for name, path in [(".", here), *_subdirs(here)]
        if _may_write(path, host_account.pw_uid, gids)
    ]
    if "-R" in args:
        writable, why = [], "internal-sftp -R: the session is read-only"
    else:
        why = (
            f"{user} (uid {host_account.pw_uid}) may write to neither {start} nor a directory in it"
        )
    no_write = (
        f"{why} ({', '.join(said)}), by their owners and modes: login proven, nothing written"
    )
    return Landing(
        start, ", ".join(said), writable, no_write, run_start if run_start != start else None
    )


def _subdirs(path: Path) -> list[tuple[str, Path]]:
    try:
        children = sorted(path.iterdir(), key=lambda c: (c.name.startswith("."), c.name))
        return [(child.name, child) for child in children if child.is_dir()]
    except OSError:
        return []


def _may_write(path: Path, uid: int, gids: set[int]) -> bool:
    """Return whether uid (in gids) may create files in directory path, by owner and mode."""
    try:
        info = path.stat()
    except OSError:
        return False
    mode = info.st_mode
    if not stat.S_ISDIR(mode):
        return False
    if uid == 0:
        return True
    if info.st_uid == uid:
        return mode & 0o300 == 0o300
    if info.st_gid in gids:
        return mode & 0o030 == 0o030
    return mode & 0o003 == 0o003


def _landing_check(landing: Landing, shown: str) -> Check:
    """Compare where the login landed (sftp's working directory) with what the config says."""
    name = "smoke: login landed"
    if landing.start is None:
        return warned(name, f"in {shown}; {landing.said}")
    if shown == landing.start:
        return passed(name, f"in {shown}, as the config says ({landing.said})")
    if shown == landing.run_start:
        detail = f"in {shown}: the run's account has its home mapped onto the root, the node's"
        return warned(name, f"{detail} login starts in {landing.start} ({landing.said})")
    return failed(name, f"in {shown}, but the config puts it in {landing.start} ({landing.said})")


def sshd_view(
    sshd: str, copy: Path, user: str | None = None, port: int = 22
) -> tuple[dict[str, list[str]] | None, dict[str, str]]:
    """Ask sshd itself (`sshd -d -T -C ...`) what it makes of a config for a connection of
    user from 127.0.0.1 to port (its own Match evaluation, `Match LocalPort` and `Address`
    included): ({keyword: [values]} it would apply, or None when it cannot say, and the host
    keys it loaded, {fingerprint: type}, from its debug lines "private host key #N: TYPE FP")."""
    argv = [sshd, "-d", "-T", "-f", str(copy)]
    if user:
        spec = f"user={user},host=localhost,addr=127.0.0.1,laddr=127.0.0.1,lport={port},rdomain="
        argv += ["-C", spec]
    done = runner.run(argv, timeout=30)
    loaded = {
        hit.group(2): hit.group(1)
        for hit in re.finditer(r"private host key #\d+: (\S+) (SHA256:\S+)", done.stderr)
    }
    if done.returncode != 0:
        return None, loaded
    view: dict[str, list[str]] = {}
    for line in done.stdout.splitlines():
        keyword, _, value = line.partition(" ")
        view.setdefault(keyword, []).append(value)
    return view, loaded


def _offered(view: dict[str, list[str]] | None) -> set[str] | None:
    """Return the host key types sshd offers, from its view (its effective HostKeyAlgorithms,
    defaults included); None when it cannot say."""
    algorithms = (view or {}).get("hostkeyalgorithms")
    if not algorithms:
        return None
    return {_KEY_TYPE_OF.get(a, a) for a in algorithms[0].split(",") if "-cert-" not in a}


# The key type a host key signature algorithm offers (RSA keys sign with three).
_KEY_TYPE_OF = {"rsa-sha2-256": "ssh-rsa", "rsa-sha2-512": "ssh-rsa"}


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """Write the node's sshd_config and its Includes with node paths mapped onto root into
    out_dir; return the main copy."""
    return write_copy(root, read_config(root), out_dir)[0]


def login_homes(root: Path, manifest: dict) -> dict[str, str]:
    """Return {account: node path} where sshd starts each of the manifest's accounts: its
    passwd home, inside its ChrootDirectory (tokens and ~ expanded, the Match block that
    applies) when it has one. A home that is a placeholder names no directory."""
    root = Path(root)
    config = read_config(root, settings(common.options_of(manifest, NAME))["config"])
    db = Accounts.of(root)
    no_home = set(policy()["defaults"]["no_home"])
    homes = {}
    for name in [account["name"] for account in manifest.get("accounts", [])]:
        home = db.home(name)
        if home is None or not home.startswith("/") or home in no_home:
            continue
        lines = _lines_for(config, db, name, "chrootdirectory")
        chroot = lines[-1].args[0] if lines and lines[-1].args else "none"
        if chroot.lower() == "none":
            homes[name] = posixpath.normpath(home)
            continue
        inside = _expand("chroot", chroot, name, db)
        if inside is not None:
            homes[name] = posixpath.normpath(posixpath.join(inside, home.lstrip("/")))
    return homes


SIGNS = Signs(("/etc/ssh/sshd_config",), ("/usr/sbin/sshd",), ("ssh.service", "sshd.service"), "-f")
PROFILE = ModuleProfile(
    NAME,
    SIGNS,
    inventory,
    checks,
    smoke,
    sandbox_config,
    ("sshd_config:ListenAddress",),
    login_homes_of=login_homes,
)
