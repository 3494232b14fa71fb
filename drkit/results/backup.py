"""Results of init, storage, backup, inspection and copies."""

from __future__ import annotations

from pydantic import MISSING, PrivateAttr

from drkit.model import CertificateEnd, SecurityEvent
from drkit.results.base import Document, Part, Result

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
    _certificate_ends: list[CertificateEnd] | None = PrivateAttr(default=None)

    def with_certificate_ends(self, ends: list[CertificateEnd]) -> BackupResult:
        """Attach when the backed-up node's certificates end (for its status record, not the
        JSON): read from the manifest in memory, not parsed again from the node."""
        self._certificate_ends = ends
        return self

    @property
    def certificate_ends(self) -> list[CertificateEnd] | None:
        """When the node's certificates end, if the backup attached it."""
        return self._certificate_ends


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
