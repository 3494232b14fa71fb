"""The embedded local S3: start, stop, restart on the same data, failures, and the CLI."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import stat
import sys
from pathlib import Path

import pytest
from nodes import wait_for

from drkit import errors, runner
from drkit.locals3 import GRPC_OFFSET, LocalS3, _free_ports

REPO_ROOT = Path(__file__).resolve().parents[1]


def _port_is_free(port: int) -> bool:
    """Return True when a server could listen on port (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pids_with(marker: str) -> list[int]:
    """Return the pids whose command line mentions marker (a data directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmdline:
                pids.append(int(entry.name))
    return pids


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split(")")[-1].split()[0] == "Z"


def test_free_ports_are_distinct_and_leave_grpc_ports_free():
    ports = _free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        assert port + GRPC_OFFSET <= 65535
        assert _port_is_free(port)


@pytest.mark.integration
def test_start_answers_and_stop_frees_everything():
    server = LocalS3()
    with server:
        assert server.endpoint == f"http://127.0.0.1:{server.port}"
        assert server.alive()
        pid = server.pid
        data_dir = server.data_dir
        assert data_dir is not None and data_dir.is_dir()
        assert server.env() == {
            "AWS_ACCESS_KEY_ID": server.access_key,
            "AWS_SECRET_ACCESS_KEY": server.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        client = server.client()
        client.create_bucket(Bucket="hello")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["hello"]
        ports = dict(server.ports)
        assert not _port_is_free(ports["s3"])
    assert not server.alive()
    assert _process_gone(pid)
    for port in ports.values():
        assert _port_is_free(port)
        assert _port_is_free(port + GRPC_OFFSET)
    assert not data_dir.exists(), "the temporary data directory is removed"
    for port in ports.values():
        assert not list(Path("/tmp").glob(f"seaweedfs-*-grpc-{port + GRPC_OFFSET}.sock"))
    server.stop()  # stopping twice is harmless


@pytest.mark.integration
def test_restart_on_the_same_data_keeps_buckets(tmp_path: Path):
    data = tmp_path / "data"
    with LocalS3(data) as first:
        client = first.client()
        client.create_bucket(Bucket="kept")
        client.put_object(Bucket="kept", Key="a/b.txt", Body=b"still here")
        first_port = first.port
    assert data.is_dir(), "a given data directory is kept"
    with LocalS3(data) as second:
        assert second.port > 0 and first_port > 0  # ports are chosen anew each start
        body = second.client().get_object(Bucket="kept", Key="a/b.txt")["Body"].read()
        assert body == b"still here"
    assert not _pids_with(str(data))


def test_weed_that_dies_at_start_raises_with_its_log(tmp_path: Path):
    fake = tmp_path / "weed"
    fake.write_text("#!/bin/sh\necho 'boom: cannot open the data directory' >&2\nexit 3\n")
    fake.chmod(0o755)
    server = LocalS3(tmp_path / "data", weed=str(fake))
    with pytest.raises(errors.StorageError) as raised:
        server.start()
    assert "boom: cannot open the data directory" in raised.value.message
    assert "code 3" in raised.value.message
    assert not server.alive()


def test_missing_weed_is_a_storage_error(tmp_path: Path):
    with pytest.raises(errors.StorageError, match="not found"):
        LocalS3(weed=str(tmp_path / "no-such-weed")).start()


@pytest.mark.integration
def test_cli_writes_env_file_and_stops_cleanly_on_sigterm(tmp_path: Path):
    data = tmp_path / "data"
    env_file = tmp_path / "s3.env"
    service = runner.start_service(
        [sys.executable, "-m", "drkit.locals3", "--data", str(data), "--env-file", str(env_file)],
        tmp_path / "cli.log",
        cwd=REPO_ROOT,
    )
    try:
        wait_for(lambda: env_file.exists() or not service.alive(), 60, "the env file", step=0.2)
        assert env_file.exists(), service.log_tail()
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        values = {}
        for line in env_file.read_text().splitlines():
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").partition("=")
                values[name] = shlex.split(value)[0]
        assert values["DRKIT_S3_ENDPOINT"].startswith("http://127.0.0.1:")
        assert values["AWS_DEFAULT_REGION"] == "us-east-1"
        assert int(values["DRKIT_S3_PID"]) == service.process.pid
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=values["DRKIT_S3_ENDPOINT"],
            aws_access_key_id=values["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"],
            region_name=values["AWS_DEFAULT_REGION"],
        )
        assert client.list_buckets()["Buckets"] == []
        assert _pids_with(str(data)), "weed runs with the given data directory"

        os.kill(service.process.pid, signal.SIGTERM)
        wait_for(lambda: not service.alive(), 30, "the CLI to stop on SIGTERM", step=0.1)
        assert service.process.returncode == 0, service.log_tail()
        assert not _pids_with(str(data)), "weed stopped with the CLI"
        assert not env_file.exists()
        port = int(values["DRKIT_S3_ENDPOINT"].rsplit(":", 1)[1])
        assert _port_is_free(port)
    finally:
        service.stop()
        for pid in _pids_with(str(data)):
            os.kill(pid, signal.SIGKILL)
