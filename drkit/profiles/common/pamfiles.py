"""PAM services, read as libpam and the modules read them, and a one-run service for a smoke."""

from __future__ import annotations

import posixpath
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from drkit.paths import on_root
from drkit.profiles.common import authfiles, configtext

# Module arguments naming a credential or list store: (argument, module it belongs to or "" for
# any, suffix the module adds). pam_pwdfile takes `pwdfile FILE` as well as `pwdfile=FILE`.
PAM_STORES = (("pwdfile", "", ""), ("db", "pam_userdb", ".db"), ("file", "", ""))


@dataclass
class PamStack:
    """What a PAM service names, its included files followed: (path, where) pairs."""

    includes: list[tuple[str, str]]
    modules: list[tuple[str, str]]
    stores: list[tuple[str, str]]
    deny_files: list[str]  # pam_listfile sense=deny item=user lists
    pwdfiles: list[str]  # pam_pwdfile stores (virtual users, one per line)
    # stores a missing file does not break: pam_listfile onerr=succeed succeeds without its list
    optional: list[str] = field(default_factory=list)


def pam_module_args(words: list[str]) -> tuple[str | None, list[str]]:
    """Return (module, its arguments) of a PAM line's words after the type: the control may be
    a bracketed [value=action ...] list spanning words."""
    rest = list(words)
    if rest and rest[0].startswith("["):
        while rest and not rest[0].endswith("]"):
            rest.pop(0)
        rest = rest[1:]
    else:
        rest = rest[1:]
    return (rest[0], rest[1:]) if rest else (None, [])


def pam_store_args(module: str, args: list[str]) -> list[tuple[str, str]]:
    """Return (argument name, file) of each store a module's arguments name, as the module
    parses them: `name=FILE`, and pam_pwdfile's `pwdfile FILE`."""
    found = []
    for index, arg in enumerate(args):
        for name, owner, suffix in PAM_STORES:
            if owner and owner not in module:
                continue
            value = None
            if arg.startswith(f"{name}="):
                value = arg.split("=", 1)[1]
            elif arg == name and "pam_pwdfile" in module and index + 1 < len(args):
                value = args[index + 1]
            if value and value.startswith("/"):
                found.append((name, value if value.endswith(suffix) else value + suffix))
    return found


def read_pam(root: Path, service_file: str, pam_dir: str = "/etc/pam.d") -> PamStack:
    """Read a PAM service file and the files it includes (@include, include, substack)."""
    pam = PamStack([], [], [], [], [])
    todo, seen = [service_file], set()
    while todo:
        path = todo.pop(0)
        if path in seen:
            continue
        seen.add(path)
        try:
            text = on_root(root, path).read_text(errors="replace")
        except OSError:
            continue
        for number, raw in enumerate(text.splitlines(), 1):
            words = raw.split()
            if not words or words[0].startswith("#"):
                continue
            where = f"{path} line {number}"
            if words[0] == "@include" and len(words) > 1:
                included = posixpath.join(pam_dir, words[1])
            elif len(words) > 2 and words[1] in ("include", "substack"):
                included = posixpath.join(pam_dir, words[2])
            else:
                included = None
            if included:
                pam.includes.append((included, where))
                todo.append(included)
                continue
            module, args = pam_module_args(words[1:])
            if not module:
                continue
            pam.modules.append((module, where))
            for name, store in pam_store_args(module, args):
                pam.stores.append((store, where))
                if "pam_listfile" in module and "sense=deny" in args and "item=user" in args:
                    pam.deny_files.append(store)
                if name == "pwdfile":
                    pam.pwdfiles.append(store)
                if "pam_listfile" in module and "onerr=succeed" in args:
                    pam.optional.append(store)
    return pam


def one_run_pam_service(work: Path, user: str, password: str) -> Path:
    """Write a one-run PAM service (/etc/pam.d/drkit-smoke-<hex>: pam_pwdfile over a work-dir
    store holding user with password's hash) and return its path; the caller removes it."""
    store = work / f"pam-{secrets.token_hex(4)}.passwd"
    store.touch(mode=0o600)
    store.chmod(0o600)
    store.write_text(f"{user}:{authfiles.hash_password(password)}\n")
    path = Path("/etc/pam.d") / f"drkit-smoke-{secrets.token_hex(4)}"
    configtext.write_config_copy(
        path,
        [
            "# drkit smoke run: removed when the run ends",
            f"auth    required pam_pwdfile.so pwdfile={store}",
            "account required pam_permit.so",
            "session required pam_permit.so",
        ],
        0o644,
        0o755,
    )
    return path
