"""What makes an OpenSSH node: every path its config names, and its inventory."""

from __future__ import annotations

import glob
import posixpath
import re
from collections.abc import Mapping
from pathlib import Path

from drkit.model import Entry, Inventory
from drkit.paths import on_root
from drkit.profiles.common.configrefs import Ref, is_file, walk_files
from drkit.profiles.common.pamfiles import read_pam
from drkit.profiles.openssh.config import Config, node_glob, node_links, node_realpath, read_config
from drkit.profiles.openssh.passwd import Accounts
from drkit.profiles.openssh.policy import Options, policy, settings
from drkit.profiles.openssh.users import can_authenticate, file_path, node_users, user_paths


def references(
    root: Path, config: Config, db: Accounts, users: list[str], pam_service: str | None = None
) -> list[Ref]:
    """Return every node path the config names, with category and whether it must exist."""
    pol = policy()
    refs = [
        Ref(path, "config", "include", line.where, True) for line, path in config.missing_includes
    ]
    for keyword, rule in pol.directives.items():
        kind, category, required = rule.kind, rule.category, rule.required
        if kind in ("user_path", "chroot"):
            for user in users:
                refs += [
                    Ref(path, category, keyword, where, required, kind == "chroot", user)
                    for path, where in user_paths(config, db, user, keyword)
                    if path != "/"
                ]
            continue
        for line in config.effective(keyword):
            args = line.args
            if kind in ("path", "paths") and args and args[0].lower() != "none":
                for arg in args if kind == "paths" else args[:1]:
                    path = file_path(arg, db)
                    if path:
                        refs.append(Ref(path, category, keyword, line.where, required))
            elif kind == "command" and args and args[0].startswith("/"):
                refs.append(Ref(args[0], category, keyword, line.where, required))
                if keyword in pol.node_programs:
                    refs += [
                        Ref(arg, "config", keyword, line.where, False)
                        for arg in args[1:]
                        if arg.startswith("/") and "%" not in arg and is_file(root, arg)
                    ]
            elif kind == "subsystem" and len(args) > 1 and args[1].startswith("/"):
                refs.append(Ref(args[1], category, keyword, line.where, required))
    if not config.effective("hostkey"):
        refs += [Ref(p, "host_keys", "hostkey", "default", False) for p in pol.defaults.host_keys]
    if not config.effective("modulifile"):
        refs.append(Ref(pol.defaults.moduli, "config", "modulifile", "default", False))
    for pattern in config.include_patterns:
        if glob.has_magic(pattern):
            parent = pattern
            while glob.has_magic(parent):
                parent = posixpath.dirname(parent)
            refs.append(Ref(parent, "config", "include", "Include glob", False, True))
    if config.value("usepam", pol.defaults.use_pam) == "yes":
        refs += _pam_refs(root, config, pam_service or pol.config.pam_service)
    refs += _integration_refs(root)
    no_home = set(pol.defaults.no_home)
    for user in users:
        home = db.home(user)
        if home and home not in no_home and db.users[user].uid != "0":
            refs.append(
                Ref(posixpath.normpath(home), "chroot", "home", "passwd", False, True, user)
            )
    return list(dict.fromkeys(refs))


def _pam_refs(root: Path, config: Config, service: str) -> list[Ref]:
    """The PAM service file UsePAM reads and the files it includes (@include, include,
    substack), as far as they are on the node (common's one PAM reader)."""
    pam_dir = policy().config.pam_dir
    usepam = config.first("usepam")
    service_file = f"{pam_dir}/{service}"
    stack = read_pam(root, service_file, pam_dir)
    return [
        Ref(service_file, "config", "usepam", usepam.where if usepam else "default", True),
        *(Ref(path, "config", "pam", where, False) for path, where in stack.includes),
    ]


def _integration_refs(root: Path) -> list[Ref]:
    """NSS, LDAP and sssd files on the node (how accounts and keys reach sshd from an
    authority) and the CA bundles, certificates and keys they name."""
    rules = policy().integration
    found = [path for path in rules.files if is_file(root, path)]
    for pattern in rules.globs:
        found += node_glob(root, pattern)
    refs = []
    for path in found:
        refs.append(Ref(path, "config", "integration", "present on the node", False))
        for setting, value, where in _tls_settings(root, path):
            directory = setting.endswith("dir")
            refs.append(Ref(value, "tls", setting, where, True, directory))
    return refs


def _tls_settings(root: Path, path: str) -> list[tuple[str, str, str]]:
    """Return (setting, node path, where) of the CA/certificate/key settings in a file."""
    wanted = set(policy().integration.tls_settings)
    found = []
    try:
        text = on_root(root, path).read_text(errors="replace")
    except OSError:
        return []
    for number, raw in enumerate(text.splitlines(), 1):
        hit = re.match(r"\s*([A-Za-z_]+)\s*(?:=\s*|\s+)(/\S*)\s*$", raw)
        if hit and hit.group(1).lower() in wanted:
            found.append((hit.group(1).lower(), hit.group(2), f"{path} line {number}"))
    return found


def packaged(ref: Ref) -> bool:
    """A program from a package (sftp-server): checked on the host, never backed up."""
    pol = policy()
    return (
        ref.category == "scripts"
        and ref.directive not in pol.node_programs
        and ref.path.startswith(tuple(pol.packaged_programs))
    )


def inventory(
    root: Path, smoke_user: str | None, options: Options | Mapping[str, object] | None = None
) -> Inventory:
    """Return what makes this OpenSSH node: its files, chroot trees and homes, users and
    warnings. options: profile_options.openssh (config, pam_service)."""
    pol, root, chosen = policy(), Path(root), settings(options)
    config = read_config(root, chosen.config)
    found = Inventory(owned_globs=list(pol.owned_globs), warnings=list(config.warnings))
    base = pol.config.include_base.rstrip("/") + "/"
    for pattern in config.include_patterns:
        if pattern.startswith(base) and pattern not in found.owned_globs:
            found.owned_globs.append(pattern)
    if config.main not in config.files:
        return found
    if config.main not in found.owned_globs:
        found.owned_globs.append(config.main)
    seen: set[str] = set()

    def add(path: str, category: str) -> None:
        if path not in seen:
            seen.add(path)
            found.files.append(Entry(path, category))

    for path in config.files:  # a file read through links: each link and its target
        real, links = config.links.get(path, (path, []))
        for each in (*links, real):
            add(each, "config")
    db = Accounts.of(root)
    users, warnings = node_users(config, db, root, smoke_user)
    found.users, found.warnings = users, found.warnings + warnings
    refs = references(root, config, db, users, chosen.pam_service)
    for ref in refs:
        real, links = node_links(root, ref.path)
        host = on_root(root, real)
        if packaged(ref):
            continue  # the distribution's own program: the package restores it, not drkit
        for link in links:  # the node's links on the way are part of it, as its target is
            add(link, ref.category)
        if ref.directory and host.is_dir():
            if real not in {entry.path for entry in found.dirs}:
                found.dirs.append(Entry(real, ref.category))
                for path in walk_files(root, real):
                    add(path, ref.category)
        elif not ref.directory and host.is_file():
            add(real, ref.category)
            pub = ref.path + ".pub"
            if ref.directive == "hostkey" and is_file(root, node_realpath(root, pub)):
                for each in (*node_links(root, pub)[1], node_realpath(root, pub)):
                    add(each, ref.category)
        elif ref.required:
            found.warnings.append(f"{label(ref)} {ref.path} ({ref.where}) is missing")
    if not any(r.directive == "hostkey" and is_file(root, r.path) for r in refs):
        found.warnings.append("no host key found: clients will see a new server")
    for user in users:
        if not can_authenticate(config, db, root, user):
            found.warnings.append(f"user {user} has no authorized keys file or password")
    found.warnings = list(dict.fromkeys(found.warnings))
    return found


def label(ref: Ref) -> str:
    """Return the directive's name as sshd_config spells it."""
    names = {"usepam": "UsePAM", "home": "home of", "pam": "PAM include", "integration": "file"}
    if ref.directive in names:
        return names[ref.directive]
    directive = policy().directives.get(ref.directive)
    return directive.name if directive else ref.directive
