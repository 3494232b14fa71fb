"""What a ProFTPD config names: every node path with its category and whether it must exist,
the runtime directories proftpd needs at start, and the node's inventory built from them.
Which directives name files comes from policies/proftpd.yaml."""

from __future__ import annotations

import posixpath
from pathlib import Path

from drkit.engines import accounts
from drkit.model import Inventory
from drkit.profiles.common import configrefs, pamfiles
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.proftpd import sql
from drkit.profiles.proftpd.config import Config, Line, read_config
from drkit.profiles.proftpd.policy import Directive, Options, policy
from drkit.profiles.proftpd.users import (
    expand,
    group_expr_matches,
    groups_of,
    list_file,
    logins,
    pam_services,
    run_accounts,
)


def _pam_refs(root: Path, service: str, where: str) -> list[Ref]:
    """Return the PAM service file, the files it includes and the stores its modules name."""
    path = f"/etc/pam.d/{service}"
    pam = pamfiles.read_pam(root, path)
    refs = [Ref(path, "config", "AuthPAMConfig", where, False)]
    refs += [Ref(included, "config", "@include", line, False) for included, line in pam.includes]
    refs += [Ref(store, "accounts", "PAM store", line, False) for store, line in pam.stores]
    return refs


def _log_dir_ok(path: str) -> bool:
    """True when a log file's directory is the server's own (not /var/log and the like)."""
    parent = posixpath.dirname(path)
    return parent not in policy().shared_dirs


def references(root: Path, config: Config) -> list[Ref]:
    """Return every node path the config names, with category and whether it must exist."""
    pol = policy()
    off = set(pol.off_words)
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
    homes = {name: entry.home for name, entry in all_accounts.items()}
    users_of = {s: logins(root, config, s) for s in range(config.servers)}
    for users in users_of.values():
        homes.update({name: fields[5] for name, fields in users.items() if name not in homes})
    for line in config.lines:
        rule = pol.directives.get(line.keyword)
        if rule is None or not line.args or line.keyword == "include":
            continue
        kind, category, name = rule.kind, rule.category, rule.name
        required = rule.required and line.active
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


def runtime_dirs(config: Config) -> list[tuple[Line, str]]:
    """Return (line, directory) of each runtime file the config names (ScoreboardFile,
    PidFile, ...) in a directory of the server's own: proftpd needs the directory at start
    (not the file); shared directories (/var, /run itself) are not the server's."""
    found = []
    for line in config.lines:
        if line.keyword in policy().runtime and line.active and line.args:
            path = line.args[0]
            folder = posixpath.dirname(posixpath.normpath(path)) if path.startswith("/") else ""
            if folder and folder not in policy().shared_dirs:
                found.append((line, folder))
    return found


def _keystore_refs(
    line: Line, rule: Directive, users: dict[str, list[str]], homes: dict[str, str]
) -> list[Ref]:
    refs = []
    for arg in line.args:
        if not arg.startswith("file:"):
            continue
        pattern = arg.removeprefix("file:")
        if "%u" not in pattern and not pattern.startswith("~"):
            refs.append(Ref(pattern, rule.category, rule.name, line.where, False))
            continue
        for user, fields in users.items():
            path = expand(pattern, user, fields[5], homes)
            if path:
                refs.append(Ref(path, rule.category, rule.name, line.where, False, user=user))
    return refs


def _default_root_refs(
    root: Path, line: Line, rule: Directive, users: dict[str, list[str]], homes: dict[str, str]
) -> list[Ref]:
    """DefaultRoot DIR [group-expr]: a fixed directory, or ~, ~name and %u for each user the
    group expression selects."""
    first, expr = line.args[0], line.args[1:]
    required = line.active
    if "%u" not in first and not first.startswith("~"):
        path = posixpath.normpath(first)
        if path == "/":
            return []
        return [Ref(path, rule.category, rule.name, line.where, required, directory=True)]
    refs = []
    for user, fields in users.items():
        jail = expand(first, user, fields[5], homes)
        if not jail or jail == "/":
            continue
        selected = not expr or group_expr_matches(expr, groups_of(root, user, fields))
        where = f"{line.where}, user {user}"
        refs.append(Ref(jail, rule.category, rule.name, where, required and selected, True))
    return refs


def _anonymous_refs(config: Config, homes: dict[str, str]) -> list[Ref]:
    """Every active <Anonymous DIR> root: an absolute directory or ~name's home."""
    refs = []
    for line in config.lines:
        if line.keyword != "<anonymous" or not line.active or not line.args:
            continue
        first = line.args[0]
        path = expand(first, "", "", homes) if first.startswith("~") else first
        if path and path.startswith("/"):
            path = posixpath.normpath(path)
            refs.append(Ref(path, "chroot", "<Anonymous>", line.where, True, directory=True))
    return refs


def _ldap_conf_refs(root: Path) -> list[Ref]:
    """TLS_CACERT and friends of libldap's /etc/ldap/ldap.conf (mod_ldap's defaults)."""
    refs = []
    for raw in list_file(root, "/etc/ldap/ldap.conf"):
        fields = raw.split(None, 1)
        if len(fields) == 2 and fields[0].upper() in ("TLS_CACERT", "TLS_CERT", "TLS_KEY"):
            where = "/etc/ldap/ldap.conf"
            refs.append(Ref(fields[1].strip(), "tls", fields[0].upper(), where, True))
    return refs


def inventory(root: Path, smoke_user: str | None, options: Options) -> Inventory:
    """Return what makes this ProFTPD node: config, keys, certificates, users, homes, logs."""
    pol, root = policy(), Path(root)
    main = options.config
    config = read_config(root, main)
    if main not in config.files:
        return Inventory(warnings=[*config.warnings, f"proftpd: no config {main} on the node"])
    refs = references(root, config) + sql.references(config)
    found = configrefs.inventory_from_refs(root, config.files, refs, config.warnings)
    found.databases = sql.databases(config)
    found.owned_globs = list(dict.fromkeys([main, *pol.owned_globs]))
    found.users, warnings = run_accounts(root, config)
    found.warnings += warnings
    if not config.of("sftphostkey") and any(
        config.engine_on("sftpengine", s) for s in range(config.servers)
    ):
        found.warnings.append("SFTPEngine on without SFTPHostKey: clients will see a new server")
    return found
