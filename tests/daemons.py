"""The daemon as the tests drive it (shared helpers): `drkit daemon` as a real process, the
webhook/ping recorder it reports to, its local status file, and a configuration for the
daemon's parts without S3."""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from nodes import Node, free_port, refusing_port

from drkit import config

DRKIT = str(Path(sys.executable).parent / "drkit")


class Recorder:
    """An HTTP server on 127.0.0.1 that records every request: (method, path, headers, body);
    it answers 503 to the first `failures` requests, then 200."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.failures = 0
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                recorder.requests.append(("POST", self.path, dict(self.headers), body))
                refused = len(recorder.requests) <= recorder.failures
                self.send_response(503 if refused else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for _, path, _, _ in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def offline_config(tmp_path: Path, node: str = "sftp-1", **settings) -> config.Config:
    """Return a node's configuration whose S3 endpoint refuses connections (a port bound and
    never listening): for the daemon's parts that must not reach a repository."""
    password = tmp_path / "password"
    password.write_text("x" * 64)
    password.chmod(0o600)
    return config.Config(
        node=node,
        servers=["openssh"],
        repository=config.Repository(
            s3_endpoint=f"http://127.0.0.1:{refusing_port()}",
            bucket="drkit-unit",
            prefix="node",
            password_file=password,
        ),
        signing_key=tmp_path / "signing.pem",
        state_dir=tmp_path / "state",
        **settings,
    )


def local_status(node: Node) -> dict:
    """Return the node's local status document ({} while there is none, or half written)."""
    path = node.state / "status" / f"{node.name}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


class DaemonProcess:
    """`drkit daemon` as a real process (so it can be killed with SIGKILL), serving metrics on
    a free 127.0.0.1 port, or writing them to textfile (--metrics-textfile) when given."""

    def __init__(
        self,
        node: Node,
        env: dict | None = None,
        stop_timeout: float = 30,
        *,
        textfile: Path | None = None,
    ):
        self.port = 0 if textfile else free_port()
        self.log = node.workspace / f"daemon-{time.monotonic_ns()}.log"
        self.out = node.workspace / f"daemon-{time.monotonic_ns()}.out"
        argv = [DRKIT, "daemon", "--config", str(node.config), "--json"]
        if textfile:
            argv += ["--metrics-textfile", str(textfile)]
        else:
            argv += ["--metrics", f"127.0.0.1:{self.port}"]
        argv += ["--stop-timeout", str(stop_timeout)]
        self.log_handle = open(self.log, "wb")  # noqa: SIM115 (closed in close())
        self.out_handle = open(self.out, "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            argv,
            stdout=self.out_handle,
            stderr=self.log_handle,
            env={**os.environ, **(env or {})},
        )
        self.base = f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def children(self) -> list[tuple[int, str]]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
                if int(fields[1]) == self.process.pid:
                    argv = (entry / "cmdline").read_bytes().split(b"\0")
                    found.append((int(entry.name), " ".join(a.decode() for a in argv)))
            except (OSError, IndexError, ValueError):
                continue
        return found

    def log_lines(self) -> list[dict]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.close()

    def kill_hard(self) -> None:
        """SIGKILL the daemon and its restic, as a crash or an OOM kill of the unit would."""
        for pid, _ in self.children():
            os.kill(pid, signal.SIGKILL)
        self.process.kill()
        self.process.wait(timeout=30)
        self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            for pid, _ in self.children():
                os.kill(pid, signal.SIGKILL)
            self.process.kill()
            self.process.wait(timeout=30)
        self.log_handle.close()
        self.out_handle.close()
