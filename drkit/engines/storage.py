"""The S3 bucket through boto3: reachability, posture (versioning, object lock), JSON objects.

Every boto3 call goes through `Storage._call`, which turns botocore's exceptions into one-line
drkit errors: StorageError (exit 4) for an unreachable endpoint, a TLS failure or a missing
bucket; AuthenticationError (exit 5) for refused or missing credentials. Messages never carry
secrets. Only commands that talk to S3 import this module (boto3 costs ~165 ms to import).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config as BotoConfig

from drkit import errors, units
from drkit.config import ObjectLock, Repository
from drkit.engines import catalog

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 15
MAX_ATTEMPTS = 3  # 3 x (5 s connect or 15 s read) + backoff stays under the 60 s budget
PROBE_CONNECT_SECONDS = 3  # the outage probe: one request, no retries; a HEAD that takes
PROBE_READ_SECONDS = 10  # longer than this on a busy S3 is as good as an outage
PROBE_FRESH_SECONDS = 1.0  # callers within this of the last probe share its answer

_AUTH_CODES = {
    "InvalidAccessKeyId": "the access key ID is not known to the server",
    "SignatureDoesNotMatch": "the secret key does not match the access key ID",
    "AccessDenied": "access denied",
    "403": "access denied (403 Forbidden)",
    "Forbidden": "access denied (403 Forbidden)",
    "InvalidToken": "the session token is invalid",
    "ExpiredToken": "the session token has expired",
    "TokenRefreshRequired": "the session token has expired",
    "RequestTimeTooSkewed": "the clock of this machine differs too much from the server's",
}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "301"}
_MISSING_BUCKET_CODES = {"NoSuchBucket"}
_UNSUPPORTED_CODES = ("NotImplemented", "MethodNotAllowed", "XNotImplemented")
_LOCK_MISSING_CODES = ("ObjectLockConfigurationNotFoundError", *_UNSUPPORTED_CODES)
LIFECYCLE_RULE_ID = "drkit-noncurrent-versions"
LIFECYCLE_MARGIN_DAYS = 7  # past the lock period, so no locked version is ever a candidate
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\]\s*([^\)\"'\]]+)")
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
_clients: dict[tuple, Any] = {}
_sessions: dict[tuple, Any] = {}
_clients_lock = threading.Lock()
_MALFORMED_SAID: set[tuple[str, str]] = set()


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_code(exc: boto_errors.ClientError) -> tuple[str, int]:
    error = exc.response.get("Error", {}) or {}
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0
    return str(error.get("Code", status or "")), int(status)


def _network_reason(exc: Exception) -> str:
    """Return the part of a connection error that names the cause: 'Connection refused'..."""
    if isinstance(exc, boto_errors.ConnectTimeoutError):
        return "connection timed out"
    if isinstance(exc, boto_errors.ReadTimeoutError):
        return "no answer (read timed out)"
    if isinstance(exc, boto_errors.ConnectionClosedError):
        return "connection closed by the server"
    inner = getattr(exc, "kwargs", {}).get("error")
    match = _ERRNO_TEXT.search(str(inner or exc))
    if match:
        return match.group(1).strip().rstrip(".").lower()
    return _one_line(str(inner or exc), 120)


def _client(endpoint: str, region: str, ca_bundle: Path | None, *, quick: bool = False):
    """Return this process's S3 client for the endpoint and the environment's credentials.

    Clients are thread-safe and slow to make (botocore parses its service model each time), so
    one is kept per endpoint and credential environment; changed credentials get a new one.
    quick: the outage probe's client, with short timeouts and no retries.
    """
    credentials = tuple(os.environ.get(name) for name in _CREDENTIAL_VARIABLES)
    key = (endpoint, region, ca_bundle, quick, *credentials)
    with _clients_lock:
        if key not in _clients:
            # one session per credential environment: its second client costs ~10 ms, not ~140
            if credentials not in _sessions:
                _sessions[credentials] = boto3.session.Session()
            _clients[key] = _sessions[credentials].client(
                "s3",
                endpoint_url=endpoint,
                region_name=region,
                verify=str(ca_bundle) if ca_bundle else True,
                config=BotoConfig(
                    connect_timeout=PROBE_CONNECT_SECONDS if quick else CONNECT_TIMEOUT_SECONDS,
                    read_timeout=PROBE_READ_SECONDS if quick else READ_TIMEOUT_SECONDS,
                    retries={"total_max_attempts": 1, "mode": "standard"}
                    if quick
                    else {"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
                    s3={"addressing_style": "path"},
                ),
            )
        return _clients[key]


# Buckets whose posture (exists, versioning, object lock) this process has seen pass, and when.
POSTURE_TTL_SECONDS = 300
_POSTURE_PASSED: dict[tuple[str, str], float] = {}


class Storage:
    """The repository's S3 bucket, reached with the credentials of the environment.

    Credentials come from boto3's usual chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
    AWS_PROFILE, shared files, instance roles); the endpoint, region and CA bundle from the
    repository section of the config.
    """

    def __init__(self, repository: Repository, *, quick: bool = False):
        self.repository = repository
        self.bucket = repository.bucket
        self.endpoint = repository.s3_endpoint
        self.region = repository.region
        self.ca_bundle = repository.ca_bundle
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise errors.ConfigError(
                f"repository.ca_bundle: {self.ca_bundle} does not exist or is not a file"
            )
        self.quick = quick
        self.client = _client(self.endpoint, self.region, self.ca_bundle, quick=quick)
        self.malformed: list[str] = []  # objects read that were ignored (see _malformed)

    # -- the one door to boto3 -----------------------------------------------------------

    def _call(self, method: str, *, tolerate: Iterable[str] = (), **params: Any) -> dict | None:
        """Call client.<method>(**params) and return its response.

        Return None when S3 answers with an error code listed in `tolerate`; turn every other
        failure into a StorageError or AuthenticationError of one line.
        """
        try:
            response = getattr(self.client, method)(**params)
        except boto_errors.ClientError as exc:
            code, _status = _error_code(exc)
            if code in set(tolerate):
                log.debug("s3 %s on %s: tolerated %s", method, self.bucket, code)
                return None
            raise self._translate(exc, method) from None
        except boto_errors.BotoCoreError as exc:
            raise self._translate(exc, method) from None
        response.pop("ResponseMetadata", None)
        return response

    def _pages(self, method: str, **params: Any) -> Iterator[dict]:
        """Yield each page of a listing through boto3's paginator for client.<method>; turn a
        failure into a StorageError or AuthenticationError of one line, as _call does."""
        try:
            yield from self.client.get_paginator(method).paginate(**params)
        except (boto_errors.ClientError, boto_errors.BotoCoreError) as exc:
            raise self._translate(exc, method) from None

    def _translate(self, exc: Exception, method: str) -> errors.DrkitError:
        """Return the drkit error that says in one line why `method` failed."""
        where = f"S3 endpoint {self.endpoint}"
        if isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError):
            return errors.AuthenticationError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE)"
            )
        if isinstance(exc, boto_errors.SSLError):
            reason = self._tls_reason(exc)
            if self.ca_bundle:
                hint = f"does the CA bundle {self.ca_bundle} (repository.ca_bundle) sign it?"
            else:
                hint = "set repository.ca_bundle to the PEM file of the CA that signs it"
            return errors.StorageError(f"TLS verification of {where} failed ({reason}): {hint}")
        if isinstance(exc, boto_errors.ConnectionError | boto_errors.HTTPClientError):
            return errors.StorageError(f"{where} unreachable: {_network_reason(exc)}")
        if isinstance(exc, boto_errors.ClientError):
            code, status = _error_code(exc)
            operation = getattr(exc, "operation_name", method)
            if code in _MISSING_BUCKET_CODES or (
                status == 404 and method in ("head_bucket", "create_bucket")
            ):
                return self.missing_bucket()
            if code in _REGION_CODES or status == 301:
                return errors.StorageError(
                    f"bucket {self.bucket} is not in region {self.region}: "
                    "set repository.region to the bucket's region"
                )
            if code in _AUTH_CODES or status == 403:
                why = _AUTH_CODES.get(code, f"{code} ({status})")
                return errors.AuthenticationError(
                    f"S3 refused the credentials for bucket {self.bucket} at {self.endpoint} "
                    f"on {operation}: {why}; check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                    "(or AWS_PROFILE) and the key's permissions"
                )
            message = _one_line(exc.response.get("Error", {}).get("Message", ""))
            return errors.StorageError(
                f"S3 {operation} on bucket {self.bucket} at {self.endpoint} failed: "
                f"{code} {message}".rstrip()
            )
        return errors.StorageError(f"S3 {method} at {self.endpoint} failed: {_one_line(str(exc))}")

    @staticmethod
    def _tls_reason(exc: Exception) -> str:
        text = str(getattr(exc, "kwargs", {}).get("error") or exc)
        match = re.search(r"certificate verify failed:\s*([^\(\)\"'\]]+)", text)
        if match:
            return "certificate verify failed: " + match.group(1).strip()
        match = re.search(r"\[SSL[^\]]*\]\s*([^\(\)\"'\]]+)", text)
        return _one_line(match.group(1) if match else text, 120)

    # -- reachability and posture --------------------------------------------------------

    def probe(self) -> None:
        """Check that the endpoint answers, the credentials are accepted and the bucket exists.

        Raise StorageError or AuthenticationError with one clear line otherwise. One request
        with the outage probe's short timeouts and no retries: a hung S3 is named in seconds.
        """
        quick = self if self.quick else Storage(self.repository, quick=True)
        try:
            quick._call("head_bucket", Bucket=self.bucket)
        except errors.AuthenticationError as refused:
            # HEAD answers carry no error code; a GET says which of key, secret or policy failed
            if "403 Forbidden" not in refused.message:
                raise
            quick._call("get_bucket_versioning", Bucket=self.bucket)
            raise
        log.debug("s3 bucket %s at %s answers", self.bucket, self.endpoint)

    def has_repository(self) -> bool:
        """Return True when the restic repository's config object is there (one HEAD)."""
        key = f"{self.repository.prefix}/config"
        found = self._call(
            "head_object", tolerate=("404", "NoSuchKey"), Bucket=self.bucket, Key=key
        )
        return found is not None

    def repository_answers(self) -> None:
        """Check that the restic repository's config object is there (one HEAD request).

        Raise StorageError or AuthenticationError with one clear line otherwise.
        """
        if self.has_repository():
            return
        if not self.bucket_exists():
            raise self.missing_bucket()
        raise errors.StorageError(
            f"no restic repository at {self.repository.restic_url}: bucket {self.bucket} has "
            f"no restic config object under prefix {self.repository.prefix!r}; check "
            "repository.prefix in drkit.yaml"
        )

    def visible_buckets(self) -> list[str] | None:
        """Return the buckets these credentials may list; None when they may not (or S3 does
        not say)."""
        try:
            answer = self._call("list_buckets")
        except errors.DrkitError:
            return None
        return sorted(bucket["Name"] for bucket in (answer or {}).get("Buckets") or [])

    def missing_bucket(self, hint: str = "") -> errors.StorageError:
        """Return the error of a bucket that is not there: where drkit looked, what to check,
        and the buckets the credentials can see (a missing bucket is a wrong name as often as
        anything else; never called gone)."""
        seen = self.visible_buckets()
        if seen is None:
            listing = "these credentials may not list buckets"
        else:
            listing = f"buckets these credentials see: {', '.join(seen) or 'none'}"
        return errors.StorageError(
            f"bucket {self.bucket} does not exist at {self.endpoint} (repository prefix "
            f"{self.repository.prefix}): check repository.bucket in drkit.yaml; {listing}{hint}"
        )

    def bucket_exists(self) -> bool:
        """Return True when the bucket exists (and the credentials may see it)."""
        return (
            self._call("head_bucket", tolerate=("404", "NoSuchBucket"), Bucket=self.bucket)
            is not None
        )

    def versioning(self) -> str:
        """Return the bucket's versioning status: Enabled, Suspended or Off."""
        response = self._call(
            "get_bucket_versioning", tolerate=_UNSUPPORTED_CODES, Bucket=self.bucket
        )
        return (response or {}).get("Status") or "Off"

    def object_lock(self) -> dict[str, Any]:
        """Return {enabled, mode, days} of the bucket's object lock and default retention."""
        response = self._call(
            "get_object_lock_configuration", tolerate=_LOCK_MISSING_CODES, Bucket=self.bucket
        )
        configuration = (response or {}).get("ObjectLockConfiguration", {})
        retention = configuration.get("Rule", {}).get("DefaultRetention", {})
        lock: dict[str, Any] = {
            "enabled": configuration.get("ObjectLockEnabled") == "Enabled",
            "mode": retention.get("Mode"),
            "days": retention.get("Days"),
        }
        if retention.get("Years") is not None:
            lock["years"] = retention["Years"]
        return lock

    def posture(self) -> dict[str, Any]:
        """Return {bucket, exists, versioning, object_lock: {enabled, mode, days}}."""
        if not self.bucket_exists():
            return {
                "bucket": self.bucket,
                "exists": False,
                "versioning": "Off",
                "object_lock": {"enabled": False, "mode": None, "days": None},
            }
        return {
            "bucket": self.bucket,
            "exists": True,
            "versioning": self.versioning(),
            "object_lock": self.object_lock(),
        }

    def init_bucket(self, object_lock: ObjectLock, create: bool = True) -> dict[str, Any]:
        """Create (or adopt) the bucket with versioning and default object-lock retention;
        a missing bucket is created only when create (else StorageError naming it).

        Idempotent. Return {bucket, created, changes: [...], problems: [...], versioning,
        object_lock}: what was done, and what could not be done (an existing bucket without
        object lock that refuses to get it is reported, not raised).
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
                tolerate=("InvalidBucketState", *_UNSUPPORTED_CODES),
                Bucket=self.bucket,
                VersioningConfiguration={"Status": "Enabled"},
            )
            if done is None:
                problems.append(f"the server refused to enable versioning on bucket {self.bucket}")
            else:
                changes.append("enabled versioning")
                log.info("enabled versioning on bucket %s", self.bucket)

        wanted = {"enabled": True, "mode": object_lock.mode, "days": object_lock.days}
        current = self.object_lock()
        if {key: current.get(key) for key in wanted} != wanted or "years" in current:
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
                what = "set" if current["enabled"] else "enabled object lock with"
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
        return {
            "bucket": self.bucket,
            "created": created,
            "changes": changes,
            "problems": problems,
            "versioning": posture["versioning"],
            "object_lock": posture["object_lock"],
        }

    def verify(self, expected_object_lock: ObjectLock) -> dict[str, Any]:
        """Compare the bucket with the config: {ok, bucket, versioning, object_lock, problems}.

        A missing bucket is not a finding but a StorageError (exit 4).
        """
        posture = self.posture()
        if not posture["exists"]:
            raise self.missing_bucket()
        problems: list[str] = []
        versioning = posture["versioning"]
        if versioning != "Enabled":
            problems.append(
                f"versioning is {versioning}, not Enabled: overwritten or deleted objects "
                "cannot be recovered"
            )
        lock = posture["object_lock"]
        expected = f"{expected_object_lock.mode} {expected_object_lock.days} days"
        if not lock["enabled"]:
            problems.append(
                f"object lock is not enabled on bucket {self.bucket}: backups can be deleted "
                "with the bucket's credentials"
            )
        elif lock["mode"] is None:
            problems.append(f"object lock has no default retention; the config says {expected}")
        else:
            if lock["mode"] != expected_object_lock.mode:
                problems.append(
                    f"default retention mode is {lock['mode']}, the config says "
                    f"{expected_object_lock.mode}"
                )
            if lock["days"] != expected_object_lock.days:
                actual = (
                    f"{lock['days']} days"
                    if lock["days"] is not None
                    else f"{lock.get('years')} years"
                )
                problems.append(
                    f"default retention is {actual}, the config says {expected_object_lock.days}"
                )
        return {
            "ok": not problems,
            "bucket": self.bucket,
            "versioning": versioning,
            "object_lock": lock,
            "problems": problems,
        }

    # -- lifecycle: what restic deletes on a versioned, locked bucket ---------------------

    def lifecycle_rule(self) -> dict[str, Any] | None:
        """Return drkit's lifecycle rule of the bucket ({id, noncurrent_days, status}), or None
        when the bucket has none (or the server has no lifecycle support)."""
        response = self._call(
            "get_bucket_lifecycle_configuration",
            tolerate=("NoSuchLifecycleConfiguration", "404", *_UNSUPPORTED_CODES),
            Bucket=self.bucket,
        )
        for rule in (response or {}).get("Rules", []):
            if rule.get("ID") == LIFECYCLE_RULE_ID:
                days = (rule.get("NoncurrentVersionExpiration") or {}).get("NoncurrentDays")
                return {"id": LIFECYCLE_RULE_ID, "noncurrent_days": days, "status": rule["Status"]}
        return None

    def ensure_lifecycle(self, noncurrent_days: int) -> tuple[list[str], list[str]]:
        """Make noncurrent versions (what restic's deletes leave behind a delete marker) expire
        after noncurrent_days, and expired delete markers go; keep the bucket's other rules.

        Return (changes, problems).
        """
        current = self.lifecycle_rule()
        if (
            current
            and current["noncurrent_days"] == noncurrent_days
            and (current["status"] == "Enabled")
        ):
            return [], []
        response = self._call(
            "get_bucket_lifecycle_configuration",
            tolerate=("NoSuchLifecycleConfiguration", "404", *_UNSUPPORTED_CODES),
            Bucket=self.bucket,
        )
        rules = [
            rule
            for rule in (response or {}).get("Rules", [])
            if rule.get("ID") != LIFECYCLE_RULE_ID
        ]
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
            tolerate=("InvalidRequest", "MalformedXML", *_UNSUPPORTED_CODES),
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

    # -- drkit's own objects at the bucket root ------------------------------------------

    def _check_key(self, key: str) -> str:
        prefix = self.repository.prefix.strip("/")
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise errors.UsageError(f"invalid object key {key!r}")
        if key == prefix or key.startswith(prefix + "/"):
            raise errors.UsageError(
                f"object key {key!r} is inside the restic repository {prefix}/: drkit's own "
                "objects live beside it"
            )
        return key

    def put_json(self, key: str, obj: Any) -> str | None:
        """Store obj as JSON at key (e.g. status/<node>.json); return the new version id."""
        body = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        return self.put_bytes(key, body, "application/json")

    def get_json(self, key: str) -> Any | None:
        """Return the JSON document at key, or None when there is none or it is malformed
        (see get_bytes)."""
        body = self.get_bytes(key)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return self._malformed(key, None, "not valid JSON")

    def _malformed(self, key: str, version_id: str | None, problem: str) -> None:
        """Count a malformed object as absent: say so in one warning line and remember it for
        `drkit verify` (self.malformed). An old version of it is only logged."""
        line = (
            f"s3://{self.bucket}/{key}: {problem}: not drkit's (malformed, or planted by "
            "someone with write access to the bucket), ignored as if absent"
        )
        if version_id is not None:
            log.info("%s (version %s)", line, version_id)
            return None
        self.malformed.append(line)
        with _clients_lock:
            said = (self.bucket, key) in _MALFORMED_SAID
            _MALFORMED_SAID.add((self.bucket, key))
        if not said:  # once per command, however many readers meet it
            log.warning("%s", line)
        return None

    def require_posture(self) -> None:
        """Raise StorageError unless this process has seen, within POSTURE_TTL_SECONDS, that
        the bucket exists with versioning and object lock on (3 requests, then cached): a
        misspelled bucket is never created by a write, nor written to unprotected."""
        key = (self.endpoint, self.bucket)
        seen = _POSTURE_PASSED.get(key)
        if seen is not None and time.monotonic() - seen < POSTURE_TTL_SECONDS:
            return
        found = self.posture()
        if not found["exists"]:
            raise self.missing_bucket("; nothing written to it")
        if found["versioning"] != "Enabled":
            reason = f"has versioning {found['versioning']}"
        elif not found["object_lock"]["enabled"]:
            reason = "has no object lock"
        else:
            _POSTURE_PASSED[key] = time.monotonic()
            return
        raise errors.StorageError(
            f"bucket {self.bucket} {reason}: nothing written to it; check repository.bucket, "
            "or prepare it with `drkit storage init`"
        )

    def put_bytes(self, key: str, body: bytes, content_type: str) -> str | None:
        """Store body at key (a drill report page); return the new version id. Only into a
        bucket whose posture passed (require_posture)."""
        key = self._check_key(key)
        self.require_posture()
        response = self._call(
            "put_object",
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
        )
        return (response or {}).get("VersionId")

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes | None:
        """Return the object at key (the given version of it), or None when there is none."""
        extra = {"VersionId": version_id} if version_id else {}
        response = self._call(
            "get_object",
            tolerate=("NoSuchKey", "NoSuchVersion", "404"),
            Bucket=self.bucket,
            Key=self._check_key(key),
            **extra,
        )
        if response is None:
            return None
        limit = catalog.object_limit(key)
        try:
            size = response.get("ContentLength")
            if isinstance(size, int) and size > limit:
                response["Body"].close()
                body = None
            else:
                body = response["Body"].read(limit + 1)
        except (boto_errors.BotoCoreError, OSError) as exc:
            raise self._translate(exc, "get_object") from None
        if body is None or len(body) > limit:
            return self._malformed(key, version_id, f"larger than {units.size(limit)}")
        problem = catalog.shape_problem(key, body)
        return self._malformed(key, version_id, problem) if problem else body

    def versions(self, key: str) -> list[dict[str, Any]]:
        """Return every version of key, newest first: [{version_id, modified, latest, deleted}]
        (deleted: a delete marker)."""
        found: list[dict[str, Any]] = []
        for page in self._pages(
            "list_object_versions", Bucket=self.bucket, Prefix=self._check_key(key)
        ):
            for kind, deleted in (("Versions", False), ("DeleteMarkers", True)):
                found.extend(
                    {
                        "version_id": item["VersionId"],
                        "modified": item["LastModified"],
                        "latest": bool(item.get("IsLatest")),
                        "deleted": deleted,
                    }
                    for item in page.get(kind, [])
                    if item.get("Key") == key
                )
        return sorted(found, key=lambda version: version["modified"], reverse=True)

    def snapshot_ids(self) -> set[str]:
        """Return the ids of the restic repository's snapshots: the names of its snapshot
        files (one listing; restic names each file by the sha256 of its content)."""
        prefix = self.repository.prefix.strip("/") + "/snapshots/"
        return {key.removeprefix(prefix) for key in self.list_keys(prefix)}

    def lock_files(self) -> list[str]:
        """Return the keys of the restic repository's lock files (one listing)."""
        return self.list_keys(self.repository.prefix.strip("/") + "/locks/")

    def list_keys(self, prefix: str = "") -> list[str]:
        """Return the keys under prefix (e.g. reports/<node>/), sorted."""
        pages = self._pages("list_objects_v2", Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


# -- the outage probe: is the repository usable right now? ----------------------------------


class OutageProbe:
    """Whether the repository answers now: one HEAD of its config object with short timeouts
    and no retries, and since when it has not. One per repository in a process (outage_probe):
    the daemon's outage watch, the stop checks of every restic command and the post-backup
    steps all ask the same one, so they agree on when an outage began."""

    def __init__(self, repository: Repository):
        self.repository = repository
        self._lock = threading.Lock()
        self._checked_at: float | None = None
        self._reason: str | None = None
        self._failing_since: float | None = None

    def check(self) -> str | None:
        """Return why the repository is unusable (one line), or None when it answers. A probe
        made less than PROBE_FRESH_SECONDS ago answers for this call too."""
        with self._lock:
            now = time.monotonic()
            if self._checked_at is not None and now - self._checked_at < PROBE_FRESH_SECONDS:
                return self._reason
            try:
                Storage(self.repository, quick=True).repository_answers()
                reason = None
            except (errors.StorageError, errors.AuthenticationError, errors.ConfigError) as exc:
                reason = exc.message
            self._checked_at = time.monotonic()
            self._reason = reason
            if reason is None:
                self._failing_since = None
            elif self._failing_since is None:
                self._failing_since = now
            return reason

    def failing_for(self) -> float:
        """Return how long every probe has failed, in seconds (0 while the last one passed)."""
        with self._lock:
            since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def watch(self, limit: float) -> Callable[[], str | None]:
        """Return a stop check for runner (stop_when): the reason to stop once every probe has
        failed for `limit` seconds, else None."""

        def stop_when() -> str | None:
            reason = self.check()
            failing = self.failing_for()
            if reason is None or failing < limit:
                return None
            return f"S3 failed every probe for {units.duration(failing)} ({reason})"

        return stop_when


_probes: dict[tuple, OutageProbe] = {}


def outage_probe(repository: Repository) -> OutageProbe:
    """Return this process's outage probe for the repository and the environment's
    credentials (refused credentials are not an outage of the right ones)."""
    key = (
        repository.s3_endpoint,
        repository.bucket,
        repository.prefix,
        repository.ca_bundle,
        *(os.environ.get(name) for name in _CREDENTIAL_VARIABLES),
    )
    with _clients_lock:
        return _probes.setdefault(key, OutageProbe(repository))
