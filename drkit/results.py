"""The result of every command, as a typed model: actions return these, drkit.render prints them
for people, and `--json` prints `result.model_dump(mode="json")`.

The JSON shapes are a documented interface (../shared/CONVENTIONS.md and the README): field
names, nesting, and null versus absent are exactly as documented. Every document is an object
with `ok`; lists travel under a named key; one name per concept (`files` is always a list of
entries, `file_count` their number, `kept`/`removed` the retention pair). The published JSON
Schema files (docs/schemas, devtools/schemas.py) are generated from these models. A field that
some runs of a command carry and others leave out is typed `... | MISSING` and defaults to
MISSING, so the dump omits it instead of writing null. Parts that are documents of their own
(a manifest's records, restic's lock descriptions, the engines' status entries) stay free-form
dicts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import MISSING, BaseModel, ConfigDict, PlainSerializer

from drkit.model import (
    Check,
    SecurityEvent,
    ServedCertificate,
    ServedKey,
    SmokeResult,
    TransferProtocol,
)


def _check_documents(checks: list[Check]) -> list[dict[str, str]]:
    return [check.as_dict() for check in checks]


# Checks are model.Check values; their JSON is [{name, status, detail}] (no timing).
Checks = Annotated[list[Check], PlainSerializer(_check_documents, return_type=list[dict[str, str]])]
Document = dict[str, Any]


class Result(BaseModel):
    """Base of every command result: `ok` false makes the command exit 1. A field the model does
    not declare is an error, never silently left out of the JSON."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)

    ok: bool = True


class Part(BaseModel):
    """Base of a nested part of a result."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


# -- init and storage ------------------------------------------------------------------------


class CopyBucket(Part):
    """A copy's bucket as storage init left it or storage verify found it."""

    ok: bool
    bucket: str
    endpoint: str
    versioning: str | None
    object_lock: Document | None
    lifecycle: Document | None
    problems: list[str]
    created: bool | MISSING = MISSING  # storage init only
    changes: list[str] | MISSING = MISSING  # storage init only


class StorageInitResult(Result):
    bucket: str
    endpoint: str
    created: bool
    changes: list[str]
    versioning: str | None
    object_lock: Document | None
    lifecycle: Document | None
    problems: list[str]
    copies: list[CopyBucket] = []  # each of repository.copies, prepared the same way


class StorageVerifyResult(Result):
    bucket: str
    endpoint: str
    versioning: str | None
    object_lock: Document | None
    lifecycle: Document | None
    problems: list[str]
    copies: list[CopyBucket] = []  # each of repository.copies, verified the same way


class InitResult(Result):
    config: str
    config_written: bool
    changes: list[str]  # the settings --update changed in an existing drkit.yaml
    node: str
    password_file: str
    password_created: bool
    signing_key: str
    signer: str
    bucket: StorageInitResult
    repository: str
    repository_created: bool


# -- backup and inspection -------------------------------------------------------------------


class BackupResult(Result):
    node: str
    snapshot_id: str
    time: str
    file_count: int  # regular files as restic counts them, drkit's own three included
    size: int | None = None  # their bytes: the `size` of snapshots
    bytes_added: int | None
    duration_seconds: float
    signer: str
    previous: str | None
    passes: int
    warnings: list[str]
    security_events: list[SecurityEvent] = []  # changes an intruder would make, unacknowledged
    unchanged: bool = False  # no new snapshot: snapshot_id was confirmed by a freshness entry


class SnapshotEntry(Part):
    id: str
    short_id: str
    time: str
    node: str | None
    file_count: int | None
    size: int | None
    tags: list[str]
    confirms: str | MISSING = MISSING  # a freshness entry: the node was unchanged since this id


class SnapshotsResult(Result):
    """`drkit snapshots`: the snapshots, oldest first."""

    snapshots: list[SnapshotEntry]


class ShownFile(Part):
    path: str | None
    category: str | None
    type: str | None
    size: int | None
    mode: str | None
    user: str | None
    group: str | None


class ShownKey(Part):
    path: str
    category: str
    type: str
    fingerprint: str


class ShowResult(Result):
    snapshot_id: str
    time: str
    node: str
    profiles: list[str]
    signer: str
    trusted: bool
    # Regular files in the snapshot as restic counts them (drkit's own three included), the
    # `file_count` of backup and snapshots; null for a snapshot without restic's summary.
    file_count: int | None = None
    categories: dict[str, int]
    files: list[ShownFile]
    keys: list[ShownKey]
    host_keys: list[Document]
    certificates: list[Document]
    accounts: list[str]
    warnings: list[str]


# -- restore, check and drill ----------------------------------------------------------------


class PlanStep(Part):
    path: str
    action: Literal["add", "change", "remove", "unchanged"]


class ChecksResult(Result):
    """What restore, restore --dry-run and check share: the snapshot, its signer and checks."""

    snapshot_id: str
    node: str
    signer: str
    trust: str
    checks: Checks


class RestorePlanResult(ChecksResult):
    """`drkit restore --dry-run`: the plan, nothing touched."""

    dry_run: Literal[True] = True
    plan: list[PlanStep]


class SmokeProof(Part):
    """What one server started from the restored files proved (`--smoke`)."""

    profile: str
    protocols: list[TransferProtocol]
    judged: bool
    reason: str
    login_ok: bool
    round_trip_ok: bool
    host_keys: list[ServedKey]
    certificates: list[ServedCertificate]

    @classmethod
    def of(cls, result: SmokeResult) -> SmokeProof:
        return cls(**result.model_dump(include=set(cls.model_fields)))


class RestoreResult(ChecksResult):
    target: str
    applied: dict[str, int]
    duration_seconds: float
    smoke: list[SmokeProof] | MISSING = MISSING  # with --smoke


class CheckResult(ChecksResult):
    target: str
    smoke: list[SmokeProof] | MISSING = MISSING  # with --smoke


class DrillSnapshot(Part):
    id: str
    short_id: str
    time: str
    spec: str


class Objectives(Part):
    rpo_seconds: int
    rto_seconds: int


class ObjectivesMet(Part):
    rto: bool
    rpo: bool | None


class Sandbox(Part):
    path: str | None
    removed: bool


class DrillResult(Result):
    """`drkit drill`: as restore, plus the measured RTO and RPO, objectives and reports."""

    # The drill document is also the report's source (engines.reports); keys it gains there
    # stay in the JSON.
    model_config = ConfigDict(extra="allow")

    kind: Literal["drill"] = "drill"
    node: str
    snapshot_id: str
    snapshot: DrillSnapshot
    signer: str | None
    trust: str | None
    started: str
    finished: str
    duration_seconds: float
    rto_seconds: float | None
    rpo_seconds: int
    rpo_judged: bool
    objectives: Objectives
    objectives_met: ObjectivesMet
    checks: Checks
    problems: list[str]
    host_keys: list[Document]
    certificates: list[Document]
    sandbox: Sandbox
    reports: dict[str, str]  # {json, md, html}: local paths
    uploaded: list[str]
    history: list[Document]


class ProofResult(Result):
    """The daemon's proof of one snapshot: a drill in the sandbox without reports; ok when
    every check passed (the objectives are judged by status and by drills, not here)."""

    node: str
    snapshot_id: str
    snapshot_time: str | None  # the signed manifest's creation time
    started: str
    duration_seconds: float
    rto_seconds: float | None
    checks: Checks
    problems: list[str]


class DrillSummary(Part):
    node: str | None
    time: str | None
    ok: bool
    snapshot_id: str | None
    rto_seconds: float | None
    rpo_seconds: float | None
    html: str | None


class ReportResult(Result):
    bucket: str
    drills: list[DrillSummary]
    page: str | None = None
    opened: bool = False


class FleetPageNode(Part):
    """One node of the fleet page (engines.reports.fleet_node); keys it gains stay in the JSON."""

    model_config = ConfigDict(extra="allow")

    node: str
    group: str | None
    breached: bool
    problems: list[str]
    backup_age_seconds: int | None
    proven_age_seconds: int | None
    rpo_seconds: int
    last_drill: Document | None
    standby_lag_seconds: int | None
    expiring: list[Document]


class FleetReportResult(Result):
    """`drkit report --fleet`: ok is false when any node is breached; nodes breached first."""

    kind: Literal["fleet"] = "fleet"
    time: str
    bucket: str
    breached: int
    nodes: list[FleetPageNode]
    drift: list[Document]
    html: str
    json_file: str
    uploaded: list[str] = []
    opened: bool = False
    problems: list[str] = []


class Change(Part):
    category: str
    path: str
    change: Literal["added", "removed", "changed"]
    detail: str
    diff: str | MISSING = MISSING


class DiffSnapshot(Part):
    id: str
    short_id: str
    time: str
    signer: str


class DiffResult(Result):
    node: str
    old: DiffSnapshot
    new: DiffSnapshot
    changes: list[Change]
    notes: list[str]


# -- scheduled operation ---------------------------------------------------------------------


class RemovedSnapshot(Part):
    id: str | None
    short_id: str
    time: str
    tags: list[str]


class KeptSnapshot(RemovedSnapshot):
    reasons: list[str]  # restic's own reasons for keeping it
    rules: list[str]  # the keep rules among them: "last", "daily", ...


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


# -- keys ------------------------------------------------------------------------------------


class ShareFile(Part):
    holder: str
    file: str


class KeysEscrowResult(Result):
    node: str
    threshold: int
    holders: int
    files: list[ShareFile]
    sheet: str
    signer: str
    created: str


class KeysHolderResult(Result):
    identity: str
    recipient: str


class KeysRevealResult(Result):
    share: str
    words: str
    count: int


class KeysRecoverResult(Result):
    shares_used: int
    password_file: str


class ResticKeys(Part):
    added: str
    removed: list[str]


class Signers(Part):
    new: str
    retired: str | None  # None: the signing key was lost, a new one made in its place


class KeysRotateResult(Result):
    node: str
    restic_keys: ResticKeys
    signer: Signers
    trusted_keys: list[str]
    next: str


def document(result: Any) -> Any:
    """Return the JSON document of a result: a model's dump; a dict (or None) as it is."""
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result


class HistoryResult(Result):
    """`drkit history`: the node's security events, oldest first; with --last-clean, the newest
    snapshot before the chosen event."""

    node: str
    events: list[SecurityEvent]
    snapshot_id: str | MISSING = MISSING


# -- identity proof and failover rehearsal ---------------------------------------------------


class ServedFingerprint(Part):
    fingerprint: str
    expected: str | None  # what the signed snapshot holds for that key type or certificate


class IdentityEndpoint(Part):
    address: str
    protocol: str
    ok: bool
    host_keys: list[ServedFingerprint]
    certificates: list[ServedFingerprint]
    detail: str


class IdentityLogin(Part):
    address: str
    protocol: str
    ok: bool
    detail: str


class IdentityResult(Result):
    """`drkit identity check`: what each address serves against the newest signed snapshot."""

    node: str
    snapshot_id: str
    endpoints: list[IdentityEndpoint]
    login: IdentityLogin | MISSING = MISSING


class RehearsalLogin(Part):
    ok: bool
    at: float | None  # seconds after the stop command: the RTO a pinned client saw
    detail: str


class RehearsalResult(Result):
    """`drkit failover rehearse`: the RTO a pinned client sees through the shared address."""

    node: str
    snapshot_id: str
    via: str
    rto_seconds: float | None
    served_before: list[str]
    served_after: list[str]
    login_after: RehearsalLogin
    detail: str


# -- copies ----------------------------------------------------------------------------------


class CopyState(Part):
    name: str
    bucket: str
    created: bool  # the copy's repository was made by this run
    snapshot_count: int  # the node's snapshots the copy now holds
    objects: int  # catalog objects and signed records copied this run
    newest: str | None
    last_copy: str
    duration_seconds: float


class CopyResult(Result):
    """`drkit copy`: each copy brought up to the primary."""

    node: str
    copies: list[CopyState]
