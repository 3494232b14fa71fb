"""ProFTPD nodes (mod_sftp, mod_tls): read proftpd.conf as proftpd does, back up what it names,
prove a restore with `proftpd -t`, key/certificate comparisons and real SFTP and FTPS logins.

What the profile backs up, which directives name files and the smoke settings come from
policies/proftpd.yaml.
"""

from __future__ import annotations

import glob
import grp
import posixpath
import pwd
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from drkit import runner
from drkit.model import Check, Inventory, SmokeResult, failed, passed
from drkit.paths import on_root, to_node
from drkit.profiles import common
from drkit.profiles.common import Ref
from drkit.profiles.interface import Profile, Signs

NAME = "proftpd"


def policy() -> dict:
    return common.policy(NAME)


# --- reading proftpd.conf ---------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One directive: lower-case keyword, arguments, where it is, and its server context
    (0 the main server, n the n-th <VirtualHost>, -1 <Global>)."""

    keyword: str
    args: tuple[str, ...]
    source: str
    number: int
    server: int

    @property
    def where(self) -> str:
        return f"{self.source} line {self.number}"


@dataclass
class Config:
    """Every directive of proftpd.conf and its Includes, in reading order."""

    lines: list[Line] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    include_hits: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    include_patterns: list[str] = field(default_factory=list)
    missing_includes: list[tuple[Line, str]] = field(default_factory=list)
    servers: int = 1
    warnings: list[str] = field(default_factory=list)

    def of(self, keyword: str, server: int | None = None) -> list[Line]:
        """Return the lines of keyword (in one server context plus <Global> when given)."""
        return [
            line
            for line in self.lines
            if line.keyword == keyword and (server is None or line.server in (server, -1))
        ]

    def first(self, keyword: str, server: int = 0) -> Line | None:
        found = self.of(keyword, server)
        return found[0] if found else None

    def engine_on(self, keyword: str, server: int) -> bool:
        line = self.first(keyword, server)
        return bool(line and line.args and line.args[0].lower() == "on")


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


def _include_targets(root: Path, pattern: str) -> list[str]:
    """Return the node files an Include names: a file, every file of a directory, or a glob."""
    skip = tuple(policy()["config"]["include_skip_suffixes"])
    host = on_root(root, pattern)
    if glob.has_magic(pattern):
        hits = sorted(glob.glob(str(host)))
    elif host.is_dir():
        hits = sorted(str(child) for child in host.iterdir())
    else:
        hits = [str(host)] if host.is_file() else []
    return [
        to_node(root, Path(hit))
        for hit in hits
        if Path(hit).is_file() and not Path(hit).name.startswith(".") and not hit.endswith(skip)
    ]


def read_config(root: Path) -> Config:
    """Parse the node's proftpd.conf and everything it Includes."""
    config = Config()
    state = {"server": 0, "stack": []}
    _read_file(Path(root), policy()["config"]["main"], config, (), state)
    return config


def _read_file(root: Path, node_path: str, config: Config, stack: tuple, state: dict) -> None:
    settings = policy()["config"]
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError as exc:
        config.warnings.append(f"{node_path}: cannot read ({exc.strerror or exc})")
        return
    if node_path not in config.files:
        config.files.append(node_path)
    config.texts[node_path] = text
    for number, raw in enumerate(text.splitlines(), 1):
        parsed = parse(raw)
        if parsed is None:
            continue
        _, keyword, args = parsed
        if keyword == "<virtualhost":
            config.servers += 1
            state["stack"].append((keyword, state["server"]))
            state["server"] = config.servers - 1
        elif keyword == "<global":
            state["stack"].append((keyword, state["server"]))
            state["server"] = -1
        elif keyword in ("</virtualhost", "</global") and state["stack"]:
            state["server"] = state["stack"].pop()[1]
        line = Line(keyword, tuple(args), node_path, number, state["server"])
        config.lines.append(line)
        if keyword != "include" or not args:
            continue
        pattern = posixpath.normpath(posixpath.join(settings["include_base"], args[0]))
        config.include_patterns.append(pattern)
        hits = _include_targets(root, pattern)
        if not hits and not glob.has_magic(pattern) and not on_root(root, pattern).is_dir():
            config.missing_includes.append((line, pattern))
        config.include_hits[(node_path, number)] = hits
        for hit in hits:
            if hit in stack or len(stack) >= settings["max_include_depth"]:
                config.warnings.append(f"Include {hit} ({line.where}) nests too deep; skipped")
                continue
            _read_file(root, hit, config, (*stack, node_path), state)


# --- what the config names --------------------------------------------------------------------


def virtual_users(root: Path, config: Config) -> dict[str, list[str]]:
    """Return {name: passwd fields} of every AuthUserFile the config names."""
    users: dict[str, list[str]] = {}
    for line in config.of("authuserfile"):
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


def references(root: Path, config: Config) -> list[Ref]:
    """Return every node path the config names, with category and whether it must exist."""
    pol = policy()
    off = set(pol["off_words"])
    refs = [
        Ref(path, "config", "Include", line.where, True) for line, path in config.missing_includes
    ]
    users = virtual_users(root, config)
    for line in config.lines:
        rule = pol["directives"].get(line.keyword)
        if rule is None or not line.args or line.keyword == "include":
            continue
        kind, category, required, name = (
            rule["kind"],
            rule["category"],
            rule["required"],
            rule["name"],
        )
        first = line.args[0]
        if kind == "path" and first.lower() not in off:
            path = posixpath.normpath(posixpath.join("/", first))
            refs.append(Ref(path, category, name, line.where, required))
        elif kind == "dir" and first.startswith("/"):
            refs.append(Ref(first, category, name, line.where, required, directory=True))
        elif kind == "log" and first.startswith("/"):
            refs.append(Ref(first, category, name, line.where, required))
        elif kind == "exec":
            program = next((a for a in line.args if a.startswith("/")), None)
            if program:
                refs.append(Ref(program, category, name, line.where, required))
        elif kind == "keystore":
            for arg in line.args:
                if not arg.startswith("file:"):
                    continue
                pattern = arg.removeprefix("file:")
                if "%u" in pattern:
                    for user in users:
                        path = pattern.replace("%u", user)
                        refs.append(Ref(path, category, name, line.where, False))
                else:
                    refs.append(Ref(pattern, category, name, line.where, required))
        elif kind == "chroot":
            if first.startswith("~"):
                for fields in users.values():
                    home = fields[5]
                    if home and home != "/":
                        refs.append(Ref(home, category, name, line.where, True, directory=True))
            elif first.startswith("/"):
                refs.append(Ref(first, category, name, line.where, required, directory=True))
    return list(dict.fromkeys(refs))


def system_users(config: Config) -> list[str]:
    """Return the system account proftpd runs as (User), which a restored node needs."""
    line = config.first("user")
    return [line.args[0]] if line and line.args else []


def inventory(root: Path, smoke_user: str | None) -> Inventory:
    """Return what makes this ProFTPD node: config, keys, certificates, users, trees, logs."""
    pol, root = policy(), Path(root)
    config = read_config(root)
    if pol["config"]["main"] not in config.files:
        return Inventory(warnings=config.warnings)
    found = common.inventory_from_refs(
        root, config.files, references(root, config), config.warnings
    )
    found.owned_globs = list(pol["owned_globs"])
    found.users = system_users(config)
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
    if rule is None or not args or str(root) == "/":
        return None
    kind, new = rule["kind"], list(args)
    if kind in ("path", "dir", "log", "chroot") and args[0].startswith("/"):
        new[0] = _mapped(root, args[0])
    elif kind == "exec":
        new = [
            _mapped(root, a) if a.startswith("/") and on_root(root, a).exists() else a for a in args
        ]
    elif kind == "keystore":
        new = ["file:" + _mapped(root, a[5:]) if a.startswith("file:") else a for a in args]
    return new if new != args else None


@dataclass
class Smoke:
    """How a smoke copy differs from the node's config."""

    work: Path
    ports: dict[int, int]  # server context -> port
    auth_user_file: Path
    key_dir: Path
    user: str
    group: str
    logs: list[Path] = field(default_factory=list)


def write_copy(root: Path, config: Config, out_dir: Path, smoke: Smoke | None = None):
    """Write runnable copies of the config files under out_dir, node paths mapped onto root.

    Without smoke the copy is for `proftpd -t`; with smoke it runs on 127.0.0.1 only, with the
    sandbox credentials, runtime files and logs in the work dir. Return (main copy, {copy: node}).
    """
    pol = policy()
    main = pol["config"]["main"]
    copies = {node: out_dir / node.lstrip("/") for node in config.files}
    drop = set(pol["smoke"]["drop"]) if smoke else set()
    log_kinds = {k for k, rule in pol["directives"].items() if rule["kind"] == "log"}
    server = 0
    counter = {"server": 0, "stack": []}
    for node, copy in copies.items():
        out = []
        for number, raw in enumerate(config.texts[node].splitlines(), 1):
            parsed = parse(raw)
            if parsed is None:
                out.append(raw)
                continue
            token, keyword, args = parsed
            if keyword == "<virtualhost":
                counter["server"] += 1
                counter["stack"].append(server)
                server = counter["server"]
                if smoke:
                    out += [f"<{token} 127.0.0.1>", "  WtmpLog off"]
                    out.append(f"  Port {smoke.ports[server]}")
                    continue
            elif keyword == "</virtualhost":
                server = counter["stack"].pop() if counter["stack"] else 0
            if keyword == "include":
                hits = config.include_hits.get((node, number), [])
                out += [f"{token} {_quote(str(copies[hit]))}" for hit in hits if hit in copies]
                if not hits:
                    out.append(f"# {raw.strip()}")
            elif keyword in drop:
                out.append(f"# drkit smoke: {raw.strip()}")
            elif smoke and keyword == "authuserfile":
                out.append(f"{token} {smoke.auth_user_file}")
            elif smoke and keyword == "sftpauthorizeduserkeys":
                out.append(f"{token} file:{smoke.key_dir}/%u")
            elif smoke and keyword in log_kinds and args and args[0].startswith("/"):
                log_file = smoke.work / "logs" / f"{keyword}-{number}-{len(smoke.logs)}.log"
                smoke.logs.append(log_file)
                out.append(f"{token} {' '.join(map(_quote, [str(log_file), *args[1:]]))}")
            elif smoke and keyword in ("user", "group"):
                out.append(f"{token} {smoke.user if keyword == 'user' else smoke.group}")
            elif (mapped := _map_args(root, keyword, args)) is not None:
                out.append(f"{token} {' '.join(map(_quote, mapped))}")
            else:
                out.append(raw)
        prepend = []
        if smoke and node == main:
            prepend = [
                "# drkit smoke run: 127.0.0.1 only, runtime files in the work dir",
                "ServerType standalone",
                "DefaultAddress 127.0.0.1",
                "SocketBindTight on",
                "UseIPv6 off",
                f"Port {smoke.ports[0]}",
                f"PidFile {smoke.work / 'proftpd.pid'}",
                f"ScoreboardFile {smoke.work / 'proftpd.scoreboard'}",
                "DelayEngine off",
                "WtmpLog off",
            ]
        copy.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        copy.write_text("\n".join([*prepend, *out]) + "\n")
        copy.chmod(0o644)
    return copies[main], {str(copy): node for node, copy in copies.items()}


def _node_text(text: str, names: dict[str, str], root: Path) -> str:
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


def checks(root: Path, manifest: dict) -> list[Check]:
    """Return the static checks of a restored (or live) ProFTPD node against its manifest."""
    pol, root = policy(), Path(root)
    config = read_config(root)
    main = pol["config"]["main"]
    if main not in config.files:
        return [failed("proftpd: config", f"{main} is missing or unreadable")]
    refs = references(root, config)
    results = [_config_test(root, config), *common.named_files_check(root, refs, "proftpd")]
    host_keys = [line.args[0] for line in config.of("sftphostkey") if line.args]
    results += common.host_key_checks(root, host_keys, manifest)
    forbid = int(pol["modes"]["private_key_forbid"], 8)
    for cert, key, _ in _tls_pairs(config):
        results.append(common.certificate_pair_check(root, cert, key))
        if key and common.is_file(root, key):
            results.append(common.private_key_mode_check(root, key, "tls key", forbid))
    tls_paths = [r.path for r in refs if r.category == "tls"]
    results += common.certificate_checks(root, manifest, tls_paths)
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


def _config_test(root: Path, config: Config) -> Check:
    name = "config: proftpd -t"
    program = common.find_program("proftpd", [policy()["smoke"]["proftpd"], "proftpd"])
    if program is None:
        return failed(name, "proftpd is not installed on this host")
    work = Path(tempfile.mkdtemp(prefix="drkit-proftpd-t-"))
    try:
        copy, names = write_copy(root, config, work)
        argv = [
            program if a == policy()["validate"]["argv"][0] else a.replace("{config}", str(copy))
            for a in policy()["validate"]["argv"]
        ]
        done = runner.run(argv, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [ln.strip() for ln in _node_text(done.stderr, names, root).splitlines() if ln.strip()]
    patterns = policy()["validate"]["fail_patterns"]
    bad = [ln for ln in lines if any(p in ln.lower() for p in patterns)]
    if done.returncode != 0 or bad:
        useful = [ln.split("]: ", 1)[-1] for ln in (bad or lines)]
        return failed(name, f"exit {done.returncode}: " + " | ".join(useful[:2]))
    return passed(name, "proftpd accepts the config")


# --- smoke: the real proftpd on loopback ports --------------------------------------------------


def _host_name(lookup, name: str, fallback: str) -> str:
    try:
        lookup(name)
    except KeyError:
        return fallback
    return name


def _smoke_account(root: Path, config: Config, manifest: dict, user: str) -> list[str] | None:
    """Return the passwd fields of the smoke user: a virtual user, else the node's account."""
    found = virtual_users(root, config).get(user)
    if found:
        return found
    try:
        return common.node_fields(root, manifest, user)
    except KeyError:
        return None


def smoke(root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
    """Start the real proftpd on a rewritten copy of the restored config (127.0.0.1, free
    ports) and log in over every protocol it serves: SFTP pinned to the manifest's host keys,
    FTPS pinned to the manifest's certificate; put, get and compare a file over each."""
    pol, root = policy(), Path(root)
    result = SmokeResult(profile=NAME)
    program = common.find_program("proftpd", [pol["smoke"]["proftpd"], "proftpd"])
    if program is None:
        return SmokeResult.not_judged(NAME, "proftpd is not installed on this host")
    server: runner.Service | None = None
    with common.smoke_workspace(work_dir, "smoke-proftpd-") as work:
        try:
            config = read_config(root)
            if pol["config"]["main"] not in config.files:
                result.add(failed("smoke: proftpd started", f"{pol['config']['main']} is missing"))
                return result
            fields = _smoke_account(root, config, manifest, user)
            if fields is None:
                detail = f"{user} is neither a virtual user nor an account"
                result.add(failed("smoke: user", detail))
                return result
            password = secrets.token_urlsafe(18)
            home = fields[5] or "/"
            host_home = home if str(root) == "/" else str(on_root(root, home))
            shell = fields[6] or "/bin/false"
            sandbox = work / "ftpd.passwd"
            hashed = common.hash_password(password)
            sandbox.write_text(f"{user}:{hashed}:{fields[2]}:{fields[3]}::{host_home}:{shell}\n")
            sandbox.chmod(0o640)
            made = common.make_client_key(work)
            if made is None:
                result.add(failed("smoke: proftpd started", "ssh-keygen failed"))
                return result
            key, public_line = made
            key_dir = work / "keys"
            key_dir.mkdir(mode=0o755)
            (key_dir / user).write_text(common.rfc4716(public_line, "drkit-smoke"))
            (key_dir / user).chmod(0o644)
            (work / "logs").mkdir(mode=0o755)
            ports = {index: common.free_port() for index in range(config.servers)}
            run_user = config.first("user")
            run_group = config.first("group")
            plan = Smoke(
                work=work,
                ports=ports,
                auth_user_file=sandbox,
                key_dir=key_dir,
                user=_host_name(pwd.getpwnam, run_user.args[0], "nobody") if run_user else "nobody",
                group=_host_name(grp.getgrnam, run_group.args[0], "nogroup")
                if run_group
                else "nogroup",
            )
            copy, _ = write_copy(root, config, work / "config", plan)
            log_path = work / "proftpd.log"
            server = runner.start_service([program, "-n", "-c", str(copy)], log_path)
            started = time.monotonic()
            served = [
                index
                for index in range(config.servers)
                if config.engine_on("sftpengine", index) or config.engine_on("tlsengine", index)
            ] or [0]
            if not all(
                common.wait_port(ports[i], server, pol["smoke"]["start_timeout_seconds"])
                for i in served
            ):
                hint = common.log_hint(log_path) or "no output"
                result.add(failed("smoke: proftpd started", hint))
                return result
            waited = time.monotonic() - started
            listening = ", ".join(f"127.0.0.1:{ports[i]}" for i in served)
            result.add(passed("smoke: proftpd started", f"{listening} in {waited:.2f} s"))

            def hint() -> str:
                return common.log_hint(log_path, *plan.logs)

            for index in served:
                if config.engine_on("sftpengine", index):
                    paths = {line.args[0] for line in config.of("sftphostkey", index) if line.args}
                    pinned = [k for k in manifest.get("host_keys", []) if k["path"] in paths]
                    if not pinned:
                        detail = "the backup holds no SFTPHostKey to pin"
                        result.add(failed("smoke: sftp", detail))
                        continue
                    common.keyscan(result, pinned, ports[index], "sftp")
                    common.sftp_session(result, pinned, user, ports[index], key, work, hint)
                elif config.engine_on("tlsengine", index):
                    _ftps(result, root, config, manifest, index, ports[index], user, password, hint)
            return result
        finally:
            if server is not None:
                server.stop()


def _ftps(result, root, config, manifest, index, port, user, password, hint) -> None:
    pairs = [(cert, key) for cert, key, server in _tls_pairs(config) if server in (index, -1)]
    if not pairs:
        result.add(failed("smoke: ftps", "TLSEngine on but no certificate configured"))
        return
    extra = [
        line.args[0]
        for keyword in ("tlscertificatechainfile", "tlscacertificatefile")
        for line in config.of(keyword, index)
        if line.args
    ]
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
    server_name = names[0] if names else "localhost"
    common.ftps_session(result, port, user, password, trusted, server_name, expected, hint)


class ProFTPD(Profile):
    """ProFTPD serving FTPS (mod_tls) and/or SFTP (mod_sftp), on one or more vhosts."""

    name = NAME
    signs = Signs(
        configs=("/etc/proftpd/proftpd.conf",),
        binaries=("/usr/sbin/proftpd",),
        units=("proftpd.service",),
        config_flag="-c",
    )
    node_local = ("proftpd.conf:DefaultAddress",)

    def inventory(self, root: Path, smoke_user: str | None, options: dict) -> Inventory:
        return inventory(root, smoke_user)

    def checks(self, root: Path, manifest: dict) -> list[Check]:
        return checks(root, manifest)

    def smoke(self, root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
        return smoke(root, manifest, user, work_dir)

    def sandbox_config(self, root: Path, out_dir: Path) -> Path | None:
        return write_copy(root, read_config(root), out_dir)[0]


PROFILE = ProFTPD()
