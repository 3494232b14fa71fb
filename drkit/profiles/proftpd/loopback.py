"""The smoke: the real proftpd on loopback ports from the restored config, logged in to over
every protocol it serves (SFTP, FTPS or plain FTP), where the login lands checked against
DefaultRoot, and a file moved in a directory the user may write."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import glob
import os
import posixpath
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from drkit import runner
from drkit.engines import clients
from drkit.model import Check, Manifest, PasswdEntry, SmokeResult, failed, passed, warned
from drkit.paths import on_root, to_node
from drkit.profiles.common import (
    authfiles,
    configrefs,
    configtext,
    keychecks,
    pamfiles,
    profile_options,
    smoke_accounts,
    smokerun,
)
from drkit.profiles.proftpd import sql, standins
from drkit.profiles.proftpd.config import (
    Config,
    chains,
    module_loaded,
    proftpd_program,
    read_config,
    server_contexts,
    static_modules,
    tls_pairs,
)
from drkit.profiles.proftpd.policy import NAME, settings
from drkit.profiles.proftpd.sandbox import Run, mapped_path, run_as, start
from drkit.profiles.proftpd.users import landing, list_file, virtual_users


def _smoke_contexts(config: Config) -> list[int]:
    """The server contexts a smoke logs in to: every SFTP and FTPS one; a node serving neither
    is proven on its DefaultServer (the one answering unmatched addresses), else the main."""
    served = [
        s
        for s in server_contexts(config)
        if config.engine_on("sftpengine", s) or config.engine_on("tlsengine", s)
    ]
    if served:
        return served
    default = [s for s in server_contexts(config) if config.engine_on("defaultserver", s)]
    return default[:1] or [0]


def auth_copies(root: Path, config: Config, run: Run, stand_in: str | None) -> None:
    """On a prefix root, give the run a copy of each AuthUserFile with the homes mapped onto
    root (proftpd chroots and changes into them), with the node file's mode, owner and
    folder mode (proftpd refuses a world-writable one as on the node); stand_in (the smoke
    user's node account, when this host's /etc/passwd is not the node's) is added to each, and
    to a stand-in AuthUserFile for the server contexts naming none."""
    if str(root) == "/":
        return
    folder = run.work / "auth"
    folder.mkdir(mode=0o755)
    for index, line in enumerate(config.of("authuserfile")):
        node_file = line.args[0] if line.args else ""
        host = on_root(root, node_file)
        if node_file in run.auth_files or not host.is_file():
            continue
        rows = []
        for raw in host.read_text(errors="replace").splitlines():
            fields = raw.split(":")
            if len(fields) >= 7 and not raw.startswith("#") and fields[5].startswith("/"):
                fields[5] = mapped_path(root, fields[5])
            rows.append(":".join(fields))
        rows += [stand_in] if stand_in else []
        place = folder / str(index)
        place.mkdir(mode=0o755)
        copy = place / host.name
        configtext.write_config_copy(copy, rows, 0o600)
        info, parent = host.stat(), host.parent.stat()
        os.chown(copy, info.st_uid, info.st_gid)
        copy.chmod(stat.S_IMODE(info.st_mode))
        place.chmod(stat.S_IMODE(parent.st_mode))
        run.auth_files[node_file] = copy
    if stand_in:
        run.stand_in = folder / "node-accounts.passwd"
        configtext.write_config_copy(run.stand_in, [stand_in], 0o600)
        user = stand_in.split(":", 1)[0]
        run.differ(
            f"{user} is the node's account: served from a work-dir AuthUserFile beside the "
            "node's sources (this host's /etc/passwd is not the node's)"
        )


def _write_rules(config: Config, server: int, user: str, home: str) -> list[tuple[str, bool]]:
    """Return (directory pattern, allowed) of each <Limit WRITE/STOR/ALL> AllowAll/DenyAll
    (or AllowUser/DenyUser naming user) of a server context outside <Anonymous>; "" is the
    server itself."""
    rules, folders, limit = [], [], None
    for line in config.lines:
        if not line.active or line.anon is not None or line.server not in (server, -1):
            continue
        if line.keyword == "<directory" and line.args:
            pattern = (
                line.args[0].replace("~", home, 1) if line.args[0].startswith("~") else line.args[0]
            )
            folders.append(posixpath.normpath(pattern))
        elif line.keyword == "</directory" and folders:
            folders.pop()
        elif line.keyword == "<limit":
            limit = {arg.upper() for arg in line.args} & {"WRITE", "STOR", "ALL"}
        elif line.keyword == "</limit":
            limit = None
        elif limit and line.keyword in ("allowall", "denyall", "allowuser", "denyuser"):
            if line.keyword.endswith("user") and user not in ",".join(line.args).split(","):
                continue
            rules.append((folders[-1] if folders else "", line.keyword.startswith("allow")))
    return rules


def _may_write(rules: list[tuple[str, bool]], node_dir: str) -> bool:
    """The most specific <Directory> rule matching node_dir decides (none: allowed)."""

    def matches(pattern: str) -> bool:
        if not pattern:
            return True
        if fnmatch.fnmatchcase(node_dir, pattern):
            return True
        return not glob.has_magic(pattern) and node_dir.startswith(pattern.rstrip("/") + "/")

    hits = [(len(pattern), allowed) for pattern, allowed in rules if matches(pattern)]
    return max(hits)[1] if hits else True


def writable_dirs(
    root: Path, config: Config, server: int, user: str, fields: list[str], landed: Path
) -> list[str]:
    """Return where a login may upload, relative to where it lands ("." first): the landing
    directory and its subdirectories that the account may write by owner and mode
    (smoke_accounts.writable_places) and that no <Limit WRITE> denies."""
    rules = _write_rules(config, server, user, posixpath.normpath(fields[5] or "/"))
    return [
        name
        for name, folder in smoke_accounts.writable_places(
            root, landed, PasswdEntry.parse(":".join([user, *fields[1:]]))
        )
        if _may_write(rules, to_node(root, folder) if str(root) != "/" else str(folder))
    ]


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """Start the real proftpd on the restored config, changed only in its listen addresses,
    ports, runtime files and logs, with the smoke's one-run credentials added beside the
    node's own (a key store beside SFTPAuthorizedUserKeys, a one-run PAM password in front of
    AuthOrder, the node's account in a work-dir AuthUserFile where this host's /etc/passwd is
    not the node's); every other change is a warning naming it. Log in over every protocol it
    serves (SFTP pinned to the manifest's host keys, FTPS to its certificate, plain FTP where
    neither is on), confirm where the login landed against DefaultRoot, and put, get and
    compare a file in a directory the user may write (found from owners, modes and
    <Limit WRITE>; none found is a warning). On a node whose accounts come from mod_ldap the
    login is SFTP with the one-run key only.
    """
    root = Path(root)
    result = SmokeResult(profile=NAME)
    program = proftpd_program()
    if program is None:
        return SmokeResult.not_judged(NAME, "proftpd is not installed on this host")
    main = settings(profile_options.options_of(manifest, NAME)).config
    server: runner.Service | None = None
    pam_path: Path | None = None
    with smokerun.smoke_workspace(work_dir, "smoke-proftpd-") as work:
        try:
            config = read_config(root, main)
            if main not in config.files:
                result.add(failed("smoke: proftpd started", f"{main} is missing"))
                return result
            virtual = virtual_users(root, config)
            # An account of LDAP or a database server: SFTP with the one-run key only.
            ldap = bool(config.of("ldapserver") or standins.server_accounts(config))
            ldap = ldap and user not in virtual
            fields = virtual.get(user)
            if fields is None and not ldap:
                with contextlib.suppress(KeyError):
                    entry = smoke_accounts.node_entry(root, manifest, user)
                    fields = list(dataclasses.astuple(entry))
                if fields is None:
                    detail = f"{user} is neither a virtual user nor an account"
                    result.add(failed("smoke: user", detail))
                    return result
            ports = {index: smokerun.free_port() for index in range(config.servers)}
            served = _smoke_contexts(config)
            run = Run(work, ports=ports, run_as=run_as(root, config))
            run.sftp_contexts = {s for s in served if config.engine_on("sftpengine", s)}
            made = authfiles.authorized_client_key(
                work, user, "keys", lambda line: authfiles.rfc4716(line, "drkit-smoke")
            )
            if made is None:
                result.add(failed("smoke: proftpd started", "ssh-keygen failed"))
                return result
            key, run.key_dir = made
            password = secrets.token_urlsafe(18)
            if not ldap and module_loaded(config, static_modules(program), "mod_auth_pam"):
                pam_path = pamfiles.one_run_pam_service(work, user, password)
                run.pam_service = pam_path.name
            stand_in = None
            if fields is not None and user not in virtual and str(root) != "/":
                home = mapped_path(root, fields[5] or "/")
                stand_in = f"{user}:*:{fields[2]}:{fields[3]}::{home}:{fields[6] or '/bin/false'}"
            valid_shell(root, config, run, user, fields, served)
            auth_copies(root, config, run, stand_in)
            sql.smoke_copies(root, config, run)
            standins.point_at_stand_ins(root, config, run)
            server, words, waited = start(root, config, run, program)
            if server is None:
                result.add(failed("smoke: proftpd started", f"proftpd {words}"))
                return result
            listening = ", ".join(f"127.0.0.1:{ports[i]}" for i in served)
            result.add(passed("smoke: proftpd started", f"{listening} in {waited:.2f} s"))
            if run.differences:
                detail = "; ".join(run.differences)
                result.add(warned("smoke: differs from the node's config", detail))

            def hint() -> str:
                return smokerun.log_hint(work / "proftpd.out", *run.logs)

            for index in served:
                _login(
                    result, root, config, manifest, index, user, fields, run, key, password, hint
                )
            return result
        finally:
            if server is not None:
                server.stop()
            if pam_path is not None:
                pam_path.unlink(missing_ok=True)


def valid_shell(
    root: Path, config: Config, run: Run, user: str, fields: list[str] | None, served: list[int]
) -> None:
    """RequireValidShell reads this host's /etc/shells: when the node's lists the user's shell
    and this host's does not, the run turns it off (a difference named)."""
    shell = (fields or [""] * 7)[6]
    if not shell or all(config.is_off("requirevalidshell", s) for s in served):
        return
    node, host = list_file(root, "/etc/shells"), list_file(Path("/"), "/etc/shells")
    if shell in node and shell not in host:
        run.shells_off = True
        run.differ(
            f"RequireValidShell off: {user}'s shell {shell} is in the node's /etc/shells, "
            "not in this host's"
        )


def _login(
    result: SmokeResult,
    root: Path,
    config: Config,
    manifest: Manifest,
    index: int,
    user: str,
    fields: list[str] | None,
    run: Run,
    key: Path,
    password: str,
    hint: Callable[[], str],
) -> None:
    """Log in to one server context over what it serves; check the landing and move a file."""
    port = run.ports[index]
    landed, seen, why = (None, None, "")
    uploads: tuple[str, ...] = clients.UPLOAD_DIRS
    if fields is not None:
        landed, seen, why = landing(root, config, index, user, fields)
        uploads = tuple(writable_dirs(root, config, index, user, fields, landed))
    if config.engine_on("sftpengine", index):
        paths = {line.args[0] for line in config.of("sftphostkey", index) if line.args}
        pinned = [k for k in manifest.host_keys if k.path in paths]
        if not pinned:
            result.add(failed("smoke: sftp", "the backup holds no SFTPHostKey to pin"))
            return
        clients.keyscan(result, pinned, port, "sftp")
        before = len(result.checks)
        clients.sftp_session(
            result, pinned, user, port, key, run.work, hint, upload_dirs=uploads, show_dir=True
        )
        login = next((c for c in result.checks[before:] if c.name == "smoke: sftp login"), None)
        if login and login.status == "pass" and seen is not None:
            where = login.detail.rsplit(", in ", 1)[-1]
            result.add(_landing_check("sftp", where, seen, why))
        return
    label = "ftps" if config.engine_on("tlsengine", index) else "ftp"
    if run.pam_service is None:
        why_not = (
            f"{user} is an LDAP account: drkit knows no password for it"
            if fields is None
            else "this proftpd has no mod_auth_pam: no one-run password beside the node's"
        )
        result.add(warned(f"smoke: {label}", why_not))
        return
    tls = _ftps_pin(root, config, manifest, index) if label == "ftps" else None
    if label == "ftps" and tls is None:
        result.add(failed("smoke: ftps", "TLSEngine on but no certificate configured"))
        return
    clients.ftp_session(
        result, port, user, password, tls=tls, hint=hint, upload_dirs=uploads, expect_dir=seen,
        landing_why=why,
    )  # fmt: skip


def _landing_check(label: str, where: str, seen: str, why: str) -> Check:
    name = f"smoke: {label} landing"
    if posixpath.normpath(where) == posixpath.normpath(seen):
        return passed(name, f"in {where}, as {why} says")
    return failed(name, f"landed in {where}; {why} says {seen}")


def _ftps_pin(root: Path, config: Config, manifest: Manifest, index: int) -> clients.FtpTls | None:
    pairs = [(cert, key) for cert, key, server in tls_pairs(config) if server in (index, -1)]
    if not pairs:
        return None
    extra = [path for cert, chain in chains(config) if cert == pairs[0][0] for path in chain]
    trusted = "".join(
        on_root(root, path).read_text(errors="replace")
        for path in [cert for cert, _ in pairs] + extra
        if configrefs.is_file(root, path)
    )
    expected = {
        entry.fingerprint
        for entry in manifest.certificates
        if entry.path in {cert for cert, _ in pairs}
    }
    names = keychecks.certificate_names(root, pairs[0][0])
    return clients.FtpTls(trusted, names[0] if names else "localhost", frozenset(expected))
