"""Homes as the server resolves them (real sshd, restic and S3): accounts that share the passwd
home /upload under `ChrootDirectory /srv/sftp/%u` get each their home inside their own chroot,
once, where sshd looks for it, and nothing at the node's root."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from corpus.cases import load_cases, materialise
from nodes import Node

from devtools import sample_node
from drkit import profiles
from drkit.engines import accounts
from tests.manifests import partial

CASES = [case for case in load_cases() if case.server in profiles.KINDS]


def _share_upload(node: Node) -> list[str]:
    """Rewrite the sample node: every sftp user chrooted at /srv/sftp/%u (Match Group), passwd
    home /upload, keys in /etc/ssh/authorized_keys/%u; no home directory exists anywhere.
    Return the users."""
    root, users = node.root, node.made["users"]
    group, _ = sample_node.sftp_group()
    config = root / "etc/ssh/sshd_config"
    text = config.read_text().replace(
        f"Match User {node.made['smoke_user']}", f"Match Group {group}"
    )
    text = text.replace(
        "AuthorizedKeysFile .ssh/authorized_keys", "AuthorizedKeysFile /etc/ssh/authorized_keys/%u"
    )
    config.write_text(text)
    keys = root / "etc/ssh/authorized_keys"
    keys.mkdir(mode=0o755)
    passwd = (root / "etc/passwd").read_text().splitlines()
    for name in users:
        source = root / f"home/{name}/.ssh/authorized_keys"
        shutil.copyfile(source, keys / name)
        (keys / name).chmod(0o644)
        passwd = [
            line.replace(f":/home/{name}:", ":/upload:") if line.startswith(f"{name}:") else line
            for line in passwd
        ]
    (root / "etc/passwd").write_text("\n".join(passwd) + "\n")
    shutil.rmtree(root / "home")
    shutil.rmtree(root / "srv/sftp")
    for name in users:
        (root / f"srv/sftp/{name}").mkdir(mode=0o755, parents=True)  # root-owned chroots
    return users


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_every_profile_says_where_the_corpus_logins_land(case, tmp_path: Path):
    root = tmp_path / "node"
    materialise(case, root)
    names = [user.name for user in case.users if not user.virtual]
    manifest = partial(
        accounts=accounts.read_entries(root, names),
        profiles=[case.server],
        profile_options=dict(case.profile_options),
    )
    homes = profiles.get(case.server).login_homes(root, manifest)
    assert set(homes) <= set(names), case.name
    assert all(path.startswith("/") and ".." not in path.split("/") for path in homes.values())


@pytest.mark.integration
def test_the_login_homes_of_a_chrooted_node_lie_inside_each_chroot(node: Node):
    users = _share_upload(node)
    accounts = [
        {"name": name, "passwd": line}
        for line in (node.root / "etc/passwd").read_text().splitlines()
        for name in users
        if line.startswith(f"{name}:")
    ]
    manifest = partial(accounts=accounts, profiles=["openssh"])
    homes = profiles.get("openssh").login_homes(node.root, manifest)
    assert homes == {name: f"/srv/sftp/{name}/upload" for name in users}
    generic = profiles.get("generic").login_homes(node.root, manifest)
    assert generic == dict.fromkeys(users, "/upload")


@pytest.mark.integration
def test_accounts_sharing_a_home_are_restored_and_drilled(node: Node):
    users = _share_upload(node)
    node.backup()
    target = node.workspace / "target"
    code, restored = node.run("restore", "latest", "--target", str(target), "--smoke")
    assert code == 0, restored
    assert restored["ok"], [c for c in restored["checks"] if c["status"] != "pass"]
    (proof,) = restored["smoke"]
    assert proof["login_ok"] and proof["round_trip_ok"], restored["checks"]
    for name in users:
        home = target / f"srv/sftp/{name}/upload"
        info = home.stat()
        uid = node.made["uids"][name]
        assert (info.st_uid, info.st_mode & 0o7777) == (uid, 0o700), name
        chroot = (target / f"srv/sftp/{name}").stat()
        assert (chroot.st_uid, chroot.st_mode & 0o7777) == (0, 0o755)
    assert not (target / "upload").exists(), "nothing at the node's root"
    (apply,) = [c for c in restored["checks"] if c["name"] == "apply"]
    assert apply["detail"].count("/upload") == len(users), apply

    code, drilled = node.run("drill")
    assert code == 0, [c for c in drilled.get("checks", []) if c["status"] != "pass"] or drilled
