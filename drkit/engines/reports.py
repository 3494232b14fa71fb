"""Drill reports: one drill document rendered as Markdown and as one self-contained HTML page.

The page fetches nothing: its CSS is inline and its RPO/RTO history chart is inline SVG, so it
opens the same from a laptop, an air-gapped jump host or an S3 console download. The pages are
Jinja2 templates in drkit/templates/, autoescaped, so everything taken from a node (paths,
subjects, check details) is escaped. Reports carry fingerprints, never key material.
"""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2
import markupsafe

from drkit.model import utc_text

REPORT_PREFIX = "reports"
HISTORY_LIMIT = 60


def base_name(document: dict) -> str:
    """Return the file name stem of a drill's reports: drill-<UTC time>-<short id>."""
    moment = document["started"].replace("-", "").replace(":", "")
    return f"drill-{moment}-{(document.get('snapshot_id') or 'none')[:8]}"


def bucket_prefix(node: str) -> str:
    """Return where a node's reports live at the bucket root: reports/<node>/."""
    return f"{REPORT_PREFIX}/{node}/"


def summary(document: dict, html_location: str | None = None) -> dict:
    """Return the history entry of one drill: {node, time, ok, snapshot_id, rto_seconds,
    rpo_seconds, rpo_judged, objectives, html}."""
    return {
        "node": document.get("node"),
        "time": document.get("started"),
        "ok": bool(document.get("ok")),
        "snapshot_id": document.get("snapshot_id"),
        "rto_seconds": document.get("rto_seconds"),
        "rpo_seconds": document.get("rpo_seconds"),
        "rpo_judged": bool(document.get("rpo_judged")),
        "objectives": document.get("objectives") or {},
        "html": html_location,
    }


def duration_text(seconds: float | None) -> str:
    """Return seconds as '4.2 s', '12 min', '3.5 h' or '2.1 d'; 'none' for None."""
    if seconds is None:
        return "none"
    seconds = float(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    for unit, size in (("d", 86400), ("h", 3600)):
        if seconds >= size * 2:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds / 60:.0f} min"


def _verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "not judged"}[met]


# -- templates (drkit/templates/): HTML and SVG autoescaped, Markdown cells by `cell` --------


def _cell(text) -> str:
    """Return text for one Markdown table cell: pipes escaped, on one line."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


@jinja2.pass_eval_context
def _blank_none(context: jinja2.nodes.EvalContext, value):
    """Print None as nothing in an escaped (HTML, SVG) template, as 'None' in Markdown."""
    return "" if value is None and context.autoescape else value


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("drkit", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html", "svg")),
    undefined=jinja2.StrictUndefined,
    finalize=_blank_none,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_TEMPLATES.filters.update(cell=_cell, duration=duration_text, verdict=_verdict)


def render_markdown(document: dict, history: list[dict]) -> str:
    """Return the drill report as Markdown."""
    return _TEMPLATES.get_template("drill.md").render(document=document, history=history)


def chart_svg(history: list[dict], field: str, objective: float | None, title: str) -> str:
    """Return an inline SVG line chart of one measure (rto_seconds or rpo_seconds) per drill,
    with the objective as a dashed line; failed drills are red points."""
    width, height, left, right, top, bottom = 520, 220, 56, 14, 26, 34
    values = [float(entry[field]) for entry in history if entry.get(field) is not None]
    ceiling = max([*values, float(objective or 0), 1.0]) * 1.15
    plot_w, plot_h = width - left - right, height - top - bottom
    base = top + plot_h

    def height_of(value: float) -> float:
        return base - value / ceiling * plot_h

    count = len(history)
    points = [
        {
            "x": left + (plot_w / 2 if count == 1 else index * plot_w / (count - 1)),
            "y": None if entry.get(field) is None else height_of(float(entry[field])),
            "ok": entry.get("ok"),
            "time": entry.get("time"),
            "label": duration_text(entry.get(field)),
        }
        for index, entry in enumerate(history)
    ]
    drawn = [f"{point['x']:.1f},{point['y']:.1f}" for point in points if point["y"] is not None]
    return markupsafe.Markup(
        _TEMPLATES.get_template("chart.svg")
        .render(
            title=title,
            width=width,
            height=height,
            left=left,
            right=left + plot_w,
            top=top,
            base=base,
            ticks=[
                (base - fraction * plot_h, duration_text(ceiling * fraction))
                for fraction in (0.0, 0.5, 1.0)
            ],
            objective=objective and {"y": height_of(objective), "label": duration_text(objective)},
            points=points,
            polyline=" ".join(drawn) if len(drawn) > 1 else None,
            dates=history
            and ((history[0].get("time") or "")[:10], (history[-1].get("time") or "")[:10]),
        )
        .rstrip("\n")
    )


def render_html(document: dict, history: list[dict]) -> str:
    """Return the drill report as one self-contained HTML page (inline CSS and SVG)."""
    objectives = document.get("objectives") or {}
    charts = chart_svg(
        history, "rto_seconds", objectives.get("rto_seconds"), "RTO per drill"
    ) + chart_svg(history, "rpo_seconds", objectives.get("rpo_seconds"), "RPO per drill")
    return _TEMPLATES.get_template("drill.html").render(
        document=document, history=history, charts=charts, generated=_now_text()
    )


def _now_text() -> str:
    return utc_text(datetime.now(UTC))
