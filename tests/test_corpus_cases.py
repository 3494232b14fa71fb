"""The corpus of real configurations loads, is described completely, and builds into a node root.

Fast (no server runs): every case.yaml parses into a Case, the corpus keeps at least 30
configurations from at least 18 sources covering every server, and at least 8 broken twins (each
a copy of a case with one defect its real server refuses), and materialising each case produces
every path its expect_files names (config files copied, keys and certificates generated).
"""

from __future__ import annotations

import re

import pytest
from corpus.cases import PLACEHOLDER, SERVERS, load_cases, materialise

CASES = load_cases()
TWINS = [case for case in CASES if case.twin_of]


def test_corpus_size_and_spread():
    configurations = [case for case in CASES if not case.twin_of]
    assert len(configurations) >= 30
    assert len({c.source.key for c in configurations}) >= 18
    assert len(TWINS) >= 8
    assert {c.server for c in configurations} == set(SERVERS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_is_described(case):
    assert case.name.startswith(f"{case.server}-")
    src = case.source
    assert (
        (src.repository and src.path and re.fullmatch(r"[0-9a-f]{40}", src.commit or ""))
        or (src.package and src.version)
        or (src.url and src.version)  # a wiki page: its URL and the revision read
    ), "source needs repository+path+commit, package+version or url+version"
    assert bool(case.twin_of) == bool(case.expect_fail), "a broken twin says how drkit must fail"
    assert case.changes, "every change to the original is listed (at least the loopback rewrite)"
    assert case.expect_files
    assert case.config in case.expect_files
    assert (case.files_root / case.config.lstrip("/")).is_file()
    assert not set(case.expect_files) & set(case.expect_missing_ok)
    assert all(p.startswith("/") for p in (*case.expect_files, *case.expect_missing_ok))
    # no private key material is committed
    for path in case.files_root.rglob("*"):
        if path.is_file():
            assert "PRIVATE KEY" not in path.read_text(errors="replace"), path


@pytest.mark.parametrize("twin", TWINS, ids=lambda c: c.name)
def test_broken_twin_is_described(twin):
    original = next((c for c in CASES if c.name == twin.twin_of and not c.twin_of), None)
    assert original, f"{twin.name}: twin_of {twin.twin_of!r} is not a case of the corpus"
    assert twin.name.startswith(f"{original.name}-twin-")
    assert twin.source == original.source and twin.server == original.server
    assert twin.defect and twin.server_said, "the defect and what the real server said of it"
    assert twin.expect_fail.check and twin.expect_fail.detail


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_case_materialises(case, tmp_path):
    root = tmp_path / "node"
    built = materialise(case, root)
    # a node's link with an absolute target points into the node, not into this host
    missing = [
        p for p in case.expect_files if not (built.node(p).exists() or built.node(p).is_symlink())
    ]
    assert not missing, f"{case.name}: expect_files missing after materialising: {missing}"
    for path in root.rglob("*"):
        if path.is_file() and not path.name.endswith(".db"):
            text = path.read_text(errors="replace")
            assert not PLACEHOLDER.search(text), f"unfilled placeholder in {path}"
    assert all(1024 < port < 65536 for port in built.ports.values())
    for user in case.users:
        assert built.node(user.home).is_dir()
    passwd = (root / "etc/passwd").read_text()
    for user in case.users:
        assert (f"\n{user.name}:" in "\n" + passwd) != user.virtual
    for key in case.generate.host_keys:
        assert "PRIVATE KEY" in built.node(key.path).read_text()
    for user, private in built.client_keys.items():
        assert private.is_file() and not private.is_relative_to(root), user
