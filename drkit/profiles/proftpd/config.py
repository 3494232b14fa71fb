"""proftpd.conf read the way ProFTPD 1.3.8's parser reads it: `Include` of a file, a directory
(every entry, `*~`/`*.sw?` skipped only after `IncludeOptions IgnoreTempFiles`) or a glob in
the last component; `<IfModule>` blocks count only for modules compiled in (`proftpd -l`) or
loaded by an earlier `LoadModule`; `<Global>` applies to every server, `<VirtualHost>` inherits
nothing else. Also the key pairs a config names."""

from __future__ import annotations

import fnmatch
import functools
import glob
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from drkit import runner
from drkit.paths import on_root, to_node
from drkit.profiles.common import configtext, programs
from drkit.profiles.proftpd.policy import policy


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
        return token, "<" + token.lower(), configtext.split_args(rest)
    token, _, rest = stripped.partition(" ")
    token = token.split("\t")[0]
    rest = stripped[len(token) :]
    return token, token.lower(), configtext.split_args(rest)


def module_name(name: str) -> str:
    """Return a module's name as proftpd -l lists it: mod_x for mod_x.c or mod_x.so."""
    return name.strip().removesuffix(".c").removesuffix(".so")


@functools.cache
def static_modules(program: str | None) -> frozenset[str] | None:
    """Return the modules compiled into proftpd (`proftpd -l`), None when it cannot say."""
    if program is None:
        return None
    done = runner.run([program, "-l"], timeout=30)
    found = {module_name(w) for w in done.stdout.split() if w.endswith(".c")}
    return frozenset(found) if done.returncode == 0 and found else None


def proftpd_program() -> str | None:
    """Return this host's proftpd (the policy's, else on PATH), or None."""
    return programs.find_program("proftpd", [policy().smoke.proftpd, "proftpd"])


def _include_targets(root: Path, pattern: str, ignore_temp: bool) -> tuple[list[str], list[str]]:
    """Return (files proftpd reads, files it skips) for an Include argument: a file, every
    entry of a directory, or a glob in the last component (`*` does not match a leading dot)."""
    temp = policy().config.include_temp_patterns
    host = on_root(root, pattern)
    if glob.has_magic(pattern):
        hits = sorted(glob.glob(str(host)))
    elif host.is_dir() and not host.is_symlink():
        hits = sorted(str(child) for child in host.iterdir())
    else:
        hits = [str(host)] if host.is_file() else []
    read: list[str] = []
    skipped: list[str] = []
    for hit in hits:
        if not Path(hit).is_file():
            continue
        is_temp = any(fnmatch.fnmatchcase(Path(hit).name, p) for p in temp)
        (skipped if ignore_temp and is_temp else read).append(to_node(root, Path(hit)))
    return read, skipped


@dataclass
class _Reading:
    """Where the parser is: server context, the sections it is in, whether the lines apply
    (<IfModule> nesting), the <Anonymous> roots, IncludeOptions, the compiled-in modules."""

    static: frozenset[str] | None
    server: int = 0
    stack: list[tuple[str, int]] = field(default_factory=list)
    active: list[bool] = field(default_factory=lambda: [True])
    anon: list[str | None] = field(default_factory=lambda: [None])
    ignore_temp: bool = False


def read_config(root: Path, main: str | None = None) -> Config:
    """Parse the node's proftpd.conf (main, default the policy's) and everything it Includes."""
    config = Config(main=main or policy().config.main)
    state = _Reading(static=static_modules(proftpd_program()))
    _read_file(Path(root), config.main, config, (), state)
    return config


def module_loaded(config: Config, static: frozenset[str] | None, name: str) -> bool:
    """Whether a module is there: compiled in (static; None when unknown: assumed) or loaded."""
    return static is None or module_name(name) in static or module_name(name) in config.modules


def _read_file(
    root: Path, node_path: str, config: Config, stack: tuple[str, ...], state: _Reading
) -> None:
    settings_ = policy().config
    text = configtext.read_config_text(root, node_path, config)
    if text is None:
        return
    for number, _, keyword, args in configtext.parsed_lines(text, parse):
        active = state.active[-1]
        if keyword == "<virtualhost":
            config.servers += 1
            state.stack.append((keyword, state.server))
            state.server = config.servers - 1
        elif keyword == "<global":
            state.stack.append((keyword, state.server))
            state.server = -1
        elif keyword in ("</virtualhost", "</global") and state.stack:
            state.server = state.stack.pop()[1]
        elif keyword == "<ifmodule":
            name = args[0] if args else ""
            loaded = module_loaded(config, state.static, name.lstrip("!"))
            state.active.append(active and (loaded != name.startswith("!")))
        elif keyword == "</ifmodule" and len(state.active) > 1:
            state.active.pop()
        elif keyword == "<anonymous":
            state.anon.append(args[0] if args else "")
        elif keyword == "</anonymous" and len(state.anon) > 1:
            state.anon.pop()
        line = Line(keyword, tuple(args), node_path, number, state.server, active, state.anon[-1])
        config.lines.append(line)
        if not active:
            continue
        if keyword == "loadmodule" and args:
            config.modules.add(module_name(args[0]))
        elif keyword == "includeoptions":
            state.ignore_temp = "IgnoreTempFiles" in args
        if keyword != "include" or not args:
            continue
        base = posixpath.dirname(config.main)
        pattern = posixpath.normpath(posixpath.join(base, args[0]))
        hits, skipped = _include_targets(root, pattern, state.ignore_temp)
        config.unread += [path for path in skipped if path not in config.unread]
        if not glob.has_magic(pattern) and on_root(root, pattern).is_dir():
            config.include_dirs.append((line, pattern))
        elif not hits and not glob.has_magic(pattern):
            config.missing_includes.append((line, pattern))
        config.include_hits[(node_path, number)] = hits
        for hit in hits:
            if hit in stack or len(stack) >= settings_.max_include_depth:
                config.warnings.append(f"Include {hit} ({line.where}) nests too deep; skipped")
                continue
            _read_file(root, hit, config, (*stack, node_path), state)


def tls_pairs(config: Config) -> list[tuple[str, str | None, int]]:
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


def ldap_pairs(config: Config) -> list[tuple[str, str | None]]:
    """Return the ssl-cert:/ssl-key: client pairs of every LDAPServer."""
    pairs = []
    for line in config.of("ldapserver"):
        named = dict(a.split(":", 1) for a in line.args if ":" in a and not a.startswith("ldap"))
        if named.get("ssl-cert"):
            pairs.append((named["ssl-cert"], named.get("ssl-key")))
    return pairs


def chains(config: Config) -> list[tuple[str, list[str]]]:
    """Return (certificate, [chain and CA files]) for every TLS pair's server context."""
    found = []
    for cert, _, server in tls_pairs(config):
        extra = [
            line.args[0]
            for keyword in ("tlscertificatechainfile", "tlscacertificatefile")
            for line in config.of(keyword, server)
            if line.args
        ]
        found.append((cert, extra))
    return found


def server_contexts(config: Config) -> list[int]:
    """The server contexts proftpd creates: the main one and every active <VirtualHost>."""
    return [0] + [
        line.server for line in config.lines if line.keyword == "<virtualhost" and line.active
    ]
