"""The neutral model every layer shares: inventory, manifest records, checks, keys, smoke results.

Engines, profiles, actions and the renderer all import these types; this module imports
nothing of drkit's, so no layer reaches into another to learn a fact's shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Required, TypedDict

from pydantic import BaseModel, ConfigDict, JsonValue, SecretStr, model_validator
from typing_extensions import TypedDict as ValidatedDict

Status = Literal["pass", "warn", "fail"]
TransferProtocol = Literal["sftp", "ftps", "ftp", "none"]


class CertificateEnd(ValidatedDict, total=False):
    """When one of the node's certificates ends (a backup's or a drill's, for the fleet page):
    path, kind (tls or host), subject and not_after."""

    path: str | None
    kind: str
    subject: str | None
    not_after: str | None


# -- time: one formatter, one parser ---------------------------------------------------------


def utc_text(moment: datetime) -> str:
    """Return an RFC 3339 UTC time with Z, to the second."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def utc_text_precise(moment: datetime) -> str:
    """Return an RFC 3339 UTC time with Z, to the microsecond: what orders two records made
    within one second (manifests, the signed index, this machine's rollback record)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc(text: str) -> datetime:
    """Return the aware datetime of an RFC 3339 time (restic's nanoseconds included); a time
    without a zone means UTC. Raises ValueError on anything else."""
    moment = datetime.fromisoformat(str(text).strip())
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_utc_or_none(text: str | None) -> datetime | None:
    """Return parse_utc(text), or None for an empty or unreadable value."""
    try:
        return parse_utc(text) if text else None
    except ValueError:
        return None


# -- inventory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One path of the node (absolute, as the node's own config names it) and its category."""

    path: str
    category: str


DatabaseEngine = Literal["sqlite", "postgresql", "mysql"]


@dataclass(frozen=True)
class Database:
    """A database a server's configuration names (accounts, logs, state).

    `named_by` is "file:directive" (e.g. "/etc/proftpd/sql.conf:SQLConnectInfo"). A SQLite
    database has `path` (the node path); a server database has `name` and its authority
    (`host`/`port`, or `socket`) and `user`. `local` is True for a SQLite file, localhost or a
    Unix socket (dumped with the server's own tool), False for a remote authority (its settings
    backed up and its reachability reported, like LDAP). `password` (a SecretStr: shown as
    stars, left out of repr and comparisons) is held in memory only, for the server's own
    tool (PGPASSFILE, MYSQL_PWD); it is never written to the manifest, argv or a log.
    """

    engine: DatabaseEngine
    named_by: str
    path: str = ""
    name: str = ""
    host: str = ""
    port: int | None = None
    socket: str = ""
    user: str = ""
    local: bool = True
    password: SecretStr | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """A one-word name for messages: the SQLite path, or engine://authority/name."""
        if self.engine == "sqlite":
            return self.path
        port = f":{self.port}" if self.port else ""
        authority = self.socket or f"{self.host or 'localhost'}{port}"
        return f"{self.engine}://{authority}/{self.name}"


@dataclass
class Inventory:
    """What a profile found on a node: files to back up and what restore must recreate."""

    files: list[Entry] = field(default_factory=list)
    dirs: list[Entry] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    owned_globs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Databases the server's configuration names (SQLite files copied with the online backup
    # API; local server databases dumped; remote ones reported as external authorities).
    databases: list[Database] = field(default_factory=list)
    # What a profile read from the node's own programs at backup ({profile: {name: value}},
    # e.g. a compiled-in default), for a restore onto a host whose programs differ.
    facts: dict[str, dict[str, object]] = field(default_factory=dict)

    def merge(self, other: Inventory) -> None:
        """Add other's findings to this inventory, keeping the first category of a path."""
        seen = {entry.path for entry in self.files}
        self.files += [entry for entry in other.files if entry.path not in seen]
        seen_dirs = {entry.path for entry in self.dirs}
        self.dirs += [entry for entry in other.dirs if entry.path not in seen_dirs]
        self.users += [user for user in other.users if user not in self.users]
        self.owned_globs += [glob for glob in other.owned_globs if glob not in self.owned_globs]
        self.warnings += other.warnings
        self.databases += [db for db in other.databases if db not in self.databases]
        for kind, facts in other.facts.items():
            self.facts.setdefault(kind, {}).update(facts)


# -- the signed manifest (the JSON document signed into every snapshot) ----------------------


class Record(BaseModel):
    """A record of the signed manifest. A record encodes only the fields it was given (dumped
    with exclude_unset) and keeps fields this version does not know (extra="allow"), and no
    value is coerced (strict): a stored manifest encodes back to its own bytes."""

    model_config = ConfigDict(extra="allow", strict=True, defer_build=True)


class FileFields(TypedDict, total=False):
    """The fields of a file entry as drkit reads them from the node (FileRecord.trusted)."""

    path: Required[str]
    category: Required[str]
    type: Required[Literal["file", "dir", "symlink"]]
    mode: Required[str]
    uid: Required[int]
    gid: Required[int]
    user: Required[str]
    group: Required[str]
    mtime: Required[str]
    size: int
    sha256: str
    link: str


class FileRecord(Record):
    """One path of the manifest: what it was at backup time (size and sha256 for a regular
    file, link for a symlink; absent otherwise)."""

    path: str
    category: str
    type: Literal["file", "dir", "symlink"]
    mode: str
    uid: int
    gid: int
    user: str
    group: str
    mtime: str
    size: int | None = None
    sha256: str | None = None
    link: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> FileRecord:
        """A regular file records its size and sha256, a symlink its target."""
        if self.type == "file" and (self.size is None or self.sha256 is None):
            raise ValueError("a regular file's entry needs its size and sha256")
        if self.type == "symlink" and self.link is None:
            raise ValueError("a symlink's entry needs its link")
        return self

    @classmethod
    def trusted(cls, values: FileFields) -> FileRecord:
        """Return the entry of values drkit itself just read from the node (complete, typed):
        not validated again, and its set of given fields shared (share_field_sets). What
        model_construct sets, without its loop over the fields (a third of describing a file)."""
        record = cls.__new__(cls)
        object.__setattr__(record, "__dict__", {**_NO_FILE_FIELDS, **values})
        object.__setattr__(record, "__pydantic_fields_set__", _shared_fields(frozenset(values)))
        object.__setattr__(record, "__pydantic_extra__", {})
        object.__setattr__(record, "__pydantic_private__", None)
        return record

    def __setattr__(self, name: str, value: object) -> None:
        """Set a field; a set of given fields shared with other entries is copied first."""
        if name not in self.__pydantic_fields_set__:
            object.__setattr__(self, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
        super().__setattr__(name, value)


_FIELD_SETS: dict[frozenset[str], set[str]] = {}
_NO_FILE_FIELDS = dict.fromkeys(FileRecord.model_fields)  # every field, in order, unset: None


def _shared_fields(names: frozenset[str]) -> set[str]:
    return _FIELD_SETS.setdefault(names, set(names))


_REPEATED = ("category", "type", "mode", "uid", "gid", "user", "group")  # a few values each


def share_field_sets(files: list[FileRecord]) -> None:
    """Let entries given the same fields share one set of their names (pydantic keeps a set per
    record: 0.7 kB, near half a file entry's memory, the same few sets 30,000 times over), and
    equal values of the fields that take a few values share one object (parsed JSON holds a
    string per entry). FileRecord.__setattr__ copies a shared set before it would change."""
    values: dict[tuple[type, object], object] = {}
    for entry in files:
        own = entry.__pydantic_fields_set__
        object.__setattr__(entry, "__pydantic_fields_set__", _shared_fields(frozenset(own)))
        fields = entry.__dict__
        for name in _REPEATED:
            value = fields[name]
            fields[name] = values.setdefault((type(value), value), value)


class KeyRecord(Record):
    """An SSH key (private key, public key or authorized_keys line) found among the files."""

    path: str
    category: str
    private: bool
    type: str
    fingerprint: str
    public_line: str


class HostKeyRecord(Record):
    """A server's private host key: what a restored server must offer again."""

    path: str
    type: str
    fingerprint: str
    public_line: str


class CertificateRecord(Record):
    """An X.509 certificate found among the files, and the private key it certifies."""

    path: str
    subject: str
    issuer: str
    not_after: str
    fingerprint: str
    key_fingerprint: str
    key_path: str | None = None


@dataclass(frozen=True)
class PasswdEntry:
    """One /etc/passwd line, name:password:uid:gid:gecos:home:shell (a missing field is "")."""

    name: str
    password: str
    uid: str
    gid: str
    gecos: str
    home: str
    shell: str

    @classmethod
    def parse(cls, line: str) -> PasswdEntry:
        name, password, uid, gid, gecos, home, shell = (line.split(":") + [""] * 7)[:7]
        return cls(name, password, uid, gid, gecos, home, shell)

    @property
    def uid_number(self) -> int | None:
        return int(self.uid) if self.uid.isdigit() else None

    @property
    def gid_number(self) -> int | None:
        return int(self.gid) if self.gid.isdigit() else None


@dataclass(frozen=True)
class GroupEntry:
    """One /etc/group line, name:password:gid:member,member (a missing field is "")."""

    name: str
    password: str
    gid: str
    members: tuple[str, ...]

    @classmethod
    def parse(cls, line: str) -> GroupEntry:
        name, password, gid, members = (line.split(":") + [""] * 4)[:4]
        return cls(name, password, gid, tuple(member for member in members.split(",") if member))

    def line(self) -> str:
        """Return the /etc/group line of this entry."""
        return ":".join((self.name, self.password, self.gid, ",".join(self.members)))


@dataclass(frozen=True)
class ShadowEntry:
    """One /etc/shadow line: the name, the password hash and the account's expiry (days since
    1970, "" for never); the ageing fields drkit never reads are left out."""

    name: str
    password: str
    expire: str

    @classmethod
    def parse(cls, line: str) -> ShadowEntry:
        fields = (line.split(":") + [""] * 9)[:9]
        return cls(fields[0], fields[1], fields[7])


class AccountRecord(Record):
    """A node account the manifest carries: its passwd line, shadow line (None when it was
    unreadable or absent) and the group lines of the groups it is in, as the node held them."""

    name: str
    passwd: str
    shadow: str | None = None
    groups: list[str] = []

    @property
    def entry(self) -> PasswdEntry:
        return PasswdEntry.parse(self.passwd)

    @property
    def shadow_entry(self) -> ShadowEntry | None:
        return ShadowEntry.parse(self.shadow) if self.shadow else None

    @property
    def group_entries(self) -> list[GroupEntry]:
        return [GroupEntry.parse(line) for line in self.groups]


class DumpRecord(Record):
    """A database dump the snapshot holds (category `databases`): the file (also listed among
    the files, with the same sha256), the database it came from and what named it."""

    path: str
    sha256: str
    size: int
    engine: DatabaseEngine
    database: str  # Database.label
    name: str
    host: str = ""
    port: int | None = None
    socket: str = ""
    user: str = ""
    named_by: str = ""
    format: Literal["sql"] = "sql"


class ChainLink(Record):
    """The node's previous snapshot, as the next manifest links to it."""

    snapshot_id: str
    manifest_sha256: str


class Manifest(Record):
    """The signed manifest of one snapshot: the node's files, the keys and certificates among
    them, the accounts it needs, the link to its previous snapshot, and the profile options
    and facts the checks after a restore read."""

    format: int
    node: str
    profiles: list[str] = []
    created: str
    files: list[FileRecord] = []
    keys: list[KeyRecord] = []
    host_keys: list[HostKeyRecord] = []
    certificates: list[CertificateRecord] = []
    accounts: list[AccountRecord] = []
    previous: ChainLink | None = None
    owned_globs: list[str] = []
    profile_options: dict[str, dict[str, JsonValue]] = {}
    facts: dict[str, dict[str, JsonValue]] = {}
    warnings: list[str] = []
    skipped: list[str] = []
    databases: list[DumpRecord] = []

    def account(self, name: str) -> AccountRecord | None:
        """Return the recorded account called name, or None."""
        return next((account for account in self.accounts if account.name == name), None)

    def options_of(self, kind: str) -> dict[str, JsonValue]:
        """Return the profile options signed for profile kind ({} when none were)."""
        return dict(self.profile_options.get(kind) or {})

    def private_key_paths(self) -> set[str]:
        """Return the node paths of the private keys among the files."""
        return {key.path for key in self.keys if key.private}


# -- checks ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """The result of one check: name, pass/warn/fail, and a one-line detail."""

    name: str
    status: Status
    detail: str
    # When the check was decided (time.monotonic()).
    at: float = field(default_factory=time.monotonic, compare=False, repr=False)

    def as_dict(self) -> dict[str, str]:
        """Return the JSON shape {name, status, detail}."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


def passed(name: str, detail: str = "") -> Check:
    return Check(name, "pass", detail)


def warned(name: str, detail: str) -> Check:
    return Check(name, "warn", detail)


def failed(name: str, detail: str) -> Check:
    return Check(name, "fail", detail)


def all_ok(checks: list[Check]) -> bool:
    """Return True when no check failed (warnings do not fail a run)."""
    return all(check.status != "fail" for check in checks)


# -- keys and certificates -------------------------------------------------------------------


@dataclass(frozen=True)
class KeyInfo:
    """What identifies a key: its SSH type, ssh-keygen fingerprint and public line."""

    type: str
    fingerprint: str
    public_line: str
    private: bool

    def as_dict(self) -> dict[str, str]:
        return {"type": self.type, "fingerprint": self.fingerprint, "public_line": self.public_line}


@dataclass(frozen=True)
class CertInfo:
    """What identifies an X.509 certificate and the key it certifies."""

    subject: str
    issuer: str
    not_after: datetime
    fingerprint: str
    key_fingerprint: str

    def as_dict(self) -> dict[str, str]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": utc_text(self.not_after),
            "fingerprint": self.fingerprint,
            "key_fingerprint": self.key_fingerprint,
        }


# -- the smoke run: a real server started from restored files, and a real login ---------------


class ServedKey(BaseModel):
    """A host key as the started server offered it to a client."""

    model_config = ConfigDict(frozen=True)

    type: str
    fingerprint: str


class ServedCertificate(BaseModel):
    """A TLS certificate as the started server presented it in its handshake."""

    model_config = ConfigDict(frozen=True)

    fingerprint: str
    subject: str
    not_after: str


class SmokeResult(BaseModel):
    """What one profile's smoke run proved, as typed facts (drill and reports read these).

    `judged` is False when the profile could not try at all (no smoke user, no server program
    on this host): `reason` says why, and nothing else is claimed. A profile that serves several
    protocols (ProFTPD: SFTP and FTPS) records one session per protocol: login_ok and
    round_trip_ok hold only when every session's did, and the times are the last success's.
    Times are time.monotonic() values.
    """

    profile: str
    protocols: list[TransferProtocol] = []
    judged: bool = True
    reason: str = ""
    login_ok: bool = False
    login_at: float | None = None
    round_trip_ok: bool = False
    round_trip_at: float | None = None
    host_keys: list[ServedKey] = []
    certificates: list[ServedCertificate] = []
    checks: list[Check] = []

    @classmethod
    def not_judged(cls, profile: str, reason: str) -> SmokeResult:
        """Return the result of a smoke run that could not be tried, with the reason."""
        return cls(
            profile=profile,
            judged=False,
            reason=reason,
            checks=[warned(f"smoke: {profile}", reason)],
        )

    def add(self, *found: Check) -> None:
        """Record checks that prove no login by themselves (server started, host keys, ...)."""
        self.checks.extend(found)

    def session(self, protocol: TransferProtocol, login: Check, round_trip: Check) -> None:
        """Record one protocol's login and file round trip, from their checks (one check may
        prove both: a generic smoke command)."""
        first = not self.protocols
        self.protocols.append(protocol)
        self.checks += [login] if round_trip is login else [login, round_trip]
        login_ok = login.status == "pass"
        trip_ok = login_ok and round_trip.status == "pass"
        self.login_ok = login_ok if first else self.login_ok and login_ok
        self.round_trip_ok = trip_ok if first else self.round_trip_ok and trip_ok
        if login_ok:
            self.login_at = max(self.login_at or login.at, login.at)
        if trip_ok:
            self.round_trip_at = max(self.round_trip_at or round_trip.at, round_trip.at)

    @property
    def proven(self) -> bool:
        """True when at least one session ran and every login and round trip succeeded."""
        return self.judged and bool(self.protocols) and self.login_ok and self.round_trip_ok

    @property
    def proven_at(self) -> float | None:
        """When the node was proven to serve (the last round trip), else None."""
        return self.round_trip_at if self.proven else None


# -- security-change watch --------------------------------------------------------------------

EventKind = Literal[
    "host_key_replaced",
    "user_key_added",
    "account_added",
    "uid0_account",
    "auth_weakened",
    "script_changed",
    "files_dropped",
]


class SecurityEvent(BaseModel):
    """One change an intruder would make, as `drkit history` lists it."""

    model_config = ConfigDict(extra="forbid")

    id: str
    time: str
    snapshot_id: str
    kind: EventKind
    path: str
    detail: str
    acknowledged: bool = False
