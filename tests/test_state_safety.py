"""State safety (issue 21 parts 4 to 7), on a real node backed up with restic into SeaweedFS.

- A signing-key rotation killed at any step: the on-disk state each kill leaves is built and
  the next real command (a backup) finishes or undoes the rotation by itself; no backup signs
  with a key its drkit.yaml does not trust.
- The chain record and every other state file: a leftover or planted `.tmp` is replaced, never
  followed; a full disk under state_dir (a 64 KiB tmpfs) is exit 9 and leaves no `.tmp`.
- umask 000: init, backup and status create nothing group- or world-writable.
- Bad input (a config that is not UTF-8, a duration that overflows, a FIFO as config or
  password file, an empty password file): its exit code, one line, in bounded time.
- Bucket-write-only denial: 400 KB of nested JSON at the chain head, the catalog key or a
  `.sig` object is ignored as absent with one warning; backup and restore go on, verify finds it.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nodes import SMOKE_USER, Node, fresh_node, fresh_repository, make_workspace, prepare_repository

from devtools import sample_node
from drkit.engines import catalog, keys, manifest
from drkit.engines.storage import Storage

pytestmark = pytest.mark.integration

DRKIT = Path(sys.executable).with_name("drkit")


def cli(
    config: Path | None,
    *args: str,
    umask: int | None = None,
    timeout: float = 120,
    as_json: bool = True,
) -> tuple[int, dict, list[str], float]:
    """Run the real drkit command in its own process; return (exit, its JSON document ({}
    without as_json), stderr lines, seconds)."""
    options = ["--json"] if as_json else []
    argv = [str(DRKIT), *args, *options, *(["--config", str(config)] if config else [])]
    started = time.monotonic()
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
    )
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    document = json.loads(completed.stdout) if as_json else {}
    return completed.returncode, document, lines, time.monotonic() - started


@pytest.fixture(scope="module")
def node(local_s3, tmp_path_factory):
    with fresh_node(local_s3, tmp_path_factory.mktemp("state")) as made:
        made.backup()
        yield made


def settings(node: Node) -> dict:
    return yaml.safe_load(node.config.read_text())


def key_path(node: Node) -> Path:
    return Path(settings(node)["signing_key"])


def trust(node: Node, *fingerprints: str) -> None:
    data = settings(node)
    data["trusted_keys"] = list(dict.fromkeys([*data["trusted_keys"], *fingerprints]))
    node.config.write_text(yaml.safe_dump(data, sort_keys=False))


def new_key() -> tuple[bytes, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, keys.signing_fingerprint(key.public_key())


def put_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def journal(node: Node, old: str) -> None:
    record = {"signing_key": str(key_path(node)), "old": old}
    put_private(keys.rotation_journal(node.state), json.dumps(record).encode())


# -- key rotation: the state each kill leaves, then the next real command -----------------


def killed_after_the_journal(node: Node, old: str, new: tuple[bytes, str]) -> str:
    journal(node, old)
    return old


def killed_while_writing_the_new_key(node: Node, old: str, new: tuple[bytes, str]) -> str:
    journal(node, old)
    pending = keys.next_key_path(key_path(node))
    put_private(pending.with_name(pending.name + ".tmp"), new[0][: len(new[0]) // 2])
    return old


def killed_after_the_new_key(node: Node, old: str, new: tuple[bytes, str]) -> str:
    journal(node, old)
    put_private(keys.next_key_path(key_path(node)), new[0])
    return new[1]


def killed_after_the_config(node: Node, old: str, new: tuple[bytes, str]) -> str:
    killed_after_the_new_key(node, old, new)
    trust(node, old, new[1])
    return new[1]


def killed_after_the_rename(node: Node, old: str, new: tuple[bytes, str]) -> str:
    journal(node, old)
    trust(node, old, new[1])
    put_private(key_path(node), new[0])
    return new[1]


def older_drkit_killed_after_moving_the_key_aside(node, old, new) -> str:
    path = key_path(node)
    os.replace(path, path.with_name(path.name + ".retiring"))
    return old


def older_drkit_killed_after_writing_the_new_key(node, old, new) -> str:
    older_drkit_killed_after_moving_the_key_aside(node, old, new)
    put_private(key_path(node), new[0])
    return old


KILL_POINTS = [
    killed_after_the_journal,
    killed_while_writing_the_new_key,
    killed_after_the_new_key,
    killed_after_the_config,
    killed_after_the_rename,
    older_drkit_killed_after_moving_the_key_aside,
    older_drkit_killed_after_writing_the_new_key,
]


@pytest.mark.parametrize("kill", KILL_POINTS, ids=lambda kill: kill.__name__)
def test_the_next_backup_finishes_or_undoes_a_killed_rotation(node, kill):
    path = key_path(node)
    old = keys.fingerprint_at(path)
    expected = kill(node, old, new_key())
    code, document, lines, _ = cli(node.config, "backup")
    assert code == 0, (document, lines)
    said = [line for line in lines if "interrupted key rotation" in line]
    assert len(said) == 1 and expected in said[0], lines
    code, shown, _, _ = cli(node.config, "show", document["snapshot_id"])
    assert code == 0 and shown["signer"] == expected and shown["trusted"], shown
    assert keys.fingerprint_at(path) == expected and expected in settings(node)["trusted_keys"]
    assert old in settings(node)["trusted_keys"]  # snapshots it signed stay verifiable
    pending = keys.next_key_path(path)
    leftovers = [pending, pending.with_name(pending.name + ".tmp"), keys.rotation_journal(
        node.state), path.with_name(path.name + ".retiring")]  # fmt: skip
    assert [p for p in leftovers if p.exists()] == []
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_backup_never_signs_with_a_key_its_config_does_not_trust(node):
    path = key_path(node)
    kept = path.read_bytes()
    pem, untrusted = new_key()
    before = len(json.loads(node.restic("snapshots", "--json").stdout))
    put_private(path, pem)
    try:
        code, document, _, _ = cli(node.config, "backup")
        plain, _, lines, _ = cli(node.config, "backup", as_json=False)
    finally:
        put_private(path, kept)
    assert code == plain == 2 and document["error"]["kind"] == "config", document
    assert untrusted in document["error"]["message"] and "trusted_keys" in lines[-1]
    assert len(json.loads(node.restic("snapshots", "--json").stdout)) == before


# -- the chain record and a full disk ----------------------------------------------------------


def test_a_planted_chain_tmp_is_replaced_never_followed(node, tmp_path):
    chain = node.state / "chain" / f"{node.name}.json"
    outside = tmp_path / "outside"
    outside.write_text("not drkit's\n")
    planted = chain.with_name(chain.name + ".tmp")
    planted.symlink_to(outside)
    assert node.backup()
    assert outside.read_text() == "not drkit's\n" and not os.path.lexists(planted)
    assert json.loads(chain.read_text())["previous"]["snapshot_id"]
    assert chain.stat().st_mode & 0o777 == 0o600


@pytest.fixture
def small_disk(node):
    """A 64 KiB tmpfs as the node's state_dir, in a copy of its config; unmounted after."""
    mount = node.workspace / "small-state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        data = settings(node)
        data["state_dir"] = str(mount)
        config = node.workspace / "small-disk.yaml"
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        config.chmod(0o600)
        yield mount, config
    finally:
        subprocess.run(["umount", str(mount)], check=True)
        mount.rmdir()


def fill(mount: Path, leave_pages: int) -> None:
    """Fill the tmpfs, then free leave_pages pages of it."""
    filler = mount / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave_pages * 4096))


@pytest.mark.parametrize("leave_pages", [0, 1, 2])
def test_a_full_disk_under_state_dir_is_exit_9_and_leaves_no_tmp(node, small_disk, leave_pages):
    mount, config = small_disk
    fill(mount, leave_pages)
    code, document, lines, seconds = cli(config, "backup", timeout=120)
    assert code == 9 and document["error"]["kind"] == "filesystem", (document, lines)
    assert "disk full" in document["error"]["message"] or "No space" in document["error"]["message"]
    assert sorted(str(p) for p in mount.rglob("*.tmp")) == []
    assert seconds < 60


# -- umask 000 ---------------------------------------------------------------------------------


def test_nothing_drkit_creates_is_group_or_world_writable_under_umask_000(local_s3, tmp_path):
    workspace = make_workspace()
    try:
        repository = fresh_repository(local_s3, tmp_path)
        prepare_repository(repository)
        root, state, config = workspace / "root", workspace / "state", workspace / "drkit.yaml"
        made = sample_node.build(root, smoke_user=SMOKE_USER, chroot=True)
        includes = [
            f"--include={category}={pattern}"
            for category, patterns in made["includes"].items()
            for pattern in patterns
        ]
        outside = tmp_path / "outside"
        outside.write_text("not drkit's\n")
        (workspace / "drkit.yaml.tmp").write_text("a killed init's leftover")
        (workspace / "signing.key.tmp").symlink_to(outside)  # planted: never written through
        code, document, lines, _ = cli(
            None, "init", "--config", str(config), "--node", "umask-1", "--root", str(root),
            "--s3-endpoint", repository.s3_endpoint, "--bucket", repository.bucket,
            "--prefix", repository.prefix, "--password-file", str(repository.password_file),
            "--state-dir", str(state), "--lock-days", "1", *includes, umask=0,
        )  # fmt: skip
        assert code == 0, (document, lines)
        assert not [p for p in workspace.iterdir() if p.name.endswith(".tmp")]
        assert outside.read_text() == "not drkit's\n"
        for command in (["backup"], ["status"]):
            code, document, lines, _ = cli(config, *command, umask=0)
            assert code == 0, (command, document, lines)
        created = [state, *state.rglob("*"), config, Path(settings_of(config)["signing_key"])]
        snapshot_dir = root / manifest.SNAPSHOT_DIR.lstrip("/")
        created += [snapshot_dir, *snapshot_dir.rglob("*")]
        loose = {str(p): oct(p.lstat().st_mode & 0o777) for p in created
                 if not p.is_symlink() and p.lstat().st_mode & 0o022}  # fmt: skip
        assert loose == {}
        assert mode(state) == 0o755 and mode(state / "locks") == 0o700
        assert {mode(lock) for lock in (state / "locks").glob("*.lock")} == {0o600}
        assert mode(state / "status" / "umask-1.json") == 0o644
        assert mode(config) == 0o600 and mode(Path(settings_of(config)["signing_key"])) == 0o600
        assert mode(snapshot_dir) == 0o700
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


def settings_of(config: Path) -> dict:
    return yaml.safe_load(config.read_text())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- bad input: its exit code, one line, bounded time -------------------------------------------


def _variant(node: Node, name: str, change) -> Path:
    data = settings(node)
    change(data)
    path = node.workspace / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    path.chmod(0o600)
    return path


def not_utf8(node: Node) -> Path:
    path = node.workspace / "latin1.yaml"
    path.write_bytes(node.config.read_bytes() + b"# caf\xe9\n")
    return path


def huge_rpo(node: Node) -> Path:
    return _variant(node, "rpo.yaml", lambda d: d.update(objectives={"rpo": "9" * 21 + "d"}))


def fifo_config(node: Node) -> Path:
    path = node.workspace / "config.fifo"
    os.mkfifo(path, 0o600)
    return path


def _password(node: Node, name: str, make) -> Path:
    path = node.workspace / name
    path.unlink(missing_ok=True)
    make(path)
    return _variant(node, f"{name}.yaml", lambda d: d["repository"].update(password_file=str(path)))


def fifo_password(node: Node) -> Path:
    return _password(node, "password.fifo", lambda path: os.mkfifo(path, 0o600))


def empty_password(node: Node) -> Path:
    return _password(node, "password.empty", lambda path: put_private(path, b"\n"))


BAD_INPUT = [
    (not_utf8, "status", "not UTF-8"),
    (huge_rpo, "status", "objectives.rpo"),
    (fifo_config, "status", "configuration file is a FIFO"),
    (fifo_password, "snapshots", "repository password file is a FIFO"),
    (fifo_password, "backup", "repository password file is a FIFO"),
    (empty_password, "snapshots", "is empty"),
    (empty_password, "backup", "is empty"),
]


@pytest.mark.parametrize(("make", "command", "fragment"), BAD_INPUT,
                         ids=[f"{m.__name__}-{c}" for m, c, _ in BAD_INPUT])  # fmt: skip
def test_bad_input_is_one_line_with_its_exit_code(node, make, command, fragment):
    config = make(node)
    try:
        code, document, _, seconds = cli(config, command, timeout=60)
        plain, _, lines, _ = cli(config, command, timeout=60, as_json=False)
    finally:
        config.unlink()
    assert code == plain == 2 and fragment in document["error"]["message"], document
    said = [line for line in lines if line.startswith("drkit: error:")]
    assert said == [lines[-1]] and fragment in said[0] and "Traceback" not in str(lines), lines
    assert seconds < 30


# -- bucket-write-only denial ----------------------------------------------------------------

DEEP_AND_LARGE = b"[" * 400_000  # over every size limit of these objects
DEEP_AND_SMALL = b"[" * 40_000  # under the 64 KiB of a key or .sig object: the depth decides


def _objects(node: Node, snapshot_id: str) -> dict[str, str]:
    return {
        "head": catalog.head_key(node.name),
        "key": catalog.key_object_key(node.name),
        "sig": catalog.signature_key(node.name, snapshot_id),
    }


def test_the_shape_check_counts_brackets_outside_strings_only():
    deep = json.dumps({"a": '\\"[[[[' * 100, "b": [[{"c": "]]]"}]]}).encode()
    assert catalog.shape_problem("records/n/head.json", deep) is None
    nested = b'{"a":' * 33 + b"1" + b"}" * 33
    assert "deeper than 32" in catalog.shape_problem("manifests/n/x.sig", nested)
    assert catalog.shape_problem("reports/n/page.html", DEEP_AND_LARGE) is None  # not JSON


PLANTED = [("head", DEEP_AND_LARGE), ("key", DEEP_AND_SMALL), ("sig", DEEP_AND_LARGE)]


@pytest.mark.parametrize(("which", "planted"), PLANTED, ids=[f"{w}-{len(p)}" for w, p in PLANTED])
def test_nested_json_planted_in_the_bucket_is_ignored_with_one_line(node, which, planted):
    snapshot_id = node.backup()
    storage = Storage(node.repository)
    key = _objects(node, snapshot_id)[which]
    good = storage.get_bytes(key)
    assert good is not None
    storage.put_bytes(key, planted, "application/json")
    try:
        target = node.workspace / f"target-{which}-{len(planted)}"
        code, document, lines, _ = cli(node.config, "restore", "latest", "--target", str(target))
        assert code in (0, 6), (document, lines)
        assert len([line for line in lines if key in line]) == 1, lines
        code, document, lines, _ = cli(node.config, "verify", "--spot", "0")
        assert code == 1 and any(key in problem for problem in document["problems"]), document
        code, document, lines, _ = cli(node.config, "backup")
        assert code == 0, (document, lines)
        if which == "key":  # a new catalog key took the planted object's place
            assert catalog.shape_problem(key, storage.get_bytes(key) or b"") is None
            assert storage.get_bytes(key) != planted
    finally:
        if which == "sig":  # the backup wrote a new head and key; a snapshot's .sig stays
            storage.put_bytes(key, good, "application/json")
        shutil.rmtree(node.workspace / f"target-{which}-{len(planted)}", ignore_errors=True)


# -- last: a rotation of the restic key (it slows every later restic open of this node) --------


def test_a_rotation_killed_after_the_new_password_took_over_is_finished_by_the_next(node, tmp_path):
    old = tmp_path / "old.password"
    put_private(old, b"the password before the rotation\n")
    assert node.restic("key", "add", "--new-password-file", str(old)).returncode == 0
    listed = json.loads(node.restic("key", "list", "--json").stdout)
    stale = [key["id"] for key in listed if not key["current"]]
    journal = keys.restic_rotation_journal(node.state)
    put_private(journal, json.dumps({"remove": stale}).encode())
    _, _, lines, _ = cli(node.config, "snapshots", as_json=False)
    assert len([line for line in lines if "old one still opens the repository" in line]) == 1
    code, rotated, lines, _ = cli(node.config, "keys", "rotate")
    assert code == 0, (rotated, lines)
    assert any("old restic key" in line and stale[0][:8] in line for line in lines), lines
    listed = json.loads(node.restic("key", "list", "--json").stdout)
    assert [key["id"] for key in listed] == [rotated["restic_keys"]["added"]]
    assert node.restic("--password-file", str(old), "snapshots").returncode == 12
    assert not journal.exists()
