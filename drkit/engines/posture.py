"""A bucket's posture: versioning, object lock with default retention, and the lifecycle
rule that frees what restic deletes once no lock holds it; prepared by `storage init`,
checked by `storage verify` and before drkit writes anything."""

from __future__ import annotations

import logging
import time
from typing import Any

from pydantic import BaseModel, SerializerFunctionWrapHandler, model_serializer

from drkit import errors
from drkit.config import ObjectLock
from drkit.engines.s3 import UNSUPPORTED_CODES, Bucket

log = logging.getLogger(__name__)

LIFECYCLE_RULE_ID = "drkit-noncurrent-versions"
LIFECYCLE_MARGIN_DAYS = 7  # past the lock period, so no locked version is ever a candidate
_LOCK_MISSING_CODES = ("ObjectLockConfigurationNotFoundError", *UNSUPPORTED_CODES)
_LIFECYCLE_MISSING_CODES = ("NoSuchLifecycleConfiguration", "404", *UNSUPPORTED_CODES)

# Buckets whose posture (exists, versioning, object lock) this process has seen pass, and when.
POSTURE_TTL_SECONDS = 300
_POSTURE_PASSED: dict[tuple[str, str], float] = {}


class ObjectLockState(BaseModel):
    """A bucket's object lock and default retention (years only when it is set in years)."""

    enabled: bool = False
    mode: str | None = None
    days: int | None = None
    years: int | None = None

    @model_serializer(mode="wrap")
    def _years_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data: dict[str, object] = handler(self)
        if self.years is None:
            data.pop("years", None)
        return data


class Posture(BaseModel):
    """Whether the bucket exists, its versioning (Enabled, Suspended or Off) and object lock."""

    bucket: str
    exists: bool
    versioning: str
    object_lock: ObjectLockState


class LifecycleRule(BaseModel):
    """drkit's lifecycle rule on a bucket: noncurrent versions expire after noncurrent_days."""

    id: str = LIFECYCLE_RULE_ID
    noncurrent_days: int | None
    status: str


class BucketCheck(BaseModel):
    """The bucket compared with the config: what differs, in problems."""

    ok: bool
    bucket: str
    versioning: str
    object_lock: ObjectLockState
    problems: list[str]


class BucketInit(BaseModel):
    """What preparing the bucket did (changes) and could not do (problems)."""

    bucket: str
    created: bool
    changes: list[str]
    problems: list[str]
    versioning: str
    object_lock: ObjectLockState


class PostureChecks(Bucket):
    """The bucket's posture read, prepared and compared with the config."""

    def versioning(self) -> str:
        """Return the bucket's versioning status: Enabled, Suspended or Off."""
        response = self._call(
            "get_bucket_versioning", tolerate=UNSUPPORTED_CODES, Bucket=self.bucket
        )
        return (response or {}).get("Status") or "Off"

    def object_lock(self) -> ObjectLockState:
        """Return the bucket's object lock and default retention."""
        response = self._call(
            "get_object_lock_configuration", tolerate=_LOCK_MISSING_CODES, Bucket=self.bucket
        )
        configuration = (response or {}).get("ObjectLockConfiguration", {})
        retention = configuration.get("Rule", {}).get("DefaultRetention", {})
        return ObjectLockState(
            enabled=configuration.get("ObjectLockEnabled") == "Enabled",
            mode=retention.get("Mode"),
            days=retention.get("Days"),
            years=retention.get("Years"),
        )

    def posture(self) -> Posture:
        """Return whether the bucket exists, its versioning and its object lock."""
        if not self.bucket_exists():
            return Posture(
                bucket=self.bucket, exists=False, versioning="Off", object_lock=ObjectLockState()
            )
        return Posture(
            bucket=self.bucket,
            exists=True,
            versioning=self.versioning(),
            object_lock=self.object_lock(),
        )

    def init_bucket(self, object_lock: ObjectLock, create: bool = True) -> BucketInit:
        """Create (or adopt) the bucket with versioning and default object-lock retention;
        a missing bucket is created only when create (else StorageError naming it).

        Idempotent. Return what was done, and what could not be done (an existing bucket
        without object lock that refuses to get it is reported, not raised).
        """
        changes: list[str] = []
        problems: list[str] = []
        created = False
        if not self.bucket_exists():
            if not create:
                raise self.missing_bucket(
                    "; if the name is right, `drkit storage init --create` makes it"
                )
            params: dict[str, Any] = {"Bucket": self.bucket, "ObjectLockEnabledForBucket": True}
            if self.region != "us-east-1":
                params["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            created = (
                self._call("create_bucket", tolerate=("BucketAlreadyOwnedByYou",), **params)
                is not None
            )
            if created:
                changes.append(f"created bucket {self.bucket} with object lock enabled")
                log.info("created bucket %s at %s with object lock", self.bucket, self.endpoint)

        if self.versioning() != "Enabled":
            done = self._call(
                "put_bucket_versioning",
                tolerate=("InvalidBucketState", *UNSUPPORTED_CODES),
                Bucket=self.bucket,
                VersioningConfiguration={"Status": "Enabled"},
            )
            if done is None:
                problems.append(f"the server refused to enable versioning on bucket {self.bucket}")
            else:
                changes.append("enabled versioning")
                log.info("enabled versioning on bucket %s", self.bucket)

        wanted = ObjectLockState(enabled=True, mode=object_lock.mode, days=object_lock.days)
        current = self.object_lock()
        if current != wanted:
            done = self._call(
                "put_object_lock_configuration",
                tolerate=("InvalidBucketState", "InvalidRequest", *_LOCK_MISSING_CODES),
                Bucket=self.bucket,
                ObjectLockConfiguration={
                    "ObjectLockEnabled": "Enabled",
                    "Rule": {
                        "DefaultRetention": {"Mode": object_lock.mode, "Days": object_lock.days}
                    },
                },
            )
            if done is None:
                problems.append(
                    f"bucket {self.bucket} was created without object lock and the server "
                    "refuses to enable it: use a new bucket name so drkit can create it locked"
                )
            else:
                what = "set" if current.enabled else "enabled object lock with"
                changes.append(
                    f"{what} default retention {object_lock.mode} {object_lock.days} days"
                )
                log.info(
                    "bucket %s: default retention %s %d days",
                    self.bucket,
                    object_lock.mode,
                    object_lock.days,
                )

        posture = self.posture()
        return BucketInit(
            bucket=self.bucket,
            created=created,
            changes=changes,
            problems=problems,
            versioning=posture.versioning,
            object_lock=posture.object_lock,
        )

    def verify(self, expected_object_lock: ObjectLock) -> BucketCheck:
        """Compare the bucket's versioning and object lock with the config.

        A missing bucket is not a finding but a StorageError (exit 4).
        """
        posture = self.posture()
        if not posture.exists:
            raise self.missing_bucket()
        problems: list[str] = []
        versioning = posture.versioning
        if versioning != "Enabled":
            problems.append(
                f"versioning is {versioning}, not Enabled: overwritten or deleted objects "
                "cannot be recovered"
            )
        lock = posture.object_lock
        expected = f"{expected_object_lock.mode} {expected_object_lock.days} days"
        if not lock.enabled:
            problems.append(
                f"object lock is not enabled on bucket {self.bucket}: backups can be deleted "
                "with the bucket's credentials"
            )
        elif lock.mode is None:
            problems.append(f"object lock has no default retention; the config says {expected}")
        else:
            if lock.mode != expected_object_lock.mode:
                problems.append(
                    f"default retention mode is {lock.mode}, the config says "
                    f"{expected_object_lock.mode}"
                )
            if lock.days != expected_object_lock.days:
                actual = f"{lock.days} days" if lock.days is not None else f"{lock.years} years"
                problems.append(
                    f"default retention is {actual}, the config says {expected_object_lock.days}"
                )
        return BucketCheck(
            ok=not problems,
            bucket=self.bucket,
            versioning=versioning,
            object_lock=lock,
            problems=problems,
        )

    # -- lifecycle: what restic deletes on a versioned, locked bucket ---------------------

    def _lifecycle_rules(self) -> list[dict[str, Any]]:
        response = self._call(
            "get_bucket_lifecycle_configuration",
            tolerate=_LIFECYCLE_MISSING_CODES,
            Bucket=self.bucket,
        )
        rules: list[dict[str, Any]] = (response or {}).get("Rules", [])
        return rules

    def lifecycle_rule(self) -> LifecycleRule | None:
        """Return drkit's lifecycle rule of the bucket, or None when the bucket has none (or
        the server has no lifecycle support)."""
        for rule in self._lifecycle_rules():
            if rule.get("ID") == LIFECYCLE_RULE_ID:
                days = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
                return LifecycleRule(noncurrent_days=days, status=rule["Status"])
        return None

    def ensure_lifecycle(self, noncurrent_days: int) -> tuple[list[str], list[str]]:
        """Make noncurrent versions (what restic's deletes leave behind a delete marker) expire
        after noncurrent_days, and expired delete markers go; keep the bucket's other rules.

        Return (changes, problems).
        """
        current = self.lifecycle_rule()
        if current and current.noncurrent_days == noncurrent_days and current.status == "Enabled":
            return [], []
        rules = [rule for rule in self._lifecycle_rules() if rule.get("ID") != LIFECYCLE_RULE_ID]
        rules.append(
            {
                "ID": LIFECYCLE_RULE_ID,
                "Status": "Enabled",
                "Filter": {"Prefix": ""},
                "NoncurrentVersionExpiration": {"NoncurrentDays": noncurrent_days},
                "Expiration": {"ExpiredObjectDeleteMarker": True},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
            }
        )
        done = self._call(
            "put_bucket_lifecycle_configuration",
            tolerate=("InvalidRequest", "MalformedXML", *UNSUPPORTED_CODES),
            Bucket=self.bucket,
            LifecycleConfiguration={"Rules": rules},
        )
        if done is None:
            return [], [
                f"the server refused a lifecycle rule on bucket {self.bucket}: deleted and "
                "pruned data stays stored as noncurrent versions until removed by hand"
            ]
        log.info(
            "bucket %s: noncurrent versions expire after %d days", self.bucket, noncurrent_days
        )
        return [f"noncurrent versions expire after {noncurrent_days} days (lifecycle rule)"], []

    def require_posture(self) -> None:
        """Raise StorageError unless this process has seen, within POSTURE_TTL_SECONDS, that
        the bucket exists with versioning and object lock on (3 requests, then cached): a
        misspelled bucket is never created by a write, nor written to unprotected."""
        key = (self.endpoint, self.bucket)
        seen = _POSTURE_PASSED.get(key)
        if seen is not None and time.monotonic() - seen < POSTURE_TTL_SECONDS:
            return
        found = self.posture()
        if not found.exists:
            raise self.missing_bucket("; nothing written to it")
        if found.versioning != "Enabled":
            reason = f"has versioning {found.versioning}"
        elif not found.object_lock.enabled:
            reason = "has no object lock"
        else:
            _POSTURE_PASSED[key] = time.monotonic()
            return
        raise errors.StorageError(
            f"bucket {self.bucket} {reason}: nothing written to it; check repository.bucket, "
            "or prepare it with `drkit storage init`"
        )
