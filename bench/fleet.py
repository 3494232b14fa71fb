"""The fleet views at fleet size: `drkit status --fleet` and `drkit report --fleet` on N nodes.

Usage: python bench/fleet.py [--nodes 10000] [--reps 3] [--changed 0.1]

N nodes' status documents (as engines.status writes them, with certificates) and a group's drift
findings go into one bucket of an embedded SeaweedFS (uploaded by 32 threads); then the installed
CLI runs both commands, reps times, each twice: cold (no local cache: every document fetched)
and warm (the cache of the previous run, after a `--changed` share of the nodes wrote a new
status document, as nodes backing up between two looks do). Beside them, in-process, the fetch
of the same documents as drkit did before the lean reader (botocore, 8 threads) against the
lean reader cold. Target (issue 25 part 6): each view of 10,000 nodes within 10 s. Results in
bench/results/fleet-latest.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from drkit import config, runner  # noqa: E402
from drkit.engines import reports  # noqa: E402
from drkit.engines.storage import Storage  # noqa: E402
from drkit.locals3 import LocalS3  # noqa: E402
from drkit.model import utc_text  # noqa: E402
from drkit.service.status import fleet_documents  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
WORK = Path("/var/lib/drkit-bench-fleet")
DRKIT = str(Path(sys.executable).with_name("drkit"))
TARGET_SECONDS = 10.0
TARGET_NODES = 10_000
UPLOAD_THREADS = 32


def status_document(node: str, index: int, now: datetime) -> dict[str, object]:
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


@dataclass
class Sample:
    """One timed command: wall seconds, the CPU seconds of drkit's process and of SeaweedFS,
    and the machine's 1-minute load average after it."""

    wall: float
    drkit_cpu: float
    s3_cpu: float
    load: float


def cpu_seconds(pid: int | None) -> float:
    """Return the CPU seconds (user + system) process pid has used so far (0 when unknown)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(argv: list[str], env: dict[str, str], s3_pid: int | None) -> Sample:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    s3_before = cpu_seconds(s3_pid)
    start = time.perf_counter()
    done = runner.run(argv, env=env, timeout=600)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"bench: {' '.join(argv[1:3])} failed: {done.stderr_tail[-400:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return Sample(seconds, used, cpu_seconds(s3_pid) - s3_before, os.getloadavg()[0])


def upload(storage: Storage, documents: dict[str, dict[str, object]]) -> None:
    """Put each node's status document, by UPLOAD_THREADS threads."""
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda item: storage.put_json(f"status/{item[0]}.json", item[1]),
                      documents.items()))  # fmt: skip


def fetch_before(storage: Storage) -> int:
    """Fetch every status document as drkit did before engines.bulkread: a botocore listing,
    then one botocore GET per document by 8 threads; return how many were read."""
    keys = [key for key in storage.list_keys("status/") if key.endswith(".json")]
    with ThreadPoolExecutor(8) as pool:
        return sum(found is not None for found in pool.map(storage.get_json, keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=TARGET_NODES)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--changed", type=float, default=0.1, help="share rewritten per look")
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
        names = [f"node-{index:05d}" for index in range(options.nodes)]
        start = time.perf_counter()
        upload(
            storage, {name: status_document(name, index, now) for index, name in enumerate(names)}
        )
        upload_seconds = time.perf_counter() - start
        for group in range(20):
            storage.put_json(
                reports.drift_key(f"pool-{group}"),
                {"group": f"pool-{group}", "time": utc_text(now), "ok": True, "findings": []},
            )
        changed = max(1, round(options.nodes * options.changed))
        cursor = 0

        def look(cold: bool) -> None:
            """Before a look: cold drops the local cache; warm rewrites the next `changed`
            nodes' documents (the cache of the last look stays)."""
            nonlocal cursor
            if cold:
                shutil.rmtree(node_config.state_dir / "cache", ignore_errors=True)
                return
            moment = datetime.now(UTC)
            picked = [(cursor + offset) % len(names) for offset in range(changed)]
            cursor += changed
            upload(storage, {names[i]: status_document(names[i], i, moment) for i in picked})

        cli: dict[str, list[Sample]] = {
            f"{command} ({kind})": []
            for command in ("status --fleet", "report --fleet")
            for kind in ("cold", "warm")
        }
        page = WORK / "fleet.html"
        base = ["--config", str(config_path), "--json"]
        commands = {
            "status --fleet": [DRKIT, "status", "--fleet", *base],
            "report --fleet": [DRKIT, "report", "--fleet", "--out", str(page), *base],
        }
        for _ in range(options.reps):
            for command, argv in commands.items():
                for kind in ("cold", "warm"):
                    look(kind == "cold")
                    cli[f"{command} ({kind})"].append(timed(argv, env, s3.pid))
        listed = json.loads(page.with_suffix(".json").read_text())["nodes"]
        if len(listed) != options.nodes:
            raise SystemExit(f"bench: the fleet page lists {len(listed)} of {options.nodes} nodes")
        start = time.perf_counter()
        read = fetch_before(storage)
        before = time.perf_counter() - start
        shutil.rmtree(WORK / "lean-cache", ignore_errors=True)
        start = time.perf_counter()
        documents, _ = fleet_documents(storage, WORK / "lean-cache")
        lean = time.perf_counter() - start
        if read != options.nodes or len(documents) != options.nodes:
            raise SystemExit(f"bench: read {read} and {len(documents)} of {options.nodes} nodes")
    shutil.rmtree(WORK, ignore_errors=True)
    medians = {
        name: {
            field: round(statistics.median(getattr(sample, field) for sample in samples), 2)
            for field in ("wall", "drkit_cpu", "s3_cpu", "load")
        }
        for name, samples in cli.items()
    }
    for median in medians.values():  # drkit's reading is one core at a time (the GIL)
        median["floor"] = round(
            max(median["drkit_cpu"], (median["drkit_cpu"] + median["s3_cpu"]) / 2), 2
        )
    results = {
        "created": utc_text(datetime.now(UTC)),
        "nodes": options.nodes,
        "reps": options.reps,
        "changed_per_warm_look": changed,
        "upload_seconds": round(upload_seconds, 1),
        "cli_median": medians,
        "fetch_seconds": {"before (botocore)": round(before, 3), "lean, cold": round(lean, 3)},
        "fetch_ratio": round(lean / before, 3),
        "targets": [
            {
                "target": f"{name} of {options.nodes} nodes <= {TARGET_SECONDS} s",
                "ok": median["wall"] <= TARGET_SECONDS,
                "ratio": round(median["wall"] / TARGET_SECONDS, 2),
                "detail": f"{median['wall']} s wall at load {median['load']}; CPU floor on 2 idle "
                f"cores {median['floor']} s",
            }
            for name, median in medians.items()
        ],
    }
    lines = [
        f"# fleet views, {options.nodes} nodes ({results['created']}, {options.reps} reps)",
        "",
        f"Cold: no local cache, every document fetched. Warm: the previous look's cache, "
        f"{changed} nodes' documents rewritten since. Target: <= {TARGET_SECONDS} s at "
        f"{TARGET_NODES} nodes (issue 25 part 6). Medians; CPU in seconds of drkit's process and "
        "of SeaweedFS; the floor is what the CPU alone takes on 2 idle cores, "
        "max(drkit, (drkit + SeaweedFS) / 2); load: the 1-minute load average after the run "
        "(other work on the machine).",
        "",
        "| command | wall s | ratio to target | target met | drkit CPU | SeaweedFS CPU | floor s "
        "| load |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| drkit {name} | {m['wall']} | {m['wall'] / TARGET_SECONDS:.2f} | "
            f"{'yes' if m['wall'] <= TARGET_SECONDS else '**MISSED**'} | {m['drkit_cpu']} | "
            f"{m['s3_cpu']} | {m['floor']} | {m['load']} |"
            for name, m in medians.items()
        ),
        "",
        f"Fetching the {options.nodes} status documents in-process: as before (botocore, 8 "
        f"threads) {round(before, 3)} s, lean reader cold {round(lean, 3)} s "
        f"(ratio {results['fetch_ratio']}). Upload of the documents: {round(upload_seconds, 1)} s.",
    ]
    text = "\n".join(lines) + "\n"
    (RESULTS / "fleet-latest.md").write_text(text)
    (RESULTS / "fleet-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    os.umask(0o022)
    main()
