"""OpenSSH sftp nodes: read sshd_config as sshd does, back up what it names, prove a restore.

The raw config is parsed here (not `sshd -T`): Include lines only show in the raw files, and a
config with an unknown keyword must still be backed up; files are read through their symlinks
resolved inside the node root. The smoke runs the node's own config and asks sshd itself
(`sshd -T -C`) what applies to its user. What the profile backs up, which directives name
files and the mode rules come from policies/openssh.yaml.
"""

from __future__ import annotations

from drkit.profiles.interface import ModuleProfile, Signs
from drkit.profiles.openssh.checks import checks
from drkit.profiles.openssh.config import Config, Line, parse_line, read_config
from drkit.profiles.openssh.inventory import inventory, references
from drkit.profiles.openssh.passwd import Accounts
from drkit.profiles.openssh.policy import NAME, Options, policy, settings
from drkit.profiles.openssh.sandbox import offered, sandbox_config, sshd_view, write_copy
from drkit.profiles.openssh.smoke import smoke
from drkit.profiles.openssh.users import login_homes

__all__ = [
    "NAME",
    "PROFILE",
    "Accounts",
    "Config",
    "Line",
    "checks",
    "inventory",
    "login_homes",
    "offered",
    "parse_line",
    "policy",
    "read_config",
    "references",
    "sandbox_config",
    "settings",
    "smoke",
    "sshd_view",
    "write_copy",
]

SIGNS = Signs(("/etc/ssh/sshd_config",), ("/usr/sbin/sshd",), ("ssh.service", "sshd.service"), "-f")


PROFILE = ModuleProfile(
    NAME,
    SIGNS,
    inventory,
    checks,
    smoke,
    sandbox_config,
    ("sshd_config:ListenAddress",),
    login_homes_of=login_homes,
    options_model=Options,
    settings_of=settings,
)
