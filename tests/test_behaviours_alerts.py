"""Documented daemon alerting: the RPO-breach webhook and `--metrics-textfile`, written
atomically with the documented metrics, against real restic, SeaweedFS and a 127.0.0.1
webhook receiver."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from daemons import DaemonProcess, Recorder
from nodes import Node, wait_for

pytestmark = pytest.mark.integration
LABELS = '{job="backup",node="sftp-1"}'
DOCUMENTED = (
    "drkit_last_success_timestamp_seconds",
    "drkit_last_run_ok",
    "drkit_last_run_timestamp_seconds",
    "drkit_run_duration_seconds",
    "drkit_bytes_added",
    "drkit_files",
    "drkit_snapshots",
    "drkit_seconds_since_last_good_backup",
    "drkit_rpo_seconds",
    "drkit_rpo_breached",
    "drkit_runs_total",
)


class TornReads:
    """Read the textfile in a loop; keep every read that is not a whole exposition."""

    def __init__(self, path: Path):
        self.path, self.reads, self.torn = path, 0, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(0.005):
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                continue
            self.reads += 1
            if not text.endswith("\n") or "drkit_runs_total" not in text:
                self.torn.append(text)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=10)


def hooks(recorder: Recorder) -> list[dict]:
    return [json.loads(body) for _, path, _, body in recorder.requests if path == "/hook"]


@pytest.mark.timeout(240)
def test_rpo_breach_webhook_and_atomic_metrics_textfile(
    node_root: Path, s3_repository, recorder: Recorder
):
    node = Node(node_root, s3_repository)
    node.settings(
        schedule={"backup": "every 1h", "prune": None, "verify": None, "drill": None},
        objectives={"rpo": "8s", "rto": "10m"},  # the catch-up backup, then breached 8 s on
        notify={"webhook": {"url": recorder.url + "/hook"}},
    )
    textfile = node.workspace / "textfile" / "drkit.prom"
    daemon = DaemonProcess(node, textfile=textfile)
    reader = TornReads(textfile)
    try:
        wait_for(
            lambda: any(h["event"] == "rpo_breached" for h in hooks(recorder)),
            120,
            "the rpo_breached webhook",
        )
        wait_for(
            lambda: (
                textfile.is_file() and f"drkit_rpo_breached{LABELS} 1.0" in textfile.read_text()
            ),
            60,
            "the textfile showing the breach",
        )
    finally:
        reader.stop()
        code = daemon.stop(signal.SIGTERM)
    assert code == 0, daemon.log.read_text()[-3000:]
    events = [(h["event"], h["ok"]) for h in hooks(recorder)]
    assert events.index(("succeeded", True)) < events.index(("rpo_breached", False)), events
    breach = next(h for h in hooks(recorder) if h["event"] == "rpo_breached")
    assert breach["job"] == "backup" and breach["node"] == "sftp-1" and breach["snapshot_id"]
    assert "RPO" in breach["error"], breach

    text = textfile.read_text()
    for name in DOCUMENTED:
        assert name in text, name
    assert f"drkit_last_run_ok{LABELS} 1.0" in text
    assert reader.reads > 10 and reader.torn == [], reader.torn[:1]
    assert [p.name for p in textfile.parent.iterdir()] == ["drkit.prom"], "no temporary left"
