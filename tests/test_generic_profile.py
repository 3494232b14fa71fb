"""The generic profile: a server drkit does not know, described by profile_options alone
(node path globs by category, validate and smoke commands, an optional policy file on the
node). Its options travel signed in the manifest: a bare-metal restore checks with them.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from nodes import drkit, init_node

from devtools import sample_nodes
from devtools.sample_node import _Node, _tls
from drkit import errors
from drkit.config import CATEGORIES
from drkit.engines import accounts, manifest
from drkit.paths import on_root
from drkit.profiles import generic

VALIDATE = (
    "/usr/bin/python3 -c 'import sys, pathlib; "
    'sys.exit(0 if "listen" in pathlib.Path(sys.argv[1]).read_text() else 1)\' '
    "{root}/etc/myftpd/myftpd.conf"
)
SMOKE = "/usr/bin/test -s {root}/etc/myftpd/myftpd.conf"


def build(root: Path) -> dict:
    """A small node of a server drkit has no profile for: config, host key, TLS pair, logs."""
    node = _Node(root)
    node.dir("/")
    node.dir("/etc")
    node.file("/etc/passwd", "root:x:0:0:root:/root:/bin/bash\nmyftpd:x:2500:2500::/:/bin/false\n")
    node.file("/etc/group", "root:x:0:\nmyftpd:x:2500:\n")
    node.dir("/etc/myftpd")
    node.file("/etc/myftpd/myftpd.conf", "listen 0.0.0.0:2121\nhostkey /etc/myftpd/host_key\n")
    node.file("/etc/myftpd/users.d/partner.conf", "home /srv/partner\n")
    host_key = sample_nodes._ssh_host_key(node, "/etc/myftpd/host_key", "ed25519")
    tls_key, tls_cert = _tls(node)
    node.dir("/var/log/myftpd", 0o750)
    node.file("/var/log/myftpd/transfer.log", "2024-05-06 put partner report.csv\n", 0o640)
    node.file(
        "/etc/drkit/generic-myftpd.yaml",
        yaml.safe_dump({"audit_logs": ["/var/log/myftpd/*"], "users": ["myftpd"]}),
    )
    return {"host_key": host_key, "tls": {"key": tls_key, "certificate": tls_cert}}


def options(**extra) -> dict:
    return {
        "policy": "/etc/drkit/generic-myftpd.yaml",
        "config": ["/etc/myftpd/myftpd.conf", "/etc/myftpd/users.d"],
        "host_keys": ["/etc/myftpd/host_key*"],
        "tls": ["/etc/ssl/private/*.key", "/etc/ssl/certs/*.pem"],
        "validate": VALIDATE,
        **extra,
    }


def recorded(root: Path, chosen: dict) -> dict:
    found = generic.inventory(root, None, generic.parse_options(chosen))
    return manifest.build(
        root,
        found,
        node="ftp-x",
        profiles=["generic"],
        accounts=accounts.read_entries(root, found.users),
        created=datetime.now(UTC),
        profile_options={"generic": chosen},
    )


def failures(results) -> dict[str, str]:
    return {check.name: check.detail for check in results if check.status == "fail"}


def test_inventory_takes_the_globs_and_the_policy_file(node_root):
    root = node_root / "root"
    build(root)
    found = generic.inventory(root, None, generic.parse_options(options()))
    categories = {entry.path: entry.category for entry in found.files}
    assert categories["/etc/drkit/generic-myftpd.yaml"] == "config"
    assert categories["/etc/myftpd/myftpd.conf"] == "config"
    assert categories["/etc/myftpd/host_key"] == "host_keys"
    assert categories["/etc/myftpd/host_key.pub"] == "host_keys"
    assert categories["/var/log/myftpd/transfer.log"] == "audit_logs"  # from the policy file
    assert [entry.path for entry in found.dirs] == ["/etc/myftpd/users.d"]
    assert found.users == ["myftpd"] and found.warnings == []
    nothing = generic.parse_options({"config": ["/etc/nothing/*"]})
    assert generic.inventory(root, None, nothing).warnings == [
        "generic: config /etc/nothing/* matches nothing"
    ]


def test_options_are_validated_naming_the_setting(node_root):
    with pytest.raises(errors.ConfigError, match=r"profile_options.generic.configs: unknown"):
        generic.parse_options({"configs": ["/etc/x"]})
    with pytest.raises(errors.ConfigError, match=r"generic.tls: globs must be absolute"):
        generic.parse_options({"tls": ["etc/x.pem"]})
    with pytest.raises(errors.ConfigError, match=r"generic.timeout_seconds: expected a number"):
        generic.parse_options({"timeout_seconds": "soon"})
    missing_policy = generic.parse_options({"policy": "/etc/none.yaml"})
    with pytest.raises(errors.ConfigError, match=r"/etc/none.yaml: generic policy file not found"):
        generic.inventory(node_root, None, missing_policy)


def test_every_backup_category_is_a_generic_setting():
    assert set(CATEGORIES) <= set(generic.Options.model_fields)


def test_checks_pass_then_catch_what_breaks(node_root, tmp_path):
    root = node_root / "root"
    made = build(root)
    chosen = options(smoke=SMOKE)
    snapshot = recorded(root, chosen)
    results = generic.checks(root, snapshot)
    assert failures(results) == {}
    names = {check.name: check.status for check in results}
    assert names["config: generic validate"] == "pass"
    assert names[f"tls pair: {made['tls']['certificate']}"] == "pass"
    assert names["host key: /etc/myftpd/host_key"] == "pass"
    smoked = generic.smoke(root, snapshot, "drill", tmp_path)
    assert smoked.proven and [c.status for c in smoked.checks] == ["pass"]
    untried = generic.smoke(root, recorded(root, options()), "drill", tmp_path)
    assert not untried.judged and [c.status for c in untried.checks] == ["warn"]

    on_root(root, "/etc/myftpd/host_key").chmod(0o644)
    other = node_root / "other"
    other_key, _ = _tls(_Node(other))
    shutil.copy(on_root(other, other_key), on_root(root, made["tls"]["key"]))
    on_root(root, "/etc/myftpd/myftpd.conf").write_text("nothing useful\n")
    shutil.rmtree(on_root(root, "/etc/myftpd/users.d"))
    failed = failures(generic.checks(root, snapshot))
    assert "readable by others" in failed["host key mode: /etc/myftpd/host_key"]
    assert "no private key" in failed[f"tls pair: {made['tls']['certificate']}"]
    assert "matches no certificate" in failed[f"tls key: {made['tls']['key']}"]
    assert failed["generic: config /etc/myftpd/users.d"] == "matches nothing"
    assert "exit 1" in failed["config: generic validate"]
    on_root(root, "/etc/myftpd/myftpd.conf").chmod(0o666)
    assert "writable by everyone" in failures(generic.checks(root, snapshot))["generic: modes"]


@pytest.mark.integration
def test_bare_metal_restore_checks_with_the_snapshots_options(node_root, s3_repository):
    root = node_root / "root"
    build(root)
    work = node_root / "work"
    work.mkdir(mode=0o755)
    config, document = init_node(root, s3_repository, work, "generic", "drill", "ftp-x")
    settings = yaml.safe_load(config.read_text())
    settings["profile_options"] = {"generic": options(smoke=SMOKE)}
    config.write_text(yaml.safe_dump(settings))
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0 and backup["warnings"] == [], backup

    # The node's drkit.yaml is gone with the node: only coordinates, password and signer remain.
    config.unlink()
    target = node_root / "rebuilt"
    code, restored = drkit(
        "restore", "latest", "--smoke", "--smoke-user", "drill",
        "--s3-endpoint", s3_repository.s3_endpoint, "--bucket", s3_repository.bucket,
        "--prefix", s3_repository.prefix, "--password-file", str(s3_repository.password_file),
        "--node", "ftp-x", "--trust-key", document["signer"], "--target", str(target),
    )  # fmt: skip
    assert code == 0, restored
    statuses = {check["name"]: check["status"] for check in restored["checks"]}
    assert statuses["config: generic validate"] == "pass"
    assert statuses["smoke: generic"] == "pass"
    assert statuses["generic: named files"] == "pass"
    assert on_root(target, "/var/log/myftpd/transfer.log").is_file()
