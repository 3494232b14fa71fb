"""drkit report: the drill history of a node (or every node), and the fleet page, from the bucket.

Each drill uploads reports/<node>/drill-<time>-<id>.{json,md,html}; the JSON documents are the
history. A drill that failed before it could write a report (storage down, say) is still the
node's last drill in its status document, so it is listed too: `status` and `report` name the
same last drill. `--open` fetches the latest drill's page into the local report directory (when
it is not there already) and opens it in the default browser.

`--fleet` builds one self-contained page (and its JSON) from the bucket alone: every node's
status document, the latest `fleet drift` findings of each group (reports/fleet-drift-<group>
.json), nodes in breach first. The daemon of a node with `report.fleet: true` uploads it to
reports/fleet.html (and .json) after each run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import webbrowser
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drkit import errors
from drkit.config import Config
from drkit.engines import durable, reports
from drkit.engines import status as status_engine
from drkit.engines.statusdoc import StatusDocument, document_of
from drkit.results import FleetReportResult, ReportResult
from drkit.service.reporting import report_directory
from drkit.service.status import fleet_documents, newer

if TYPE_CHECKING:
    from drkit.engines.storage import Storage

log = logging.getLogger(__name__)


def run(config: Config, *, all_nodes: bool = False, open_page: bool = False) -> ReportResult:
    """Return {ok, drills: [{node, time, ok, snapshot_id, rto_seconds, rpo_seconds, html}],
    page, opened}; ok is false when the latest drill of a node failed."""
    from drkit.engines.storage import Storage

    storage = Storage(config.repository)
    storage.probe()
    prefix = f"{reports.REPORT_PREFIX}/" if all_nodes else reports.bucket_prefix(config.node)
    keys = [
        key
        for key in storage.list_keys(prefix)
        if key.endswith(".json") and key.rsplit("/", 1)[-1].startswith("drill-")
    ]
    drills = [{**entry, "report": key} for key, entry in reports.drill_summaries(storage, keys)]
    drills += _unreported(config, storage, drills, all_nodes)
    drills.sort(key=lambda entry: (entry["time"] or "", entry["node"] or ""))
    latest_by_node = {entry["node"]: entry for entry in drills}
    result = ReportResult(
        ok=all(entry["ok"] for entry in latest_by_node.values()),
        bucket=config.repository.bucket,
        drills=[{key: entry[key] for key in _FIELDS} for entry in drills],
    )
    if open_page:
        mine = [entry for entry in drills if entry["node"] == config.node and entry["html"]]
        mine = mine or [entry for entry in drills if entry["html"]]
        if not mine:
            raise errors.UsageError(f"no drill report of node {config.node} in the bucket yet")
        page = _local_page(config, storage, str(mine[-1]["html"]))
        result.page = str(page)
        result.opened = bool(webbrowser.open(page.resolve().as_uri()))
    return result


_FIELDS = ("node", "time", "ok", "snapshot_id", "rto_seconds", "rpo_seconds", "html")


def _unreported(
    config: Config, storage: Storage, drills: list[dict[str, Any]], all_nodes: bool
) -> list[dict[str, Any]]:
    """Return each node's last drill on record in its status document (this node's local one
    first, as `status` reads it) when it is newer than the node's latest report: a drill that
    failed before it could write one."""
    documents: dict[str, StatusDocument | None] = {config.node: None}
    if all_nodes:
        documents, _ = fleet_documents(storage, config.state_dir)
    local = status_engine.load_local(config)
    if local is None and not all_nodes:
        with contextlib.suppress(errors.StorageError):
            local = document_of(storage.get_json(status_engine.bucket_key(config.node)))
    documents[config.node] = newer(local, documents.get(config.node))
    latest: dict[str, str] = {}
    for entry in drills:
        latest[entry["node"]] = max(latest.get(entry["node"], ""), entry["time"] or "")
    found = []
    for node, document in documents.items():
        drill = document.get("last_drill") if document else None
        if drill and (drill.get("time") or "") > latest.get(node, ""):
            found.append(
                {
                    "node": node,
                    "time": drill.get("time"),
                    "ok": bool(drill.get("ok")),
                    "snapshot_id": drill.get("snapshot_id"),
                    "rto_seconds": drill.get("rto_seconds"),
                    "rpo_seconds": drill.get("rpo_seconds"),
                    "html": None,
                }
            )
    return found


def _local_page(config: Config, storage: Storage, key: str) -> Path:
    """Return the local copy of the report page at key, fetching it when it is missing."""
    directory = report_directory(config, None)
    page = directory / key.rsplit("/", 1)[-1]
    if not page.is_file():
        body = storage.get_bytes(key)
        if body is None:
            raise errors.StorageError(f"s3://{config.repository.bucket}/{key} is missing")
        durable.write_atomic(page, body, 0o644, 0o755)
    return page


# -- the fleet page --------------------------------------------------------------------------


def fleet_page_path(config: Config) -> Path:
    """Return where the fleet page is written locally by default: <state_dir>/reports/fleet.html."""
    return Path(config.state_dir) / "reports" / "fleet.html"


def fleet(
    config: Config, *, out: Path | None = None, open_page: bool = False, upload: bool = False
) -> FleetReportResult:
    """Build the fleet page from the bucket alone; write it (and its JSON beside it) to out,
    upload both to reports/fleet.html and .json when upload, open it when open_page. Return
    the fleet document; ok is false when any node is breached."""
    from drkit.engines.storage import Storage

    storage = Storage(config.repository)
    storage.probe()
    now = datetime.now(UTC)
    with ThreadPoolExecutor(max_workers=1) as pool:  # the groups' drift beside the nodes' status
        drift_read = pool.submit(_drift_documents, storage)
        documents, problems = fleet_documents(storage, config.state_dir)
        drift, drift_problems = drift_read.result()
    problems += drift_problems
    defaults = status_engine.objectives_of(config)
    nodes = [
        reports.fleet_node(
            status_engine.evaluate(document, node=node, now=now, default_objectives=defaults),
            document,
            now,
        )
        for node, document in documents.items()
    ]
    document = reports.fleet_document(nodes, drift, bucket=storage.bucket, now=now)
    page = Path(out) if out else fleet_page_path(config)
    located = {**document, "html": str(page), "json_file": str(page.with_suffix(".json"))}
    body = reports.render_fleet_html(document).encode()
    text = (json.dumps(located, separators=(",", ":")) + "\n").encode()  # C-encoded: 1,000 nodes
    durable.write_atomic(page, body, 0o644, 0o755)
    durable.write_atomic(page.with_suffix(".json"), text, 0o644, 0o755)
    uploaded = []
    if upload:
        storage.put_bytes(reports.FLEET_HTML, body, "text/html; charset=utf-8")
        storage.put_bytes(reports.FLEET_JSON, text, "application/json; charset=utf-8")
        uploaded = [reports.FLEET_HTML, reports.FLEET_JSON]
    result = FleetReportResult.model_validate({**located, "uploaded": uploaded})
    result.problems = problems
    if open_page:
        result.opened = bool(webbrowser.open(page.resolve().as_uri()))
    return result


def _drift_documents(storage: Storage) -> tuple[list[dict[str, Any]], list[str]]:
    """Return every group's latest fleet drift document in the bucket, and the problems met."""
    drift: list[dict[str, Any]] = []
    problems: list[str] = []
    for key in storage.list_keys(reports.DRIFT_PREFIX):
        try:
            found = storage.get_json(key)
        except errors.StorageError as exc:
            problems.append(f"{key}: {exc.message}")
            continue
        if isinstance(found, dict):
            drift.append(found)
    return drift, problems


def refresh_fleet_page(config: Config) -> None:
    """The daemon's hook after each run: when report.fleet is set, rebuild the fleet page and
    upload it; a failure is logged, never the run's outcome."""
    if not config.report.fleet:
        return
    try:
        fleet(config, upload=True)
    except (errors.DrkitError, OSError) as exc:
        log.warning("fleet page not refreshed: %s", getattr(exc, "message", exc))
