"""Many small JSON objects of the bucket read at once (the fleet views' status documents): one
listing with each object's ETag, signed GETs in parallel over one connection pool, and a local
cache of the bodies by ETag.

botocore spends ~1.5 ms of CPU on each request (its event hooks, its parsers, dateutil for each
listed key's time); a GET signed with botocore's own SigV4 signer and sent over one urllib3 pool
spends a third of that, and an object whose ETag the cache holds costs only its listing entry.
The cache is trusted for nothing: a body is served from it only when its MD5 is the ETag the
bucket lists now, and every body, fetched or cached, is judged as if just read (the catalog's
size limit and JSON shape, a JSON object). Anything the lean path does not expect (an error
status, a redirect, a dropped connection, a body that fails a check) is read again through the
one door (Storage.get_json), so errors, warnings and `malformed` read exactly as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

import urllib3
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.httpsession import get_cert_path

from drkit import errors
from drkit.engines import catalog, s3
from drkit.engines.storage import Storage

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_LIMIT = 512 * 1024 * 1024  # a larger cache file is ignored, not read
_S3_XML = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_MD5_ETAG = re.compile(r'"?([0-9a-f]{32})"?')
_PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "ALL_PROXY")


class _Unexpected(Exception):
    """The lean path met something it leaves to the one door."""


def cache_file(state_dir: Path, storage: Storage) -> Path:
    """Return where the bodies read from this endpoint's bucket are cached by ETag."""
    name = hashlib.sha256(f"{storage.endpoint}\0{storage.bucket}".encode()).hexdigest()[:16]
    return Path(state_dir) / "cache" / f"objects-{name}.json"


def _md5(body: bytes) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


class BulkReader:
    """Read the JSON objects under a prefix of storage's bucket: `read(prefix)`."""

    def __init__(self, storage: Storage, *, workers: int, cache: Path | None = None):
        self.storage = storage
        self.workers = workers
        self.cache = cache
        self.problems: list[str] = []
        self._lean = not any(os.environ.get(name) for name in _PROXY_VARIABLES)
        endpoint = str(storage.endpoint)
        self._url = endpoint.rstrip("/")  # path-style, as engines.s3's clients address it
        self._path = f"{urlsplit(endpoint).path.rstrip('/')}/{quote(storage.bucket, safe='')}"
        authorities = storage.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)
        tls = {"ca_certs": str(authorities)}  # as botocore picks them
        self._pool = urllib3.connection_from_url(
            endpoint,
            maxsize=workers,
            block=True,
            retries=False,
            timeout=urllib3.Timeout(
                connect=s3.CONNECT_TIMEOUT_SECONDS, read=s3.READ_TIMEOUT_SECONDS
            ),
            **(tls if endpoint.startswith("https:") else {}),
        )
        credentials = s3.session().get_credentials()
        self._signer = (
            S3SigV4Auth(credentials.get_frozen_credentials(), "s3", storage.region)
            if credentials is not None
            else None
        )
        self._lock = threading.Lock()

    # -- the lean path: signed requests over one pool --------------------------------------

    def _get(self, path: str, params: Mapping[str, str], limit: int) -> bytes:
        """Return the body of a signed GET of path (under the bucket) that answered 200 within
        limit bytes."""
        if not self._lean or self._signer is None:
            raise _Unexpected
        request = AWSRequest(method="GET", url=f"{self._url}{self._path}{path}", params=params)
        self._signer.add_auth(request)
        target = self._path + path
        if params:
            target += "?" + urlsplit(request.prepare().url).query
        try:
            response = self._pool.urlopen(
                "GET",
                target,
                headers=dict(request.headers.items()),
                redirect=False,
                preload_content=False,
            )
            try:
                if response.status != 200:
                    raise _Unexpected
                body = response.read(limit + 1)
            finally:
                response.release_conn()
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            self._lean = False  # an outage, a proxy, TLS: the door says which, and retries
            log.debug("s3 lean GET failed (%s): through botocore from now on", exc)
            raise _Unexpected from None
        if len(body) > limit:
            raise _Unexpected
        return body

    def listing(self, prefix: str) -> dict[str, str]:
        """Return {key: ETag} of the objects under prefix (ListObjectsV2, 1,000 keys a call);
        through the door (with no ETags) when the lean listing fails."""
        try:
            found: dict[str, str] = {}
            params = {"list-type": "2", "prefix": prefix}
            while True:
                body = self._get("/", params, 64 * 1024 * 1024)
                root = ElementTree.fromstring(body)
                for item in root.iterfind(f"{_S3_XML}Contents"):
                    key = item.findtext(f"{_S3_XML}Key")
                    if key is not None:
                        found[key] = item.findtext(f"{_S3_XML}ETag") or ""
                token = root.findtext(f"{_S3_XML}NextContinuationToken")
                if root.findtext(f"{_S3_XML}IsTruncated") != "true" or not token:
                    return found
                params = {**params, "continuation-token": token}
        except (_Unexpected, ElementTree.ParseError):
            return dict.fromkeys(self.storage.list_keys(prefix), "")

    @staticmethod
    def _judged(key: str, body: bytes) -> dict[str, object] | None:
        """Return body as the JSON object it holds when it passes the catalog's checks (size,
        shape), else None."""
        if len(body) > catalog.object_limit(key) or catalog.shape_problem(key, body):
            return None
        try:
            parsed = json.loads(body)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    # -- the cache by ETag -----------------------------------------------------------------

    def _load_cache(self) -> dict[str, tuple[str, bytes]]:
        """Return {key: (md5, body)} from the cache file; nothing when it is absent or
        unreadable (it is only a saving)."""
        if self.cache is None:
            return {}
        try:
            if self.cache.stat().st_size > CACHE_LIMIT:
                return {}
            stored = json.loads(self.cache.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(stored, dict) or stored.get("format") != CACHE_FORMAT:
            return {}
        objects = stored.get("objects")
        if not isinstance(objects, dict):
            return {}
        loaded: dict[str, tuple[str, bytes]] = {}
        for key, entry in objects.items():
            if isinstance(entry, str):
                body = entry.encode()
                loaded[key] = (_md5(body), body)
        return loaded

    def _save_cache(self, bodies: Mapping[str, bytes]) -> None:
        """Replace the cache file with bodies (ASCII JSON text each), mode 0600; a failure is
        logged, never the read's outcome."""
        if self.cache is None:
            return
        objects = {}
        for key, body in bodies.items():
            with contextlib.suppress(UnicodeDecodeError):
                objects[key] = body.decode("ascii")
        text = json.dumps({"format": CACHE_FORMAT, "objects": objects}, separators=(",", ":"))
        temporary = self.cache.with_name(f"{self.cache.name}.{os.getpid()}.tmp")
        try:
            self.cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(text)
            os.replace(temporary, self.cache)
        except OSError as exc:
            log.debug("object cache %s not written: %s", self.cache, exc)
            with contextlib.suppress(OSError):
                temporary.unlink()

    # -- reading ---------------------------------------------------------------------------

    def read(self, keys: Mapping[str, str]) -> dict[str, object]:
        """Return {key: parsed JSON object, or None when absent, malformed or unreadable} for
        keys ({key: listed ETag}); unreadable ones are named in self.problems. A body comes
        from the cache when its MD5 is the listed ETag, else from the bucket."""
        cached = self._load_cache()
        found: dict[str, object] = {}
        keep: dict[str, bytes] = {}
        missing: list[str] = []
        for key, etag in keys.items():
            listed = _MD5_ETAG.fullmatch(etag)
            md5, body = cached.get(key, ("", b""))
            parsed = self._judged(key, body) if listed and md5 == listed.group(1) else None
            if parsed is None:
                missing.append(key)
            else:
                found[key], keep[key] = parsed, body

        def fetch(key: str) -> tuple[str, bytes | None, object]:
            try:
                body = self._get(f"/{quote(key, safe='/~')}", {}, catalog.object_limit(key))
            except _Unexpected:
                return key, None, self._through_door(key)
            parsed = self._judged(key, body)
            if parsed is None:  # the door reads it again and says why it is not one
                return key, None, self._through_door(key)
            return key, body, parsed

        def fetch_share(share: list[str]) -> list[tuple[str, bytes | None, object]]:
            return [fetch(key) for key in share]

        shares = [missing[start :: self.workers] for start in range(self.workers)]
        with ThreadPoolExecutor(max_workers=self.workers) as pool:  # a share each: no future a key
            for key, fetched, value in itertools.chain.from_iterable(pool.map(fetch_share, shares)):
                found[key] = value
                listed = _MD5_ETAG.fullmatch(keys[key])
                if fetched is not None and listed and _md5(fetched) == listed.group(1):
                    keep[key] = fetched
        if missing or keep.keys() != cached.keys():
            self._save_cache(keep)
        return {key: found[key] for key in keys}

    def _through_door(self, key: str) -> object:
        """Return the object at key read by Storage.get_json (which says why it is not one);
        a StorageError is a problem of this read, named in self.problems."""
        try:
            return self.storage.get_json(key)
        except errors.StorageError as exc:
            with self._lock:
                self.problems.append(f"{key}: {exc.message}")
            return None
