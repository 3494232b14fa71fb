"""Alert latency: S3 dies at a chosen point of a scheduled run, and the first fail ping and
webhook must leave within 3 minutes, with the daemon's default retry window (2 minutes).

Each stop point has its own SeaweedFS, node and `drkit daemon`; S3 is killed (SIGKILL, so the
moment is exact) before restic (as the run's start ping arrives), during restic's backup (once
its first data pack is stored) and after it (as soon as restic's backup has exited, before the
run ends). The three run side by side; the figures go to the reliability figures.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import figures
import pytest
from daemons import DaemonProcess, local_status
from nodes import Node, wait_for

from drkit import config as config_module
from drkit.locals3 import LocalS3

pytestmark = pytest.mark.integration
BOUND_SECONDS = 180
STOP_POINTS = ("before_restic", "during_restic", "after_restic")


class Receiver:
    """Pings and webhooks on 127.0.0.1, each kept with its arrival time (monotonic); a hook
    registered for a path runs in the handler, before the answer, the first time it arrives."""

    def __init__(self):
        self.arrived: list[tuple[float, str, bytes]] = []
        self.hooks: dict[str, Callable[[], None]] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.arrived.append((time.monotonic(), self.path, body))
                hook = receiver.hooks.pop(self.path, None)
                if hook:
                    hook()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def first(self, path: str, after: float, webhook_failed: bool = False) -> float | None:
        for moment, arrived, body in list(self.arrived):
            if arrived != path or moment < after:
                continue
            if webhook_failed and json.loads(body)["ok"]:
                continue
            return moment
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Scenario:
    """One node with its own S3, receiver and daemon, and the moment its S3 was killed."""

    def __init__(self, point: str, base: Path):
        self.point = point
        self.s3 = LocalS3(base / "s3")
        self.receiver = Receiver()
        self.daemon: DaemonProcess | None = None
        self.killed_at: float | None = None
        self.notes: dict = {}
        self.s3.start()
        saved = {name: os.environ.get(name) for name in self.s3.env()}
        os.environ.update(self.s3.env())  # drkit init runs in this process
        try:
            password = base / "repo.pass"
            password.write_text("p" * 64)
            password.chmod(0o600)
            repository = config_module.Repository(
                s3_endpoint=self.s3.endpoint,
                bucket=f"latency-{point.replace('_', '-')}",
                prefix="node",
                password_file=password,
                object_lock=config_module.ObjectLock(days=1),
            )
            big = 300 if point == "during_restic" else 0  # a backup long enough to be caught
            self.node = Node(base, repository, big_file_mb=big)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        self.node.settings(
            schedule={"backup": "every 5s", "prune": None, "verify": None, "drill": None},
            objectives={"rpo": "1h", "rto": "10m"},
            notify={
                "ping": {"url": self.receiver.url + "/ping"},
                "webhook": {"url": self.receiver.url + "/hook"},
            },
        )

    def kill_s3(self) -> None:
        if self.killed_at is None:
            os.killpg(self.s3.pid, signal.SIGKILL)
            self.killed_at = time.monotonic()

    def restic_backup_running(self) -> bool:
        assert self.daemon is not None
        return any(" backup " in argv for _, argv in self.daemon.children())

    def run(self) -> dict:
        """Start the daemon, kill S3 at the stop point, and return the measured latencies."""
        self.daemon = DaemonProcess(self.node, env=self.s3.env(), stop_timeout=5)
        if self.point == "before_restic":
            # after a good run, the next run's start ping kills S3 before its action begins
            wait_for(lambda: local_status(self.node).get("last_good_backup"), 90, "a backup")
            self.receiver.hooks["/ping/start"] = self.kill_s3
            wait_for(lambda: self.killed_at, 60, "the next run's start")
        elif self.point == "during_restic":
            client = self.s3.client()

            def packs_stored() -> bool:
                listed = client.list_objects_v2(
                    Bucket=self.node.repository.bucket, Prefix="node/data/"
                )
                return listed.get("KeyCount", 0) > 0

            wait_for(packs_stored, 90, "restic's first data pack", step=0.05)
            self.kill_s3()
            self.notes["restic_alive_after_kill"] = self.restic_backup_running()
        else:
            wait_for(self.restic_backup_running, 90, "restic backup", step=0.005)
            wait_for(lambda: not self.restic_backup_running(), 60, "restic exited", step=0.005)
            self.kill_s3()
            self.notes["snapshot_before_kill"] = (
                local_status(self.node).get("last_good_backup") or {}
            ).get("snapshot_id")
        assert self.killed_at is not None
        killed = self.killed_at
        wait_for(
            lambda: (
                self.receiver.first("/ping/fail", killed)
                and self.receiver.first("/hook", killed, webhook_failed=True)
            ),
            BOUND_SECONDS + 30,
            f"a fail ping and webhook ({self.point})",
            step=0.5,
        )
        ping = self.receiver.first("/ping/fail", killed) - killed
        hook = self.receiver.first("/hook", killed, webhook_failed=True) - killed
        self.notes["success_ping_after_kill"] = self.receiver.first("/ping", killed)
        self.notes["status"] = local_status(self.node)
        self.notes["restic_alive_at_alert"] = self.restic_backup_running()
        return {"fail_ping_seconds": round(ping, 1), "webhook_seconds": round(hook, 1)}

    def close(self) -> None:
        if self.daemon is not None:  # not a test of stopping (restic may be retrying): SIGKILL
            self.daemon.kill_hard()
        self.s3.stop()
        self.receiver.close()


def test_first_fail_ping_and_webhook_leave_within_3_minutes_of_s3_dying(
    node_root: Path, tmp_path: Path
):
    scenarios = {}
    try:
        for point in STOP_POINTS:  # set up one by one: init reads credentials from os.environ
            base = node_root / point
            base.mkdir(mode=0o755)
            scenarios[point] = Scenario(point, base)
        with ThreadPoolExecutor(len(scenarios)) as pool:
            measured = dict(zip(scenarios, pool.map(Scenario.run, scenarios.values()), strict=True))
    finally:
        for scenario in scenarios.values():
            scenario.close()
    figures.record("alert_latency", bound_seconds=BOUND_SECONDS, retry_window="2m", **measured)
    for point, latency in measured.items():
        assert latency["fail_ping_seconds"] < BOUND_SECONDS, (point, latency)
        assert latency["webhook_seconds"] < BOUND_SECONDS, (point, latency)

    during = scenarios["during_restic"].notes
    assert during["restic_alive_after_kill"], "S3 died while restic was backing up"
    assert during["restic_alive_at_alert"], "the alert did not wait for restic's own retries"

    # the run caught after restic's backup still counts its snapshot, and ends at once (its
    # post-backup steps are bounded by the outage probe, not by restic's retries)
    after = scenarios["after_restic"]
    good = after.notes["status"]["last_good_backup"]
    assert good and good["snapshot_id"] != after.notes["snapshot_before_kill"], after.notes
    finished = after.notes["success_ping_after_kill"]
    assert finished is not None and finished - after.killed_at < 30, after.notes


def test_the_outage_probe_tells_a_missing_repository_from_a_usable_one(s3_repository):
    from drkit.engines.outage import OutageProbe
    from drkit.engines.storage import Storage
    from drkit.service import context

    missing = OutageProbe(s3_repository).check()  # no bucket yet, so no repository either
    assert missing and f"bucket {s3_repository.bucket} does not exist" in missing, missing
    Storage(s3_repository).init_bucket(s3_repository.object_lock)
    assert "no restic repository" in OutageProbe(s3_repository).check()
    context.restic_for(s3_repository).init()
    probe = OutageProbe(s3_repository)
    assert probe.check() is None and probe.failing_for() == 0
