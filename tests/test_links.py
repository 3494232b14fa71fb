"""Links are data: a node's symlinks are recorded as links and resolved inside its root.

A node mounted at --root (a container's or a disk's tree) holds absolute links that mean its
own files; followed on the host they would back up the host's files as the node's.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drkit.engines import manifest
from drkit.model import Entry, FileRecord, Inventory
from drkit.paths import LinkResolver, on_root, resolve_links
from tests.manifests import partial


def built(root: Path, *paths: str) -> dict[str, FileRecord]:
    inventory = Inventory(files=[Entry(path, "config") for path in paths])
    node_manifest = manifest.build(
        root, inventory, node="n", profiles=[], accounts=[], created=datetime.now(UTC)
    )
    return {entry.path: entry for entry in node_manifest.files}


def test_an_absolute_link_in_a_mounted_root_is_the_nodes_own_file(tmp_path: Path):
    root = tmp_path / "mnt"
    (root / "etc/ssh/keys").mkdir(parents=True)
    (root / "etc/ssh/keys/host_key").write_text("the node's key\n")
    os.symlink("/etc/ssh/keys/host_key", root / "etc/ssh/ssh_host_ed25519_key")
    os.symlink("/etc", root / "etc/ssh/hostetc")  # would be the host's /etc, followed on the host
    files = built(root, "/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/hostetc/passwd")

    link = files["/etc/ssh/ssh_host_ed25519_key"]
    assert link.type == "symlink" and link.link == "/etc/ssh/keys/host_key"
    key = files["/etc/ssh/keys/host_key"]
    assert key.sha256 == manifest.sha256_file(root / "etc/ssh/keys/host_key")
    assert files["/etc/ssh/hostetc"].type == "symlink"
    assert "/etc/passwd" not in files  # the node has none: the host's is never read
    assert on_root(root, "/etc/ssh/hostetc/passwd") == root / "etc/passwd"


def test_a_relative_directory_link_is_a_link_and_its_files_are_under_the_target(tmp_path):
    root = tmp_path / "node"
    (root / "etc/ssh/sshd_config.common.d").mkdir(parents=True)
    (root / "etc/ssh/sshd_config.common.d/10-sftp.conf").write_text("Subsystem sftp x\n")
    os.symlink("sshd_config.common.d", root / "etc/ssh/sshd_config.d")
    files = built(root, "/etc/ssh/sshd_config.d/10-sftp.conf", "/etc/ssh/sshd_config.d")

    assert files["/etc/ssh/sshd_config.d"].type == "symlink"
    assert files["/etc/ssh/sshd_config.common.d/10-sftp.conf"].type == "file"
    assert not any(path.startswith("/etc/ssh/sshd_config.d/") for path in files)
    leaves = manifest.leaf_paths(partial(files=list(files.values())))
    assert "etc/ssh/sshd_config.d" in leaves  # restic is given the link itself


def test_links_climbing_out_of_the_root_stop_at_it_and_loops_end(tmp_path: Path):
    root = tmp_path / "node"
    (root / "srv").mkdir(parents=True)
    os.symlink("../../../../../..", root / "srv/up")
    os.symlink("loop", root / "srv/loop")
    assert resolve_links(root, "/srv/up/srv") == ("/srv", ["/srv/up"])
    assert not on_root(root, "/srv/loop/x").exists()
    files = built(root, "/srv/loop", "/srv/up")
    assert files["/srv/loop"].type == "symlink" and files["/srv/up"].type == "symlink"
    assert set(files) == {"/srv", "/srv/loop", "/srv/up"}  # the root is never taken whole
    assert files["/srv"].category == "parents" and files["/srv"].type == "dir"


_NAMES = st.sampled_from(["a", "b", "c", ".", ".."])
_TARGETS = st.lists(_NAMES, min_size=1, max_size=4).map("/".join)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    links=st.dictionaries(
        st.sampled_from(["a/l", "a/b/l", "c/l", "l"]),
        st.tuples(st.booleans(), _TARGETS),
        max_size=4,
    ),
    asked=st.lists(
        st.lists(st.sampled_from(["a", "b", "c", "l", "x", ".", ".."]), min_size=1, max_size=5),
        min_size=1,
        max_size=8,
    ),
)
def test_resolving_many_paths_by_their_parents_answers_as_resolving_each(
    tmp_path_factory, links, asked
):
    """LinkResolver (each parent resolved once, for a 100,000-file inventory) against
    resolve_links on generated trees of relative, absolute, dangling and looping links."""
    root = tmp_path_factory.mktemp("root")
    for directory in ("a/b", "c"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "a/b/x").write_text("x")
    for where, (absolute, target) in links.items():
        os.symlink(("/" if absolute else "") + target, root / where)
    resolver = LinkResolver(root)
    for parts in asked:
        path = "/" + "/".join(parts)
        try:
            expected: object = resolve_links(root, path)
        except OSError as exc:
            expected = exc.errno
        try:
            answered: object = resolver.links(path)
        except OSError as exc:
            answered = exc.errno
        assert answered == expected, path
