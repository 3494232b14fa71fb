"""What a vsftpd config names: its settings' files, the PAM service and its credential stores,
the trees every login lands in, and the node's inventory built from them."""

from __future__ import annotations

import glob
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path

from drkit.engines import accounts
from drkit.model import Inventory, PasswdEntry
from drkit.paths import on_root, to_node
from drkit.profiles.common import configrefs
from drkit.profiles.common.configrefs import Ref
from drkit.profiles.vsftpd.config import (
    Config,
    Facts,
    node_program,
    pam_file,
    read_config,
    read_pam,
)
from drkit.profiles.vsftpd.policy import NAME, Options, policy
from drkit.profiles.vsftpd.users import guest_account, logins, place_of, system_users


def template_refs(root: Path, config: Config, passwd: Mapping[str, PasswdEntry]) -> list[Ref]:
    """Trees named by a user_sub_token template for users drkit cannot list (virtual users of
    a Berkeley DB store): every existing match of the template with the token as '*', and the
    directory holding them when the token is the template's last component."""
    token = config.settings.get("user_sub_token")
    if not token:
        return []
    templates = []
    if token in (config.settings.get("local_root") or ""):
        templates.append((config.settings["local_root"], config.where["local_root"]))
    for user, own in config.user_files.items():
        if token in (own.get("local_root") or ""):
            templates.append((own["local_root"], f"{config.get('user_config_dir')}/{user}"))
    guest = passwd.get(config.get("guest_username") or "ftp")
    if config.yes("guest_enable") and guest and token in guest.home:
        templates.append((guest.home, f"home of guest_username {guest.name}"))
    refs = []
    for template, where in templates:
        if not template.startswith("/"):
            continue
        directive = f"user_sub_token {token} in {template}"
        pattern = glob.escape(str(on_root(root, "/"))).rstrip("/") + template.replace(token, "*")
        for match in sorted(glob.glob(pattern)):
            if os.path.isdir(match):
                refs.append(
                    Ref(to_node(root, Path(match)), "chroot", directive, where, False, True)
                )
        parent, last = posixpath.split(posixpath.normpath(template))
        if last == token and token not in parent:
            refs.append(Ref(parent, "chroot", directive, where, False, True))
    return refs


def _setting_refs(config: Config) -> list[Ref]:
    pol = policy()
    refs = []
    for key, rule in pol.settings.items():
        explicit = config.settings.get(key)
        needed = not rule.needs or any(config.yes(flag) for flag in rule.needs)
        value = explicit if explicit is not None else (config.get(key) if needed else None)
        if not value or not value.startswith("/"):
            continue
        if value.startswith(tuple(pol.never_paths)):
            continue
        where = config.where.get(key) or (
            "compiled into the node's vsftpd" if key in config.compiled else "compiled-in default"
        )
        kind = rule.kind
        required = needed and kind != "log"
        refs.append(Ref(value, rule.category, key, where, required, kind == "dir"))
        upstream = pol.config.defaults.get(key)
        if explicit is None and upstream and upstream != value and upstream.startswith("/"):
            note = f"upstream's default; this build's is {value}"
            refs.append(Ref(upstream, rule.category, key, note, False, kind == "dir"))
        parent = posixpath.dirname(posixpath.normpath(value))
        if kind == "log" and explicit and parent not in pol.shared_dirs:
            refs.append(Ref(parent, rule.category, f"{key} directory", where, False, True))
    return refs


def references(root: Path, config: Config, smoke_user: str | None = None) -> list[Ref]:
    """Return every node path vsftpd's config names, with category and whether it must exist."""
    refs = _setting_refs(config)
    explicit_pam = "pam_service_name" in config.settings
    where = config.where.get("pam_service_name", "pam_service_name default ftp")
    refs.append(Ref(pam_file(config), "config", "pam_service_name", where, explicit_pam))
    pam = read_pam(root, config)
    refs += [Ref(path, "config", "PAM include", line, False) for path, line in pam.includes]
    refs += [
        Ref(path, "accounts", "PAM store", line, path not in pam.optional)
        for path, line in pam.stores
    ]
    passwd = accounts.passwd_entries(root)
    for login in logins(root, config, smoke_user):
        place = place_of(root, config, login, passwd)
        whose = f"{login.kind} login {login.name} ({login.where})"
        if place.home:
            directive = f"home of {login.account}"
            refs.append(Ref(place.home, "chroot", directive, whose, login.named, True, login.name))
        if place.local_root and login.kind != "anonymous":
            required = login.named and place.root == place.local_root
            refs.append(
                Ref(place.local_root, "chroot", "local_root", whose, required, True, login.name)
            )
    guest = guest_account(config)
    entry = passwd.get(guest or "")
    home = entry.home if entry else ""
    token = config.settings.get("user_sub_token")
    if guest and home.startswith("/") and not (token and token in home):
        where = f"home of guest_username {guest}: every virtual login changes into it"
        refs.append(Ref(posixpath.normpath(home), "chroot", "guest_username", where, True, True))
    refs += template_refs(root, config, passwd)
    return list(dict.fromkeys(refs))


def inventory(root: Path, smoke_user: str | None, options: Options) -> Inventory:
    """Return what makes this vsftpd node: config, PAM service and stores, TLS, lists, trees."""
    root = Path(root)
    chosen = options.config
    config = read_config(root, chosen)
    if config.path is None:
        return Inventory(warnings=[f"vsftpd: no {chosen or 'vsftpd.conf'} found"])
    refs = references(root, config, smoke_user)
    found = configrefs.inventory_from_refs(root, [config.path], refs, [])
    found.owned_globs = list(dict.fromkeys([config.path, *policy().owned_globs]))
    user_dir = config.settings.get("user_config_dir")
    if user_dir:
        found.owned_globs.append(f"{user_dir}/*")
    found.users = system_users(root, config, smoke_user)
    if smoke_user and not config.yes("guest_enable") and smoke_user not in found.users:
        found.users.append(smoke_user)
    if config.compiled:
        facts = Facts(compiled=dict(config.compiled), program=node_program(root))
        found.facts[NAME] = facts.model_dump()
    return found
