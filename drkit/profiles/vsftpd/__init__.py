"""vsftpd nodes (FTP and FTPS): read vsftpd.conf as vsftpd does, back up what it names (the PAM
service and its credential stores, the trees every login lands in), prove a restore by starting
the real vsftpd and logging in.

Who logs in and where, as vsftpd 3.0 works it out (twoprocess.c, secutil.c): anonymous logins
are ftp_username, chrooted into anon_root or its home; with guest_enable every other login is a
virtual user mapped to guest_username; otherwise local users are the node's accounts (an allow
list when userlist_deny=NO). A login changes into its account's home (user_sub_token replaced by
the login name; a missing home is 500 OOPS), then into local_root (expanded the same way),
which must exist when the login is chrooted. vsftpd has no test mode: the config check starts it
on a free loopback port and waits for its 220 greeting (start-up errors go to file descriptor
0). Settings come from policies/vsftpd.yaml.

One module per concern: config (vsftpd.conf, options, policy, PAM service), users (logins and
where they land), named (the inventory), sandbox (a runnable copy and its one-run accounts),
static (the checks of restored files) and loopback (the smoke).
"""

from __future__ import annotations

from drkit.profiles.interface import ModuleProfile
from drkit.profiles.vsftpd.config import NODE_LOCAL, SIGNS, Config, compiled_defaults, read_config
from drkit.profiles.vsftpd.loopback import smoke
from drkit.profiles.vsftpd.named import inventory, references
from drkit.profiles.vsftpd.policy import NAME, Options, settings
from drkit.profiles.vsftpd.sandbox import sandbox_config
from drkit.profiles.vsftpd.static import checks, chroot_checks
from drkit.profiles.vsftpd.users import Login, is_chrooted, login_homes, logins

__all__ = [
    "NAME",
    "PROFILE",
    "SIGNS",
    "Config",
    "Login",
    "Options",
    "checks",
    "chroot_checks",
    "compiled_defaults",
    "inventory",
    "is_chrooted",
    "login_homes",
    "logins",
    "read_config",
    "references",
    "sandbox_config",
    "settings",
    "smoke",
]

PROFILE = ModuleProfile(
    NAME,
    SIGNS,
    inventory,
    checks,
    smoke,
    sandbox_config,
    NODE_LOCAL,
    login_homes_of=login_homes,
    options_model=Options,
    settings_of=settings,
)
