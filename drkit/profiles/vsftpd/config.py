"""vsftpd.conf read as vsftpd 3.0 reads it (the last line of a key wins, user_config_dir
files per user, compiled-in defaults read from the node's own binary), the profile's options and
policy, the PAM service it names and where vsftpd shows itself on a node."""

from __future__ import annotations

import functools
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from drkit.model import Manifest
from drkit.paths import on_root
from drkit.profiles.common import pamfiles, programs
from drkit.profiles.interface import Signs
from drkit.profiles.vsftpd.policy import NAME, policy, settings


@dataclass
class Config:
    """vsftpd.conf's settings (lower-case keys; the last line of a key wins) and per-user files."""

    path: str | None = None
    text: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    user_files: dict[str, dict[str, str]] = field(default_factory=dict)
    # Defaults read from the binary that runs the node (compiled_defaults), over upstream's.
    compiled: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, user: str | None = None) -> str | None:
        """Return a setting (a user's own file first), else vsftpd's compiled-in default: the
        node binary's when known, else upstream's (tunables.c)."""
        own = self.user_files.get(user or "", {})
        value = own.get(key, self.settings.get(key))
        if value is not None:
            return value
        return self.compiled.get(key, policy().config.defaults.get(key))

    def yes(self, key: str, user: str | None = None) -> bool:
        return (self.get(key, user) or "").upper() == "YES"

    def expand(self, value: str, login: str) -> str:
        """Return value with user_sub_token replaced by the login name, as vsftpd does."""
        token = self.settings.get("user_sub_token")
        return value.replace(token, login) if token else value


def parse_settings(text: str) -> list[tuple[int, str, str]]:
    """Return (line number, key, value) of every key=value line."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        found.append((number, key.strip().lower(), value.strip()))
    return found


def node_program(root: Path) -> str | None:
    """Return the vsftpd binary that runs the node: the root's own /usr/sbin/vsftpd, else the
    one this host would start (the smoke's)."""
    own = on_root(root, SIGNS.binaries[0])
    if str(root) != "/" and own.is_file():
        return str(own)
    return vsftpd_program()


@functools.cache
def _binary_strings(path: str, size: int, mtime: float) -> dict[str, str]:
    """Return the compiled-in string defaults found in a vsftpd binary (tunables.c): each
    policy `compiled` key whose value is the first absolute path ending as its pattern says."""
    data = Path(path).read_bytes()
    strings = [m.decode() for m in re.findall(rb"/[\x21-\x7e]{2,200}", data)]
    found = {}
    for key, suffix in policy().compiled.items():
        hit = next((text for text in strings if text.endswith(suffix)), None)
        if hit:
            found[key] = hit
    return found


class Facts(BaseModel):
    """What a backup records of the node's vsftpd build (the manifest's facts.vsftpd): the
    compiled-in defaults read from its binary, and that binary."""

    model_config = ConfigDict(extra="ignore")

    compiled: dict[str, str] = {}
    program: str | None = None

    @classmethod
    def of(cls, manifest: Manifest) -> Facts:
        return cls.model_validate(manifest.facts.get(NAME) or {})


def compiled_defaults(root: Path, manifest: Manifest | None = None) -> dict[str, str]:
    """Return the compiled-in defaults of the node's vsftpd: as the backup recorded them (a
    restore elsewhere keeps the node's build), else read from node_program()."""
    recorded = Facts.of(manifest).compiled if manifest else {}
    if recorded:
        return dict(recorded)
    program = node_program(root)
    if program is None:
        return {}
    try:
        info = os.stat(program)
        return dict(_binary_strings(program, info.st_size, info.st_mtime))
    except OSError:
        return {}


def read_config(
    root: Path, path: str | None = None, compiled: dict[str, str] | None = None
) -> Config:
    """Read the node's vsftpd.conf (path, else the first candidate) and user_config_dir;
    compiled: the node binary's defaults (compiled_defaults(root) when None)."""
    config = Config(compiled=compiled_defaults(root) if compiled is None else compiled)
    for candidate in [path] if path else policy().config.candidates:
        host = on_root(root, candidate)
        if host.is_file():
            config.path, config.text = candidate, host.read_text(errors="replace")
            break
    if config.path is None:
        return config
    for number, key, value in parse_settings(config.text):
        config.settings[key] = value
        config.where[key] = f"{config.path} line {number}"
    user_dir = config.settings.get("user_config_dir")
    if user_dir and on_root(root, user_dir).is_dir():
        for child in sorted(on_root(root, user_dir).iterdir()):
            if child.is_file() and not child.name.startswith("."):
                pairs = parse_settings(child.read_text(errors="replace"))
                config.user_files[child.name] = {key: value for _, key, value in pairs}
    return config


def config_path(options: Mapping[str, object] | None) -> str | None:
    """Return the vsftpd.conf profile_options.vsftpd names, or None for the policy's candidates."""
    return settings(options).config


def pam_file(config: Config) -> str:
    """Return the node path of the PAM service vsftpd uses (pam_service_name, default ftp)."""
    return posixpath.join(policy().config.pam_dir, config.get("pam_service_name") or "ftp")


def read_pam(root: Path, config: Config) -> pamfiles.PamStack:
    """Read the PAM service vsftpd uses and the files it includes (pamfiles.read_pam)."""
    return pamfiles.read_pam(root, pam_file(config), policy().config.pam_dir)


def names_in(root: Path, node_path: str | None, field_sep: str | None = None) -> list[str]:
    """Return the names listed one per line in a file (first field when field_sep is given)."""
    if not node_path:
        return []
    try:
        text = on_root(root, node_path).read_text(errors="replace")
    except OSError:
        return []
    names = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.append(line.split(field_sep, 1)[0] if field_sep else line)
    return names


def anonymous_names() -> tuple[str, ...]:
    """Return the login names vsftpd takes as anonymous."""
    return tuple(policy().smoke.anonymous_names)


def tls_pairs(config: Config) -> list[tuple[str, str | None]]:
    """Return (certificate, key) of the RSA and DSA pairs vsftpd reads."""
    pairs = []
    for cert_key, key_key in (
        ("rsa_cert_file", "rsa_private_key_file"),
        ("dsa_cert_file", "dsa_private_key_file"),
    ):
        cert = config.settings.get(cert_key)
        if cert is None and cert_key == "rsa_cert_file" and config.yes("ssl_enable"):
            cert = config.get(cert_key)
        if cert:
            pairs.append((cert, config.settings.get(key_key) or None))
    return pairs


def vsftpd_program() -> str | None:
    """Return this host's vsftpd, or None."""
    return programs.find_program("vsftpd", policy().smoke.vsftpd)


SIGNS = Signs(
    ("/etc/vsftpd.conf", "/etc/vsftpd/vsftpd.conf"),
    ("/usr/sbin/vsftpd",),
    ("vsftpd.service",),
    config_flag="",
)


NODE_LOCAL = ("vsftpd.conf:listen_address", "vsftpd.conf:pasv_address")
