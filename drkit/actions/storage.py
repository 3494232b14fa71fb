"""drkit storage init / verify: create the bucket locked and versioned, and check it stays so."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from drkit.config import Config
from drkit.results import CopyBucket, StorageInitResult, StorageVerifyResult
from drkit.service import bucket

if TYPE_CHECKING:
    from drkit.engines.storage import Storage

log = logging.getLogger(__name__)


def _storage(config: Config) -> Storage:
    from drkit.engines.storage import Storage  # boto3 only for commands that talk to S3

    return Storage(config.repository)


def init(config: Config, create: bool = False) -> StorageInitResult:
    """Create or adopt the bucket with versioning and default retention; return what was done.
    A bucket that does not exist is created only with create (`--create`, or `drkit init`,
    whose --bucket names it): a misspelled name in drkit.yaml is never made into a bucket.

    JSON: {ok, bucket, endpoint, created, changes, versioning, object_lock, problems}; ok is
    false when the bucket does not end up versioned and locked as the config says.
    """
    prepared = bucket.prepare(config, create)
    copies = [
        CopyBucket(**init(config.from_copy(copy.name), create).model_dump(exclude={"copies"}))
        for copy in config.repository.copies
    ]
    ok = prepared.ok and all(copy.ok for copy in copies)
    return prepared.model_copy(update={"ok": ok, "copies": copies})


def verify(config: Config) -> StorageVerifyResult:
    """Check the bucket's versioning and object lock against the config.

    JSON: {ok, bucket, endpoint, versioning, object_lock, problems}. A missing bucket, an
    unreachable endpoint or refused credentials raise (exit 4 or 5) instead.
    """
    repository = config.repository
    log.info("verifying bucket %s at %s", repository.bucket, repository.s3_endpoint)
    storage = _storage(config)
    storage.probe()
    checked = storage.verify(repository.object_lock)
    lifecycle = storage.lifecycle_rule()
    wanted = bucket.noncurrent_days(config)
    if lifecycle is None or lifecycle.status != "Enabled":
        checked.problems.append(
            "no lifecycle rule expires noncurrent versions: pruned data is never freed "
            "(drkit storage init adds it)"
        )
    elif (lifecycle.noncurrent_days or 0) < repository.object_lock.days:
        checked.problems.append(
            f"noncurrent versions expire after {lifecycle.noncurrent_days} days, before "
            f"the {repository.object_lock.days}-day lock ends (drkit storage init sets {wanted})"
        )
    checked.ok = not checked.problems
    for problem in checked.problems:
        log.warning("bucket %s: %s", repository.bucket, problem)
    copies = [
        CopyBucket(**verify(config.from_copy(copy.name)).model_dump(exclude={"copies"}))
        for copy in repository.copies
    ]
    return StorageVerifyResult(
        ok=checked.ok and all(copy.ok for copy in copies),
        copies=copies,
        bucket=repository.bucket,
        endpoint=repository.s3_endpoint,
        versioning=checked.versioning,
        object_lock=checked.object_lock.model_dump(),
        lifecycle=lifecycle.model_dump() if lifecycle else None,
        problems=checked.problems,
    )
