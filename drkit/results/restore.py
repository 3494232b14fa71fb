"""Results of restore, check, drill, proofs and reports."""

from __future__ import annotations

from typing import Literal

from pydantic import MISSING, ConfigDict

from drkit.model import DumpRecord, ServedCertificate, ServedKey, SmokeResult, TransferProtocol
from drkit.results.base import Checks, Document, Part, Result

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


class DatabaseRestore(Part):
    """One database dump of the snapshot after a restore: loaded into the target's database
    server (--restore-databases), or left at `dump` with the `command` that loads it."""

    database: str
    engine: str
    dump: str
    sha256: str
    loaded: bool
    command: str

    @classmethod
    def of(cls, record: DumpRecord, dump: str, command: str, loaded: bool) -> DatabaseRestore:
        return cls(
            database=record.database,
            engine=record.engine,
            dump=dump,
            sha256=record.sha256,
            loaded=loaded,
            command=command,
        )


class RestoreResult(ChecksResult):
    target: str
    applied: dict[str, int]
    duration_seconds: float
    smoke: list[SmokeProof] | MISSING = MISSING  # with --smoke
    databases: list[DatabaseRestore] | MISSING = MISSING  # when the snapshot holds dumps


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
    from_copy: str | None = None  # the copy (repository.copies) restored from; null: primary
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
