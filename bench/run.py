"""drkit against raw restic on the same data and the same S3, interleaved, as ratios.

Usage: ./scripts/bench [--quick] [--reps N] [--datasets config,logs,...]

Every phase runs drkit and raw restic back to back on the same node data (order alternating per
repetition), each into its own fresh repository on one embedded SeaweedFS. Results: median and
spread per phase, ratios, targets met or missed, drkit's own peak RSS (from --profile), written
to bench/results/ as Markdown, JSON and an HTML page with the scaling plot.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from devtools import sample_node  # noqa: E402
from drkit import runner  # noqa: E402
from drkit.engines.restic import find_restic  # noqa: E402
from drkit.locals3 import LocalS3  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
_WORKER = os.environ.get("DRKIT_SAMPLE_WORKER", "")  # concurrent benches never share a tree
# root-owned 0755: sshd refuses chroots under /tmp
WORK = Path("/var/lib/drkit-bench" + (f"-{_WORKER}" if _WORKER else ""))
DRKIT = str(Path(sys.executable).with_name("drkit"))
MIB = 1 << 20

# name: (config files, config bytes, log files, log bytes, random bytes)
DATASETS = {
    "demo": (0, 0, 0, 0, 0),  # the demo's node alone: what the drill target is about
    "config": (2981, 20 * MIB, 0, 0, 0),
    "logs": (0, 0, 30, 1020 * MIB, 0),
    "mixed": (2981, 20 * MIB, 30, 1620 * MIB, 512 * MIB),
    "files30k": (30000, 60 * MIB, 0, 0, 0),
}
SCALING_LOGS = {"logs256": 256, "logs512": 512, "logs1024": 1024, "logs2048": 2048}
# name: (files, bytes) in the smoke user's chroot, 250 to a partner directory (--files N: filesN)
CHROOT_TREES = {"files100k": (100_000, 200 * MIB)}


def chroot_tree(name: str) -> tuple[int, int] | None:
    """Return (files, bytes) of a chroot-tree dataset (files100k, or filesN for any N)."""
    if name in CHROOT_TREES:
        return CHROOT_TREES[name]
    count = name.removeprefix("files")
    return (int(count), int(count) * 2048) if count.isdigit() and name not in DATASETS else None


def write_dataset(root: Path, name: str, seed: int = 7) -> dict[str, list[str]]:
    """Create a sample node plus deterministic data; return drkit's --include globs."""
    rng = random.Random(seed)
    sample_node.build(root, smoke_user="drill", chroot=True)
    tree = chroot_tree(name)
    if name in SCALING_LOGS:
        config_files, config_bytes, log_files, log_bytes, random_bytes = (
            0, 0, 8, SCALING_LOGS[name] * MIB, 0,
        )  # fmt: skip
    elif tree is not None:
        config_files, config_bytes, log_files, log_bytes, random_bytes = 0, 0, 0, 0, 0
    else:
        config_files, config_bytes, log_files, log_bytes, random_bytes = DATASETS[name]
    includes: dict[str, list[str]] = {"audit_logs": ["/var/log/sftp/*"]}
    words = [f"{rng.getrandbits(40):x}" for _ in range(4096)]
    if config_files:
        per_file = config_bytes // config_files
        for index in range(config_files):
            path = root / f"opt/transfer/conf/site{index % 40:02d}/partner-{index:05d}.ini"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines, size = [], 0
            while size < per_file:
                line = f"{rng.choice(words)} = {rng.choice(words)} {rng.choice(words)}\n"
                lines.append(line)
                size += len(line)
            path.write_text("".join(lines))
        includes["config"] = ["/opt/transfer/conf/**"]
    log_dir = root / "var/log/sftp"
    log_dir.mkdir(parents=True, exist_ok=True)
    for index in range(log_files):
        with open(log_dir / f"transfer-{index:02d}.log", "wb") as handle:
            remaining = log_bytes // log_files
            while remaining > 0:
                block = rng.randbytes(min(remaining // 2 + 1, 4 * MIB)).hex()
                text = "\n".join(
                    f"2026-11-{index % 28 + 1:02d}T10:00:00Z put /upload/{block[i : i + 48]}"
                    for i in range(0, len(block), 48)
                )
                data = text.encode()[:remaining]
                handle.write(data)
                remaining -= len(data)
    if tree is not None:
        write_chroot_tree(root / "srv/sftp/drill/upload", *tree, rng)
        includes["chroot"] = ["/srv/sftp/**"]
    if random_bytes:
        blobs = root / "opt/transfer/blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        for index in range(8):
            (blobs / f"payload-{index}.bin").write_bytes(rng.randbytes(random_bytes // 8))
        includes["scripts"] = ["/opt/transfer/blobs/*"]
    return includes


def write_chroot_tree(top: Path, files: int, size: int, rng: random.Random) -> None:
    """Write files uploads of about size/files bytes each (hex text), 250 to a directory, owned
    like the chroot they are in."""
    owner = top.stat()
    per_file = max(size // files, 1)
    for index in range(files):
        directory = top / f"partner-{index // 250:04d}"
        if index % 250 == 0:
            directory.mkdir()
            os.chown(directory, owner.st_uid, owner.st_gid)
        path = directory / f"upload-{index:06d}.csv"
        path.write_bytes(rng.randbytes(per_file // 2 + 1).hex().encode()[:per_file])
        os.chown(path, owner.st_uid, owner.st_gid)


def file_count(root: Path) -> int:
    """Return the number of files and directories under root (the per-file costs' divisor)."""
    return sum(len(dirs) + len(files) for _, dirs, files in os.walk(root))


def small_change(root: Path, seed: int) -> None:
    """Append 10 MiB to a log and edit 5 config files."""
    rng = random.Random(seed)
    logs = sorted((root / "var/log/sftp").glob("*"))
    with open(logs[-1], "ab") as handle:
        handle.write(rng.randbytes(5 * MIB).hex().encode())
    configs = sorted((root / "opt/transfer/conf").rglob("*.ini"))[:5] or [
        root / "etc/ssh/sshd_config.d/10-hardening.conf"
    ]
    for path in configs:
        path.write_text(path.read_text() + f"# edited {rng.getrandbits(32):x}\n")


class Timer:
    """Runs one command, timed; parses drkit's --profile lines when present."""

    def __init__(self, env: dict[str, str]):
        self.env = env

    def run(
        self,
        argv: list[str],
        cwd: Path | None = None,
        timeout: float = 3600,
        ok=(0,),
        calls: Path | None = None,
    ) -> dict:
        """Run argv, timed; with calls (the counting restic's log), also count the restic
        processes it started."""
        env = {**self.env, **({"DRKIT_BENCH_CALLS": str(calls)} if calls else {})}
        if calls:
            calls.unlink(missing_ok=True)
        start = time.perf_counter()
        done = runner.run(argv, env=env, cwd=cwd, timeout=timeout)
        seconds = time.perf_counter() - start
        if done.returncode not in ok:
            raise SystemExit(f"bench: {' '.join(argv[:3])} failed ({done.returncode}): "
                             f"{done.stderr_tail[-400:]}")  # fmt: skip
        result: dict = {"seconds": seconds}
        if calls:
            result["restic"] = calls.read_text().split() if calls.exists() else []
        for line in done.stderr.splitlines():
            if line.startswith("drkit profile: peak rss drkit"):
                result["drkit_rss_mib"] = float(line.split()[-2])
            elif line.startswith("drkit profile: peak rss children"):
                result["child_rss_mib"] = float(line.split()[-2])
        return result


class Pair:
    """drkit and raw restic, each with its own repository on the shared S3, on one node root."""

    def __init__(self, s3: LocalS3, root: Path, includes: dict[str, list[str]], work: Path):
        self.s3, self.root, self.includes, self.work = s3, root, includes, work
        self.restic = str(find_restic(None))
        self.password = work / "repo.pass"
        self.password.write_text(uuid.uuid4().hex + "\n")
        self.password.chmod(0o600)
        self.bucket = "b-" + uuid.uuid4().hex[:10]
        self.config = work / "drkit.yaml"
        self.calls = work / "restic-calls.log"
        counting = work / "restic-counting"  # logs each subcommand, then runs the real restic
        counting.write_text(
            f'#!/bin/sh\necho "$1" >> "$DRKIT_BENCH_CALLS"\nexec {self.restic} "$@"\n'
        )
        counting.chmod(0o755)
        env = {
            **s3.env(),
            "DRKIT_PROFILE": "1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "DRKIT_RESTIC": str(counting),
        }
        self.timer = Timer(env)
        self.raw_env = {
            **env,
            "RESTIC_REPOSITORY": f"s3:{s3.endpoint}/{self.bucket}-raw/raw",
            "RESTIC_PASSWORD_FILE": str(self.password),
        }
        s3.client().create_bucket(Bucket=f"{self.bucket}-raw")

    def raw(self, *args: str, cwd: Path | None = None) -> dict:
        start = time.perf_counter()
        done = runner.run(
            ["/usr/bin/time", "-f", "%M", self.restic, *args, "-o", "s3.bucket-lookup=path"],
            env=self.raw_env, cwd=cwd, timeout=3600,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"bench: restic {args[0]} failed: {done.stderr_tail[-400:]}")
        return {"seconds": seconds, "child_rss_mib": int(done.stderr.split()[-1]) / 1024}

    def drkit(self, *args: str, ok=(0,)) -> dict:
        argv = [DRKIT, *args, "--config", str(self.config), "--json"]
        return self.timer.run(argv, ok=ok, calls=self.calls)

    def init(self) -> tuple[dict, dict]:
        includes = [f"--include={c}={p}" for c, ps in self.includes.items() for p in ps]
        drkit = self.timer.run(
            [DRKIT, "init", "--config", str(self.config), "--node", "bench", "--root",
             str(self.root), "--s3-endpoint", self.s3.endpoint, "--bucket", self.bucket,
             "--prefix", "bench", "--password-file", str(self.password), "--smoke-user", "drill",
             "--state-dir", str(self.work / "state"), "--lock-days", "1", *includes, "--json"]
        )  # fmt: skip
        return drkit, self.raw("init")

    def raw_paths(self) -> list[str]:
        return [p for p in ("etc", "home", "srv", "usr/local", "opt", "var/log/sftp")
                if (self.root / p).exists()]  # fmt: skip

    def backup(self) -> tuple[dict, dict]:
        raw_args = ["backup", "--host", "bench", "--tag", "drkit", *self.raw_paths()]
        return self.drkit("backup"), self.raw(*raw_args, cwd=self.root)

    def restore(self, smoke: bool = False) -> tuple[dict, dict | None]:
        target = self.work / f"restore-{uuid.uuid4().hex[:6]}"
        extra = ["--smoke"] if smoke else []
        drkit = self.drkit("restore", "latest", "--target", str(target), *extra)
        shutil.rmtree(target, ignore_errors=True)
        if smoke:
            return drkit, None
        raw_target = self.work / f"raw-{uuid.uuid4().hex[:6]}"
        raw = self.raw("restore", "latest", "--target", str(raw_target))
        shutil.rmtree(raw_target, ignore_errors=True)
        return drkit, raw


def summarise(samples: list[float]) -> dict:
    return {
        "median": round(statistics.median(samples), 3),
        "min": round(min(samples), 3),
        "max": round(max(samples), 3),
        "n": len(samples),
    }


def bench_dataset(s3: LocalS3, name: str, reps: int) -> dict:
    """Run every phase for one dataset, reps times, interleaved; return medians and ratios."""
    phases: dict[str, dict[str, list[float]]] = {}
    processes: dict[str, list[str]] = {}
    rss = {"drkit": [], "restic": []}

    def record(phase: str, drkit: dict, raw: dict | None) -> None:
        slot = phases.setdefault(phase, {"drkit": [], "restic": []})
        slot["drkit"].append(drkit["seconds"])
        if "restic" in drkit:
            processes[phase] = drkit["restic"]
        if "drkit_rss_mib" in drkit:
            rss["drkit"].append(drkit["drkit_rss_mib"])
            slot.setdefault("drkit_rss_mib", []).append(drkit["drkit_rss_mib"])
        if raw:
            slot["restic"].append(raw["seconds"])
            rss["restic"].append(raw["child_rss_mib"])

    for rep in range(reps):
        work = WORK / f"{name}-{rep}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, mode=0o755)
        root = work / "node"
        print(f"bench: {name} rep {rep + 1}/{reps}: generating data", file=sys.stderr)
        pair = Pair(s3, root, write_dataset(root, name), work)
        files = file_count(root)
        for phase, call in (
            ("init", pair.init),
            ("first backup", pair.backup),
            ("unchanged re-backup", pair.backup),
        ):
            record(phase, *call())
        small_change(root, rep)
        record("backup after small change", *pair.backup())
        record("restore", *pair.restore())
        record("restore --smoke", *pair.restore(smoke=True))
        reports = str(work / "reports")
        record("drill", pair.drkit("drill", "--report-dir", reports, ok=(0, 1)), None)
        record("status", pair.drkit("status", ok=(0, 1)), None)
        record("show latest", pair.drkit("show", "latest"), None)
        record("diff latest~1 latest", pair.drkit("diff", "latest~1", "latest"), None)
        record("verify", pair.drkit("verify", ok=(0, 1)), None)
        record("drkit --help", pair.timer.run([DRKIT, "--help"]), None)
        shutil.rmtree(work, ignore_errors=True)
    raw_restore = statistics.median(phases["restore"]["restic"])
    table = {}
    for phase, slot in phases.items():
        row = {"drkit": summarise(slot["drkit"])}
        if slot["restic"]:
            row["restic"] = summarise(slot["restic"])
            row["ratio"] = round(row["drkit"]["median"] / row["restic"]["median"], 3)
            row["overhead_seconds"] = round(row["drkit"]["median"] - row["restic"]["median"], 3)
        elif phase in ("restore --smoke", "drill"):
            row["ratio"] = round(row["drkit"]["median"] / raw_restore, 3)
        if phase in processes:
            row["restic_processes"] = processes[phase]
        if slot.get("drkit_rss_mib"):
            row["drkit_peak_rss_mib"] = max(slot["drkit_rss_mib"])
        table[phase] = row
    for row in table.values():  # growth with the file count shows here
        row["drkit_us_per_file"] = round(row["drkit"]["median"] / files * 1e6, 1)
        if "restic" in row:
            row["restic_us_per_file"] = round(row["restic"]["median"] / files * 1e6, 1)
    return {
        "files": files,
        "phases": table,
        "peak_rss_mib": {
            "drkit": round(max(rss["drkit"]), 1) if rss["drkit"] else None,
            "restic": round(max(rss["restic"]), 1) if rss["restic"] else None,
        },
    }


def targets(name: str, result: dict) -> list[dict]:
    """Judge one dataset's result against the targets of the performance issue."""
    phases, verdicts = result["phases"], []

    def judge(what: str, ok: bool, detail: str) -> None:
        verdicts.append({"dataset": name, "target": what, "ok": ok, "detail": detail})

    first = phases["first backup"]
    tree = chroot_tree(name) is not None  # a large chroot tree: within 1.5x raw (part 4)
    most_first = 1.5 if tree else 1.25 if name == "files30k" else 1.10
    judge(f"first backup <= {most_first}x raw", first["ratio"] <= most_first, f"{first['ratio']}x")
    again = phases["unchanged re-backup"]
    judge("unchanged re-backup <= 0.5x raw (a freshness entry, no restic process)",
          again["ratio"] <= 0.5, f"{again['ratio']}x")  # fmt: skip
    restore = phases["restore"]
    most_restore = 1.5 if tree else 1.15
    judge(f"restore (full verification) <= {most_restore}x raw", restore["ratio"] <= most_restore,
          f"{restore['ratio']}x")  # fmt: skip
    if tree:
        drill = phases["drill"]
        judge("drill <= 1.5x raw restore", drill["ratio"] <= 1.5, f"{drill['ratio']}x")
    if name == "config":
        judge("restore <= raw + 0.4 s", restore["overhead_seconds"] <= 0.4,
              f"+{restore['overhead_seconds']} s")  # fmt: skip
    drill_budget = {"demo": 2.5, "files30k": 8.0}.get(name)
    if drill_budget is not None:
        drill = phases["drill"]["drkit"]["median"]
        judge(f"drill <= {drill_budget} s", drill <= drill_budget, f"{drill} s")
    for phase, most in (("restore", 1), ("first backup", 1), ("unchanged re-backup", 0),
                        ("show latest", 0), ("diff latest~1 latest", 0)):  # fmt: skip
        started = phases[phase].get("restic_processes")
        if started is not None:
            judge(f"{phase}: <= {most} restic process(es)", len(started) <= most,
                  f"{len(started)}: {', '.join(started) or 'none'}")  # fmt: skip
    startup = phases["drkit --help"]["drkit"]["median"]
    judge("drkit --help <= 0.25 s", startup <= 0.25, f"{startup} s")
    peak = result["peak_rss_mib"]["drkit"]
    most_rss = 300 if tree and result["files"] >= 100_000 else 150 if name == "files30k" else None
    if peak is not None and most_rss is not None:
        judge(f"drkit peak RSS <= {most_rss} MiB", peak <= most_rss, f"{peak} MiB")
    return verdicts


def bench_scaling(s3: LocalS3) -> dict:
    """First backup and restore against log volume (0.25 to 2 GiB), one run each."""
    points = []
    for name, size in SCALING_LOGS.items():
        work = WORK / name
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True, mode=0o755)
        print(f"bench: scaling {name}: generating data", file=sys.stderr)
        pair = Pair(s3, work / "node", write_dataset(work / "node", name), work)
        pair.init()
        drkit_backup, raw_backup = pair.backup()
        drkit_restore, raw_restore = pair.restore()
        points.append(
            {
                "mib": size,
                "backup": {"drkit": drkit_backup["seconds"], "restic": raw_backup["seconds"]},
                "restore": {"drkit": drkit_restore["seconds"], "restic": raw_restore["seconds"]},
            }
        )
        shutil.rmtree(work, ignore_errors=True)
    return {"logs": points}


def svg_chart(title: str, points: list[dict], phase: str) -> str:
    """Return an inline SVG line chart of seconds against MiB, drkit and restic."""
    width, height, pad = 520, 260, 44
    x_max = max(point["mib"] for point in points)
    y_max = max(point[phase][tool] for point in points for tool in ("drkit", "restic")) * 1.1

    def at(x: float, y: float) -> str:
        left = pad + x / x_max * (width - 2 * pad)
        return f"{left:.1f},{height - pad - y / y_max * (height - 2 * pad):.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
        f'<text x="{pad}" y="18" font-size="14">{title}</text>',
        f'<polyline fill="none" stroke="#444" points="{at(0, y_max)} {at(0, 0)} {at(x_max, 0)}"/>',
        f'<text x="{width - pad}" y="{height - 12}" font-size="11" text-anchor="end">'
        f"MiB of logs (up to {x_max})</text>",
        f'<text x="4" y="{pad - 6}" font-size="11">seconds (up to {y_max:.1f})</text>',
    ]
    for tool, colour, label_y in (("drkit", "#c0392b", 40), ("restic", "#2471a3", 56)):
        line = " ".join(at(point["mib"], point[phase][tool]) for point in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
        parts.append(
            f'<text x="{width - pad - 60}" y="{label_y}" font-size="12" fill="{colour}">'
            f"{tool}</text>"
        )
    return "".join([*parts, "</svg>"])


def html_report(results: dict, text: str) -> str:
    """Return a self-contained page: the scaling charts and the tables."""
    import html

    charts = ""
    if results.get("scaling"):
        points = results["scaling"]["logs"]
        charts = svg_chart("first backup", points, "backup") + svg_chart(
            "restore", points, "restore"
        )
    return (
        "<!doctype html><meta charset=utf-8><title>drkit bench</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em}"
        f"</style><h1>drkit vs raw restic</h1>{charts}<pre>{html.escape(text)}</pre>\n"
    )


def markdown(results: dict) -> str:
    lines = [f"# drkit vs raw restic ({results['created']}, {results['mode']})", ""]
    lines += ["| dataset | phase | drkit (median s) | restic (median s) | ratio | overhead s "
              "| µs/file drkit (restic) | restic processes (drkit) |",
              "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, result in results["datasets"].items():
        for phase, row in result["phases"].items():
            restic = row.get("restic", {}).get("median", "")
            started = row.get("restic_processes")
            counted = (
                f"{len(started)}: {', '.join(started)}" if started else "0" if started == [] else ""
            )
            per_file = f"{row['drkit_us_per_file']}" + (
                f" ({row['restic_us_per_file']})" if "restic_us_per_file" in row else ""
            )
            lines.append(
                f"| {name} | {phase} | {row['drkit']['median']} | {restic} | "
                f"{row.get('ratio', '')} | {row.get('overhead_seconds', '')} | {per_file} "
                f"| {counted} |"
            )
    lines += ["", "| dataset | files | peak RSS drkit MiB | peak RSS restic MiB |",
              "|---|---|---|---|"]  # fmt: skip
    for name, result in results["datasets"].items():
        peak = result["peak_rss_mib"]
        lines.append(f"| {name} | {result['files']} | {peak['drkit']} | {peak['restic']} |")
    lines += ["", "| target | dataset | met | measured |", "|---|---|---|---|"]
    for verdict in results["targets"]:
        met = "yes" if verdict["ok"] else "**MISSED**"
        lines.append(
            f"| {verdict['target']} | {verdict['dataset']} | {met} | {verdict['detail']} |"
        )
    scaling = results.get("scaling", {}).get("logs", [])
    if scaling:
        header = (
            "| logs MiB | backup drkit s | backup restic s | restore drkit s | restore restic s |"
        )
        lines += ["", header, "|---|---|---|---|---|"]
    for point in scaling:
        backup, restore = point["backup"], point["restore"]
        lines.append(
            f"| {point['mib']} | {backup['drkit']:.2f} | {backup['restic']:.2f} | "
            f"{restore['drkit']:.2f} | {restore['restic']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="the demo and config datasets, 1 repetition"
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--datasets", default="demo,config,logs,mixed,files30k")
    parser.add_argument("--no-scaling", action="store_true", help="skip the 0.25-2 GiB series")
    parser.add_argument(
        "--files", type=int, help="also a chroot tree of this many files (files100k: 100000)"
    )
    options = parser.parse_args()
    names = ["demo", "config"] if options.quick else options.datasets.split(",")
    names += [f"files{options.files}"] if options.files else []
    reps = 1 if options.quick else options.reps
    # timed runs start from byte code, as an installed drkit does (PYTHONDONTWRITEBYTECODE or
    # a source edited since the last run would otherwise add its compilation to each run)
    compileall.compile_dir(REPO_ROOT / "drkit", quiet=1)
    WORK.mkdir(mode=0o755, parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": "quick" if options.quick else f"full, {reps} repetitions",
        "datasets": {},
        "targets": [],
    }
    with LocalS3(WORK / "s3") as s3:
        for name in names:
            results["datasets"][name] = bench_dataset(s3, name, reps)
            results["targets"] += targets(name, results["datasets"][name])
        if not options.quick and not options.no_scaling:
            results["scaling"] = bench_scaling(s3)
    shutil.rmtree(WORK, ignore_errors=True)
    stamp = results["created"].replace(":", "")
    text = markdown(results)
    for path in (RESULTS / f"{stamp}.md", RESULTS / "latest.md"):
        path.write_text(text)
    for path in (RESULTS / f"{stamp}.json", RESULTS / "latest.json"):
        path.write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "report.html").write_text(html_report(results, text))
    print(text)
    missed = [v for v in results["targets"] if not v["ok"]]
    print(f"bench: {len(results['targets']) - len(missed)}/{len(results['targets'])} targets met")


if __name__ == "__main__":
    os.umask(0o022)
    main()
