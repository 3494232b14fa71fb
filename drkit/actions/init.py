"""drkit init: write drkit.yaml, the repository password, the signing key, bucket and repository.

Every step is idempotent: existing files are kept, an existing bucket or repository adopted.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

from drkit import errors
from drkit.actions import backup, context
from drkit.actions import storage as storage_action
from drkit.config import Config, dump_config, parse_config, validate_config
from drkit.engines import keys, manifest
from drkit.results import InitResult

log = logging.getLogger(__name__)


def ensure_password_file(path: Path) -> bool:
    """Create a password file of 32 random bytes (hex) unless one exists; True when created."""
    if path.exists():
        return False
    manifest.write_private(path, (secrets.token_hex(32) + "\n").encode())
    return True


def run(config_path: Path, settings: dict) -> InitResult:
    """Given the path to write and init's settings (drkit.yaml's shape), set the node up."""
    password_file = Path(settings["repository"]["password_file"])
    signing_key = Path(settings["signing_key"])
    try:
        password_created = ensure_password_file(password_file)
        fingerprint = keys.generate_signing_key(signing_key)
    except OSError as exc:
        raise errors.LocalFilesystemError(f"cannot write {exc.filename}: {exc.strerror}") from None
    previous: Config | None = None
    if config_path.exists():
        previous = parse_config(config_path.read_text(), str(config_path))
    trusted = list(dict.fromkeys([*(previous.trusted_keys if previous else []), fingerprint]))
    config = validate_config({**settings, "trusted_keys": trusted}, "drkit init's settings")
    text = dump_config(config)
    config_written = not config_path.exists() or config_path.read_text() != text
    if config_written:
        manifest.write_private(config_path, text.encode())
    bucket = storage_action.init(config)
    restic = context.restic_for(config.repository, config.restic)
    repository_created = restic.init()
    if repository_created:
        backup.record_chain(config, None, None)  # a new repository starts a new chain
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
    )
