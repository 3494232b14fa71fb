"""ProFTPD nodes (mod_sftp, mod_tls, mod_ldap): read proftpd.conf as proftpd does, back up what
it names, prove a restore with `proftpd -t`, key/certificate comparisons and real SFTP, FTPS
(or plain FTP) logins.

proftpd.conf is read the way ProFTPD 1.3.8's parser reads it: `Include` of a file, a directory
(every entry, `*~`/`*.sw?` skipped only after `IncludeOptions IgnoreTempFiles`) or a glob in
the last component; `<IfModule>` blocks count only for modules compiled in (`proftpd -l`) or
loaded by an earlier `LoadModule`; `<Global>` applies to every server, `<VirtualHost>` inherits
nothing else. Users are every `AuthUserFile` entry of a server and, where mod_auth_unix
answers, the node's regular accounts that may log in (not in /etc/ftpusers, a valid shell);
`%u` and `~` in DefaultRoot and SFTPAuthorizedUserKeys expand for each of them, as
mod_auth and mod_sftp expand them at login. What is backed up and which directives name files
come from policies/proftpd.yaml.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import glob
import grp
import os
import posixpath
import pwd
import re
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from drkit import errors, runner
from drkit.engines import accounts
from drkit.model import Check, Inventory, SmokeResult, failed, passed, warned
from drkit.paths import on_root, to_node
from drkit.profiles import common
from drkit.profiles.common import Ref
from drkit.profiles.interface import ModuleProfile, Signs

NAME = "proftpd"
OPTIONS = ("config",)


def policy() -> dict:
    return common.policy(NAME)


def settings(options: dict | None) -> dict:
    """Return profile_options.proftpd checked, with defaults: {config: node path}.

    An unknown key or a config that is not an absolute path is a ConfigError naming the field.
    """
    options = dict(options or {})
    for key in options:
        if key not in OPTIONS:
            raise errors.ConfigError(
                f"profile_options.proftpd.{key}: unknown option (known: {', '.join(OPTIONS)})"
            )
    main = options.get("config", policy()["config"]["main"])
    if not isinstance(main, str) or not main.startswith("/"):
        raise errors.ConfigError("profile_options.proftpd.config: must be an absolute node path")
    return {"config": posixpath.normpath(main)}


# --- reading proftpd.conf ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One directive: lower-case keyword, arguments, where it is, its server context (0 the
    main server, n the n-th <VirtualHost>, -1 <Global>), whether proftpd applies it (False
    inside an <IfModule> of a module not loaded) and the <Anonymous> root it sits in."""

    keyword: str
    args: tuple[str, ...]
    source: str
    number: int
    server: int
    active: bool = True
    anon: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"


@dataclass
class Config:
    """Every directive of proftpd.conf and its Includes, in reading order."""

    main: str
    lines: list[Line] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    # Files in an Included directory that proftpd does not read (temp files after
    # IncludeOptions IgnoreTempFiles): backed up all the same, so a forced restore keeps them.
    unread: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    include_hits: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    missing_includes: list[tuple[Line, str]] = field(default_factory=list)
    include_dirs: list[tuple[Line, str]] = field(default_factory=list)
    modules: set[str] = field(default_factory=set)
    servers: int = 1
    warnings: list[str] = field(default_factory=list)

    def of(self, keyword: str, server: int | None = None, anon: bool = False) -> list[Line]:
        """Return the active lines of keyword (in one server context plus <Global> when given;
        inside <Anonymous> blocks only when anon)."""
        return [
            line
            for line in self.lines
            if line.keyword == keyword
            and line.active
            and (anon or line.anon is None)
            and (server is None or line.server in (server, -1))
        ]

    def first(self, keyword: str, server: int = 0) -> Line | None:
        found = self.of(keyword, server)
        return found[0] if found else None

    def engine_on(self, keyword: str, server: int) -> bool:
        line = self.first(keyword, server)
        return bool(line and line.args and line.args[0].lower() in ("on", "yes", "true"))

    def is_off(self, keyword: str, server: int) -> bool:
        line = self.first(keyword, server)
        return bool(line and line.args and line.args[0].lower() in ("off", "no", "false"))


def parse(raw: str) -> tuple[str, str, list[str]] | None:
    """Return (token as written, lower-case keyword, args) of a line; sections keep '<'."""
    stripped = raw.strip()
    if not stripped or stripped.startswith("#"):
        return None
    if stripped.startswith("<"):
        inner = stripped.strip("<>").strip()
        token, _, rest = inner.partition(" ")
        return token, "<" + token.lower(), common.split_args(rest)
    token, _, rest = stripped.partition(" ")
    token = token.split("\t")[0]
    rest = stripped[len(token) :]
    return token, token.lower(), common.split_args(rest)


def _module(name: str) -> str:
    return name.strip().removesuffix(".c").removesuffix(".so")


@functools.cache
def static_modules(program: str | None) -> frozenset[str] | None:
    """Return the modules compiled into proftpd (`proftpd -l`), None when it cannot say."""
    if program is None:
        return None
    done = runner.run([program, "-l"], timeout=30)
    found = {_module(w) for w in done.stdout.split() if w.endswith(".c")}
    return frozenset(found) if done.returncode == 0 and found else None


def proftpd_program() -> str | None:
    return common.find_program("proftpd", [policy()["smoke"]["proftpd"], "proftpd"])


def _include_targets(root: Path, pattern: str, ignore_temp: bool) -> tuple[list[str], list[str]]:
    """Return (files proftpd reads, files it skips) for an Include argument: a file, every
    entry of a directory, or a glob in the last component (`*` does not match a leading dot)."""
    temp = policy()["config"]["include_temp_patterns"]
    host = on_root(root, pattern)
    if glob.has_magic(pattern):
        hits = sorted(glob.glob(str(host)))
    elif host.is_dir() and not host.is_symlink():
        hits = sorted(str(child) for child in host.iterdir())
    else:
        hits = [str(host)] if host.is_file() else []
    read, skipped = [], []
    for hit in hits:
        if not Path(hit).is_file():
            continue
        is_temp = any(fnmatch.fnmatchcase(Path(hit).name, p) for p in temp)
        (skipped if ignore_temp and is_temp else read).append(to_node(root, Path(hit)))
    return read, skipped


def read_config(root: Path, main: str | None = None) -> Config:
    """Parse the node's proftpd.conf (main, default the policy's) and everything it Includes."""
    config = Config(main=main or policy()["config"]["main"])
    static = static_modules(proftpd_program())
    state = {
        "server": 0,
        "stack": [],
        "active": [True],
        "anon": [None],
        "ignore_temp": False,
        "static": static,
    }
    _read_file(Path(root), config.main, config, (), state)
    return config


def _module_loaded(config: Config, state: dict, name: str) -> bool:
    static = state["static"]
    return static is None or _module(name) in static or _module(name) in config.modules


def _read_file(root: Path, node_path: str, config: Config, stack: tuple, state: dict) -> None:
    settings_ = policy()["config"]
    text = common.read_config_text(root, node_path, config)
    if text is None:
        return
    for number, _, keyword, args in common.parsed_lines(text, parse):
        active = state["active"][-1]
        if keyword == "<virtualhost":
            config.servers += 1
            state["stack"].append((keyword, state["server"]))
            state["server"] = config.servers - 1
        elif keyword == "<global":
            state["stack"].append((keyword, state["server"]))
            state["server"] = -1
        elif keyword in ("</virtualhost", "</global") and state["stack"]:
            state["server"] = state["stack"].pop()[1]
        elif keyword == "<ifmodule":
            name = args[0] if args else ""
            loaded = _module_loaded(config, state, name.lstrip("!"))
            state["active"].append(active and (loaded != name.startswith("!")))
        elif keyword == "</ifmodule" and len(state["active"]) > 1:
            state["active"].pop()
        elif keyword == "<anonymous":
            state["anon"].append(args[0] if args else "")
        elif keyword == "</anonymous" and len(state["anon"]) > 1:
            state["anon"].pop()
        line = Line(
            keyword, tuple(args), node_path, number, state["server"], active, state["anon"][-1]
        )
        config.lines.append(line)
        if not active:
            continue
        if keyword == "loadmodule" and args:
            config.modules.add(_module(args[0]))
        elif keyword == "includeoptions":
            state["ignore_temp"] = "IgnoreTempFiles" in args
        if keyword != "include" or not args:
            continue
        base = posixpath.dirname(config.main)
        pattern = posixpath.normpath(posixpath.join(base, args[0]))
        hits, skipped = _include_targets(root, pattern, state["ignore_temp"])
        config.unread += [path for path in skipped if path not in config.unread]
        if not glob.has_magic(pattern) and on_root(root, pattern).is_dir():
            config.include_dirs.append((line, pattern))
        elif not hits and not glob.has_magic(pattern):
            config.missing_includes.append((line, pattern))
        config.include_hits[(node_path, number)] = hits
        for hit in hits:
            if hit in stack or len(stack) >= settings_["max_include_depth"]:
                config.warnings.append(f"Include {hit} ({line.where}) nests too deep; skipped")
                continue
            _read_file(root, hit, config, (*stack, node_path), state)


# --- who logs in ------------------------------------------------------------------------------


def virtual_users(root: Path, config: Config, server: int | None = None) -> dict[str, list[str]]:
    """Return {name: passwd fields} of every AuthUserFile (of one server context when given)."""
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
    return users


def _auth_modules(config: Config, server: int) -> set[str] | None:
    """Return the modules AuthOrder names for a server context, None when it names none (every
    loaded auth module answers)."""
    line = config.first("authorder", server)
    return {_module(arg).rstrip("*") for arg in line.args} if line and line.args else None


def _list_file(root: Path, node_path: str) -> set[str]:
    """Return the non-blank, non-comment lines of a node file (empty when it is missing)."""
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError:
        return set()
    return {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}


def _login_defs(root: Path) -> tuple[int, int]:
    """Return (UID_MIN, UID_MAX) of the node's /etc/login.defs (1000, 60000 by default)."""
    found = {"UID_MIN": 1000, "UID_MAX": 60000}
    for raw in _list_file(root, "/etc/login.defs"):
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
    return [line.args[0]] if line and line.args else list(policy()["pam"]["default_services"])


def _pam_refs(root: Path, service: str, where: str) -> list[Ref]:
    """Return the PAM service file, the files it includes and the stores its modules name."""
    path = f"/etc/pam.d/{service}"
    pam = common.read_pam(root, path)
    refs = [Ref(path, "config", "AuthPAMConfig", where, False)]
    refs += [Ref(included, "config", "@include", line, False) for included, line in pam.includes]
    refs += [Ref(store, "accounts", "PAM store", line, False) for store, line in pam.stores]
    return refs


def _pam_denied(root: Path, services: list[str]) -> set[str]:
    """Return the users a pam_listfile `sense=deny item=user` line of these services refuses."""
    denied: set[str] = set()
    for service in services:
        for deny_file in common.read_pam(root, f"/etc/pam.d/{service}").deny_files:
            denied |= _list_file(root, deny_file)
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
    denied = set() if config.is_off("useftpusers", server) else _list_file(root, "/etc/ftpusers")
    denied |= _pam_denied(root, pam_services(config, server))
    shells = None if config.is_off("requirevalidshell", server) else _list_file(root, "/etc/shells")
    found = {}
    for name, fields in accounts.passwd_entries(root).items():
        if not fields[2].isdigit() or not low <= int(fields[2]) <= high or name in denied:
            continue
        if shells and fields[6] not in shells:
            continue
        found[name] = fields
    return found


def logins(root: Path, config: Config, server: int) -> dict[str, list[str]]:
    """Return every user who may log in to a server context: AuthUserFile, then system."""
    found = dict(system_logins(root, config, server))
    found.update(virtual_users(root, config, server))
    return found


def _groups_of(root: Path, name: str, fields: list[str]) -> set[str]:
    groups = accounts.group_entries(root)
    return {g[0] for g in groups if g[2] == fields[3] or name in g[3].split(",")}


def _group_expr_matches(expr: tuple[str, ...], groups: set[str]) -> bool:
    """pr_expr_eval_group_and: every comma-separated group (or !group) must hold."""
    terms = [t for arg in expr for t in arg.split(",") if t]
    return all((t[1:] not in groups) if t.startswith("!") else (t in groups) for t in terms)


def _expand(path: str, user: str, home: str, homes: dict[str, str]) -> str | None:
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


# --- what the config names --------------------------------------------------------------------


def _log_dir_ok(path: str) -> bool:
    """True when a log file's directory is the server's own (not /var/log and the like)."""
    parent = posixpath.dirname(path)
    return parent not in policy()["shared_dirs"]


def references(root: Path, config: Config) -> list[Ref]:
    """Return every node path the config names, with category and whether it must exist."""
    pol = policy()
    off = set(pol["off_words"])
    refs = [
        Ref(path, "config", "Include", line.where, True) for line, path in config.missing_includes
    ]
    refs += [
        Ref(path, "config", "Include", "not read: a temp file", False) for path in config.unread
    ]
    refs += [
        Ref(path, "config", "Include", line.where, True, directory=True)
        for line, path in config.include_dirs
    ]
    all_accounts = accounts.passwd_entries(root)
    homes = {name: fields[5] for name, fields in all_accounts.items()}
    users_of = {s: logins(root, config, s) for s in range(config.servers)}
    for users in users_of.values():
        homes.update({name: fields[5] for name, fields in users.items() if name not in homes})
    for line in config.lines:
        rule = pol["directives"].get(line.keyword)
        if rule is None or not line.args or line.keyword == "include":
            continue
        kind, category, name = rule["kind"], rule["category"], rule["name"]
        required = rule["required"] and line.active
        servers = range(config.servers) if line.server == -1 else [line.server]
        users = {u: f for s in servers for u, f in users_of.get(s, {}).items()}
        first = line.args[0]
        if kind == "path" and first.lower() not in off:
            path = posixpath.normpath(posixpath.join("/", first))
            refs.append(Ref(path, category, name, line.where, required))
        elif kind == "dir" and first.startswith("/"):
            refs.append(Ref(first, category, name, line.where, required, directory=True))
        elif kind == "log" and first.startswith("/"):
            refs.append(Ref(first, category, name, line.where, False))
            if _log_dir_ok(first):
                parent = posixpath.dirname(first)
                refs.append(Ref(parent, category, name, line.where, required, directory=True))
        elif kind == "display" and first.startswith("/"):
            refs.append(Ref(first, category, name, line.where, False))
        elif kind == "exec":
            program = next((a for a in line.args if a.startswith("/")), None)
            if program:
                refs.append(Ref(program, category, name, line.where, required))
        elif kind == "keystore":
            refs += _keystore_refs(line, rule, users, homes)
        elif kind == "chroot":
            refs += _default_root_refs(root, line, rule, users, homes)
        elif kind == "ldapserver":
            refs += [
                Ref(arg.split(":", 1)[1], category, f"{name} {arg.split(':', 1)[0]}:", line.where)
                for arg in line.args
                if arg.split(":", 1)[0] in ("ssl-ca", "ssl-cert", "ssl-key")
            ]
    refs += _anonymous_refs(config, homes)
    refs += [
        Ref(folder, "config", f"{line.args[0]} directory", line.where, False, directory=True)
        for line, folder in runtime_dirs(config)
    ]
    for s, users in users_of.items():
        for user, fields in users.items():
            home = fields[5]
            if home.startswith("/") and home != "/":
                refs.append(Ref(home, "chroot", "home", f"account {user}", False, True, user))
        for service in pam_services(config, s):
            refs += _pam_refs(root, service, "AuthPAM (mod_auth_pam)")
        if not config.is_off("useftpusers", s):
            refs.append(Ref("/etc/ftpusers", "accounts", "UseFtpUsers", "default on", False))
        if users and not config.is_off("requirevalidshell", s):
            refs.append(Ref("/etc/shells", "accounts", "RequireValidShell", "default on", False))
    if config.of("ldapserver"):
        refs.append(Ref("/etc/ldap/ldap.conf", "config", "mod_ldap", "libldap defaults", False))
        refs += _ldap_conf_refs(root)
    return list(dict.fromkeys(refs))


RUN_DIRS = ("/run/", "/var/run/")


def runtime_dirs(config: Config) -> list[tuple[Line, str]]:
    """Return (line, directory) of each runtime file the config names (ScoreboardFile,
    PidFile, ...) in a directory of the server's own: proftpd needs the directory at start
    (not the file); shared directories (/var, /run itself) are not the server's."""
    found = []
    for line in config.lines:
        if line.keyword in policy()["runtime"] and line.active and line.args:
            path = line.args[0]
            folder = posixpath.dirname(posixpath.normpath(path)) if path.startswith("/") else ""
            if folder and folder not in policy()["shared_dirs"]:
                found.append((line, folder))
    return found


def _runtime_dir_checks(root: Path, config: Config) -> list[Check]:
    """The directory of each runtime file must be there when proftpd starts; one on /run is
    made at boot (the service's RuntimeDirectory or tmpfiles.d), not restored."""
    results = []
    for line, folder in runtime_dirs(config):
        name = f"proftpd: {folder} ({line.args[0].rsplit('/', 1)[-1]})"
        if on_root(root, folder).is_dir():
            results.append(passed(name, f"there for {line.where}"))
        elif folder.startswith(RUN_DIRS):
            detail = f"missing ({line.where}); on /run: the service makes it at boot, not a restore"
            results.append(warned(name, detail))
        else:
            results.append(failed(name, f"missing: proftpd cannot start ({line.where})"))
    return list({check.name: check for check in results}.values())


def _keystore_refs(line: Line, rule: dict, users: dict, homes: dict) -> list[Ref]:
    refs = []
    for arg in line.args:
        if not arg.startswith("file:"):
            continue
        pattern = arg.removeprefix("file:")
        if "%u" not in pattern and not pattern.startswith("~"):
            refs.append(Ref(pattern, rule["category"], rule["name"], line.where, False))
            continue
        for user, fields in users.items():
            path = _expand(pattern, user, fields[5], homes)
            if path:
                refs.append(Ref(path, rule["category"], rule["name"], line.where, False, user=user))
    return refs


def _default_root_refs(root: Path, line: Line, rule: dict, users: dict, homes: dict) -> list[Ref]:
    """DefaultRoot DIR [group-expr]: a fixed directory, or ~, ~name and %u for each user the
    group expression selects."""
    first, expr = line.args[0], line.args[1:]
    required = line.active
    if "%u" not in first and not first.startswith("~"):
        path = posixpath.normpath(first)
        if path == "/":
            return []
        return [Ref(path, rule["category"], rule["name"], line.where, required, directory=True)]
    refs = []
    for user, fields in users.items():
        path = _expand(first, user, fields[5], homes)
        if not path or path == "/":
            continue
        selected = not expr or _group_expr_matches(expr, _groups_of(root, user, fields))
        where = f"{line.where}, user {user}"
        refs.append(Ref(path, rule["category"], rule["name"], where, required and selected, True))
    return refs


def _anonymous_refs(config: Config, homes: dict[str, str]) -> list[Ref]:
    """Every active <Anonymous DIR> root: an absolute directory or ~name's home."""
    refs = []
    for line in config.lines:
        if line.keyword != "<anonymous" or not line.active or not line.args:
            continue
        first = line.args[0]
        path = _expand(first, "", "", homes) if first.startswith("~") else first
        if path and path.startswith("/"):
            path = posixpath.normpath(path)
            refs.append(Ref(path, "chroot", "<Anonymous>", line.where, True, directory=True))
    return refs


def _ldap_conf_refs(root: Path) -> list[Ref]:
    """TLS_CACERT and friends of libldap's /etc/ldap/ldap.conf (mod_ldap's defaults)."""
    refs = []
    for raw in _list_file(root, "/etc/ldap/ldap.conf"):
        fields = raw.split(None, 1)
        if len(fields) == 2 and fields[0].upper() in ("TLS_CACERT", "TLS_CERT", "TLS_KEY"):
            where = "/etc/ldap/ldap.conf"
            refs.append(Ref(fields[1].strip(), "tls", fields[0].upper(), where, True))
    return refs


def run_accounts(root: Path, config: Config) -> tuple[list[str], list[str]]:
    """Return (system accounts the node needs, warnings): the User the daemon runs as, each
    <Anonymous> User and every user who may log in; a Group/GroupOwner naming no group and an
    <Anonymous ~name> naming no account are warnings."""
    passwd = accounts.passwd_entries(root)
    groups = {g[0] for g in accounts.group_entries(root)}
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


def inventory(root: Path, smoke_user: str | None, options: dict | None = None) -> Inventory:
    """Return what makes this ProFTPD node: config, keys, certificates, users, homes, logs."""
    pol, root = policy(), Path(root)
    main = settings(options)["config"]
    config = read_config(root, main)
    if main not in config.files:
        return Inventory(warnings=[*config.warnings, f"proftpd: no config {main} on the node"])
    refs = references(root, config)
    found = common.inventory_from_refs(root, config.files, refs, config.warnings)
    found.owned_globs = list(dict.fromkeys([main, *pol["owned_globs"]]))
    found.users, warnings = run_accounts(root, config)
    found.warnings += warnings
    if not config.of("sftphostkey") and any(
        config.engine_on("sftpengine", s) for s in range(config.servers)
    ):
        found.warnings.append("SFTPEngine on without SFTPHostKey: clients will see a new server")
    return found


# --- a runnable copy of the config ----------------------------------------------------------


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c.isspace() for c in arg) else arg


def _mapped(root: Path, path: str) -> str:
    return path if str(root) == "/" or not path.startswith("/") else str(on_root(root, path))


def _map_args(root: Path, keyword: str, args: list[str]) -> list[str] | None:
    """Return args with node paths mapped onto root, or None when nothing changes."""
    rule = policy()["directives"].get(keyword)
    if keyword == "<anonymous":
        rule = {"kind": "path"}
    if rule is None or not args or str(root) == "/":
        return None
    kind, new = rule["kind"], list(args)
    if kind in ("path", "dir", "log", "chroot", "display") and args[0].startswith("/"):
        new[0] = _mapped(root, args[0])
    elif kind == "exec":
        new = [
            _mapped(root, a) if a.startswith("/") and on_root(root, a).exists() else a for a in args
        ]
    elif kind == "keystore":
        new = ["file:" + _mapped(root, a[5:]) if a.startswith("file:") else a for a in args]
    elif kind == "ldapserver":
        new = [
            f"{a.split(':', 1)[0]}:{_mapped(root, a.split(':', 1)[1])}"
            if a.split(":", 1)[0] in ("ssl-ca", "ssl-cert", "ssl-key")
            else a
            for a in args
        ]
    return new if new != args else None


@dataclass
class Run:
    """How a runnable copy differs from the node's config.

    Always: the runtime files (PidFile, ScoreboardFile, DelayTable, ControlsSocket) in work,
    never the host's. With ports (a start check, a smoke): every server on 127.0.0.1 at its
    own port, logs in work. For a smoke: its one-run credentials added beside the node's own
    authentication sources (a key store beside SFTPAuthorizedUserKeys, a PAM service with a
    one-run password in front of AuthOrder, the node's accounts in a work-dir AuthUserFile
    where this host's /etc/passwd is not the node's). `differences` names each change beyond
    addresses and runtime paths.
    """

    work: Path
    ports: dict[int, int] = field(default_factory=dict)  # server context -> port
    run_as: dict[tuple[str, str], str] = field(default_factory=dict)
    key_dir: Path | None = None
    sftp_contexts: set[int] = field(default_factory=set)
    pam_service: str | None = None
    auth_files: dict[str, Path] = field(default_factory=dict)  # node AuthUserFile -> its copy
    stand_in: Path | None = None  # AuthUserFile for the server contexts that name none
    logs: list[Path] = field(default_factory=list)
    shells_off: bool = False  # RequireValidShell off: the node's /etc/shells is not this host's
    differences: list[str] = field(default_factory=list)
    origins: dict[str, list[int]] = field(default_factory=dict)  # copy -> node line numbers

    def differ(self, text: str) -> None:
        if text not in self.differences:
            self.differences.append(text)


def _runtime_lines(work: Path) -> list[str]:
    """The runtime files of a copy, in its work dir (mod_delay, mod_ctrls only when loaded)."""
    return [
        f"PidFile {work / 'proftpd.pid'}",
        f"ScoreboardFile {work / 'proftpd.scoreboard'}",
        "<IfModule mod_delay.c>",
        f"  DelayTable {work / 'proftpd.delay'}",
        "</IfModule>",
        "<IfModule mod_ctrls.c>",
        f"  ControlsSocket {work / 'proftpd.sock'}",
        "</IfModule>",
    ]


def _added(config: Config, run: Run, server: int) -> list[str]:
    """The smoke's credentials a server context gets where it names no such source itself."""
    lines = []
    if (
        run.key_dir
        and server in run.sftp_contexts
        and not config.of("sftpauthorizeduserkeys", server)
    ):
        lines.append(f"SFTPAuthorizedUserKeys file:{run.key_dir}/%u")
    if run.pam_service and not config.of("authpamconfig", server):
        lines.append(f"AuthPAMConfig {run.pam_service}")
    if run.stand_in and not config.of("authuserfile", server):
        lines.append(f"AuthUserFile {run.stand_in}")
    if run.shells_off:
        lines.append("RequireValidShell off")
    return lines


def _credential_line(line: Line, token: str, args: list[str], root: Path, run: Run):
    """Return the smoke copy of an authentication line (credentials added beside the node's),
    or None when the line is not one."""
    keyword = line.keyword
    if keyword == "sftpauthorizeduserkeys" and run.key_dir:
        mapped = _map_args(root, keyword, args) or args
        return [f"{token} {' '.join(map(_quote, [*mapped, f'file:{run.key_dir}/%u']))}"]
    if keyword == "authuserfile" and args and args[0] in run.auth_files:
        return [f"{token} {_quote(str(run.auth_files[args[0]]))} {' '.join(args[1:])}".rstrip()]
    if keyword == "authorder" and (run.pam_service or run.stand_in):
        names = {_module(arg).rstrip("*") for arg in args}
        front = [m for m in ("mod_auth_pam", "mod_auth_file") if m not in names]
        front = [m for m in front if m != "mod_auth_pam" or run.pam_service]
        front = [m for m in front if m != "mod_auth_file" or run.stand_in]
        if front:
            run.differ(f"AuthOrder ({line.where}): {', '.join(front)} added in front")
        return [f"{token} {' '.join([f'{m}.c' for m in front] + args)}"]
    if keyword == "authpam" and run.pam_service and args and args[0].lower() in ("off", "no"):
        run.differ(f"AuthPAM off ({line.where}): on, for the one-run password")
        return [f"{token} on"]
    if keyword == "authpamconfig" and run.pam_service:
        run.differ(
            f"AuthPAMConfig {' '.join(args)} ({line.where}): the one-run PAM service stands in "
            "(this host's PAM stack is not the node's)"
        )
        return [f"{token} {run.pam_service}"]
    return None


def write_copy(root: Path, config: Config, out_dir: Path, run: Run | None = None):
    """Write runnable copies of the config files under out_dir, node paths mapped onto root,
    changed as run says (runtime files in out_dir when run is None: `proftpd -t`).

    Return (main copy, {copy: node path}).
    """
    pol = policy()
    run = run or Run(work=out_dir)
    copies = {node: out_dir / node.lstrip("/") for node in config.files}
    drop = set(pol["runtime"]) | (set(pol["smoke"]["listen"]) if run.ports else set())
    log_kinds = {k for k, rule in pol["directives"].items() if rule["kind"] == "log"}
    lines = {(line.source, line.number): line for line in config.lines}

    def rewrite(node: str, number: int, raw: str, token: str, keyword: str, args: list[str]):
        line = lines.get((node, number)) or Line(keyword, tuple(args), node, number, 0)
        if keyword == "<virtualhost" and run.ports:
            port = run.ports.get(line.server, 0)
            added = [f"  {text}" for text in _added(config, run, line.server)]
            return [f"<{token} 127.0.0.1>", "  WtmpLog off", f"  Port {port}", *added]
        if keyword == "include":
            hits = config.include_hits.get((node, number), [])
            if not hits:
                return [f"# {raw.strip()}"]
            return [f"{token} {_quote(str(copies[hit]))}" for hit in hits if hit in copies]
        if keyword in drop:
            if keyword == "servertype" and args and args[0].lower() == "inetd":
                run.differ(f"ServerType inetd ({line.where}): run standalone")
            return [f"# drkit: {raw.strip()}"]
        if run.ports and keyword in log_kinds and args and args[0].startswith("/"):
            log_file = run.work / "logs" / f"{keyword}-{number}-{len(run.logs)}.log"
            run.logs.append(log_file)
            return [f"{token} {' '.join(map(_quote, [str(log_file), *args[1:]]))}"]
        if args and (keyword, args[0]) in run.run_as and line.anon is None:
            run.differ(
                f"{token} {args[0]} ({line.where}): runs as {run.run_as[(keyword, args[0])]}, "
                "this host has no such account"
            )
            return [f"{token} {run.run_as[(keyword, args[0])]}"]
        if run.shells_off and keyword == "requirevalidshell":
            return [f"{token} off"]
        if line.active and (found := _credential_line(line, token, args, root, run)) is not None:
            return found
        if (mapped := _map_args(root, keyword, args)) is not None:
            rendered = " ".join(map(_quote, mapped))
            return [f"<{token} {rendered}>" if keyword.startswith("<") else f"{token} {rendered}"]
        return [raw]

    for node, copy in copies.items():
        out, origin = [], []  # origin: the node line each copy line comes from (0: added)
        for number, raw in enumerate(config.texts[node].splitlines(), 1):
            parsed = parse(raw)
            made = [raw] if parsed is None else rewrite(node, number, raw, *parsed)
            out += made
            origin += [number] * len(made)
        prepend = []
        if node == config.main:
            prepend = ["# drkit: runtime files in the work dir", *_runtime_lines(run.work)]
            if run.ports:
                prepend += [
                    "# drkit: 127.0.0.1 only",
                    "ServerType standalone",
                    "DefaultAddress 127.0.0.1",
                    "SocketBindTight on",
                    "UseIPv6 off",
                    f"Port {run.ports.get(0, 0)}",
                    "WtmpLog off",
                    *_added(config, run, 0),
                ]
        # a file holding a bind password stays private
        common.write_config_copy(copy, [*prepend, *out], _copy_mode(root, node), dir_mode=0o755)
        run.origins[str(copy)] = [0] * len(prepend) + origin
    return copies[config.main], {str(copy): node for node, copy in copies.items()}


def _copy_mode(root: Path, node: str) -> int:
    """Return the node file's read bits (0644 at most, 0600 at least) for its copy."""
    try:
        return (stat.S_IMODE(on_root(root, node).stat().st_mode) & 0o644) | 0o600
    except OSError:
        return 0o600


def _node_text(
    text: str, names: dict[str, str], root: Path, origins: dict[str, list[int]] | None = None
) -> str:
    """Return proftpd's words with copy paths and line numbers as the node's files have them."""

    def node_line(match: re.Match) -> str:
        lines = (origins or {}).get(match.group(2), [])
        number = int(match.group(1))
        found = lines[number - 1] if 0 < number <= len(lines) else 0
        return f"line {found or number} of '{match.group(2)}'"

    text = re.sub(r"line (\d+) of '([^']+)'", node_line, text)
    for copy, node in names.items():
        text = text.replace(copy, node)
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


# --- static checks ------------------------------------------------------------------------------


def _tls_pairs(config: Config) -> list[tuple[str, str | None, int]]:
    """Return (certificate, key, server) of every server context's RSA and EC pair."""
    pairs = []
    for server in range(config.servers):
        for cert_keyword, key_keyword in (
            ("tlsrsacertificatefile", "tlsrsacertificatekeyfile"),
            ("tlseccertificatefile", "tlseccertificatekeyfile"),
        ):
            cert, key = config.first(cert_keyword, server), config.first(key_keyword, server)
            if cert and cert.args:
                pairs.append((cert.args[0], key.args[0] if key and key.args else None, server))
    return list(dict.fromkeys(pairs))


def _ldap_pairs(config: Config) -> list[tuple[str, str | None]]:
    """Return the ssl-cert:/ssl-key: client pairs of every LDAPServer."""
    pairs = []
    for line in config.of("ldapserver"):
        named = dict(a.split(":", 1) for a in line.args if ":" in a and not a.startswith("ldap"))
        if named.get("ssl-cert"):
            pairs.append((named["ssl-cert"], named.get("ssl-key")))
    return pairs


@common.options_fail_as("proftpd: options")
def checks(root: Path, manifest: dict) -> list[Check]:
    """Return the static checks of a restored (or live) ProFTPD node against its manifest."""
    pol, root = policy(), Path(root)
    main = settings(common.options_of(manifest, NAME))["config"]
    config = read_config(root, main)
    if main not in config.files:
        return [failed("proftpd: config", f"{main} is missing or unreadable")]
    refs = references(root, config)
    results = [_config_test(root, config), _start_check(root, config), *_module_checks(config)]
    results += common.named_files_check(root, refs, "proftpd")
    host_keys = [line.args[0] for line in config.of("sftphostkey") if line.args]
    results += common.host_key_checks(root, host_keys, manifest)
    forbid = int(pol["modes"]["private_key_forbid"], 8)
    for cert, key in [(c, k) for c, k, _ in _tls_pairs(config)] + _ldap_pairs(config):
        results.append(common.certificate_pair_check(root, cert, key))
        if key and common.is_file(root, key):
            results.append(common.private_key_mode_check(root, key, "tls key", forbid))
    tls_paths = [r.path for r in refs if r.category == "tls"]
    results += common.certificate_checks(root, manifest, tls_paths)
    results += common.issuer_checks(root, _chains(config))
    results += _ldap_checks(root, config)
    results += _runtime_dir_checks(root, config)
    for ref in refs:
        if ref.directive == "SFTPAuthorizedUserKeys" and common.is_file(root, ref.path):
            text = on_root(root, ref.path).read_text(errors="replace")
            found = common.rfc4716_keys(text)
            name = f"user keys: {ref.path}"
            if found:
                results.append(passed(name, f"{len(found)} RFC 4716 key(s)"))
            else:
                detail = "no RFC 4716 key: mod_sftp needs `ssh-keygen -e` format"
                results.append(failed(name, detail))
    return results


def _chains(config: Config) -> list[tuple[str, list[str]]]:
    """Return (certificate, [chain and CA files]) for every TLS pair's server context."""
    found = []
    for cert, _, server in _tls_pairs(config):
        extra = [
            line.args[0]
            for keyword in ("tlscertificatechainfile", "tlscacertificatefile")
            for line in config.of(keyword, server)
            if line.args
        ]
        found.append((cert, extra))
    return found


def _module_checks(config: Config) -> list[Check]:
    """Each LoadModule'd module must exist where proftpd loads it: ModulePath on this host,
    or compiled into this host's proftpd (which then says "already loaded" and goes on)."""
    loads = config.of("loadmodule")
    if not loads:
        return []
    path_line = config.first("modulepath")
    module_dir = path_line.args[0] if path_line and path_line.args else policy()["module_path"]
    built_in = static_modules(proftpd_program()) or frozenset()
    missing = [
        line.args[0]
        for line in loads
        if line.args
        and _module(line.args[0]) not in built_in
        and not Path(module_dir, _module(line.args[0]) + ".so").is_file()
    ]
    name = "proftpd: modules (host)"
    if missing:
        detail = f"not in {module_dir} on this host: {', '.join(missing)} (a package to install)"
        return [failed(name, detail)]
    return [passed(name, f"{len(loads)} LoadModule found in {module_dir} on this host")]


def _ldap_checks(root: Path, config: Config) -> list[Check]:
    """mod_ldap: every LDAPServer is an ldap(s):// URL or host[:port]; a file holding an
    LDAPBindDN password is not readable by others (the password is never shown)."""
    results = []
    for line in config.of("ldapserver"):
        servers = [a for a in line.args if not a.split(":", 1)[0].startswith("ssl-")]
        name = f"ldap: LDAPServer ({line.where})"
        bad = [s for s in servers for url in s.split() if not _ldap_url_ok(url)]
        if not servers or bad:
            results.append(failed(name, f"not an LDAP server: {' '.join(bad) or 'none named'}"))
        else:
            results.append(passed(name, " ".join(servers)))
    for line in config.of("ldapbinddn"):
        name = f"ldap: bind secret {line.source}"
        if len(line.args) < 2:
            results.append(passed(name, f"{line.where}: anonymous or SASL bind, no password"))
            continue
        try:
            info = os.stat(on_root(root, line.source))
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o004 or info.st_uid != 0:
            detail = f"holds the bind password ({line.where}) but is {mode:04o} uid {info.st_uid}"
            results.append(warned(name, detail + ": keep it in an Included 0600 root file"))
        else:
            results.append(passed(name, f"{mode:04o} root, password not shown"))
    return results


def _ldap_url_ok(text: str) -> bool:
    if "://" in text:
        scheme, _, rest = text.partition("://")
        return scheme.lower() in ("ldap", "ldaps", "ldapi") and bool(
            rest.split("/")[0] or scheme == "ldapi"
        )
    host, _, port = text.partition(":")
    return bool(host) and (not port or port.isdigit())


def _run_as(root: Path, config: Config) -> dict[tuple[str, str], str]:
    """On a prefix root, the daemon's User/Group names this host lacks, mapped to
    nobody/nogroup (proftpd resolves them on this host); none on / (the host is the node)."""
    if str(root) == "/":
        return {}
    found = {}
    for keyword, lookup, fallback in (
        ("user", pwd.getpwnam, "nobody"),
        ("group", grp.getgrnam, "nogroup"),
    ):
        for line in config.of(keyword):
            if line.args and _host_name(lookup, line.args[0], fallback) != line.args[0]:
                found[(keyword, line.args[0])] = fallback
    return found


def _config_test(root: Path, config: Config) -> Check:
    name = "config: proftpd -t"
    program = proftpd_program()
    if program is None:
        return failed(name, "proftpd is not installed on this host")
    work = Path(tempfile.mkdtemp(prefix="drkit-proftpd-t-"))
    try:
        run = Run(work, run_as=_run_as(root, config))
        copy, names = write_copy(root, config, work, run)
        argv = [
            program if a == policy()["validate"]["argv"][0] else a.replace("{config}", str(copy))
            for a in policy()["validate"]["argv"]
        ]
        done = runner.run(argv, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = _node_text(done.stderr, names, root, run.origins)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    patterns = policy()["validate"]["fail_patterns"]
    bad = [ln for ln in lines if any(p in ln.lower() for p in patterns)]
    if done.returncode != 0 or bad:
        useful = [_said(ln) for ln in (bad or lines)]
        return failed(name, f"exit {done.returncode}: " + " | ".join(useful[:2]))
    return passed(name, "proftpd accepts the config")


def _said(line: str) -> str:
    """Return what proftpd said on a log line, without its timestamp, host and pid."""
    return re.sub(r"^.*?proftpd\[\d+\][^:]*:\s*", "", line).strip()


def _server_words(log_path: Path, names: dict[str, str], root: Path, run: Run) -> str:
    """Return the interesting lines proftpd wrote at start, node paths and lines as the node's
    files have them."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    text = _node_text(text, names, root, run.origins).replace(str(run.work), "<work>")
    lines = [_said(line) for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if "SocketBindTight in effect" not in line]
    return " | ".join(common.interesting_lines(lines, common.LOG_PATTERN + "|cannot|refus"))


def _servers(config: Config) -> list[int]:
    """The server contexts proftpd creates: the main one and every active <VirtualHost>."""
    return [0] + [
        line.server for line in config.lines if line.keyword == "<virtualhost" and line.active
    ]


def _start(root: Path, config: Config, run: Run, program: str):
    """Write the run's copy, start proftpd -n from it and wait until every server listens.

    Return (service or None, the server's words when it did not come up, seconds waited).
    """
    copy, names = write_copy(root, config, run.work / "config", run)
    names.update({str(held): node for node, held in run.auth_files.items()})
    (run.work / "logs").mkdir(mode=0o755, exist_ok=True)
    log_path = run.work / "proftpd.out"
    server = runner.start_service([program, "-n", "-c", str(copy)], log_path)
    started, timeout = time.monotonic(), policy()["smoke"]["start_timeout_seconds"]
    up = all(common.wait_port(run.ports[i], server, timeout) for i in _servers(config))
    if up:
        return server, "", time.monotonic() - started
    alive = server.alive()
    server.stop()
    words = _server_words(log_path, names, root, run) or "no output"
    how = "did not listen in time" if alive else "exited"
    return None, f"{how}: {words}", 0.0


def _start_check(root: Path, config: Config) -> Check:
    """Start the real proftpd on the restored config changed only in its listen addresses,
    ports, runtime files and logs (and, on a prefix root, a User/Group the host lacks): what
    `proftpd -t` accepts may still be refused at start (FTPS and SFTP on one server)."""
    name = "config: proftpd starts"
    program = proftpd_program()
    if program is None:
        return failed(name, "proftpd is not installed on this host")
    base = Path(tempfile.mkdtemp(prefix="drkit-proftpd-start-"))
    base.chmod(0o755)
    try:
        ports = {index: common.free_port() for index in range(config.servers)}
        run = Run(base, ports=ports, run_as=_run_as(root, config))
        server, words, waited = _start(root, config, run, program)
        if server is None:
            return failed(name, f"proftpd {words}")
        server.stop()
        listening = ", ".join(f"127.0.0.1:{ports[i]}" for i in _servers(config))
        detail = f"listened on {listening} in {waited:.2f} s"
        if run.differences:
            detail += "; changed: " + "; ".join(run.differences)
        return passed(name, detail)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- smoke: the real proftpd on loopback ports --------------------------------------------------


def _host_name(lookup, name: str, fallback: str) -> str:
    try:
        lookup(name)
    except KeyError:
        return fallback
    return name


def _smoke_contexts(config: Config) -> list[int]:
    """The server contexts a smoke logs in to: every SFTP and FTPS one; a node serving neither
    is proven on its DefaultServer (the one answering unmatched addresses), else the main."""
    served = [
        s
        for s in _servers(config)
        if config.engine_on("sftpengine", s) or config.engine_on("tlsengine", s)
    ]
    if served:
        return served
    default = [s for s in _servers(config) if config.engine_on("defaultserver", s)]
    return default[:1] or [0]


def _auth_copies(root: Path, config: Config, run: Run, stand_in: str | None) -> None:
    """On a prefix root, give the run a copy of each AuthUserFile with the homes mapped onto
    root (proftpd chroots and changes into them), with the node file's mode, owner and
    folder mode (proftpd refuses a world-writable one as on the node); stand_in (the smoke
    user's node account, when this host's /etc/passwd is not the node's) is added to each, and
    to a stand-in AuthUserFile for the server contexts naming none."""
    if str(root) == "/":
        return
    folder = run.work / "auth"
    folder.mkdir(mode=0o755)
    for index, line in enumerate(config.of("authuserfile")):
        node_file = line.args[0] if line.args else ""
        host = on_root(root, node_file)
        if node_file in run.auth_files or not host.is_file():
            continue
        rows = []
        for raw in host.read_text(errors="replace").splitlines():
            fields = raw.split(":")
            if len(fields) >= 7 and not raw.startswith("#") and fields[5].startswith("/"):
                fields[5] = _mapped(root, fields[5])
            rows.append(":".join(fields))
        rows += [stand_in] if stand_in else []
        place = folder / str(index)
        place.mkdir(mode=0o755)
        copy = place / host.name
        common.write_config_copy(copy, rows, 0o600)
        info, parent = host.stat(), host.parent.stat()
        os.chown(copy, info.st_uid, info.st_gid)
        copy.chmod(stat.S_IMODE(info.st_mode))
        place.chmod(stat.S_IMODE(parent.st_mode))
        run.auth_files[node_file] = copy
    if stand_in:
        run.stand_in = folder / "node-accounts.passwd"
        common.write_config_copy(run.stand_in, [stand_in], 0o600)
        user = stand_in.split(":", 1)[0]
        run.differ(
            f"{user} is the node's account: served from a work-dir AuthUserFile beside the "
            "node's sources (this host's /etc/passwd is not the node's)"
        )


def _landing(root: Path, config: Config, server: int, user: str, fields: list[str]):
    """Return (the host directory a login lands in, the path its client is shown there, why):
    DefaultRoot (the first whose group expression holds) chroots it, into its home when the
    home is inside the chroot."""
    home = posixpath.normpath(fields[5] or "/")
    for line in config.of("defaultroot", server):
        if not line.args:
            continue
        expr = line.args[1:]
        if expr and not _group_expr_matches(expr, _groups_of(root, user, fields)):
            continue
        jail = _expand(line.args[0], user, home, {user: home})
        if not jail or jail == "/":
            break
        inside = home == jail or home.startswith(jail.rstrip("/") + "/")
        seen = "/" + posixpath.relpath(home, jail) if inside and home != jail else "/"
        why = f"DefaultRoot {' '.join(line.args)} ({line.where})"
        return on_root(root, home if inside else jail), seen, why
    return on_root(root, home), _mapped(root, home), "no DefaultRoot: the home, not chrooted"


def _write_rules(config: Config, server: int, user: str, home: str) -> list[tuple[str, bool]]:
    """Return (directory pattern, allowed) of each <Limit WRITE/STOR/ALL> AllowAll/DenyAll
    (or AllowUser/DenyUser naming user) of a server context outside <Anonymous>; "" is the
    server itself."""
    rules, folders, limit = [], [], None
    for line in config.lines:
        if not line.active or line.anon is not None or line.server not in (server, -1):
            continue
        if line.keyword == "<directory" and line.args:
            pattern = (
                line.args[0].replace("~", home, 1) if line.args[0].startswith("~") else line.args[0]
            )
            folders.append(posixpath.normpath(pattern))
        elif line.keyword == "</directory" and folders:
            folders.pop()
        elif line.keyword == "<limit":
            limit = {arg.upper() for arg in line.args} & {"WRITE", "STOR", "ALL"}
        elif line.keyword == "</limit":
            limit = None
        elif limit and line.keyword in ("allowall", "denyall", "allowuser", "denyuser"):
            if line.keyword.endswith("user") and user not in ",".join(line.args).split(","):
                continue
            rules.append((folders[-1] if folders else "", line.keyword.startswith("allow")))
    return rules


def _may_write(rules: list[tuple[str, bool]], node_dir: str) -> bool:
    """The most specific <Directory> rule matching node_dir decides (none: allowed)."""

    def matches(pattern: str) -> bool:
        if not pattern:
            return True
        if fnmatch.fnmatchcase(node_dir, pattern):
            return True
        return not glob.has_magic(pattern) and node_dir.startswith(pattern.rstrip("/") + "/")

    hits = [(len(pattern), allowed) for pattern, allowed in rules if matches(pattern)]
    return max(hits)[1] if hits else True


def writable_dirs(
    root: Path, config: Config, server: int, user: str, fields: list[str], landed: Path
) -> list[str]:
    """Return where a login may upload, relative to where it lands ("." first): the landing
    directory and its subdirectories that the account may write by owner and mode
    (common.writable_places) and that no <Limit WRITE> denies."""
    rules = _write_rules(config, server, user, posixpath.normpath(fields[5] or "/"))
    return [
        name
        for name, folder in common.writable_places(root, landed, [user, *fields[1:]])
        if _may_write(rules, to_node(root, folder) if str(root) != "/" else str(folder))
    ]


def smoke(root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
    """Start the real proftpd on the restored config, changed only in its listen addresses,
    ports, runtime files and logs, with the smoke's one-run credentials added beside the
    node's own (a key store beside SFTPAuthorizedUserKeys, a one-run PAM password in front of
    AuthOrder, the node's account in a work-dir AuthUserFile where this host's /etc/passwd is
    not the node's); every other change is a warning naming it. Log in over every protocol it
    serves (SFTP pinned to the manifest's host keys, FTPS to its certificate, plain FTP where
    neither is on), confirm where the login landed against DefaultRoot, and put, get and
    compare a file in a directory the user may write (found from owners, modes and
    <Limit WRITE>; none found is a warning). On a node whose accounts come from mod_ldap the
    login is SFTP with the one-run key only.
    """
    root = Path(root)
    result = SmokeResult(profile=NAME)
    program = proftpd_program()
    if program is None:
        return SmokeResult.not_judged(NAME, "proftpd is not installed on this host")
    main = settings(common.options_of(manifest, NAME))["config"]
    server: runner.Service | None = None
    pam_path: Path | None = None
    with common.smoke_workspace(work_dir, "smoke-proftpd-") as work:
        try:
            config = read_config(root, main)
            if main not in config.files:
                result.add(failed("smoke: proftpd started", f"{main} is missing"))
                return result
            virtual = virtual_users(root, config)
            ldap = bool(config.of("ldapserver")) and user not in virtual
            fields = virtual.get(user)
            if fields is None and not ldap:
                with contextlib.suppress(KeyError):
                    fields = common.node_fields(root, manifest, user)
                if fields is None:
                    detail = f"{user} is neither a virtual user nor an account"
                    result.add(failed("smoke: user", detail))
                    return result
            ports = {index: common.free_port() for index in range(config.servers)}
            served = _smoke_contexts(config)
            run = Run(work, ports=ports, run_as=_run_as(root, config))
            run.sftp_contexts = {s for s in served if config.engine_on("sftpengine", s)}
            made = common.authorized_client_key(
                work, user, "keys", lambda line: common.rfc4716(line, "drkit-smoke")
            )
            if made is None:
                result.add(failed("smoke: proftpd started", "ssh-keygen failed"))
                return result
            key, run.key_dir = made
            password = secrets.token_urlsafe(18)
            if not ldap and _module_loaded(
                config, {"static": static_modules(program)}, "mod_auth_pam"
            ):
                pam_path = common.one_run_pam_service(work, user, password)
                run.pam_service = pam_path.name
            stand_in = None
            if fields is not None and user not in virtual and str(root) != "/":
                home = _mapped(root, fields[5] or "/")
                stand_in = f"{user}:*:{fields[2]}:{fields[3]}::{home}:{fields[6] or '/bin/false'}"
            _valid_shell(root, config, run, user, fields, served)
            _auth_copies(root, config, run, stand_in)
            server, words, waited = _start(root, config, run, program)
            if server is None:
                result.add(failed("smoke: proftpd started", f"proftpd {words}"))
                return result
            listening = ", ".join(f"127.0.0.1:{ports[i]}" for i in served)
            result.add(passed("smoke: proftpd started", f"{listening} in {waited:.2f} s"))
            if run.differences:
                detail = "; ".join(run.differences)
                result.add(warned("smoke: differs from the node's config", detail))

            def hint() -> str:
                return common.log_hint(work / "proftpd.out", *run.logs)

            for index in served:
                _login(
                    result, root, config, manifest, index, user, fields, run, key, password, hint
                )
            return result
        finally:
            if server is not None:
                server.stop()
            if pam_path is not None:
                pam_path.unlink(missing_ok=True)


def _valid_shell(root: Path, config: Config, run: Run, user: str, fields, served) -> None:
    """RequireValidShell reads this host's /etc/shells: when the node's lists the user's shell
    and this host's does not, the run turns it off (a difference named)."""
    shell = (fields or [""] * 7)[6]
    if not shell or all(config.is_off("requirevalidshell", s) for s in served):
        return
    node, host = _list_file(root, "/etc/shells"), _list_file(Path("/"), "/etc/shells")
    if shell in node and shell not in host:
        run.shells_off = True
        run.differ(
            f"RequireValidShell off: {user}'s shell {shell} is in the node's /etc/shells, "
            "not in this host's"
        )


def _login(result, root, config, manifest, index, user, fields, run, key, password, hint) -> None:
    """Log in to one server context over what it serves; check the landing and move a file."""
    port = run.ports[index]
    landed, seen, why = (None, None, "")
    uploads: tuple[str, ...] = common.UPLOAD_DIRS
    if fields is not None:
        landed, seen, why = _landing(root, config, index, user, fields)
        uploads = tuple(writable_dirs(root, config, index, user, fields, landed))
    if config.engine_on("sftpengine", index):
        paths = {line.args[0] for line in config.of("sftphostkey", index) if line.args}
        pinned = [k for k in manifest.get("host_keys", []) if k["path"] in paths]
        if not pinned:
            result.add(failed("smoke: sftp", "the backup holds no SFTPHostKey to pin"))
            return
        common.keyscan(result, pinned, port, "sftp")
        before = len(result.checks)
        common.sftp_session(
            result, pinned, user, port, key, run.work, hint, upload_dirs=uploads, show_dir=True
        )
        login = next((c for c in result.checks[before:] if c.name == "smoke: sftp login"), None)
        if login and login.status == "pass" and seen is not None:
            where = login.detail.rsplit(", in ", 1)[-1]
            result.add(_landing_check("sftp", where, seen, why))
        return
    label = "ftps" if config.engine_on("tlsengine", index) else "ftp"
    if run.pam_service is None:
        why_not = (
            f"{user} is an LDAP account: drkit knows no password for it"
            if fields is None
            else "this proftpd has no mod_auth_pam: no one-run password beside the node's"
        )
        result.add(warned(f"smoke: {label}", why_not))
        return
    tls = _ftps_pin(root, config, manifest, index) if label == "ftps" else None
    if label == "ftps" and tls is None:
        result.add(failed("smoke: ftps", "TLSEngine on but no certificate configured"))
        return
    common.ftp_session(
        result, port, user, password, tls=tls, hint=hint, upload_dirs=uploads, expect_dir=seen,
        landing_why=why,
    )  # fmt: skip


def _landing_check(label: str, where: str, seen: str, why: str) -> Check:
    name = f"smoke: {label} landing"
    if posixpath.normpath(where) == posixpath.normpath(seen):
        return passed(name, f"in {where}, as {why} says")
    return failed(name, f"landed in {where}; {why} says {seen}")


def _ftps_pin(root, config, manifest, index) -> common.FtpTls | None:
    pairs = [(cert, key) for cert, key, server in _tls_pairs(config) if server in (index, -1)]
    if not pairs:
        return None
    extra = [path for cert, chain in _chains(config) if cert == pairs[0][0] for path in chain]
    trusted = "".join(
        on_root(root, path).read_text(errors="replace")
        for path in [cert for cert, _ in pairs] + extra
        if common.is_file(root, path)
    )
    expected = {
        entry["fingerprint"]
        for entry in manifest.get("certificates", [])
        if entry["path"] in {cert for cert, _ in pairs}
    }
    names = common.certificate_names(root, pairs[0][0])
    return common.FtpTls(trusted, names[0] if names else "localhost", frozenset(expected))


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """Write proftpd.conf and its Includes with node paths mapped onto root into out_dir;
    return the main copy."""
    return write_copy(root, read_config(root), out_dir)[0]


SIGNS = Signs(("/etc/proftpd/proftpd.conf",), ("/usr/sbin/proftpd",), ("proftpd.service",), "-c")


def login_homes(root: Path, manifest: dict) -> dict[str, str]:
    """Return {account: node path} of the home a login of each of the manifest's accounts
    changes into: its passwd home when no DefaultRoot applies or the home lies inside the
    chroot DefaultRoot makes (in any server context); a login jailed away from its home
    starts at the jail's root and needs none."""
    root = Path(root)
    config = read_config(root, settings(common.options_of(manifest, NAME))["config"])
    passwd = accounts.passwd_entries(root)
    homes = {}
    for name in [account["name"] for account in manifest.get("accounts", [])]:
        fields = passwd.get(name)
        if not fields or not fields[5].startswith("/"):
            continue
        home = posixpath.normpath(fields[5])
        for server in _servers(config):
            if _landing(root, config, server, name, fields)[0] == on_root(root, home):
                homes[name] = home
    return homes


PROFILE = ModuleProfile(
    NAME,
    SIGNS,
    inventory,
    checks,
    smoke,
    sandbox_config,
    ("proftpd.conf:DefaultAddress",),
    login_homes_of=login_homes,
)
