"""Account entries: read from a node's root (or the host), merged back without overwriting."""

from __future__ import annotations

from pathlib import Path

from drkit.engines import accounts
from drkit.model import AccountRecord, GroupEntry, PasswdEntry, ShadowEntry

PASSWD = """root:x:0:0:root:/root:/bin/bash
drill:x:2101:2101:drill:/home/drill:/usr/sbin/nologin
partner:x:2102:2102::/home/partner:/usr/sbin/nologin
"""
GROUP = """root:x:0:
sftpusers:x:2100:drill,partner
drill:x:2101:
partner:x:2102:
audit:x:2200:partner
"""
SHADOW = "root:*:19800:0:99999:7:::\ndrill:*:19800:0:99999:7:::\n"


def write_etc(root: Path, passwd: str, group: str, shadow: str | None = None) -> None:
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/passwd").write_text(passwd)
    (root / "etc/group").write_text(group)
    if shadow is not None:
        (root / "etc/shadow").write_text(shadow)


def test_read_entries_from_the_root(node_root: Path):
    write_etc(node_root, PASSWD, GROUP, SHADOW)
    found = accounts.read_entries(node_root, ["drill", "partner", "ghost", "drill"])
    assert [a.name for a in found] == ["drill", "partner"]
    drill, partner = found
    assert drill.passwd == "drill:x:2101:2101:drill:/home/drill:/usr/sbin/nologin"
    assert drill.shadow == "drill:*:19800:0:99999:7:::"
    assert drill.groups == ["sftpusers:x:2100:drill,partner", "drill:x:2101:"]
    assert partner.shadow is None
    assert partner.groups == [
        "sftpusers:x:2100:drill,partner",
        "partner:x:2102:",
        "audit:x:2200:partner",
    ]
    users = accounts.passwd_entries(node_root)
    assert (users["partner"].home, users["drill"].uid_number) == ("/home/partner", 2101)
    groups = accounts.group_entries(node_root)
    assert [group.name for group in groups if "partner" in group.members] == ["sftpusers", "audit"]


def test_read_entries_from_the_host_when_the_root_has_no_passwd(node_root: Path):
    (found,) = accounts.read_entries(node_root, ["root"])
    assert found.passwd.startswith("root:x:0:0:")
    assert any(line.startswith("root:") for line in found.groups)
    assert accounts.source_root(node_root) == Path("/")


def test_missing_names_absent_accounts(node_root: Path):
    write_etc(node_root, PASSWD, GROUP, SHADOW)
    recorded = accounts.read_entries(node_root, ["drill", "partner"])
    assert accounts.missing(node_root, recorded) == []
    write_etc(node_root, "root:x:0:0:root:/root:/bin/bash\n", "root:x:0:\n")
    assert accounts.missing(node_root, recorded) == ["drill", "partner"]


def test_merge_appends_and_keeps_existing(node_root: Path, tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    write_etc(source, PASSWD, GROUP, SHADOW)
    recorded = accounts.read_entries(source, ["drill", "partner"])
    write_etc(
        node_root,
        "root:x:0:0:root:/root:/bin/bash\ndrill:x:2101:2101:changed:/home/drill:/bin/sh\n",
        "root:x:0:\nsftpusers:x:2100:someone\n",
        "root:*:1:0:99999:7:::\n",
    )
    texts = accounts.merge_accounts(node_root, recorded)
    assert list(texts) == [
        node_root / "etc/passwd",
        node_root / "etc/group",
        node_root / "etc/shadow",
    ]
    passwd = texts[node_root / "etc/passwd"].splitlines()
    assert passwd == [
        "root:x:0:0:root:/root:/bin/bash",
        "drill:x:2101:2101:changed:/home/drill:/bin/sh",
        "partner:x:2102:2102::/home/partner:/usr/sbin/nologin",
    ]
    group = texts[node_root / "etc/group"].splitlines()
    assert group[:2] == ["root:x:0:", "sftpusers:x:2100:someone,drill,partner"]
    assert set(group[2:]) == {"drill:x:2101:", "partner:x:2102:", "audit:x:2200:partner"}
    assert texts[node_root / "etc/shadow"].splitlines() == [
        "root:*:1:0:99999:7:::",
        "drill:*:19800:0:99999:7:::",
        "partner:*:::::::",
    ]
    for path, text in texts.items():
        path.write_text(text)
    assert accounts.merge_accounts(node_root, recorded) == texts


def test_merge_into_an_empty_root_and_uid_clash_warns(node_root: Path, tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    write_etc(source, PASSWD, GROUP, SHADOW)
    recorded = accounts.read_entries(source, ["drill"])
    texts = accounts.merge_accounts(node_root, recorded)
    assert texts[node_root / "etc/passwd"] == (
        "drill:x:2101:2101:drill:/home/drill:/usr/sbin/nologin\n"
    )
    write_etc(node_root, "other:x:2101:2101::/home/other:/bin/sh\n", "others:x:2101:\n")
    warnings: list[str] = []
    texts = accounts.merge_accounts(node_root, recorded, warnings)
    assert "other:x:2101" in texts[node_root / "etc/passwd"]
    assert "drill:x:2101" in texts[node_root / "etc/passwd"]
    assert warnings == [
        "user drill: uid 2101 is already other",
        "group drill: gid 2101 is already others",
    ]


def test_one_parser_reads_passwd_group_and_shadow_lines_short_or_long():
    entry = PasswdEntry.parse("drill:x:2101:2101:drill:/home/drill:/usr/sbin/nologin")
    assert (entry.uid_number, entry.gid_number, entry.home) == (2101, 2101, "/home/drill")
    short = PasswdEntry.parse("odd:x:abc")
    assert (short.uid_number, short.gid, short.home, short.shell) == (None, "", "", "")
    group = GroupEntry.parse("sftpusers:x:2100:drill,,partner")
    assert group.members == ("drill", "partner")
    assert group.line() == "sftpusers:x:2100:drill,partner"
    assert GroupEntry.parse("empty:x:7").members == ()
    assert ShadowEntry.parse("drill:$6$salt$hash:19800:0:99999:7::20000:").expire == "20000"
    record = AccountRecord(name="drill", passwd="drill:x:2101:2101::/srv/d:/bin/sh")
    assert (record.entry.home, record.shadow_entry, record.group_entries) == ("/srv/d", None, [])


def test_restore_creates_the_missing_homes_of_login_accounts_only(tmp_path: Path):
    (tmp_path / "home/kept").mkdir(parents=True)
    recorded = [
        AccountRecord(name=name, passwd=f"{name}:x:{uid}:{uid}::{home}:/bin/sh", groups=[])
        for name, uid, home in (
            ("alice", 1001, "/home/alice"),  # missing: created
            ("kept", 1002, "/home/kept"),  # on the node already
            ("held", 1003, "/srv/held"),  # in the snapshot: restored, not created
            ("ghost", 1004, "/nonexistent"),  # a placeholder, never a directory
            ("ftp", 107, "/srv/ftp"),  # a system account: its tree is its profile's business
        )
    ]
    assert accounts.missing_homes(tmp_path, recorded, {"/srv/held"}) == [
        ("/home/alice", 1001, 1001)
    ]


def test_a_created_home_has_its_owner_and_mode_and_goes_on_rollback(tmp_path: Path):
    from drkit.engines import apply

    target = tmp_path / "target"
    target.mkdir()
    applier = apply.Applier(target, tmp_path / "staging", tmp_path / "backups")
    home = target / "home/alice"
    applier.make_dir(home, accounts.HOME_MODE, 1001, 1002)
    info = home.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (1001, 1002, 0o700)
    applier.rollback()
    assert not (target / "home").exists()
