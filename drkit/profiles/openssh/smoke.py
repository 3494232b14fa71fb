"""The smoke: the real sshd on a sandbox port, an SFTP login and a file round trip."""

from __future__ import annotations

import os
import posixpath
import pwd
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from drkit import errors, runner
from drkit.engines.clients import keyscan, sftp_session
from drkit.model import Check, Manifest, PasswdEntry, SmokeResult, failed, passed, warned
from drkit.paths import on_root, to_node
from drkit.profiles.common.authfiles import authorized_client_key
from drkit.profiles.common.profile_options import options_of
from drkit.profiles.common.smoke_accounts import ensure_user, node_entry, remove_created
from drkit.profiles.common.smokerun import free_port, interesting_lines, smoke_workspace, wait_port
from drkit.profiles.openssh.checks import path_problems
from drkit.profiles.openssh.config import node_links, read_config
from drkit.profiles.openssh.passwd import Accounts
from drkit.profiles.openssh.policy import NAME, policy, settings
from drkit.profiles.openssh.sandbox import (
    SmokePlan,
    SshdView,
    node_text,
    offered,
    sshd_view,
    write_copy,
)


def _log_hint(server: runner.Service) -> str:
    pattern = r"error|fatal|refused|not allowed|bad ownership|denied|invalid"
    return " | ".join(interesting_lines(server.log_tail().splitlines(), pattern))


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """Start the real sshd on a copy of the restored config (127.0.0.1, free port) and prove it.

    Records: served host key per type against the manifest, an SFTP login of `user` with a
    throw-away key, and a file round trip. sshd is stopped, a user created for the run is
    removed and the work files are deleted whatever happens.
    """
    pol, root = policy(), Path(root)
    run = pol.smoke
    result = SmokeResult(profile=NAME)
    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    unsafe = path_problems(Path("/"), str(work_dir), "/", {0}, 0o022)
    if unsafe:
        result.add(failed("smoke: sshd started", f"work dir unusable for sshd: {unsafe[0]}"))
        return result
    created: list[tuple[str, str]] = []
    server: runner.Service | None = None
    with smoke_workspace(work_dir, "smoke-") as work:
        try:
            try:
                config = read_config(root, settings(options_of(manifest, NAME)).config)
            except errors.ConfigError as exc:
                result.add(failed("smoke: sshd started", exc.message))
                return result
            if config.main not in config.files:
                result.add(failed("smoke: sshd started", f"{config.main} is missing"))
                return result
            account = ensure_user(root, manifest, user, created)
            result.add(account)
            if account.status == "fail":
                return result
            made = authorized_client_key(work, user, "authorized_keys")
            if made is None:
                result.add(failed("smoke: sshd started", "ssh-keygen failed"))
                return result
            key, sandbox = made
            entry = node_entry(root, manifest, user)
            port = free_port()
            prepend = [
                "# drkit smoke run: these lines win over the node's own",
                f"Port {port}",
                f"ListenAddress 127.0.0.1:{port}",
                f"PidFile {work / 'sshd.pid'}",
            ]
            db = Accounts.of(root)
            db.users[user] = entry  # the node's fields: its home, not the host's mapping
            plan = SmokePlan(prepend, f"{sandbox}/%u", user, db)
            copy, names = write_copy(root, config, work / "config", plan)
            for subsystem, program in plan.replaced:
                detail = (
                    f"{program} is on neither the restored root nor this host: the run used "
                    f"{run.missing_subsystem}; install it where the server will run"
                )
                result.add(warned(f"smoke: Subsystem {subsystem}", detail))
            for number, difference in enumerate(plan.differences, 1):
                result.add(warned(f"smoke: config differs #{number}", difference))
            runner.run(["install", "-d", "-m755", run.privsep_dir])
            view, loaded = sshd_view(run.sshd, copy, user, port)
            chrooted = (view or {}).get("chrootdirectory", ["none"])[0] != "none"
            if chrooted and ("user", user) in created and entry.home:
                # inside a chroot the home is the node's own path, not one mapped onto the root
                runner.run(["usermod", "-d", entry.home, user])
            offers = offered(view)
            server = runner.start_service(
                [run.sshd, "-D", "-e", "-f", str(copy)], work / "sshd.log"
            )
            started = time.monotonic()
            if not wait_port(port, server, run.start_timeout_seconds):
                said = node_text(_log_hint(server), names, root)
                result.add(failed("smoke: sshd started", said or "no output"))
                return result
            waited = time.monotonic() - started
            result.add(passed("smoke: sshd started", f"127.0.0.1:{port} in {waited:.2f} s"))
            host_keys = manifest.host_keys
            not_served = (
                "not served: sshd offers that type, ssh-keyscan got no key"
                if offers is not None
                else "not served (sshd could not say which host key types it offers)"
            )
            keyscan(
                result, host_keys, port, not_served=not_served, offered=offers,
                loaded=loaded or None,
                omitted_by="HostKeyAlgorithms",
            )  # fmt: skip

            def hint() -> str:
                found = node_text(_log_hint(server), names, root)
                return f"sshd: {found}" if found else ""

            landing = _landing(root, view, user, entry)
            if not landing.writable:
                result.add(warned("smoke: writable directory", landing.no_write))
            sftp_session(
                result, host_keys, user, port, key, work, hint,
                trip_name="smoke: file round trip", upload_dirs=landing.writable,
                show_dir=True, only_key=False,
            )  # fmt: skip
            login = next(c for c in result.checks if c.name == "smoke: sftp login")
            if login.status == "pass":
                result.add(_landing_check(landing, login.detail.rsplit(", in ", 1)[-1]))
            return result
        finally:
            if server is not None:
                server.stop()
            remove_created(created)


@dataclass
class Landing:
    """Where the config puts a login of the smoke's user, and where it may write there."""

    start: str | None  # the directory the session starts in, as sftp shows it (None: unknown)
    said: str  # what the config says, for messages
    writable: list[str]  # directories (relative to start) the user may write to, "." first
    no_write: str  # why none was found
    run_start: str | None = None  # where the run's own account starts, when that differs


def _sftp_args(view: SshdView) -> list[str]:
    """Return the arguments sshd gives the session's SFTP server: ForceCommand's when it runs
    internal-sftp or sftp-server, else the sftp Subsystem's."""
    force = (view.get("forcecommand") or ["none"])[0]
    words = force.split() if force != "none" else []
    if words:
        return words[1:] if posixpath.basename(words[0]) in ("internal-sftp", "sftp-server") else []
    for value in view.get("subsystem", []):
        words = value.split()
        if words[:1] == ["sftp"]:
            return words[2:]
    return []


def _landing(root: Path, view: SshdView | None, user: str, entry: PasswdEntry) -> Landing:
    """Work out, from sshd's own view of the config for this user (`sshd -T -C`) and the
    restored tree's owners and modes, where the login lands (ChrootDirectory, then the home
    inside it or /, then internal-sftp -d) and the directories there the user may write to."""
    if not view:
        return Landing(None, "sshd -T could not say", ["."], "")
    home = entry.home or "/"
    args = _sftp_args(view)
    start_dir = next(
        (
            a[2:] or (args[i + 1] if i + 1 < len(args) else "")
            for i, a in enumerate(args)
            if a.startswith("-d")
        ),
        "",
    )
    host_account = pwd.getpwnam(user)
    chroot = (view.get("chrootdirectory") or ["none"])[0]
    said, run_start = [], None
    if chroot != "none":
        chroot_host = Path(chroot)
        shown_chroot = to_node(root, chroot_host) if chroot.startswith(str(root)) else chroot
        start = home if (chroot_host / home.lstrip("/")).is_dir() else "/"
        inside = "in it" if start == home else "not in it: /"
        said.append(f"ChrootDirectory {shown_chroot}, home {home} {inside}")
        run_home = host_account.pw_dir
        run_start = run_home if (chroot_host / run_home.lstrip("/")).is_dir() else "/"
        base = chroot_host
    else:
        said.append(f"home {home}, no ChrootDirectory")
        start, base = str(on_root(root, home)), Path("/")
        run_start = host_account.pw_dir
    if start_dir:
        said.append(f"internal-sftp -d {start_dir}")
        wanted = start_dir.replace("%d", home).replace("%u", user).replace("%%", "%")
        wanted = posixpath.normpath(posixpath.join(start, wanted))
        if chroot == "none":
            wanted = str(on_root(root, wanted)) if start_dir.startswith("/") else wanted
        start = wanted if (base / wanted.lstrip("/")).is_dir() else start
        run_start = start
    # sftp shows realpath("."): resolved inside the chroot, or on this host without one
    start, run_start = (
        (node_links(base, path)[0] if chroot != "none" else os.path.realpath(path))
        for path in (start, run_start)
    )
    here = base / start.lstrip("/")
    gids = set(os.getgrouplist(user, host_account.pw_gid))
    writable = [
        name
        for name, path in [(".", here), *_subdirs(here)]
        if _may_write(path, host_account.pw_uid, gids)
    ]
    if "-R" in args:
        writable, why = [], "internal-sftp -R: the session is read-only"
    else:
        why = (
            f"{user} (uid {host_account.pw_uid}) may write to neither {start} nor a directory in it"
        )
    no_write = (
        f"{why} ({', '.join(said)}), by their owners and modes: login proven, nothing written"
    )
    return Landing(
        start, ", ".join(said), writable, no_write, run_start if run_start != start else None
    )


def _subdirs(path: Path) -> list[tuple[str, Path]]:
    try:
        children = sorted(path.iterdir(), key=lambda c: (c.name.startswith("."), c.name))
        return [(child.name, child) for child in children if child.is_dir()]
    except OSError:
        return []


def _may_write(path: Path, uid: int, gids: set[int]) -> bool:
    """Return whether uid (in gids) may create files in directory path, by owner and mode."""
    try:
        info = path.stat()
    except OSError:
        return False
    mode = info.st_mode
    if not stat.S_ISDIR(mode):
        return False
    if uid == 0:
        return True
    if info.st_uid == uid:
        return mode & 0o300 == 0o300
    if info.st_gid in gids:
        return mode & 0o030 == 0o030
    return mode & 0o003 == 0o003


def _landing_check(landing: Landing, shown: str) -> Check:
    """Compare where the login landed (sftp's working directory) with what the config says."""
    name = "smoke: login landed"
    if landing.start is None:
        return warned(name, f"in {shown}; {landing.said}")
    if shown == landing.start:
        return passed(name, f"in {shown}, as the config says ({landing.said})")
    if shown == landing.run_start:
        detail = f"in {shown}: the run's account has its home mapped onto the root, the node's"
        return warned(name, f"{detail} login starts in {landing.start} ({landing.said})")
    return failed(name, f"in {shown}, but the config puts it in {landing.start} ({landing.said})")
