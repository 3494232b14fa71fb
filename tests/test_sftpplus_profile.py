"""SFTPPlus: a realistic sample installation (the product is not installable here), what the
profile finds in server.ini, what its static checks catch, discover, and a backup → destroy →
restore cycle through the CLI, including a bare-metal restore whose checks use the profile
options signed into the snapshot.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from corpus.cases import load_cases, materialise
from nodes import drkit, init_node

from devtools import sample_nodes
from devtools.sample_node import certificate_and_key
from drkit.actions import discover
from drkit.engines import accounts, manifest
from drkit.model import Manifest
from drkit.paths import on_root
from drkit.profiles import sftpplus
from drkit.service import detection

# A real validator for the tests: Python's own INI parser over the restored server.ini (the
# product's bin/admin-commands.sh is not installable here).
INI_VALIDATOR = (
    "/usr/bin/python3 -c 'import configparser, sys; "
    "configparser.ConfigParser(interpolation=None).read_file(open(sys.argv[1]))' "
    "{install}/configuration/server.ini"
)


def build_manifest(root: Path, options: dict | None = None) -> Manifest:
    found = sftpplus.inventory(root, None, sftpplus.settings(options))
    return manifest.build(
        root,
        found,
        node="sftpplus-1",
        profiles=["sftpplus"],
        accounts=accounts.read_entries(root, found.users),
        created=datetime.now(UTC),
        profile_options={"sftpplus": options} if options else None,
    )


def by_name(results) -> dict:
    return {check.name: check for check in results}


def failures(results) -> dict[str, str]:
    return {check.name: check.detail for check in results if check.status == "fail"}


@pytest.fixture
def node(node_root: Path):
    root = node_root / "root"
    return root, sample_nodes.sftpplus(root, smoke_user="drill")


def test_inventory_finds_every_file_server_ini_names(node):
    root, made = node
    found = sftpplus.inventory(root, None, sftpplus.settings(None))
    categories = {entry.path: entry.category for entry in found.files}
    assert found.warnings == []
    assert categories[made["config"]] == "config"
    assert categories[made["override"]] == "config"
    assert categories[made["cache"]] == "config"
    assert categories[made["unit"]] == "config"
    for path in made["host_keys"]:
        assert categories[path] == "host_keys", path
    assert categories[made["tls"]["certificate"]] == "tls"
    assert categories[made["manager_tls"]["certificate"]] == "tls"
    assert categories[made["manager_tls"]["key"]] == "tls"
    assert categories[made["secrets_vault"]] == "config"
    assert categories[made["authorized_keys"][0]] == "user_keys"
    for path in made["scripts"]:
        assert categories[path] == "scripts", path
    for path in made["audit_logs"]:
        assert categories[path] == "audit_logs", path
    assert {entry.path: entry.category for entry in found.dirs}[made["homes"][0]] == "chroot"
    assert found.users == ["sftpplus"]


def test_checks_pass_on_the_sample_and_smoke_only_warns(node, tmp_path):
    root, made = node
    recorded = build_manifest(root)
    assert sorted(entry.path for entry in recorded.host_keys) == sorted(made["host_keys"])
    results = sftpplus.checks(root, recorded)
    assert failures(results) == {}
    found = by_name(results)
    assert found["sftpplus: [server] uuid"].detail == made["uuid"]
    assert found[f"tls pair: {made['tls']['certificate']}"].status == "pass"
    assert found[f"tls pair: {made['manager_tls']['certificate']}"].status == "pass"
    assert found["sftpplus: inline [vault-items/partner-ca]"].status == "pass"
    # The product is not installed: its validator is missing, which is said, not faked.
    assert found["config: sftpplus validate"].status == "warn"
    smoked = sftpplus.PROFILE.smoke(root, recorded, "drill", tmp_path)
    assert not smoked.judged and [check.status for check in smoked.checks] == ["warn"]
    assert "not installable" in smoked.reason


def test_checks_catch_a_missing_external_vault_file(node):
    root, made = node
    recorded = build_manifest(root)
    on_root(root, made["tls"]["certificate"]).unlink()
    failed = failures(sftpplus.checks(root, recorded))
    assert f"sftpplus: missing {made['tls']['certificate']}" in failed
    assert (
        "[vault-items/ftps-certificate] content"
        in (failed[f"sftpplus: missing {made['tls']['certificate']}"])
    )


def test_checks_catch_mismatched_keys_and_certificates(node, node_root):
    root, made = node
    recorded = build_manifest(root)
    other = node_root / "other"
    other_made = sample_nodes.sftpplus(other)
    # Older-release pair: a key from another node beside this node's certificate.
    shutil.copy(
        on_root(other, other_made["manager_tls"]["key"]), on_root(root, made["manager_tls"]["key"])
    )
    # Vault item holding certificate and key together: this certificate, another key.
    vault_file = on_root(root, made["tls"]["certificate"])
    certificate = vault_file.read_text().split("-----END CERTIFICATE-----")[0]
    other_key = on_root(other, other_made["manager_tls"]["key"]).read_text()
    vault_file.write_text(certificate + "-----END CERTIFICATE-----\n" + other_key)
    failed = failures(sftpplus.checks(root, recorded))
    assert "does not match" in failed[f"tls pair: {made['manager_tls']['certificate']}"]
    assert "does not match" in failed[f"tls pair: {made['tls']['certificate']}"]


def test_checks_catch_loose_modes_and_a_replaced_host_key(node, node_root):
    root, made = node
    recorded = build_manifest(root)
    on_root(root, made["host_keys"][0]).chmod(0o644)
    on_root(root, made["secrets_vault"]).chmod(0o640)
    other = node_root / "other"
    other_made = sample_nodes.sftpplus(other)
    shutil.copy(on_root(other, other_made["host_keys"][1]), on_root(root, made["host_keys"][1]))
    failed = failures(sftpplus.checks(root, recorded))
    assert "readable by others" in failed[f"host key mode: {made['host_keys'][0]}"]
    assert "readable by others" in failed[f"secret mode: {made['secrets_vault']}"]
    assert "the backup had" in failed[f"host key: {made['host_keys'][1]}"]


def test_checks_catch_unparsable_ini_and_missing_uuid(node):
    root, made = node
    recorded = build_manifest(root)
    config = on_root(root, made["config"])
    text = config.read_text()
    config.write_text(text.replace(f"uuid = {made['uuid']}\n", ""))
    assert "sftpplus: [server] uuid" in failures(sftpplus.checks(root, recorded))
    config.write_text(text + "\n[server]\nname = duplicate section\n")
    failed = failures(sftpplus.checks(root, recorded))
    assert "sftpplus: server.ini parses" in failed
    assert "server" in failed["sftpplus: server.ini parses"]
    config.write_text("this line belongs to no section\n" + text)
    assert "sftpplus: server.ini parses" in failures(sftpplus.checks(root, recorded))


def test_validate_command_from_the_manifest_runs_and_fails_on_broken_ini(node):
    root, made = node
    options = {"validate": INI_VALIDATOR}
    recorded = build_manifest(root, options)
    assert recorded.profile_options == {"sftpplus": options}
    found = by_name(sftpplus.checks(root, recorded))
    assert found["config: sftpplus validate"].status == "pass"
    on_root(root, made["config"]).write_text("[server\nuuid = x\n")
    found = by_name(sftpplus.checks(root, recorded))
    assert found["config: sftpplus validate"].status == "fail"
    assert str(root) not in found["config: sftpplus validate"].detail  # node paths only
    # A validator named explicitly but absent fails (the default one only warns).
    absent = build_manifest(root, {"validate": "bin/admin-commands.sh validate"})
    found = by_name(sftpplus.checks(root, absent))
    assert found["config: sftpplus validate"].status == "fail"
    wrong = recorded.model_copy(update={"profile_options": {"sftpplus": {"install": "/opt/x"}}})
    assert "unknown setting" in failures(sftpplus.checks(root, wrong))["sftpplus: options"]


def test_discover_recognises_sftpplus(node):
    root, made = node
    assert detection.detect_kinds(root) == ["sftpplus"]
    document = discover.run(root).model_dump()
    server = document["servers"][0]
    assert server["server"] == "sftpplus"
    assert server["units"] == ["/etc/systemd/system/sftpplus.service"]
    assert made["host_keys"][0] in server["categories"]["host_keys"]
    assert server["warnings"] == []
    assert "servers:\n- sftpplus" in document["proposed_config"]


CORPUS = {case.name: case for case in load_cases() if case.server == "sftpplus"}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_configs_back_up_what_they_name_and_pass_their_checks(name, tmp_path):
    case = CORPUS[name]
    root = tmp_path / "root"
    materialise(case, root)
    recorded = build_manifest(root, case.profile_options["sftpplus"])
    held = {entry.path for entry in recorded.files}
    assert not set(case.expect_files) - held
    assert "/tmp" not in held  # a group's scratch home_folder_path is never taken whole
    assert failures(sftpplus.checks(root, recorded)) == {}


def test_keywords_and_placeholders_are_not_paths():
    for value in ("Disabled", "crl-distribution-points", "${OS_HOME}", "${MOZILLA_CA_ROOTS}", ""):
        assert not sftpplus.is_path(value), value
    assert not sftpplus.is_path("https://auth.example.net/login")
    assert sftpplus.is_path("configuration/ssh_host_rsa_key")


def test_older_releases_rsa_and_dsa_private_keys_are_host_keys(tmp_path):
    case = CORPUS["sftpplus-docker-2018"]
    root = tmp_path / "root"
    materialise(case, root)
    recorded = build_manifest(root, case.profile_options["sftpplus"])
    keys = {entry.path for entry in recorded.host_keys}
    rsa = "/opt/sftpplus/configuration/ssh_host_rsa_key"
    assert keys == {rsa, "/opt/sftpplus/configuration/ssh_host_dsa_key"}
    on_root(root, rsa).chmod(0o644)
    failed = failures(sftpplus.checks(root, recorded))
    assert "readable by others" in failed[f"host key mode: {rsa}"]


def test_http_and_ldap_authentication_certificates_are_backed_up_and_checked(node, node_root):
    root, made = node
    configuration = "/opt/sftpplus/configuration"
    ca, ca_key = f"{configuration}/ldap-ca.pem", f"{configuration}/ldap-ca.key"
    client, client_key = f"{configuration}/http-client.pem", f"{configuration}/http-client.key"
    for certificate, key, name in ((ca, ca_key, "ldap.example.test"), (client, client_key, "c")):
        certificate_pem, key_pem = certificate_and_key(name)
        on_root(root, certificate).write_bytes(certificate_pem)
        on_root(root, key).write_bytes(key_pem)
        on_root(root, key).chmod(0o600)
    on_root(root, made["config"]).write_text(
        on_root(root, made["config"]).read_text()
        + "\n[authentications/directory]\nenabled = Yes\ntype = ldap\n"
        + "address = ldap.example.test\nport = 636\nsecure = Yes\n"
        + f"ssl_certificate_authority = {ca}\n"
        + "\n[authentications/partners]\nenabled = Yes\ntype = http\n"
        + "url = https://auth.example.test/sftpplus\n"
        + f"ssl_certificate = {client}\nssl_key = {client_key}\n"
    )
    recorded = build_manifest(root)
    categories = {entry.path: entry.category for entry in recorded.files}
    assert categories[ca] == categories[client] == categories[client_key] == "tls"
    found = by_name(sftpplus.checks(root, recorded))
    assert found[f"tls pair: {client}"].status == "pass"
    assert found[f"certificate: {ca}"].status == "pass"
    assert found[f"secret mode: {client_key}"].status == "pass"
    shutil.copy(on_root(root, ca_key), on_root(root, client_key))  # an unrelated key
    on_root(root, ca).unlink()
    failed = failures(sftpplus.checks(root, recorded))
    assert "does not match" in failed[f"tls pair: {client}"]
    assert (
        "[authentications/directory] ssl_certificate_authority" in failed[f"sftpplus: missing {ca}"]
    )


@pytest.mark.integration
def test_backup_destroy_restore_and_bare_metal_restore(node, node_root, s3_repository):
    root, made = node
    work = node_root / "work"
    work.mkdir(mode=0o755)
    config, document = init_node(root, s3_repository, work, "auto", "drill", "sftpplus-1")
    signer = document["signer"]
    settings = yaml.safe_load(config.read_text())
    assert settings["servers"] == ["sftpplus"]
    settings["profile_options"] = {"sftpplus": {"validate": INI_VALIDATOR}}
    config.write_text(yaml.safe_dump(settings))
    code, backup = drkit("backup", "--config", str(config))
    assert code == 0 and backup["warnings"] == [], backup
    code, shown = drkit("show", "latest", "--config", str(config))
    assert {"config", "host_keys", "user_keys", "tls", "scripts", "audit_logs", "chroot"} <= set(
        shown["categories"]
    )

    shutil.rmtree(root)
    code, restored = drkit("restore", "latest", "--smoke", "--config", str(config))
    assert code == 0, restored
    statuses = {check["name"]: check["status"] for check in restored["checks"]}
    assert statuses["sftpplus: server.ini parses"] == "pass"
    assert statuses["config: sftpplus validate"] == "pass"
    assert statuses["smoke: sftpplus"] == "warn"
    assert not [name for name, status in statuses.items() if status == "fail"]
    assert on_root(root, made["host_keys"][0]).stat().st_uid == sample_nodes.SFTPPLUS_UID

    # Bare metal: no drkit.yaml here; the validate setting comes from the signed manifest.
    target = node_root / "bare"
    code, bare = drkit(
        "restore", "latest",
        "--s3-endpoint", s3_repository.s3_endpoint, "--bucket", s3_repository.bucket,
        "--prefix", s3_repository.prefix, "--password-file", str(s3_repository.password_file),
        "--node", "sftpplus-1", "--trust-key", signer, "--target", str(target),
    )  # fmt: skip
    assert code == 0, bare
    statuses = {check["name"]: check["status"] for check in bare["checks"]}
    assert statuses["config: sftpplus validate"] == "pass"
    on_root(target, made["tls"]["certificate"]).unlink()
    code, checked = drkit("check", "--target", str(target), "--config", str(config))
    assert code == 1, checked
    assert {c["name"] for c in checked["checks"] if c["status"] == "fail"} >= {
        f"sftpplus: missing {made['tls']['certificate']}"
    }
