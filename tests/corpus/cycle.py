"""One corpus case through drkit as an operator would run it, end to end (see
tests/test_corpus_cycle*.py: the cases are split across files by server, so parallel workers
share them).

discover -> init -> backup -> (the snapshot holds exactly what the configuration names) ->
the node destroyed -> restore --smoke (a real server started from the restored files and a real
login; the static proof for a server that cannot run here) -> check. Real SeaweedFS, restic,
sshd, proftpd, vsftpd and pure-ftpd on 127.0.0.1. A broken twin (a case with one defect its real
server refuses) runs the same cycle and must be failed, naming the cause, by restore's smoke or
by check.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from corpus.cases import Case, materialise
from nodes import drkit, init_node


def failing(document: dict) -> dict[str, str]:
    return {c["name"]: c["detail"] for c in document.get("checks", []) if c["status"] == "fail"}


def assert_refused(case: Case, *documents: dict) -> None:
    """Assert that a broken twin's restore or check failed the check its expect_fail names,
    with a detail naming the cause."""
    want = case.expect_fail
    found = [
        name
        for document in documents
        for name, detail in failing(document).items()
        if want.check in name and want.detail in detail
    ]
    assert found, (
        f"{case.name}: the broken twin ({case.defect}) was not failed by "
        f"'{want.check}' naming '{want.detail}'; failing: {[failing(d) for d in documents]}"
    )


def init_flags(case: Case) -> list[str]:
    """Return init's --profile-option flags for the case's profile options and the --include
    flags its operator gives."""
    return [
        *(f"--include={item}" for item in case.includes),
        *(
            f"--profile-option={kind}.{key}={value}"
            for kind, options in case.profile_options.items()
            for key, value in options.items()
        ),
    ]


def run_cycle(case: Case, node_root: Path, s3_repository) -> None:
    """Run one corpus case's whole cycle (see the module docstring)."""
    root = node_root / "root"
    work = node_root / "work"
    work.mkdir(mode=0o755)
    materialise(case, root, client_dir=node_root / "clients")

    code, discovered = drkit("discover", "--root", str(root))
    assert code == 0, discovered
    if not case.profile_options:  # a non-default location is found from the unit, or named
        assert case.server in [server["server"] for server in discovered["servers"]], discovered

    config, _ = init_node(
        root, s3_repository, work, case.server, case.smoke_user, case.name, *init_flags(case)
    )
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0, backup
    code, shown = drkit("show", "latest", "--config", str(config))
    assert code == 0, shown
    held = {entry["path"] for entry in shown["files"]}
    missing = sorted(set(case.expect_files) - held)
    assert not missing, f"{case.name}: the snapshot lacks what the config names: {missing}"

    shutil.rmtree(root)
    smoke = ["--smoke"] if case.smoke_user else []
    code, restored = drkit("restore", "latest", *smoke, "--config", str(config))
    if case.expect_fail:
        code, checked = drkit("check", "--target", str(root), "--config", str(config))
        assert_refused(case, restored, checked)
        return
    assert code == 0 and not failing(restored), (case.name, failing(restored))
    if case.smoke_user:  # the typed proof: the real server took a real login
        proofs = restored["smoke"]
        assert proofs and all(p["judged"] and p["login_ok"] for p in proofs), (case.name, proofs)
    for path in case.expect_files:
        assert (root / path.lstrip("/")).exists() or (root / path.lstrip("/")).is_symlink(), path

    code, checked = drkit("check", "--target", str(root), "--config", str(config))
    assert code == 0 and not failing(checked), (case.name, failing(checked))
    assert case.smoke_user or case.no_smoke, "a case without a smoke user says why"
