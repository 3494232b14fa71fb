"""The checks of a restored (or live) vsftpd node: a real start on a loopback port (vsftpd
has no test mode), the files it names, TLS pairs and keys, chroot roots vsftpd would refuse,
the host's PAM modules."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from pathlib import Path

from drkit import runner
from drkit.engines import accounts
from drkit.model import Check, Manifest, failed, passed, warned
from drkit.paths import on_root
from drkit.profiles.common import configrefs, keychecks, profile_options, smoke_accounts, smokerun
from drkit.profiles.vsftpd.config import (
    Config,
    compiled_defaults,
    config_path,
    pam_file,
    read_config,
    read_pam,
    tls_pairs,
    vsftpd_program,
)
from drkit.profiles.vsftpd.named import references
from drkit.profiles.vsftpd.policy import NAME, policy
from drkit.profiles.vsftpd.sandbox import Run, mapped_user_conf, node_text, run_accounts, write_copy
from drkit.profiles.vsftpd.users import Login, guest_account, logins, place_of


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
        entry = passwd.get(login.account)
        if not place.root or not entry or entry.uid_number is None:
            continue
        with contextlib.suppress(OSError):
            info = os.stat(on_root(root, place.root))
            name = f"chroot: {place.root}"
            allowed = config.yes("allow_writeable_chroot") and login.kind != "anonymous"
            gid = entry.gid_number if entry.gid_number is not None else -1
            if not allowed and _writable_by(info, entry.uid_number, gid):
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
    dirs = policy().pam_module_dirs
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
def checks(root: Path, manifest: Manifest) -> list[Check]:
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
    forbid = policy().modes.forbidden
    for cert, key in tls_pairs(config):
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


def _start_check(root: Path, config: Config, manifest: Manifest) -> Check:
    """vsftpd has no -t: start it on a free loopback port and wait for 220 (a missing
    secure_chroot_dir shows here as 500 OOPS)."""
    name = "config: vsftpd starts"
    program = vsftpd_program()
    if program is None:
        return failed(name, "vsftpd is not installed on this host")
    work = Path(tempfile.mkdtemp(prefix="drkit-vsftpd-t-"))
    work.chmod(0o755)
    server: runner.Service | None = None
    created: list[tuple[str, str]] = []
    try:
        renamed: dict[str, str] = {}
        made, extra = run_accounts(root, manifest, config, created, renamed)
        broken = [check for check in made if check.status == "fail"]
        if broken:
            return failed(name, f"{broken[0].name.removeprefix('smoke: ')}: {broken[0].detail}")
        user_conf = mapped_user_conf(root, config, work, renamed)
        run = Run(work, smokerun.free_port(), user_conf=user_conf, extra=extra)
        copy = write_copy(root, config, run)
        log_path = work / "vsftpd.out"
        server = runner.start_service([program, str(copy)], log_path, stdin_to_log=True)
        reply = smokerun.greeting(run.port, server, policy().smoke.start_timeout_seconds)
        if reply and reply.startswith("220"):
            return passed(name, f"greets with 220 on 127.0.0.1:{run.port}")
        output = reply or smokerun.log_hint(log_path) or "no greeting"
        return failed(name, node_text(output, root, work))
    finally:
        if server is not None:
            server.stop()
        smoke_accounts.remove_created(created)
        shutil.rmtree(work, ignore_errors=True)
