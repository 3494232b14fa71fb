"""Drill reports: one drill document rendered as Markdown and as one self-contained HTML page.

The page fetches nothing: its CSS is inline and its RPO/RTO history chart is inline SVG, so it
opens the same from a laptop, an air-gapped jump host or an S3 console download. The pages are
Jinja2 templates in drkit/templates/, autoescaped, so everything taken from a node (paths,
subjects, check details) is escaped. Reports carry fingerprints, never key material.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from typing_extensions import TypedDict

from drkit import errors, units
from drkit.engines.status import NodeEntry
from drkit.engines.statusdoc import Number, Outcome, StatusDocument
from drkit.model import CertificateEnd, Manifest, parse_utc_or_none, utc_text
from drkit.paths import on_root

if TYPE_CHECKING:
    import jinja2

    from drkit.engines.storage import Storage

log = logging.getLogger(__name__)

REPORT_PREFIX = "reports"
HISTORY_LIMIT = 60
# A drill's document: its result as JSON (drkit.results.DrillResult dumped), read by key.
DrillDocument = Mapping[str, object]
Measure = Literal["rto_seconds", "rpo_seconds"]


class DrillSummary(TypedDict):
    """One drill in a node's history (report pages, `drkit report`)."""

    node: str | None
    time: str | None
    ok: bool
    snapshot_id: str | None
    rto_seconds: Number | None
    rpo_seconds: Number | None
    rpo_judged: bool
    objectives: dict[str, object]
    html: str | None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> Number | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mapping(value: object) -> dict[str, object]:
    return dict(value) if isinstance(value, dict) else {}


def base_name(document: DrillDocument) -> str:
    """Return the file name stem of a drill's reports: drill-<UTC time>-<short id>."""
    moment = str(document["started"]).replace("-", "").replace(":", "")
    return f"drill-{moment}-{(_text(document.get('snapshot_id')) or 'none')[:8]}"


def bucket_prefix(node: str) -> str:
    """Return where a node's reports live at the bucket root: reports/<node>/."""
    return f"{REPORT_PREFIX}/{node}/"


def drill_summaries(storage: Storage, keys: list[str]) -> list[tuple[str, DrillSummary]]:
    """Return (key, summary) of each drill report among keys (the JSON documents of kind
    drill); one that cannot be read is logged and left out."""
    found: list[tuple[str, DrillSummary]] = []
    for key in keys:
        try:
            document = storage.get_json(key)
        except errors.StorageError as exc:
            log.warning("drill report %s unreadable: %s", key, exc.message)
            continue
        if document is not None and document.get("kind") == "drill":
            found.append((key, summary(document, key.removesuffix(".json") + ".html")))
    return found


def summary(document: DrillDocument, html_location: str | None = None) -> DrillSummary:
    """Return the history entry of one drill."""
    return DrillSummary(
        node=_text(document.get("node")),
        time=_text(document.get("started")),
        ok=bool(document.get("ok")),
        snapshot_id=_text(document.get("snapshot_id")),
        rto_seconds=_number(document.get("rto_seconds")),
        rpo_seconds=_number(document.get("rpo_seconds")),
        rpo_judged=bool(document.get("rpo_judged")),
        objectives=_mapping(document.get("objectives")),
        html=html_location,
    )


def duration_text(seconds: float | None) -> str:
    """Return seconds in drkit's one duration format (drkit.units); 'none' for None."""
    return units.duration(seconds)


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not judged"}[met]


# -- templates (drkit/templates/): HTML and SVG autoescaped, Markdown cells by `cell` --------


def _cell(text: object) -> str:
    """Return text for one Markdown table cell: pipes escaped, on one line."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


@functools.cache
def _templates() -> jinja2.Environment:
    """The report templates, made on first use: jinja2 is imported by the commands that
    render a report, not by every backup and status that only reads a date from here."""
    import jinja2

    @jinja2.pass_eval_context
    def blank_none(context: jinja2.nodes.EvalContext, value: object) -> object:
        """Print None as nothing in an escaped (HTML, SVG) template, as 'None' in Markdown."""
        return "" if value is None and context.autoescape else value

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("drkit", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "svg")),
        undefined=jinja2.StrictUndefined,
        finalize=blank_none,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(cell=_cell, duration=duration_text, verdict=_verdict)
    return environment


def render_markdown(document: DrillDocument, history: Sequence[DrillSummary]) -> str:
    """Return the drill report as Markdown."""
    return _templates().get_template("drill.md").render(document=document, history=history)


AXIS_UNITS = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
NICE_STEPS = (1, 2, 2.5, 5, 10)


class Axis(TypedDict):
    """A chart's y axis: its top, its ticks (seconds, label), whether the objective fits."""

    ceiling: float
    ticks: list[tuple[float, str]]
    objective_on_scale: bool


def axis(values: list[float], objective: float | None) -> Axis:
    """Return a chart's y axis for values (seconds): {ceiling, ticks: [(seconds, label)],
    objective_on_scale}. The axis fits the data, not the objective: an objective more than
    three times the largest value stays off the scale (drawn at the top, labelled). Every tick
    is written in one unit, the one duration_text would use for the ceiling."""
    top = max(values, default=0.0)
    on_scale = objective is not None and (top <= 0 or objective <= 3 * top)
    raw = max(top, float(objective) if objective is not None and on_scale else 0.0, 1.0) * 1.1
    unit, size = next((unit, size) for unit, size in AXIS_UNITS if raw >= 2 * size or size == 1)
    rough = raw / size / 5
    magnitude = 10 ** math.floor(math.log10(rough))
    step = next(nice * magnitude for nice in NICE_STEPS if nice * magnitude >= rough)
    count = math.ceil(raw / size / step)
    return Axis(
        ceiling=count * step * size,
        ticks=[(index * step * size, f"{index * step:g} {unit}") for index in range(count + 1)],
        objective_on_scale=on_scale,
    )


def time_labels(times: list[str | None]) -> list[str]:
    """Return labels for drill times (RFC 3339): dates when they differ, else with the time of
    day, else with seconds, so that no two labels read the same."""
    moments = [parse_utc_or_none(text) for text in times]
    formats = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")
    for pattern in formats:
        labels = [moment.strftime(pattern) if moment else "?" for moment in moments]
        if len(set(labels)) == len(labels):
            return labels
    return labels


class Point(TypedDict):
    """One drill on a chart: where it is drawn (y None: not measured), and its label."""

    x: float
    y: float | None
    ok: bool
    time: str | None
    label: str


def chart_svg(
    history: Sequence[DrillSummary], field: Measure, objective: float | None, title: str
) -> str:
    """Return an inline SVG line chart of one measure (rto_seconds or rpo_seconds) per drill,
    on an axis fitted to the measured values, with the objective as a dashed line (at the top
    with 'off scale' when it is far above them); failed drills are red points."""
    width, height, left, right, top, bottom = 520, 220, 64, 14, 26, 34
    measured = [entry[field] for entry in history]
    values = [float(value) for value in measured if value is not None]
    scale = axis(values, objective)
    ceiling = scale["ceiling"]
    plot_w, plot_h = width - left - right, height - top - bottom
    base = top + plot_h

    def height_of(value: float) -> float:
        return base - min(value, ceiling) / ceiling * plot_h

    count = len(history)
    points = [
        Point(
            x=left + (plot_w / 2 if count == 1 else index * plot_w / (count - 1)),
            y=None if value is None else height_of(float(value)),
            ok=entry["ok"],
            time=entry["time"],
            label=duration_text(value),
        )
        for index, (entry, value) in enumerate(zip(history, measured, strict=True))
    ]
    drawn = [f"{point['x']:.1f},{point['y']:.1f}" for point in points if point["y"] is not None]
    ends = time_labels([entry["time"] for entry in [*history[:1], *history[1:][-1:]]])
    marker: dict[str, object] | None = None
    if objective:
        marker = {
            "y": height_of(objective) if scale["objective_on_scale"] else top,
            "label": f"objective {duration_text(objective)}"
            + ("" if scale["objective_on_scale"] else " (off scale, above)"),
        }
    import markupsafe

    return markupsafe.Markup(
        _templates()
        .get_template("chart.svg")
        .render(
            title=title,
            width=width,
            height=height,
            left=left,
            right=left + plot_w,
            top=top,
            base=base,
            ticks=[(height_of(seconds), label) for seconds, label in scale["ticks"]],
            objective=marker,
            points=points,
            polyline=" ".join(drawn) if len(drawn) > 1 else None,
            dates=ends,
        )
        .rstrip("\n")
    )


def render_html(document: DrillDocument, history: Sequence[DrillSummary]) -> str:
    """Return the drill report as one self-contained HTML page (inline CSS and SVG)."""
    objectives = _mapping(document.get("objectives"))
    charts = chart_svg(
        history, "rto_seconds", _number(objectives.get("rto_seconds")), "RTO per drill"
    ) + chart_svg(history, "rpo_seconds", _number(objectives.get("rpo_seconds")), "RPO per drill")
    return (
        _templates()
        .get_template("drill.html")
        .render(document=document, history=history, charts=charts, generated=_now_text())
    )


def _now_text() -> str:
    return utc_text(datetime.now(UTC))


# -- the fleet page: every node's objectives, jobs, certificates and drift, from the bucket --

FLEET_HTML = f"{REPORT_PREFIX}/fleet.html"
FLEET_JSON = f"{REPORT_PREFIX}/fleet.json"
DRIFT_PREFIX = f"{REPORT_PREFIX}/fleet-drift-"
EXPIRY_WINDOW_DAYS = 90
CALENDAR_WEEKS = 13


class DriftDocument(TypedDict):
    """A group's latest `fleet drift` findings, kept in the bucket for the fleet page."""

    kind: Literal["drift"]
    group: str | None
    time: str
    ok: bool
    nodes: list[str]
    findings: list[dict[str, object]]


def drift_key(group: str) -> str:
    """Return where the latest `fleet drift` findings of a group are kept: a file beside the
    nodes' report directories, so no node name can collide with it."""
    return f"{DRIFT_PREFIX}{group}.json"


def certificate_expiries(root: Path, node_manifest: Manifest) -> list[CertificateEnd]:
    """Given a node's root and the manifest of its last backup, return when its certificates
    end: X.509 ones from the manifest and OpenSSH host certificates among its host keys'
    files, [{path, kind: tls|host, subject, not_after}]."""
    from cryptography.hazmat.primitives import serialization

    found = [
        CertificateEnd(
            path=entry.path, kind="tls", subject=entry.subject, not_after=entry.not_after
        )
        for entry in node_manifest.certificates
    ]
    for file in node_manifest.files:
        if file.category != "host_keys" or not file.path.endswith("-cert.pub"):
            continue
        try:
            data = on_root(root, file.path).read_bytes().strip()
            certificate = serialization.load_ssh_public_identity(data)
        except (OSError, ValueError, TypeError):
            continue
        if isinstance(certificate, serialization.SSHCertificate) and (
            certificate.valid_before < 2**64 - 1
        ):
            principals = ",".join(
                name.decode(errors="replace") for name in (certificate.valid_principals)
            )
            found.append(
                CertificateEnd(
                    path=file.path,
                    kind="host",
                    subject=principals or "any host",
                    not_after=utc_text(datetime.fromtimestamp(certificate.valid_before, UTC)),
                )
            )
    return found


class Expiring(CertificateEnd):
    """A certificate ending within the window (or ended), and in how many days."""

    days_left: int


class FleetNode(TypedDict):
    """One node of the fleet page: its status entry judged, with its expiring certificates."""

    node: str
    group: str | None
    breached: bool
    problems: list[str]
    backup_age_seconds: int | None
    backup_rpo_ok: bool
    proven_age_seconds: int | None
    proven_rpo_ok: bool | None
    rpo_seconds: int
    rto_seconds: int
    rto_ok: bool | None
    last_backup: Outcome | None
    last_prune: Outcome | None
    last_verify: Outcome | None
    last_drill: Outcome | None
    standby_lag_seconds: int | None
    expiring: list[Expiring]
    updated: str | None


def fleet_node(entry: NodeEntry, document: StatusDocument | None, now: datetime) -> FleetNode:
    """Given a node's `drkit status` entry (engines.status.evaluate) and its status document,
    return its fleet page entry. Breached: a status problem (outside the RPO, last backup or
    proof failed, a node that proves its snapshots with its newest proven one older than the
    RPO), last drill failed or missed the RTO, or a certificate expired."""
    rpo = entry["rpo_seconds"]
    problems = list(entry["problems"])
    drill: Outcome = entry.get("last_drill") or {}
    named = any(problem.startswith("last drill failed") for problem in problems)
    if entry.get("rto_ok") is False and not named:  # a drill that passed but missed its RTO
        problems.append(f"last drill failed: {drill.get('error') or 'an objective was missed'}")
    backup: Outcome = entry.get("last_backup") or {}
    source = backup if backup.get("ok") and "certificates" in backup else drill
    expiring: list[Expiring] = []
    for certificate in source.get("certificates") or []:
        end = parse_utc_or_none(certificate.get("not_after"))
        if end is None:
            continue
        days_left = math.floor((end - now).total_seconds() / 86400)
        if days_left <= EXPIRY_WINDOW_DAYS:
            expiring.append(Expiring(**certificate, days_left=days_left))
        if days_left < 0:
            problems.append(
                f"certificate {certificate.get('path')} expired {certificate.get('not_after')}"
            )
    expiring.sort(key=lambda item: (item["days_left"], item.get("path") or ""))
    return {
        "node": entry["node"],
        "group": entry.get("group") or (document.get("group") if document else None),
        "breached": bool(problems),
        "problems": problems,
        "backup_age_seconds": entry["age_seconds"],
        "backup_rpo_ok": entry["backup_rpo_ok"],
        "proven_age_seconds": entry["proven_age_seconds"],
        "proven_rpo_ok": entry["proven_rpo_ok"],
        "rpo_seconds": rpo,
        "rto_seconds": entry["rto_seconds"],
        "rto_ok": entry.get("rto_ok"),
        "last_backup": entry.get("last_backup"),
        "last_prune": entry.get("last_prune"),
        "last_verify": entry.get("last_verify"),
        "last_drill": entry.get("last_drill"),
        "standby_lag_seconds": entry.get("standby_lag_seconds"),
        "expiring": expiring,
        "updated": entry.get("updated"),
    }


class FleetDocument(TypedDict):
    """The fleet page's document (`reports/fleet.json`)."""

    ok: bool
    kind: Literal["fleet"]
    time: str
    bucket: str
    breached: int
    nodes: list[FleetNode]
    drift: list[Mapping[str, object]]


class CalendarEntry(Expiring):
    node: str


class CalendarRow(TypedDict):
    """One week of the expiry calendar (or the row of certificates already expired)."""

    label: str
    entries: list[CalendarEntry]


def fleet_document(
    nodes: list[FleetNode],
    drift: Sequence[Mapping[str, object]],
    *,
    bucket: str,
    now: datetime,
) -> FleetDocument:
    """Return the fleet page's document: nodes in breach first (then by name), the latest
    drift findings of each group; ok is false when any node is breached."""
    ordered = sorted(nodes, key=lambda node: (not node["breached"], node["node"]))
    return {
        "ok": not any(node["breached"] for node in ordered),
        "kind": "fleet",
        "time": utc_text(now),
        "bucket": bucket,
        "breached": sum(node["breached"] for node in ordered),
        "nodes": ordered,
        "drift": sorted(drift, key=lambda found: str(found.get("group") or "")),
    }


def calendar(nodes: Sequence[FleetNode], now: datetime) -> list[CalendarRow]:
    """Return the expiry calendar: one row per week from this week's Monday, 13 weeks (the
    90-day window), with a first 'expired' row when any certificate has ended."""
    monday = (now - timedelta(days=now.weekday())).date()
    weeks = [
        CalendarRow(label=f"week of {monday + timedelta(weeks=index):%Y-%m-%d}", entries=[])
        for index in range(CALENDAR_WEEKS + 1)
    ]
    expired = CalendarRow(label="expired", entries=[])
    for node in nodes:
        for certificate in node["expiring"]:
            item = CalendarEntry(node=node["node"], **certificate)
            end = parse_utc_or_none(certificate.get("not_after"))
            if certificate["days_left"] < 0 or end is None:
                expired["entries"].append(item)
            else:
                index = min((end.date() - monday).days // 7, CALENDAR_WEEKS)
                weeks[index]["entries"].append(item)
    for row in (expired, *weeks):
        row["entries"].sort(
            key=lambda item: (item.get("not_after") or "", item["node"], item.get("path") or "")
        )
    return ([expired] if expired["entries"] else []) + weeks


def render_fleet_html(document: FleetDocument) -> str:
    """Return the fleet page: one self-contained HTML page (inline CSS, nothing fetched)."""
    now = parse_utc_or_none(document["time"]) or datetime.now(UTC)
    return (
        _templates()
        .get_template("fleet.html")
        .render(document=document, calendar=calendar(document["nodes"], now))
    )
