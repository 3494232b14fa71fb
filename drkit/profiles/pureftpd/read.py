"""Pure-FTPd's configuration as the server gets it: the command line pure-ftpd-wrapper builds
from /etc/pure-ftpd/conf and /etc/pure-ftpd/auth, or one a systemd unit gives; and the
virtual users of pureftpd.passwd, the source of a PureDB file.

The wrapper (Debian's /usr/sbin/pure-ftpd-wrapper, Perl) turns each file of conf/ named like
an option into a flag: the file's first line (blank and '#' lines skipped) that yields a value
decides, "no"/"0"/"off" lines yield nothing and the next line is tried; a file whose name is
no option, or a value its parser refuses, makes the wrapper die before pure-ftpd starts. File
options (PureDB, FortunesFile, LDAPConfigFile...) must name an existing file. auth/ holds
symbolic links, read in sorted order; each one to an existing file of conf/ named like an
authentication method becomes `-l METHOD[:FILE]`, in that order. The wrapper always adds
`-g /var/run/pure-ftpd/pure-ftpd.pid`, and `-B` when /etc/default/pure-ftpd-common says
STANDALONE_OR_INETD=standalone.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from drkit.paths import on_root
from drkit.profiles.interface import UNIT_DIRS

CONF_DIR = "/etc/pure-ftpd/conf"
AUTH_DIR = "/etc/pure-ftpd/auth"
DEFAULTS = "/etc/default/pure-ftpd-common"
PROGRAM = "/usr/sbin/pure-ftpd"
WRAPPER = "/usr/sbin/pure-ftpd-wrapper"
PID_FILE = "/var/run/pure-ftpd/pure-ftpd.pid"
CERT_FILE = "/etc/ssl/private/pure-ftpd.pem"  # compiled into Debian's pure-ftpd 1.0.50
PASSWD = "/etc/pure-ftpd/pureftpd.passwd"  # pure-pw's default -f

# The wrapper's %conf: option file -> (flag, parser). Parsers as its parse_* subs.
OPTIONS = {
    "AllowAnonymousFXP": ("W", "bool"), "AllowDotFiles": ("z", "bool"),
    "AllowUserFXP": ("w", "bool"), "AltLog": ("O", "string"),
    "AnonymousBandwidth": ("t", "number12"), "AnonymousCanCreateDirs": ("M", "bool"),
    "AnonymousCantUpload": ("i", "bool"), "AnonymousOnly": ("e", "bool"),
    "AnonymousRatio": ("q", "number2"), "AntiWarez": ("s", "bool"),
    "AutoRename": ("r", "bool"), "Bind": ("S", "string"),
    "BrokenClientsCompatibility": ("b", "bool"), "CallUploadScript": ("o", "bool"),
    "ChrootEveryone": ("A", "bool"), "CreateHomeDir": ("j", "bool"),
    "CustomerProof": ("Z", "bool"), "Daemonize": ("B", "bool"),
    "DisplayDotFiles": ("D", "bool"), "DontResolve": ("H", "bool"),
    "ForcePassiveIP": ("P", "string"), "FortunesFile": ("F", "filename"),
    "FSCharset": ("8", "skip"), "ClientCharset": ("9", "skip"),
    "IPV4Only": ("4", "bool"), "IPV6Only": ("6", "bool"), "KeepAllFiles": ("K", "bool"),
    "LimitRecursion": ("L", "number2u"), "LogPID": ("1", "bool"),
    "MaxClientsNumber": ("c", "number"), "MaxClientsPerIP": ("C", "number"),
    "MaxDiskUsage": ("k", "number"), "MaxIdleTime": ("I", "number"),
    "MaxLoad": ("m", "number"), "MinUID": ("u", "number"), "NATmode": ("N", "bool"),
    "NoAnonymous": ("E", "bool"), "NoChmod": ("R", "bool"), "NoRename": ("G", "bool"),
    "NoTruncate": ("0", "bool"), "PassivePortRange": ("p", "number2"),
    "PerUserLimits": ("y", "number2"), "ProhibitDotFilesRead": ("X", "bool"),
    "ProhibitDotFilesWrite": ("x", "bool"), "Quota": ("n", "number2"),
    "SyslogFacility": ("f", "word"), "TLS": ("Y", "number"),
    "TLSCipherSuite": ("J", "string"), "TrustedGID": ("a", "number"),
    "TrustedIP": ("V", "ip"), "Umask": ("U", "umask"), "UserBandwidth": ("T", "number12"),
    "UserRatio": ("Q", "number2"), "VerboseLog": ("d", "bool"),
}  # fmt: skip
# The wrapper's %authconf: method file -> (login method, parser, program capability it needs).
AUTH_METHODS = {
    "ExtAuth": ("extauth", "socket", None),
    "LDAPConfigFile": ("ldap", "filename", "ldap"),
    "MySQLConfigFile": ("mysql", "filename", "mysql"),
    "PGSQLConfigFile": ("pgsql", "filename", "postgresql"),
    "PAMAuthentication": ("pam", "bool", None),
    "PureDB": ("puredb", "filename", None),
    "UnixAuthentication": ("unix", "bool", None),
}
# pure-ftpd 1.0.50's getopt string (`strings pure-ftpd`): a letter followed by ':' takes a value.
GETOPT = "0146Aa:bc:BC:dDeEf:F:g:GhHiI:jk:Kl:L:Mm:Nn:oO:p:P:q:Q:rRsS:t:T:u:U:V:wWxXy:2:3:Y:J:zZ"
LONG = {
    "notruncate": "0", "logpid": "1", "certfile": "2", "extcert": "3", "ipv4only": "4",
    "ipv6only": "6", "chrooteveryone": "A", "trustedgid": "a",
    "brokenclientscompatibility": "b", "daemonize": "B", "maxclientsperip": "C",
    "maxclientsnumber": "c", "verboselog": "d", "displaydotfiles": "D", "anonymousonly": "e",
    "noanonymous": "E", "syslogfacility": "f", "fortunesfile": "F", "pidfile": "g",
    "norename": "G", "dontresolve": "H", "maxidletime": "I", "anonymouscantupload": "i",
    "createhomedir": "j", "keepallfiles": "K", "maxdiskusagepct": "k", "login": "l",
    "limitrecursion": "L", "anonymouscancreatedirs": "M", "maxload": "m", "natmode": "N",
    "quota": "n", "uploadscript": "o", "altlog": "O", "passiveportrange": "p",
    "forcepassiveip": "P", "anonymousratio": "q", "userratio": "Q", "autorename": "r",
    "nochmod": "R", "antiwarez": "s", "bind": "S", "anonymousbandwidth": "t",
    "userbandwidth": "T", "umask": "U", "minuid": "u", "trustedip": "V", "allowuserfxp": "w",
    "allowanonymousfxp": "W", "prohibitdotfileswrite": "x", "prohibitdotfilesread": "X",
    "peruserlimits": "y", "tls": "Y", "tlsciphersuite": "J", "allowdotfiles": "z",
    "customerproof": "Z",
}  # fmt: skip
TAKES_VALUE = {
    letter for letter, after in zip(GETOPT, GETOPT[1:] + " ", strict=True) if after == ":"
}


@dataclass(frozen=True)
class Option:
    """One option pure-ftpd gets: its flag letter, its value (None for a switch), and the file
    or command line it came from."""

    flag: str
    value: str | None
    where: str


@dataclass
class Setup:
    """The node's pure-ftpd command line and where it came from.

    refused: (file, why) for each file the wrapper would die on; pure-ftpd never starts then.
    """

    source: str
    program: str = PROGRAM
    options: list[Option] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)  # plain arguments of a command line

    def has(self, flag: str) -> bool:
        return any(option.flag == flag for option in self.options)

    def value(self, flag: str) -> str | None:
        """Return the last value given for flag (pure-ftpd's getopt keeps the last)."""
        found = [option.value for option in self.options if option.flag == flag]
        return found[-1] if found else None

    def where(self, flag: str) -> str:
        found = [option.where for option in self.options if option.flag == flag]
        return found[-1] if found else "pure-ftpd's compiled-in default"

    def logins(self) -> list[Option]:
        """Return the -l options in order (pure-ftpd tries the methods in that order)."""
        return [option for option in self.options if option.flag == "l" and option.value]

    def number(self, flag: str, default: int) -> int:
        text = (self.value(flag) or "").strip()
        return int(text) if text.isdigit() else default


_PAIRS = {
    "number2": (r"(\d+)\s+(\d+)", "not two numbers"),
    "number2u": (r"(-?\d+)\s+(-?\d+)", "not two numbers"),
    "umask": (r"([0-7]{3})\s+([0-7]{3})", "not two octal numbers"),
}


def _is_socket(path: Path) -> bool:
    with contextlib.suppress(OSError):
        return stat.S_ISSOCK(os.stat(path).st_mode)
    return False


def _parse(kind: str, value: str, root: Path) -> tuple[bool, str | None]:
    """Return (accepted, value for the flag or None when it yields none), as the wrapper's
    parser of that kind does; a refused value's text says why, in the wrapper's words."""
    if kind == "bool":
        if value.lower() in ("yes", "1", "on"):
            return True, ""
        if value.lower() in ("no", "0", "off"):
            return True, None
        return False, f'"{value}" not convertible to true or false'
    if kind == "skip":
        return True, None
    ok, out, why = True, value, ""
    if kind == "string":
        ok, why = not re.search(r"\s", value), " contains whitespace"
    elif kind == "number":
        ok, why = not re.search(r"\D", value), " not a number"
    elif kind in _PAIRS:
        pattern, why = _PAIRS[kind]
        match = re.fullmatch(pattern, value)
        ok = match is not None and min(int(match[1]), int(match[2])) >= -1
        out, why = (f"{match[1]}:{match[2]}" if match else value), " " + why
    elif kind == "number12":
        match = re.fullmatch(r"(\d+)(?:\s+|:)(\d+)", value)
        short = re.match(r"(:?\d+)$|(\d+:)", value)
        ok, why = bool(match or short), " not one or two numbers"
        out = f"{match[1]}:{match[2]}" if match else (short[0] if short else value)
    elif kind == "word":
        ok, why = bool(re.fullmatch(r"\w+", value)), " contains non-word characters"
    elif kind == "ip":
        parts = value.split(".")
        ok = len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)
        why = ": Invalid IP address"
    elif kind == "filename":
        ok, why = on_root(root, value).is_file(), ": No such file"
    elif kind == "socket":
        ok, why = _is_socket(on_root(root, value)), ": No such socket"
    return (True, out) if ok else (False, f'"{value}"{why}')


MAX_TEXT = 64 << 20  # a pureftpd.passwd of ~300,000 users


def text_of(root: Path, node_path: str) -> str:
    """Return a node file's text; OSError when it is not a regular file (a FIFO would block
    the reader for ever) or larger than MAX_TEXT."""
    host = on_root(root, node_path)
    info = os.stat(host)
    if not stat.S_ISREG(info.st_mode):
        raise OSError(22, "not a regular file", node_path)
    if info.st_size > MAX_TEXT:
        raise OSError(27, f"larger than {MAX_TEXT >> 20} MiB", node_path)
    with open(host, "rb") as handle:
        return handle.read(MAX_TEXT + 1).decode(errors="replace")


def _option_file(root: Path, node_path: str, kind: str) -> tuple[bool, str | None, str]:
    """Read one option file as the wrapper's parse_file: (accepted, value, why refused)."""
    try:
        text = text_of(root, node_path)
    except OSError as exc:
        return False, None, f"Couldn't open configuration file {node_path}: {exc.strerror}"
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        accepted, value = _parse(kind, line, root)
        if not accepted:
            return False, None, f"Invalid configuration file {node_path}: {value}"
        if value is not None:
            return True, value, ""
    return True, None, ""


def defaults(root: Path) -> dict[str, str]:
    """Return the shell variables /etc/default/pure-ftpd-common sets (plain NAME=value lines)."""
    found = {}
    with contextlib.suppress(OSError):
        for raw in text_of(root, DEFAULTS).splitlines():
            match = re.fullmatch(r"\s*([A-Z_]+)=(.*?)\s*", raw)
            if match:
                with contextlib.suppress(ValueError):
                    words = shlex.split(match[2], comments=True)
                    found[match[1]] = words[0] if words else ""
    return found


def _no_directive(path: str) -> str:
    return f"Invalid configuration file {path}: No corresponding directive"


def read_wrapper(root: Path, capabilities: tuple[str, ...] = ()) -> Setup:
    """Return the command line pure-ftpd-wrapper builds on root (capabilities: the suffix of
    the program it runs, as `pure-ftpd-wrapper ldap` runs pure-ftpd-ldap)."""
    setup = Setup(source=f"{CONF_DIR} (pure-ftpd-wrapper)")
    if capabilities:
        setup.program = f"{PROGRAM}-{capabilities[0]}"
    auth_dir = on_root(root, AUTH_DIR)
    links = [p.name for p in auth_dir.iterdir() if p.is_symlink()] if auth_dir.is_dir() else []
    links.sort()
    for name in links:
        link = f"{AUTH_DIR}/{name}"
        setup.files.append(link)
        target = os.readlink(auth_dir / name)
        target = posixpath.normpath(posixpath.join(AUTH_DIR, target))
        if not on_root(root, target).is_file():
            setup.warnings.append(f"{link} -> {target}: no such file, the wrapper skips it")
            continue
        method = posixpath.basename(target)
        if method not in AUTH_METHODS:
            setup.refused.append((link, _no_directive(target)))
            continue
        login, kind, needs = AUTH_METHODS[method]
        if needs and needs not in capabilities:
            setup.warnings.append(f"{link}: {method} needs pure-ftpd-{needs}; the wrapper skips it")
            continue
        accepted, value, why = _option_file(root, target, kind)
        if not accepted:
            setup.refused.append((target, why))
        elif value is not None:
            login_value = f"{login}:{value}" if value else login
            setup.options.append(Option("l", login_value, f"{link} -> {target}"))
    conf_dir = on_root(root, CONF_DIR)
    names = sorted(p.name for p in conf_dir.iterdir()) if conf_dir.is_dir() else []
    for name in names:
        path = f"{CONF_DIR}/{name}"
        setup.files.append(path)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]+", name) or name in AUTH_METHODS:
            continue
        if name not in OPTIONS:
            setup.refused.append((path, _no_directive(path)))
            continue
        flag, kind = OPTIONS[name]
        accepted, value, why = _option_file(root, path, kind)
        if not accepted:
            setup.refused.append((path, why))
        elif value is not None:
            # SyslogFacility has the wrapper's only priority: it goes first.
            at = 0 if name == "SyslogFacility" else len(setup.options)
            setup.options.insert(at, Option(flag, value or None, path))
    variables = defaults(root)
    if on_root(root, DEFAULTS).is_file():
        setup.files.append(DEFAULTS)
    if variables.get("STANDALONE_OR_INETD") == "standalone":
        setup.options.append(Option("B", None, f"{DEFAULTS} STANDALONE_OR_INETD=standalone"))
    if variables.get("VIRTUALCHROOT") == "true":
        setup.program += "-virtualchroot"
    setup.options.append(Option("g", PID_FILE, "pure-ftpd-wrapper (always)"))
    return setup


def read_command(command: str, where: str, root: Path) -> Setup:
    """Return the options of a pure-ftpd command line (a unit's ExecStart), parsed as its
    getopt_long does: clustered short flags, `-Y2` and `-Y 2`, `--tls=2` and `--tls 2`; a
    plain argument is pure-ftpd's own configuration file (read_config_file)."""
    setup = Setup(source=where)
    try:
        words = shlex.split(command)
    except ValueError as exc:
        setup.refused.append((where, f"cannot split the command line: {exc}"))
        return setup
    if words:
        setup.program = words[0]
    _parse_argv(setup, words[1:], where)
    for path in setup.arguments[:1]:
        read_config_file(root, path, setup)
    return setup


def _parse_argv(setup: Setup, rest: list[str], where: str) -> None:
    index = 0
    while index < len(rest):
        word = rest[index]
        index += 1
        if word == "--":
            setup.arguments += rest[index:]
            break
        if word.startswith("--"):
            name, has_value, value = word[2:].partition("=")
            flag = LONG.get(name)
            if flag is None:
                setup.refused.append((where, f"unrecognized option '--{name}'"))
                continue
            if flag in TAKES_VALUE and not has_value:
                value = rest[index] if index < len(rest) else ""
                index += 1
            setup.options.append(Option(flag, value if flag in TAKES_VALUE else None, where))
        elif word.startswith("-") and len(word) > 1:
            letters = word[1:]
            while letters:
                flag, letters = letters[0], letters[1:]
                if flag not in GETOPT or flag == ":":
                    setup.refused.append((where, f"invalid option -- '{flag}'"))
                    continue
                if flag not in TAKES_VALUE:
                    setup.options.append(Option(flag, None, where))
                    continue
                if not letters:
                    letters = rest[index] if index < len(rest) else ""
                    index += 1
                setup.options.append(Option(flag, letters, where))
                break
        else:
            setup.arguments.append(word)


# pure-ftpd's own configuration file (`pure-ftpd /etc/pure-ftpd.conf`, read by pure-ftpd since
# 1.0.47), as src/simpleconf_ftpd.h maps each key to a long option: None for a yes/no key, ""
# for one value (the rest of the line), ":" or "," for two words joined.
CONFIG_KEYS = {
    "AltLog": ("altlog", ""), "AnonymousBandwidth": ("anonymousbandwidth", ":"),
    "AnonymousRatio": ("anonymousratio", ":"), "Bind": ("bind", ""),
    "CertFileAndKey": ("certfile", ","), "CertFile": ("certfile", ""),
    "ExtCert": ("extcert", ""), "ForcePassiveIP": ("forcepassiveip", ""),
    "FortunesFile": ("fortunesfile", ""), "LimitRecursion": ("limitrecursion", ":"),
    "ExtAuth": ("login", "extauth"), "LDAPConfigFile": ("login", "ldap"),
    "MySQLConfigFile": ("login", "mysql"), "PGSQLConfigFile": ("login", "pgsql"),
    "PureDB": ("login", "puredb"), "PAMAuthentication": ("login=pam", None),
    "UnixAuthentication": ("login=unix", None), "MaxClientsNumber": ("maxclientsnumber", ""),
    "MaxClientsPerIP": ("maxclientsperip", ""), "MaxDiskUsage": ("maxdiskusagepct", ""),
    "MaxIdleTime": ("maxidletime", ""), "MaxLoad": ("maxload", ""), "MinUID": ("minuid", ""),
    "PassivePortRange": ("passiveportrange", ":"), "PerUserLimits": ("peruserlimits", ""),
    "PIDFile": ("pidfile", ""), "Quota": ("quota", ""), "SyslogFacility": ("syslogfacility", ""),
    "TLSCipherSuite": ("tlsciphersuite", ""), "TLS": ("tls", ""),
    "TrustedGID": ("trustedgid", ""), "TrustedIP": ("trustedip", ""), "Umask": ("umask", ""),
    "UserBandwidth": ("userbandwidth", ":"), "UserRatio": ("userratio", ":"),
    "CallUploadScript": ("uploadscript", None),
}  # fmt: skip
YES = ("yes", "true", "on", "1")


def read_config_file(root: Path, node_path: str, setup: Setup, depth: int = 0) -> None:
    """Add the options of a pure-ftpd configuration file to setup, line by line as pure-ftpd
    turns them into long options (keys in any case; `Include FILE` read in place); a key it
    does not know is refused in its words: pure-ftpd exits 252 at start."""
    try:
        text = text_of(root, node_path)
    except OSError as exc:
        setup.refused.append((node_path, f"cannot read the configuration file: {exc.strerror}"))
        return
    setup.files.append(node_path)
    config_keys = {key.lower(): value for key, value in CONFIG_KEYS.items()}
    switches = {key.lower(): flag for key, (flag, kind) in OPTIONS.items() if kind == "bool"}
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        key, values, where = words[0].lower(), words[1:], f"{node_path} line {number}"
        if key == "include" and values and depth < 8:
            read_config_file(root, values[0], setup, depth + 1)
        elif key in config_keys:
            name, how = config_keys[key]
            if how is None or (name == "login" and not values):
                if values and values[0].lower() in YES:
                    _parse_argv(setup, [f"--{name}"], where)
            elif name == "login":
                _parse_argv(setup, [f"--login={how}:{' '.join(values)}"], where)
            else:
                joined = how.join(values[:2]) if how else " ".join(values)
                _parse_argv(setup, [f"--{name}={joined}"], where)
        elif key in switches:
            if values and values[0].lower() in YES:
                setup.options.append(Option(switches[key], None, where))
        else:
            setup.refused.append((where, f"property not found: [{raw.strip()}]"))


def unit_command(root: Path, unit: str = "pure-ftpd.service") -> tuple[str, str] | None:
    """Return (unit path, effective ExecStart) of a pure-ftpd unit on root, drop-ins read as
    systemd reads them (a later ExecStart wins, an empty one resets)."""
    for directory in UNIT_DIRS:
        path = f"{directory}/{unit}"
        if not on_root(root, path).is_file():
            continue
        drop_ins = sorted(p.name for p in on_root(root, path + ".d").glob("*.conf"))
        texts = []
        for node_file in [path, *(f"{path}.d/{name}" for name in drop_ins)]:
            with contextlib.suppress(OSError):
                texts.append(text_of(root, node_file))
        command = ""
        for text in texts:
            for line in text.splitlines():
                key, _, value = line.strip().partition("=")
                if key.strip() == "ExecStart":
                    command = value.strip().lstrip("@-:+!")
        return path, command
    return None


def runs_wrapper(command: str) -> bool:
    """Whether a unit's ExecStart runs pure-ftpd-wrapper (conf/ decides) or pure-ftpd itself."""
    with contextlib.suppress(ValueError, IndexError):
        return posixpath.basename(shlex.split(command)[0]) == posixpath.basename(WRAPPER)
    return False


# --- virtual users ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VirtualUser:
    """One line of pureftpd.passwd (pure-pw's fields): login, uid, gid and home; a home with
    `/./` chroots the login at the part before it (pure-pw useradd -d; -D: no chroot)."""

    name: str
    uid: str
    gid: str
    home: str
    line: int
    fields: tuple[str, ...]

    @property
    def chroot(self) -> str | None:
        if "/./" not in self.home:
            return None
        return posixpath.normpath(self.home.split("/./", 1)[0] or "/")

    @property
    def directory(self) -> str:
        """The home directory itself (the chroot joined with what follows `/./`)."""
        return posixpath.normpath(self.home.replace("/./", "/"))


def read_passwd(root: Path, node_path: str) -> list[VirtualUser]:
    """Return the virtual users of a pureftpd.passwd file (none when it is unreadable)."""
    try:
        text = text_of(root, node_path)
    except OSError:
        return []
    users = []
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split(":")
        if len(fields) < 6 or not fields[0] or raw.startswith("#"):
            continue
        users.append(VirtualUser(fields[0], fields[2], fields[3], fields[5], number, tuple(fields)))
    return users


# --- a runnable copy ----------------------------------------------------------------------------

# Options a loopback run drops, and why (each is named in the run's changes).
DROPPED = {
    "B": "Daemonize: the run stays in the foreground so it can be stopped",
    "P": "ForcePassiveIP: passive replies must name 127.0.0.1",
    "6": "IPV6Only: the run binds 127.0.0.1",
    "3": "ExtCert: pure-certd's socket does not run in the sandbox",
    "o": "CallUploadScript: pure-uploadscript does not run in the sandbox",
    "V": "TrustedIP: it allows non-anonymous logins only on the node's own address",
}


def _mapped(root: Path, path: str) -> str:
    return path if str(root) == "/" or not path.startswith("/") else str(on_root(root, path))


def runnable(
    setup: Setup, root: Path, work: Path, port: int, puredb: Path | None = None
) -> tuple[list[str], list[str]]:
    """Return the node's pure-ftpd options for a run on 127.0.0.1:port from root (node paths
    mapped onto root), and each change made, named: Bind, the pid file and AltLog go to the
    run, DROPPED options go; puredb: a PureDB file of the run's own, tried first (it replaces
    the node's first PureDB)."""
    argv: list[str] = []
    changes = [f"Bind 127.0.0.1,{port}", f"pid file {work}/pure-ftpd.pid"]
    replaced = False
    for option in setup.options:
        flag, value = option.flag, option.value or ""
        if flag in DROPPED:
            changes.append(f"dropped {DROPPED[flag]} ({option.where})")
            continue
        if flag in ("S", "g"):
            continue
        if flag == "O":
            fmt = value.split(":", 1)[0]
            value = f"{fmt}:{work}/altlog"
            changes.append(f"AltLog {fmt} to the run's directory ({option.where})")
        elif flag == "l":
            method, _, path = value.partition(":")
            if method == "puredb" and puredb is not None and not replaced:
                replaced = True
                changes.append(f"PureDB {path}: the run's copy, with its one-run user")
                continue
            if method == "extauth":
                changes.append(f"dropped ExtAuth {path}: its daemon does not run here")
                continue
            value = f"{method}:{_mapped(root, path)}" if path else method
        elif flag == "2":
            value = ",".join(_mapped(root, part) for part in value.split(","))
        elif flag == "F":
            value = _mapped(root, value)
        argv += [f"-{flag}", value] if flag in TAKES_VALUE else [f"-{flag}"]
    if puredb is not None:
        if not replaced:
            changes.append("PureDB: the run's own, with its one-run user (the node has none)")
        argv = ["-l", f"puredb:{puredb}", *argv]
    if str(root) != "/" and not setup.has("2") and setup.number("Y", 0) > 0:
        argv += ["-2", _mapped(root, CERT_FILE)]
        changes.append(f"certificate {CERT_FILE} read under the restored root (-2)")
    argv += ["-S", f"127.0.0.1,{port}", "-4", "-g", str(work / "pure-ftpd.pid")]
    return argv, changes
