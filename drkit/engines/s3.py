"""The S3 bucket through boto3: one client per endpoint and credentials, and one door.

Every boto3 call goes through `Bucket._call`, which turns botocore's exceptions into one-line
drkit errors: StorageError (exit 4) for an unreachable endpoint, a TLS failure or a missing
bucket; AuthenticationError (exit 5) for refused or missing credentials. Messages never carry
secrets. Only commands that talk to S3 import this module (boto3 costs ~165 ms to import).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import boto3
import botocore.exceptions as boto_errors
from botocore.config import Config as BotoConfig

from drkit import errors
from drkit.config import Repository

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

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
UNSUPPORTED_CODES = ("NotImplemented", "MethodNotAllowed", "XNotImplemented")
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\]\s*([^\)\"'\]]+)")
_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)
Credentials = tuple[str | None, ...]
_clients: dict[tuple[object, ...], S3Client] = {}
_sessions: dict[Credentials, boto3.session.Session] = {}
registry_lock = threading.Lock()  # this process's clients, probes and warnings said


def credentials() -> Credentials:
    """Return what names the environment's S3 credentials (a key for per-credential caches)."""
    return tuple(os.environ.get(name) for name in _CREDENTIAL_VARIABLES)


def session() -> boto3.session.Session:
    """Return this process's boto3 session for the environment's credentials (shared with
    its clients: what engines.bulkread signs with)."""
    named = credentials()
    with registry_lock:
        if named not in _sessions:
            _sessions[named] = boto3.session.Session()
        return _sessions[named]


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


def _client(endpoint: str, region: str, ca_bundle: Path | None, *, quick: bool = False) -> S3Client:
    """Return this process's S3 client for the endpoint and the environment's credentials.

    Clients are thread-safe and slow to make (botocore parses its service model each time), so
    one is kept per endpoint and credential environment; changed credentials get a new one.
    quick: the outage probe's client, with short timeouts and no retries.
    """
    named = credentials()
    key = (endpoint, region, ca_bundle, quick, *named)
    with registry_lock:
        if key not in _clients:
            # one session per credential environment: its second client costs ~10 ms, not ~140
            if named not in _sessions:
                _sessions[named] = boto3.session.Session()
            _clients[key] = _sessions[named].client(
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


class Bucket:
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

    # -- the one door to boto3 -----------------------------------------------------------

    def _call(
        self, method: str, *, tolerate: Iterable[str] = (), **params: Any
    ) -> dict[str, Any] | None:
        """Call client.<method>(**params) and return its response.

        Return None when S3 answers with an error code listed in `tolerate`; turn every other
        failure into a StorageError or AuthenticationError of one line.
        """
        try:
            response: dict[str, Any] = getattr(self.client, method)(**params)
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

    def _pages(
        self, method: Literal["list_object_versions", "list_objects_v2"], **params: Any
    ) -> Iterator[Mapping[str, Any]]:
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
        quick = self if self.quick else Bucket(self.repository, quick=True)
        try:
            quick._call("head_bucket", Bucket=self.bucket)
        except errors.AuthenticationError as refused:
            # HEAD answers carry no error code; a GET says which of key, secret or policy failed
            if "403 Forbidden" not in refused.message:
                raise
            quick._call("get_bucket_versioning", Bucket=self.bucket)
            raise
        log.debug("s3 bucket %s at %s answers", self.bucket, self.endpoint)

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
