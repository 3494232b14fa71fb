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
        databases: [/var/lib/myftpd/users.sqlite]  # SQLite: copied with the online backup API
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
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BeforeValidator, Field, ValidationError

from drkit import errors
from drkit.config import CATEGORIES
from drkit.engines import keys
from drkit.model import (
    CertInfo,
    Check,
    Database,
    Entry,
    Inventory,
    KeyInfo,
    Manifest,
    SmokeResult,
    failed,
    passed,
    warned,
)
from drkit.paths import entry_on_root, on_root, to_node
from drkit.profiles.common import authfiles, configrefs, keychecks, profile_options, programs
from drkit.profiles.interface import ModuleProfile, ProfileOptions, Signs

NAME = "generic"
PRIVATE_FORBID = 0o077
ANY_FORBID = 0o002


def _strings(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a list of strings")
    return list(value)


def _globs(value: object) -> list[str]:
    globs = _strings(value)
    if not all(glob.startswith("/") for glob in globs):
        raise ValueError("globs must be absolute paths")
    return globs


def _command_text(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number of seconds")
    return float(value)


def _absolute(value: object) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError("must be an absolute node path")
    return value


Globs = Annotated[list[str], BeforeValidator(_globs)]
Names = Annotated[list[str], BeforeValidator(_strings)]
Command = Annotated[str | None, BeforeValidator(_command_text)]


class Options(ProfileOptions):
    """profile_options.generic, and the policy file on the node it names (the same keys but
    policy): node path globs by category, accounts, and the validate and smoke commands."""

    policy: Annotated[str | None, BeforeValidator(_absolute)] = Field(
        None, description="a YAML file on the node with more of these settings (backed up)"
    )
    config: Globs = Field([], description="globs of the server's configuration")
    host_keys: Globs = Field([], description="globs of SSH host keys (private and .pub)")
    user_keys: Globs = Field([], description="globs of users' authorized keys")
    accounts: Globs = Field([], description="globs of the server's own account stores")
    tls: Globs = Field([], description="globs of TLS keys, certificates and chains")
    scripts: Globs = Field([], description="globs of programs the server runs")
    audit_logs: Globs = Field([], description="globs of transfer and audit logs")
    chroot: Globs = Field([], description="globs of chroot and home trees")
    databases: Globs = Field(
        [], description="globs of SQLite databases the server writes (online-backup copies)"
    )
    users: Names = Field([], description="system accounts the server needs")
    key_owners: Names = Field([], description="who may own private keys besides root")
    validate_command: Command = Field(
        None, alias="validate", description="checks the config: {root} is the restored root"
    )
    smoke_command: Command = Field(
        None, alias="smoke", description="proves a login: {root}, {user} and {work} filled in"
    )
    timeout_seconds: Annotated[float, BeforeValidator(_seconds)] = Field(
        120.0, description="how long validate and smoke may run"
    )

    def globs(self) -> dict[str, list[str]]:
        """Return {category: globs} for every backup category."""
        return {category: list(getattr(self, category)) for category in CATEGORIES}


def _validated(data: object, source: str) -> Options:
    """Return settings from source validated; raise ConfigError naming the source and setting."""
    inline = source.startswith("profile_options")
    if not isinstance(data, Mapping):
        raise errors.ConfigError(f"{source}: expected a mapping of settings")
    try:
        return Options.model_validate(data)
    except ValidationError as exc:
        raise profile_options.refused(exc, f"{source}." if inline else f"{source}: ") from None


def parse_options(given: Mapping[str, object] | None) -> Options:
    """Return profile_options.generic validated; raise ConfigError naming the setting."""
    return _validated(dict(given or {}), f"profile_options.{NAME}")


def settings(root: Path, options: Options) -> Options:
    """Return the generic settings: the policy file's (read from the node) with the inline
    options on top (lists of globs are joined); raise ConfigError when one is malformed."""
    if options.policy is None:
        return options
    try:
        data = yaml.safe_load(on_root(root, options.policy).read_text())
    except FileNotFoundError:
        raise errors.ConfigError(f"{options.policy}: generic policy file not found") from None
    except (OSError, yaml.YAMLError) as exc:
        reason = getattr(exc, "strerror", None) or "not valid YAML"
        raise errors.ConfigError(f"{options.policy}: {reason}") from None
    merged = _validated(data or {}, options.policy).model_dump(by_alias=True, exclude_unset=True)
    merged.pop("policy", None)
    for key, value in options.model_dump(by_alias=True, exclude_unset=True).items():
        if isinstance(value, list):
            merged[key] = list(dict.fromkeys([*merged.get(key, []), *value]))
        else:
            merged[key] = value
    return Options.model_validate(merged)


def _expand(root: Path, pattern: str) -> list[Path]:
    return [Path(match) for match in sorted(glob.glob(str(on_root(root, pattern)), recursive=True))]


def inventory(root: Path, smoke_user: str | None, options: Options) -> Inventory:
    """Return the files the globs of profile_options.generic (and its policy file) match."""
    root = Path(root)
    chosen = settings(root, options)
    found = Inventory()
    if chosen.policy is not None:
        found.files.append(Entry(chosen.policy, "config"))
    globs = chosen.globs()
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
    found.databases = [
        Database("sqlite", "profile_options.generic.databases", path=entry.path)
        for entry in found.files
        if entry.category == "databases"
    ]
    found.users = list(chosen.users)
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
    uids = [entries[n].uid_number for n in names if n in entries]
    return (0, *[uid for uid in uids if uid is not None])


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
    private: list[tuple[str, KeyInfo | None]] = []
    public: list[tuple[str, KeyInfo]] = []
    for path in paths:
        info = keychecks.describe_file(root, path)
        if info is not None and not info.private:
            public.append((path, info))
        else:
            private.append((path, info))
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
    command: str,
    key: str,
    timeout: float,
    root: Path,
    name: str,
    extra: dict[str, str] | None = None,
) -> Check:
    """Run the validate or smoke command (profile_options.generic.<key>); exit 0 passes."""
    values = {"root": str(root), **(extra or {})}
    argv = []
    for part in shlex.split(command):
        for placeholder, value in values.items():
            part = part.replace("{" + placeholder + "}", value)
        argv.append(part)
    if not argv:
        return failed(name, f"profile_options.generic.{key} is empty")
    return programs.command_check(name, argv, root, timeout)


@profile_options.options_fail_as("generic: options")
def checks(root: Path, manifest: Manifest) -> list[Check]:
    """Return the checks of a restored (or live) node against the options in its manifest."""
    root = Path(root)
    chosen = settings(root, parse_options(profile_options.options_of(manifest, NAME)))
    globs = chosen.globs()
    results = []
    patterns = 0
    for category, category_globs in globs.items():
        for pattern in category_globs:
            patterns += 1
            if not _expand(root, pattern):
                results.append(failed(f"generic: {category} {pattern}", "matches nothing"))
    if not patterns:
        results.append(failed("generic: globs", "profile_options.generic names no files"))
    elif not results:
        results.append(passed("generic: named files", f"all {patterns} globs match"))
    every = _files(root, [pattern for found in globs.values() for pattern in found])
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
    owners = _owners(root, chosen.key_owners)
    host_keys = _files(root, chosen.host_keys)
    results += _host_key_checks(root, host_keys, manifest, owners)
    for path in _files(root, chosen.user_keys):
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
    tls = _files(root, chosen.tls)
    results += _tls_checks(root, tls, owners)
    results += keychecks.certificate_checks(root, manifest, tls)
    if chosen.validate_command:
        command, timeout = chosen.validate_command, chosen.timeout_seconds
        results.append(_command(command, "validate", timeout, root, "config: generic validate"))
    return results


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """Run profile_options.generic.smoke ({root}, {user}, {work}): its exit 0 proves a login
    and a round trip (the command's own contract); without one, not judged."""
    root = Path(root)
    try:
        chosen = settings(root, parse_options(profile_options.options_of(manifest, NAME)))
    except errors.ConfigError as exc:
        result = SmokeResult(profile=NAME)
        result.add(failed("smoke: generic", exc.message))
        return result
    if not chosen.smoke_command:
        reason = "no smoke command configured (profile_options.generic.smoke): no login tried"
        return SmokeResult.not_judged(NAME, reason)
    extra = {"user": user, "work": str(Path(work_dir).resolve())}
    command, timeout = chosen.smoke_command, chosen.timeout_seconds
    ran = _command(command, "smoke", timeout, root, "smoke: generic", extra)
    result = SmokeResult(profile=NAME)
    result.session("none", ran, ran)
    return result


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """None: the operator's commands get the restored root as {root}; nothing is rewritten."""
    return None


# Never detected (no config of its own): a generic node is described by its options.
PROFILE = ModuleProfile(
    NAME,
    Signs(()),
    inventory,
    checks,
    smoke,
    sandbox_config,
    reads_config=False,
    options_model=Options,
    settings_of=parse_options,
)
