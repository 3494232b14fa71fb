"""Documented fleet drift behaviour: `--group` picks one group's nodes out of a shared
repository, and TLS and staleness findings, with real restic and SeaweedFS."""

from __future__ import annotations

import subprocess

import pytest
import yaml
from nodes import SMOKE_USER, clone_root, drkit, init_group_node, init_node, signer_of

from devtools import sample_node
from drkit.paths import on_root

pytestmark = pytest.mark.integration


def test_fleet_drift_of_one_group_names_tls_and_stale_nodes(node_root, s3_repository):
    names = ("sftp-1", "sftp-2", "sftp-3", "sftp-9")
    roots = {name: node_root / name for name in names}
    made = sample_node.build(roots["sftp-1"], smoke_user=SMOKE_USER, chroot=True)
    for name in names[1:]:
        clone_root(roots["sftp-1"], roots[name])
    tls = [f"--include=tls={path}" for path in made["includes"]["tls"]]
    configs = {}
    for name, root in roots.items():
        work = node_root / f"{name}-work"
        work.mkdir(mode=0o755)
        group = "sftp-other" if name == "sftp-9" else "sftp-prod"
        configs[name] = init_node(root, s3_repository, work, None, None, name, "--group", group,
                                  "--include", "audit_logs=/var/log/sftp/*", *tls)[0]  # fmt: skip
    certificate = made["tls"]["certificate"]
    key = made["tls"]["key"]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=other",
         "-days", "10", "-keyout", str(on_root(roots["sftp-3"], key)),
         "-out", str(on_root(roots["sftp-3"], certificate))],
        check=True, capture_output=True,
    )  # fmt: skip
    for config in configs.values():
        code, document = drkit("backup", "--config", str(config))
        assert code == 0, document
    # judged from sftp-9 (another group), whose RPO of 1 s the first backups are past by now
    data = yaml.safe_load(configs["sftp-9"].read_text())
    data["objectives"] = {**(data.get("objectives") or {}), "rpo": "1s"}
    configs["sftp-9"].write_text(yaml.safe_dump(data, sort_keys=False))
    trust = [arg for config in configs.values() for arg in ("--trust-key", signer_of(config))]

    code, drift = drkit(
        "fleet", "drift", "--group", "sftp-prod", "--config", str(configs["sftp-9"]), *trust
    )
    assert code == 1 and drift["ok"] is False, drift
    assert drift["group"] == "sftp-prod"
    assert [n["node"] for n in drift["nodes"]] == ["sftp-1", "sftp-2", "sftp-3"]
    found = {(f["node"], f["category"], f["path"]) for f in drift["findings"]}
    assert ("sftp-3", "tls", certificate) in found, drift["findings"]
    assert not any(f["node"] == "sftp-9" for f in drift["findings"])
    stale = [f for f in drift["findings"] if f["category"] == "staleness"]
    assert "sftp-1" in {f["node"] for f in stale}, drift["findings"]
    assert all(f["detail"].startswith("stale: newest snapshot") for f in stale)


def test_fleet_drift_names_an_account_whose_entries_differ(node_root, s3_repository):
    """Two nodes of a pool, clones but for one account's passwd line (partner's shell on
    sftp-2): one finding, category accounts, on sftp-2; /etc/passwd itself is never compared
    whole (the manifest holds only the accounts the server needs)."""
    roots = {name: node_root / name for name in ("sftp-1", "sftp-2")}
    sample_node.build(roots["sftp-1"], smoke_user=SMOKE_USER, chroot=True)
    clone_root(roots["sftp-1"], roots["sftp-2"])
    passwd = on_root(roots["sftp-2"], "/etc/passwd")
    text = passwd.read_text()
    line = next(entry for entry in text.splitlines() if entry.startswith("partner:"))
    passwd.write_text(text.replace(line, line.replace("/usr/sbin/nologin", "/bin/false")))
    configs = {name: init_group_node(node_root, name, root, s3_repository, "sftp-prod")
               for name, root in roots.items()}  # fmt: skip
    for config in configs.values():
        code, document = drkit("backup", "--config", str(config))
        assert code == 0, document
    trust = [arg for config in configs.values() for arg in ("--trust-key", signer_of(config))]

    code, drift = drkit("fleet", "drift", "--config", str(configs["sftp-1"]), *trust)
    assert code == 1 and drift["ok"] is False, drift
    accounts = [f for f in drift["findings"] if f["category"] == "accounts"]
    assert [(f["node"], f["path"]) for f in accounts] == [("sftp-2", "account partner")], drift
    assert accounts[0]["detail"] == "passwd/group entries differ"
    assert drift["findings"] == accounts, "nothing else differs between the clones"
