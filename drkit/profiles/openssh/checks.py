"""Static checks of a restored (or live) OpenSSH node against its manifest."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import re
import shutil
import stat
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from drkit import runner
from drkit.engines import keys
from drkit.model import Check, Manifest, failed, passed, utc_text, warned
from drkit.paths import on_root
from drkit.profiles.common.configrefs import Ref, is_file, named_files_check
from drkit.profiles.common.keychecks import certificate_check, describe_file, private_key_mode_check
from drkit.profiles.common.profile_options import options_fail_as, options_of
from drkit.profiles.openssh.config import Config, node_realpath, read_config
from drkit.profiles.openssh.inventory import label, packaged, references
from drkit.profiles.openssh.passwd import Accounts
from drkit.profiles.openssh.policy import NAME, IntegrationRule, policy, settings
from drkit.profiles.openssh.sandbox import node_text, write_copy
from drkit.profiles.openssh.users import node_users


@options_fail_as("config: profile options")
def checks(root: Path, manifest: Manifest) -> list[Check]:
    """Return the static checks of a restored (or live) node against its manifest."""
    root = Path(root)
    chosen = settings(options_of(manifest, NAME))
    config = read_config(root, chosen.config)
    if config.main not in config.files:
        return [failed("config: sshd_config", f"{config.main} is missing or unreadable")]
    db = Accounts.of(root)
    users, _ = node_users(config, db, root, None)
    users += [a.name for a in manifest.accounts if a.name in db.users]
    refs = references(root, config, db, list(dict.fromkeys(users)), chosen.pam_service)
    in_target = [r for r in refs if not packaged(r)]
    return [
        _config_test(root, config),
        *named_files_check(root, in_target, directive_name=label),
        *_host_program_checks(root, [r for r in refs if packaged(r)]),
        *_host_key_checks(root, refs, manifest),
        *_host_certificate_checks(root, refs),
        *_user_key_checks(root, refs, config, db),
        *_chroot_checks(root, refs),
        *_command_checks(root, refs, config, db),
        *_integration_checks(root, refs),
        *_certificate_checks(root, manifest),
    ]


def _host_program_checks(root: Path, refs: list[Ref]) -> list[Check]:
    """Packaged programs (Subsystem sftp-server, ...) on the host that runs the server: this
    one. A node checked in place (root /) fails without them; a restore target only warns,
    since the machine that will run it may install the package."""
    return [_host_program_check(root, ref) for ref in {r.path: r for r in reversed(refs)}.values()]


def _host_program_check(root: Path, ref: Ref) -> Check:
    name, said, host = f"program: {ref.path}", f"{label(ref)} ({ref.where})", Path(ref.path)
    if host.is_file() and os.access(host, os.X_OK):
        return passed(name, f"{said}: packaged, found on this host at {host}")
    if str(root) == "/":
        return failed(name, f"{said}: not on this node (looked at {host})")
    detail = f"{said}: packaged, not on this host (looked at {host}); install it where the"
    return warned(name, f"{detail} restored server will run")


def _host_certificate_checks(root: Path, refs: list[Ref]) -> list[Check]:
    """Each HostCertificate: an OpenSSH host certificate, certifying one of the HostKeys,
    valid now (fail when expired, warn within warn_days)."""
    held = {}
    for ref in refs:
        if ref.directive == "hostkey" and is_file(root, ref.path):
            info = describe_file(root, ref.path)
            if info is not None:
                held[info.fingerprint] = ref.path
    results = []
    for ref in refs:
        if ref.directive != "hostcertificate" or not is_file(root, ref.path):
            continue
        results.append(_host_certificate_check(root, ref.path, held))
    return results


def _host_certificate_check(root: Path, path: str, held: dict[str, str]) -> Check:
    from cryptography.hazmat.primitives import serialization

    name = f"host certificate: {path}"
    try:
        cert = serialization.load_ssh_public_identity(on_root(root, path).read_bytes().strip())
    except (OSError, ValueError, TypeError) as exc:
        return failed(name, f"not an OpenSSH certificate ({exc})")
    if not isinstance(cert, serialization.SSHCertificate):
        return failed(name, "a plain public key, not a certificate")
    if cert.type != serialization.SSHCertificateType.HOST:
        return failed(name, "a user certificate, not a host certificate")
    line = cert.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    certified = keys.describe_key(line)
    fingerprint = certified.fingerprint if certified else "?"
    if fingerprint not in held:
        return failed(
            name, f"certifies {fingerprint}, which no HostKey holds: sshd cannot serve it"
        )
    now, warn_days = time.time(), policy().certificates.warn_days
    until = "forever" if cert.valid_before >= 2**64 - 1 else utc_text(_utc(cert.valid_before))
    if cert.valid_before < now:
        return failed(name, f"expired {until}: clients that trust the CA refuse the host")
    if cert.valid_after > now:
        return warned(name, f"not valid before {utc_text(_utc(cert.valid_after))}")
    if cert.valid_before - now <= warn_days * 86400:
        days = int((cert.valid_before - now) // 86400)
        return warned(name, f"expires {until}, in {days} days")
    principals = ",".join(p.decode(errors="replace") for p in cert.valid_principals) or "any host"
    return passed(name, f"for {principals}, valid until {until}, certifies {held[fingerprint]}")


def _utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _command_checks(root: Path, refs: list[Ref], config: Config, db: Accounts) -> list[Check]:
    """AuthorizedKeysCommand and AuthorizedPrincipalsCommand programs as sshd's subprocess()
    checks them (safe_path in misc.c): an executable regular file, owned by root and not
    group/world-writable, and so is every directory above it; and a run-as user that exists."""
    rule = policy().modes.command_program
    results = []
    for ref in refs:
        if ref.directive not in policy().node_programs or ref.category != "scripts":
            continue
        name = f"{label(ref)}: {ref.path}"
        real = node_realpath(root, ref.path)
        host = on_root(root, real)
        if not host.exists():
            continue  # named_files_check reports it missing
        problems = path_problems(root, real, "/", rule.uids(None), rule.forbidden)
        if not host.is_file():
            problems.append(f"{real} is not a regular file")
        elif not host.stat().st_mode & 0o111:
            problems.append(f"{real} is not executable")
        runs_as = config.first(ref.directive + "user")
        if runs_as is None or not runs_as.args:
            problems.append(f"no {label(ref)}User: sshd skips the command")
        elif runs_as.args[0] not in db.users and runs_as.args[0] != "root":
            problems.append(f"{label(ref)}User {runs_as.args[0]} is not an account of the node")
        detail = f"{real}: root-owned, no group/world write on it or above; sshd runs it"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _integration_checks(root: Path, refs: list[Ref]) -> list[Check]:
    """sssd.conf (and conf.d) exactly 0600 and root-owned, as sssd requires; files holding an
    LDAP bind password not readable by others; the CA bundles and certificates they name
    parse and are not expired."""
    rules = policy().integration
    results = []
    for ref in refs:
        if ref.directive != "integration":
            continue
        rule = rules.files.get(ref.path) or next(
            (r for pattern, r in rules.globs.items() if fnmatch.fnmatchcase(ref.path, pattern)),
            IntegrationRule(),
        )
        info = os.stat(on_root(root, ref.path))
        mode, name = stat.S_IMODE(info.st_mode), f"integration: {ref.path}"
        if rule.mode and (mode != int(rule.mode, 8) or info.st_uid != 0):
            detail = f"mode {mode:04o} uid {info.st_uid}: the daemon requires {rule.mode} root"
            results.append(failed(name, detail))
        elif rule.secret and mode & 0o004 and _has_setting(root, ref.path, rule.secret):
            results.append(
                failed(name, f"holds {rule.secret} and is readable by others ({mode:04o})")
            )
        else:
            results.append(passed(name, f"{mode:04o}, owned by uid {info.st_uid}"))
    for ref in refs:
        if ref.category == "tls" and not ref.directory and is_file(root, ref.path):
            if ref.directive.endswith("key"):
                results.append(
                    private_key_mode_check(root, ref.path, "integration key", forbid=0o037)
                )
            else:
                results.append(_bundle_check(root, ref))
    return results


def _has_setting(root: Path, path: str, setting: str) -> bool:
    text = on_root(root, path).read_text(errors="replace")
    return re.search(rf"(?im)^\s*{re.escape(setting)}\b", text) is not None


def _bundle_check(root: Path, ref: Ref) -> Check:
    """A CA bundle or certificate an integration file names: PEM certificates, not expired
    (a bundle of several passes while one is valid)."""
    from cryptography import x509

    name = f"certificate: {ref.path}"
    try:
        found = x509.load_pem_x509_certificates(on_root(root, ref.path).read_bytes())
    except (OSError, ValueError) as exc:
        return failed(name, f"{label(ref)} ({ref.where}): not PEM certificates ({exc})")
    now = datetime.now(UTC)
    valid = [c for c in found if c.not_valid_after_utc > now]
    if not valid:
        return failed(name, f"expired {utc_text(found[-1].not_valid_after_utc)} ({ref.where})")
    soonest = min(c.not_valid_after_utc for c in valid)
    days = (soonest - now).days
    if len(found) == 1 and days <= policy().certificates.warn_days:
        return warned(name, f"expires {utc_text(soonest)}, in {days} days ({ref.where})")
    return passed(name, f"{len(valid)} of {len(found)} certificates valid ({ref.where})")


def _config_test(root: Path, config: Config) -> Check:
    pol = policy()
    name = "config: sshd -t"
    work = Path(tempfile.mkdtemp(prefix="drkit-sshd-t-"))
    try:
        copy, names = write_copy(root, config, work)
        runner.run(["install", "-d", "-m755", pol.smoke.privsep_dir])
        argv = [arg.replace("{config}", str(copy)) for arg in pol.validation.argv]
        done = runner.run(argv, timeout=60)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [ln.strip("@ \t") for ln in node_text(done.stderr, names, root).splitlines()]
    lines = [ln for ln in lines if ln]
    bad = [ln for ln in lines if any(p in ln for p in pol.validation.fail_patterns)]
    if done.returncode != 0:
        cause = next((ln for ln in lines if " line " in ln), lines[0] if lines else "no output")
        return failed(name, f"exit {done.returncode}: {cause}")
    if bad:
        useful = [ln for ln in bad if "UNPROTECTED" not in ln] or bad
        return failed(name, "; ".join(dict.fromkeys(useful)))
    return passed(name, "sshd accepts the config and loads every host key")


def _host_key_checks(root: Path, refs: list[Ref], manifest: Manifest) -> list[Check]:
    rule = policy().modes.host_private_key
    forbid = rule.forbidden
    results = []
    configured = [r.path for r in refs if r.directive == "hostkey" and is_file(root, r.path)]
    for path in configured:
        info = os.stat(on_root(root, path))
        mode, problems = stat.S_IMODE(info.st_mode), []
        if mode & forbid:
            problems.append(f"mode {mode:04o}, must be 0600 or 0400")
        if info.st_uid not in rule.uids(None):
            problems.append(f"owned by uid {info.st_uid}, not root")
        name = f"host key mode: {path}"
        results.append(
            failed(name, "; ".join(problems)) if problems else passed(name, f"{mode:04o} root")
        )
        if is_file(root, path + ".pub"):
            private = describe_file(root, path)
            public = describe_file(root, path + ".pub")
            name = f"host key pair: {path}"
            if private is None or public is None:
                which = "private key" if private is None else ".pub"
                results.append(failed(name, f"the {which} does not parse"))
            elif private.fingerprint != public.fingerprint:
                detail = (
                    f".pub ({public.fingerprint}) does not match the key ({private.fingerprint})"
                )
                results.append(failed(name, detail))
            else:
                results.append(passed(name, f"{private.type} {private.fingerprint}"))
    recorded = manifest.host_keys
    for entry in recorded:
        name, held = f"host key: {entry.path}", describe_file(root, entry.path)
        if not is_file(root, entry.path):
            results.append(failed(name, "missing"))
        elif held is None:
            results.append(failed(name, "not a readable key"))
        elif held.fingerprint != entry.fingerprint:
            detail = f"is {held.fingerprint}, the backup had {entry.fingerprint}"
            results.append(failed(name, detail))
        else:
            results.append(passed(name, f"{held.type} {held.fingerprint} as in the backup"))
    known = {entry.path for entry in recorded}
    if "host_keys" in manifest.model_fields_set:
        results += [
            warned(f"host key: {p}", "configured but not in the backup")
            for p in configured
            if p not in known
        ]
    return results


def path_problems(
    root: Path, node_path: str, stop: str, owners: set[int], forbid: int, must_be_dir: bool = False
) -> list[str]:
    """Check node_path and its parents up to stop (or '/'): owner and forbidden mode bits."""
    problems, current = [], node_path
    while True:
        try:
            info = os.stat(on_root(root, current))
        except OSError:
            return [f"{current} is missing"]
        mode = stat.S_IMODE(info.st_mode)
        if info.st_uid not in owners:
            problems.append(f"{current} is owned by uid {info.st_uid}")
        if mode & forbid:
            problems.append(f"{current} is group/world-writable ({mode:04o})")
        if must_be_dir and not stat.S_ISDIR(info.st_mode):
            problems.append(f"{current} is not a directory")
        if current in (stop, "/"):
            return problems
        current = posixpath.dirname(current)


def _user_key_checks(root: Path, refs: list[Ref], config: Config, db: Accounts) -> list[Check]:
    pol = policy()
    strict = config.value("strictmodes", pol.defaults.strict_modes) != "no"
    file_rule, path_rule = (
        pol.modes.authorized_keys_file,
        pol.modes.authorized_keys_path,
    )
    results, seen = [], set()
    for ref in refs:
        if ref.directive != "authorizedkeysfile" or ref.path in seen:
            continue
        seen.add(ref.path)
        if not is_file(root, ref.path):
            continue
        if ref.user is None:
            continue  # every AuthorizedKeysFile reference names its user
        entry = db.users[ref.user]
        uid, gid, home = int(entry.uid), int(entry.gid), entry.home
        name = f"user keys: {ref.path}"
        try:
            info = os.stat(on_root(root, ref.path))
        except OSError as exc:
            results.append(failed(name, f"unreadable ({exc.strerror})"))
            continue
        mode, problems = stat.S_IMODE(info.st_mode), []
        readable = (
            (info.st_uid == uid and mode & 0o400)
            or mode & 0o004
            or (mode & 0o040 and (info.st_gid == gid or _in_group(db, ref.user, info.st_gid)))
        )
        if not readable:
            problems.append(f"{ref.path} ({mode:04o}) is not readable by {ref.user}")
        if strict:
            owners = file_rule.uids(uid)
            problems += path_problems(root, ref.path, ref.path, owners, file_rule.forbidden)
            parent = posixpath.dirname(ref.path)
            stop = home if (ref.path + "/").startswith(home.rstrip("/") + "/") else "/"
            owners = path_rule.uids(uid)
            problems += path_problems(root, parent, stop, owners, path_rule.forbidden)
        detail = f"{mode:04o}, path safe for {ref.user}" if strict else "StrictModes no"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _in_group(db: Accounts, user: str, gid: int) -> bool:
    return any(user in g.members for g in db.groups if g.gid == str(gid))


def _chroot_checks(root: Path, refs: list[Ref]) -> list[Check]:
    rule = policy().modes.chroot_path
    results = []
    for path in dict.fromkeys(r.path for r in refs if r.directive == "chrootdirectory"):
        if not on_root(root, path).is_dir():
            continue
        problems = path_problems(root, path, "/", rule.uids(None), rule.forbidden, must_be_dir=True)
        name = f"chroot: {path}"
        detail = "every component root-owned, not group/world-writable"
        results.append(failed(name, "; ".join(problems)) if problems else passed(name, detail))
    return results


def _certificate_checks(root: Path, manifest: Manifest) -> list[Check]:
    warn_days = policy().certificates.warn_days
    return [
        certificate_check(root, entry, warn_days, entry.key_path, ok_note=None)
        for entry in manifest.certificates
    ]
