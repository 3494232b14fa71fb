"""Pure-FTPd nodes (FTP and FTPS): read the command line pure-ftpd gets (pure-ftpd-wrapper's
conf/ and auth/, or a systemd unit's ExecStart), back up what it names (PureDB files and their
pureftpd.passwd source, the TLS bundle, PAM, the trees every login lands in), and prove a
restore by starting the real pure-ftpd and logging in over FTPS.

Who logs in and where, as Pure-FTPd 1.0.50 works it out: `-l` methods are tried in order
(puredb:FILE, pam, unix, ldap:FILE...); a virtual user's home in pureftpd.passwd with `/./`
chroots it at the part before (pure-pw useradd -d); ChrootEveryone (-A) chroots system users
at their home; a missing home fails the login ("421 Home directory not available") unless
CreateHomeDir (-j); a uid below MinUID (-u) is refused ("530 Sorry, but I can't trust you").
With TLS (-Y 1..3) the certificate and its key come from one file, compiled in as
/etc/ssl/private/pure-ftpd.pem (-2 CERT[,KEY] overrides it); a bundle without its key, or with
another key, makes pure-ftpd exit 252 at start, writing nothing but to syslog. pure-ftpd has no
test mode: the config check starts it on a free loopback port and waits for its 220.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from drkit import errors, runner
from drkit.engines import accounts, clients
from drkit.model import Check, Inventory, Manifest, SmokeResult, failed, passed, warned
from drkit.paths import on_root
from drkit.profiles.common import (
    authfiles,
    configrefs,
    configtext,
    keychecks,
    pamfiles,
    profile_options,
    programs,
    smoke_accounts,
    smokerun,
)
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.interface import Detection, ModuleProfile, Signs
from drkit.profiles.pureftpd import read
from drkit.profiles.pureftpd.options import NAME, Options, settings

DHPARAMS = "/etc/ssl/private/pure-ftpd-dhparams.pem"  # read by releases before 1.0.47 only
EXTRA_CONFIGS = ("/etc/pure-ftpd/pure-ftpd.conf", "/etc/pure-ftpd/pureftpd-dir-aliases")
PAM_SERVICE = "/etc/pam.d/pure-ftpd"
START_TIMEOUT = 10.0
LOGIN_METHODS_WITH_FILES = ("puredb", "ldap", "mysql", "pgsql")


@dataclass
class Node:
    """What the node's pure-ftpd command line means: TLS level and files, the PureDB files
    and the passwd source of the first, its virtual users, the login methods."""

    setup: read.Setup
    tls: int
    certificate: str
    key: str | None
    puredbs: list[tuple[str, str]]
    passwd: str | None
    users: list[read.VirtualUser]
    methods: list[str]


def read_node(root: Path, options: Options) -> Node:
    """Read the node's pure-ftpd configuration as the server would get it."""
    if options.command:
        where = "profile_options.pureftpd.command (the unit's ExecStart)"
        setup = read.read_command(options.command, where, root)
    else:
        setup = read.read_wrapper(root)
    certificate, _, key = (setup.value("2") or read.CERT_FILE).partition(",")
    # Without -l, pure-ftpd authenticates system accounts (unix).
    logins = [option.value or "" for option in setup.logins()] or ["unix"]
    puredbs = [
        ((option.value or "").split(":", 1)[1], option.where)
        for option in setup.logins()
        if (option.value or "").startswith("puredb:")
    ]
    passwd = options.passwd
    if passwd is None and puredbs:
        beside = re.sub(r"\.pdb$", ".passwd", puredbs[0][0])
        passwd = next((p for p in (beside, read.PASSWD) if configrefs.is_file(root, p)), beside)
    users = read.read_passwd(root, passwd) if passwd else []
    return Node(
        setup, setup.number("Y", 0), certificate, key or None, puredbs, passwd, users,
        [value.split(":", 1)[0] for value in logins],
    )  # fmt: skip


def detect(root: Path) -> Detection | None:
    """Pure-FTPd shows itself by its conf/ directory, or by a pure-ftpd unit: one that runs
    pure-ftpd itself gives the command line (recorded as profile option `command`)."""
    binaries = [p for p in (read.PROGRAM, read.WRAPPER) if on_root(root, p).exists()]
    unit = read.unit_command(root)
    configs, options = [], {}
    if unit and unit[1] and not read.runs_wrapper(unit[1]):
        configs.append(unit[0])
        options = {"command": unit[1]}
    elif on_root(root, read.CONF_DIR).is_dir():
        configs.append(read.CONF_DIR)
    if not configs:
        return None
    return Detection(configs, binaries, [unit[0]] if unit else [], options)


def main_config(root: Path, options: Options) -> str | None:
    """Return what configures the node: the command line's program, else conf/ when present."""
    if options.command:
        return read.read_command(options.command, "command", root).program
    return read.CONF_DIR if on_root(root, read.CONF_DIR).is_dir() else None


# --- what the node needs --------------------------------------------------------------------------


def _altlog_file(setup: read.Setup) -> str | None:
    """Return the file of AltLog's FORMAT:FILE, or None."""
    value = setup.value("O") or ""
    path = value.split(":", 1)[1] if ":" in value else ""
    return path if path.startswith("/") else None


def references(root: Path, node: Node, smoke_user: str | None = None) -> list[Ref]:
    """Return every node path the configuration names, with category and whether it must exist."""
    setup, refs = node.setup, []
    source = node.setup.source
    refs += [Ref(path, "config", "configuration", source) for path in setup.files]
    refs += [Ref(path, "config", "shipped config", "not read by pure-ftpd-wrapper", False)
             for path in EXTRA_CONFIGS]  # fmt: skip
    unit = read.unit_command(root)
    if unit:
        refs.append(Ref(unit[0], "config", "systemd unit", "pure-ftpd.service"))
    for option in setup.logins():
        method, _, path = (option.value or "").partition(":")
        if method in LOGIN_METHODS_WITH_FILES and path:
            category = "accounts" if method == "puredb" else "config"
            refs.append(Ref(path, category, f"-l {method}", option.where))
    if node.passwd and node.puredbs:
        where = f"source of {node.puredbs[0][0]} (pure-pw mkdb)"
        refs.append(Ref(node.passwd, "accounts", "pureftpd.passwd", where, False))
    if "pam" in node.methods:
        refs.append(Ref(PAM_SERVICE, "config", "-l pam", "PAM service pure-ftpd"))
        pam = pamfiles.read_pam(root, PAM_SERVICE)
        refs += [Ref(path, "config", "PAM include", line, False) for path, line in pam.includes]
        refs += [Ref(path, "accounts", "PAM store", line, False) for path, line in pam.stores]
    if setup.value("F"):
        refs.append(Ref(setup.value("F") or "", "config", "FortunesFile", setup.where("F")))
    tls_where = setup.where("2") if setup.has("2") else f"TLS {node.tls} ({setup.where('Y')})"
    refs.append(Ref(node.certificate, "tls", "certificate bundle", tls_where, node.tls > 0))
    if node.key:
        refs.append(Ref(node.key, "tls", "certificate key", setup.where("2"), node.tls > 0))
    refs.append(Ref(DHPARAMS, "tls", "DH parameters", "older Pure-FTPd releases", False))
    log = _altlog_file(setup)
    if log:
        refs.append(Ref(log, "audit_logs", "AltLog", setup.where("O"), False))
        if posixpath.dirname(log) != "/var/log":
            refs.append(Ref(posixpath.dirname(log), "audit_logs", "AltLog directory",
                            setup.where("O"), False, True))  # fmt: skip
    script = _upload_script(root, setup)
    if script:
        refs.append(Ref(script, "scripts", "UPLOADSCRIPT", read.DEFAULTS))
    create = setup.has("j")
    for user in node.users:
        where = f"{node.passwd} line {user.line} ({user.name})"
        tree = user.chroot or user.directory
        if not tree.startswith("/"):
            continue  # no absolute home: no tree to take
        refs.append(Ref(tree, "chroot", "home of virtual user", where, not create, True, user.name))
        if user.chroot and user.directory != tree:
            refs.append(Ref(user.directory, "chroot", "home", where, not create, True, user.name))
    passwd = accounts.passwd_entries(root)
    for name in system_users(root, node, smoke_user):
        entry = passwd.get(name)
        home = entry.home if entry else ""
        if home.startswith("/") and home not in ("/", "/nonexistent"):
            refs.append(Ref(home, "chroot", "home", f"system login {name}", False, True, name))
    return list(dict.fromkeys(refs))


def _upload_script(root: Path, setup: read.Setup) -> str | None:
    """Return the program pure-uploadscript runs (UPLOADSCRIPT) when CallUploadScript is on."""
    script = read.defaults(root).get("UPLOADSCRIPT", "") if setup.has("o") else ""
    return script if script.startswith("/") else None


def system_users(root: Path, node: Node, smoke_user: str | None = None) -> list[str]:
    """Return the node's system accounts that log in or own logins' files: `ftp` when
    anonymous logins are on, with unix or pam every account from MinUID up, the accounts whose
    uid virtual users run as (pure-pw useradd -u ftpuser), and the smoke user when it is one."""
    passwd = accounts.passwd_entries(root)
    by_uid = {entry.uid: name for name, entry in passwd.items()}
    names = [by_uid[user.uid] for user in node.users if user.uid in by_uid]
    if not node.setup.has("E") and "ftp" in passwd:
        names.append("ftp")
    if {"unix", "pam"} & set(node.methods):
        low = max(node.setup.number("u", 1000), 1)
        for name, entry in passwd.items():
            if entry.uid_number is not None and low <= entry.uid_number < 60000:
                names.append(name)
    if smoke_user and smoke_user in passwd and smoke_user not in {u.name for u in node.users}:
        names.append(smoke_user)
    return list(dict.fromkeys(names))


def inventory(root: Path, smoke_user: str | None, options: Options) -> Inventory:
    """Return what makes this Pure-FTPd node: conf/ and auth/, PureDB and pureftpd.passwd,
    the TLS bundle, PAM, logs, upload script and every login's tree."""
    root = Path(root)
    node = read_node(root, options)
    if node.setup.source.startswith(read.CONF_DIR) and not on_root(root, read.CONF_DIR).is_dir():
        return Inventory(warnings=[f"pureftpd: no {read.CONF_DIR} found"])
    warnings = [f"pureftpd: {why}" for _, why in node.setup.refused] + node.setup.warnings
    if node.puredbs and node.passwd and not configrefs.is_file(root, node.passwd):
        warnings.append(
            f"pureftpd: no {node.passwd}: the PureDB {node.puredbs[0][0]} cannot be rebuilt"
        )
    found = configrefs.inventory_from_refs(root, [], references(root, node, smoke_user), warnings)
    found.owned_globs = [f"{read.CONF_DIR}/*", f"{read.AUTH_DIR}/*"]
    found.users = system_users(root, node, smoke_user)
    return found


# --- checks ---------------------------------------------------------------------------------------


def _pure_pw() -> str | None:
    return programs.find_program("pure-pw", ["/usr/bin/pure-pw"])


def _program() -> str | None:
    return programs.find_program("pure-ftpd", [read.PROGRAM])


def puredb_checks(root: Path, node: Node) -> list[Check]:
    """Each PureDB file must be one pure-ftpd can read; the first is rebuilt from its
    pureftpd.passwd with `pure-pw mkdb` into a temporary file and compared byte for byte."""
    results = []
    for index, (pdb, _) in enumerate(node.puredbs):
        name = f"pureftpd: PureDB {pdb}"
        if not on_root(root, pdb).is_file():
            continue  # named_files_check fails a missing one; a FIFO is never read
        try:
            data = on_root(root, pdb).read_bytes()
        except OSError as exc:
            results.append(failed(name, f"unreadable ({exc.strerror})"))
            continue
        if not data.startswith(b"PDB2"):
            detail = "not a PureDB file: pure-ftpd answers 421 Unable to read the indexed puredb"
            results.append(failed(name, detail))
            continue
        if index or not node.passwd or not configrefs.is_file(root, node.passwd):
            detail = f"a PureDB file ({len(data)} bytes)"
            if not index:
                missing = f"; its source {node.passwd} is missing: pure-pw cannot edit its users"
                results.append(warned(name, detail + missing))
            else:
                results.append(passed(name, detail))
            continue
        program = _pure_pw()
        if program is None:
            results.append(warned(name, "pure-pw is not installed here: not rebuilt"))
            continue
        with tempfile.TemporaryDirectory(prefix="drkit-puredb-") as temp:
            rebuilt = Path(temp) / "rebuilt.pdb"
            argv = [program, "mkdb", str(rebuilt), "-f", str(on_root(root, node.passwd))]
            done = runner.run(argv, timeout=60)
            if done.returncode != 0 or not rebuilt.is_file():
                said = programs.command_output(done, root)
                detail = f"pure-pw mkdb failed on {node.passwd}: {said}"
                results.append(failed(name, detail))
            elif rebuilt.read_bytes() == data:
                detail = f"rebuilt from {node.passwd} with pure-pw mkdb: byte for byte the same"
                results.append(passed(name, detail))
            else:
                detail = (
                    f"differs from what pure-pw mkdb builds from {node.passwd}: logins follow "
                    "the PureDB, and the next pure-pw command rebuilds it from the passwd file"
                )
                results.append(warned(name, detail))
    return results


def user_checks(root: Path, node: Node) -> list[Check]:
    """Each virtual user as pure-ftpd would judge its login: uid at least MinUID, a home that
    exists (or CreateHomeDir)."""
    results = []
    min_uid = node.setup.number("u", 0)
    for user in node.users:
        name = f"pureftpd: user {user.name}"
        where = f"{node.passwd} line {user.line}"
        if not user.uid.isdigit() or int(user.uid) < min_uid:
            detail = (
                f"uid {user.uid} is below MinUID {min_uid} ({node.setup.where('u')}): pure-ftpd "
                "answers 530 Sorry, but I can't trust you"
            )
            results.append(failed(name, detail))
        elif not on_root(root, user.directory).is_dir() and not node.setup.has("j"):
            detail = (
                f"home {user.directory} ({where}) is missing and CreateHomeDir is off: "
                "pure-ftpd answers 421 Home directory not available"
            )
            results.append(failed(name, detail))
        else:
            jail = f", chrooted at {user.chroot}" if user.chroot else ""
            results.append(passed(name, f"uid {user.uid}, home {user.directory}{jail}"))
    return results


def tls_checks(root: Path, node: Node, manifest: Manifest) -> list[Check]:
    """With TLS on, the bundle pure-ftpd loads must hold a certificate and its own key (else
    it exits 252 at start); its key file private; certificates as backed up; DH parameters,
    when a file of them is kept, must parse."""
    results = []
    files = [node.certificate] + ([node.key] if node.key else [])
    if node.tls > 0 and all(configrefs.is_file(root, path) for path in files):
        pair = keychecks.certificate_pair_check(root, node.certificate, node.key)
        if pair.status != "pass":
            why = "holds no private key" if pair.status == "warn" else pair.detail
            why = why.removesuffix(": TLS sessions would fail")
            pair = failed(pair.name, f"{why}: pure-ftpd exits 252 at start (TLS {node.tls})")
        results.append(pair)
        key = node.key or node.certificate
        results.append(keychecks.tls_key_mode_check(root, key, manifest=manifest))
    results += keychecks.certificate_checks(root, manifest, files)
    if configrefs.is_file(root, DHPARAMS):
        from cryptography.hazmat.primitives.serialization import load_pem_parameters

        name = f"tls: {DHPARAMS}"
        try:
            load_pem_parameters(on_root(root, DHPARAMS).read_bytes())
            results.append(passed(name, "DH parameters parse (read by releases before 1.0.47)"))
        except (OSError, ValueError) as exc:
            results.append(failed(name, f"not PEM DH parameters: {exc}"))
    return results


def _start(
    root: Path, node: Node, work: Path, puredb: Path | None
) -> tuple[runner.Service | None, int, list[str], str]:
    """Start pure-ftpd from the restored configuration on a free loopback port; return the
    service (None when it did not greet), its port, the changes made and why it failed."""
    wanted = posixpath.basename(node.setup.program)
    program = programs.find_program(wanted, [node.setup.program]) or _program()
    if program is None:
        return None, 0, [], "pure-ftpd is not installed on this host"
    port = smokerun.free_port()
    options, changes = read.runnable(node.setup, root, work, port, puredb)
    if posixpath.basename(program) != wanted:
        changes.insert(0, f"runs {posixpath.basename(program)}: {wanted} is not on this host")
    log_path = work / "pure-ftpd.out"
    server = runner.start_service([program, *options], log_path)
    reply = smokerun.greeting(port, server, START_TIMEOUT)
    if reply and reply.startswith("220"):
        return server, port, changes, ""
    server.stop()
    code = server.process.returncode
    said = (
        smokerun.log_hint(log_path) or reply or "no greeting, nothing written (it logs to syslog)"
    )
    why = f"exit {code} at start: {said}" if code is not None else said
    if code == 252 and node.tls > 0:
        pair = keychecks.certificate_pair_check(root, node.certificate, node.key)
        why += f"; TLS {node.tls} needs {node.certificate} with its key ({pair.detail})"
    return None, port, changes, _node_text(why, root, work)


def _node_text(text: str, root: Path, work: Path) -> str:
    text = text.replace(str(work), "<work>")
    return text.replace(str(root).rstrip("/") + "/", "/") if str(root) != "/" else text


def _refusal(node: Node) -> str:
    """Say why the node's configuration never reaches a running pure-ftpd (its first refusal)."""
    where, why = node.setup.refused[0]
    wrapper = node.setup.source.startswith(read.CONF_DIR)
    return f"{'pure-ftpd-wrapper' if wrapper else 'pure-ftpd'} refuses {where}: {why}"


def _start_check(root: Path, node: Node) -> Check:
    name = "config: pure-ftpd starts"
    if node.setup.refused:
        return failed(name, _refusal(node))
    work = Path(tempfile.mkdtemp(prefix="drkit-pureftpd-t-"))
    work.chmod(0o755)
    try:
        server, port, changes, why = _start(root, node, work, None)
        if server is None:
            return failed(name, why)
        server.stop()
        changed = _node_text("; ".join(changes), root, work)
        return passed(name, f"greets with 220 on 127.0.0.1:{port} ({changed})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


@profile_options.options_fail_as("pureftpd: options")
def checks(root: Path, manifest: Manifest) -> list[Check]:
    """Return the checks of a restored (or live) Pure-FTPd node against its manifest."""
    root = Path(root)
    node = read_node(root, settings(profile_options.options_of(manifest, NAME)))
    if node.setup.source.startswith(read.CONF_DIR) and not on_root(root, read.CONF_DIR).is_dir():
        return [failed("pureftpd: config", f"no {read.CONF_DIR} found")]
    results = [failed(f"pureftpd: {where}", why) for where, why in node.setup.refused]
    results.append(_start_check(root, node))
    results += configrefs.named_files_check(root, references(root, node), "pureftpd")
    results += puredb_checks(root, node)
    results += user_checks(root, node)
    results += tls_checks(root, node, manifest)
    return results


# --- smoke ----------------------------------------------------------------------------------------


def _mapped_home(root: Path, home: str) -> str:
    """Map a passwd home onto root, keeping pure-ftpd's `/./` chroot marker in place."""
    if str(root) == "/":
        return home
    jail, marker, rest = home.partition("/./")
    return str(on_root(root, jail or "/")) + (f"/./{rest}" if marker else "")


def _smoke_line(
    root: Path, manifest: Manifest, node: Node, user: str, login: str, secret: str
) -> tuple[str | None, str]:
    """Return the pureftpd.passwd line of the one-run login (user's uid, gid, home and
    limits, a one-run password), or a failed check naming why there is none."""
    hashed = authfiles.hash_password(secret)
    own = next((u for u in node.users if u.name == user), None)
    if own is not None:
        fields = list(own.fields)
        fields[0], fields[1], fields[5] = login, hashed, _mapped_home(root, own.home)
        return ":".join(fields), f"virtual user {user}"
    account = smoke_accounts.node_account(root, manifest, user)
    if account is None:
        return None, f"{user} is neither a virtual user nor one of the node's accounts"
    entry = account.entry
    trusted = node.setup.value("a")
    jailed = node.setup.has("A") and entry.gid != trusted
    home = entry.home.rstrip("/") + ("/./" if jailed else "")
    line = f"{login}:{hashed}:{entry.uid}:{entry.gid}::{_mapped_home(root, home)}::::::::::::"
    return line, f"system account {user}" + (" (ChrootEveryone)" if jailed else "")


def _tls_pin(root: Path, node: Node, manifest: Manifest) -> clients.FtpTls | None:
    if node.tls <= 0 or not configrefs.is_file(root, node.certificate):
        return None
    try:
        text = read.text_of(root, node.certificate)
    except OSError:
        return None
    trusted = "".join(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?",
                                 text, re.S))  # fmt: skip
    expected = frozenset(
        entry.fingerprint for entry in manifest.certificates if entry.path == node.certificate
    )
    names = keychecks.certificate_names(root, node.certificate) if trusted else []
    return clients.FtpTls(trusted, names[0] if names else "localhost", expected)


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """Start the real pure-ftpd from the restored configuration on 127.0.0.1 (Bind, pid file,
    AltLog and the options DROPPED names changed, each change reported) with a one-run
    virtual user added beside the node's own: a copy of the node's pureftpd.passwd in the
    work directory gets one line (user's uid, gid and home, a one-run password) and
    `pure-pw mkdb` builds the run's PureDB from it, tried first. Log in over FTPS pinned to
    the backed-up certificate when TLS is on (plain FTP otherwise), put, get, compare and
    delete a file. The work directory, and with it the copy, go whatever happens."""
    root = Path(root)
    program, pure_pw = _program(), _pure_pw()
    if program is None or pure_pw is None:
        return SmokeResult.not_judged(NAME, "pure-ftpd or pure-pw is not installed on this host")
    result = SmokeResult(profile=NAME)
    try:
        node = read_node(root, settings(profile_options.options_of(manifest, NAME)))
    except errors.ConfigError as exc:
        result.add(failed("smoke: pure-ftpd started", exc.message))
        return result
    if node.setup.refused:
        result.add(failed("smoke: pure-ftpd started", _refusal(node)))
        return result
    server: runner.Service | None = None
    with smokerun.smoke_workspace(work_dir, "smoke-pureftpd-") as work:
        try:
            login, secret = f"drkit-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
            line, how = _smoke_line(root, manifest, node, user, login, secret)
            if line is None:
                result.add(failed("smoke: user", how))
                return result
            copy, pdb = work / "pureftpd.passwd", work / "pureftpd.pdb"
            copy.touch(mode=0o600)
            copy.chmod(0o600)
            own = node.passwd if node.passwd and configrefs.is_file(root, node.passwd) else None
            try:
                text = read.text_of(root, own) if own else ""
            except OSError:
                text, own = "", None
            copy.write_text(text + ("" if not text or text.endswith("\n") else "\n") + line + "\n")
            done = runner.run([pure_pw, "mkdb", str(pdb), "-f", str(copy)], timeout=60)
            if done.returncode != 0:
                detail = f"pure-pw mkdb failed: {programs.command_output(done, root)}"
                result.add(failed("smoke: user", detail))
                return result
            beside = f"beside the {len(node.users)} of a copy of {node.passwd}" if own else "alone"
            result.add(passed("smoke: user", f"{login} as {how}, one-run, {beside}; "
                              "its PureDB rebuilt in the run's directory"))  # fmt: skip
            started = time.monotonic()
            server, port, changes, why = _start(root, node, work, pdb)
            if server is None:
                result.add(failed("smoke: pure-ftpd started", why or "no greeting"))
                return result
            waited = time.monotonic() - started
            changed = _node_text("; ".join(changes), root, work)
            detail = f"127.0.0.1:{port} in {waited:.2f} s; changed: {changed}"
            result.add(passed("smoke: pure-ftpd started", detail))
            log_path = work / "pure-ftpd.out"
            clients.ftp_session(
                result, port, login, secret, tls=_tls_pin(root, node, manifest),
                hint=lambda: _node_text(smokerun.log_hint(log_path), root, work),
            )  # fmt: skip
            return result
        finally:
            if server is not None:
                server.stop()


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """Write the pure-ftpd command line a loopback run of root uses (node paths mapped onto
    root, runtime files in out_dir) to out_dir/pure-ftpd.args; return it."""
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    node = read_node(root, Options())
    if not on_root(root, read.CONF_DIR).is_dir():
        return None
    options, changes = read.runnable(node.setup, root, out_dir, smokerun.free_port())
    path = out_dir / "pure-ftpd.args"
    lines = [f"# {change}" for change in changes]
    configtext.write_config_copy(path, [*lines, shlex.join([_program() or read.PROGRAM, *options])])
    return path


class PureFtpdProfile(ModuleProfile[Options]):
    """The module profile, with Pure-FTPd's own detection (its config is a directory)."""

    def detect(self, root: Path) -> Detection | None:
        return detect(root)


SIGNS = Signs((read.CONF_DIR,), (read.PROGRAM, read.WRAPPER), ("pure-ftpd.service",))
NODE_LOCAL = (f"{read.CONF_DIR}/Bind", f"{read.CONF_DIR}/ForcePassiveIP")
PROFILE = PureFtpdProfile(
    NAME,
    SIGNS,
    inventory,
    checks,
    smoke,
    sandbox_config,
    NODE_LOCAL,
    main_config_of=main_config,
    options_model=Options,
    settings_of=settings,
)
