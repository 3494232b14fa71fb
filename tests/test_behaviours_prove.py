"""Documented daemon behaviour, every snapshot proven: `schedule.prove: after-backup` drills each
new snapshot in the sandbox (restore, every check, a real SFTP login) right after its backup; a
snapshot whose stored content was changed in the repository fails its proof and turns the node
red, whatever it backed up since. Real restic, SeaweedFS and sshd on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
import signal
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from daemons import DaemonProcess, Recorder, local_status
from nodes import SMOKE_USER, Node, wait_for

from drkit.model import parse_utc

pytestmark = pytest.mark.integration
LABELS = '{job="prove",node="sftp-1"}'


def hooks(recorder: Recorder) -> list[dict]:
    return [json.loads(body) for _, path, _, body in recorder.requests if path == "/hook"]


def hooked(recorder: Recorder, event: str) -> dict | None:
    return next((hook for hook in hooks(recorder) if hook["event"] == event), None)


def sample(text: str, name: str) -> float:
    """Return the value of the prove job's sample of metric name in an exposition."""
    prefix = f"{name}{LABELS} "
    return float(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix) :])


def live_files(root: Path) -> dict[str, str]:
    """Return the sha256 of every file of the live node but drkit's own (the backup writes
    its manifest under /var/lib/drkit)."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink() and "var/lib/drkit" not in str(path)
    }


def damage_every_stored_file(node: Node) -> int:
    """Flip one byte inside every data blob in the repository (a new version of each pack
    object, as a tampering or failing S3 would serve it): every file a later snapshot shares
    with the present ones no longer decrypts. Return how many blobs were damaged."""
    listed = node.restic("list", "index")
    assert listed.returncode == 0, listed.stderr
    blobs: dict[str, list[dict]] = {}
    for index_id in listed.stdout.split():
        shown = node.restic("cat", "index", index_id)
        assert shown.returncode == 0, shown.stderr
        for pack in json.loads(shown.stdout)["packs"]:
            if all(blob["type"] == "data" for blob in pack["blobs"]):
                blobs[pack["id"]] = pack["blobs"]
    repository = node.repository
    client = boto3.client("s3", endpoint_url=repository.s3_endpoint, region_name=repository.region)
    for pack, inside in blobs.items():
        key = f"{repository.prefix}/data/{pack[:2]}/{pack}"
        body = bytearray(client.get_object(Bucket=repository.bucket, Key=key)["Body"].read())
        for blob in inside:
            body[blob["offset"] + blob["length"] // 2] ^= 0xFF
        client.put_object(Bucket=repository.bucket, Key=key, Body=bytes(body))
    return sum(len(inside) for inside in blobs.values())


@pytest.mark.timeout(240)
def test_each_snapshot_is_proven_after_its_backup_and_a_tampered_one_turns_the_node_red(
    node_root: Path, s3_repository, recorder: Recorder
):
    node = Node(node_root, s3_repository)
    node.settings(
        smoke_user=SMOKE_USER,
        schedule={
            "backup": "every 6s",
            "prune": None,
            "verify": None,
            "drill": None,
            "prove": "after-backup",
            "retry_window": "1s",
        },
        objectives={"rpo": "20s", "rto": "10m"},  # proven breach 20 s after the first snapshot
        notify={
            "webhook": {"url": recorder.url + "/hook"},
            "ping": {"url": recorder.url + "/ping"},
        },
    )
    before = live_files(node.root)
    daemon = DaemonProcess(node)
    try:
        # the catch-up backup, then its proof on the proof thread
        proven = wait_for(
            lambda: (local_status(node).get("last_proven") or {}).get("ok") and local_status(node),
            90,
            "the first snapshot proven",
        )
        proof = proven["last_proven"]
        first = node.snapshots()[0]
        assert proof["snapshot_id"] == first["id"], proven
        backup = proven["last_success"]["backup"]
        assert parse_utc(proof["time"]) - parse_utc(backup) < timedelta(seconds=20), proven
        assert proof["rto_seconds"] is not None and proof["error"] is None  # a real login
        code, state = node.run("status")
        entry = state["nodes"][0]
        assert code == 0 and entry["proven_rpo_ok"] is True, state
        assert entry["proven_age_seconds"] is not None and entry["prove"] == "after-backup"
        code, text = daemon.get("/metrics")
        assert f"drkit_proven_rpo_breached{LABELS} 0.0" in text
        stamp = parse_utc(proof["snapshot_time"]).timestamp()
        assert abs(sample(text, "drkit_last_proven_timestamp_seconds") - stamp) < 1, text

        assert damage_every_stored_file(node) > 0
        failed = wait_for(lambda: hooked(recorder, "proof_failed"), 90, "the proof_failed webhook")
        assert failed["job"] == "prove" and failed["ok"] is False and failed["error"], failed
        assert failed["snapshot_id"] != first["id"]
        breach = wait_for(
            lambda: hooked(recorder, "proven_rpo_breached"), 90, "the proven_rpo_breached webhook"
        )
        # the newest snapshot proven before the damage (the one proven above, or the next
        # backup's, proven before the damage landed) is the one the breach names
        good = local_status(node)["last_good_proof"]
        assert good["snapshot_id"] != failed["snapshot_id"], good
        assert breach["snapshot_id"] == good["snapshot_id"] and "newest proven" in breach["error"]
        code, state = node.run("status")
        entry = state["nodes"][0]
        assert code == 1 and entry["rpo_ok"] is False and entry["proven_rpo_breached"], state
        assert entry["backup_rpo_ok"] is True, "backups went on: breached by the proofs alone"
        assert any(problem.startswith("last proof failed") for problem in entry["problems"])
        code, text = daemon.get("/metrics")
        assert f"drkit_proven_rpo_breached{LABELS} 1.0" in text
    finally:
        exit_code = daemon.stop(signal.SIGTERM)
    assert exit_code == 0, daemon.log.read_text()[-3000:]
    assert "/ping/fail" in recorder.paths()  # a failed proof alerts like a failed backup
    assert not list((node.state / "drills").iterdir()), "sandboxes removed"
    assert live_files(node.root) == before, "the proofs never touched the live node"
