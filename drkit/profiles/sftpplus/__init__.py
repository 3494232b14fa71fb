"""SFTPPlus nodes: read server.ini (and server.override.ini) as the product does, back up every
file it names, and check a restore statically.

SFTPPlus is not installable on drkit's hosts, so nothing here starts it: the checks parse the
INI, find every referenced file with safe modes, load and match keys and certificates, compare
host keys with the manifest, look for `[server] uuid`, and run the product's own validator
(`bin/admin-commands.sh validate`, configurable in profile_options.sftpplus) where it exists.
The smoke run says plainly that no login was tried. Settings come from policies/sftpplus.yaml.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shlex
import stat
from pathlib import Path

from drkit.engines import accounts, keys
from drkit.model import Check, Inventory, Manifest, SmokeResult, failed, passed, warned
from drkit.paths import on_root
from drkit.profiles.common import configrefs, keychecks, profile_options, programs
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.interface import ModuleProfile, Signs
from drkit.profiles.sftpplus.ini import Named, is_path, read_config, references
from drkit.profiles.sftpplus.policy import NAME, Options, policy, settings


def _service_user(root: Path, name: str) -> int | None:
    entry = accounts.passwd_entries(root).get(name)
    return entry.uid_number if entry else None


def inventory(root: Path, smoke_user: str | None, options: Options) -> Inventory:
    """Return what makes this SFTPPlus node: configuration/, what server.ini names, extension/,
    log/, account keys and homes, the systemd unit and the service user."""
    pol, root = policy(), Path(root)
    chosen = options
    install = chosen.install_dir
    config = read_config(root, install)
    if not config.files:
        return Inventory(warnings=[f"sftpplus: no {install}/{pol.config.main} found"])
    warnings = []
    if config.error:
        warnings.append(f"sftpplus: {config.error}: only the installation's trees are taken")
    named = references(root, config) if config.parser else Named()
    refs = [ref for ref in named.refs if not ref.path.startswith("vault-items/")]
    warnings += [
        f"sftpplus: {ref.directive} names vault item {ref.path.split('/', 1)[1]} ({ref.where}), "
        "which is not defined"
        for ref in named.refs
        if ref.path.startswith("vault-items/")
    ]
    for name, tree in pol.trees.items():
        refs.append(
            Ref(f"{install}/{name}", tree.category, name, "installation", tree.required, True)
        )
    refs += [Ref(unit, "config", "unit", "systemd", False) for unit in pol.units]
    found = configrefs.inventory_from_refs(root, config.files, refs, warnings)
    found.databases = named.databases
    found.owned_globs = [
        f"{install}/{pol.config.main}",
        f"{install}/{pol.config.override}",
    ]
    found.users = [chosen.service_user] if _service_user(root, chosen.service_user) else []
    if smoke_user and smoke_user not in found.users:
        found.users.append(smoke_user)
    return found


# --- checks ------------------------------------------------------------------------------------


def _mode_check(root: Path, path: str, label: str, forbid: int, owners: tuple[int, ...]) -> Check:
    return keychecks.private_key_mode_check(root, path, label, forbid, owners)


def _inline_checks(named: Named) -> list[Check]:
    """Inline PEM in server.ini: each must load; a key and certificate held together match."""
    results = []
    for label, _category, pem in named.inline:
        data = pem.encode()
        name = f"sftpplus: inline {label}"
        certificate, key = keys.describe_certificate(data), keys.describe_key(data)
        if certificate is None and key is None:
            results.append(failed(name, "holds neither a key nor a certificate that loads"))
        elif certificate and key and key.fingerprint != certificate.key_fingerprint:
            results.append(failed(name, "its key does not match its certificate"))
        else:
            what = " and ".join(
                part
                for part, present in (("certificate", certificate), ("key", key))
                if present is not None
            )
            results.append(
                passed(name, f"{what} loads" + (", matching" if certificate and key else ""))
            )
    return results


def _validate_check(root: Path, chosen: Options) -> Check:
    """Run the configured validator (the product's own by default) from the install dir."""
    name = "config: sftpplus validate"
    install_host = on_root(root, chosen.install_dir)
    command = chosen.validate_command.strip()
    if not command:
        return warned(name, "no validate command configured: static checks only")
    argv = [
        part.replace("{root}", str(root)).replace("{install}", str(install_host))
        for part in shlex.split(command)
    ]
    program = argv[0] if argv[0].startswith("/") else str(install_host / argv[0])
    if not Path(program).is_file():
        shown = argv[0] if argv[0].startswith("/") else f"{chosen.install_dir}/{argv[0]}"
        detail = f"{shown} is not on this host (SFTPPlus is not installed here)"
        if chosen.validate_explicit:
            return failed(name, detail)
        return warned(name, detail + ": static checks only")
    timeout = chosen.validate_timeout_seconds
    return programs.command_check(name, [program, *argv[1:]], root, timeout, cwd=install_host)


@profile_options.options_fail_as("sftpplus: options")
def checks(root: Path, manifest: Manifest) -> list[Check]:
    """Return the static checks of a restored (or live) SFTPPlus node against its manifest."""
    pol, root = policy(), Path(root)
    chosen = settings(profile_options.options_of(manifest, NAME))
    install = chosen.install_dir
    config = read_config(root, install)
    main = f"{install}/{pol.config.main}"
    if not config.files:
        return [failed("sftpplus: server.ini", f"{main} is missing")]
    if config.error:
        return [failed("sftpplus: server.ini parses", config.error), _validate_check(root, chosen)]
    results = [passed("sftpplus: server.ini parses", ", ".join(config.files))]
    parser = config.parser
    server = parser["server"] if parser is not None and parser.has_section("server") else None
    uuid = (server.get("uuid") or "").strip() if server is not None else ""
    if uuid:
        results.append(passed("sftpplus: [server] uuid", uuid))
    else:
        results.append(
            failed("sftpplus: [server] uuid", "missing: the node would start as a new server")
        )
    named = references(root, config)
    missing_vault = [ref for ref in named.refs if ref.path.startswith("vault-items/")]
    results += [
        failed(
            f"sftpplus: {ref.directive}",
            f"names vault item {ref.path[12:]}, not defined ({ref.where})",
        )
        for ref in missing_vault
    ]
    results += configrefs.named_files_check(
        root, [ref for ref in named.refs if ref not in missing_vault], "sftpplus"
    )
    uid = _service_user(root, chosen.service_user)
    owners = (0,) if uid is None else (0, uid)
    private_forbid, any_forbid = pol.modes.private_forbid, pol.modes.any_forbid
    private = set(named.secrets)
    for path in named.tls_files:
        info = keychecks.describe_file(root, path)
        if info is not None and info.private:
            private.add(path)
    if any(
        (key := keys.describe_key(pem.encode())) is not None and key.private
        for _, _, pem in named.inline
    ):
        private.update(config.files)
    for path in sorted(private - set(named.host_keys)):
        if configrefs.is_file(root, path):
            results.append(_mode_check(root, path, "secret", private_forbid, owners))
    for path in config.files:
        with contextlib.suppress(OSError):
            if stat.S_IMODE(os.stat(on_root(root, path)).st_mode) & any_forbid:
                results.append(failed(f"sftpplus: mode of {path}", "writable by everyone"))
    results += keychecks.host_key_checks(root, named.host_keys, manifest, owners)
    for certificate, key_path in dict.fromkeys(named.tls_pairs):
        if configrefs.is_file(root, certificate):
            results.append(keychecks.certificate_pair_check(root, certificate, key_path))
    results += keychecks.certificate_checks(root, manifest, named.tls_files)
    results += _inline_checks(named)
    results.append(_validate_check(root, chosen))
    return results


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """SFTPPlus cannot run here: not judged, with the policy's reason (never a pass)."""
    return SmokeResult.not_judged(NAME, " ".join(policy().smoke.reason.split()))


def main_config(root: Path, options: Options) -> str | None:
    """Return <install_dir>/configuration/server.ini when it is on root, else None."""
    path = f"{options.install_dir}/{policy().config.main}"
    return path if on_root(root, path).is_file() else None


def sandbox_config(root: Path, out_dir: Path) -> Path | None:
    """None: SFTPPlus reads server.ini relative to its install dir; nothing is rewritten."""
    return None


SIGNS = Signs(
    ("/opt/sftpplus/configuration/server.ini",),
    ("/opt/sftpplus/bin/admin-commands.sh",),
    ("sftpplus.service", "sftpplus-server.service"),
)


def login_homes(root: Path, manifest: Manifest) -> dict[str, str]:
    """Return {account: node path} of each of the manifest's accounts' home folder: the
    home_folder_path of the [accounts/ID] section that names it (else of its group), or its
    passwd home when server.ini names none."""
    root = Path(root)
    config = read_config(root, settings(profile_options.options_of(manifest, NAME)).install_dir)
    named = {(item.get("name") or "").strip(): item for _, item in config.sections("accounts")}
    groups = dict(config.sections("groups"))
    passwd = accounts.passwd_entries(root)
    homes = {}
    for name in [account.name for account in manifest.accounts]:
        section = named.get(name)
        home = (section.get("home_folder_path") or "").strip() if section is not None else ""
        if not is_path(home) and section is not None:
            group = groups.get((section.get("group") or "").strip())
            home = (group.get("home_folder_path") or "").strip() if group is not None else ""
        if is_path(home):
            homes[name] = config.node_path(home)
        elif name in passwd and passwd[name].home.startswith("/"):
            homes[name] = posixpath.normpath(passwd[name].home)
    return homes


PROFILE = ModuleProfile(
    NAME, SIGNS, inventory, checks, smoke, sandbox_config, ("server.ini:[server]/uuid",),
    main_config_of=main_config, login_homes_of=login_homes, options_model=Options,
    settings_of=settings,
)  # fmt: skip
