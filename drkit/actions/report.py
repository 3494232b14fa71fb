"""drkit report: the drill history of a node (or every node) from the reports in the bucket.

Each drill uploads reports/<node>/drill-<time>-<id>.{json,md,html}; the JSON documents are the
history. `--open` fetches the latest drill's page into the local report directory (when it is
not there already) and opens it in the default browser.
"""

from __future__ import annotations

import logging
import webbrowser
from pathlib import Path

from drkit import errors
from drkit.actions import drill as drill_action
from drkit.config import Config
from drkit.engines import reports
from drkit.results import ReportResult

log = logging.getLogger(__name__)


def run(config: Config, *, all_nodes: bool = False, open_page: bool = False) -> ReportResult:
    """Return {ok, drills: [{node, time, ok, snapshot_id, rto_seconds, rpo_seconds, html}],
    page, opened}; ok is false when the latest drill of a node failed."""
    from drkit.engines.storage import Storage

    storage = Storage(config.repository)
    storage.probe()
    prefix = f"{reports.REPORT_PREFIX}/" if all_nodes else reports.bucket_prefix(config.node)
    drills = []
    for key in storage.list_keys(prefix):
        if not key.endswith(".json") or not key.rsplit("/", 1)[-1].startswith("drill-"):
            continue
        try:
            document = storage.get_json(key)
        except errors.StorageError as exc:
            log.warning("drill report %s unreadable: %s", key, exc.message)
            continue
        if isinstance(document, dict) and document.get("kind") == "drill":
            entry = reports.summary(document, key.removesuffix(".json") + ".html")
            drills.append({**entry, "report": key})
    drills.sort(key=lambda entry: (entry["time"] or "", entry["node"] or ""))
    latest_by_node = {entry["node"]: entry for entry in drills}
    result = ReportResult(
        ok=all(entry["ok"] for entry in latest_by_node.values()),
        bucket=config.repository.bucket,
        drills=[{key: entry[key] for key in _FIELDS} for entry in drills],
    )
    if open_page:
        mine = [entry for entry in drills if entry["node"] == config.node] or drills
        if not mine:
            raise errors.UsageError(f"no drill report of node {config.node} in the bucket yet")
        page = _local_page(config, storage, mine[-1]["html"])
        result.page = str(page)
        result.opened = bool(webbrowser.open(page.resolve().as_uri()))
    return result


_FIELDS = ("node", "time", "ok", "snapshot_id", "rto_seconds", "rpo_seconds", "html")


def _local_page(config: Config, storage, key: str) -> Path:
    """Return the local copy of the report page at key, fetching it when it is missing."""
    directory = drill_action.report_directory(config, None)
    page = directory / key.rsplit("/", 1)[-1]
    if not page.is_file():
        body = storage.get_bytes(key)
        if body is None:
            raise errors.StorageError(f"s3://{config.repository.bucket}/{key} is missing")
        directory.mkdir(parents=True, exist_ok=True)
        page.write_bytes(body)
    return page
