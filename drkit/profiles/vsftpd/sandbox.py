"""A runnable copy of vsftpd.conf: node paths mapped onto the restored root, 127.0.0.1 on a free
port, logs in a work directory, user_config_dir copied, and the one-run system accounts vsftpd
looks up at start and login (the node's ids and mapped homes)."""

from __future__ import annotations

import grp
import pwd
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from drkit import runner
from drkit.model import Check, Manifest, failed, passed
from drkit.paths import on_root
from drkit.profiles.common import configtext, smoke_accounts, smokerun
from drkit.profiles.vsftpd.config import Config, read_config
from drkit.profiles.vsftpd.policy import policy


@dataclass
class Run:
    """A runnable copy: its work dir, port, PAM service, user_config_dir copy and settings."""

    work: Path
    port: int
    pam_service: str | None = None
    user_conf: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def write_copy(root: Path, config: Config, run: Run) -> Path:
    """Write a runnable copy of vsftpd.conf (node paths mapped onto root, 127.0.0.1:port,
    logs in the work dir, optionally a sandbox PAM service and remapped accounts)."""
    pol = policy()
    overrides = dict(pol.smoke.override)
    overrides["listen_port"] = str(run.port)
    overrides["xferlog_file"] = str(run.work / "xferlog")
    overrides["vsftpd_log_file"] = str(run.work / "vsftpd.log")
    overrides["secure_chroot_dir"] = mapped_path(root, config.get("secure_chroot_dir") or "/")
    if run.pam_service:
        overrides["pam_service_name"] = run.pam_service
    if run.user_conf:
        overrides["user_config_dir"] = str(run.user_conf)
    overrides.update(run.extra)
    drop = set(pol.smoke.drop)
    out = []
    for raw in config.text.splitlines():
        line = raw.strip()
        key, has_value, value = line.partition("=")
        key = key.strip().lower()
        if not has_value or line.startswith("#"):
            out.append(raw)
        elif key in overrides or key in drop:
            out.append(f"# drkit: {line}")
        elif value.strip().startswith("/") and key in (*pol.settings, "local_root"):
            out.append(f"{key}={mapped_path(root, value.strip())}")
        else:
            out.append(raw)
    out += [f"{key}={value}" for key, value in overrides.items()]
    copy = run.work / "vsftpd.conf"
    configtext.write_config_copy(copy, out)
    return copy


def mapped_path(root: Path, path: str) -> str:
    """Return a node path as it is under root (unchanged on /)."""
    return path if str(root) == "/" else str(on_root(root, path))


def mapped_user_conf(
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
            f"{key}={mapped_path(root, value) if value.startswith('/') else value}"
            if key != "guest_username"
            else f"{key}={renamed.get(value, value)}"
            for key, value in own.items()
        ]
        (target / user).write_text("\n".join(lines) + "\n")
    return target


def node_text(text: str, root: Path, work: Path) -> str:
    """Return vsftpd's words with the work dir as <work> and paths under root as node paths."""
    text = text.replace(str(work), "<work>")
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


def one_run_account(
    root: Path,
    manifest: Manifest,
    account: str,
    created: list[tuple[str, str]],
    as_is: bool = False,
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
    passwd = entry.entry
    temp, gid = account if as_is else f"drkit-{secrets.token_hex(4)}", passwd.gid
    if not smoke_accounts.host_has(grp.getgrgid, int(gid)):
        if runner.run(["groupadd", "-o", "-g", gid, temp]).returncode != 0:
            return failed(name, f"groupadd -g {gid} failed"), None
        created.append(("group", temp))
    home = mapped_path(root, passwd.home or "/")
    argv = ["useradd", "-M", "-p", "*", "-o", "-u", passwd.uid, "-g", gid, "-d", home]
    done = runner.run([*argv, "-s", "/usr/sbin/nologin", temp])
    if done.returncode != 0:
        return failed(name, f"useradd failed: {done.stderr_tail}"), None
    created.append(("user", temp))
    detail = f"{account} (uid {passwd.uid}, gid {gid}, home {passwd.home}) for the run"
    return passed(name, detail if as_is else f"as {temp}: {detail}"), temp


def run_accounts(
    root: Path,
    manifest: Manifest,
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
        check, temp = one_run_account(root, manifest, config.get(key) or "", created)
        results.append(check)
        if temp:
            extra[key] = temp
            if key == "guest_username" and renamed is not None:
                renamed[config.get(key) or ""] = temp
    if renamed is not None and wanted[0][1]:
        for own in config.user_files.values():
            account = own.get("guest_username")
            if account and account not in renamed:
                check, temp = one_run_account(root, manifest, account, created)
                results.append(check)
                if temp:
                    renamed[account] = temp
    return results, extra


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """Write vsftpd.conf with node paths mapped onto root into out_dir (a free loopback port,
    runtime files there); return it, or None when the node has no vsftpd.conf."""
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = read_config(root)
    if config.path is None:
        return None
    run = Run(out_dir, smokerun.free_port(), user_conf=mapped_user_conf(root, config, out_dir))
    return write_copy(root, config, run)
