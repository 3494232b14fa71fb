"""vsftpd nodes (FTP and FTPS): read vsftpd.conf as vsftpd does, back up what it names (the PAM
service and its credential stores, the trees every login lands in), prove a restore by starting
the real vsftpd and logging in.

Who logs in and where, as vsftpd 3.0 works it out (twoprocess.c, secutil.c): anonymous logins
are ftp_username, chrooted into anon_root or its home; with guest_enable every other login is a
virtual user mapped to guest_username; otherwise local users are the node's accounts (an allow
list when userlist_deny=NO). A login changes into its account's home (user_sub_token replaced by
the login name; a missing home is 500 OOPS), then into local_root (expanded the same way),
which must exist when the login is chrooted. vsftpd has no test mode: the config check starts it
on a free loopback port and waits for its 220 greeting (start-up errors go to file descriptor
0). Settings come from policies/vsftpd.yaml.
"""

from __future__ import annotations

import contextlib
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
from drkit.engines import accounts, clients
from drkit.model import Check, Inventory, SmokeResult, failed, passed, warned
from drkit.paths import on_root, to_node
from drkit.profiles.common import (
    configrefs,
    configtext,
    keychecks,
    pamfiles,
    policies,
    profile_options,
    programs,
    smoke_accounts,
    smokerun,
)
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.interface import ModuleProfile, Signs

NAME = "vsftpd"


def policy() -> dict:
    return policies.policy(NAME)


def settings(options: dict | None) -> dict:
    """Return profile_options.vsftpd over the policy's defaults; raise ConfigError naming the
    setting when one is unknown or malformed."""
    options = dict(options or {})
    allowed = policy()["options"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise errors.ConfigError(f"profile_options.vsftpd.{unknown[0]}: unknown setting")
    chosen = {**allowed, **options}
    config = chosen["config"]
    if config is not None and not (isinstance(config, str) and config.startswith("/")):
        raise errors.ConfigError("profile_options.vsftpd.config: must be an absolute node path")
    return chosen


# --- reading vsftpd.conf ----------------------------------------------------------------------


@dataclass
class Config:
    """vsftpd.conf's settings (lower-case keys; the last line of a key wins) and per-user files."""

    path: str | None = None
    text: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    user_files: dict[str, dict[str, str]] = field(default_factory=dict)
    # Defaults read from the binary that runs the node (compiled_defaults), over upstream's.
    compiled: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, user: str | None = None) -> str | None:
        """Return a setting (a user's own file first), else vsftpd's compiled-in default: the
        node binary's when known, else upstream's (tunables.c)."""
        own = self.user_files.get(user or "", {})
        value = own.get(key, self.settings.get(key))
        if value is not None:
            return value
        return self.compiled.get(key, policy()["config"]["defaults"].get(key))

    def yes(self, key: str, user: str | None = None) -> bool:
        return (self.get(key, user) or "").upper() == "YES"

    def expand(self, value: str, login: str) -> str:
        """Return value with user_sub_token replaced by the login name, as vsftpd does."""
        token = self.settings.get("user_sub_token")
        return value.replace(token, login) if token else value


def parse_settings(text: str) -> list[tuple[int, str, str]]:
    """Return (line number, key, value) of every key=value line."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found.append((number, key.strip().lower(), value.strip()))
    return found


def node_program(root: Path) -> str | None:
    """Return the vsftpd binary that runs the node: the root's own /usr/sbin/vsftpd, else the
    one this host would start (the smoke's)."""
    own = on_root(root, SIGNS.binaries[0])
    if str(root) != "/" and own.is_file():
        return str(own)
    return _program()


@functools.cache
def _binary_strings(path: str, size: int, mtime: float) -> dict[str, str]:
    """Return the compiled-in string defaults found in a vsftpd binary (tunables.c): each
    policy `compiled` key whose value is the first absolute path ending as its pattern says."""
    data = Path(path).read_bytes()
    strings = [m.decode() for m in re.findall(rb"/[\x21-\x7e]{2,200}", data)]
    found = {}
    for key, suffix in policy()["compiled"].items():
        hit = next((text for text in strings if text.endswith(suffix)), None)
        if hit:
            found[key] = hit
    return found


def compiled_defaults(root: Path, manifest: dict | None = None) -> dict[str, str]:
    """Return the compiled-in defaults of the node's vsftpd: as the backup recorded them (a
    restore elsewhere keeps the node's build), else read from node_program()."""
    recorded = ((manifest or {}).get("facts") or {}).get(NAME, {}).get("compiled")
    if recorded:
        return dict(recorded)
    program = node_program(root)
    if program is None:
        return {}
    try:
        info = os.stat(program)
        return dict(_binary_strings(program, info.st_size, info.st_mtime))
    except OSError:
        return {}


def read_config(
    root: Path, path: str | None = None, compiled: dict[str, str] | None = None
) -> Config:
    """Read the node's vsftpd.conf (path, else the first candidate) and user_config_dir;
    compiled: the node binary's defaults (compiled_defaults(root) when None)."""
    config = Config(compiled=compiled_defaults(root) if compiled is None else compiled)
    for candidate in [path] if path else policy()["config"]["candidates"]:
        host = on_root(root, candidate)
        if host.is_file():
            config.path, config.text = candidate, host.read_text(errors="replace")
            break
    if config.path is None:
        return config
    for number, key, value in parse_settings(config.text):
        config.settings[key] = value
        config.where[key] = f"{config.path} line {number}"
    user_dir = config.settings.get("user_config_dir")
    if user_dir and on_root(root, user_dir).is_dir():
        for child in sorted(on_root(root, user_dir).iterdir()):
            if child.is_file() and not child.name.startswith("."):
                pairs = parse_settings(child.read_text(errors="replace"))
                config.user_files[child.name] = {key: value for _, key, value in pairs}
    return config


def config_path(options: dict | None) -> str | None:
    return settings(options)["config"]


# --- PAM ------------------------------------------------------------------------------------------


def pam_file(config: Config) -> str:
    return posixpath.join(policy()["config"]["pam_dir"], config.get("pam_service_name") or "ftp")


def read_pam(root: Path, config: Config) -> pamfiles.PamStack:
    """Read the PAM service vsftpd uses and the files it includes (pamfiles.read_pam)."""
    return pamfiles.read_pam(root, pam_file(config), policy()["config"]["pam_dir"])


def _names_in(root: Path, node_path: str | None, field_sep: str | None = None) -> list[str]:
    """Return the names listed one per line in a file (first field when field_sep is given)."""
    if not node_path:
        return []
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError:
        return []
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split(field_sep, 1)[0] if field_sep else line)
    return names


# --- who logs in, and where -------------------------------------------------------------------


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
    low, high = policy()["local_uid_min"], policy()["local_uid_max"]
    for line in _names_in(root, "/etc/login.defs"):
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
    listed = _names_in(root, config.get("userlist_file")) if config.yes("userlist_enable") else []
    named = [(name, f"{config.get('user_config_dir')}/{name}") for name in config.user_files]
    if allow_list:
        named += [(name, config.get("userlist_file") or "") for name in listed]
    if config.yes("chroot_list_enable"):
        chroot_list = config.get("chroot_list_file")
        named += [(name, chroot_list or "") for name in _names_in(root, chroot_list)]
    pam = read_pam(root, config)
    if smoke_user and smoke_user not in _anonymous_names():
        named.append((smoke_user, "smoke_user"))
    if config.yes("guest_enable"):
        guest = config.get("guest_username") or "ftp"
        for store in pam.pwdfiles:
            named += [(name, store) for name in _names_in(root, store, ":")]
        for name, where in dict(named).items():  # a user's own file may name another guest
            found.append(Login(name, config.get("guest_username", name) or guest, "guest", where))
        return found
    denied = set(listed if not allow_list else [])
    for deny_file in pam.deny_files:
        denied.update(_names_in(root, deny_file))
    for name, where in dict(named).items():
        found.append(Login(name, name, "local", where))
    if not allow_list:
        low, high = _uid_range(root)
        for name, fields in accounts.passwd_entries(root).items():
            uid = int(fields[2]) if fields[2].isdigit() else -1
            if low <= uid <= high and name not in denied and name not in dict(named):
                found.append(Login(name, name, "local", "node account", named=False))
    return found


def _anonymous_names() -> tuple[str, ...]:
    return tuple(policy()["smoke"]["anonymous_names"])


def _in_chroot_list(root: Path, config: Config, name: str) -> bool:
    return config.yes("chroot_list_enable") and name in _names_in(
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


def place_of(root: Path, config: Config, login: Login, passwd: dict) -> Place:
    """Return the login's home, local_root and chroot directory (node paths, tokens expanded)."""
    fields = passwd.get(login.account)
    home = config.expand(fields[5], login.name) if fields and fields[5] else None
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


def template_refs(root: Path, config: Config, passwd: dict) -> list[Ref]:
    """Trees named by a user_sub_token template for users drkit cannot list (virtual users of
    a Berkeley DB store): every existing match of the template with the token as '*', and the
    directory holding them when the token is the template's last component."""
    token = config.settings.get("user_sub_token")
    if not token:
        return []
    templates = []
    if token in (config.settings.get("local_root") or ""):
        templates.append((config.settings["local_root"], config.where["local_root"]))
    for user, own in config.user_files.items():
        if token in (own.get("local_root") or ""):
            templates.append((own["local_root"], f"{config.get('user_config_dir')}/{user}"))
    guest = passwd.get(config.get("guest_username") or "ftp")
    if config.yes("guest_enable") and guest and token in guest[5]:
        templates.append((guest[5], f"home of guest_username {guest[0]}"))
    refs = []
    for template, where in templates:
        if not template.startswith("/"):
            continue
        directive = f"user_sub_token {token} in {template}"
        pattern = glob.escape(str(on_root(root, "/"))).rstrip("/") + template.replace(token, "*")
        for match in sorted(glob.glob(pattern)):
            if os.path.isdir(match):
                refs.append(
                    Ref(to_node(root, Path(match)), "chroot", directive, where, False, True)
                )
        parent, last = posixpath.split(posixpath.normpath(template))
        if last == token and token not in parent:
            refs.append(Ref(parent, "chroot", directive, where, False, True))
    return refs


def _setting_refs(config: Config) -> list[Ref]:
    pol = policy()
    refs = []
    for key, rule in pol["settings"].items():
        explicit = config.settings.get(key)
        needed = not rule.get("needs") or any(config.yes(flag) for flag in rule["needs"])
        value = explicit if explicit is not None else (config.get(key) if needed else None)
        if not value or not value.startswith("/"):
            continue
        if value.startswith(tuple(pol["never_paths"])):
            continue
        where = config.where.get(key)
        if where is None and key in config.compiled:
            where = "compiled into the node's vsftpd"
        kind = rule["kind"]
        required = needed and kind != "log"
        refs.append(
            Ref(
                value,
                rule["category"],
                key,
                where or "compiled-in default",
                required,
                kind == "dir",
            )
        )
        upstream = pol["config"]["defaults"].get(key)
        if explicit is None and upstream and upstream != value and upstream.startswith("/"):
            note = f"upstream's default; this build's is {value}"
            refs.append(Ref(upstream, rule["category"], key, note, False, kind == "dir"))
        parent = posixpath.dirname(posixpath.normpath(value))
        if kind == "log" and explicit and parent not in pol["shared_dirs"]:
            refs.append(Ref(parent, rule["category"], f"{key} directory", where, False, True))
    return refs


def references(root: Path, config: Config, smoke_user: str | None = None) -> list[Ref]:
    """Return every node path vsftpd's config names, with category and whether it must exist."""
    refs = _setting_refs(config)
    explicit_pam = "pam_service_name" in config.settings
    where = config.where.get("pam_service_name", "pam_service_name default ftp")
    refs.append(Ref(pam_file(config), "config", "pam_service_name", where, explicit_pam))
    pam = read_pam(root, config)
    refs += [Ref(path, "config", "PAM include", line, False) for path, line in pam.includes]
    refs += [
        Ref(path, "accounts", "PAM store", line, path not in pam.optional)
        for path, line in pam.stores
    ]
    passwd = accounts.passwd_entries(root)
    for login in logins(root, config, smoke_user):
        place = place_of(root, config, login, passwd)
        whose = f"{login.kind} login {login.name} ({login.where})"
        if place.home:
            directive = f"home of {login.account}"
            refs.append(Ref(place.home, "chroot", directive, whose, login.named, True, login.name))
        if place.local_root and login.kind != "anonymous":
            required = login.named and place.root == place.local_root
            refs.append(
                Ref(place.local_root, "chroot", "local_root", whose, required, True, login.name)
            )
    guest = guest_account(config)
    home = (passwd.get(guest or "") or [""] * 7)[5]
    token = config.settings.get("user_sub_token")
    if guest and home.startswith("/") and not (token and token in home):
        where = f"home of guest_username {guest}: every virtual login changes into it"
        refs.append(Ref(posixpath.normpath(home), "chroot", "guest_username", where, True, True))
    refs += template_refs(root, config, passwd)
    return list(dict.fromkeys(refs))


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


def inventory(root: Path, smoke_user: str | None, options: dict | None = None) -> Inventory:
    """Return what makes this vsftpd node: config, PAM service and stores, TLS, lists, trees."""
    root = Path(root)
    chosen = config_path(options)
    config = read_config(root, chosen)
    if config.path is None:
        return Inventory(warnings=[f"vsftpd: no {chosen or 'vsftpd.conf'} found"])
    refs = references(root, config, smoke_user)
    found = configrefs.inventory_from_refs(root, [config.path], refs, [])
    found.owned_globs = list(dict.fromkeys([config.path, *policy()["owned_globs"]]))
    user_dir = config.settings.get("user_config_dir")
    if user_dir:
        found.owned_globs.append(f"{user_dir}/*")
    found.users = system_users(root, config, smoke_user)
    if smoke_user and not config.yes("guest_enable") and smoke_user not in found.users:
        found.users.append(smoke_user)
    if config.compiled:
        found.facts[NAME] = {"compiled": dict(config.compiled), "program": node_program(root)}
    return found


# --- checks ---------------------------------------------------------------------------------------


def _tls_pairs(config: Config) -> list[tuple[str, str | None]]:
    pairs = []
    for cert_key, key_key in (
        ("rsa_cert_file", "rsa_private_key_file"),
        ("dsa_cert_file", "dsa_private_key_file"),
    ):
        cert = config.settings.get(cert_key)
        if cert is None and cert_key == "rsa_cert_file" and config.yes("ssl_enable"):
            cert = config.get(cert_key)
        if cert:
            pairs.append((cert, config.settings.get(key_key) or None))
    return pairs


def _writable_by(info: os.stat_result, uid: int, gid: int) -> bool:
    mode = stat.S_IMODE(info.st_mode)
    return bool(
        (info.st_uid == uid and mode & 0o200)
        or (info.st_gid == gid and mode & 0o020)
        or mode & 0o002
    )


def chroot_checks(root: Path, config: Config, smoke_user: str | None) -> list[Check]:
    """A chroot root writable by the account is refused at login (500 OOPS: refusing to run
    with writable root inside chroot()) unless allow_writeable_chroot (never for anonymous)."""
    results, passwd = [], accounts.passwd_entries(root)
    every = logins(root, config, smoke_user)
    guest = guest_account(config)
    if guest and not any(login.kind == "guest" for login in every):
        every.append(Login(guest, guest, "guest", "guest_username"))  # any virtual user
    for login in every:
        place = place_of(root, config, login, passwd)
        fields = passwd.get(login.account)
        if not place.root or not fields or not fields[2].isdigit():
            continue
        with contextlib.suppress(OSError):
            info = os.stat(on_root(root, place.root))
            name = f"chroot: {place.root}"
            allowed = config.yes("allow_writeable_chroot") and login.kind != "anonymous"
            if not allowed and _writable_by(info, int(fields[2]), int(fields[3] or -1)):
                detail = (
                    f"writable by {login.account}, the account {login.kind} login {login.name} "
                    "runs as: vsftpd refuses the login (500 OOPS: refusing to run with "
                    "writable root inside chroot())"
                )
                results.append(failed(name, detail))
            else:
                results.append(passed(name, f"{login.name}: not writable by {login.account}"))
    return list({check.name: check for check in results}.values())


def pam_module_checks(root: Path, config: Config) -> list[Check]:
    """PAM modules are the host's: look for each where PAM loads it from and say where."""
    results = []
    dirs = policy()["pam_module_dirs"]
    for module, where in dict(read_pam(root, config).modules).items():
        name = f"vsftpd: PAM module {module}"
        candidates = [module] if module.startswith("/") else [f"{d}/{module}" for d in dirs]
        found = next((path for path in candidates if os.path.isfile(path)), None)
        if found:
            results.append(passed(name, f"on this host at {found} ({where})"))
        else:
            detail = (
                f"not on this host (looked at {', '.join(candidates)}; {where}): "
                "PAM refuses every login through this service here"
            )
            results.append(warned(name, detail))
    return results


@profile_options.options_fail_as("vsftpd: options")
def checks(root: Path, manifest: dict) -> list[Check]:
    """Return the checks of a restored (or live) vsftpd node against its manifest."""
    root = Path(root)
    chosen = config_path(profile_options.options_of(manifest, NAME))
    config = read_config(root, chosen, compiled_defaults(root, manifest))
    if config.path is None:
        return [failed("vsftpd: config", f"no {chosen or 'vsftpd.conf'} found")]
    refs = references(root, config)
    results = [_start_check(root, config, manifest)]
    results += configrefs.named_files_check(root, refs, "vsftpd")
    info = os.stat(on_root(root, config.path))
    if info.st_uid != 0:
        results.append(failed(f"vsftpd: owner of {config.path}", "must be owned by root"))
    forbid = int(policy()["modes"]["private_key_forbid"], 8)
    for cert, key in _tls_pairs(config):
        if not configrefs.is_file(root, cert) and not config.yes("ssl_enable"):
            continue
        results.append(keychecks.certificate_pair_check(root, cert, key))
        if key and configrefs.is_file(root, key):
            results.append(keychecks.tls_key_mode_check(root, key, forbid, manifest))
    results += keychecks.certificate_checks(
        root, manifest, [r.path for r in refs if r.category == "tls"]
    )
    results += chroot_checks(root, config, None)
    results += pam_module_checks(root, config)
    if not config.settings.get("pam_service_name"):
        detail = f"not set: PAM service ftp ({pam_file(config)}), vsftpd's compiled-in default"
        results.append(warned("vsftpd: pam_service_name", detail))
    return results


def _program() -> str | None:
    return programs.find_program("vsftpd", policy()["smoke"]["vsftpd"])


@dataclass
class _Run:
    work: Path
    port: int
    pam_service: str | None = None
    user_conf: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def write_copy(root: Path, config: Config, run: _Run) -> Path:
    """Write a runnable copy of vsftpd.conf (node paths mapped onto root, 127.0.0.1:port,
    logs in the work dir, optionally a sandbox PAM service and remapped accounts)."""
    pol = policy()
    overrides = dict(pol["smoke"]["override"])
    overrides["listen_port"] = str(run.port)
    overrides["xferlog_file"] = str(run.work / "xferlog")
    overrides["vsftpd_log_file"] = str(run.work / "vsftpd.log")
    overrides["secure_chroot_dir"] = _mapped(root, config.get("secure_chroot_dir") or "/")
    if run.pam_service:
        overrides["pam_service_name"] = run.pam_service
    if run.user_conf:
        overrides["user_config_dir"] = str(run.user_conf)
    overrides.update(run.extra)
    drop = set(pol["smoke"]["drop"])
    out = []
    for raw in config.text.splitlines():
        line = raw.strip()
        key, has_value, value = line.partition("=")
        key = key.strip().lower()
        if not has_value or line.startswith("#"):
            out.append(raw)
        elif key in overrides or key in drop:
            out.append(f"# drkit: {line}")
        elif value.strip().startswith("/") and key in (*pol["settings"], "local_root"):
            out.append(f"{key}={_mapped(root, value.strip())}")
        else:
            out.append(raw)
    out += [f"{key}={value}" for key, value in overrides.items()]
    copy = run.work / "vsftpd.conf"
    configtext.write_config_copy(copy, out)
    return copy


def _mapped(root: Path, path: str) -> str:
    return path if str(root) == "/" else str(on_root(root, path))


def _mapped_user_conf(
    root: Path, config: Config, work: Path, renamed: dict[str, str] | None = None
) -> Path | None:
    """Write the user_config_dir files with node paths mapped onto root and each
    guest_username the run renamed (RENAMED: node account -> one-run account) renamed."""
    if not config.user_files:
        return None
    renamed = renamed or {}
    target = work / "user_conf"
    target.mkdir(mode=0o755)
    for user, own in config.user_files.items():
        lines = [
            f"{key}={_mapped(root, value) if value.startswith('/') else value}"
            if key != "guest_username"
            else f"{key}={renamed.get(value, value)}"
            for key, value in own.items()
        ]
        (target / user).write_text("\n".join(lines) + "\n")
    return target


def _start_check(root: Path, config: Config, manifest: dict) -> Check:
    """vsftpd has no -t: start it on a free loopback port and wait for 220 (a missing
    secure_chroot_dir shows here as 500 OOPS)."""
    name = "config: vsftpd starts"
    program = _program()
    if program is None:
        return failed(name, "vsftpd is not installed on this host")
    work = Path(tempfile.mkdtemp(prefix="drkit-vsftpd-t-"))
    work.chmod(0o755)
    server, created = None, []
    try:
        renamed: dict[str, str] = {}
        made, extra = run_accounts(root, manifest, config, created, renamed)
        broken = [check for check in made if check.status == "fail"]
        if broken:
            return failed(name, f"{broken[0].name.removeprefix('smoke: ')}: {broken[0].detail}")
        user_conf = _mapped_user_conf(root, config, work, renamed)
        run = _Run(work, smokerun.free_port(), user_conf=user_conf, extra=extra)
        copy = write_copy(root, config, run)
        log_path = work / "vsftpd.out"
        server = runner.start_service([program, str(copy)], log_path, stdin_to_log=True)
        reply = smokerun.greeting(run.port, server, policy()["smoke"]["start_timeout_seconds"])
        if reply and reply.startswith("220"):
            return passed(name, f"greets with 220 on 127.0.0.1:{run.port}")
        output = reply or smokerun.log_hint(log_path) or "no greeting"
        return failed(name, _node_text(output, root, work))
    finally:
        if server is not None:
            server.stop()
        smoke_accounts.remove_created(created)
        shutil.rmtree(work, ignore_errors=True)


def _node_text(text: str, root: Path, work: Path) -> str:
    text = text.replace(str(work), "<work>")
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


# --- smoke ----------------------------------------------------------------------------------------


def _one_run_account(
    root: Path, manifest: dict, account: str, created: list[tuple[str, str]], as_is: bool = False
) -> tuple[Check, str | None]:
    """Create a one-run account with the node's uid, gid and (mapped) home of account (a uid
    the host already uses is shared: the restored trees are owned by the node's ids). as_is:
    under account's own name (a local login), and only when the host lacks it; else under a
    one-run name, since the host's own account of that name may have other ids and another
    home. Return the check and the name the copy uses (the host's own when the node has no
    entry)."""
    name = "smoke: user" if as_is else f"smoke: account {account}"
    entry = smoke_accounts.node_account(root, manifest, account)
    if entry is None or (as_is and smoke_accounts.host_has(pwd.getpwnam, account)):
        if smoke_accounts.host_has(pwd.getpwnam, account):
            return passed(name, f"{account} as the host has it"), account
        return failed(name, f"{account} is neither in the node's accounts nor on the host"), None
    fields = (entry["passwd"].split(":") + [""] * 7)[:7]
    temp, gid = account if as_is else f"drkit-{secrets.token_hex(4)}", fields[3]
    if not smoke_accounts.host_has(grp.getgrgid, int(gid)):
        if runner.run(["groupadd", "-o", "-g", gid, temp]).returncode != 0:
            return failed(name, f"groupadd -g {gid} failed"), None
        created.append(("group", temp))
    home = _mapped(root, fields[5] or "/")
    argv = ["useradd", "-M", "-p", "*", "-o", "-u", fields[2], "-g", gid, "-d", home]
    done = runner.run([*argv, "-s", "/usr/sbin/nologin", temp])
    if done.returncode != 0:
        return failed(name, f"useradd failed: {done.stderr_tail}"), None
    created.append(("user", temp))
    detail = f"{account} (uid {fields[2]}, gid {gid}, home {fields[5]}) for the run"
    return passed(name, detail if as_is else f"as {temp}: {detail}"), temp


def run_accounts(
    root: Path,
    manifest: dict,
    config: Config,
    created: list[tuple[str, str]],
    renamed: dict[str, str] | None = None,
) -> tuple[list[Check], dict[str, str]]:
    """Give the copy the system accounts vsftpd looks up at start and login: guest_username
    (guest_enable; the config's and each user_config_dir file's) and ftp_username
    (anonymous_enable) as one-run accounts with the node's ids and mapped homes, nopriv_user
    only when the host lacks it. Return the checks and the settings that point the copy at
    them; RENAMED gets each guest account's one-run name (for the user files)."""
    results, extra = [], {}
    wanted = [
        ("guest_username", config.yes("guest_enable") and config.yes("local_enable")),
        ("ftp_username", config.yes("anonymous_enable")),
        ("nopriv_user", not smoke_accounts.host_has(pwd.getpwnam, config.get("nopriv_user") or "")),
    ]
    for key, needed in wanted:
        if not needed:
            continue
        check, temp = _one_run_account(root, manifest, config.get(key) or "", created)
        results.append(check)
        if temp:
            extra[key] = temp
            if key == "guest_username" and renamed is not None:
                renamed[config.get(key) or ""] = temp
    if renamed is not None and wanted[0][1]:
        for own in config.user_files.values():
            account = own.get("guest_username")
            if account and account not in renamed:
                check, temp = _one_run_account(root, manifest, account, created)
                results.append(check)
                if temp:
                    renamed[account] = temp
    return results, extra


def _read_only(config: Config, login: Login) -> str | None:
    """Why this login may not upload by the config (write_enable, anon_upload_enable), or None."""
    if not config.yes("write_enable", login.name):
        return "write_enable=NO: the config refuses uploads"
    anon_like = login.kind == "anonymous" or (
        login.kind == "guest" and not config.yes("virtual_use_local_privs", login.name)
    )
    if anon_like and not config.yes("anon_upload_enable", login.name):
        return f"anon_upload_enable=NO: {login.kind} logins may not upload"
    return None


def _smoke_login(config: Config, user: str) -> Login:
    if config.yes("anonymous_enable") and user in _anonymous_names():
        return Login(user, config.get("ftp_username") or "ftp", "anonymous", "smoke_user")
    if config.yes("guest_enable"):
        return Login(user, config.get("guest_username", user) or "ftp", "guest", "smoke_user")
    return Login(user, user, "local", "smoke_user")


def smoke(root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
    """Start the real vsftpd on a rewritten copy of the restored config (127.0.0.1, free port)
    with a one-run PAM service (pam_pwdfile, a one-run password) and log in as vsftpd would
    let user in (local, virtual or anonymous): over FTPS pinned to the manifest's certificate
    when the config enables TLS, else plain FTP; put, get and compare a file (a listing when
    the config refuses uploads). The PAM file, accounts created for the run and the work files
    are removed whatever happens."""
    pol, root = policy(), Path(root)
    program = _program()
    if program is None:
        return SmokeResult.not_judged(NAME, "vsftpd is not installed on this host")
    result = SmokeResult(profile=NAME)
    created: list[tuple[str, str]] = []
    pam_path: Path | None = None
    server: runner.Service | None = None
    with smokerun.smoke_workspace(work_dir, "smoke-vsftpd-") as work:
        try:
            try:
                chosen = config_path(profile_options.options_of(manifest, NAME))
            except errors.ConfigError as exc:
                result.add(failed("smoke: vsftpd started", exc.message))
                return result
            config = read_config(root, chosen, compiled_defaults(root, manifest))
            if config.path is None:
                result.add(failed("smoke: vsftpd started", "no vsftpd.conf found"))
                return result
            login = _smoke_login(config, user)
            renamed: dict[str, str] = {}
            made, extra = run_accounts(root, manifest, config, created, renamed)
            result.add(*made)
            if login.kind == "local":
                result.add(_one_run_account(root, manifest, user, created, as_is=True)[0])
            if any(check.status == "fail" for check in result.checks):
                return result
            extra["anonymous_enable"] = "YES" if login.kind == "anonymous" else "NO"
            differs = [
                f"{key} {config.get(key)}: {value} for the run (the node's ids and home)"
                for key, value in extra.items()
                if key in ("guest_username", "ftp_username") and value != config.get(key)
            ]
            if config.yes("anonymous_enable") != (login.kind == "anonymous"):
                differs.append(f"anonymous_enable={extra['anonymous_enable']}: one login kind")
            password = pol["smoke"]["anonymous_password"]
            if login.kind != "anonymous":
                password = secrets.token_urlsafe(18)
                pam_path = pamfiles.one_run_pam_service(work, user, password)
                extra["pam_service_name"] = pam_path.name
                differs.append(
                    f"pam_service_name {config.get('pam_service_name')}: the one-run PAM "
                    "service stands in (vsftpd takes one service; this host's PAM is not the "
                    "node's)"
                )
            if differs:
                result.add(warned("smoke: differs from the node's config", "; ".join(differs)))
            run = _Run(
                work, smokerun.free_port(),
                user_conf=_mapped_user_conf(root, config, work, renamed), extra=extra,
            )  # fmt: skip
            copy = write_copy(root, config, run)
            log_path = work / "vsftpd.out"
            server = runner.start_service([program, str(copy)], log_path, stdin_to_log=True)
            started = time.monotonic()
            if not smokerun.wait_port(run.port, server, pol["smoke"]["start_timeout_seconds"]):
                detail = _node_text(smokerun.log_hint(log_path) or "no output", root, work)
                result.add(failed("smoke: vsftpd started", detail))
                return result
            waited = time.monotonic() - started
            result.add(passed("smoke: vsftpd started", f"127.0.0.1:{run.port} in {waited:.2f} s"))

            def hint() -> str:
                return _node_text(smokerun.log_hint(log_path, work / "vsftpd.log"), root, work)

            seen, landed, why = landing(root, manifest, config, login)
            read_only = _read_only(config, login)
            uploads = clients.UPLOAD_DIRS
            if landed is not None and read_only is None:
                fields = _account_fields(root, manifest, login.account)
                found = smoke_accounts.writable_places(root, landed, fields) if fields else []
                uploads = tuple(name for name, _ in found)
            clients.ftp_session(
                result, run.port, user, password,
                tls=_tls_pin(root, config, manifest, login), read_only=read_only,
                hint=hint, upload_dirs=uploads, expect_dir=seen, landing_why=why,
            )  # fmt: skip
            return result
        finally:
            if server is not None:
                server.stop()
            if pam_path is not None:
                pam_path.unlink(missing_ok=True)
            smoke_accounts.remove_created(created)


def _account_fields(root: Path, manifest: dict, account: str) -> list[str] | None:
    try:
        return smoke_accounts.node_fields(root, manifest, account)
    except KeyError:
        return None


def landing(root: Path, manifest: dict, config: Config, login: Login):
    """Return (the path a login's client is shown after login, the host directory it is,
    why) as vsftpd works it out: it changes into the home, then into local_root; a chrooted
    login is then chrooted there and shown "/". (None, None, "") when the account is unknown."""
    fields = _account_fields(root, manifest, login.account)
    if fields is None:
        return None, None, ""
    place = place_of(root, config, login, {login.account: fields})
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
    return _mapped(root, where), on_root(root, where), why


def _tls_pin(root: Path, config: Config, manifest: dict, login: Login) -> clients.FtpTls | None:
    """How the smoke pins TLS, or None when this login speaks plain FTP: ssl_enable=NO, or an
    anonymous login without allow_anon_ssl (vsftpd refuses it encryption)."""
    if not config.yes("ssl_enable"):
        return None
    if login.kind == "anonymous" and not config.yes("allow_anon_ssl"):
        return None
    certificates = [cert for cert, _ in _tls_pairs(config)]
    trusted = "".join(
        on_root(root, path).read_text(errors="replace")
        for path in [*certificates, config.settings.get("ca_certs_file") or ""]
        if path and configrefs.is_file(root, path)
    )
    expected = frozenset(
        entry["fingerprint"]
        for entry in manifest.get("certificates", [])
        if entry["path"] in certificates
    )
    names = keychecks.certificate_names(root, certificates[0]) if certificates else []
    return clients.FtpTls(trusted, names[0] if names else "localhost", expected)


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """Write vsftpd.conf with node paths mapped onto root into out_dir (a free loopback port,
    runtime files there); return it, or None when the node has no vsftpd.conf."""
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = read_config(root)
    if config.path is None:
        return None
    run = _Run(out_dir, smokerun.free_port(), user_conf=_mapped_user_conf(root, config, out_dir))
    return write_copy(root, config, run)


SIGNS = Signs(
    ("/etc/vsftpd.conf", "/etc/vsftpd/vsftpd.conf"),
    ("/usr/sbin/vsftpd",),
    ("vsftpd.service",),
    config_flag="",
)
NODE_LOCAL = ("vsftpd.conf:listen_address", "vsftpd.conf:pasv_address")


def login_homes(root: Path, manifest: dict) -> dict[str, str]:
    """Return {account: node path} of the home vsftpd changes a local login of each of the
    manifest's accounts into (user_sub_token expanded; a missing one is 500 OOPS), as the
    restored config says; local_root and a chroot are the config's own trees."""
    root = Path(root)
    chosen = config_path(profile_options.options_of(manifest, NAME))
    config = read_config(root, chosen, compiled_defaults(root, manifest))
    passwd = accounts.passwd_entries(root)
    homes = {}
    for name in [account["name"] for account in manifest.get("accounts", [])]:
        place = place_of(root, config, Login(name, name, "local", "manifest"), passwd)
        if place.home and place.home.startswith("/"):
            homes[name] = place.home
    return homes


PROFILE = ModuleProfile(
    NAME, SIGNS, inventory, checks, smoke, sandbox_config, NODE_LOCAL, login_homes_of=login_homes
)
