"""What clients see: an SFTP pair behind HAProxy, proved against the signed snapshot.

A real sshd on 127.0.0.41 (the active) and one on 127.0.0.42 (the standby: a node installed with
host keys of its own, then given the active's by `drkit standby sync`), HAProxy in TCP mode on
127.0.0.1 in front of them, as TOOLS.md's recipe. `drkit identity check` compares what every
address serves with the node's newest signed snapshot and logs in through the shared address
pinned to it; a standby whose host key was regenerated is caught before any failover; the
daemon's identity job alerts on it; `drkit failover rehearse` stops the active and times a pinned
login and file round trip through the shared address, with no identity change.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import pwd
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from nodes import (
    HEALTH_CHECK,
    SMOKE_USER,
    Node,
    drkit,
    free_port,
    fresh_repository,
    haproxy,
    init_node,
    make_workspace,
    wait_listening,
)

from devtools import sample_node
from drkit import config, daemon

pytestmark = pytest.mark.integration

ACTIVE, STANDBY = "127.0.0.41", "127.0.0.42"
WORKER = os.environ.get("DRKIT_SAMPLE_WORKER", "0")
USER = f"ident{WORKER}"


def _sshd_config(work: Path, address: str, port: int, host_keys: list[Path], keys: Path) -> Path:
    config = work / f"sshd-{address}.conf"
    config.write_text(
        f"Port {port}\nListenAddress {address}\nPidFile {work}/sshd-{address}.pid\n"
        + "".join(f"HostKey {key}\n" for key in host_keys)
        + f"AuthorizedKeysFile {keys}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
        f"AllowUsers {USER}\n"
    )
    return config


def _start(config: Path) -> None:
    subprocess.run(["/usr/sbin/sshd", "-f", str(config), "-E", f"{config}.log"], check=True)


def _stop(config: Path) -> None:
    pid_file = Path(str(config).replace(".conf", ".pid"))
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink(missing_ok=True)


@pytest.fixture
def pair(local_s3, tmp_path: Path):
    """The sample node backed up, an sshd pair serving its host keys, HAProxy in front."""
    workspace = make_workspace()
    node = Node(workspace, fresh_repository(local_s3, tmp_path, "sftp-1"))
    work = workspace / "pair"
    work.mkdir(mode=0o755)
    home = work / "home"
    home.mkdir(mode=0o755)
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/sh", USER], check=False)
    subprocess.run(["usermod", "-p", "*", USER], check=True)  # key logins only, not locked
    shutil.chown(home, USER, USER)
    client_key = work / "client_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)], check=True
    )
    keys = work / "authorized_keys"
    shutil.copy(f"{client_key}.pub", keys)
    settings = yaml.safe_load(node.config.read_text())
    settings.update(smoke_user=USER, smoke_key=str(client_key))
    node.config.write_text(yaml.safe_dump(settings))
    node.backup()

    host_keys = [node.root / path.lstrip("/") for path in node.made["host_keys"]]
    # The standby: a node installed on its own (host keys of its own), then made the active's
    # standby by `drkit standby sync`, which brings the active's host keys onto it.
    standby_root = workspace / "standby-root"
    sample_node.build(standby_root, smoke_user=SMOKE_USER, chroot=True)
    standby_work = workspace / "standby-work"
    standby_work.mkdir(mode=0o755)
    passive, _ = init_node(standby_root, node.repository, standby_work, None, None, "sftp-2")
    settings = yaml.safe_load(passive.read_text())
    settings.update(
        standby={"source": node.name}, trusted_keys=[*settings["trusted_keys"], node.signer]
    )
    passive.write_text(yaml.safe_dump(settings))
    code, synced = drkit("standby", "sync", "--config", str(passive))
    assert code == 0 and synced["changed"], synced
    standby_keys = standby_root / "etc/ssh"
    active_port, standby_port, vip = free_port(), free_port(), free_port()
    active = _sshd_config(work, ACTIVE, active_port, host_keys, keys)
    standby = _sshd_config(
        work, STANDBY, standby_port, [standby_keys / key.name for key in host_keys], keys
    )
    for key in host_keys:  # what standby sync restored is the active's identity
        assert (standby_keys / key.name).read_bytes() == key.read_bytes()
    pair_backend = (
        f"frontend vip\n    bind 127.0.0.1:{vip}\n    default_backend pair\nbackend pair\n"
        f"    server active {ACTIVE}:{active_port} {HEALTH_CHECK}\n"
        f"    server standby {STANDBY}:{standby_port} {HEALTH_CHECK} backup\n"
    )
    _start(active)
    _start(standby)
    try:
        with haproxy(work / "haproxy.cfg", pair_backend):
            for address, port in (
                (ACTIVE, active_port),
                (STANDBY, standby_port),
                ("127.0.0.1", vip),
            ):
                wait_listening(address, port)
            yield {
                "node": node, "active": active, "standby": standby, "standby_keys": standby_keys,
                "addresses": [f"sftp://{ACTIVE}:{active_port}", f"sftp://{STANDBY}:{standby_port}"],
                "via": f"sftp://127.0.0.1:{vip}",
            }  # fmt: skip
    finally:
        _stop(active)
        _stop(standby)
        if USER in {entry.pw_name for entry in pwd.getpwall()}:
            subprocess.run(["userdel", USER], check=False)
        node.remove()


def test_the_pair_serves_the_snapshots_identity_and_a_pinned_login_passes(pair):
    node = pair["node"]
    args = [item for address in pair["addresses"] for item in ("--address", address)]
    code, document = node.run("identity", "check", *args, "--via", pair["via"])
    assert code == 0, [(e["detail"]) for e in document["endpoints"]] + [document.get("login")]
    assert [endpoint["ok"] for endpoint in document["endpoints"]] == [True, True, True]
    served = document["endpoints"][0]["host_keys"]
    assert served and all(key["fingerprint"] == key["expected"] for key in served)
    assert document["login"]["ok"], document["login"]


def test_a_standby_with_a_regenerated_host_key_is_caught_before_any_failover(pair):
    node = pair["node"]
    _stop(pair["standby"])
    regenerated = pair["standby_keys"] / "ssh_host_ed25519_key"
    regenerated.unlink()
    Path(f"{regenerated}.pub").unlink(missing_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(regenerated)], check=True
    )
    _start(pair["standby"])
    standby = pair["addresses"][1]
    wait_listening(STANDBY, int(standby.rsplit(":", 1)[1]))

    code, document = node.run("identity", "check", "--address", standby)
    assert code == 1, document
    endpoint = document["endpoints"][0]
    assert not endpoint["ok"] and STANDBY in endpoint["detail"]
    changed = [key for key in endpoint["host_keys"] if key["fingerprint"] != key["expected"]]
    assert [key["expected"] is not None for key in changed] == [True]
    assert changed[0]["fingerprint"] in endpoint["detail"]
    assert changed[0]["expected"] in endpoint["detail"]


def _webhook_receiver() -> tuple[http.server.ThreadingHTTPServer, list[dict]]:
    """An HTTP server on 127.0.0.1 keeping every JSON body POSTed to it."""
    bodies: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, bodies


def test_the_daemons_identity_job_alerts_when_the_standby_serves_another_key(pair, tmp_path):
    node = pair["node"]
    server, bodies = _webhook_receiver()
    settings = yaml.safe_load(node.config.read_text())
    settings["identity"] = {"addresses": pair["addresses"], "via": pair["via"]}
    settings["schedule"] = {"identity": "*/30 * * * *", "prune": None, "verify": None,
                            "drill": None}  # fmt: skip
    settings["notify"] = {"webhook": {"url": f"http://127.0.0.1:{server.server_address[1]}/"}}
    node.config.write_text(yaml.safe_dump(settings))
    textfile = tmp_path / "drkit.prom"
    try:
        runner = daemon.Daemon(config.load_config(node.config)[0], textfile=textfile)
        assert "identity" in runner.actions
        assert runner.run_job("identity")["ok"] is True
        _stop(pair["standby"])
        regenerated = pair["standby_keys"] / "ssh_host_ed25519_key"
        regenerated.unlink()
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(regenerated)], check=True
        )
        _start(pair["standby"])
        wait_listening(STANDBY, int(pair["addresses"][1].rsplit(":", 1)[1]))
        outcome = runner.run_job("identity")
    finally:
        server.shutdown()
        server.server_close()
    assert outcome["ok"] is False and STANDBY in outcome["error"], outcome
    assert [(body["event"], body["ok"]) for body in bodies] == [
        ("succeeded", True), ("identity_failed", False)
    ]  # fmt: skip
    assert STANDBY in bodies[-1]["error"]
    assert 'drkit_last_run_ok{job="identity",node="sftp-1"} 0.0' in textfile.read_text()


def test_a_failover_rehearsal_measures_the_rto_a_pinned_client_sees(pair):
    node = pair["node"]
    active = pair["active"]
    pid_file = str(active).replace(".conf", ".pid")
    code, document = node.run(
        "failover", "rehearse", "--via", pair["via"],
        "--stop-command", f"sh -c 'kill $(cat {pid_file})'",
        "--start-command", f"/usr/sbin/sshd -f {active} -E {active}.log",
        "--yes",
    )  # fmt: skip
    assert code == 0, document
    assert document["rto_seconds"] is not None and document["rto_seconds"] < 30
    assert document["served_after"] == document["served_before"]
    assert document["login_after"]["ok"]
    code, refused = node.run(
        "failover", "rehearse", "--via", pair["via"], "--stop-command", "true",
        "--start-command", "true",
    )  # fmt: skip
    assert code == 2 and "--yes" in refused["error"]["message"]
