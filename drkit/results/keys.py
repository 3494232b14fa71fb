"""Results of keys, history, identity proof and failover rehearsal."""

from __future__ import annotations

from pydantic import MISSING

from drkit.model import SecurityEvent
from drkit.results.base import Part, Result

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
