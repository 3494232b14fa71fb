"""The human rendering of standby sync, status and promote, and of fleet drift."""

from __future__ import annotations

from drkit import results as r
from drkit import units
from drkit.paths import shown
from drkit.render import _check_line, _given, console, render


@render.register
def _standby_sync(result: r.StandbySyncResult) -> None:
    out = console()
    for step in result.plan:
        out.print(f"  {step.action:9} {shown(step.path)}")
    for kept in _given(result.kept_local) or []:
        out.print(f"  [cyan]local[/cyan]     {kept}")
    for check in result.checks:
        if check.status != "pass":
            out.print(_check_line(check))
    if _given(result.up_to_date):
        what = "up to date"
    elif result.changed:
        what = "would change" if result.dry_run else "changed"
    else:
        what = "no change"
    if _given(result.rolled_back):
        what = "[red]ROLLED BACK[/red]: checks failed, the previous copy stays"
    lag = _given(result.lag_seconds)
    out.print(
        f"{result.source} snapshot {result.snapshot_id[:8]} "
        f"({result.snapshot_time}): {what}"
        + (f"; lag {units.duration(lag)}" if lag is not None else "")
    )


@render.register
def _standby_status(result: r.StandbyStatusResult) -> None:
    out = console()
    if not result.following:
        out.print(f"{result.node} follows no node (promoted: {result.promoted_at})")
        return
    out.print(f"source      {result.source}")
    out.print(f"snapshot    {(result.snapshot_id or 'none applied yet')[:8]}")
    out.print(f"applied at  {result.applied_at}")
    lag, rpo = units.duration(result.lag_seconds), units.duration(result.rpo_seconds)
    out.print(f"lag         {lag} (RPO {rpo})")
    if result.rejected:
        out.print(f"[red]rejected[/red]    {result.rejected[:8]}: {result.last_error}")


@render.register
def _promote(result: r.PromoteResult) -> None:
    out = console()
    out.print(f"{result.node} no longer follows {result.promoted_from}")
    out.print(result.next)


@render.register
def _fleet_drift(result: r.FleetDriftResult) -> None:
    out = console()
    for node in result.nodes:
        out.print(f"{node.node:16} {node.snapshot_id[:8]} {node.time}")
    for finding in result.findings:
        head, _, rest = finding.detail.partition("\n")
        out.print(
            f"[red]drift[/red] {finding.node} {finding.category} {finding.path or '-'}: {head}",
            markup=True,
        )
        if rest:
            out.print(rest, markup=False)
    verdict = "[green]consistent[/green]" if result.ok else "[red]DRIFT[/red]"
    out.print(f"{verdict}: group {result.group}, {len(result.findings)} finding(s)")
