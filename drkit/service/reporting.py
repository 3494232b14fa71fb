"""Where drill reports live locally, and the fleet drift findings kept in the bucket."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from drkit import errors
from drkit.config import Config
from drkit.engines import reports
from drkit.model import utc_text
from drkit.results import FleetDriftResult

log = logging.getLogger(__name__)


def report_directory(config: Config, report_dir: Path | None) -> Path:
    """Return where drill reports are written locally: --report-dir, else
    <state_dir>/reports/<node>."""
    return Path(report_dir) if report_dir else Path(config.state_dir) / "reports" / config.node


def publish_drift(config: Config, result: FleetDriftResult) -> None:
    """Keep a `fleet drift` run's findings in the bucket for the fleet page; a bucket that
    refuses is a warning, the findings stand."""
    from drkit.engines.storage import Storage

    found = reports.DriftDocument(
        kind="drift",
        group=result.group,
        time=utc_text(datetime.now(UTC)),
        ok=result.ok,
        nodes=[node.node for node in result.nodes],
        findings=[finding.model_dump(mode="json") for finding in result.findings],
    )
    try:
        Storage(config.repository).put_json(reports.drift_key(result.group or ""), found)
    except errors.DrkitError as exc:
        log.warning("drift findings not kept in the bucket: %s", exc.message)
