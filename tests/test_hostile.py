"""Hostile snapshots: a corpus forged with plain restic, each refused before anything is written.

Every snapshot here is made by plain `restic backup` with drkit's host and tags, from a copy of
a real node whose files or manifest were altered: the tools an attacker with the repository
password has. Some manifests are re-signed with the node's own key (a compromised node signs
whatever is on it), so the checks behind the signature are exercised too. Each one must be
refused (exit 6) with a line naming the cause, leave the target empty and touch nothing outside.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import figures
import pytest
from nodes import Node, fresh_node

from drkit import config as config_module
from drkit.engines import keys, manifest, screen
from drkit.engines.resticjson import TreeNode
from drkit.model import Manifest
from tests.manifests import partial

pytestmark = pytest.mark.integration

SNAPSHOT_DIR = "var/lib/drkit/snapshot"
DRKIT = str(Path(os.sys.executable).parent / "drkit")


def tree(root: Path) -> dict[str, tuple]:
    """Return every path under root with its type, mode and content (to prove 'untouched')."""
    found = {}
    if not root.exists():
        return found
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        link = os.readlink(path) if path.is_symlink() else ""
        found[str(path.relative_to(root))] = (info.st_mode, info.st_uid, content, link)
    return found


@dataclass
class Forged:
    name: str
    snapshot_id: str
    expect: str  # a fragment of the refusal


class Forge:
    """Makes snapshots of altered copies of a node with plain restic (drkit's host and tags)."""

    def __init__(self, node: Node, outside: Path):
        self.node = node
        self.outside = outside
        settings = config_module.load_config(node.config)[0]
        self.signing_key = keys.load_signing_key(settings.signing_key)
        self.untrusted_key = __import__(
            "cryptography.hazmat.primitives.asymmetric.ed25519", fromlist=["x"]
        ).Ed25519PrivateKey.generate()
        manifest_file = node.root / SNAPSHOT_DIR / "manifest.json"
        self.original = json.loads(manifest_file.read_text())

    def make(self, *args, **kwargs) -> Callable[[], Forged]:
        """Return the recipe of one forged snapshot (built by `build`, several at a time)."""
        return lambda: self._make(*args, **kwargs)

    def build(self, recipes: list[Callable[[], Forged]]) -> list[Forged]:
        """Forge every recipe (restic backs up concurrently under shared locks)."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda recipe: recipe(), recipes))

    def _make(
        self,
        name: str,
        expect: str,
        *,
        files: Callable[[Path], list[str] | None] | None = None,
        edit: Callable[[dict], None] | None = None,
        sign: str | None = "node",
        raw_manifest: bytes | None = None,
        signature_text: str | None = None,
        drop_drkit_files: bool = False,
    ) -> Forged:
        root = self.node.workspace / f"forge-{name}"
        subprocess.run(["cp", "-a", str(self.node.root), str(root)], check=True)
        document = json.loads(json.dumps(self.original))
        extra = (files(root) if files else None) or []
        if edit:
            edit(document)
        snapshot_dir = root / SNAPSHOT_DIR
        if drop_drkit_files:
            shutil.rmtree(snapshot_dir)
        elif raw_manifest is not None or edit or sign != "node" or signature_text:
            data = raw_manifest if raw_manifest is not None else _encode(document)
            (snapshot_dir / "manifest.json").write_bytes(data)
            if signature_text is not None:
                (snapshot_dir / "manifest.sig").write_text(signature_text)
            elif sign:
                key = self.signing_key if sign == "node" else self.untrusted_key
                signed = keys.sign(key, data)
                (snapshot_dir / "manifest.sig").write_text(json.dumps(signed))
        paths = [
            path
            for path in manifest.leaf_paths(Manifest.model_validate(self.original))
            if os.path.lexists(root / path)
        ]
        paths += ([] if drop_drkit_files else [SNAPSHOT_DIR]) + extra
        made = self.node.restic(
            "backup", "--json", "--host", self.node.name, "--tag", "drkit",
            "--tag", f"node:{self.node.name}", "--tag", "profile:openssh", *paths, cwd=root,
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        summary = [json.loads(line) for line in made.stdout.splitlines() if '"summary"' in line]
        shutil.rmtree(root)
        return Forged(name, summary[-1]["snapshot_id"], expect)


def _encode(document: dict) -> bytes:
    """Return a forged manifest document in the stored form (what manifest.encode writes)."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _add_entry(document: dict, entry: dict) -> None:
    base = {"category": "config", "uid": 0, "gid": 0, "user": "root", "group": "root",
            "mtime": "2026-01-01T00:00:00Z"}  # fmt: skip
    document["files"].append({**base, **entry})
    document["files"].sort(key=lambda item: item["path"])


def _corpus(forge: Forge) -> list[Callable[[], Forged]]:
    outside = forge.outside
    first_file = next(e for e in forge.original["files"] if e["type"] == "file")

    def backdoor(root: Path):
        (root / "etc/ssh/sshd_config.d").mkdir(exist_ok=True)
        (root / "etc/ssh/sshd_config.d/99-backdoor.conf").write_text("PermitRootLogin yes\n")
        return ["etc/ssh/sshd_config.d/99-backdoor.conf"]

    def tampered_key(root: Path):
        key = root / "etc/ssh/ssh_host_ed25519_key.pub"
        key.write_text(key.read_text().replace("AAAA", "BBBB", 1))

    def special(kind: str):
        def make(root: Path):
            path = root / f"etc/ssh/evil-{kind}"
            if kind == "chardev":
                os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
            elif kind == "blockdev":
                os.mknod(path, 0o660 | 0o060000, os.makedev(7, 0))
            elif kind == "fifo":
                os.mkfifo(path)
            return [f"etc/ssh/evil-{kind}"]

        return make

    def setuid(root: Path):
        os.chmod(root / first_file["path"].lstrip("/"), 0o4755)

    def hard_link(root: Path):
        os.link(root / "etc/ssh/sshd_config", root / "etc/ssh/sshd_config.hard")
        return ["etc/ssh/sshd_config.hard"]

    def control_name(text: str):
        def make(root: Path):
            name = f"etc/ssh/{text}"
            (root / name).write_text("x\n")
            return [name]

        return make

    def swapped_for_symlink(root: Path):
        target = root / "etc/ssh/sshd_config"
        target.unlink()
        target.symlink_to(str(outside / "secret"))

    def through_symlink(document: dict):
        _add_entry(document, {"path": "/etc/ssh/keys", "type": "symlink", "mode": "0777",
                              "link": str(outside)})  # fmt: skip
        _add_entry(document, {"path": "/etc/ssh/keys/planted", "type": "file", "mode": "0644",
                              "size": 2, "sha256": "0" * 64})  # fmt: skip

    def through_symlink_files(root: Path):
        (root / "etc/ssh/keys").symlink_to(str(outside))
        return ["etc/ssh/keys"]

    def dotdot(document: dict):
        _add_entry(document, {"path": "/etc/ssh/../../../planted", "type": "file",
                              "mode": "0644", "size": 2, "sha256": "0" * 64})  # fmt: skip

    def relative(document: dict):
        _add_entry(document, {"path": "etc/ssh/relative", "type": "file", "mode": "0644",
                              "size": 2, "sha256": "0" * 64})  # fmt: skip

    def broad_glob(document: dict):
        document["owned_globs"] = ["/**"]

    def duplicate(document: dict):
        document["files"].append(dict(first_file))

    def other_node(document: dict):
        document["node"] = "sftp-2"

    def loosened(document: dict):
        document["files"][0]["mode"] = "0777"

    signer = keys.signing_fingerprint(forge.signing_key.public_key())
    impostor = keys.sign(forge.untrusted_key, b"x")
    return [
        forge.make("no-manifest", "no drkit manifest", drop_drkit_files=True),
        forge.make("manifest-edited-old-signature", "does not verify", edit=loosened, sign=None),
        forge.make("signature-not-json", "not JSON", signature_text="{not json"),
        forge.make(
            "signature-claims-trusted-signer",
            "does not verify",
            signature_text=json.dumps({**impostor, "signer": signer}),
        ),
        forge.make("untrusted-signer", "untrusted key", sign="untrusted"),
        forge.make("another-nodes-manifest", "is for node sftp-2", edit=other_node),
        forge.make("manifest-not-json", "not JSON", raw_manifest=b"\x00garbage"),
        forge.make(
            "manifest-unknown-format",
            "unknown format",
            raw_manifest=_encode({**forge.original, "format": 99}),
        ),
        forge.make("extra-file", "not in the signed manifest", files=backdoor),
        forge.make("file-content-altered", "content differs", files=tampered_key),
        forge.make("char-device", "chardev entries are never restored", files=special("chardev")),
        forge.make("block-device", "dev entries are never restored", files=special("blockdev")),
        forge.make("fifo", "fifo entries are never restored", files=special("fifo")),
        forge.make("setuid-added", "setuid/setgid bits differ", files=setuid),
        forge.make("hard-link", "not in the signed manifest", files=hard_link),
        forge.make(
            "escape-in-name", "not in the signed manifest", files=control_name("a\x1b]0;x\x07b")
        ),
        forge.make(
            "newline-in-name", "not in the signed manifest", files=control_name("evil\nname")
        ),
        forge.make(
            "file-swapped-for-symlink", "symlink in the snapshot", files=swapped_for_symlink
        ),
        forge.make(
            "file-through-symlinked-dir-signed",
            "under a symlink",
            edit=through_symlink,
            files=through_symlink_files,
        ),
        forge.make("dotdot-path-signed", "'..'", edit=dotdot),
        forge.make("relative-path-signed", "relative path", edit=relative),
        forge.make("glob-removes-everything-signed", "too broad", edit=broad_glob),
        forge.make("duplicate-entry-signed", "listed twice", edit=duplicate),
        forge.make(
            "unsigned-extra-dir",
            "not in the signed manifest",
            files=lambda root: (
                (root / "root/.ssh").mkdir(parents=True, exist_ok=True),
                (root / "root/.ssh/authorized_keys").write_text("ssh-ed25519 AAAA attacker\n"),
                ["root/.ssh/authorized_keys"],
            )[-1],
        ),
    ]


@pytest.fixture(scope="module")
def corpus(local_s3, tmp_path_factory):
    with fresh_node(local_s3, tmp_path_factory.mktemp("hostile-secret"), "sftp-1") as node:
        node.good_id = node.backup()
        outside = node.workspace / "outside"
        outside.mkdir()
        (outside / "secret").write_text("the host's own file\n")
        forge = Forge(node, outside)
        yield node, forge, forge.build(_corpus(forge))


def test_every_hostile_snapshot_is_refused_and_nothing_is_written(corpus):
    node, forge, forged = corpus
    assert len(forged) >= 15
    outside_before = tree(forge.outside)
    refused, failures = 0, []

    def attempt(item: Forged) -> tuple[Forged, int, dict, bool]:
        target = node.workspace / f"target-{item.name}"
        done = subprocess.run(
            [DRKIT, "restore", item.snapshot_id, "--config", str(node.config),
             "--target", str(target), "--json"],
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        empty = not target.exists()  # a refused restore into a new target makes none
        shutil.rmtree(target, ignore_errors=True)
        return item, done.returncode, json.loads(done.stdout), empty

    with ThreadPoolExecutor(max_workers=4) as pool:
        for item, code, document, empty in pool.map(attempt, forged):
            message = (document.get("error") or {}).get("message", "")
            ok = code == 6 and item.expect in message and "\n" not in message and empty
            refused += ok
            if not ok:
                failures.append(f"{item.name}: exit {code}, {message or document}")
    assert tree(forge.outside) == outside_before, "something was written outside the target"
    figures.record("hostile_snapshots", refused=refused, total=len(forged))
    assert not failures, "\n".join(failures)


def test_untrusted_signer_is_accepted_only_with_its_fingerprint(corpus):
    node, forge, forged = corpus
    item = next(f for f in forged if f.name == "untrusted-signer")
    fingerprint = keys.signing_fingerprint(forge.untrusted_key.public_key())
    target = node.workspace / "target-trusted-once"
    code, document = node.run("restore", item.snapshot_id, "--target", str(target))
    assert code == 6 and fingerprint in document["error"]["message"]
    code, document = node.run(
        "restore", item.snapshot_id, "--target", str(target), "--trust-key", fingerprint
    )
    assert code == 0, document
    assert document["trust"] == "key" and document["signer"] == fingerprint


def test_a_symlink_in_the_target_is_never_written_through(corpus, tmp_path: Path):
    node, forge, _ = corpus
    target = node.workspace / "target-symlinked"
    (target / "etc").mkdir(parents=True)
    (target / "etc/ssh").symlink_to(forge.outside)
    before = tree(forge.outside)
    code, document = node.run("restore", node.good_id, "--target", str(target), "--force")
    assert code == 6 and "/etc/ssh is a symlink" in document["error"]["message"], document
    assert tree(forge.outside) == before
    assert (target / "etc/ssh").is_symlink()
    shutil.rmtree(target)


# -- the same rules on listings restic cannot produce from a filesystem ---------------------


def _listing_manifest(*more: dict) -> Manifest:
    return partial(files=[
        {"path": "/etc", "type": "dir", "mode": "0755"},
        {"path": "/etc/app.conf", "type": "file", "mode": "0644", "size": 3},
        {"path": "/etc/link", "type": "symlink", "mode": "0777", "link": "/srv"},
        *more,
    ])  # fmt: skip


@pytest.mark.parametrize(
    "node, expect",
    [
        ({"path": "/etc/../etc/app.conf", "type": "file"}, "'..'"),
        ({"path": "etc/app.conf", "type": "file"}, "relative path"),
        ({"path": "/etc/app.conf", "type": "file", "size": 3}, "appears twice"),
        ({"path": "/etc/link/x", "type": "file", "size": 1}, "symlinked directory"),
        ({"path": "/etc/sock", "type": "socket"}, "socket entries are never restored"),
        ({"path": "/etc/app\x7f", "type": "file"}, "not in the signed manifest"),
    ],
    ids=["dotdot", "relative", "duplicate", "through-symlink", "socket", "delete-char"],
)
def test_listing_rules_beyond_what_restic_writes(node, expect):
    listing = [
        {"path": "/etc", "type": "dir", "mode": 0o755 | 1 << 31},
        {"path": "/etc/app.conf", "type": "file", "mode": 0o644, "size": 3},
        {"path": "/etc/link", "type": "symlink", "mode": 0o777},
        node,
    ]
    nodes = [TreeNode.model_validate(entry) for entry in listing]
    problems = screen.screen_listing(nodes, _listing_manifest())
    assert any(expect in problem for problem in problems), problems


def test_socket_file_in_staging_is_refused(tmp_path: Path):
    staging = tmp_path / "staging"
    (staging / "etc").mkdir(parents=True)
    (staging / "etc/app.conf").write_text("abc")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(staging / "etc/app.sock"))
    try:
        listed = _listing_manifest({"path": "/etc/app.sock", "type": "file", "mode": "0644"})
        problems = screen.screen_staging(staging, listed)
    finally:
        listener.close()
    assert any("special file" in problem for problem in problems), problems


def test_subprocess_free_of_traceback(corpus):
    """A hostile snapshot through the real command line: one line on stderr, no traceback."""
    node, _, forged = corpus
    item = forged[0]
    done = subprocess.run(
        [DRKIT, "restore", item.snapshot_id, "--config", str(node.config),
         "--target", str(node.workspace / "cli-target")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 6
    errors_shown = [line for line in done.stderr.splitlines() if line.startswith("drkit: error")]
    assert "Traceback" not in done.stderr and len(errors_shown) == 1, done.stderr
