"""The smoke: the real vsftpd on a loopback port from the restored config with a one-run PAM
service, logged in to as vsftpd would let the user in (local, virtual or anonymous) over FTPS
pinned to the backed-up certificate or plain FTP, and a file moved."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from drkit import errors, runner
from drkit.engines import clients
from drkit.model import Manifest, SmokeResult, failed, passed, warned
from drkit.paths import on_root
from drkit.profiles.common import (
    configrefs,
    keychecks,
    pamfiles,
    profile_options,
    smoke_accounts,
    smokerun,
)
from drkit.profiles.vsftpd.config import (
    Config,
    anonymous_names,
    compiled_defaults,
    config_path,
    read_config,
    tls_pairs,
    vsftpd_program,
)
from drkit.profiles.vsftpd.policy import NAME, policy
from drkit.profiles.vsftpd.sandbox import (
    Run,
    mapped_user_conf,
    node_text,
    one_run_account,
    run_accounts,
    write_copy,
)
from drkit.profiles.vsftpd.users import Login, account_entry, landing


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
    if config.yes("anonymous_enable") and user in anonymous_names():
        return Login(user, config.get("ftp_username") or "ftp", "anonymous", "smoke_user")
    if config.yes("guest_enable"):
        return Login(user, config.get("guest_username", user) or "ftp", "guest", "smoke_user")
    return Login(user, user, "local", "smoke_user")


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """Start the real vsftpd on a rewritten copy of the restored config (127.0.0.1, free port)
    with a one-run PAM service (pam_pwdfile, a one-run password) and log in as vsftpd would
    let user in (local, virtual or anonymous): over FTPS pinned to the manifest's certificate
    when the config enables TLS, else plain FTP; put, get and compare a file (a listing when
    the config refuses uploads). The PAM file, accounts created for the run and the work files
    are removed whatever happens."""
    pol, root = policy(), Path(root)
    program = vsftpd_program()
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
                check, _ = one_run_account(root, manifest, user, created, as_is=True)
                result.add(check)
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
            password = pol.smoke.anonymous_password
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
            run = Run(
                work, smokerun.free_port(),
                user_conf=mapped_user_conf(root, config, work, renamed), extra=extra,
            )  # fmt: skip
            copy = write_copy(root, config, run)
            log_path = work / "vsftpd.out"
            server = runner.start_service([program, str(copy)], log_path, stdin_to_log=True)
            started = time.monotonic()
            if not smokerun.wait_port(run.port, server, pol.smoke.start_timeout_seconds):
                detail = node_text(smokerun.log_hint(log_path) or "no output", root, work)
                result.add(failed("smoke: vsftpd started", detail))
                return result
            waited = time.monotonic() - started
            result.add(passed("smoke: vsftpd started", f"127.0.0.1:{run.port} in {waited:.2f} s"))

            def hint() -> str:
                return node_text(smokerun.log_hint(log_path, work / "vsftpd.log"), root, work)

            seen, landed, why = landing(root, manifest, config, login)
            read_only = _read_only(config, login)
            uploads: tuple[str, ...] = clients.UPLOAD_DIRS
            if landed is not None and read_only is None:
                entry = account_entry(root, manifest, login.account)
                found = smoke_accounts.writable_places(root, landed, entry) if entry else []
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


def _tls_pin(root: Path, config: Config, manifest: Manifest, login: Login) -> clients.FtpTls | None:
    """How the smoke pins TLS, or None when this login speaks plain FTP: ssl_enable=NO, or an
    anonymous login without allow_anon_ssl (vsftpd refuses it encryption)."""
    if not config.yes("ssl_enable"):
        return None
    if login.kind == "anonymous" and not config.yes("allow_anon_ssl"):
        return None
    certificates = [cert for cert, _ in tls_pairs(config)]
    trusted = "".join(
        on_root(root, path).read_text(errors="replace")
        for path in [*certificates, config.settings.get("ca_certs_file") or ""]
        if path and configrefs.is_file(root, path)
    )
    expected = frozenset(
        entry.fingerprint for entry in manifest.certificates if entry.path in certificates
    )
    names = keychecks.certificate_names(root, certificates[0]) if certificates else []
    return clients.FtpTls(trusted, names[0] if names else "localhost", expected)
