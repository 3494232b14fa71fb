"""ProFTPD nodes (mod_sftp, mod_tls, mod_ldap): read proftpd.conf as proftpd does, back up what
it names, prove a restore with `proftpd -t`, key/certificate comparisons and real SFTP, FTPS
(or plain FTP) logins.

One module per concern: config (proftpd.conf read as ProFTPD 1.3.8 reads it, the profile's
options and policy), users (who logs in and where DefaultRoot lands them), named (what the
config names: the inventory), sandbox (a runnable copy on loopback ports), static (the checks
of restored files) and loopback (the smoke). What is backed up and which directives name files
come from policies/proftpd.yaml.
"""

from __future__ import annotations

from drkit.profiles.interface import ModuleProfile, Signs
from drkit.profiles.proftpd.config import Config, Line, proftpd_program, read_config, static_modules
from drkit.profiles.proftpd.loopback import smoke, writable_dirs
from drkit.profiles.proftpd.named import inventory, references
from drkit.profiles.proftpd.policy import NAME, Options, settings
from drkit.profiles.proftpd.sandbox import Run, sandbox_config, write_copy
from drkit.profiles.proftpd.static import checks
from drkit.profiles.proftpd.users import login_homes, logins, virtual_users

__all__ = [
    "NAME",
    "PROFILE",
    "SIGNS",
    "Config",
    "Line",
    "Options",
    "Run",
    "checks",
    "inventory",
    "login_homes",
    "logins",
    "proftpd_program",
    "read_config",
    "references",
    "sandbox_config",
    "settings",
    "smoke",
    "static_modules",
    "virtual_users",
    "writable_dirs",
    "write_copy",
]

SIGNS = Signs(("/etc/proftpd/proftpd.conf",), ("/usr/sbin/proftpd",), ("proftpd.service",), "-c")

PROFILE = ModuleProfile(
    NAME,
    SIGNS,
    inventory,
    checks,
    smoke,
    sandbox_config,
    ("proftpd.conf:DefaultAddress",),
    login_homes_of=login_homes,
    options_model=Options,
    settings_of=settings,
)
