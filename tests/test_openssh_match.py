"""drkit's Match evaluation held to sshd's own (`sshd -T -C user=...`), where both can answer.

drkit reads Match blocks itself (profiles/openssh/users.py) rather than asking sshd: sshd looks
a Match Group up in this host's accounts, not the node root's; it answers one connection,
while a backup takes every Match Address/Host/LocalPort block as possibly applying; and it
exits on a config a backup must still read. For User, Group and All criteria, on accounts
this host and the node share, the two must agree: this test runs sshd on one config for
several accounts and compares every per-user setting drkit derives with sshd's answer.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import sample_node
from drkit.profiles import openssh
from drkit.profiles.openssh import users as openssh_users

SSHD = "/usr/sbin/sshd"
OFFSET, SUFFIX = sample_node.worker()
GID = 2150 + OFFSET  # beside the sample node's sftp group (2100 + offset)
GROUPS = {f"mtgrp{n}{SUFFIX}": GID + n for n in (1, 2)}
USERS = {  # name: (uid, primary group, supplementary groups)
    f"mtone{SUFFIX}": (GID + 1, f"mtgrp1{SUFFIX}", []),
    f"mttwo{SUFFIX}": (GID + 2, "nogroup", [f"mtgrp2{SUFFIX}"]),
    f"mtthree{SUFFIX}": (GID + 3, "nogroup", [f"mtgrp1{SUFFIX}", f"mtgrp2{SUFFIX}"]),
    f"other{SUFFIX}": (GID + 4, "nogroup", []),
}
ONE, TWO, THREE, OTHER = USERS
G1, G2 = GROUPS

CONFIG = f"""\
HostKey /etc/ssh/ssh_host_ed25519_key
PasswordAuthentication yes
PermitRootLogin no
ChrootDirectory /srv/all/%u
Match User {ONE},{TWO}
    ChrootDirectory /srv/listed
    X11Forwarding yes
Match User *,!{ONE} Group {G2}
    ForceCommand internal-sftp -d /in
    PasswordAuthentication no
Match User mt*{SUFFIX},!{THREE}
    MaxAuthTries 2
Match Group {G1},!{G2}
    PermitRootLogin yes
    MaxSessions 3
Match Group mtgrp*
    ChrootDirectory /srv/grouped
    AllowTcpForwarding no
Match User mt*{SUFFIX} Group !{G1},*
    MaxSessions 7
    X11Forwarding no
Match User root
    PermitRootLogin forced-commands-only
Match All
    AllowTcpForwarding local
    MaxAuthTries 4
"""
# each compared keyword with sshd's compiled-in value (what drkit takes when no line sets it)
COMPARED = {
    "chrootdirectory": "none",
    "forcecommand": "none",
    "passwordauthentication": "yes",
    "permitrootlogin": "prohibit-password",
    "x11forwarding": "no",
    "maxsessions": "10",
    "allowtcpforwarding": "yes",
    "maxauthtries": "6",
}


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def host_accounts() -> Iterator[None]:
    """Create this worker's Match test groups and users on the host; remove them afterwards."""
    made: list[tuple[str, str]] = []
    for command, names in (("userdel", USERS), ("groupdel", GROUPS)):  # an interrupted run's
        for name in names:
            subprocess.run([command, name], capture_output=True)
    try:
        for group, gid in GROUPS.items():
            _run("groupadd", "-g", str(gid), group)
            made.append(("groupdel", group))
        for user, (uid, primary, extra) in USERS.items():
            more = ["-G", ",".join(extra)] if extra else []
            _run("useradd", "-M", "-N", "-u", str(uid), "-g", primary, *more, user)
            made.insert(0, ("userdel", user))
        yield
    finally:
        for command, name in made:
            subprocess.run([command, name], capture_output=True)


@pytest.mark.skipif(not Path(SSHD).exists(), reason="needs OpenSSH's sshd")
def test_user_and_group_match_blocks_agree_with_sshd(
    node_root: Path, tmp_path: Path, host_accounts: None
) -> None:
    etc = node_root / "etc/ssh"
    etc.mkdir(parents=True)
    (etc / "sshd_config").write_text(CONFIG)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(etc / "ssh_host_ed25519_key"))
    config = openssh.read_config(node_root)
    db = openssh.Accounts.of(node_root)  # the node root holds no passwd: this host's accounts
    copy, _ = openssh.write_copy(node_root, config, tmp_path)
    for user in ("root", *USERS):
        view, _ = openssh.sshd_view(SSHD, copy, user)
        assert view is not None, f"sshd -T -C user={user} failed"
        for keyword, default in COMPARED.items():
            said = view[keyword][0].split()[0].lower()  # the copy's paths lie under the root
            said = said.removeprefix(str(node_root)) if said.startswith(f"{node_root}/") else said
            ours = openssh_users.user_setting(config, db, user, keyword, default)
            assert ours == said, f"{keyword} for {user}: drkit {ours}, sshd {said}"
    # the blocks do tell the accounts apart: every compared value differs for some pair
    views = {user: openssh.sshd_view(SSHD, copy, user)[0] or {} for user in (ONE, THREE, OTHER)}
    assert views[ONE]["chrootdirectory"] == [f"{node_root}/srv/listed"]
    assert views[THREE]["chrootdirectory"] == [f"{node_root}/srv/grouped"]
    assert views[OTHER]["chrootdirectory"] == [f"{node_root}/srv/all/%u"]
    assert views[THREE]["forcecommand"] == ["internal-sftp -d /in"]
