"""Results of scheduled operation (prune, verify, status, daemon), discovery, standby and fleet."""

from __future__ import annotations

from pydantic import MISSING, ConfigDict

from drkit.results.base import Checks, Document, Part, Result
from drkit.results.restore import PlanStep

# -- scheduled operation ---------------------------------------------------------------------


class RemovedSnapshot(Part):
    id: str | None
    short_id: str
    time: str
    tags: list[str]


class KeptSnapshot(RemovedSnapshot):
    reasons: list[str]  # restic's own reasons for keeping it
    rules: list[str]  # the keep rules among them: "last", "daily", ...


class CopyPrune(Part):
    """The retention applied in one copy (`repository.copies`): its own restic forget."""

    name: str
    ok: bool
    keep_rules: Document
    kept: int
    removed: list[RemovedSnapshot]
    pruned: bool
    error: str | None = None


class PruneResult(Result):
    """`drkit prune`: one pair, `kept` and `removed`, oldest first."""

    node: str
    dry_run: bool
    keep_rules: Document
    kept: list[KeptSnapshot]
    removed: list[RemovedSnapshot]
    pruned: bool
    group_pruner: bool
    stale_locks: list[Document]
    record: str | None
    snapshot_count: int  # the node's snapshots after this prune
    copies: list[CopyPrune] = []  # each copy's retention, after the primary's
    duration_seconds: float


class RepositoryCheck(Part):
    ok: bool
    read_data_subset: str | None
    problems: list[str]


class SnapshotsVerified(Part):
    checked: int
    verified: int
    failed: list[Document]


class VerifyResult(Result):
    node: str
    check: RepositoryCheck
    stale_locks: list[Document]
    snapshots: SnapshotsVerified
    chain: Document | None
    spot: Document | None
    problems: list[str]
    drift: list[Document]
    duration_seconds: float


class NodeStatus(Part):
    """One node of `drkit status` (engines.status.evaluate); keys it gains stay in the JSON."""

    model_config = ConfigDict(extra="allow")

    node: str
    last_backup: Document | None
    last_good_backup: Document | None
    last_prune: Document | None
    last_verify: Document | None
    last_drill: Document | None
    last_good_drill: Document | None = None  # a failed drill is recorded beside it
    rpo_seconds: int
    rpo_ok: bool  # false when breached: by the last good backup or, proving, the newest proof
    backup_rpo_ok: bool
    age_seconds: int | None
    prove: str | None  # schedule.prove; None: proven age is reported but never breaches
    last_proven: Document | None
    proven_snapshot_id: str | None
    proven_snapshot_time: str | None
    proven_age_seconds: int | None
    proven_rpo_ok: bool | None  # newest proven snapshot within the RPO; None: nothing proven
    proven_rpo_breached: bool  # proving, a proof tried, and none within the RPO
    rto_seconds: int
    rto_ok: bool | None
    problems: list[str]


class StatusResult(Result):
    time: str
    nodes: list[NodeStatus]
    problems: list[str]


class DaemonResult(Result):
    node: str
    started: str
    stopped: str
    stopped_by: str | None
    metrics: str | None
    interrupted: list[str]
    runs: dict[str, Document]


# -- discovery, standby and fleet ------------------------------------------------------------


class DiscoveredServer(Part):
    server: str
    configs: list[str]
    binaries: list[str]
    units: list[str]
    file_count: int
    categories: dict[str, list[str]]
    trees: list[str]
    accounts: list[str]
    warnings: list[str]


class DiscoverResult(Result):
    root: str
    servers: list[DiscoveredServer]
    proposed_config: str


class StandbySyncResult(Result):
    node: str
    source: str
    snapshot_id: str
    snapshot_time: str
    dry_run: bool
    changed: bool
    up_to_date: bool | MISSING = MISSING
    rolled_back: bool | MISSING = MISSING
    applied_at: str | MISSING | None = MISSING
    lag_seconds: int | MISSING | None = MISSING
    plan: list[PlanStep]
    kept_local: list[str] | MISSING = MISSING
    checks: Checks


class StandbyStatusResult(Result):
    node: str
    following: bool
    source: str | None
    snapshot_id: str | None
    snapshot_time: str | None
    applied_at: str | None
    lag_seconds: int | None
    rpo_seconds: int
    rejected: str | None
    last_error: str | None
    promoted_at: str | None


class PromoteResult(Result):
    node: str
    promoted_from: str
    last_applied_snapshot: str | None
    promoted_at: str
    config: str
    next: str


class FleetNode(Part):
    node: str
    snapshot_id: str
    time: str
    age_seconds: int
    signer: str


class Finding(Part):
    node: str
    category: str
    path: str
    detail: str


class FleetDriftResult(Result):
    group: str | None
    nodes: list[FleetNode]
    findings: list[Finding]


class VersionResult(Result):
    """`drkit --version --json`."""

    version: str
