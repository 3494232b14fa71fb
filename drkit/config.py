"""drkit.yaml: one file, validated by pydantic; errors name the file and the field."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    JsonValue,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from drkit import errors
from drkit.configtypes import (
    AFTER_BACKUP,
    BaseUrl,
    Duration,
    HttpUrl,
    ProveSchedule,
    Schedule,
    Strict,
    check_fingerprint,
    config_error,
    parse_duration,
)

log = logging.getLogger(__name__)

DEFAULT_CONFIG_PATHS = (Path("drkit.yaml"), Path("/etc/drkit/drkit.yaml"))
CATEGORIES = (
    "config",
    "host_keys",
    "user_keys",
    "accounts",
    "tls",
    "scripts",
    "audit_logs",
    "chroot",
    "databases",
)
SERVER_KINDS = ("openssh", "proftpd", "vsftpd", "pureftpd", "sftpplus", "generic")
ServerKind = Literal["openssh", "proftpd", "vsftpd", "pureftpd", "sftpplus", "generic"]


class ObjectLock(Strict):
    mode: Literal["GOVERNANCE", "COMPLIANCE"] = Field(
        "GOVERNANCE", description="default retention mode of new object versions"
    )
    days: int = Field(30, ge=1, description="default retention in days", examples=[30])


class Repository(Strict):
    s3_endpoint: BaseUrl = Field(
        description="S3 endpoint URL", examples=["https://s3.eu-west-1.amazonaws.com"]
    )
    bucket: str = Field(min_length=3, max_length=63, description="bucket name")
    prefix: str = Field(description="folder of the restic repository inside the bucket")
    region: str = Field("us-east-1", description="S3 region")
    ca_bundle: Path | None = Field(None, description="PEM file of CAs that sign the endpoint")
    password_file: Path = Field(description="file holding the restic password (mode 0600)")
    object_lock: ObjectLock = Field(
        default_factory=ObjectLock, description="object-lock mode and retention of new objects"
    )
    outage_limit: Duration = Field(
        "5m",
        description="a backup gives up once every S3 probe has failed for this long "
        "(restic alone would retry for 15 minutes)",
    )

    @property
    def outage_limit_seconds(self) -> float:
        return parse_duration(self.outage_limit).total_seconds()

    @field_validator("prefix")
    @classmethod
    def _prefix_is_relative(cls, value: str) -> str:
        value = value.strip("/")
        if not value or ".." in value.split("/"):
            raise ValueError("must be a non-empty folder name without '..'")
        return value

    copies: list[Copy] = Field(
        default_factory=list,
        description="further repositories every snapshot is copied to (3-2-1): "
        "[{name, s3_endpoint, bucket, prefix}]; password as the primary's unless set",
    )

    @property
    def restic_url(self) -> str:
        """Return the restic repository location, s3:<endpoint>/<bucket>/<prefix>."""
        return f"s3:{self.s3_endpoint}/{self.bucket}/{self.prefix}"

    def copy_named(self, name: str) -> Repository:
        """Return the repository of the copy called name (its own endpoint, bucket, prefix,
        object lock; the primary's password and outage limit unless it sets them)."""
        for copy in self.copies:
            if copy.name == name:
                return Repository(
                    s3_endpoint=copy.s3_endpoint,
                    bucket=copy.bucket,
                    prefix=copy.prefix,
                    region=copy.region,
                    ca_bundle=copy.ca_bundle,
                    password_file=copy.password_file or self.password_file,
                    object_lock=copy.object_lock,
                    outage_limit=self.outage_limit,
                )
        known = ", ".join(copy.name for copy in self.copies) or "none configured"
        raise errors.UsageError(f"no copy named {name} in repository.copies ({known})")


class Copy(Strict):
    """A further repository a node's snapshots are copied to."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="what --from and the status call this copy",
        examples=["offsite"],
    )
    s3_endpoint: BaseUrl = Field(description="S3 endpoint URL of the copy")
    bucket: str = Field(min_length=3, max_length=63, description="the copy's bucket")
    prefix: str = Field(description="folder of the copy's restic repository")
    region: str = Field("us-east-1", description="S3 region of the copy")
    ca_bundle: Path | None = Field(None, description="PEM file of CAs that sign its endpoint")
    password_file: Path | None = Field(None, description="default: the primary's")
    object_lock: ObjectLock = Field(
        default_factory=ObjectLock, description="object-lock mode and retention of new objects"
    )
    retention: Retention | None = Field(
        None,
        description="keep rules `drkit prune` applies in this copy (a copy may keep longer); "
        "default: the node's retention",
    )


DEFAULT_RETENTION = {"last": 4, "hourly": 24, "daily": 14, "weekly": 8, "monthly": 12, "yearly": 3}


class Retention(Strict):
    """restic keep rules. A section applies exactly the rules it names (an unnamed rule keeps
    nothing); DEFAULT_RETENTION applies only when the config has no `retention` section."""

    last: int | None = Field(None, ge=0, description="keep the newest N snapshots")
    hourly: int | None = Field(None, ge=0, description="keep one per hour for the last N hours")
    daily: int | None = Field(None, ge=0, description="keep one per day for the last N days")
    weekly: int | None = Field(None, ge=0, description="keep one per week for the last N weeks")
    monthly: int | None = Field(None, ge=0, description="keep one per month for the last N months")
    yearly: int | None = Field(None, ge=0, description="keep one per year for the last N years")

    @classmethod
    def defaults(cls) -> Retention:
        """The rules used when the config has no `retention` section."""
        return cls(**DEFAULT_RETENTION)

    def rules(self) -> dict[str, int]:
        """The keep rules that apply: the named ones with a count above 0, e.g. {"last": 3}."""
        return {rule: count for rule, count in self.model_dump().items() if count}


class ScheduleConfig(Strict):
    """When the daemon runs each job: 5-field cron lines (UTC) or 'every N[smhd]'."""

    backup: Schedule = Field("*/15 * * * *", description="cron line or 'every 30s'")
    prune: Schedule | None = Field(
        "30 3 * * *", description="forget and prune by the retention rules; null: never"
    )
    verify: Schedule | None = Field(
        "0 4 * * 0",
        description="restic check and a restore verify of the newest snapshot; null: never",
    )
    drill: Schedule | None = Field(
        "0 5 1 * *",
        description="a DR drill: restore into a sandbox, smoke, measure RPO/RTO; null: never",
    )
    drill_from_copies: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of scheduled drills that restore from a copy (repository.copies, "
        "in turn) instead of the primary, spread evenly: 0.25 is every 4th drill",
        examples=[0.25],
    )
    identity: Schedule | None = Field(
        None,
        description="prove what clients are served (the `identity` section's addresses) against "
        "the newest signed snapshot; a difference fails the job and alerts (identity_failed)",
        examples=["*/30 * * * *"],
    )
    prove: ProveSchedule | None = Field(
        None,
        description="drill new snapshots in the sandbox: 'after-backup' (each backup the daemon "
        "makes), or a cron line or 'every N' (the latest snapshot then); unset: no proofs",
        examples=[AFTER_BACKUP, "0 * * * *"],
    )
    standby: Schedule | None = Field(
        None, description="how often a passive node runs `standby sync`", examples=["every 30s"]
    )
    jitter: Duration | None = Field(
        None, description="random delay added to each scheduled run", examples=["30s"]
    )
    retry_window: Duration = Field(
        "2m",
        description="how long a scheduled run retries transient errors before it is failed "
        "(and alerted); the daemon then retries in the background",
        examples=["2m"],
    )

    @property
    def retry_window_seconds(self) -> float:
        return parse_duration(self.retry_window).total_seconds()


class IdentitySettings(Strict):
    """What `schedule.identity` proves: the addresses clients use, as `drkit identity check`."""

    addresses: list[str] = Field(
        default_factory=list,
        description="each node's own address: sftp://, ftps:// or ftp:// URL, or HOST:PORT "
        "with protocol",
        examples=[["sftp://10.0.0.11:22", "sftp://10.0.0.12:22"]],
    )
    via: str | None = Field(
        None,
        description="the shared address clients use (virtual IP, load balancer): also a pinned "
        "login through it",
        examples=["sftp://10.0.0.10:22"],
    )
    protocol: Literal["sftp", "ftps", "ftp"] | None = Field(
        None, description="protocol of addresses given as HOST:PORT"
    )

    @model_validator(mode="after")
    def _names_an_address(self) -> IdentitySettings:
        if not self.addresses and self.via is None:
            raise ValueError("name at least one of addresses or via")
        return self


class Standby(Strict):
    """Active-passive: this node follows another node's snapshots instead of backing itself up."""

    source: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="the active node whose newest snapshot this node applies",
        examples=["sftp-1"],
    )
    reload: str | None = Field(
        None,
        description="command run (argv split like a shell, no shell) after a sync changed files",
        examples=["systemctl reload ssh"],
    )
    local: list[str] = Field(
        default_factory=list,
        description="this node's identity, never overwritten by a sync: node paths (globs "
        "allowed) or 'FILE:[section]/key' / 'FILE:Keyword' for one setting inside a file",
        examples=[
            ["/etc/ssh/sshd_config.d/10-listen.conf", "server.ini:[services/sftp-1]/address"]
        ],
    )


class Objectives(Strict):
    rpo: Duration = Field("15m", description="recovery point objective")
    rto: Duration = Field("10m", description="recovery time objective")

    @property
    def rpo_seconds(self) -> int:
        return int(parse_duration(self.rpo).total_seconds())

    @property
    def rto_seconds(self) -> int:
        return int(parse_duration(self.rto).total_seconds())


class Webhook(Strict):
    url: HttpUrl = Field(description="URL that receives a signed JSON POST per finished job")
    secret_file: Path | None = Field(
        None, description="file holding the HMAC-SHA256 secret for X-Drkit-Signature"
    )


class Ping(Strict):
    url: BaseUrl = Field(
        description="healthchecks-style ping URL of the backup job: <url>/start, <url>, <url>/fail",
        examples=["https://hc.example.net/ping/UUID"],
    )
    jobs: dict[Literal["prune", "verify", "drill", "prove"], str] = Field(
        default_factory=dict,
        description="ping URLs of the other jobs, when they have checks (a failed proof "
        "without its own pings the backup's /fail)",
    )


class Notify(Strict):
    webhook: Webhook | None = Field(None, description="signed JSON POST per finished job")
    ping: Ping | None = Field(None, description="healthchecks-style start/success/fail pings")
    timeout_seconds: float = Field(10.0, gt=0, le=60, description="per request")


class ReportSettings(Strict):
    fleet: bool = Field(
        False,
        description="the daemon refreshes reports/fleet.html (and .json) in the bucket after "
        "each run: every node's RPO, RTO, jobs, expiring certificates and drift",
        examples=[True],
    )


class Config(Strict):
    """The whole of drkit.yaml."""

    _options: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    def from_copy(self, name: str | None) -> Config:
        """Return this config reading from the copy called name (None: itself)."""
        if name is None:
            return self
        return self.model_copy(update={"repository": self.repository.copy_named(name)})

    def options_of(self, kind: str) -> BaseModel:
        """Return profile_options.<kind> validated by that profile's options model, defaults
        filled in: validated once (at load, by validate_config) and kept; raise ConfigError
        naming the first bad setting. profile_options itself stays as written: it is signed
        into every manifest as given."""
        from drkit import profiles  # profiles read this module's names: imported only here

        if kind not in self._options:
            self._options[kind] = profiles.options(kind, self.profile_options.get(kind))
        return self._options[kind]

    node: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="this node's name; snapshots are tagged with it",
        examples=["sftp-1"],
    )
    servers: list[ServerKind] = Field(
        min_length=1, description="server profiles of this node", examples=[["openssh", "proftpd"]]
    )
    root: Path = Field(Path("/"), description="where the node's filesystem is mounted")
    repository: Repository = Field(description="the S3 bucket and restic repository")
    includes: dict[str, list[str]] = Field(
        default_factory=dict, description="extra files by category: {tls: [/etc/ssl/x.key]}"
    )
    signing_key: Path = Field(description="Ed25519 private key that signs manifests (PEM)")
    trusted_keys: list[str] = Field(
        default_factory=list, description="fingerprints of keys whose manifests are trusted"
    )
    smoke_user: str | None = Field(None, description="account used for the smoke login")
    smoke_key: Path | None = Field(
        None,
        description="private key of smoke_user for live SFTP logins (identity check --via, "
        "failover rehearse); 0600",
    )
    smoke_password_file: Path | None = Field(
        None,
        description="file holding smoke_user's password for live FTP/FTPS logins; 0600",
    )
    unchanged: Literal["confirm", "snapshot"] = Field(
        "confirm",
        description="a backup of an unchanged node: confirm (a signed freshness entry in the "
        "chain head, no restic process) or snapshot (a new snapshot every run)",
    )
    restic: Path | None = Field(None, description="restic binary; default: searched")
    state_dir: Path = Field(Path("/var/lib/drkit"), description="drkit's local state")
    retention: Retention = Field(
        default_factory=Retention.defaults,
        description="keep rules; a section applies exactly the rules it names",
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig, description="when the daemon runs each job"
    )
    objectives: Objectives = Field(
        default_factory=Objectives, description="RPO and RTO the status and drills judge by"
    )
    notify: Notify = Field(default_factory=Notify, description="webhook and ping alerts")
    report: ReportSettings = Field(
        default_factory=ReportSettings, description="reports the daemon publishes"
    )
    group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$",
        description="pool of nodes sharing one repository (same bucket, prefix, password); "
        "snapshots are tagged group:<name>",
        examples=["sftp-prod"],
    )
    standby: Standby | None = Field(None, description="follow an active node (active-passive)")
    identity: IdentitySettings | None = Field(
        None, description="addresses the daemon's identity job proves (schedule.identity)"
    )
    node_local: list[str] = Field(
        default_factory=list,
        description="settings that differ per node on purpose, ignored by `fleet drift` "
        "(same syntax as standby.local)",
    )
    profile_options: dict[str, dict[str, JsonValue]] = Field(
        default_factory=dict,
        description="per-profile settings, signed into every manifest: sftpplus {install_dir, "
        "service_user, validate, validate_timeout_seconds}, generic {policy, <category>: "
        "[node path globs], users, key_owners, validate, smoke, timeout_seconds}",
        examples=[{"generic": {"config": ["/etc/myftpd/*.conf"], "validate": "myftpd -t"}}],
    )
    group_pruner: bool = Field(
        True,
        description="run restic's repository-wide prune after forget (in a group of nodes "
        "sharing a repository, exactly one node says true)",
    )

    @field_validator("includes")
    @classmethod
    def _known_categories(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for category in value:
            if category not in CATEGORIES:
                raise ValueError(
                    f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}"
                )
        return value

    @field_validator("trusted_keys")
    @classmethod
    def _fingerprints(cls, value: list[str]) -> list[str]:
        return [check_fingerprint(fingerprint) for fingerprint in value]

    @model_validator(mode="after")
    def _identity_has_addresses(self) -> Config:
        if self.schedule.identity is not None and self.identity is None:
            raise ValueError("schedule.identity needs the identity section (addresses, via)")
        return self


def find_config_path(explicit: Path | None) -> Path:
    """Return the config file: --config, $DRKIT_CONFIG, ./drkit.yaml, /etc/drkit/drkit.yaml."""
    if explicit:
        return explicit
    if os.environ.get("DRKIT_CONFIG"):
        return Path(os.environ["DRKIT_CONFIG"])
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    raise errors.ConfigError(
        "no configuration: pass --config, set DRKIT_CONFIG, or create ./drkit.yaml"
    )


def parse_config(text: str, source: str) -> Config:
    """Given YAML text and where it came from, return the validated Config; raise ConfigError."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise errors.ConfigError(f"{source}:{where} is not valid YAML") from None
    return validate_config(data, source)


def validate_config(data: object, source: str) -> Config:
    """Given parsed settings and where they came from, return the Config; raise ConfigError."""
    if not isinstance(data, dict):
        raise errors.ConfigError(f"{source}: expected a mapping of settings at the top level")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source) from None
    _check_profile_options(config, source)
    return config


def _check_profile_options(config: Config, source: str) -> None:
    """Validate each profile_options.<kind> by that profile's own options model, at load;
    raise ConfigError naming the file and the first bad setting."""
    for kind in config.profile_options:
        if kind not in SERVER_KINDS:
            raise errors.ConfigError(
                f"{source}: profile_options.{kind}: unknown profile; use one of "
                f"{', '.join(SERVER_KINDS)}"
            )
        try:
            config.options_of(kind)
        except errors.ConfigError as exc:
            raise errors.ConfigError(f"{source}: {exc.message}") from None


CONFIG_MAX_BYTES = 1 << 20


def read_config_text(path: Path) -> str:
    """Return a config file's text; raise ConfigError when it is missing, not a regular file
    (a FIFO is never opened for reading, so nothing hangs), too large, or not UTF-8."""
    from drkit.engines.keys import read_regular

    data = read_regular(path, "configuration file", CONFIG_MAX_BYTES)
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise errors.ConfigError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}): save it as UTF-8"
        ) from None


def trust_fingerprints(path: Path, fingerprints: list[str]) -> None:
    """Add fingerprints to the trusted_keys of the config file at path, unless it lists them
    already (the file is rewritten atomically, 0600)."""
    from drkit.engines import durable

    current = parse_config(read_config_text(path), str(path))
    trusted = list(dict.fromkeys([*current.trusted_keys, *fingerprints]))
    if trusted != current.trusted_keys:
        updated = current.model_copy(update={"trusted_keys": trusted})
        durable.write_atomic(path, dump_config(updated).encode(), 0o600, 0o700)


def _finish_rotation(config: Config, path: Path) -> Config:
    """Finish or undo a signing-key rotation a kill interrupted (engines.keys.finish_rotation);
    return the config as it is afterwards."""
    from drkit.engines import keys

    done = keys.finish_rotation(
        config.state_dir,
        config.signing_key,
        config.trusted_keys,
        lambda fingerprints: trust_fingerprints(path, fingerprints),
    )
    if keys.restic_rotation_journal(config.state_dir).exists():
        log.warning(
            "a key rotation was killed after the new repository password took over: the old "
            "one still opens the repository until `drkit keys rotate` runs again"
        )
    if done is None:
        return config
    log.warning("%s", done)
    return parse_config(read_config_text(path), str(path))


def load_config(explicit: Path | None = None) -> tuple[Config, Path]:
    """Find, read and validate the configuration; return it with the path it came from.
    A key rotation a kill interrupted is finished or undone first."""
    path = find_config_path(explicit)
    config = _finish_rotation(parse_config(read_config_text(path), str(path)), path)
    secret = config.notify.webhook.secret_file if config.notify.webhook else None
    if secret is not None and secret.exists() and secret.stat().st_mode & 0o077:
        raise errors.ConfigError(
            f"{path}: notify.webhook.secret_file: {secret} is readable by other users: chmod 600 it"
        )
    return config, path


def dump_config(config: Config) -> str:
    """Return the YAML text of config, as drkit init writes it."""
    data = config.model_dump(mode="json", exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False)
