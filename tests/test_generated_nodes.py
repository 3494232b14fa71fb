"""Generated nodes: backup exit 0 means a restore reproduces the node, whatever it holds.

hypothesis builds node trees as users and attackers leave them: names over the whole byte
alphabet but `/` and NUL (newlines, bytes that are not UTF-8, terminal escapes), symlinks
inside, out of the root and dangling, hard links, FIFOs and devices, setuid and odd modes,
several owners, deep and empty directories. Each example is backed up with real restic into
real S3 and restored into a fresh target: every entry drkit backed up comes back with the same
type, name, content, mode, owner and link target; a FIFO or a device is named in a warning and
not restored. The example budget is fixed (derandomized, so CI runs the same examples each
time); a failure prints the example and hypothesis' seed.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from nodes import drkit, init_node

pytestmark = pytest.mark.integration

DATA = "/srv/data"
OWNERS = [(0, 0), (2601, 2601), (2602, 2601), (6666, 6666)]  # 6666: in no passwd at all
SETTINGS = settings(
    max_examples=int(os.environ.get("DRKIT_GENERATED_EXAMPLES", "12")),
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

names = st.binary(min_size=1, max_size=12).filter(
    lambda name: b"/" not in name and b"\0" not in name and name not in (b".", b"..")
)
modes = st.sampled_from([0o644, 0o600, 0o400, 0o755, 0o4755, 0o2750, 0o777, 0o1777, 0o000])
owners = st.sampled_from(OWNERS)
link_targets = st.one_of(
    st.sampled_from([b"../x", b"/etc/passwd", b"../../../../../../etc", b"/srv/data", b"."]),
    names,
)


@st.composite
def trees(draw, depth: int = 0) -> list[tuple]:
    """Return a directory's entries: (kind, name, mode, owner, payload)."""
    entries: list[tuple] = []
    for name in draw(st.lists(names, max_size=5 if depth < 2 else 2, unique=True)):
        kinds = ["file", "symlink", "fifo", "hardlink", "device"] + (["dir"] if depth < 4 else [])
        kind = draw(st.sampled_from(kinds))
        mode, owner = draw(modes), draw(owners)
        if kind == "dir":
            payload = draw(trees(depth + 1))
        elif kind == "file":
            payload = draw(st.binary(max_size=64))
        elif kind == "symlink":
            payload = draw(link_targets)
        else:
            payload = None
        entries.append((kind, name, mode, owner, payload))
    return entries


def build(directory: bytes, entries: list[tuple], files: list[bytes]) -> None:
    """Write a generated tree under directory (a host path, bytes)."""
    for kind, name, mode, (uid, gid), payload in entries:
        path = os.path.join(directory, name)
        if kind == "dir":
            os.mkdir(path)
            build(path, payload, files)
        elif kind == "file":
            with open(path, "wb") as handle:
                handle.write(payload)
            files.append(path)
        elif kind == "symlink":
            os.symlink(payload, path)
            os.lchown(path, uid, gid)
            continue
        elif kind == "hardlink":
            if not files:
                continue
            os.link(files[0], path)
            continue
        elif kind == "fifo":
            os.mkfifo(path)
        else:
            os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.chown(path, uid, gid)
        os.chmod(path, mode)


def snapshot(root: Path) -> dict[bytes, tuple]:
    """Return every entry under root's DATA: {relative name: (type, mode, owner, content)}."""
    base = os.fsencode(str(root) + DATA)
    found: dict[bytes, tuple] = {}
    for directory, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            relative = path[len(base) :]
            if stat.S_ISLNK(info.st_mode):
                found[relative] = ("symlink", None, info.st_uid, info.st_gid, os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[relative] = ("dir", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
            elif stat.S_ISREG(info.st_mode):
                with open(path, "rb") as handle:
                    content = handle.read()
                found[relative] = (
                    "file", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, content,
                )  # fmt: skip
            else:
                found[relative] = ("special",)
    return found


@pytest.fixture(scope="module")
def generated_node(local_s3, tmp_path_factory):
    """A generic-profile node whose data tree each example replaces; one repository."""
    from nodes import fresh_repository, make_workspace

    workspace = make_workspace()
    root = workspace / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nalice:x:2601:2601::/srv/data:/bin/false\n"
        "bob:x:2602:2601::/srv/data:/bin/false\n"
    )
    (root / "etc/group").write_text("root:x:0:\npartners:x:2601:alice,bob\n")
    (root / DATA.lstrip("/")).mkdir(parents=True)
    repository = fresh_repository(local_s3, tmp_path_factory.mktemp("generated"), "generated")
    work = workspace / "work"
    work.mkdir()
    config, _ = init_node(root, repository, work, "generic", None, "generated")
    settings_doc = yaml.safe_load(config.read_text())
    settings_doc["profile_options"] = {"generic": {"config": [DATA]}}
    config.write_text(yaml.safe_dump(settings_doc))
    try:
        yield root, config, workspace
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


# The reproductions, always run: a newline and a Latin-1 byte in uploaded names, a
# relative directory symlink, an absolute link that would leave a mounted root, a hard link.
REGRESSIONS = [
    ("file", b"report\n2026.csv", 0o644, (2601, 2601), b"a,b\n"),
    ("file", b"caf\xe9.csv", 0o640, (2602, 2601), b"x"),
    ("file", b"\xe1\x80", 0o644, (0, 0), b""),  # a cut sequence: restic's JSON has 2 U+FFFD
    ("dir", b"common.d", 0o755, (0, 0), [("file", b"a.conf", 0o600, (0, 0), b"k v\n")]),
    ("symlink", b"conf.d", 0o777, (0, 0), b"common.d"),
    ("symlink", b"etc", 0o777, (0, 0), b"/etc"),
    ("hardlink", b"twin", 0o644, (0, 0), None),
    ("fifo", b"pipe", 0o600, (0, 0), None),
]


@SETTINGS
@given(tree=trees())
@example(tree=REGRESSIONS)
def test_backup_exit_0_means_the_tree_comes_back(generated_node, tree):
    root, config, workspace = generated_node
    data = os.fsencode(str(root) + DATA)
    shutil.rmtree(data)
    os.mkdir(data, 0o755)
    build(data, tree, [])
    before = snapshot(root)

    code, backup = drkit("backup", "--config", str(config))
    if code != 0:  # a refusal names the file, and is never a drkit bug
        assert code not in (10, 11), backup
        assert DATA in backup.get("error", ""), backup
        return
    specials = [name for name, found in before.items() if found[0] == "special"]
    if specials:
        assert any("not backed up" in warning for warning in backup["warnings"]), backup

    target = workspace / "target"
    shutil.rmtree(target, ignore_errors=True)
    code, restored = drkit("restore", "latest", "--config", str(config), "--target", str(target))
    assert code in (0, 1), restored  # 1: a check's finding (a file writable by everyone)
    assert restored.get("target"), restored
    expected = {name: found for name, found in before.items() if found[0] != "special"}
    assert snapshot(target) == expected


def test_a_file_uploaded_while_restic_runs_gets_a_snapshot_that_restores(generated_node):
    """An SFTP user's upload lands after the walk, before restic reads the directory: restic
    stores a file the manifest does not list, so the backup takes another pass, and the
    snapshot it reports restores (before: exit 0 and a snapshot every restore refused)."""
    from drkit import config as drkit_config
    from drkit.actions import backup

    root, config_path, workspace = generated_node
    data = Path(str(root) + DATA)
    shutil.rmtree(data)
    data.mkdir(mode=0o755)
    (data / "existing.csv").write_text("a\n")
    (data / "incoming").mkdir(mode=0o755)  # empty at the walk: restic is given the directory
    late = data / "incoming" / b"late\nupload.csv".decode("utf-8", "surrogateescape")
    loaded = drkit_config.load_config(config_path)[0]

    def upload_during(text: str) -> None:
        if text.startswith("uploading") and not late.exists():
            late.write_text("uploaded while restic ran\n")

    result = backup.run(loaded, on_step=upload_during)
    assert result.passes == 2, result
    target = workspace / "target-late"
    code, restored = drkit(
        "restore", "latest", "--config", str(config_path), "--target", str(target)
    )
    assert code in (0, 1), restored
    restored_late = Path(str(target) + DATA) / "incoming" / late.name
    assert restored_late.read_text() == "uploaded while restic ran\n"


accounts = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob", "carol", "dave"]),
        st.sampled_from(["/upload", "/srv/data/shared", "/home/{name}", "/srv/data"]),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda account: account[0],
)


@settings(
    max_examples=int(os.environ.get("DRKIT_GENERATED_EXAMPLES", "12")) // 2 or 1,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(users=accounts)
@example(users=[("alice", "/upload"), ("bob", "/upload"), ("carol", "/home/{name}")])
def test_shared_and_missing_homes_come_back_once_where_the_server_looks(generated_node, users):
    """Accounts that share a home, or whose home the node never had: a restore into a fresh
    target makes each missing home once, where the server looks (the generic profile: the
    passwd home), owned by the first account that lands there, and nothing else."""
    root, config_path, workspace = generated_node
    kept = {path: path.read_text() for path in (root / "etc/passwd", config_path)}
    try:
        _homes_come_back(root, config_path, workspace, users)
    finally:  # the shared node's accounts and settings as they were, for the other tests
        for path, text in kept.items():
            path.write_text(text)


def _homes_come_back(root: Path, config_path: Path, workspace: Path, users) -> None:
    passwd = ["root:x:0:0:root:/root:/bin/sh"]
    for index, (name, home) in enumerate(users):
        passwd.append(f"{name}:x:{2601 + index}:2601::{home.format(name=name)}:/bin/false")
    (root / "etc/passwd").write_text("\n".join(passwd) + "\n")
    data = Path(str(root) + DATA)
    shutil.rmtree(data)
    data.mkdir(mode=0o755)
    settings_doc = yaml.safe_load(config_path.read_text())
    settings_doc["profile_options"] = {
        "generic": {"config": [DATA], "users": [name for name, _ in users]}
    }
    config_path.write_text(yaml.safe_dump(settings_doc))

    code, backup = drkit("backup", "--config", str(config_path))
    assert code == 0, backup
    target = workspace / "target-homes"
    shutil.rmtree(target, ignore_errors=True)
    code, restored = drkit(
        "restore", "latest", "--config", str(config_path), "--target", str(target)
    )
    assert code in (0, 1), restored
    first_owner: dict[str, int] = {}
    for index, (name, home) in enumerate(users):
        first_owner.setdefault(home.format(name=name), 2601 + index)
    for home, uid in first_owner.items():
        made = Path(str(target) + home)
        assert made.is_dir(), (home, restored)
        if home != DATA:  # the backed-up tree itself keeps its own owner
            assert made.stat().st_uid == uid, (home, made.stat().st_uid)
    assert not Path(str(target) + "/home/nobody").exists()
