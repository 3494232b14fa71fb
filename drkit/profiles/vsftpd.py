"""vsftpd nodes (FTPS): read vsftpd.conf, back up what it names (and the PAM service and its
credential store), prove a restore by starting the real vsftpd and logging in over FTPS.

vsftpd has no test mode: the config check starts it on a free loopback port and waits for its
220 greeting (start-up errors go to file descriptor 0). Settings come from policies/vsftpd.yaml.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import secrets
import shutil
import socket
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from drkit import runner
from drkit.engines import accounts
from drkit.model import Check, Inventory, SmokeResult, failed, passed, warned
from drkit.paths import on_root
from drkit.profiles import common
from drkit.profiles.common import Ref
from drkit.profiles.interface import Profile, Signs

NAME = "vsftpd"


def policy() -> dict:
    return common.policy(NAME)


@dataclass
class Config:
    """vsftpd.conf's settings (lower-case keys; the last line of a key wins) and per-user files."""

    path: str | None = None
    text: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    user_files: dict[str, dict[str, str]] = field(default_factory=dict)

    def get(self, key: str) -> str | None:
        return self.settings.get(key, policy()["config"]["defaults"].get(key))

    def yes(self, key: str) -> bool:
        return (self.settings.get(key) or "").upper() == "YES"


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


def read_config(root: Path) -> Config:
    """Read the node's vsftpd.conf and the per-user files of user_config_dir."""
    config = Config()
    for candidate in policy()["config"]["candidates"]:
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


def pam_file(config: Config) -> str:
    return posixpath.join(policy()["config"]["pam_dir"], config.get("pam_service_name") or "ftp")


def pam_stores(root: Path, config: Config) -> list[tuple[str, str]]:
    """Return [(store path, PAM line)] the PAM service authenticates against."""
    stores = []
    try:
        text = on_root(root, pam_file(config)).read_text(errors="replace")
    except OSError:
        return []
    names = tuple(f"{name}=" for name in policy()["pam_store_args"])
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.strip().startswith("#"):
            continue
        for word in raw.split():
            if word.startswith(names):
                path = word.split("=", 1)[1]
                if "pam_userdb" in raw and not path.endswith(".db"):
                    path += ".db"
                stores.append((path, f"{pam_file(config)} line {number}"))
    return stores


def listed_users(root: Path, config: Config) -> list[str]:
    """Return the system users the node serves: userlist (allow list), per-user files, guest."""
    names: list[str] = []
    if config.yes("userlist_enable") and (config.get("userlist_deny") or "YES").upper() == "NO":
        with contextlib.suppress(OSError):
            text = on_root(root, config.get("userlist_file")).read_text(errors="replace")
            names += [ln.strip() for ln in text.splitlines() if ln.strip() and ln[0] != "#"]
    names += list(config.user_files)
    if config.yes("guest_enable"):
        names.append(config.settings.get("guest_username", "ftp"))
    return list(dict.fromkeys(names))


def references(root: Path, config: Config) -> list[Ref]:
    """Return every node path vsftpd's config names, with category and whether it must exist."""
    pol = policy()
    refs: list[Ref] = []
    rules = pol["settings"]
    where = config.where
    for key, rule in rules.items():
        if rule.get("enable") and not config.yes(rule["enable"]):
            continue
        value = config.settings.get(key) or (
            pol["config"]["defaults"].get(key) if rule.get("enable") else None
        )
        if not value or not value.startswith("/"):
            continue
        kind = rule["kind"]
        refs.append(
            Ref(
                value,
                rule["category"],
                key,
                where.get(key, "default"),
                rule["required"],
                directory=kind in ("dir", "chroot"),
            )
        )
    for user, settings in config.user_files.items():
        local_root = settings.get("local_root")
        if local_root and local_root.startswith("/"):
            source = f"{config.get('user_config_dir')}/{user}"
            refs.append(Ref(local_root, "chroot", "local_root", source, True, directory=True))
    refs.append(
        Ref(
            pam_file(config),
            "config",
            "pam_service_name",
            where.get("pam_service_name", "default"),
            True,
        )
    )
    refs += [
        Ref(path, "accounts", "PAM store", line, True) for path, line in pam_stores(root, config)
    ]
    if not any(r.directive == "local_root" for r in refs):
        passwd = accounts.passwd_entries(root)
        for user in listed_users(root, config):
            home = passwd.get(user, [""] * 7)[5]
            if home and home not in ("/", "/nonexistent"):
                refs.append(Ref(home, "chroot", "home", f"passwd entry of {user}", False, True))
    return list(dict.fromkeys(refs))


def system_users(root: Path, config: Config) -> list[str]:
    """Return the system accounts a restored node needs: listed users, guest, nopriv_user."""
    names = listed_users(root, config)
    names.append(config.get("nopriv_user") or "nobody")
    return list(dict.fromkeys(names))


def inventory(root: Path, smoke_user: str | None) -> Inventory:
    """Return what makes this vsftpd node: config, PAM service and store, TLS, lists, trees."""
    root = Path(root)
    config = read_config(root)
    if config.path is None:
        return Inventory(warnings=["vsftpd: no vsftpd.conf found"])
    refs = references(root, config)
    found = common.inventory_from_refs(root, [config.path], refs, [])
    found.owned_globs = list(policy()["owned_globs"])
    found.users = system_users(root, config)
    if smoke_user and smoke_user not in found.users:
        found.users.append(smoke_user)
    return found


# --- checks ---------------------------------------------------------------------------------------


def _tls_pairs(config: Config) -> list[tuple[str, str | None]]:
    pairs = []
    for cert_key, key_key in (
        ("rsa_cert_file", "rsa_private_key_file"),
        ("dsa_cert_file", "dsa_private_key_file"),
    ):
        cert = config.settings.get(cert_key)
        if cert:
            pairs.append((cert, config.settings.get(key_key) or None))
    return pairs


def checks(root: Path, manifest: dict) -> list[Check]:
    """Return the checks of a restored (or live) vsftpd node against its manifest."""
    root = Path(root)
    config = read_config(root)
    if config.path is None:
        return [failed("vsftpd: config", "no vsftpd.conf found")]
    refs = references(root, config)
    results = [_start_check(root, config), *common.named_files_check(root, refs, "vsftpd")]
    info = os.stat(on_root(root, config.path))
    if info.st_uid != 0:
        results.append(failed(f"vsftpd: owner of {config.path}", "must be owned by root"))
    forbid = int(policy()["modes"]["private_key_forbid"], 8)
    for cert, key in _tls_pairs(config):
        results.append(common.certificate_pair_check(root, cert, key))
        if key and common.is_file(root, key):
            results.append(common.private_key_mode_check(root, key, "tls key", forbid))
    results += common.certificate_checks(
        root, manifest, [r.path for r in refs if r.category == "tls"]
    )
    writable_ok = config.yes("allow_writeable_chroot")
    if config.yes("chroot_local_user") and not writable_ok:
        for ref in refs:
            if ref.directive != "local_root" or not on_root(root, ref.path).is_dir():
                continue
            mode = stat.S_IMODE(os.stat(on_root(root, ref.path)).st_mode)
            owner = os.stat(on_root(root, ref.path)).st_uid
            name = f"chroot: {ref.path}"
            if owner != 0 or mode & 0o022:
                detail = (
                    "writable by its user: vsftpd refuses the login (allow_writeable_chroot=NO)"
                )
                results.append(failed(name, detail))
            else:
                results.append(passed(name, "root-owned, not writable"))
    if not config.settings.get("pam_service_name"):
        results.append(warned("vsftpd: pam_service_name", "not set: PAM's default service"))
    return results


def _program() -> str | None:
    return common.find_program("vsftpd", policy()["smoke"]["vsftpd"])


@dataclass
class _Run:
    work: Path
    port: int
    pam_service: str | None = None
    user_conf: Path | None = None


def write_copy(root: Path, config: Config, run: _Run) -> Path:
    """Write a runnable copy of vsftpd.conf (node paths mapped onto root, 127.0.0.1:port,
    runtime and log files in the work dir, optionally a sandbox PAM service)."""
    pol = policy()
    overrides = dict(pol["smoke"]["override"])
    overrides["listen_port"] = str(run.port)
    overrides["secure_chroot_dir"] = str(run.work / "empty")
    overrides["xferlog_file"] = str(run.work / "xferlog")
    overrides["vsftpd_log_file"] = str(run.work / "vsftpd.log")
    if run.pam_service:
        overrides["pam_service_name"] = run.pam_service
    if run.user_conf:
        overrides["user_config_dir"] = str(run.user_conf)
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
        elif value.strip().startswith("/") and key in pol["settings"]:
            out.append(f"{key}={_mapped(root, value.strip())}")
        else:
            out.append(raw)
    out += [f"{key}={value}" for key, value in overrides.items()]
    (run.work / "empty").mkdir(mode=0o755, exist_ok=True)
    copy = run.work / "vsftpd.conf"
    copy.write_text("\n".join(out) + "\n")
    copy.chmod(0o600)
    return copy


def _mapped(root: Path, path: str) -> str:
    return path if str(root) == "/" else str(on_root(root, path))


def _mapped_user_conf(root: Path, config: Config, work: Path) -> Path | None:
    if not config.user_files:
        return None
    target = work / "user_conf"
    target.mkdir(mode=0o755)
    for user, settings in config.user_files.items():
        lines = [
            f"{key}={_mapped(root, value) if value.startswith('/') else value}"
            for key, value in settings.items()
        ]
        (target / user).write_text("\n".join(lines) + "\n")
    return target


def _greeting(port: int, server: runner.Service, timeout: float) -> str | None:
    """Wait for the server's first reply line on 127.0.0.1:port; None if it never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as conn:
            conn.settimeout(5)
            return conn.recv(512).decode(errors="replace").strip()
        time.sleep(0.02)
    return None


def _start_check(root: Path, config: Config) -> Check:
    """vsftpd has no -t: start it on a free loopback port and wait for 220."""
    name = "config: vsftpd starts"
    program = _program()
    if program is None:
        return failed(name, "vsftpd is not installed on this host")
    work = Path(tempfile.mkdtemp(prefix="drkit-vsftpd-t-"))
    work.chmod(0o755)
    server = None
    try:
        run = _Run(work, common.free_port(), user_conf=_mapped_user_conf(root, config, work))
        copy = write_copy(root, config, run)
        log_path = work / "vsftpd.out"
        server = runner.start_service([program, str(copy)], log_path, stdin_to_log=True)
        reply = _greeting(run.port, server, policy()["smoke"]["start_timeout_seconds"])
        if reply and reply.startswith("220"):
            return passed(name, f"greets with 220 on 127.0.0.1:{run.port}")
        output = common.log_hint(log_path) or reply or "no greeting"
        return failed(name, _node_text(output, root, work))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def _node_text(text: str, root: Path, work: Path) -> str:
    text = text.replace(str(work), "<work>")
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


# --- smoke ----------------------------------------------------------------------------------------


def smoke(root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
    """Start the real vsftpd on a rewritten copy of the restored config (127.0.0.1, free port)
    with a one-run PAM service (pam_pwdfile, a one-run password) and log in over FTPS pinned to
    the manifest's certificate; put, get and compare a file. The PAM file, a user created for
    the run and the work files are removed whatever happens."""
    pol, root = policy(), Path(root)
    program = _program()
    if program is None:
        return SmokeResult.not_judged(NAME, "vsftpd is not installed on this host")
    result = SmokeResult(profile=NAME)
    created: list[tuple[str, str]] = []
    pam_path: Path | None = None
    server: runner.Service | None = None
    with common.smoke_workspace(work_dir, "smoke-vsftpd-") as work:
        try:
            config = read_config(root)
            if config.path is None:
                result.add(failed("smoke: vsftpd started", "no vsftpd.conf found"))
                return result
            account = common.ensure_user(root, manifest, user, created)
            result.add(account)
            if account.status == "fail":
                return result
            password = secrets.token_urlsafe(18)
            store = work / "ftpd.passwd"
            store.write_text(f"{user}:{common.hash_password(password)}\n")
            store.chmod(0o600)
            service = f"drkit-smoke-{secrets.token_hex(4)}"
            pam_path = Path(pol["config"]["pam_dir"]) / service
            pam_path.write_text(
                "# drkit smoke run: removed when the run ends\n"
                f"auth    required {pol['smoke']['pam_module']} pwdfile={store}\n"
                "account required pam_permit.so\n"
                "session required pam_permit.so\n"
            )
            run = _Run(work, common.free_port(), service, _mapped_user_conf(root, config, work))
            copy = write_copy(root, config, run)
            log_path = work / "vsftpd.out"
            server = runner.start_service([program, str(copy)], log_path, stdin_to_log=True)
            started = time.monotonic()
            if not common.wait_port(run.port, server, pol["smoke"]["start_timeout_seconds"]):
                detail = _node_text(common.log_hint(log_path) or "no output", root, work)
                result.add(failed("smoke: vsftpd started", detail))
                return result
            waited = time.monotonic() - started
            result.add(passed("smoke: vsftpd started", f"127.0.0.1:{run.port} in {waited:.2f} s"))
            pairs = _tls_pairs(config)
            if not pairs or not config.yes("ssl_enable"):
                result.add(failed("smoke: ftps login", "ssl_enable is not YES: no FTPS"))
                return result
            certificates = [cert for cert, _ in pairs]
            trusted = "".join(
                on_root(root, path).read_text(errors="replace")
                for path in [*certificates, config.settings.get("ca_certs_file") or ""]
                if path and common.is_file(root, path)
            )
            expected = {
                entry["fingerprint"]
                for entry in manifest.get("certificates", [])
                if entry["path"] in certificates
            }
            names = common.certificate_names(root, certificates[0])

            def hint() -> str:
                return _node_text(common.log_hint(log_path, work / "vsftpd.log"), root, work)

            server_name = names[0] if names else "localhost"
            common.ftps_session(
                result, run.port, user, password, trusted, server_name, expected, hint
            )
            return result
        finally:
            if server is not None:
                server.stop()
            if pam_path is not None:
                pam_path.unlink(missing_ok=True)
            common.remove_created(created)


class Vsftpd(Profile):
    """vsftpd serving FTPS (ssl_enable), with system, PAM or virtual users."""

    name = NAME
    signs = Signs(
        configs=("/etc/vsftpd.conf", "/etc/vsftpd/vsftpd.conf"),
        binaries=("/usr/sbin/vsftpd",),
        units=("vsftpd.service",),
        config_flag="",
    )
    node_local = ("vsftpd.conf:listen_address", "vsftpd.conf:pasv_address")

    def inventory(self, root: Path, smoke_user: str | None, options: dict) -> Inventory:
        return inventory(root, smoke_user)

    def checks(self, root: Path, manifest: dict) -> list[Check]:
        return checks(root, manifest)

    def smoke(self, root: Path, manifest: dict, user: str, work_dir: Path) -> SmokeResult:
        return smoke(root, manifest, user, work_dir)

    def sandbox_config(self, root: Path, out_dir: Path) -> Path | None:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = read_config(root)
        if config.path is None:
            return None
        run = _Run(out_dir, common.free_port(), user_conf=_mapped_user_conf(root, config, out_dir))
        return write_copy(root, config, run)


PROFILE = Vsftpd()
