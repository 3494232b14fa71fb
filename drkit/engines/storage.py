"""drkit's own objects in the repository's bucket (status, reports, manifests, the catalog),
beside the restic repository, never inside it; and whether that repository is there.

Reading, writing and the bucket's posture go through the one door of drkit.engines.s3 (one-line
StorageError or AuthenticationError). Only commands that talk to S3 import this module.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import botocore.exceptions as boto_errors

from drkit import errors, units
from drkit.config import Repository
from drkit.engines import catalog
from drkit.engines.posture import PostureChecks
from drkit.engines.s3 import registry_lock

log = logging.getLogger(__name__)

_MALFORMED_SAID: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class ObjectVersion:
    """One version of an object in the versioned bucket (deleted: a delete marker)."""

    version_id: str
    modified: datetime
    latest: bool
    deleted: bool


class Storage(PostureChecks):
    """The repository's S3 bucket: drkit's objects at its root, and the repository's presence.
    Objects read that were ignored as malformed are listed in `malformed` (for verify)."""

    def __init__(self, repository: Repository, *, quick: bool = False):
        super().__init__(repository, quick=quick)
        self.malformed: list[str] = []

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

    def put_json(self, key: str, obj: object) -> str | None:
        """Store obj as JSON at key (e.g. status/<node>.json); return the new version id."""
        body = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        return self.put_bytes(key, body, "application/json")

    def get_json(self, key: str) -> dict[str, object] | None:
        """Return the JSON object at key, or None when there is none or it is malformed
        (see get_bytes)."""
        body = self.get_bytes(key)
        if body is None:
            return None
        try:
            document = json.loads(body)
        except ValueError:
            self._malformed(key, None, "not valid JSON")
            return None
        if isinstance(document, dict):
            return document
        self._malformed(key, None, "not a JSON object")
        return None

    def _malformed(self, key: str, version_id: str | None, problem: str) -> None:
        """Count a malformed object as absent: say so in one warning line and remember it for
        `drkit verify` (self.malformed). An old version of it is only logged."""
        line = (
            f"s3://{self.bucket}/{key}: {problem}: not drkit's (malformed, or planted by "
            "someone with write access to the bucket), ignored as if absent"
        )
        if version_id is not None:
            log.info("%s (version %s)", line, version_id)
            return
        self.malformed.append(line)
        with registry_lock:
            said = (self.bucket, key) in _MALFORMED_SAID
            _MALFORMED_SAID.add((self.bucket, key))
        if not said:  # once per command, however many readers meet it
            log.warning("%s", line)

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
        body: bytes | None
        try:
            size = response.get("ContentLength")
            if isinstance(size, int) and size > limit:
                response["Body"].close()
                body = None
            else:
                body = response["Body"].read(limit + 1)
        except (boto_errors.BotoCoreError, OSError) as exc:
            raise self._translate(exc, "get_object") from None
        problem = (
            f"larger than {units.size(limit)}"
            if body is None or len(body) > limit
            else catalog.shape_problem(key, body)
        )
        if body is None or problem:
            self._malformed(key, version_id, problem or "unreadable")
            return None
        return body

    def versions(self, key: str) -> list[ObjectVersion]:
        """Return every version of key, newest first."""
        found: list[ObjectVersion] = []
        for page in self._pages(
            "list_object_versions", Bucket=self.bucket, Prefix=self._check_key(key)
        ):
            for kind, deleted in (("Versions", False), ("DeleteMarkers", True)):
                found.extend(
                    ObjectVersion(
                        version_id=item["VersionId"],
                        modified=item["LastModified"],
                        latest=bool(item.get("IsLatest")),
                        deleted=deleted,
                    )
                    for item in page.get(kind, [])
                    if item.get("Key") == key
                )
        return sorted(found, key=lambda version: version.modified, reverse=True)

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
