"""Drill reports: one drill document rendered as Markdown and as one self-contained HTML page.

The page fetches nothing: its CSS is inline and its RPO/RTO history chart is inline SVG, so it
opens the same from a laptop, an air-gapped jump host or an S3 console download. Everything
taken from a node (paths, subjects, check details) is escaped. Reports carry fingerprints,
never key material.
"""

from __future__ import annotations

import html
from datetime import datetime

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


# -- Markdown --------------------------------------------------------------------------------


def _cell(text) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def render_markdown(document: dict, history: list[dict]) -> str:
    """Return the drill report as Markdown."""
    snapshot = document.get("snapshot") or {}
    objectives = document.get("objectives") or {}
    met = document.get("objectives_met") or {}
    lines = [
        f"# DR drill of {document.get('node')}: {'PASSED' if document.get('ok') else 'FAILED'}",
        "",
        f"- started {document.get('started')}, finished {document.get('finished')} "
        f"({duration_text(document.get('duration_seconds'))})",
        f"- snapshot `{snapshot.get('short_id')}` ({snapshot.get('spec')}) taken "
        f"{snapshot.get('time')}, signed by `{document.get('signer')}` ({document.get('trust')})",
        f"- sandbox `{(document.get('sandbox') or {}).get('path')}`, removed: "
        f"{(document.get('sandbox') or {}).get('removed')}",
        "",
        "## Objectives",
        "",
        "| objective | measured | target | result |",
        "|---|---|---|---|",
        f"| RTO (drill start to first login and file round trip) | "
        f"{duration_text(document.get('rto_seconds'))} | "
        f"{duration_text(objectives.get('rto_seconds'))} | {_verdict(met.get('rto'))} |",
        f"| RPO (snapshot age at drill time) | {duration_text(document.get('rpo_seconds'))} | "
        f"{duration_text(objectives.get('rpo_seconds'))} | {_verdict(met.get('rpo'))} |",
        "",
        "## Checks",
        "",
        "| check | status | detail |",
        "|---|---|---|",
    ]
    for check in document.get("checks", []):
        lines.append(f"| {_cell(check['name'])} | {check['status']} | {_cell(check['detail'])} |")
    lines += [
        "",
        "## Host keys as served",
        "",
        "| key | type | backup | served |",
        "|---|---|---|---|",
    ]
    for key in document.get("host_keys", []):
        lines.append(
            f"| {_cell(key['path'])} | {key['type']} | `{key['fingerprint']}` | "
            f"{'`' + key['served'] + '`' if key.get('served') else 'not served'} |"
        )
    if document.get("certificates"):
        lines += ["", "## Certificates", "", "| path | subject | expires | days left |"]
        lines.append("|---|---|---|---|")
        for certificate in document["certificates"]:
            lines.append(
                f"| {_cell(certificate['path'])} | {_cell(certificate['subject'])} | "
                f"{certificate['not_after']} | {certificate['days_left']} |"
            )
    lines += ["", "## History", "", "| time | result | snapshot | RTO | RPO |"]
    lines.append("|---|---|---|---|---|")
    for entry in history:
        lines.append(
            f"| {entry['time']} | {'pass' if entry['ok'] else 'FAIL'} | "
            f"`{(entry.get('snapshot_id') or '')[:8]}` | {duration_text(entry.get('rto_seconds'))} "
            f"| {duration_text(entry.get('rpo_seconds'))} |"
        )
    return "\n".join(lines) + "\n"


# -- HTML ------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1d2430;background:#fbfbfd}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.8rem 0 .5rem}
.verdict{display:inline-block;padding:.15rem .6rem;border-radius:4px;color:#fff;font-weight:600}
.pass{background:#1f7a3a}.fail{background:#b42318}.warn{background:#b7791f}
.muted{color:#5b6472}table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #dde1e7;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#eef1f5}code{font:12px ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
td.s-pass{color:#1f7a3a;font-weight:600}td.s-fail{color:#b42318;font-weight:700}
td.s-warn{color:#b7791f;font-weight:600}.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:.7rem 1rem;min-width:220px}
.card b{font-size:1.4rem;display:block}.charts{display:flex;gap:1rem;flex-wrap:wrap}
svg{background:#fff;border:1px solid #dde1e7;border-radius:6px}
svg text{font:11px system-ui,sans-serif;fill:#5b6472}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _status_cell(status: str) -> str:
    return f'<td class="s-{_e(status)}">{_e(status)}</td>'


def chart_svg(history: list[dict], field: str, objective: float | None, title: str) -> str:
    """Return an inline SVG line chart of one measure (rto_seconds or rpo_seconds) per drill,
    with the objective as a dashed line; failed drills are red points."""
    width, height, left, right, top, bottom = 520, 220, 56, 14, 26, 34
    points = [(entry, entry.get(field)) for entry in history]
    values = [float(value) for _, value in points if value is not None]
    ceiling = max([*values, float(objective or 0), 1.0]) * 1.15
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">',
        f'<text x="{left}" y="16" style="font-weight:600;fill:#1d2430">{_e(title)}</text>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#9aa3af"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#9aa3af"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = top + plot_h - fraction * plot_h
        parts.append(
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_e(duration_text(ceiling * fraction))}</text>"
        )
    if objective:
        y = top + plot_h - objective / ceiling * plot_h
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" '
            'stroke="#b42318" stroke-dasharray="5 4"/>'
            f'<text x="{left + plot_w}" y="{y - 4:.1f}" text-anchor="end" style="fill:#b42318">'
            f"objective {_e(duration_text(objective))}</text>"
        )
    count = len(points)
    coordinates = []
    for index, (entry, value) in enumerate(points):
        x = left + (plot_w / 2 if count == 1 else index * plot_w / (count - 1))
        if value is None:
            parts.append(
                f'<text x="{x:.1f}" y="{top + plot_h - 4}" text-anchor="middle" '
                f'style="fill:#b42318">&#215;</text>'
            )
            continue
        y = top + plot_h - float(value) / ceiling * plot_h
        coordinates.append(f"{x:.1f},{y:.1f}")
        color = "#1f7a3a" if entry.get("ok") else "#b42318"
        parts.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}">'
            f"<title>{_e(entry.get('time'))}: {_e(duration_text(value))}</title></circle>"
        )
    if len(coordinates) > 1:
        parts.insert(
            4,
            f'<polyline points="{" ".join(coordinates)}" fill="none" stroke="#3b6fb6" '
            'stroke-width="2"/>',
        )
    if history:
        first, last = history[0].get("time") or "", history[-1].get("time") or ""
        parts.append(f'<text x="{left}" y="{height - 10}">{_e(first[:10])}</text>')
        parts.append(
            f'<text x="{left + plot_w}" y="{height - 10}" text-anchor="end">{_e(last[:10])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(document: dict, history: list[dict]) -> str:
    """Return the drill report as one self-contained HTML page (inline CSS and SVG)."""
    snapshot = document.get("snapshot") or {}
    objectives = document.get("objectives") or {}
    met = document.get("objectives_met") or {}
    ok = bool(document.get("ok"))
    sandbox = document.get("sandbox") or {}

    def card(label: str, measured, target, verdict: bool | None) -> str:
        style = {True: "pass", False: "fail", None: "warn"}[verdict]
        return (
            f'<div class="card"><span class="muted">{_e(label)}</span>'
            f"<b>{_e(duration_text(measured))}</b>objective {_e(duration_text(target))} "
            f'<span class="verdict {style}">{_e(_verdict(verdict))}</span></div>'
        )

    rows = "".join(
        f"<tr><td>{_e(check['name'])}</td>{_status_cell(check['status'])}"
        f"<td>{_e(check['detail'])}</td></tr>"
        for check in document.get("checks", [])
    )
    key_rows = "".join(
        f"<tr><td><code>{_e(key['path'])}</code></td><td>{_e(key['type'])}</td>"
        f"<td><code>{_e(key['fingerprint'])}</code></td>"
        f"{_status_cell('pass' if key.get('ok') else 'fail')}"
        f"<td><code>{_e(key.get('served') or 'not served')}</code></td></tr>"
        for key in document.get("host_keys", [])
    )

    def expiry_class(days_left: int) -> str:
        return "pass" if days_left > 30 else "warn" if days_left >= 0 else "fail"

    certificate_rows = "".join(
        f"<tr><td><code>{_e(c['path'])}</code></td><td>{_e(c['subject'])}</td>"
        f"<td>{_e(c['issuer'])}</td><td>{_e(c['not_after'])}</td>"
        f'<td class="s-{expiry_class(c["days_left"])}">{_e(c["days_left"])}</td></tr>'
        for c in document.get("certificates", [])
    )
    history_rows = "".join(
        f"<tr><td>{_e(entry.get('time'))}</td>{_status_cell('pass' if entry['ok'] else 'fail')}"
        f"<td><code>{_e((entry.get('snapshot_id') or '')[:8])}</code></td>"
        f"<td>{_e(duration_text(entry.get('rto_seconds')))}</td>"
        f"<td>{_e(duration_text(entry.get('rpo_seconds')))}"
        f"{'' if entry.get('rpo_judged') else ' (not judged)'}</td></tr>"
        for entry in reversed(history)
    )
    charts = chart_svg(
        history, "rto_seconds", objectives.get("rto_seconds"), "RTO per drill"
    ) + chart_svg(history, "rpo_seconds", objectives.get("rpo_seconds"), "RPO per drill")
    title = f"DR drill of {document.get('node')} at {document.get('started')}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title><style>{_CSS}</style></head><body>
<h1>DR drill of {_e(document.get("node"))}
<span class="verdict {"pass" if ok else "fail"}">{"PASSED" if ok else "FAILED"}</span></h1>
<p class="muted">Started {_e(document.get("started"))}, finished {_e(document.get("finished"))}
({_e(duration_text(document.get("duration_seconds")))}). Snapshot
<code>{_e(snapshot.get("id"))}</code> ({_e(snapshot.get("spec"))}), taken {
        _e(snapshot.get("time"))
    },
signed by <code>{_e(document.get("signer"))}</code> (trust: {_e(document.get("trust"))}).
Restored into the sandbox <code>{_e(sandbox.get("path"))}</code>
({"removed afterwards" if sandbox.get("removed") else "NOT removed"}); the live node and its ports
were not touched.</p>
<h2>Objectives</h2>
<div class="cards">
{
        card(
            "RTO: drill start to first login and file round trip",
            document.get("rto_seconds"),
            objectives.get("rto_seconds"),
            met.get("rto"),
        )
    }
{
        card(
            "RPO: snapshot age at drill time",
            document.get("rpo_seconds"),
            objectives.get("rpo_seconds"),
            met.get("rpo"),
        )
    }
</div>
<h2>Checks</h2>
<table><tr><th>check</th><th>status</th><th>detail</th></tr>{rows}</table>
<h2>Host keys as served</h2>
<table><tr><th>key</th><th>type</th><th>fingerprint in the backup</th><th>served</th>
<th>fingerprint served by the restored sshd</th></tr>{key_rows}</table>
<h2>Certificates</h2>
<table><tr><th>path</th><th>subject</th><th>issuer</th><th>expires</th><th>days left</th></tr>
{certificate_rows or '<tr><td colspan="5" class="muted">none in this snapshot</td></tr>'}</table>
<h2>History</h2>
<div class="charts">{charts}</div>
<table><tr><th>time</th><th>result</th><th>snapshot</th><th>RTO</th><th>RPO</th></tr>
{history_rows}</table>
<p class="muted">Generated by drkit at {_e(_now_text())}.</p>
</body></html>
"""


def _now_text() -> str:
    from datetime import UTC

    return utc_text(datetime.now(UTC))
