"""Prometheus metrics of a node, computed from its status document at each scrape.

Served on `--metrics HOST:PORT` (`/metrics`, and `/healthz` that answers 503 while the RPO is
breached) and/or written to a node-exporter textfile-collector file. Every name starts with
`drkit_` and carries `node` and `job` labels. Values are derived from the status document at
collection time, so `drkit_seconds_since_last_good_backup` and `drkit_rpo_breached` are true at
every moment, also when the daemon's jobs stopped running.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
import wsgiref.simple_server
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, exposition, generate_latest, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from drkit import errors
from drkit.engines import status
from drkit.engines.statusdoc import Objectives, StatusDocument

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment
from drkit.model import parse_utc_or_none

log = logging.getLogger(__name__)

JOB_LABELS = ("node", "job")


def parse_address(text: str) -> tuple[str, int]:
    """Given 'HOST:PORT' or 'PORT', return (host, port); the host defaults to 127.0.0.1."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise errors.UsageError(
            f"--metrics {text!r} is not HOST:PORT with an IP address, e.g. 127.0.0.1:9109"
        ) from None
    if not 0 <= number <= 65535:
        raise errors.UsageError(f"--metrics {text!r}: port out of range")
    return host, number


class StatusCollector:
    """A prometheus_client collector that reads the status document on every collection."""

    def __init__(
        self, node: str, read: Callable[[], StatusDocument | None], objectives: Objectives
    ):
        self.node = node
        self.read = read
        self.objectives = objectives
        self.runs: dict[tuple[str, str], int] = {}
        self.unacknowledged: int | None = None  # security events open, counted after a backup
        self._lock = threading.Lock()

    def count_run(self, job: str, ok: bool) -> None:
        """Count one finished run of job."""
        with self._lock:
            key = (job, "ok" if ok else "failed")
            self.runs[key] = self.runs.get(key, 0) + 1

    def evaluate(self) -> status.NodeEntry:
        """Return the node's `drkit status` entry now."""
        return status.evaluate(
            self.read(),
            node=self.node,
            now=datetime.now(UTC),
            default_objectives=self.objectives,
        )

    def collect(self) -> Iterator[Metric]:
        document: Mapping[str, Any] = self.read() or {}
        entry = self.evaluate()
        node = self.node

        def gauge(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=list(JOB_LABELS))

        def job_gauges(
            job: str, rows: Iterable[tuple[str, str, float | None]]
        ) -> Iterator[GaugeMetricFamily]:
            """Yield one gauge per (name, documentation, value); absent values, no sample."""
            for name, documentation, value in rows:
                family = gauge(name, documentation)
                if value is not None:
                    family.add_metric([node, job], float(value))
                yield family

        success = gauge(
            "drkit_last_success_timestamp_seconds", "Unix time of the job's last successful run"
        )
        last_ok = gauge("drkit_last_run_ok", "1 when the job's last run succeeded, else 0")
        last_time = gauge("drkit_last_run_timestamp_seconds", "Unix time of the job's last run")
        duration = gauge("drkit_run_duration_seconds", "Duration of the job's last run")
        for job in status.JOBS:
            when = parse_utc_or_none((document.get("last_success") or {}).get(job))
            if when is not None:
                success.add_metric([node, job], when.timestamp())
            last = document.get(status.last_key(job))
            if last:
                last_ok.add_metric([node, job], 1.0 if last.get("ok") else 0.0)
                moment = parse_utc_or_none(last.get("time"))
                if moment is not None:
                    last_time.add_metric([node, job], moment.timestamp())
                if last.get("duration_seconds") is not None:
                    duration.add_metric([node, job], float(last["duration_seconds"]))
        yield from (success, last_ok, last_time, duration)

        backup = document.get("last_backup") or {}
        yield from job_gauges(
            "backup",
            (
                ("drkit_bytes_added", "Bytes the last backup added", backup.get("bytes_added")),
                ("drkit_files", "Files in the last backup", backup.get("file_count")),
                (
                    "drkit_snapshots",
                    "Snapshots of the node in the repository",
                    entry["snapshot_count"],
                ),
            ),
        )

        age = gauge(
            "drkit_seconds_since_last_good_backup",
            "Seconds since the last successful backup (absent when there is none)",
        )
        if entry["age_seconds"] is not None:
            age.add_metric([node, "backup"], float(entry["age_seconds"]))
        yield age
        rpo = gauge("drkit_rpo_seconds", "The node's recovery point objective")
        rpo.add_metric([node, "backup"], float(entry["rpo_seconds"]))
        yield rpo
        breached = gauge("drkit_rpo_breached", "1 when the node is outside its RPO")
        breached.add_metric([node, "backup"], 0.0 if entry["rpo_ok"] else 1.0)
        yield breached
        copy_lag = GaugeMetricFamily(
            "drkit_copy_lag_seconds",
            "Age of the last good copy of the node's snapshots to each further repository",
            labels=["node", "copy"],
        )
        for copy in entry.get("copies") or []:
            if copy["lag_seconds"] is not None:
                copy_lag.add_metric([node, copy["name"]], float(copy["lag_seconds"]))
        yield copy_lag
        if self.unacknowledged is not None:
            events = GaugeMetricFamily(
                "drkit_unacknowledged_events",
                "Security events (drkit history) no signed acknowledgement covers",
                labels=["node"],
            )
            events.add_metric([node], float(self.unacknowledged))
            yield events
        drill = document.get("last_drill") or {}
        yield from job_gauges(
            "drill",
            (
                (
                    "drkit_drill_rto_seconds",
                    "Measured RTO of the last drill: start to first login and file round trip",
                    drill.get("rto_seconds"),
                ),
                (
                    "drkit_drill_rpo_seconds",
                    "Snapshot age at the last drill",
                    drill.get("rpo_seconds"),
                ),
            ),
        )
        lag = gauge(
            "drkit_standby_lag_seconds",
            "Passive node: age of the source snapshot it last applied (absent when none)",
        )
        standby_lag = entry["standby_lag_seconds"]
        if standby_lag is not None:
            lag.add_metric([node, "standby"], float(standby_lag))
        yield lag
        proven = gauge(
            "drkit_last_proven_timestamp_seconds",
            "Unix time of the newest proven snapshot (absent when none was proven)",
        )
        proven_time = parse_utc_or_none(entry["proven_snapshot_time"])
        if proven_time is not None:
            proven.add_metric([node, "prove"], proven_time.timestamp())
        yield proven
        proven_breached = gauge(
            "drkit_proven_rpo_breached",
            "1 when the node proves its snapshots and its newest proven one is older than the RPO",
        )
        proven_breached.add_metric([node, "prove"], 1.0 if entry["proven_rpo_breached"] else 0.0)
        yield proven_breached
        rto = gauge("drkit_rto_seconds", "The node's recovery time objective")
        rto.add_metric([node, "drill"], float(entry["rto_seconds"]))
        yield rto
        runs = CounterMetricFamily(
            "drkit_runs", "Finished runs of each job by result", labels=[*JOB_LABELS, "result"]
        )
        with self._lock:
            for (job, result), count in sorted(self.runs.items()):
                runs.add_metric([node, job, result], count)
        yield runs


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    def log_message(self, format: str, *args: object) -> None:
        log.debug("metrics: " + format, *args)


class Metrics:
    """The node's registry, its optional HTTP endpoint and textfile."""

    def __init__(self, collector: StatusCollector, textfile: Path | None = None):
        self.collector = collector
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self.textfile = textfile
        self._exposition = exposition.make_wsgi_app(self.registry)
        self._server: wsgiref.simple_server.WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus text format."""
        return generate_latest(self.registry)

    def write_textfile(self) -> None:
        """Write the textfile-collector file atomically (when one is configured)."""
        if self.textfile is None:
            return
        try:
            self.textfile.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_to_textfile(str(self.textfile), self.registry)
            self.textfile.chmod(0o644)  # whatever the umask: node_exporter reads it
        except OSError as exc:
            log.warning("metrics textfile %s not written: %s", self.textfile, exc.strerror)

    def application(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes]:
        """The WSGI app: prometheus_client's exposition on /metrics, the RPO verdict on /healthz
        (503 while breached), 404 elsewhere."""
        path = environ.get("PATH_INFO") or "/"
        if path == "/metrics":
            served: Iterable[bytes] = self._exposition(environ, start_response)
            return served
        if path == "/healthz":
            entry = self.collector.evaluate()
            body = json.dumps(
                {
                    "ok": entry["rpo_ok"],
                    "node": entry["node"],
                    "age_seconds": entry["age_seconds"],
                    "rpo_seconds": entry["rpo_seconds"],
                    "problems": entry["problems"],
                }
            ).encode()
            status_line = "200 OK" if entry["rpo_ok"] else "503 Service Unavailable"
            content_type = "application/json"
        else:
            body, status_line, content_type = (
                b"not found: /metrics or /healthz\n",
                "404 Not Found",
                "text/plain",
            )
        start_response(
            status_line, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        )
        return [body]

    def serve(self, host: str, port: int) -> tuple[str, int]:
        """Serve /metrics and /healthz on host:port in a thread; return the bound address."""

        class Server(exposition.ThreadingWSGIServer):
            address_family = (
                socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
            )

        try:
            self._server = wsgiref.simple_server.make_server(
                host, port, self.application, Server, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise errors.UsageError(f"--metrics {host}:{port}: {exc.strerror}") from None
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="drkit-metrics", daemon=True
        )
        self._thread.start()
        bound = self._server.server_address
        return str(bound[0]), int(bound[1])

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
