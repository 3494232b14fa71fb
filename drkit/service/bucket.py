"""Preparing a node's bucket: created or adopted with versioning, default retention and the
lifecycle rule that frees pruned data once its lock has ended."""

from __future__ import annotations

import logging

from drkit.config import Config
from drkit.results import StorageInitResult

log = logging.getLogger(__name__)


def prepare(config: Config, create: bool = False) -> StorageInitResult:
    """Create or adopt the bucket with versioning and default retention; return what was done.
    A bucket that does not exist is created only with create (`--create`, or `drkit init`,
    whose --bucket names it): a misspelled name in drkit.yaml is never made into a bucket.

    JSON: {ok, bucket, endpoint, created, changes, versioning, object_lock, problems}; ok is
    false when the bucket does not end up versioned and locked as the config says.
    """
    repository = config.repository
    log.info(
        "initialising bucket %s at %s (object lock %s %d days)",
        repository.bucket,
        repository.s3_endpoint,
        repository.object_lock.mode,
        repository.object_lock.days,
    )
    from drkit.engines.storage import Storage  # boto3 only for commands that talk to S3

    storage = Storage(config.repository)
    done = storage.init_bucket(repository.object_lock, create)
    lifecycle_changes, lifecycle_problems = storage.ensure_lifecycle(noncurrent_days(config))
    changes = done.changes + lifecycle_changes
    problems = done.problems + lifecycle_problems
    checked = storage.verify(repository.object_lock)
    lifecycle = storage.lifecycle_rule()
    problems += [problem for problem in checked.problems if problem not in problems]
    for change in changes:
        log.info("bucket %s: %s", repository.bucket, change)
    if not changes:
        log.info("bucket %s already as configured", repository.bucket)
    for problem in problems:
        log.warning("bucket %s: %s", repository.bucket, problem)
    return StorageInitResult(
        ok=not problems,
        bucket=repository.bucket,
        endpoint=repository.s3_endpoint,
        created=done.created,
        changes=changes,
        versioning=checked.versioning,
        object_lock=checked.object_lock.model_dump(),
        lifecycle=lifecycle.model_dump() if lifecycle else None,
        problems=problems,
    )


def noncurrent_days(config: Config) -> int:
    """Return after how many days noncurrent versions expire: the lock period plus a margin."""
    from drkit.engines.posture import LIFECYCLE_MARGIN_DAYS

    return config.repository.object_lock.days + LIFECYCLE_MARGIN_DAYS
