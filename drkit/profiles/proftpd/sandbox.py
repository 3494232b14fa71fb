"""A runnable copy of a ProFTPD config: node paths mapped onto the restored root, runtime
files in a work directory, and (for a start check or a smoke) every server on 127.0.0.1 with
the smoke's one-run credentials beside the node's own; proftpd started from it, and its words
put back into the node's paths and line numbers."""

from __future__ import annotations

import grp
import pwd
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from drkit import runner
from drkit.paths import on_root
from drkit.profiles.common import configtext, smokerun
from drkit.profiles.proftpd.config import (
    Config,
    Line,
    module_name,
    parse,
    read_config,
    server_contexts,
)
from drkit.profiles.proftpd.policy import policy


def _quote(arg: str) -> str:
    return f'"{arg}"' if not arg or any(c.isspace() for c in arg) else arg


def mapped_path(root: Path, path: str) -> str:
    """Return a node path as it is under root (unchanged on / or when relative)."""
    return path if str(root) == "/" or not path.startswith("/") else str(on_root(root, path))


def _map_args(root: Path, keyword: str, args: list[str]) -> list[str] | None:
    """Return args with node paths mapped onto root, or None when nothing changes."""
    rule = policy().directives.get(keyword)
    kind = "path" if keyword == "<anonymous" else rule.kind if rule else None
    if kind is None or not args or str(root) == "/":
        return None
    new = list(args)
    if kind in ("path", "dir", "log", "chroot", "display") and args[0].startswith("/"):
        new[0] = mapped_path(root, args[0])
    elif kind == "exec":
        new = [
            mapped_path(root, a) if a.startswith("/") and on_root(root, a).exists() else a
            for a in args
        ]
    elif kind == "keystore":
        new = ["file:" + mapped_path(root, a[5:]) if a.startswith("file:") else a for a in args]
    elif kind == "ldapserver":
        new = [
            f"{a.split(':', 1)[0]}:{mapped_path(root, a.split(':', 1)[1])}"
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
    stand_ins: dict[str, str] = field(default_factory=dict)  # SQLConnectInfo -> drill's server
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


def _credential_line(
    line: Line, token: str, args: list[str], root: Path, run: Run
) -> list[str] | None:
    """Return the smoke copy of an authentication line (credentials added beside the node's),
    or None when the line is not one."""
    keyword = line.keyword
    if keyword == "sftpauthorizeduserkeys" and run.key_dir:
        mapped = _map_args(root, keyword, args) or args
        return [f"{token} {' '.join(map(_quote, [*mapped, f'file:{run.key_dir}/%u']))}"]
    if keyword in ("authuserfile", "sqlconnectinfo") and args and args[0] in run.auth_files:
        return [f"{token} {_quote(str(run.auth_files[args[0]]))} {' '.join(args[1:])}".rstrip()]
    if keyword == "sqlconnectinfo" and args and args[0] in run.stand_ins:
        return [f"{token} {' '.join(map(_quote, [run.stand_ins[args[0]], *args[1:]]))}"]
    if keyword == "authorder" and (run.pam_service or run.stand_in):
        names = {module_name(arg).rstrip("*") for arg in args}
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


def write_copy(
    root: Path, config: Config, out_dir: Path, run: Run | None = None
) -> tuple[Path, dict[str, str]]:
    """Write runnable copies of the config files under out_dir, node paths mapped onto root,
    changed as run says (runtime files in out_dir when run is None: `proftpd -t`).

    Return (main copy, {copy: node path}).
    """
    pol = policy()
    run = run or Run(work=out_dir)
    copies = {node: out_dir / node.lstrip("/") for node in config.files}
    drop = set(pol.runtime) | (set(pol.smoke.listen) if run.ports else set())
    log_kinds = {k for k, rule in pol.directives.items() if rule.kind == "log"}
    lines = {(line.source, line.number): line for line in config.lines}

    def rewrite(
        node: str, number: int, raw: str, token: str, keyword: str, args: list[str]
    ) -> list[str]:
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
        out: list[str] = []
        origin: list[int] = []  # the node line each copy line comes from (0: added)
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
        configtext.write_config_copy(copy, [*prepend, *out], _copy_mode(root, node), dir_mode=0o755)
        run.origins[str(copy)] = [0] * len(prepend) + origin
    return copies[config.main], {str(copy): node for node, copy in copies.items()}


def _copy_mode(root: Path, node: str) -> int:
    """Return the node file's read bits (0644 at most, 0600 at least) for its copy."""
    try:
        return (stat.S_IMODE(on_root(root, node).stat().st_mode) & 0o644) | 0o600
    except OSError:
        return 0o600


def node_text(
    text: str, names: dict[str, str], root: Path, origins: dict[str, list[int]] | None = None
) -> str:
    """Return proftpd's words with copy paths and line numbers as the node's files have them."""

    def node_line(match: re.Match[str]) -> str:
        lines = (origins or {}).get(match.group(2), [])
        number = int(match.group(1))
        found = lines[number - 1] if 0 < number <= len(lines) else 0
        return f"line {found or number} of '{match.group(2)}'"

    text = re.sub(r"line (\d+) of '([^']+)'", node_line, text)
    for copy, node in names.items():
        text = text.replace(copy, node)
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


def run_as(root: Path, config: Config) -> dict[tuple[str, str], str]:
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


def said(line: str) -> str:
    """Return what proftpd said on a log line, without its timestamp, host and pid."""
    return re.sub(r"^.*?proftpd\[\d+\][^:]*:\s*", "", line).strip()


def _server_words(log_path: Path, names: dict[str, str], root: Path, run: Run) -> str:
    """Return the interesting lines proftpd wrote at start, node paths and lines as the node's
    files have them."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    text = node_text(text, names, root, run.origins).replace(str(run.work), "<work>")
    lines = [said(line) for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if "SocketBindTight in effect" not in line]
    return " | ".join(smokerun.interesting_lines(lines, smokerun.LOG_PATTERN + "|cannot|refus"))


def start(
    root: Path, config: Config, run: Run, program: str
) -> tuple[runner.Service | None, str, float]:
    """Write the run's copy, start proftpd -n from it and wait until every server listens.

    Return (service or None, the server's words when it did not come up, seconds waited).
    """
    copy, names = write_copy(root, config, run.work / "config", run)
    names.update({str(held): node for node, held in run.auth_files.items()})
    (run.work / "logs").mkdir(mode=0o755, exist_ok=True)
    log_path = run.work / "proftpd.out"
    server = runner.start_service([program, "-n", "-c", str(copy)], log_path)
    started, timeout = time.monotonic(), policy().smoke.start_timeout_seconds
    up = all(smokerun.wait_port(run.ports[i], server, timeout) for i in server_contexts(config))
    if up:
        return server, "", time.monotonic() - started
    alive = server.alive()
    server.stop()
    words = _server_words(log_path, names, root, run) or "no output"
    how = "did not listen in time" if alive else "exited"
    return None, f"{how}: {words}", 0.0


def _host_name(lookup: Callable[[str], object], name: str, fallback: str) -> str:
    try:
        lookup(name)
    except KeyError:
        return fallback
    return name


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """Write proftpd.conf and its Includes with node paths mapped onto root into out_dir;
    return the main copy."""
    return write_copy(root, read_config(root), out_dir)[0]
