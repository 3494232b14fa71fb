"""drkit init: write drkit.yaml, the repository password, the signing key, bucket and repository.

Every step is idempotent: existing files are kept, an existing bucket or repository adopted.
An existing drkit.yaml is never replaced: init with its settings changes nothing, with other
ones it refuses naming each difference, or applies only the named ones with --update
(drkit.service.settings).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from drkit import errors
from drkit.config import (
    dump_config,
    find_config_path,
    parse_config,
    read_config_text,
    validate_config,
)
from drkit.configtypes import AFTER_BACKUP
from drkit.engines import keys, manifest
from drkit.results import InitResult
from drkit.service import bucket as buckets
from drkit.service import chain, context, detection, status
from drkit.service import settings as node_settings

log = logging.getLogger(__name__)


def ensure_password_file(path: Path) -> bool:
    """Create a password file of 32 random bytes (hex) unless one exists; True when created."""
    if path.exists():
        return False
    manifest.write_private(path, (secrets.token_hex(32) + "\n").encode())
    return True


@dataclass
class InitOptions:
    """What `drkit init` was asked for, as parsed from its flags."""

    node: str
    s3_endpoint: str
    bucket: str
    password_file: Path
    prefix: str | None = None
    servers: list[str] = field(default_factory=lambda: ["openssh"])  # 'auto' allowed
    group: str | None = None
    root: Path = Path("/")
    region: str = "us-east-1"
    ca_bundle: Path | None = None
    smoke_user: str | None = None
    includes: list[str] = field(default_factory=list)  # CATEGORY=GLOB, repeatable
    profile_options: list[str] = field(default_factory=list)  # SERVER.KEY=VALUE, repeatable
    signing_key: Path | None = None  # default: signing.key beside the config
    state_dir: Path = Path("/var/lib/drkit")
    lock_days: int = 30
    lock_mode: str = "GOVERNANCE"
    config: Path | None = None  # --config; default: the usual lookup, else ./drkit.yaml
    update: bool = False  # --update: apply the named settings to an existing drkit.yaml
    named: set[str] | None = None  # options given on the command line (None: not defaults)

    def given(self) -> set[str]:
        """Return the options init was given: those named on the command line, else those
        that differ from their defaults (the four required ones always)."""
        required = {"node", "s3_endpoint", "bucket", "password_file"}
        if self.named is not None:
            return (self.named | required) & set(node_settings.OPTION_PATHS)
        blank = InitOptions(node="", s3_endpoint="", bucket="", password_file=Path())
        return required | {
            name
            for name in node_settings.OPTION_PATHS
            if getattr(self, name) != getattr(blank, name)
        }


def parse_includes(items: list[str]) -> dict[str, list[str]]:
    """Given --include values (CATEGORY=GLOB, repeatable, several per category), return
    {category: [glob, ...]} in the order given; raise UsageError on one without '='.
    Unknown categories are left to the config validator, which names them."""
    includes: dict[str, list[str]] = {}
    for item in items:
        category, _, pattern = item.partition("=")
        if not category or not pattern:
            raise errors.UsageError(f"--include {item!r} is not CATEGORY=GLOB")
        includes.setdefault(category, []).append(pattern)
    return includes


def parse_profile_options(items: list[str]) -> dict[str, dict[str, object]]:
    """Given --profile-option values (SERVER.KEY=VALUE, the value read as a YAML scalar),
    return {server: {key: value}}; raise UsageError on one not of that shape."""
    chosen: dict[str, dict[str, object]] = {}
    for item in items:
        name, _, text = item.partition("=")
        kind, _, key = name.partition(".")
        if not kind or not key or not text:
            raise errors.UsageError(f"--profile-option {item!r} is not SERVER.KEY=VALUE")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text
        chosen.setdefault(kind, {})[key] = text if isinstance(value, dict | list) else value
    return chosen


def config_path_for(explicit: Path | None) -> Path:
    """Return where init writes drkit.yaml: --config, else the usual lookup, else ./drkit.yaml."""
    try:
        return find_config_path(explicit)
    except errors.ConfigError:
        return Path("drkit.yaml")


def settings_for(options: InitOptions, config_path: Path) -> dict[str, object]:
    """Given init's options and the config path, return the settings (drkit.yaml's shape);
    raise ConfigError for a state_dir under a world-writable directory."""
    node_settings.check_state_dir(options.state_dir)
    root = options.root.resolve()
    signing_key = options.signing_key or config_path.parent / "signing.key"
    repository: dict[str, object] = {
        "s3_endpoint": options.s3_endpoint,
        "bucket": options.bucket,
        "prefix": options.prefix or options.node,
        "region": options.region,
        "password_file": str(options.password_file.resolve()),
        "object_lock": {"mode": options.lock_mode, "days": options.lock_days},
    }
    if options.ca_bundle:
        repository["ca_bundle"] = str(options.ca_bundle.resolve())
    servers = detection.resolve_servers(options.servers or ["openssh"], root)
    settings: dict[str, object] = {
        "node": options.node,
        "servers": servers,
        "root": str(root),
        "repository": repository,
        "includes": parse_includes(options.includes),
        "signing_key": str(signing_key.resolve()),
        "state_dir": str(options.state_dir),
        "schedule": {"prove": AFTER_BACKUP},  # the daemon drills every snapshot it makes
    }
    found = detection.detected_options(detection.detect(root))
    profile_options = {kind: found[kind] for kind in servers if kind in found}
    for kind, chosen in parse_profile_options(options.profile_options).items():
        profile_options[kind] = {**profile_options.get(kind, {}), **chosen}
    context.require_configs(root, servers, profile_options)
    if profile_options:
        settings["profile_options"] = profile_options
    if options.group:
        settings["group"] = options.group
    if options.smoke_user:
        settings["smoke_user"] = options.smoke_user
    return settings


def _setting(settings: dict[str, object], *path: str) -> str:
    """Return the text setting at path (keys into nested sections); raise ConfigError when it
    is missing or not text."""
    value: object = settings
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str):
        raise errors.ConfigError(f"{'.'.join(path)} is missing from drkit init's settings")
    return value


def init(options: InitOptions) -> InitResult:
    """Given init's options, write the config, password and signing key, and prepare the
    bucket and repository (see run)."""
    config_path = config_path_for(options.config)
    settings = settings_for(options, config_path)
    return run(config_path.resolve(), settings, options.given(), options.update)


def run(
    config_path: Path,
    settings: dict[str, object],
    named: set[str] | None = None,
    update: bool = False,
) -> InitResult:
    """Given the path to write, init's settings (drkit.yaml's shape), the options named on
    the command line (None: all) and --update, set the node up."""
    existing = read_config_text(config_path) if os.path.lexists(config_path) else None
    previous = parse_config(existing, str(config_path)) if existing is not None else None
    changes: list[str] = []
    if existing is not None:
        settings, changes = node_settings.differences(
            yaml.safe_load(existing) or {}, settings, set(node_settings.OPTION_PATHS)
            if named is None else named,
        )  # fmt: skip
        if changes and not update:
            raise node_settings.refuse(config_path, changes)
    password_file = Path(_setting(settings, "repository", "password_file"))
    signing_key = Path(_setting(settings, "signing_key"))
    if previous is not None and not os.path.lexists(signing_key):
        raise keys.missing_signing_key(signing_key)  # a new one would orphan the snapshots
    try:
        password_created = ensure_password_file(password_file)
        fingerprint = keys.generate_signing_key(signing_key)
    except OSError as exc:
        raise errors.LocalFilesystemError(f"cannot write {exc.filename}: {exc.strerror}") from None
    trusted = list(dict.fromkeys([*(previous.trusted_keys if previous else []), fingerprint]))
    config = validate_config({**settings, "trusted_keys": trusted}, "drkit init's settings")
    text = dump_config(config)
    config_written = previous is None or bool(changes) or fingerprint not in previous.trusted_keys
    if config_written:
        manifest.write_private(config_path, text.encode())
    bucket = buckets.prepare(config, create=True)  # --bucket named it
    restic = context.restic_for(config.repository, config.restic)
    repository_created = restic.init()
    if repository_created:
        chain.record_chain(config, None, None)  # a new repository starts a new chain
    status.register(config)
    return InitResult(
        config=str(config_path),
        config_written=config_written,
        node=config.node,
        password_file=str(password_file),
        password_created=password_created,
        signing_key=str(signing_key),
        signer=fingerprint,
        bucket=bucket,
        repository=config.repository.restic_url,
        repository_created=repository_created,
        changes=changes,
    )
