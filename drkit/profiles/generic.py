"""Any other transfer server: what to back up and how to check it come from settings alone.

drkit.yaml's `profile_options.generic` (and/or a policy file on the node it names) lists node
path globs by category, plus optional validate and smoke commands:

    profile_options:
      generic:
        policy: /etc/drkit/generic-myftpd.yaml   # optional; same keys; backed up as config
        config: [/etc/myftpd/*.conf]
        host_keys: [/etc/myftpd/ssh_host_*_key]
        tls: [/etc/myftpd/tls/*.pem]
        audit_logs: [/var/log/myftpd/*]
        users: [myftpd]                          # system accounts the server needs
        key_owners: [myftpd]                     # who may own private keys besides root
        validate: "/usr/sbin/myftpd -t -c {root}/etc/myftpd/myftpd.conf"
        smoke: "/usr/local/bin/myftpd-smoke {root} {user} {work}"

The options are signed into every snapshot's manifest, so the checks after a bare-metal
restore, a drill or a standby sync use the settings the backup was made with. Commands are
split like a shell (no shell runs them); `{root}` is where the node's files are on this host.
"""

from __future__ import annotations

import glob
import os
import shlex
import stat
from pathlib import Path

import yaml

from drkit import errors
from drkit.config import CATEGORIES
from drkit.engines import keys
from drkit.model import (
    CertInfo,
    Check,
    Entry,
    Inventory,
    Manifest,
    SmokeResult,
    failed,
    passed,
    warned,
)
from drkit.paths import entry_on_root, on_root, to_node
from drkit.profiles.common import authfiles, configrefs, keychecks, profile_options, programs
from drkit.profiles.interface import ModuleProfile, Signs

NAME = "generic"
COMMAND_KEYS = ("validate", "smoke")
OTHER_KEYS = ("policy", "users", "key_owners", "timeout_seconds")
PRIVATE_FORBID = 0o077
ANY_FORBID = 0o002


def _where(source: str, key: str) -> str:
    return f"{source}.{key}" if source.startswith("profile_options") else f"{source}: {key}"


def _checked(data: object, source: str) -> dict:
    """Return settings validated; raise ConfigError naming the source and the setting."""
    if not isinstance(data, dict):
        raise errors.ConfigError(f"{source}: expected a mapping of settings")
    known = set(CATEGORIES) | set(COMMAND_KEYS) | set(OTHER_KEYS)
    for key, value in data.items():
        if key not in known:
            raise errors.ConfigError(f"{_where(source, key)}: unknown setting")
        if key in (*CATEGORIES, "users", "key_owners"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise errors.ConfigError(f"{_where(source, key)}: expected a list of strings")
            if key in CATEGORIES and not all(v.startswith("/") for v in value):
                raise errors.ConfigError(f"{_where(source, key)}: globs must be absolute paths")
        elif key in (*COMMAND_KEYS, "policy") and not isinstance(value, str):
            raise errors.ConfigError(f"{_where(source, key)}: expected a string")
        elif key == "timeout_seconds" and not isinstance(value, int | float):
            raise errors.ConfigError(f"{_where(source, key)}: expected a number of seconds")
    if "policy" in data and not data["policy"].startswith("/"):
        raise errors.ConfigError(f"{_where(source, 'policy')}: must be an absolute node path")
    return dict(data)


def settings(root: Path, options: dict | None) -> dict:
    """Return the generic settings: the policy file's (read from the node) with the inline
    options on top (lists of globs are joined); raise ConfigError when one is malformed."""
    inline = _checked(options or {}, "profile_options.generic")
    merged: dict = {}
    if "policy" in inline:
        host = on_root(root, inline["policy"])
        try:
            data = yaml.safe_load(host.read_text())
        except FileNotFoundError:
            raise errors.ConfigError(f"{inline['policy']}: generic policy file not found") from None
        except (OSError, yaml.YAMLError) as exc:
            reason = getattr(exc, "strerror", None) or "not valid YAML"
            raise errors.ConfigError(f"{inline['policy']}: {reason}") from None
        merged = _checked(data or {}, inline["policy"])
        merged.pop("policy", None)
    for key, value in inline.items():
        if isinstance(value, list):
            merged[key] = list(dict.fromkeys([*merged.get(key, []), *value]))
        else:
            merged[key] = value
    return merged


def _expand(root: Path, pattern: str) -> list[Path]:
    return [Path(match) for match in sorted(glob.glob(str(on_root(root, pattern)), recursive=True))]


def inventory(root: Path, smoke_user: str | None, options: dict | None = None) -> Inventory:
    """Return the files the globs of profile_options.generic (and its policy file) match."""
    root = Path(root)
    chosen = settings(root, options)
    found = Inventory()
    if "policy" in chosen:
        found.files.append(Entry(chosen["policy"], "config"))
    globs = {category: chosen.get(category, []) for category in CATEGORIES}
    if not any(globs.values()):
        found.warnings.append(
            "generic: no globs configured (profile_options.generic.config, host_keys, ...)"
        )
    seen = {entry.path for entry in found.files}
    for category, patterns in globs.items():
        for pattern in patterns:
            matches = _expand(root, pattern)
            if not matches:
                found.warnings.append(f"generic: {category} {pattern} matches nothing")
            for host in matches:
                entry = Entry(to_node(root, host), category)
                if entry.path in seen:
                    continue
                seen.add(entry.path)
                (found.dirs if host.is_dir() and not host.is_symlink() else found.files).append(
                    entry
                )
    found.users = list(chosen.get("users", []))
    if smoke_user and smoke_user not in found.users:
        found.users.append(smoke_user)
    return found


# --- checks ------------------------------------------------------------------------------------


def _files(root: Path, patterns: list[str]) -> list[str]:
    """Return the node paths of the files (not directories) the globs match, walking trees."""
    paths: list[str] = []
    for pattern in patterns:
        for host in _expand(root, pattern):
            node = to_node(root, host)
            paths += configrefs.walk_files(root, node) if host.is_dir() else [node]
    return list(dict.fromkeys(paths))


def _owners(root: Path, names: list[str]) -> tuple[int, ...]:
    from drkit.engines import accounts

    entries = accounts.passwd_entries(root)
    uids = [int(entries[n][2]) for n in names if n in entries and entries[n][2].isdigit()]
    return (0, *uids)


def _tls_checks(root: Path, paths: list[str], owners: tuple[int, ...]) -> list[Check]:
    """Every private key among the tls files has its certificate there (or in the same file);
    every server certificate has its key; keys are not readable by others."""
    from cryptography import x509

    keys_by_print: dict[str, str] = {}
    certificates: dict[str, CertInfo] = {}
    results = []
    for path in paths:
        try:
            data = on_root(root, path).read_bytes()[: 1 << 20]
        except OSError as exc:
            results.append(failed(f"tls: {path}", f"unreadable ({exc.strerror})"))
            continue
        key = keys.describe_key(data)
        certificate = keys.describe_certificate(data)
        if key is not None and key.private:
            keys_by_print.setdefault(key.fingerprint, path)
            results.append(
                keychecks.private_key_mode_check(root, path, "tls key", PRIVATE_FORBID, owners)
            )
        elif b"PRIVATE KEY-----" in data:
            results.append(failed(f"tls key: {path}", "does not load (encrypted or damaged)"))
        if certificate is not None:
            with_ca = False
            try:
                loaded = x509.load_pem_x509_certificate(data)
                basic = loaded.extensions.get_extension_for_class(x509.BasicConstraints)
                with_ca = basic.value.ca
            except (ValueError, x509.ExtensionNotFound):
                pass
            if not with_ca:
                certificates[path] = certificate
        elif key is None and b"CERTIFICATE-----" in data:
            results.append(failed(f"tls: {path}", "holds a certificate that does not load"))
    matched = set()
    for path, certificate in certificates.items():
        key_path = keys_by_print.get(certificate.key_fingerprint)
        name = f"tls pair: {path}"
        if key_path is not None:
            matched.add(certificate.key_fingerprint)
            where = "the same file" if key_path == path else key_path
            results.append(passed(name, f"matches the key in {where}"))
        elif keys_by_print:
            results.append(failed(name, "no private key among the tls files matches it"))
        else:
            results.append(warned(name, "no private key among the tls files"))
    for fingerprint, path in keys_by_print.items():
        if fingerprint not in matched and certificates:
            results.append(failed(f"tls key: {path}", "matches no certificate among the tls files"))
    return results


def _host_key_checks(
    root: Path, paths: list[str], manifest: Manifest, owners: tuple[int, ...]
) -> list[Check]:
    """Private host keys: mode and manifest fingerprint; public halves: match a private one."""
    private, public = [], []
    for path in paths:
        info = keychecks.describe_file(root, path)
        (public if info is not None and not info.private else private).append((path, info))
    results = keychecks.host_key_checks(root, [path for path, _ in private], manifest, owners)
    prints = {info.fingerprint for _, info in private if info is not None}
    for path, info in public:
        name = f"host key pair: {path}"
        if info.fingerprint in prints:
            results.append(passed(name, f"matches its private key ({info.fingerprint})"))
        else:
            results.append(failed(name, f"{info.fingerprint} matches no private host key"))
    return results


def _command(
    chosen: dict, key: str, root: Path, name: str, extra: dict[str, str] | None = None
) -> Check:
    """Run the validate or smoke command; exit 0 passes."""
    values = {"root": str(root), **(extra or {})}
    argv = []
    for part in shlex.split(chosen[key]):
        for placeholder, value in values.items():
            part = part.replace("{" + placeholder + "}", value)
        argv.append(part)
    if not argv:
        return failed(name, f"profile_options.generic.{key} is empty")
    return programs.command_check(name, argv, root, float(chosen.get("timeout_seconds", 120)))


@profile_options.options_fail_as("generic: options")
def checks(root: Path, manifest: Manifest) -> list[Check]:
    """Return the checks of a restored (or live) node against the options in its manifest."""
    root = Path(root)
    chosen = settings(root, profile_options.options_of(manifest, NAME))
    results = []
    patterns = 0
    for category in CATEGORIES:
        for pattern in chosen.get(category, []):
            patterns += 1
            if not _expand(root, pattern):
                results.append(failed(f"generic: {category} {pattern}", "matches nothing"))
    if not patterns:
        results.append(failed("generic: globs", "profile_options.generic names no files"))
    elif not results:
        results.append(passed("generic: named files", f"all {patterns} globs match"))
    every = _files(root, [p for c in CATEGORIES for p in chosen.get(c, [])])
    loose = []
    for path in every:
        try:
            mode = stat.S_IMODE(os.lstat(entry_on_root(root, path)).st_mode)
        except OSError:
            continue
        if mode & ANY_FORBID and not entry_on_root(root, path).is_symlink():
            loose.append(path)
    if loose:
        more = f" (and {len(loose) - 1} more)" if len(loose) > 1 else ""
        results.append(failed("generic: modes", f"{loose[0]} is writable by everyone{more}"))
    elif every:
        results.append(passed("generic: modes", f"{len(every)} files, none writable by everyone"))
    owners = _owners(root, chosen.get("key_owners", []))
    host_keys = _files(root, chosen.get("host_keys", []))
    results += _host_key_checks(root, host_keys, manifest, owners)
    for path in _files(root, chosen.get("user_keys", [])):
        try:
            listed = keys.authorized_keys(on_root(root, path).read_bytes())
        except OSError:
            continue
        listed = listed or authfiles.rfc4716_keys(on_root(root, path).read_text(errors="replace"))
        name = f"user keys: {path}"
        results.append(
            passed(name, f"{len(listed)} key(s) parse")
            if listed
            else failed(name, "no key parses (OpenSSH authorized_keys or RFC 4716)")
        )
    tls = _files(root, chosen.get("tls", []))
    results += _tls_checks(root, tls, owners)
    results += keychecks.certificate_checks(root, manifest, tls)
    if chosen.get("validate"):
        results.append(_command(chosen, "validate", root, "config: generic validate"))
    return results


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """Run profile_options.generic.smoke ({root}, {user}, {work}): its exit 0 proves a login
    and a round trip (the command's own contract); without one, not judged."""
    root = Path(root)
    try:
        chosen = settings(root, profile_options.options_of(manifest, NAME))
    except errors.ConfigError as exc:
        result = SmokeResult(profile=NAME)
        result.add(failed("smoke: generic", exc.message))
        return result
    if not chosen.get("smoke"):
        reason = "no smoke command configured (profile_options.generic.smoke): no login tried"
        return SmokeResult.not_judged(NAME, reason)
    extra = {"user": user, "work": str(Path(work_dir).resolve())}
    ran = _command(chosen, "smoke", root, "smoke: generic", extra)
    result = SmokeResult(profile=NAME)
    result.session("none", ran, ran)
    return result


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """None: the operator's commands get the restored root as {root}; nothing is rewritten."""
    return None


# Never detected (no config of its own): a generic node is described by its options.
PROFILE = ModuleProfile(
    NAME, Signs(()), inventory, checks, smoke, sandbox_config, reads_config=False
)
