"""The human rendering of every command's result, in one place.

`render(result)` dispatches on the result's type (drkit.results). It runs inside
output.run_command's error guard: a renderer that trips over a result is an internal error
(exit 11, one line), never a traceback. With --json nothing here runs.
"""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import singledispatch
from typing import TYPE_CHECKING, TypeVar

from pydantic import MISSING

from drkit import results as r
from drkit import units
from drkit.model import Check
from drkit.paths import shown

if TYPE_CHECKING:  # rich is imported when something is printed, not for every command
    from rich.console import Console

_T = TypeVar("_T")

STATUS_STYLE = {
    "pass": "[green]pass[/green]",
    "warn": "[yellow]warn[/yellow]",
    "fail": "[red]FAIL[/red]",
}


def console() -> Console:
    """Return a rich console on stdout."""
    from rich.console import Console

    wide = None if sys.stdout.isatty() else 160  # logs and pipes keep whole fingerprints
    return Console(highlight=False, width=wide)


def table(
    title: str, columns: list[str], rows: Sequence[Sequence[object]], out: Console | None = None
) -> None:
    """Print a rich table (on out, a rich console, when given)."""
    from rich.table import Table

    grid = Table(title=title, title_justify="left")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("" if cell is None else shown(str(cell)) for cell in row))
    (out or console()).print(grid)


def _check_line(check: Check) -> str:
    return f"{STATUS_STYLE[check.status]}  {shown(check.name)}: {shown(check.detail)}"


@singledispatch
def render(result: object) -> None:
    """Print a command's result for people; a type without a renderer is printed as it is."""
    console().print(result)


# -- init and storage ------------------------------------------------------------------------


@render.register
def _init(result: r.InitResult) -> None:
    out = console()
    out.print(f"config      {result.config}")
    for change in result.changes:
        out.print(f"changed     {change}")
    out.print(f"signer      {result.signer}  (keep this fingerprint with the runbook)")
    out.print(f"repository  {result.repository}")
    out.print("[green]ready[/green]: run `drkit backup`")


def _posture(
    out: Console,
    result: r.StorageInitResult | r.StorageVerifyResult | r.CopyBucket,
    problem_word: str,
    verdict: str,
) -> None:
    """Print a bucket's versioning, object lock, problems and verdict."""
    out.print(f"versioning   {result.versioning or 'unknown'}")
    out.print(f"object lock  {_object_lock(result.object_lock)}")
    if result.lifecycle is not None:
        out.print(f"lifecycle    {_lifecycle(result.lifecycle)}")
    for problem in result.problems:
        out.print(f"[red]{problem_word}[/red]  {problem}")
    out.print("[green]OK[/green]" if result.ok else f"[red]{verdict}[/red]")


def _object_lock(lock: Mapping[str, object] | None) -> str:
    """Return a bucket's object lock in words: 'on, GOVERNANCE, 30 days default retention'."""
    if not lock or not lock.get("enabled"):
        return "off"
    if lock.get("days") is None and lock.get("years") is None:
        return "on, no default retention"
    period = f"{lock['days']} days" if lock.get("days") is not None else f"{lock['years']} years"
    return f"on, {lock.get('mode')}, {period} default retention"


def _lifecycle(rule: Mapping[str, object]) -> str:
    """Return drkit's lifecycle rule in words."""
    return (
        f"rule {rule.get('id')} ({rule.get('status')}): noncurrent versions expire after "
        f"{rule.get('noncurrent_days')} days"
    )


@render.register
def _storage_init(result: r.StorageInitResult) -> None:
    out = console()
    out.print(f"bucket       {result.bucket} ({'created' if result.created else 'adopted'})")
    for change in result.changes:
        out.print(f"changed      {change}")
    _posture(out, result, "problem", "NOT AS CONFIGURED")
    for copy in result.copies:
        out.print(f"\ncopy bucket  {copy.bucket} at {copy.endpoint}")
        _posture(out, copy, "problem", "NOT AS CONFIGURED")


@render.register
def _storage_verify(result: r.StorageVerifyResult) -> None:
    out = console()
    out.print(f"bucket       {result.bucket}")
    _posture(out, result, "drift", "DRIFT")
    for copy in result.copies:
        out.print(f"\ncopy bucket  {copy.bucket} at {copy.endpoint}")
        _posture(out, copy, "drift", "DRIFT")


# -- backup and inspection -------------------------------------------------------------------


@render.register
def _backup(result: r.BackupResult) -> None:
    out = console()
    for warning in result.warnings:
        out.print(f"[yellow]warning[/yellow]  {warning}")
    for event in result.security_events:
        out.print(f"[red]security change[/red]  {event.detail} (event {event.id})")
    if result.unchanged:
        out.print(
            f"unchanged since snapshot {result.snapshot_id[:8]}: confirmed in the signed chain "
            f"head at {result.time}, no new snapshot ({units.duration(result.duration_seconds)})"
        )
        return
    out.print(
        f"snapshot {result.snapshot_id[:8]}: {_file_count(result.file_count)}, "
        f"{units.size(result.size)}; {units.size(result.bytes_added)} new data stored "
        f"in {units.duration(result.duration_seconds)}"
    )


def _file_count(files: int | None) -> str:
    """Return a snapshot's file count, saying that drkit's own files are among them."""
    return f"{files} files ({len(units.OWN_FILES)} of them drkit's own)"


@render.register
def _snapshots(result: r.SnapshotsResult) -> None:
    rows = [
        [s.node, s.time, s.short_id, s.file_count, units.size(s.size)] for s in result.snapshots
    ]
    table(
        f"snapshots (files: drkit's own {len(units.OWN_FILES)} included)",
        ["node", "time", "id", "files", "size"],
        rows,
    )


@render.register
def _show(result: r.ShowResult) -> None:
    out = console()
    trusted = "trusted" if result.trusted else "[red]NOT trusted[/red]"
    out.print(f"snapshot {result.snapshot_id[:8]} of {result.node} at {result.time}")
    out.print(f"signed by {result.signer} ({trusted})")
    if result.file_count is not None:
        out.print(_file_count(result.file_count))
    rows = [
        *sorted(result.categories.items()),
        [f"drkit's own ({', '.join(units.OWN_FILES)})", len(units.OWN_FILES)],
    ]  # the JSON's own counts: files, directories and links of each category
    table("entries by category (files, directories, links)", ["category", "entries"], rows)
    if result.keys:
        table(
            "keys",
            ["path", "type", "fingerprint"],
            [[key.path, key.type, key.fingerprint] for key in result.keys],
        )
    else:
        out.print("keys: none in this snapshot")
    if result.certificates:
        table(
            "certificates",
            ["path", "subject", "expires", "days left"],
            [
                [c["path"], c["subject"], c["not_after"], c["days_left"]]
                for c in result.certificates
            ],
        )
    else:
        out.print("certificates: none in this snapshot")
    for warning in result.warnings:
        out.print(f"[yellow]warning[/yellow]  {warning}")


# -- restore, check and drill ----------------------------------------------------------------


@render.register
def render_checks(result: r.ChecksResult) -> None:
    """Print a restore/check document: one line per check, then the verdict."""
    _checks_and_verdict(console(), result.checks, result.ok, result.snapshot_id, result.node)


def _checks_and_verdict(
    out: Console, found: list[Check], ok: bool, snapshot_id: str, node: str
) -> None:
    for check in found:
        out.print(_check_line(check))
    verdict = "[green]OK[/green]" if ok else "[red]FAILED[/red]"
    out.print(f"{verdict}  snapshot {snapshot_id[:8]} of node {node}")


@render.register
def _restore_plan(result: r.RestorePlanResult) -> None:
    rows = [[step.action, step.path] for step in result.plan]
    table(f"plan for snapshot {result.snapshot_id[:8]}", ["action", "path"], rows)


@render.register
def _drill(result: r.DrillResult) -> None:
    out = console()
    _checks_and_verdict(out, result.checks, result.ok, result.snapshot_id, result.node)
    objectives, met = result.objectives, result.objectives_met
    word = {True: "[green]met[/green]", False: "[red]MISSED[/red]", None: "not judged"}
    out.print(
        f"RTO {units.duration(result.rto_seconds)} "
        f"(objective {units.duration(objectives.rto_seconds)}): {word[met.rto]}"
    )
    out.print(
        f"RPO {units.duration(result.rpo_seconds)} "
        f"(objective {units.duration(objectives.rpo_seconds)}): {word[met.rpo]}"
    )
    for kind, path in result.reports.items():
        out.print(f"report {kind:4} {path}")
    if result.uploaded:
        out.print(f"uploaded to the bucket under {result.uploaded[0].rsplit('/', 1)[0]}/")


@render.register
def _report(result: r.ReportResult) -> None:
    rows = [
        [
            entry.node,
            entry.time,
            "pass" if entry.ok else "[red]FAIL[/red]",
            (entry.snapshot_id or "")[:8],
            units.duration(entry.rto_seconds),
            units.duration(entry.rpo_seconds),
            entry.html,
        ]
        for entry in result.drills
    ]
    table("drills", ["node", "time", "result", "snapshot", "RTO", "RPO", "page"], rows)
    if result.page:
        state = "opened" if result.opened else "open it in a browser"
        console().print(f"latest page: {result.page} ({state})")


FLEET_TABLE_ROWS = 1000  # rich lays out ~1 ms a row: a larger fleet shows its problems first


def _listed(nodes: Sequence[_T], flagged: Sequence[bool]) -> tuple[list[_T], str | None]:
    """Return the nodes a fleet table lists (every node up to FLEET_TABLE_ROWS, those with
    problems first beyond it, in their order) and the line that says what it leaves out."""
    if len(nodes) <= FLEET_TABLE_ROWS:
        return list(nodes), None
    ranked = sorted(range(len(nodes)), key=lambda index: not flagged[index])
    kept = sorted(ranked[:FLEET_TABLE_ROWS])
    left = len(nodes) - len(kept)
    problems = sum(flagged) - sum(flagged[index] for index in kept)
    return [nodes[index] for index in kept], (
        f"{left} more nodes not listed ({problems} of them with problems): every node is in "
        "--json and on the fleet page (drkit report --fleet)"
    )


@render.register
def _fleet_report(result: r.FleetReportResult) -> None:
    listed, left = _listed(result.nodes, [node.breached for node in result.nodes])
    rows = [
        [
            node.node,
            "[red]BREACHED[/red]" if node.breached else "[green]ok[/green]",
            units.duration(node.backup_age_seconds),
            units.duration(node.proven_age_seconds),
            "; ".join(node.problems),
        ]
        for node in listed
    ]
    table("fleet", ["node", "state", "backup age", "proven age", "problems"], rows)
    out = console()
    if left:
        out.print(left)
    out.print(f"{result.breached} of {len(result.nodes)} nodes breached")
    out.print(f"fleet page {result.html} (JSON {result.json_file})")
    for problem in result.problems:
        out.print(f"[red]{problem}[/red]")


@render.register
def _diff(result: r.DiffResult) -> None:
    """Print a diff; a long one on a terminal goes through the pager, and every diff ends with
    its counts, so the last screen says how much changed."""
    out = console()
    long = sys.stdout.isatty() and len(result.changes) + len(result.notes) > out.height
    with out.pager(styles=True) if long else contextlib.nullcontext():
        _diff_body(result, out)


def _diff_body(result: r.DiffResult, out: Console) -> None:
    from rich.markup import escape

    out.print(
        f"snapshot {result.old.short_id} ({result.old.time}) → "
        f"{result.new.short_id} ({result.new.time})"
    )
    rows = [[c.category, c.change, c.path, c.detail] for c in result.changes]
    table("changes", ["category", "change", "path", "detail"], rows, out)
    for note in result.notes:
        out.print(f"[bold]•[/bold] {escape(shown(note))}")
    for change in result.changes:
        if isinstance(change.diff, str) and change.diff:
            out.print(f"\n[bold]{escape(shown(change.path))}[/bold]")
            for line in change.diff.splitlines():
                style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1])
                out.print(f"[{style}]{escape(line)}[/{style}]" if style else escape(line))
    counts = Counter(change.change for change in result.changes)
    out.print(
        "no differences"
        if not result.changes and not result.notes
        else f"summary: {counts['added']} added, {counts['removed']} removed, "
        f"{counts['changed']} changed, {len(result.notes)} note(s)"
    )


@render.register
def _history(result: r.HistoryResult) -> None:
    out = console()
    rows = [
        [e.time, e.id, e.kind, e.detail, "acknowledged" if e.acknowledged else "OPEN"]
        for e in result.events
    ]
    if rows:
        table(f"security events of {result.node}", ["time", "id", "kind", "detail", ""], rows, out)
    else:
        out.print(f"no security events recorded for {result.node}")
    if _given(result.snapshot_id) is not None:
        out.print(f"last clean snapshot: {result.snapshot_id}")


@render.register
def _identity(result: r.IdentityResult) -> None:
    out = console()
    out.print(f"node {result.node}, snapshot {result.snapshot_id[:8]}")
    for endpoint in result.endpoints:
        mark = STATUS_STYLE["pass" if endpoint.ok else "fail"]
        out.print(f"{mark}  {shown(endpoint.address)}: {shown(endpoint.detail)}")
    login = _given(result.login)
    if login is not None:
        mark = STATUS_STYLE["pass" if login.ok else "fail"]
        out.print(f"{mark}  login via {login.address}: {shown(login.detail)}")


@render.register
def _rehearsal(result: r.RehearsalResult) -> None:
    out = console()
    mark = STATUS_STYLE["pass" if result.ok else "fail"]
    rto = units.duration(result.rto_seconds) if result.rto_seconds is not None else "none"
    out.print(f"{mark}  failover through {result.via}: RTO {rto} ({result.login_after.detail})")
    changed = set(result.served_after) - set(result.served_before)
    out.print(
        "clients saw the same identity"
        if not changed
        else f"[red]clients saw a new identity[/red]: {', '.join(sorted(changed))}"
    )


@render.register
def _copy(result: r.CopyResult) -> None:
    out = console()
    for state in result.copies:
        newest = state.newest[:8] if state.newest else "none"
        took = units.duration(state.duration_seconds)
        out.print(
            f"copy {state.name} ({state.bucket}): {state.snapshot_count} snapshot(s), newest "
            f"{newest}, {state.objects} object(s) copied in {took}"
        )


# -- scheduled operation ---------------------------------------------------------------------


@render.register
def _daemon(result: r.DaemonResult) -> None:
    out = console()
    out.print(f"daemon for {result.node} stopped by {result.stopped_by}")
    for name, runs in result.runs.items():
        out.print(f"  {name:7} {runs['runs']} run(s), {runs['failed']} failed")


@render.register
def _prune(result: r.PruneResult) -> None:
    out = console()
    rows = [["keep", s.time, s.short_id, ", ".join(s.rules or [])] for s in result.kept]
    rows += [["remove", s.time, s.short_id, ""] for s in result.removed]
    rows.sort(key=lambda row: row[1])
    rules = ", ".join(f"{rule} {count}" for rule, count in result.keep_rules.items()) or "none"
    table(f"retention of node {result.node} (keep {rules})", ["", "time", "id", "kept by"], rows)
    for lock in result.stale_locks:
        out.print(f"[yellow]removed stale lock[/yellow] {lock['id']}: {lock['reason']}")
    verb = "would remove" if result.dry_run else "removed"
    pruned = "; unreferenced data pruned" if result.pruned else ""
    out.print(f"{verb} {len(result.removed)}, kept {len(result.kept)}{pruned}")


@render.register
def _verify(result: r.VerifyResult) -> None:
    out = console()
    check = result.check
    subset = f" (read data {check.read_data_subset})" if check.read_data_subset else ""
    out.print(f"repository check{subset}: {'ok' if check.ok else '[red]DAMAGED[/red]'}")
    snapshots = result.snapshots
    out.print(f"signatures: {snapshots.verified} of {snapshots.checked} verified")
    if result.spot:
        out.print(f"spot check: {result.spot['matched']} of {result.spot['sampled']} match")
    for item in result.drift:
        out.print(f"[yellow]drift[/yellow]  {item['path']}: {item['detail']}")
    for problem in result.problems:
        out.print(f"[red]problem[/red]  {problem}")
    out.print("[green]OK[/green]" if result.ok else "[red]FAILED[/red]")


@render.register
def _status(result: r.StatusResult) -> None:
    flagged = [bool(entry.problems) or entry.rto_ok is False for entry in result.nodes]
    listed, left = _listed(result.nodes, flagged)
    rows = []
    for entry in listed:
        last = entry.last_backup or {}
        rpo = "[green]ok[/green]" if entry.rpo_ok else "[red]BREACHED[/red]"
        rto = {None: "no drill", True: "[green]ok[/green]", False: "[red]MISSED[/red]"}[
            entry.rto_ok
        ]
        proven = units.duration(entry.proven_age_seconds, none="never")
        if entry.proven_rpo_breached:
            proven = f"[red]{proven}[/red]"
        elif not entry.prove:
            proven += " (not proving)"
        rows.append(
            [
                entry.node,
                units.duration(entry.age_seconds, none="never"),
                proven,
                f"{rpo} ({units.duration(entry.rpo_seconds)})",
                rto,
                ("ok" if last.get("ok") else "[red]failed[/red]") if last else "",
                (last.get("snapshot_id") or "")[:8],
                "; ".join(entry.problems),
            ]
        )
    table(
        "nodes",
        ["node", "last good", "proven", "RPO", "RTO", "last backup", "snapshot", "problems"],
        rows,
    )
    if left:
        console().print(left)


# -- discovery, standby and fleet ------------------------------------------------------------


@render.register
def _discover(result: r.DiscoverResult) -> None:
    out = console()
    if not result.servers:
        out.print(f"no known transfer server under {result.root} (use --server generic)")
    for server in result.servers:
        out.print(
            f"[bold]{server.server}[/bold]: {', '.join(server.configs)} ({server.file_count} files)"
        )
        for category, paths in sorted(server.categories.items()):
            shown = ", ".join(paths[:4]) + (f" … +{len(paths) - 4}" if len(paths) > 4 else "")
            out.print(f"  {category:11} {shown}")
        for warning in server.warnings:
            out.print(f"  [yellow]warning[/yellow] {warning}")
    out.print("proposed drkit.yaml:")
    out.print(result.proposed_config, markup=False)


def _given(value: _T | MISSING) -> _T | None:
    """Return a MISSING field as None (the renderer treats absent and null alike)."""
    return None if value is MISSING else value


# The renderers of the pair and pool commands and of key escrow register themselves here.
from drkit.render import keys as _keys  # noqa: E402, F401
from drkit.render import standby as _standby  # noqa: E402, F401
