"""restic's --json messages as typed models, read as restic's own Go structs are written.

restic omits zero-valued fields (`omitempty`) and adds fields and message types between
versions: every field has a default, unknown fields are ignored (extra="ignore"), and a list
restic writes as null reads as empty.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from drkit import errors

T = TypeVar("T")


def _empty_if_null(value: object) -> object:
    return [] if value is None else value


Strings = Annotated[list[str], BeforeValidator(_empty_if_null)]


class Message(BaseModel):
    """Any restic JSON object: unknown fields ignored, as restic may add them."""

    model_config = ConfigDict(extra="ignore", defer_build=True)


class SnapshotSummary(Message):
    """The `summary` restic 0.17+ stores in each snapshot."""

    total_files_processed: int | None = None
    total_bytes_processed: int | None = None


class SnapshotRecord(Message):
    """One snapshot as `restic snapshots --json`, `forget --json` and `ls --json` write it."""

    id: str
    short_id: str = ""
    time: str
    hostname: str = ""
    tags: Strings = Field(default_factory=list)
    paths: Strings = Field(default_factory=list)
    summary: SnapshotSummary | None = None

    @property
    def short(self) -> str:
        """The short id restic shows (its first 8 hex digits when restic omitted it)."""
        return self.short_id or self.id[:8]


class TreeNode(Message):
    """One node of `restic ls --json`: only what screening reads."""

    path: str = ""
    type: str = ""
    mode: int = 0
    size: int = 0
    inode: int = 0
    device_id: int = 0


class KeepReason(Message):
    """Why `forget` keeps a snapshot: the rules it matched ("last snapshot", "daily snapshot")."""

    snapshot: SnapshotRecord
    matches: Strings = Field(default_factory=list)


class ForgetGroup(Message):
    """One group of `restic forget --json`: the snapshots kept and removed, and why kept."""

    host: str = ""
    tags: Strings = Field(default_factory=list)
    keep: Annotated[list[SnapshotRecord], BeforeValidator(_empty_if_null)] = Field(
        default_factory=list
    )
    remove: Annotated[list[SnapshotRecord], BeforeValidator(_empty_if_null)] = Field(
        default_factory=list
    )
    reasons: Annotated[list[KeepReason], BeforeValidator(_empty_if_null)] = Field(
        default_factory=list
    )


class LockRecord(Message):
    """One repository lock (`restic cat lock ID`), with the id it is stored under."""

    id: str = ""
    time: str = ""
    exclusive: bool = False
    hostname: str = ""
    username: str = ""
    pid: int = 0


class KeyRecord(Message):
    """One repository key (`restic key list --json`)."""

    id: str
    current: bool = False
    userName: str = ""
    hostName: str = ""
    created: str = ""


class BackupStatus(Message):
    """A progress line of `restic backup --json`."""

    message_type: Literal["status"]
    percent_done: float = 0.0
    total_bytes: int = 0
    bytes_done: int = 0
    seconds_remaining: float | None = None


class VerboseStatus(Message):
    """A per-item line of `restic backup --verbose=2` or `restore --verbose=2`."""

    message_type: Literal["verbose_status"]
    action: str = ""
    item: str = ""


class Said(Message):
    """Any message with a `message` (restic's `exit_error`, a check finding)."""

    message: str = ""


class ErrorDetail(Message):
    message: str = ""


class ErrorMessage(Message):
    """An `error` line: the item restic could not read and why (backup), or a finding (check)."""

    message_type: Literal["error"]
    item: str = ""
    error: ErrorDetail | None = None
    message: str = ""


class BackupSummaryMessage(Message):
    """The `summary` line of `restic backup --json`."""

    message_type: Literal["summary"]
    snapshot_id: str | None = None
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    data_added: int = 0
    backup_start: str | None = None  # restic 0.17+: when the run began, about its snapshot time


class CheckSummary(Message):
    """The `summary` line of `restic check --json`."""

    message_type: Literal["summary"]
    broken_packs: Strings = Field(default_factory=list)


BackupLine = Annotated[
    BackupStatus | VerboseStatus | ErrorMessage | BackupSummaryMessage,
    Field(discriminator="message_type"),
]
BACKUP_LINE: TypeAdapter[BackupLine] = TypeAdapter(BackupLine)
SNAPSHOTS: TypeAdapter[list[SnapshotRecord] | None] = TypeAdapter(list[SnapshotRecord] | None)
FORGET_GROUPS: TypeAdapter[list[ForgetGroup] | None] = TypeAdapter(list[ForgetGroup] | None)
KEYS: TypeAdapter[list[KeyRecord] | None] = TypeAdapter(list[KeyRecord] | None)
CHECK_LINE: TypeAdapter[CheckSummary | ErrorMessage] = TypeAdapter(
    Annotated[CheckSummary | ErrorMessage, Field(discriminator="message_type")]
)
LOCK: TypeAdapter[LockRecord] = TypeAdapter(LockRecord)


def backup_line(line: str) -> BackupLine | None:
    """Return one line of `restic backup --json` as its message, or None (not JSON, or a type
    drkit does not read)."""
    try:
        return BACKUP_LINE.validate_json(line)
    except ValidationError:
        return None


def check_line(line: str) -> CheckSummary | ErrorMessage | None:
    """Return one JSON line of `restic check --json` as its message, or None (not one drkit
    reads)."""
    try:
        return CHECK_LINE.validate_json(line)
    except ValidationError:
        return None


def parsed(adapter: TypeAdapter[T], text: str | bytes, doing: str) -> T:
    """Return restic's JSON output read by adapter; ResticFailed when it is not that."""
    try:
        return adapter.validate_json(text)
    except ValidationError:
        raise errors.ResticFailed(
            f"restic printed output drkit cannot parse while {doing}"
        ) from None


def error_line(stderr: str) -> str:
    """Pick the line that names the cause from restic's stderr (JSON or plain)."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                said = Said.model_validate_json(line).message.strip()
            except ValidationError:
                continue
            if said:
                return said.splitlines()[0]
        elif not line.startswith(("Usage", "Flags")):
            return line
    return "no message"
