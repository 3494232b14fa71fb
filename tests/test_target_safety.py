"""A restore target may hold what an attacker planted: links on the paths drkit writes and reads,
FIFOs where it reads, devices and hard links in what restic stages. Real restic and S3 restores
of one snapshot: nothing is written, chmodded or read through a link, nothing hangs, a refused
restore leaves the target exactly as it was, and what drkit makes has its mode under any umask.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from nodes import Node, fresh_node

from drkit import errors
from drkit.engines import accounts, apply, beneath, screen, staged
from drkit.engines.manifest import MANIFEST_PATH
from drkit.model import Manifest
from tests.manifests import partial

pytestmark = pytest.mark.integration
DRKIT = str(Path(sys.executable).parent / "drkit")


def tree(root: Path) -> dict[str, tuple]:
    """Return everything under root and root itself: type, mode, owner, content or link
    target (a FIFO or device is never opened)."""
    found = {}
    for directory, dirnames, filenames in os.walk(root):
        for name in ["", *dirnames, *filenames] if directory == str(root) else dirnames + filenames:
            path = Path(directory, name)
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path).encode()
            else:
                content = b""
            found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, info.st_gid, content)
    return found


@pytest.fixture(scope="module")
def node(local_s3, tmp_path_factory):
    with fresh_node(local_s3, tmp_path_factory.mktemp("target-safety"), "sftp-1") as made:
        made.snapshot = made.backup()
        made.outside = made.workspace / "outside"
        made.outside.mkdir(mode=0o755)
        (made.outside / "secret").write_text("rootsecret:$6$outside:19000:0:99999:7:::\n")
        yield made


def _restore(node: Node, target: Path, *extra: str, umask: int | None = None, timeout=180):
    """Run `drkit restore` as its own process (a hang is a failure, not a stuck suite)."""
    argv = [DRKIT, "restore", node.snapshot, "--config", str(node.config),
            "--target", str(target), "--json", *extra]  # fmt: skip
    if umask is not None:
        argv = ["sh", "-c", f'umask {umask:03o}; exec "$0" "$@"', *argv]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    document = json.loads(done.stdout) if done.stdout.strip() else {"stderr": done.stderr}
    return done.returncode, document, time.monotonic() - started


def _message(document: dict) -> str:
    return (document.get("error") or {}).get("message", "")


# -- 1. a link planted on a path the restore writes -----------------------------------------


@pytest.mark.parametrize(
    "planted",
    [
        "var/lib/drkit/restored",
        "var/lib/drkit",
        "var/lib/drkit/staging",
        "var/lib/drkit/staging.lock",
        "var/lib/drkit/staging.lock.holder",
        "var/lib/drkit/apply-journal.jsonl",
    ],
)
def test_a_link_planted_on_a_path_the_restore_writes_is_refused_and_never_followed(
    node: Node, planted: str
):
    target = node.workspace / f"target-link-{planted.replace('/', '-')}"
    link = target / planted
    link.parent.mkdir(parents=True)
    file_link = planted.endswith(("lock", "holder", "jsonl"))
    aim = node.outside / "secret" if file_link else node.outside
    link.symlink_to(os.path.relpath(aim, link.parent))  # relative: climbs out of the target
    outside, before = tree(node.outside), tree(target)
    code, document, _ = _restore(node, target, "--force")
    assert code == 6, document
    assert f"/{planted} is a symlink" in _message(document), document
    assert tree(node.outside) == outside, "something was written or chmodded outside"
    assert tree(target) == before, "the refused restore changed the target"


def test_a_link_where_the_manifest_restores_a_file_is_replaced_only_with_force(node: Node):
    target = node.workspace / "target-final-link"
    (target / "etc/ssh").mkdir(parents=True)
    link = target / "etc/ssh/sshd_config"
    link.symlink_to(node.outside / "secret")
    outside = tree(node.outside)
    code, document, _ = _restore(node, target)
    assert code == 6 and "not empty" in _message(document), document
    code, document, _ = _restore(node, target, "--force")
    assert code == 0, document
    assert not link.is_symlink() and "secret" not in link.read_text()
    assert tree(node.outside) == outside


# -- 2. a planted account file is never read through ----------------------------------------


def test_a_planted_shadow_link_is_not_read_through(node: Node):
    target = node.workspace / "target-shadow"
    (target / "etc").mkdir(parents=True)
    (target / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (target / "srv").mkdir()
    (target / "srv/notes").write_text("a file of the target's, not an account file\n")
    (target / "etc/shadow").symlink_to("../srv/notes")  # inside the target, still a link
    (target / "etc/group").symlink_to(node.outside / "secret")
    before, outside = tree(target), tree(node.outside)
    code, document, _ = _restore(node, target)
    assert code == 6, document
    assert "/etc/group is a symlink" in _message(document) or (
        "/etc/shadow is a symlink" in _message(document)
    ), document
    assert tree(target) == before and tree(node.outside) == outside


# -- 3. a FIFO where the restore reads ------------------------------------------------------


def test_a_fifo_in_the_target_is_refused_at_once_and_the_lock_released(node: Node):
    target = node.workspace / "target-fifo"
    (target / "etc").mkdir(parents=True)
    os.mkfifo(target / "etc/passwd", 0o644)
    before = tree(target)
    code, document, took = _restore(node, target, timeout=120)
    assert code == 6 and "/etc/passwd: a FIFO" in _message(document), document
    assert took < 60, f"took {took:.0f} s"
    assert stat.S_ISFIFO((target / "etc/passwd").lstat().st_mode)
    assert not (target / apply.APPLY_LOCK.lstrip("/")).exists(), "the target lock is released"
    assert tree(target) == before


# -- 4. a refused restore leaves the target directory for directory as it was ---------------


def test_a_restore_refused_late_leaves_the_target_as_it_was(node: Node):
    target = node.workspace / "target-late"
    (target / "etc").mkdir(parents=True)
    (target / "etc").chmod(0o751)
    (target / "etc/motd").write_text("welcome\n")
    (target / "srv").mkdir(mode=0o700)
    os.chown(target / "srv", 1234, 1234)
    (target / "srv/keep.txt").write_text("kept\n")
    os.mkfifo(target / "etc/group", 0o644)  # met only after every file was applied
    before = tree(target)
    code, document, _ = _restore(node, target, "--force")
    assert code == 6 and "/etc/group: a FIFO" in _message(document), document
    after = tree(target)
    assert sorted(set(after) - set(before)) == [], "left behind by the refused restore"
    assert after == before


def test_a_refused_restore_into_a_new_target_leaves_no_target_behind(node: Node):
    target = node.workspace / "new-parent" / "target-new"
    code, document = node.run("restore", "latest~5", "--target", str(target))
    assert code == 2, document  # no such snapshot: refused before anything is made
    assert not target.parent.exists()  # late refusals: tests/test_hostile.py, every forgery


# -- 5. modes under umask 000 ---------------------------------------------------------------


def test_under_umask_000_everything_the_restore_makes_has_its_own_mode(node: Node):
    base = node.workspace / "umask"
    target = base / "deeper/target"
    code, document, _ = _restore(node, target, umask=0)
    assert code == 0, document
    for made in (base, base / "deeper", target):
        assert stat.S_IMODE(made.stat().st_mode) == 0o755, made
    signed = Manifest.model_validate_json(
        (target / MANIFEST_PATH.lstrip("/").replace("snapshot", "restored")).read_bytes()
    )
    listed = {entry.path: entry for entry in signed.files}
    assert stat.S_IMODE((target / "var/lib/drkit/restored").stat().st_mode) == 0o700
    loose = []
    for path, (mode, _, _, _) in tree(target).items():
        node_path = "/" + path if path else "/"
        entry = listed.get(node_path)
        if entry is not None and entry.type != "symlink":
            assert f"{stat.S_IMODE(mode):04o}" == entry.mode, node_path
        elif entry is None and not stat.S_ISLNK(mode) and mode & 0o022:
            loose.append(f"{node_path} {stat.S_IMODE(mode):04o}")
    assert not loose, f"group- or world-writable though drkit made them: {loose}"


# -- 6. the staged tree: special files, hard links, links on the way ------------------------


@pytest.fixture
def staging(node: Node, tmp_path: Path) -> tuple[Path, Manifest]:
    """A real restic restore of the snapshot, as a restore stages it; with its manifest."""
    done = node.restic("restore", node.snapshot, "--target", str(tmp_path / "staging"))
    assert done.returncode == 0, done.stderr
    root = tmp_path / "staging"
    return root, Manifest.model_validate_json((root / MANIFEST_PATH.lstrip("/")).read_bytes())


def _a_file(signed: Manifest, under: str = "/etc/ssh/") -> str:
    return next(e.path for e in signed.files if e.type == "file" and under in e.path)


def _problems_within(verifier: staged.StagedVerifier, seconds: float = 20) -> list[str]:
    found: list[list[str]] = []
    worker = threading.Thread(target=lambda: found.append(verifier.problems()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert found, f"verifying the staged tree hung for {seconds} s"
    return found[0]


def test_the_screen_refuses_fifos_devices_and_sockets_in_staging(staging):
    root, signed = staging
    listed = _a_file(signed)
    (root / listed.lstrip("/")).unlink()
    os.mkfifo(root / listed.lstrip("/"), 0o600)
    os.mknod(root / "etc/null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(root / "etc/app.sock"))
    try:
        problems = screen.screen_staging(root, signed)
        with staged.StagedVerifier(root, signed) as verifier:
            verifier.restored(listed)  # restic says it wrote it: the hasher must not block
            verified = _problems_within(verifier)
    finally:
        listener.close()
    assert f"{listed}: special file (a FIFO)" in problems, problems
    assert "/etc/null: special file (a character device)" in problems, problems
    assert "/etc/app.sock: special file (a socket)" in problems, problems
    assert f"{listed}: not a regular file" in verified, verified


def test_the_screen_refuses_a_hard_link_out_of_staging_and_splits_those_within(
    staging, tmp_path: Path
):
    root, signed = staging
    files = [e.path for e in signed.files if e.type == "file"]
    outside = tmp_path / "outside-link"
    os.link(root / files[0].lstrip("/"), outside)
    assert any("hard link to a file outside" in p for p in screen.screen_staging(root, signed))
    outside.unlink()
    first, second = root / files[1].lstrip("/"), root / files[2].lstrip("/")
    second.unlink()
    os.link(first, second)  # a forged snapshot joining two listed names
    assert screen.screen_staging(root, signed) == []
    assert first.lstat().st_ino != second.lstat().st_ino and first.lstat().st_nlink == 1


def test_staged_files_are_read_without_following_a_link_on_the_way(staging, tmp_path: Path):
    root, signed = staging
    listed = _a_file(signed)
    staged_dir = (root / listed.lstrip("/")).parent
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    os.mkfifo(decoy / Path(listed).name, 0o600)  # followed, it would block forever
    for child in staged_dir.iterdir():
        os.rename(child, decoy / child.name) if child.name != Path(listed).name else child.unlink()
    staged_dir.rmdir()
    staged_dir.symlink_to(decoy)
    with staged.StagedVerifier(root, signed) as verifier:
        verifier.restored(listed)
        problems = _problems_within(verifier)
    parent = str(Path(listed).parent)
    assert any(p.startswith(f"{listed}: ") and f"{parent} is a symlink" in p for p in problems), (
        problems
    )


def test_an_owned_glob_never_walks_through_a_link_in_the_target(tmp_path: Path):
    target = tmp_path / "target"
    drop_ins = target / "etc/ssh/sshd_config.d"
    drop_ins.mkdir(parents=True)
    (drop_ins / "old.conf").write_text("Port 2222\n")
    (drop_ins / "root").symlink_to("/")  # `**` through it would list the whole host
    (drop_ins / "loop").symlink_to("..")
    signed = partial(owned_globs=["/etc/ssh/sshd_config.d/**"])
    started = time.monotonic()
    steps = apply.plan(target, signed)
    assert time.monotonic() - started < 5
    assert {step.path for step in steps if step.action == "remove"} == {
        "/etc/ssh/sshd_config.d/old.conf",
        "/etc/ssh/sshd_config.d/root",
        "/etc/ssh/sshd_config.d/loop",
    }


def test_account_files_a_check_reads_never_block_on_a_fifo(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    os.mkfifo(tmp_path / "etc/group", 0o644)
    read: list = []
    worker = threading.Thread(
        target=lambda: read.append(accounts.group_entries(tmp_path)), daemon=True
    )
    worker.start()
    worker.join(10)
    assert read == [[]], "reading a FIFO as the group file blocked"


def test_kept_directory_descriptors_never_lead_through_a_link(tmp_path: Path):
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "a/b").mkdir(parents=True)
    elsewhere.mkdir()
    open_before = len(os.listdir("/proc/self/fd"))
    with beneath.Descent(root, keep=2) as descent:
        fd, name = descent.at("/a/b/file")
        assert name == "file"
        # the directory swapped for a link once its descriptor is kept: still the directory
        os.rename(root / "a", tmp_path / "moved")
        (root / "a").symlink_to(elsewhere)
        fd, name = descent.at("/a/b/file")
        os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
        assert (tmp_path / "moved/b/file").exists() and not list(elsewhere.iterdir())
        descent.forget(root / "a")
        with pytest.raises(errors.Refused, match="/a is a symlink"):
            descent.at("/a/b/file")
        for index in range(5):  # at most `keep` descriptors stay open
            (root / f"d{index}").mkdir()
            descent.at(f"/d{index}/file")
        assert len(os.listdir("/proc/self/fd")) <= open_before + 2
    assert len(os.listdir("/proc/self/fd")) == open_before
