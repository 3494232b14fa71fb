"""What the FTP-family profiles (proftpd, vsftpd, sftpplus, generic) share.

Policy files, the files a config names (Ref) and how they become an Inventory, file-mode and
key/certificate checks, a free loopback port, RFC 4716 keys, password hashes, and the two
clients a smoke run drives: the OpenSSH `sftp` client pinned to the manifest's host keys, and
Python's ftplib over explicit TLS pinned to the manifest's certificate.
"""

from __future__ import annotations

import base64
import contextlib
import ftplib
import functools
import grp
import hashlib
import io
import os
import posixpath
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from drkit import errors, runner
from drkit.engines import accounts, keys
from drkit.model import (
    Check,
    Entry,
    Inventory,
    KeyInfo,
    ServedCertificate,
    ServedKey,
    SmokeResult,
    failed,
    passed,
    utc_text,
    warned,
)
from drkit.paths import on_root, to_node

UPLOAD_DIRS = (".", "upload", "uploads", "incoming")
CERT_WARN_DAYS = 30


def policy_dir() -> Path:
    """Return the directory of drkit's policy files.

    $DRKIT_POLICY_DIR, else the source tree's policies/, else <prefix>/share/drkit/policies
    where a wheel install puts them.
    """
    if os.environ.get("DRKIT_POLICY_DIR"):
        return Path(os.environ["DRKIT_POLICY_DIR"])
    source_tree = Path(__file__).resolve().parents[2] / "policies"
    return source_tree if source_tree.is_dir() else Path(sys.prefix) / "share/drkit/policies"


@functools.cache
def policy(name: str) -> dict:
    """Return policies/<name>.yaml."""
    return yaml.safe_load((policy_dir() / f"{name}.yaml").read_text())


def find_program(name: str, candidates: list[str]) -> str | None:
    """Return the first executable among candidates (absolute paths, or names on PATH), then
    <drkit's installation>/.tools/bin/<name> (where bootstrap unpacks a conflicting package)."""
    for candidate in candidates:
        found = candidate if candidate.startswith("/") else shutil.which(candidate)
        if found and os.access(found, os.X_OK) and Path(found).is_file():
            return found
    package_dir = Path(__file__).resolve().parents[2]
    venv_parent = Path(sys.prefix).resolve().parent
    for base in dict.fromkeys([package_dir, venv_parent]):
        bundled = base / ".tools" / "bin" / name
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return None


def command_output(done: runner.Completed, root: Path) -> str:
    """Return a command's last output on one line (stderr, else stdout), node paths unmapped."""
    output = (done.stderr_tail or done.stdout.strip()).replace("\n", " | ")[-300:]
    if str(root) != "/":
        output = output.replace(str(root).rstrip("/") + "/", "/")
    return output


def command_check(
    name: str, argv: list[str], root: Path, timeout: float, cwd: Path | None = None
) -> Check:
    """Run a validate or smoke command (no shell) and judge it: exit 0 passes; otherwise its
    last output, with node paths as the node names them, says why."""
    try:
        done = runner.run(argv, timeout=timeout, cwd=cwd)
    except errors.DrkitError as exc:
        return failed(name, exc.message)
    program = Path(argv[0]).name
    if done.returncode != 0:
        output = command_output(done, root) or "no output"
        return failed(name, f"{program} exit {done.returncode}: {output}")
    return passed(name, f"{program} exit 0")


# --- what a config names ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """A file or directory a server's config names (for a per-user path, whose)."""

    path: str
    category: str
    directive: str
    where: str
    required: bool = True
    directory: bool = False
    user: str | None = None


def is_file(root: Path, node_path: str) -> bool:
    host = on_root(root, node_path)
    return host.is_file() or host.is_symlink()


def walk_files(root: Path, node_dir: str) -> list[str]:
    """Return the node paths of every file and symlink under a directory (links not followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(on_root(root, node_dir)):
        dirnames.sort()
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        found += [to_node(root, Path(dirpath, n)) for n in sorted(filenames + links)]
    return found


def inventory_from_refs(
    root: Path, config_files: list[str], refs: list[Ref], warnings: list[str]
) -> Inventory:
    """Return the Inventory of config files plus every existing referenced path.

    A missing required reference becomes a warning: a backup takes what exists.
    """
    found = Inventory(warnings=list(warnings))
    seen: set[str] = set()

    def add(path: str, category: str) -> None:
        if path not in seen:
            seen.add(path)
            found.files.append(Entry(path, category))

    for path in config_files:
        add(path, "config")
    for ref in refs:
        host = on_root(root, ref.path)
        if ref.directory or host.is_dir():
            if host.is_dir():
                if ref.path not in {entry.path for entry in found.dirs}:
                    found.dirs.append(Entry(ref.path, ref.category))
                    for path in walk_files(root, ref.path):
                        add(path, ref.category)
            elif ref.required:
                found.warnings.append(f"{ref.directive} {ref.path} ({ref.where}) is missing")
        elif is_file(root, ref.path):
            add(ref.path, ref.category)
        elif ref.required:
            found.warnings.append(f"{ref.directive} {ref.path} ({ref.where}) is missing")
    found.warnings = list(dict.fromkeys(found.warnings))
    return found


def named_files_check(
    root: Path, refs: list[Ref], label: str = "config", directive_name=None
) -> list[Check]:
    """Fail once per required path that is missing; else one pass.

    directive_name(ref) spells the directive in a failure (default: ref.directive).
    """
    spell = directive_name or (lambda ref: ref.directive)
    required = list({r.path: r for r in reversed(refs) if r.required}.values())
    missing = [
        r
        for r in reversed(required)
        if not (on_root(root, r.path).is_dir() if r.directory else is_file(root, r.path))
    ]
    results = [
        failed(f"{label}: missing {r.path}", f"{spell(r)} ({r.where}) names a missing path")
        for r in missing
    ]
    if not missing:
        results.append(passed(f"{label}: named files", f"all {len(required)} named paths exist"))
    return results


def describe_file(root: Path, node_path: str) -> KeyInfo | None:
    try:
        return keys.describe_key(on_root(root, node_path).read_bytes())
    except OSError:
        return None


# Groups whose only purpose is to let services read TLS private keys: Debian's ssl-cert package
# ships its snakeoil key 0640 root:ssl-cert and adds the daemons that need keys to that group.
TLS_KEY_GROUPS = ("ssl-cert",)


def _group_name(root: Path, gid: int, node_path: str, manifest: dict | None) -> str | None:
    """Return the name of gid from the node's groups, else as the manifest recorded it."""
    for fields in accounts.group_entries(root):
        if fields[2] == str(gid):
            return fields[0]
    for entry in (manifest or {}).get("files", []):
        if entry["path"] == node_path and entry.get("gid") == gid:
            return entry.get("group")
    return None


def private_key_mode_check(
    root: Path,
    node_path: str,
    label: str,
    forbid: int = 0o077,
    owners: tuple[int, ...] = (0,),
    *,
    group_readers: tuple[str, ...] = (),
    manifest: dict | None = None,
) -> Check:
    """Return pass when a private key has none of the forbidden bits and is owned by one of
    owners (uids; root alone unless the server runs as its own user, e.g. SFTPPlus).

    group_readers names groups allowed to read the key (0640): a dedicated key group such as
    TLS_KEY_GROUPS, for servers that read the key as root (never SSH host keys: sshd and
    mod_sftp refuse them). The group's name comes from the node, else from the manifest.
    """
    name = f"{label} mode: {node_path}"
    try:
        info = os.stat(on_root(root, node_path))
    except OSError:
        return failed(name, "missing")
    mode, problems = stat.S_IMODE(info.st_mode), []
    loose = mode & forbid
    group = _group_name(root, info.st_gid, node_path, manifest) if loose else None
    reader = loose == (forbid & 0o040) and group in group_readers
    if loose and not reader:
        problems.append(f"mode {mode:04o}: readable by others, must be 0600 or 0400")
    if info.st_uid not in owners:
        allowed = "root" if owners == (0,) else "root or the service user"
        problems.append(f"owned by uid {info.st_uid}, not {allowed}")
    owner = "root" if info.st_uid == 0 else f"uid {info.st_uid}"
    if problems:
        return failed(name, "; ".join(problems))
    if reader:
        return passed(
            name,
            f"{mode:04o} {owner}: group {group} may read it (a dedicated key group), no one else",
        )
    return passed(name, f"{mode:04o} {owner}")


def tls_key_mode_check(
    root: Path, node_path: str, forbid: int = 0o077, manifest: dict | None = None
) -> Check:
    """private_key_mode_check of a TLS key a server reads as root: TLS_KEY_GROUPS may read it."""
    return private_key_mode_check(
        root, node_path, "tls key", forbid, group_readers=TLS_KEY_GROUPS, manifest=manifest
    )


def host_key_checks(
    root: Path, paths: list[str], manifest: dict, owners: tuple[int, ...] = (0,)
) -> list[Check]:
    """Each host key: safe mode, parses, and has the fingerprint the manifest recorded."""
    recorded = {entry["path"]: entry for entry in manifest.get("host_keys", [])}
    results = []
    for path in dict.fromkeys(paths):
        if not is_file(root, path):
            continue
        results.append(private_key_mode_check(root, path, "host key", owners=owners))
        info = describe_file(root, path)
        name = f"host key: {path}"
        entry = recorded.get(path)
        if info is None:
            results.append(failed(name, "not a readable private key"))
        elif entry is None:
            results.append(warned(name, f"{info.type} {info.fingerprint}: not in the backup"))
        elif info.fingerprint != entry["fingerprint"]:
            detail = f"is {info.fingerprint}, the backup had {entry['fingerprint']}"
            results.append(failed(name, detail))
        else:
            results.append(passed(name, f"{info.type} {info.fingerprint} as in the backup"))
    return results


def certificate_pair_check(root: Path, certificate: str, key: str | None) -> Check:
    """Return whether a certificate parses and its named private key matches it.

    Servers do not notice a mismatched pair at start-up (ProFTPD starts, then every TLS session
    dies): only this comparison, or a real login, finds it.
    """
    name = f"tls pair: {certificate}"
    try:
        info = keys.describe_certificate(on_root(root, certificate).read_bytes())
    except OSError as exc:
        return failed(name, f"certificate unreadable ({exc.strerror})")
    if info is None:
        return failed(name, "not a PEM certificate")
    if key is None:
        held = describe_file(root, certificate)
        if held is None or not held.private:
            return warned(name, "no key named for this certificate")
        if held.fingerprint != info.key_fingerprint:
            return failed(name, "the key in the same file does not match: TLS sessions would fail")
        return passed(name, "key held in the same file, matching")
    private = describe_file(root, key)
    if private is None:
        return failed(name, f"its key {key} is missing or does not parse")
    if private.fingerprint != info.key_fingerprint:
        return failed(name, f"{key} does not match the certificate: TLS sessions would fail")
    return passed(name, f"matches {key}")


def certificate_check(
    root: Path,
    entry: dict,
    warn_days: int = CERT_WARN_DAYS,
    key_path: str | None = None,
    ok_note: str | None = "as in the backup",
) -> Check:
    """Expiry and equality with the backup of one manifest certificate; with key_path, the
    certificate must also match that private key. ok_note ends a pass's detail."""
    name = f"certificate: {entry['path']}"
    try:
        info = keys.describe_certificate(on_root(root, entry["path"]).read_bytes())
    except OSError as exc:
        return failed(name, f"unreadable ({exc.strerror})")
    if info is None:
        return failed(name, "not a PEM certificate")
    notes = [ok_note] if ok_note else []
    if key_path:
        key = describe_file(root, key_path)
        if key is None:
            return failed(name, f"its key {key_path} is missing or unreadable")
        if key.fingerprint != info.key_fingerprint:
            return failed(name, f"does not match its key {key_path}")
        notes.append(f"matches {key_path}")
    left = info.not_after - datetime.now(UTC)
    until = utc_text(info.not_after)
    if entry.get("fingerprint") and entry["fingerprint"] != info.fingerprint:
        return warned(name, f"differs from the backup; valid until {until}")
    if left <= timedelta(0):
        return failed(name, f"expired {until}")
    if left <= timedelta(days=warn_days):
        return warned(name, f"expires {until}, in {left.days} days")
    return passed(name, ", ".join([f"valid until {until}", *notes]))


def certificate_checks(root: Path, manifest: dict, paths: list[str]) -> list[Check]:
    """Expiry and equality with the backup of the manifest's certificates at the given paths."""
    wanted = set(paths)
    return [
        certificate_check(root, entry)
        for entry in manifest.get("certificates", [])
        if entry["path"] in wanted
    ]


def certificate_names(root: Path, certificate: str) -> list[str]:
    """Return the DNS names a certificate was issued for (SAN, else CN)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(on_root(root, certificate).read_bytes())
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
        if names:
            return names
    return [attr.value for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def issuer_checks(root: Path, chains: list[tuple[str, list[str]]]) -> list[Check]:
    """Each (certificate, [chain and CA files]): the certificate must be self-signed or signed
    by a certificate those files hold, so clients that trust the CA accept it."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature

    results = []
    for certificate, files in chains:
        if not files or not is_file(root, certificate):
            continue
        name = f"tls chain: {certificate}"
        try:
            leaf = x509.load_pem_x509_certificate(on_root(root, certificate).read_bytes())
        except (OSError, ValueError):
            continue  # certificate_pair_check reports an unreadable certificate
        issuers = []
        for path in files:
            with contextlib.suppress(OSError, ValueError):
                issuers += x509.load_pem_x509_certificates(on_root(root, path).read_bytes())
        signer = None
        for candidate in [leaf, *issuers]:
            with contextlib.suppress(ValueError, TypeError, InvalidSignature):
                leaf.verify_directly_issued_by(candidate)
                signer = candidate
                break
        if signer is None:
            detail = f"issuer {leaf.issuer.rfc4514_string()} is in none of {', '.join(files)}"
            results.append(failed(name, detail))
        elif signer is leaf:
            results.append(passed(name, "self-signed"))
        else:
            results.append(passed(name, f"signed by {signer.subject.rfc4514_string()}"))
    return results


# --- keys, passwords, ports ------------------------------------------------------------------


def rfc4716(public_line: str, comment: str = "drkit") -> str:
    """Return an OpenSSH one-line public key in RFC 4716 form (`ssh-keygen -e`)."""
    blob = public_line.split()[1]
    lines = [blob[i : i + 70] for i in range(0, len(blob), 70)]
    begin, end = "---- BEGIN SSH2 PUBLIC KEY ----", "---- END SSH2 PUBLIC KEY ----"
    return "\n".join([begin, f'Comment: "{comment}"', *lines, end, ""])


def rfc4716_keys(text: str) -> list[KeyInfo]:
    """Return the keys of an RFC 4716 file (several blocks allowed)."""
    found, inside, body, header_continues = [], False, [], False
    for raw in text.splitlines():
        line = raw.strip()
        if line == "---- BEGIN SSH2 PUBLIC KEY ----":
            inside, body, header_continues = True, [], False
        elif line == "---- END SSH2 PUBLIC KEY ----" and inside:
            inside = False
            with contextlib.suppress(ValueError, IndexError):
                blob = base64.b64decode("".join(body))
                length = int.from_bytes(blob[:4], "big")
                key_type = blob[4 : 4 + length].decode()
                info = keys.describe_key(f"{key_type} {base64.b64encode(blob).decode()}".encode())
                if info:
                    found.append(info)
        elif inside:
            if header_continues or ":" in line:
                header_continues = line.endswith("\\")
                continue
            body.append(line)
    return found


def hash_password(password: str) -> str:
    """Return a SHA-512 crypt(3) hash; the password goes to openssl on stdin, never argv."""
    done = runner.run(["openssl", "passwd", "-6", "-stdin"], input_text=password + "\n")
    if done.returncode != 0 or not done.stdout.startswith("$6$"):
        raise RuntimeError("openssl passwd -6 failed")
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def greeting(port: int, server: runner.Service, timeout: float) -> str | None:
    """Wait for the server's first reply line on 127.0.0.1:port; None if it never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 2) as conn:
            conn.settimeout(5)
            return conn.recv(512).decode(errors="replace").strip()
        time.sleep(0.02)
    return None


def wait_port(port: int, server: runner.Service, timeout: float) -> bool:
    """Wait until 127.0.0.1:port accepts connections while the server runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.alive():
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.02)
    return False


def authorized_client_key(
    work: Path, user: str, folder: str, encode: Callable[[str], str] = lambda line: line + "\n"
) -> tuple[Path, Path] | None:
    """Create a throw-away ed25519 client key in work and authorise it for user: its public
    line, as encode writes it, in work/folder/<user>, the per-user key files a sandboxed
    server is pointed at. Return (private key path, work/folder), or None when ssh-keygen
    failed."""
    key = work / "client_key"
    argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "drkit-smoke", "-f", str(key)]
    if runner.run(argv).returncode != 0:
        return None
    public_line = (work / "client_key.pub").read_text().strip()
    keys_dir = work / folder
    keys_dir.mkdir(mode=0o755)
    (keys_dir / user).write_text(encode(public_line))
    (keys_dir / user).chmod(0o644)
    return key, keys_dir


# --- configuration text ---------------------------------------------------------------------


def parsed_lines(
    text: str, parse: Callable[[str], tuple[str, str, list[str]] | None]
) -> Iterator[tuple[int, str, str, list[str]]]:
    """Yield (line number, token, keyword, args) of each directive line parse understands."""
    for number, raw in enumerate(text.splitlines(), 1):
        parsed = parse(raw)
        if parsed is not None:
            yield number, *parsed


def rewritten_lines(
    text: str,
    parse: Callable[[str], tuple[str, str, list[str]] | None],
    rewrite: Callable[[int, str, str, str, list[str]], list[str]],
) -> list[str]:
    """Return the lines of a config file's runnable copy: each directive line parse understands
    becomes the lines rewrite(line number, raw line, token, keyword, args) returns; every other
    line (blank, comment) stays as it is."""
    out: list[str] = []
    for number, raw in enumerate(text.splitlines(), 1):
        parsed = parse(raw)
        out += [raw] if parsed is None else rewrite(number, raw, *parsed)
    return out


def write_config_copy(copy: Path, lines: list[str], mode: int = 0o600, dir_mode: int = 0o700):
    """Write a config file's copy: its folder made (dir_mode) if need be, the file private
    before a line is in it (it may hold a secret), then given mode."""
    copy.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    copy.touch(mode=0o600)
    copy.chmod(mode)
    copy.write_text("\n".join(lines) + "\n")


def read_config_text(root: Path, node_path: str, config) -> str | None:
    """Read one of a node's config files into config (a profile's parsed config: its `files`,
    `texts` and `warnings`); return the text, or None (and a warning) when it is unreadable."""
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError as exc:
        config.warnings.append(f"{node_path}: cannot read ({exc.strerror or exc})")
        return None
    if node_path not in config.files:
        config.files.append(node_path)
    config.texts[node_path] = text
    return text


def split_args(text: str) -> list[str]:
    """Split a directive's arguments like sshd: quotes, backslash escapes, '#' comments."""
    args: list[str] = []
    current: list[str] = []
    quote, started, i = "", False, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and text[i + 1 : i + 2] in (quote, "\\"):
                current.append(text[i + 1])
                i += 1
            elif char == quote:
                quote = ""
            else:
                current.append(char)
        elif char.isspace():
            if started:
                args.append("".join(current))
                current, started = [], False
        elif char == "\\" and text[i + 1 : i + 2] in ('"', "'", "\\", " "):
            current.append(text[i + 1])
            started = True
            i += 1
        elif char in "\"'":
            quote, started = char, True
        elif char == "#" and not started:
            break
        else:
            current.append(char)
            started = True
        i += 1
    if started:
        args.append("".join(current))
    return args


# --- PAM services, read as libpam and the modules read them ---------------------------------

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


# --- accounts for a smoke run -----------------------------------------------------------------


def node_account(root: Path, manifest: dict, user: str) -> dict | None:
    """Return the node's account record of user: the root's files, else the manifest's."""
    if accounts.source_root(root) == Path(root):
        found = accounts.read_entries(root, [user])
        if found:
            return found[0]
    return next((a for a in manifest.get("accounts", []) if a["name"] == user), None)


def node_fields(root: Path, manifest: dict, user: str) -> list[str]:
    """Return the node's passwd fields of user (the host's when the node has none)."""
    account = node_account(root, manifest, user)
    if account:
        return (account["passwd"].split(":") + [""] * 7)[:7]
    entry = pwd.getpwnam(user)
    return [user, "x", str(entry.pw_uid), str(entry.pw_gid), "", entry.pw_dir, entry.pw_shell]


def host_has(lookup, key) -> bool:
    try:
        lookup(key)
    except KeyError:
        return False
    return True


def ensure_user(root: Path, manifest: dict, user: str, created: list[tuple[str, str]]) -> Check:
    """Make sure user exists on the host; create it for the run from the node's entry.

    What was created is appended to `created` for removal afterwards.
    """
    name = "smoke: user"
    if host_has(pwd.getpwnam, user):
        return passed(name, f"{user} exists on the host")
    account = node_account(root, manifest, user)
    if account is None:
        return failed(name, f"{user} is neither on the host nor in the node's accounts")
    fields = (account["passwd"].split(":") + [""] * 7)[:7]
    uid, gid, home, shell = fields[2], fields[3], fields[5] or "/", fields[6]
    argv = ["useradd", "-M", "-p", "*"]
    groups = [(line.split(":") + [""] * 4)[:4] for line in account.get("groups", [])]
    for group_name, _, group_gid, members in groups:
        primary = group_gid == gid
        if not primary and user not in members.split(","):
            continue
        if not host_has(grp.getgrnam, group_name) and not host_has(grp.getgrgid, int(group_gid)):
            done = runner.run(["groupadd", "-g", group_gid, group_name])
            if done.returncode == 0:
                created.append(("group", group_name))
        if host_has(grp.getgrnam, group_name):
            argv += ["-g", group_name] if primary else ["-G", group_name]
    if "-g" not in argv and gid.isdigit() and host_has(grp.getgrgid, int(gid)):
        argv += ["-g", gid]
    if uid.isdigit() and not host_has(pwd.getpwuid, int(uid)):
        argv += ["-u", uid]
    host_home = home if str(root) == "/" else str(on_root(root, home))
    usable_shell = shell if shell and os.access(shell, os.X_OK) else "/usr/sbin/nologin"
    had_group = host_has(grp.getgrnam, user)
    done = runner.run([*argv, "-d", host_home, "-s", usable_shell, user])
    if done.returncode != 0:
        return failed(name, f"useradd {user} failed: {done.stderr_tail}")
    created.append(("user", user))
    if not had_group and host_has(grp.getgrnam, user):
        created.append(("group", user))
    return passed(name, f"created {user} (uid {pwd.getpwnam(user).pw_uid}) for the run")


def _processes_of(uid: int) -> list[int]:
    """Return the pids of the live processes running as uid (an sshd session winding down;
    a zombie has ended, whenever its new parent reaps it)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError, IndexError):
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                found.append(int(pid))
    return found


def remove_created(created: list[tuple[str, str]]) -> None:
    """Remove the users and groups created for the run, once their sessions have ended: the
    server is stopped by then, so what still runs as a user made for the run is a session of
    the smoke's own (sshd's per-connection processes outlive its listener by about a second)
    and is ended."""
    for kind, name in reversed(created):
        if kind == "user" and host_has(pwd.getpwnam, name):
            uid, deadline = pwd.getpwnam(name).pw_uid, time.monotonic() + 10
            for pid in _processes_of(uid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGTERM)
            while _processes_of(uid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if runner.run(["userdel", name]).returncode != 0:
                runner.run(["userdel", "-f", name])
        elif kind == "group" and host_has(grp.getgrnam, name):
            runner.run(["groupdel", name])


# --- the SFTP client, pinned -----------------------------------------------------------------


# ssh-keyscan's -t name of each host key type.
KEYSCAN_TYPES = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
    "ssh-dss": "dsa",
}


def keyscan(
    result: SmokeResult,
    host_keys: list[dict],
    port: int,
    label: str = "",
    not_served: str = "not served",
    *,
    offered: set[str] | None = None,
    loaded: dict[str, str] | None = None,
    omitted_by: str = "the server's host key algorithms",
) -> None:
    """Ask the server for each host key type the manifest holds and compare fingerprints;
    record a check per type ("smoke: [label ]host key TYPE") and each key as served.

    offered: the key types the server offers (None: every type). A type it does not offer is
    not asked for: loaded ({fingerprint: type}, what the server itself reported loading)
    proves the key is there, so its check says "loaded, not offered" (omitted_by names the
    setting) instead of "not served".
    """
    by_type: dict[str, list[str]] = {}
    for entry in host_keys:
        by_type.setdefault(entry["type"], []).append(entry["fingerprint"])
    for key_type, expected in by_type.items():
        name = f"smoke: {label} host key {key_type}" if label else f"smoke: host key {key_type}"
        if offered is not None and key_type not in offered:
            result.add(_not_offered(name, key_type, expected, loaded, omitted_by))
            continue
        argv = [
            "ssh-keyscan",
            "-T",
            "5",
            "-p",
            str(port),
            "-t",
            KEYSCAN_TYPES.get(key_type, key_type),
        ]
        done = runner.run([*argv, "127.0.0.1"], timeout=30)
        served = []
        for line in done.stdout.splitlines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#"):
                info = keys.describe_key(f"{fields[1]} {fields[2]}".encode())
                if info is not None and info.type == key_type:
                    served.append(info)
        if not served:
            result.add(failed(name, not_served))
            continue
        result.host_keys.append(ServedKey(type=key_type, fingerprint=served[0].fingerprint))
        if served[0].fingerprint not in expected:
            detail = f"served {served[0].fingerprint}, the backup has {', '.join(expected)}"
            result.add(failed(name, detail))
        else:
            result.add(passed(name, f"served {served[0].fingerprint} as in the backup"))


def _not_offered(
    name: str, key_type: str, expected: list[str], loaded: dict[str, str] | None, omitted_by: str
) -> Check:
    """The check of a host key type the server does not offer: loaded as in the backup?"""
    why = f"not offered: {omitted_by} omits {key_type}"
    if loaded is None:
        return warned(name, f"{why}; whether it loaded is unknown")
    hit = next((fp for fp in expected if loaded.get(fp) == key_type), None)
    if hit:
        return passed(name, f"loaded {hit} as in the backup, {why}")
    other = [fp for fp, loaded_type in loaded.items() if loaded_type == key_type]
    if other:
        return failed(name, f"loaded {other[0]}, the backup has {', '.join(expected)}; {why}")
    return failed(name, f"not loaded (and {why})")


def _sftp(
    key: Path, known_hosts: Path, port: int, user: str, batch: str, work: Path, only_key=True
):
    batch_file = work / f"batch-{secrets.token_hex(4)}"
    batch_file.write_text(batch)
    argv = [
        "sftp", "-F", "/dev/null",
        "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
        *(["-o", "PreferredAuthentications=publickey"] if only_key else []),
        "-i", str(key), "-P", str(port), "-b", str(batch_file), f"{user}@127.0.0.1",
    ]  # fmt: skip
    return runner.run(argv, env={"SSH_AUTH_SOCK": ""}, timeout=60)


def sftp_session(
    result: SmokeResult,
    host_keys: list[dict],
    user: str,
    port: int,
    key: Path,
    work: Path,
    hint: Callable[[], str] | None = None,
    *,
    label: str = "sftp",
    trip_name: str | None = None,
    upload_dirs=UPLOAD_DIRS,
    show_dir: bool = False,
    only_key: bool = True,
) -> None:
    """Log in with the OpenSSH sftp client pinned to host_keys; put, get, compare, remove;
    record the session in result.

    Checks: "smoke: {label} login" and trip_name (default "smoke: {label} round trip");
    show_dir adds the login's working directory to its detail; only_key allows no other
    client authentication method than the key.
    """
    login, trip = _sftp_round_trip(
        host_keys, user, port, key, work, hint, label, trip_name, upload_dirs, show_dir, only_key
    )
    result.session("sftp", login, trip)


def _sftp_round_trip(
    host_keys, user, port, key, work, hint, label, trip_name, upload_dirs, show_dir, only_key
) -> tuple[Check, Check]:
    known_hosts = work / f"known_hosts-{port}"
    known_hosts.write_text("".join(f"[127.0.0.1]:{port} {k['public_line']}\n" for k in host_keys))
    login_name, check = f"smoke: {label} login", trip_name or f"smoke: {label} round trip"
    started = time.monotonic()
    login = _sftp(key, known_hosts, port, user, "pwd\n", work, only_key)
    if login.returncode != 0:
        detail = login.stderr_tail.replace("\n", " | ") or "sftp failed"
        extra = hint() if hint else ""
        return (
            failed(login_name, f"{user}: {detail}" + (f" ({extra})" if extra else "")),
            failed(check, "no login"),
        )
    elapsed = time.monotonic() - started
    detail = f"{user} in {elapsed:.2f} s, pinned host key"
    if show_dir:
        lines = login.stdout.splitlines()
        where = next(
            (ln.split(":", 1)[1].strip() for ln in lines if "working directory" in ln), "?"
        )
        detail += f", in {where}"
    logged_in = passed(login_name, detail)
    if not upload_dirs:  # the caller found no directory the user may write to, and said why
        return logged_in, warned(check, "no writable directory found: nothing written")
    payload = secrets.token_bytes(4096)
    local, back = work / f"payload-{port}", work / f"payload-{port}.back"
    local.write_bytes(payload)
    name, reasons = f".drkit-smoke-{secrets.token_hex(6)}", []
    for directory in upload_dirs:
        remote = f"{directory}/{name}"
        batch = f'put "{local}" "{remote}"\n-get "{remote}" "{back}"\nrm "{remote}"\n'
        done = _sftp(key, known_hosts, port, user, batch, work, only_key)
        if back.is_file():
            if back.read_bytes() != payload:
                return logged_in, failed(check, f"bytes differ after a round trip in {directory}")
            if done.returncode != 0:
                return logged_in, failed(check, f"read back, but could not remove {remote}")
            detail = f"wrote, read back and removed {len(payload)} bytes in {directory}"
            return logged_in, passed(check, detail)
        last = done.stderr_tail.splitlines()[-1] if done.stderr_tail else "failed"
        reasons.append(f"{directory}: {last}")
    return logged_in, failed(check, "no writable directory; " + "; ".join(reasons))


# --- the FTPS client, pinned -----------------------------------------------------------------


class _ReusingFTPS(ftplib.FTP_TLS):
    """ftplib over explicit TLS whose data connections reuse the control session's TLS
    session: ProFTPD and vsftpd refuse data channels that do not (their default)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(
                conn, server_hostname=self.host, session=self.sock.session
            )
        return conn, size


def _ftps_round_trip(client: ftplib.FTP_TLS, trip_name: str, upload_dirs=UPLOAD_DIRS) -> Check:
    if not upload_dirs:  # the caller found no directory the user may write to
        where = _ftp_listing(client, trip_name, "no writable directory found")
        return warned(trip_name, where.detail)
    payload = secrets.token_bytes(4096)
    name, reasons = f".drkit-smoke-{secrets.token_hex(6)}", []
    for directory in upload_dirs:
        remote = name if directory == "." else posixpath.join(directory, name)
        try:
            client.storbinary(f"STOR {remote}", io.BytesIO(payload))
        except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
            reasons.append(f"{directory}: {str(exc).strip()[:120]}")
            continue
        back = io.BytesIO()
        try:
            client.retrbinary(f"RETR {remote}", back.write)
            client.delete(remote)
        except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
            return failed(trip_name, f"stored in {directory}, then: {exc}")
        if back.getvalue() != payload:
            return failed(trip_name, f"bytes differ after a round trip in {directory}")
        return passed(
            trip_name, f"wrote, read back and removed {len(payload)} bytes in {directory}"
        )
    return failed(trip_name, "no writable directory; " + "; ".join(reasons))


@dataclass(frozen=True)
class FtpTls:
    """How an FTP smoke pins TLS: the PEM it trusts, the name it checks, the certificates
    (sha256 of DER) the server may serve."""

    trusted_pem: str
    server_name: str
    expected: frozenset[str]


def ftp_session(
    result: SmokeResult,
    port: int,
    user: str,
    password: str,
    *,
    tls: FtpTls | None,
    read_only: str | None = None,
    hint: Callable[[], str] | None = None,
    upload_dirs=UPLOAD_DIRS,
    expect_dir: str | None = None,
    landing_why: str = "the config",
) -> None:
    """Log in over FTP (explicit TLS pinned as tls says, else plain: the server speaks no TLS
    and the password is a one-run one on 127.0.0.1); put, get, compare, delete in the first of
    upload_dirs that takes the file (none: a listing, as a warning); record the session ("ftps"
    or "ftp") in result.

    read_only names why the server refuses uploads by its config: the round trip is then a
    directory listing over a data connection, reported as a warning (no file moved).
    expect_dir: where the configuration says the login lands (its `pwd`), checked as
    "smoke: {label} landing" (landing_why names the setting).
    """
    label = "ftps" if tls else "ftp"
    login_name, trip_name = f"smoke: {label} login", f"smoke: {label} round trip"
    if tls:
        context = ssl.create_default_context(cadata=tls.trusted_pem)
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        context.check_hostname = True
        client: ftplib.FTP = _ReusingFTPS(context=context, timeout=15)
    else:
        client = ftplib.FTP(timeout=15)
    started, detail = time.monotonic(), ""
    try:
        client.connect("127.0.0.1", port)
        if tls:
            client.host = tls.server_name  # SNI and hostname check against the certificate
            client.auth()
            der = client.sock.getpeercert(binary_form=True)
            served = keys.describe_certificate(ssl.DER_cert_to_PEM_cert(der).encode())
            if served is not None:
                result.certificates.append(
                    ServedCertificate(
                        fingerprint=served.fingerprint,
                        subject=served.subject,
                        not_after=utc_text(served.not_after),
                    )
                )
            fingerprint = hashlib.sha256(der).hexdigest()
            if fingerprint not in tls.expected:
                detail = f"served certificate {fingerprint[:16]}… is not the backup's"
        if not detail:
            client.login(user, password)
            if tls:
                client.prot_p()
    except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
        extra = hint() if hint else ""
        detail = f"{user}: {type(exc).__name__}: {str(exc).strip()[:200]}"
        detail += f" ({extra})" if extra else ""
    try:
        if detail:
            result.session(label, failed(login_name, detail), failed(trip_name, "no login"))
            return
        elapsed = time.monotonic() - started
        how = (
            f"TLS {client.sock.version()}, certificate for {tls.server_name} as in the backup"
            if tls
            else "plain FTP: the config enables no TLS"
        )
        login = passed(login_name, f"{user} in {elapsed:.2f} s, {how}")
        landed = _ftp_landing(client, label, expect_dir, landing_why) if expect_dir else None
        trip = _ftp_listing(client, trip_name, read_only) if read_only else None
        result.session(label, login, trip or _ftps_round_trip(client, trip_name, upload_dirs))
        if landed is not None:
            result.add(landed)
    finally:
        with contextlib.suppress(Exception):
            client.quit()
        with contextlib.suppress(Exception):
            client.close()


def _ftp_landing(client: ftplib.FTP, label: str, expect_dir: str, why: str) -> Check:
    """Where the login landed (`pwd`) against where the configuration says it lands."""
    name = f"smoke: {label} landing"
    try:
        where = client.pwd()
    except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
        return failed(name, f"pwd failed: {str(exc).strip()[:160]}")
    if posixpath.normpath(where) == posixpath.normpath(expect_dir):
        return passed(name, f"in {where}, as {why} says")
    return failed(name, f"landed in {where}; {why} says {expect_dir}")


def writable_places(root: Path, landed: Path, fields: list[str]) -> list[tuple[str, Path]]:
    """Return (name relative to landed, host path) of landed and its subdirectories that the
    account (passwd fields: its uid, primary gid and the node's groups naming it) may write by
    owner and mode, landed first: where a smoke uploads, found rather than guessed."""
    if not (fields[2].isdigit() and fields[3].isdigit()):
        return []
    uid, gids = int(fields[2]), {int(fields[3])}
    gids |= {
        int(g[2])
        for g in accounts.group_entries(root)
        if fields[0] in g[3].split(",") and g[2].isdigit()
    }
    try:
        children = sorted(c for c in landed.iterdir() if c.is_dir() and not c.is_symlink())
    except OSError:
        return []
    found = []
    for folder in [landed, *children[:64]]:
        try:
            info = folder.stat()
        except OSError:
            continue
        mode = stat.S_IMODE(info.st_mode)
        if (
            uid == 0
            or (info.st_uid == uid and mode & 0o200)
            or (info.st_gid in gids and mode & 0o020)
            or mode & 0o002
        ):
            found.append(("." if folder == landed else folder.name, folder))
    return found


def one_run_pam_service(work: Path, user: str, password: str) -> Path:
    """Write a one-run PAM service (/etc/pam.d/drkit-smoke-<hex>: pam_pwdfile over a work-dir
    store holding user with password's hash) and return its path; the caller removes it."""
    store = work / f"pam-{secrets.token_hex(4)}.passwd"
    store.touch(mode=0o600)
    store.chmod(0o600)
    store.write_text(f"{user}:{hash_password(password)}\n")
    path = Path("/etc/pam.d") / f"drkit-smoke-{secrets.token_hex(4)}"
    write_config_copy(
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


def _ftp_listing(client: ftplib.FTP, trip_name: str, read_only: str) -> Check:
    """List the login directory over a data connection: the proof a read-only server allows."""
    try:
        where = client.pwd()
        lines: list[str] = []
        client.retrlines("LIST", lines.append)
    except (OSError, EOFError, ftplib.Error, ssl.SSLError) as exc:
        return failed(trip_name, f"{read_only}; listing failed: {str(exc).strip()[:160]}")
    return warned(
        trip_name, f"{read_only}: listed {len(lines)} entries of {where}, no file written"
    )


@contextlib.contextmanager
def smoke_workspace(work_dir: Path, prefix: str) -> Iterator[Path]:
    """Yield a fresh 0755 directory under work_dir (created when missing) for one smoke run;
    remove it afterwards whatever happens."""
    base = Path(work_dir).resolve()
    base.mkdir(mode=0o755, parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    work.chmod(0o755)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def options_of(manifest: dict, kind: str) -> dict:
    """Return profile kind's options as the snapshot recorded them.

    They travel inside the signed manifest (not only in the embedded drkit.yaml, which is not
    signed and which standby sync never reads), so the checks after a bare-metal restore, a
    drill or a standby sync use exactly the settings the backup was made with.
    """
    return dict((manifest.get("profile_options") or {}).get(kind) or {})


def options_fail_as(check: str):
    """Decorate a profile's checks(root, manifest): when the profile options the manifest
    recorded are refused (the profile's settings raise ConfigError naming the setting), the
    result is the one failed check named check, not an error that ends the run."""

    def decorate(checks: Callable[[Path, dict], list[Check]]):
        @functools.wraps(checks)
        def checked(root: Path, manifest: dict) -> list[Check]:
            try:
                return checks(root, manifest)
            except errors.ConfigError as exc:
                return [failed(check, exc.message)]

        return checked

    return decorate


LOG_PATTERN = r"error|fatal|refused|denied|invalid|failed|unable|oops|no such"


def interesting_lines(lines: list[str], pattern: str = LOG_PATTERN) -> list[str]:
    """Return the last three non-blank lines that match pattern (any case), else the last three."""
    lines = [ln for ln in lines if ln.strip()]
    return ([ln for ln in lines if re.search(pattern, ln, re.I)] or lines)[-3:]


def log_hint(*paths: Path) -> str:
    """Return the interesting last lines of server logs, for a failed login's detail."""
    lines: list[str] = []
    for path in paths:
        with contextlib.suppress(OSError):
            lines += path.read_text(errors="replace").splitlines()
    return " | ".join(line.strip()[:200] for line in interesting_lines(lines))
