"""server.ini (with server.override.ini applied) read as SFTPPlus reads it, and everything it
names: vault items, files by option, homes, event handlers' logs and programs, authentication
stores; node paths throughout."""

from __future__ import annotations

import configparser
import contextlib
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from drkit.engines import keys
from drkit.model import Database
from drkit.paths import on_root
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.sftpplus.policy import policy


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


class _CaseSensitive(configparser.ConfigParser):
    """Keys are case-sensitive in SFTPPlus."""

    def optionxform(self, optionstr: str) -> str:
        return optionstr


def _parser() -> configparser.ConfigParser:
    # No interpolation: values hold '%' and '$' (password hashes, templates) that are not ours.
    return _CaseSensitive(interpolation=None, strict=True)


def read_config(root: Path, install: str) -> Config:
    """Read server.ini and server.override.ini from the node's installation directory."""
    pol = policy().config
    config = Config(install=install)
    parser = _parser()
    for relative in (pol.main, pol.override):
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
    prefix = policy().external_prefix
    found = {}
    for item_id, section in config.sections("vault-items"):
        content = (section.get("content") or "").strip()
        where = config.where(f"vault-items/{item_id}", "content")
        path = inline = None
        if content.startswith(prefix):
            path = config.node_path(content[len(prefix) :])
        elif content and policy().placeholder_prefix not in content:
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
    databases: list[Database] = field(default_factory=list)  # SQLite: [databases], resources


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
        value.lower() in pol.keywords
        or pol.placeholder_prefix in value
        or value.startswith("-----BEGIN")
        or "://" in value
    )


# Options whose files references() reads by section kind, not by name alone.
_SECTION_OPTIONS = frozenset(
    {"path", "home_folder_path", "ssh_authorized_keys_path", "external_vault_file"}
)


def _file_option_refs(
    config: Config, section_name: str, section: configparser.SectionProxy, named: Named
) -> None:
    """The file_options of one section (any kind): host keys, TLS files, programs, files."""
    pol = policy()
    for key, rule in pol.file_options.items():
        value = (section.get(key) or "").strip()
        where = config.where(section_name, key)
        if value.startswith("-----BEGIN"):
            named.inline.append((f"[{section_name}] {key}", rule.category, value))
            continue
        if not is_path(value):
            continue
        role, category = rule.role, rule.category
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
    handled = set(pol.file_options) | set(pol.vault_references) | _SECTION_OPTIONS
    handled |= set(pol.handler_program_keys)
    for key in section:
        if key in handled or not key.endswith(tuple(pol.generic_suffixes)):
            continue
        value = (section.get(key) or "").strip()
        if is_path(value):
            where = config.where(section_name, key)
            named.refs.append(Ref(config.node_path(value), "config", key, where, False))


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() in ("yes", "true", "on", "1")


def _no(value: str | None) -> bool:
    return (value or "").strip().lower() in ("no", "false", "off", "0")


def _made_by_product(config: Config, kind: str, section: configparser.SectionProxy) -> str | None:
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
    scratch = set(policy().scratch_dirs)
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
        for key, category in pol.vault_references.items():
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
        used_as = used.get(item_id)
        label = f"[vault-items/{item_id}]"
        if item.inline is not None:
            named.inline.append((label, used_as or "config", item.inline))
            continue
        if item.path is None:
            continue
        category = used_as or _category_of_content(root, item.path)
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
        if kind in pol.log_handler_types:
            value = (section.get("path") or "").strip()
            if is_path(value):
                where = config.where(section_name, "path")
                named.refs.append(
                    Ref(config.node_path(value), "audit_logs", "event handler", where, False)
                )
            continue
        for key in pol.handler_program_keys:
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
            pam = posixpath.join(pol.pam_dir, service)
            named.refs.append(Ref(pam, "config", "pam_service", where, False))

    for database_id, section in config.sections("databases"):
        value = (section.get("path") or "").strip()
        if is_path(value):
            where = config.where(f"databases/{database_id}", "path")
            named.refs.append(Ref(config.node_path(value), "audit_logs", "path", where, False))
            named.databases.append(Database("sqlite", where, path=config.node_path(value)))

    for resource_id, section in config.sections("resources"):
        section_name = f"resources/{resource_id}"
        for key in ("external_vault_file", "path"):
            value = (section.get(key) or "").strip()
            if is_path(value):
                path = config.node_path(value)
                named.refs.append(Ref(path, "config", key, config.where(section_name, key), True))
                if key == "path" and (section.get("type") or "").strip() == "sqlite":
                    where = config.where(section_name, key)
                    named.databases.append(Database("sqlite", where, path=path))
                if key == "external_vault_file":
                    named.secrets.append(path)
    named.refs = list(dict.fromkeys(named.refs))
    return named
