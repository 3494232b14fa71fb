"""What FTPS clients see: a ProFTPD pair behind HAProxy, proved against the signed snapshot.

The sample ProFTPD node (FTPS with TLSRequired, virtual users) is backed up; two real proftpd
processes serve its certificate and users, the active on 127.0.0.43 and the standby on 127.0.0.44
(with its own copy of the certificate and key, as `standby sync` leaves it); HAProxy in TCP mode
on 127.0.0.1 forwards the control port and the passive port range to whichever is up, so a
client's data connections follow its control connection. `identity check` compares the
certificate each address serves with the snapshot's and logs in through the shared address; a
standby whose certificate was regenerated is caught before any failover; `failover rehearse`
times the pinned login and file round trip a client sees through the shared address.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from nodes import (
    HEALTH_CHECK,
    free_port,
    fresh_repository,
    haproxy,
    init_node,
    make_workspace,
    wait_listening,
)

from devtools import sample_nodes

pytestmark = pytest.mark.integration

ACTIVE, STANDBY = "127.0.0.43", "127.0.0.44"
PASSIVE_PORTS = 6


def _passive_range() -> tuple[int, int]:
    """Return a run of consecutive ports of this worker's range, free on every address used."""
    for _ in range(50):
        first = free_port()
        ports = [first, *(free_port() for _ in range(PASSIVE_PORTS - 1))]
        if ports == list(range(first, first + PASSIVE_PORTS)):
            return first, ports[-1]
    raise AssertionError("no run of consecutive free ports")


def _proftpd_config(work: Path, address: str, port: int, passive: tuple[int, int]) -> Path:
    """Write one instance's configuration: the node's FTPS settings, its address and ports."""
    tls = work / address
    config = work / f"proftpd-{address}.conf"
    config.write_text(
        "ModulePath /usr/lib/proftpd\nLoadModule mod_tls.c\n"
        'ServerName "files.example.com"\nServerType standalone\nDefaultServer on\n'
        f"UseIPv6 off\nDefaultAddress {address}\nSocketBindTight on\nPort {port}\n"
        f"PassivePorts {passive[0]} {passive[1]}\nUser nobody\nGroup nogroup\n"
        f"WtmpLog off\nDelayEngine off\nPidFile {work}/{address}.pid\n"
        f"ScoreboardFile {work}/{address}.scoreboard\nAllowOverwrite on\n"
        f"AuthOrder mod_auth_file.c\nAuthUserFile {work}/ftpd.passwd\n"
        f"AuthGroupFile {work}/ftpd.group\nRequireValidShell off\nDefaultRoot ~\n"
        "TLSEngine on\nTLSRequired on\nTLSProtocol TLSv1.2 TLSv1.3\nTLSVerifyClient off\n"
        f"TLSLog {work}/{address}-tls.log\n"
        f"TLSECCertificateFile {tls}/cert.pem\nTLSECCertificateKeyFile {tls}/key.pem\n"
    )
    return config


def _start(config: Path) -> None:
    subprocess.run(["/usr/sbin/proftpd", "-c", str(config)], check=True, capture_output=True)


def _stop(config: Path) -> None:
    pid_file = config.parent / (config.stem.removeprefix("proftpd-") + ".pid")
    with contextlib.suppress(FileNotFoundError, ProcessLookupError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    deadline = time.monotonic() + 10
    while pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def pair(local_s3, tmp_path: Path):
    """The ProFTPD sample node backed up, a proftpd pair serving its certificate, HAProxy."""
    workspace = make_workspace()
    root, work = workspace / "root", workspace / "pair"
    made = sample_nodes.proftpd(root, smoke_user="drill")
    config, _ = init_node(
        root, fresh_repository(local_s3, tmp_path, "ftps-1"), workspace, "proftpd", "drill",
        "ftps-1",
    )  # fmt: skip
    work.mkdir(mode=0o755)
    password_file = work / "smoke.password"
    password_file.write_text(made["password"] + "\n")
    password_file.chmod(0o600)
    settings = yaml.safe_load(config.read_text())
    settings.update(smoke_password_file=str(password_file))
    config.write_text(yaml.safe_dump(settings))

    def drkit(*args: str) -> tuple[int, dict]:
        from nodes import drkit as run

        return run(*args, "--config", str(config))

    code, backup = drkit("backup")
    assert code == 0, backup

    home = work / "home"  # the smoke user's landing directory on this host
    home.mkdir(mode=0o755)
    line = next(
        entry for entry in (root / "etc/proftpd/ftpd.passwd").read_text().splitlines()
        if entry.startswith("drill:")
    )  # fmt: skip
    name, hashed, uid, gid, *_ = line.split(":")
    os.chown(home, int(uid), int(gid))
    (work / "ftpd.passwd").write_text(f"{name}:{hashed}:{uid}:{gid}::{home}:/bin/false\n")
    (work / "ftpd.passwd").chmod(0o600)
    (work / "ftpd.group").write_text(f"ftpusers:x:{gid}:{name}\n")
    for address in (ACTIVE, STANDBY):  # each instance its own copy, as a standby holds one
        (work / address).mkdir(mode=0o700)
        shutil.copy2(root / made["tls"]["certificate"].lstrip("/"), work / address / "cert.pem")
        shutil.copy2(root / made["tls"]["key"].lstrip("/"), work / address / "key.pem")
    passive = _passive_range()
    active_port, standby_port, vip = free_port(), free_port(), free_port()
    active = _proftpd_config(work, ACTIVE, active_port, passive)
    standby = _proftpd_config(work, STANDBY, standby_port, passive)
    proxied = (
        f"frontend control\n    bind 127.0.0.1:{vip}\n    default_backend control\n"
        f"frontend passive\n    bind 127.0.0.1:{passive[0]}-{passive[1]}\n"
        "    default_backend passive\n"
        "backend control\n"
        f"    server active {ACTIVE}:{active_port} {HEALTH_CHECK}\n"
        f"    server standby {STANDBY}:{standby_port} {HEALTH_CHECK} backup\n"
        "backend passive\n"  # no port: the one the client connected to
        f"    server active {ACTIVE} {HEALTH_CHECK} port {active_port}\n"
        f"    server standby {STANDBY} {HEALTH_CHECK} port {standby_port} backup\n"
    )
    _start(active)
    _start(standby)
    try:
        with haproxy(work / "haproxy.cfg", proxied):
            for address, port in (
                (ACTIVE, active_port),
                (STANDBY, standby_port),
                ("127.0.0.1", vip),
            ):
                wait_listening(address, port)
            yield {
                "drkit": drkit, "work": work, "active": active, "standby": standby,
                "addresses": [f"ftps://{ACTIVE}:{active_port}", f"ftps://{STANDBY}:{standby_port}"],
                "via": f"ftps://127.0.0.1:{vip}",
            }  # fmt: skip
    finally:
        _stop(active)
        _stop(standby)
        shutil.rmtree(workspace, ignore_errors=True)


def test_the_ftps_pair_serves_the_snapshots_certificate_and_a_pinned_login_passes(pair):
    args = [item for address in pair["addresses"] for item in ("--address", address)]
    code, document = pair["drkit"]("identity", "check", *args, "--via", pair["via"])
    assert code == 0, [endpoint["detail"] for endpoint in document.get("endpoints", [])] + [
        document.get("login") or document.get("error")
    ]
    for endpoint in document["endpoints"]:
        served = endpoint["certificates"]
        assert served and all(cert["fingerprint"] == cert["expected"] for cert in served)
    assert document["login"]["ok"], document["login"]


def test_a_standby_with_a_regenerated_certificate_is_caught_before_any_failover(pair):
    _stop(pair["standby"])
    tls = pair["work"] / STANDBY
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=files.example.com", "-days", "30",
         "-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    _start(pair["standby"])
    standby = pair["addresses"][1]
    wait_listening(STANDBY, int(standby.rsplit(":", 1)[1]))

    code, document = pair["drkit"]("identity", "check", "--address", standby)
    assert code == 1, document
    endpoint = document["endpoints"][0]
    assert not endpoint["ok"] and STANDBY in endpoint["detail"]
    changed = [c for c in endpoint["certificates"] if c["fingerprint"] != c["expected"]]
    assert changed, endpoint
    assert changed[0]["fingerprint"][:16] in endpoint["detail"], endpoint["detail"]


def test_an_ftps_failover_rehearsal_measures_the_rto_a_pinned_client_sees(pair):
    active = pair["active"]
    pid_file = active.parent / f"{ACTIVE}.pid"
    code, document = pair["drkit"](
        "failover", "rehearse", "--via", pair["via"],
        "--stop-command", f"sh -c 'kill $(cat {pid_file})'",
        "--start-command", f"/usr/sbin/proftpd -c {active}",
        "--yes",
    )  # fmt: skip
    assert code == 0, document
    assert document["rto_seconds"] is not None and document["rto_seconds"] < 30
    assert document["served_after"] == document["served_before"]
    assert document["login_after"]["ok"], document["login_after"]
