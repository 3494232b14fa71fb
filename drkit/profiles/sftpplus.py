"""SFTPPlus nodes: read server.ini (and server.override.ini) as the product does, back up every
file it names, and check a restore statically.

SFTPPlus is not installable on drkit's hosts, so nothing here starts it: the checks parse the
INI, find every referenced file with safe modes, load and match keys and certificates, compare
host keys with the manifest, look for `[server] uuid`, and run the product's own validator
(`bin/admin-commands.sh validate`, configurable in profile_options.sftpplus) where it exists.
The smoke run says plainly that no login was tried. Settings come from policies/sftpplus.yaml.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import posixpath
import re
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from drkit import errors
from drkit.engines import accounts, keys
from drkit.model import Check, Inventory, Manifest, SmokeResult, failed, passed, warned
from drkit.paths import on_root
from drkit.profiles.common import configrefs, keychecks, policies, profile_options, programs
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.interface import ModuleProfile, Signs

NAME = "sftpplus"
OPTION_KEYS = ("install_dir", "service_user", "validate", "validate_timeout_seconds")


def policy() -> dict:
    return policies.policy(NAME)


def settings(options: dict | None) -> dict:
    """Return the policy's defaults with profile_options.sftpplus on top; raise ConfigError
    naming the setting when one is unknown or malformed."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(OPTION_KEYS))
    if unknown:
        raise errors.ConfigError(f"profile_options.sftpplus.{unknown[0]}: unknown setting")
    merged = {**policy()["defaults"], **options}
    if not str(merged["install_dir"]).startswith("/"):
        raise errors.ConfigError("profile_options.sftpplus.install_dir: must be an absolute path")
    merged["install_dir"] = posixpath.normpath(str(merged["install_dir"]))
    merged["validate_explicit"] = "validate" in options
    return merged


# --- reading server.ini -----------------------------------------------------------------------


@dataclass(frozen=True)
class VaultItem:
    """A `[vault-items/ID]`: its content is an external file or inline PEM."""

    id: str
    type: str
    path: str | None
    inline: str | None
    where: str


@dataclass
class Config:
    """server.ini with server.override.ini applied, or why it could not be read."""

    install: str
    files: list[str] = field(default_factory=list)
    parser: configparser.ConfigParser | None = None
    error: str | None = None
    source: dict[tuple[str, str], str] = field(default_factory=dict)

    def sections(self, kind: str) -> list[tuple[str, configparser.SectionProxy]]:
        """Return [(id, section)] of every `[kind/ID]` section."""
        if self.parser is None:
            return []
        prefix = f"{kind}/"
        return [
            (name[len(prefix) :], self.parser[name])
            for name in self.parser.sections()
            if name.startswith(prefix)
        ]

    def where(self, section: str, key: str) -> str:
        source = self.source.get((section, key), self.files[0] if self.files else "?")
        return f"{source} [{section}] {key}"

    def node_path(self, value: str) -> str:
        """Return a server.ini path as a node path (relative ones are under the install dir)."""
        value = value.strip().strip('"')
        return posixpath.normpath(value if value.startswith("/") else f"{self.install}/{value}")


def _parser() -> configparser.ConfigParser:
    # No interpolation: values hold '%' and '$' (password hashes, templates) that are not ours.
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # keys are case-sensitive in SFTPPlus
    return parser


def read_config(root: Path, install: str) -> Config:
    """Read server.ini and server.override.ini from the node's installation directory."""
    pol = policy()["config"]
    config = Config(install=install)
    parser = _parser()
    for relative in (pol["main"], pol["override"]):
        node = f"{install}/{relative}"
        host = on_root(root, node)
        if not host.is_file():
            continue
        config.files.append(node)
        single = _parser()
        try:
            text = host.read_text(errors="replace")
            single.read_string(text, source=node)
            parser.read_string(text, source=node)
        except (configparser.Error, OSError) as exc:
            message = str(exc).replace(str(host), node).splitlines()
            config.error = f"{node}: {' '.join(line.strip() for line in message)[:300]}"
            return config
        for section in single.sections():
            for key in single[section]:
                config.source[(section, key)] = node
    config.parser = parser if config.files else None
    return config


def _words(value: str) -> list[str]:
    return [word for word in re.split(r"[\s,]+", value.strip()) if word]


def vault_items(config: Config) -> dict[str, VaultItem]:
    """Return the `[vault-items/ID]` sections by id."""
    prefix = policy()["external_prefix"]
    found = {}
    for item_id, section in config.sections("vault-items"):
        content = (section.get("content") or "").strip()
        where = config.where(f"vault-items/{item_id}", "content")
        path = inline = None
        if content.startswith(prefix):
            path = config.node_path(content[len(prefix) :])
        elif content and policy()["placeholder_prefix"] not in content:
            inline = content  # ${MOZILLA_CA_ROOTS} and the like: bundles the product ships
        found[item_id] = VaultItem(item_id, section.get("type", ""), path, inline, where)
    return found


def _all_sections(config: Config) -> list[tuple[str, configparser.SectionProxy]]:
    if config.parser is None:
        return []
    return [(name, config.parser[name]) for name in config.parser.sections()]


@dataclass
class Named:
    """What server.ini names: file references, the vault items used as host keys and TLS,
    inline secrets, and certificate/key pairs to compare."""

    refs: list[Ref] = field(default_factory=list)
    host_keys: list[str] = field(default_factory=list)
    tls_pairs: list[tuple[str, str | None]] = field(default_factory=list)
    tls_files: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    inline: list[tuple[str, str, str]] = field(default_factory=list)  # (label, category, PEM)
    warnings: list[str] = field(default_factory=list)


def _category_of_content(root: Path, path: str) -> str:
    """A vault file that no key names: tls when it holds a key or certificate, else config."""
    with contextlib.suppress(OSError):
        data = on_root(root, path).read_bytes()[: 1 << 20]
        if keys.describe_key(data) or keys.describe_certificate(data):
            return "tls"
    return "config"


def is_path(value: str) -> bool:
    """Return whether a server.ini value names a file: not empty, not a keyword (Disabled,
    crl-distribution-points, ...), no ${...} placeholder, no inline PEM, no URL."""
    pol = policy()
    value = value.strip().strip('"')
    return bool(value) and not (
        value.lower() in pol["keywords"]
        or pol["placeholder_prefix"] in value
        or value.startswith("-----BEGIN")
        or "://" in value
    )


# Options whose files references() reads by section kind, not by name alone.
_SECTION_OPTIONS = frozenset(
    {"path", "home_folder_path", "ssh_authorized_keys_path", "external_vault_file"}
)


def _file_option_refs(config: Config, section_name: str, section, named: Named) -> None:
    """The file_options of one section (any kind): host keys, TLS files, programs, files."""
    pol = policy()
    for key, rule in pol["file_options"].items():
        value = (section.get(key) or "").strip()
        where = config.where(section_name, key)
        if value.startswith("-----BEGIN"):
            named.inline.append((f"[{section_name}] {key}", rule["category"], value))
            continue
        if not is_path(value):
            continue
        role, category = rule["role"], rule["category"]
        if role == "program":
            program = config.node_path(shlex.split(value)[0])
            named.refs.append(Ref(program, category, key, where, True))
            continue
        paths = [config.node_path(word) for word in _words(value)]
        for path in paths:
            named.refs.append(Ref(path, category, key, where, True, role == "dir"))
            if role == "host_key":
                named.host_keys.append(path)
            elif category == "tls":
                named.tls_files.append(path)
            if role == "key":
                named.secrets.append(path)
        if role == "certificate" and paths:
            key_value = (section.get("ssl_key") or "").strip()
            key_path = config.node_path(key_value) if is_path(key_value) else None
            named.tls_pairs.append((paths[0], key_path))
    handled = set(pol["file_options"]) | set(pol["vault_references"]) | _SECTION_OPTIONS
    handled |= set(pol["handler_program_keys"])
    for key in section:
        if key in handled or not key.endswith(tuple(pol["generic_suffixes"])):
            continue
        value = (section.get(key) or "").strip()
        if is_path(value):
            where = config.where(section_name, key)
            named.refs.append(Ref(config.node_path(value), "config", key, where, False))


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "on", "1")


def _no(value: str | None) -> bool:
    return (value or "").strip().lower() in ("no", "false", "off", "0")


def _made_by_product(config: Config, kind: str, section) -> str | None:
    """Why SFTPPlus makes (or never needs) this account's or group's home folder itself, or
    None: a disabled item logs nobody in; `create_home_folder = yes`, its own or its group's
    (an account's `group` names a group by id or name), creates the folder at first login."""
    if _no(section.get("enabled")):
        return "disabled: no login needs it"
    own = section.get("create_home_folder")
    if own is not None:
        return "create_home_folder = yes: the product creates it" if _yes(own) else None
    if kind != "accounts":
        return None
    groups = dict(config.sections("groups"))
    wanted = (section.get("group") or "").strip()
    group = groups.get(wanted) or next(
        (g for g in groups.values() if (g.get("name") or "").strip() == wanted), None
    )
    if group is not None and _yes(group.get("create_home_folder")):
        return f"create_home_folder = yes in its group {wanted}: the product creates it"
    return None


def _home_refs(config: Config, kind: str, named: Named) -> None:
    """home_folder_path and ssh_authorized_keys_path of [accounts/ID] and [groups/ID]; a home
    the product makes itself (or a disabled item's) is backed up when present, never required."""
    scratch = set(policy()["scratch_dirs"])
    for item_id, section in config.sections(kind):
        section_name = f"{kind}/{item_id}"
        value = (section.get("ssh_authorized_keys_path") or "").strip()
        if is_path(value):
            where = config.where(section_name, "ssh_authorized_keys_path")
            path = config.node_path(value)
            named.refs.append(Ref(path, "user_keys", "ssh_authorized_keys_path", where, True))
        home = (section.get("home_folder_path") or "").strip()
        if is_path(home) and config.node_path(home) not in scratch:
            where = config.where(section_name, "home_folder_path")
            made = _made_by_product(config, kind, section)
            if made:
                where = f"{where} ({made})"
            path = config.node_path(home)
            named.refs.append(Ref(path, "chroot", "home_folder_path", where, not made, True))


def references(root: Path, config: Config) -> Named:
    """Return everything server.ini names, with categories; node paths throughout."""
    pol = policy()
    named = Named()
    vault = vault_items(config)
    used: dict[str, str] = {}

    for section_name, section in _all_sections(config):
        for key, category in pol["vault_references"].items():
            if key not in section:
                continue
            for item_id in _words(section[key]):
                item = vault.get(item_id)
                if item is None:
                    named.refs.append(
                        Ref(
                            f"vault-items/{item_id}",
                            category,
                            key,
                            config.where(section_name, key),
                            True,
                        )
                    )
                    continue
                used[item_id] = category
        _file_option_refs(config, section_name, section, named)

    for item_id, item in vault.items():
        category = used.get(item_id)
        label = f"[vault-items/{item_id}]"
        if item.inline is not None:
            named.inline.append((label, category or "config", item.inline))
            continue
        if item.path is None:
            continue
        if category is None:
            category = _category_of_content(root, item.path)
        named.refs.append(Ref(item.path, category, "vault content", item.where, True))
        named.secrets.append(item.path)
        if category == "host_keys":
            named.host_keys.append(item.path)
        elif category == "tls":
            named.tls_files.append(item.path)
            if used.get(item_id) == "tls":
                named.tls_pairs.append((item.path, None))

    for handler_id, section in config.sections("event-handlers"):
        section_name = f"event-handlers/{handler_id}"
        kind = (section.get("type") or "").strip()
        if kind in pol["log_handler_types"]:
            value = (section.get("path") or "").strip()
            if is_path(value):
                where = config.where(section_name, "path")
                named.refs.append(
                    Ref(config.node_path(value), "audit_logs", "event handler", where, False)
                )
            continue
        for key in pol["handler_program_keys"]:
            value = (section.get(key) or "").strip()
            if is_path(value):
                program = shlex.split(value)[0]
                where = config.where(section_name, key)
                named.refs.append(Ref(config.node_path(program), "scripts", key, where, True))
                break

    _home_refs(config, "accounts", named)
    _home_refs(config, "groups", named)

    for auth_id, section in config.sections("authentications"):
        section_name = f"authentications/{auth_id}"
        value = (section.get("path") or "").strip()
        if is_path(value):
            where = config.where(section_name, "path")
            named.refs.append(Ref(config.node_path(value), "accounts", "path", where, True))
        service = (section.get("pam_service") or "").strip()
        if service and is_path(service) and "/" not in service:
            where = config.where(section_name, "pam_service")
            pam = posixpath.join(pol["pam_dir"], service)
            named.refs.append(Ref(pam, "config", "pam_service", where, False))

    for database_id, section in config.sections("databases"):
        value = (section.get("path") or "").strip()
        if is_path(value):
            where = config.where(f"databases/{database_id}", "path")
            named.refs.append(Ref(config.node_path(value), "audit_logs", "path", where, False))

    for resource_id, section in config.sections("resources"):
        section_name = f"resources/{resource_id}"
        for key in ("external_vault_file", "path"):
            value = (section.get(key) or "").strip()
            if is_path(value):
                path = config.node_path(value)
                named.refs.append(Ref(path, "config", key, config.where(section_name, key), True))
                if key == "external_vault_file":
                    named.secrets.append(path)
    named.refs = list(dict.fromkeys(named.refs))
    return named


def _service_user(root: Path, name: str) -> int | None:
    fields = accounts.passwd_entries(root).get(name)
    return int(fields[2]) if fields and fields[2].isdigit() else None


def inventory(root: Path, smoke_user: str | None, options: dict | None = None) -> Inventory:
    """Return what makes this SFTPPlus node: configuration/, what server.ini names, extension/,
    log/, account keys and homes, the systemd unit and the service user."""
    pol, root = policy(), Path(root)
    chosen = settings(options)
    install = chosen["install_dir"]
    config = read_config(root, install)
    if not config.files:
        return Inventory(warnings=[f"sftpplus: no {install}/{pol['config']['main']} found"])
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
    for name, tree in pol["trees"].items():
        refs.append(
            Ref(f"{install}/{name}", tree["category"], name, "installation", tree["required"], True)
        )
    refs += [Ref(unit, "config", "unit", "systemd", False) for unit in pol["units"]]
    found = configrefs.inventory_from_refs(root, config.files, refs, warnings)
    found.owned_globs = [
        f"{install}/{pol['config']['main']}",
        f"{install}/{pol['config']['override']}",
    ]
    found.users = [chosen["service_user"]] if _service_user(root, chosen["service_user"]) else []
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


def _validate_check(root: Path, chosen: dict) -> Check:
    """Run the configured validator (the product's own by default) from the install dir."""
    name = "config: sftpplus validate"
    install_host = on_root(root, chosen["install_dir"])
    command = str(chosen.get("validate") or "").strip()
    if not command:
        return warned(name, "no validate command configured: static checks only")
    argv = [
        part.replace("{root}", str(root)).replace("{install}", str(install_host))
        for part in shlex.split(command)
    ]
    program = argv[0] if argv[0].startswith("/") else str(install_host / argv[0])
    if not Path(program).is_file():
        shown = argv[0] if argv[0].startswith("/") else f"{chosen['install_dir']}/{argv[0]}"
        detail = f"{shown} is not on this host (SFTPPlus is not installed here)"
        if chosen["validate_explicit"]:
            return failed(name, detail)
        return warned(name, detail + ": static checks only")
    timeout = float(chosen["validate_timeout_seconds"])
    return programs.command_check(name, [program, *argv[1:]], root, timeout, cwd=install_host)


@profile_options.options_fail_as("sftpplus: options")
def checks(root: Path, manifest: Manifest) -> list[Check]:
    """Return the static checks of a restored (or live) SFTPPlus node against its manifest."""
    pol, root = policy(), Path(root)
    chosen = settings(profile_options.options_of(manifest, NAME))
    install = chosen["install_dir"]
    config = read_config(root, install)
    main = f"{install}/{pol['config']['main']}"
    if not config.files:
        return [failed("sftpplus: server.ini", f"{main} is missing")]
    if config.error:
        return [failed("sftpplus: server.ini parses", config.error), _validate_check(root, chosen)]
    results = [passed("sftpplus: server.ini parses", ", ".join(config.files))]
    server = config.parser["server"] if config.parser.has_section("server") else None
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
    uid = _service_user(root, chosen["service_user"])
    owners = (0,) if uid is None else (0, uid)
    private_forbid = int(pol["modes"]["private_forbid"], 8)
    any_forbid = int(pol["modes"]["any_forbid"], 8)
    private = set(named.secrets)
    for path in named.tls_files:
        info = keychecks.describe_file(root, path)
        if info is not None and info.private:
            private.add(path)
    if any(
        keys.describe_key(pem.encode()) is not None and keys.describe_key(pem.encode()).private
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
    for certificate, key in dict.fromkeys(named.tls_pairs):
        if configrefs.is_file(root, certificate):
            results.append(keychecks.certificate_pair_check(root, certificate, key))
    results += keychecks.certificate_checks(root, manifest, named.tls_files)
    results += _inline_checks(named)
    results.append(_validate_check(root, chosen))
    return results


def smoke(root: Path, manifest: Manifest, user: str, work_dir: Path) -> SmokeResult:
    """SFTPPlus cannot run here: not judged, with the policy's reason (never a pass)."""
    return SmokeResult.not_judged(NAME, " ".join(policy()["smoke"]["reason"].split()))


def main_config(root: Path, options: dict) -> str | None:
    """Return <install_dir>/configuration/server.ini when it is on root, else None."""
    path = f"{settings(options)['install_dir']}/{policy()['config']['main']}"
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
    config = read_config(root, settings(profile_options.options_of(manifest, NAME))["install_dir"])
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
        elif name in passwd and passwd[name][5].startswith("/"):
            homes[name] = posixpath.normpath(passwd[name][5])
    return homes


PROFILE = ModuleProfile(
    NAME, SIGNS, inventory, checks, smoke, sandbox_config, ("server.ini:[server]/uuid",),
    main_config_of=main_config, login_homes_of=login_homes,
)  # fmt: skip
