"""The fleet views at fleet size: `drkit status --fleet` and `drkit report --fleet` on N nodes.

Usage: python bench/fleet.py [--nodes 1000] [--reps 3]

N nodes' status documents (as engines.status writes them, with certificates) and a group's drift
findings go into one bucket of an embedded SeaweedFS; then the installed CLI runs both commands,
reps times, and the one-by-one fetch of the same documents (what `status --fleet` did before)
runs in-process beside the parallel fetch, as a ratio. Target: both commands under 3 s for
1,000 nodes. Results in bench/results/fleet-latest.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from drkit import config, runner  # noqa: E402
from drkit.actions import status as status_action  # noqa: E402
from drkit.engines import reports  # noqa: E402
from drkit.engines.storage import Storage  # noqa: E402
from drkit.locals3 import LocalS3  # noqa: E402
from drkit.model import utc_text  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
WORK = Path("/var/lib/drkit-bench-fleet")
DRKIT = str(Path(sys.executable).with_name("drkit"))
TARGET_SECONDS = 3.0


def status_document(node: str, index: int, now: datetime) -> dict:
    """Return a realistic status document: every job run, one certificate; one node in ten
    stale, one in seventeen with a failed last backup."""
    age = 7200 if index % 10 == 9 else 300
    backup_time = utc_text(now - timedelta(seconds=age))
    job = {"time": utc_text(now - timedelta(hours=3)), "ok": True, "duration_seconds": 4.2}
    return {
        "format": 1,
        "node": node,
        "group": f"pool-{index % 20}",
        "updated": utc_text(now),
        "objectives": {"rpo_seconds": 3600, "rto_seconds": 600},
        "last_backup": {
            "time": backup_time,
            "ok": index % 17 != 16,
            "error": None if index % 17 != 16 else "storage unreachable",
            "duration_seconds": 12.5,
            "snapshot_id": uuid.uuid4().hex * 2,
            "bytes_added": 123456,
            "file_count": 2981,
            "certificates": [
                {
                    "path": "/etc/ssl/certs/ftps.pem",
                    "kind": "tls",
                    "subject": f"CN={node}.example",
                    "not_after": utc_text(now + timedelta(days=index % 120)),
                }
            ],
        },
        "last_good_backup": {"time": backup_time, "snapshot_id": uuid.uuid4().hex * 2},
        "last_prune": {**job, "removed": 3, "kept": 40},
        "last_verify": {**job, "problems": 0, "drift": 0},
        "last_drill": {**job, "rto_seconds": 6.4, "rpo_seconds": 300, "snapshot_id": "ab" * 32},
        "last_success": {"backup": backup_time},
        "snapshots": 40,
    }


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    done = runner.run(argv, env=env, timeout=300)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"bench: {' '.join(argv[1:3])} failed: {done.stderr_tail[-400:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    options = parser.parse_args()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(mode=0o755, parents=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)
    with LocalS3(WORK / "s3") as s3:
        env = {**s3.env(), "AWS_EC2_METADATA_DISABLED": "true"}
        os.environ.update(env)
        bucket = "fleet-" + uuid.uuid4().hex[:8]
        password = WORK / "repo.pass"
        password.write_text(uuid.uuid4().hex + "\n")
        password.chmod(0o600)
        node_config = config.Config(
            node="node-0000",
            servers=["openssh"],
            repository=config.Repository(
                s3_endpoint=s3.endpoint, bucket=bucket, prefix="fleet", password_file=password
            ),
            signing_key=WORK / "signing.key",
            state_dir=WORK / "state",
        )
        config_path = WORK / "drkit.yaml"
        config_path.write_text(config.dump_config(node_config))
        storage = Storage(node_config.repository)
        storage.init_bucket(node_config.repository.object_lock)  # drkit writes only there
        documents = {
            f"node-{index:04d}": status_document(f"node-{index:04d}", index, now)
            for index in range(options.nodes)
        }
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda item: storage.put_json(f"status/{item[0]}.json", item[1]),
                    documents.items(),
                )
            )
        for group in range(20):
            storage.put_json(
                reports.drift_key(f"pool-{group}"),
                {"group": f"pool-{group}", "time": utc_text(now), "ok": True, "findings": []},
            )
        cli = {"status --fleet": [], "report --fleet": []}
        fetch = {"one by one": [], "parallel": []}
        page = WORK / "fleet.html"
        base = ["--config", str(config_path), "--json"]
        for _ in range(options.reps):
            cli["status --fleet"].append(timed([DRKIT, "status", "--fleet", *base], env))
            cli["report --fleet"].append(
                timed([DRKIT, "report", "--fleet", "--out", str(page), *base], env)
            )
            start = time.perf_counter()
            for key in storage.list_keys("status/"):
                storage.get_json(key)
            fetch["one by one"].append(time.perf_counter() - start)
            start = time.perf_counter()
            status_action.fleet_documents(storage)
            fetch["parallel"].append(time.perf_counter() - start)
        listed = json.loads(page.with_suffix(".json").read_text())["nodes"]
        if len(listed) != options.nodes:
            raise SystemExit(f"bench: the fleet page lists {len(listed)} of {options.nodes} nodes")
    shutil.rmtree(WORK, ignore_errors=True)
    medians = {name: round(statistics.median(samples), 3) for name, samples in cli.items()}
    fetched = {name: round(statistics.median(samples), 3) for name, samples in fetch.items()}
    results = {
        "created": utc_text(datetime.now(UTC)),
        "nodes": options.nodes,
        "reps": options.reps,
        "cli_median_seconds": medians,
        "fetch_median_seconds": fetched,
        "fetch_ratio": round(fetched["parallel"] / fetched["one by one"], 3),
        "targets": [
            {
                "target": f"{name} of {options.nodes} nodes < {TARGET_SECONDS} s",
                "ok": seconds < TARGET_SECONDS,
                "detail": f"{seconds} s",
            }
            for name, seconds in medians.items()
        ],
    }
    lines = [
        f"# fleet views, {options.nodes} nodes ({results['created']}, {options.reps} reps)",
        "",
        "| command | median s | target |",
        "|---|---|---|",
        *(
            f"| drkit {name} | {seconds} | < {TARGET_SECONDS} s: "
            f"{'yes' if seconds < TARGET_SECONDS else '**MISSED**'} |"
            for name, seconds in medians.items()
        ),
        "",
        f"Fetching the {options.nodes} status documents in-process: one by one "
        f"{fetched['one by one']} s, parallel {fetched['parallel']} s "
        f"(ratio {results['fetch_ratio']}).",
    ]
    text = "\n".join(lines) + "\n"
    (RESULTS / "fleet-latest.md").write_text(text)
    (RESULTS / "fleet-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    os.umask(0o022)
    main()
