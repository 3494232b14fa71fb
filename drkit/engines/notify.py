"""Alerts: a signed webhook POST per finished job, and healthchecks-style pings.

Webhook body: {event, job, node, ok, time, snapshot_id, error}; header
`X-Drkit-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>`.
Pings: `<url>/start` when a job starts, `<url>` on success, `<url>/fail` with the error line as
the body on failure. A failed job never sends a success ping. A failed proof alerts like a failed
backup: without pings of its own (`ping.jobs.prove`) it pings the backup's `<url>/fail`.

Alerts never fail a job: a refused or unreachable endpoint is logged as a warning. Secrets (the
HMAC key, the ping URL's token) never reach a log line: URLs are logged by host only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import tenacity

from drkit import errors
from drkit.config import Notify
from drkit.model import utc_text

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Drkit-Signature"
ATTEMPTS = 3
RETRY_WAIT_SECONDS = 0.5  # then 1 s: at most 3 x timeout_seconds + 1.5 s per alert
RETRY_WAIT_MAX_SECONDS = 2.0
USER_AGENT = "drkit"


def _where(url: str) -> str:
    """Return the part of a URL that may be logged: scheme and host, never path or query."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def sign(body: bytes, secret: bytes) -> str:
    """Return the X-Drkit-Signature value of a body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class _Undelivered(Exception):
    """One attempt at an alert that the endpoint did not take; the message says why."""


def _attempt(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """POST body to url once; raise _Undelivered unless the answer is 2xx."""
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"User-Agent": USER_AGENT, **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if 200 <= response.status < 300:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise _Undelivered(reason)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> bool:
    """POST body to url, up to ATTEMPTS times; return True on a 2xx answer. Never raise."""

    def log_failure(state: tenacity.RetryCallState) -> None:
        reason = state.outcome.exception() if state.outcome else "no answer"
        log.warning(
            "alert to %s failed (attempt %d): %s", _where(url), state.attempt_number, reason
        )

    # Short waits: every attempt may take `timeout`, and a fail alert must leave within minutes.
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(_Undelivered),
        stop=tenacity.stop_after_attempt(ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=RETRY_WAIT_SECONDS, max=RETRY_WAIT_MAX_SECONDS),
        after=log_failure,
        reraise=True,
    )
    try:
        retrying(_attempt, url, body, headers, timeout)
    except _Undelivered:
        return False
    return True


class Notifier:
    """Sends a node's alerts as its config's `notify` section says."""

    def __init__(self, settings: Notify, node: str):
        self.settings = settings
        self.node = node
        self._secret: bytes | None = None
        webhook = settings.webhook
        if webhook and webhook.secret_file:
            from drkit.engines.keys import read_regular, require_private

            what = "notify.webhook.secret_file"
            require_private(webhook.secret_file, what)
            self._secret = read_regular(webhook.secret_file, what, 64 * 1024).strip()  # no FIFO
            if not self._secret:
                raise errors.ConfigError(
                    f"notify.webhook.secret_file: {webhook.secret_file} is empty"
                )

    def ping_url(self, job: str, *, failed: bool = False) -> str | None:
        """Return the job's ping URL: `ping.url` for backup, `ping.jobs.<job>` for the others,
        and for a failed proof without pings of its own the backup's."""
        ping = self.settings.ping
        if ping is None:
            return None
        named = (url for name, url in ping.jobs.items() if name == job)
        url = ping.url if job == "backup" else next(named, None)
        if url is None and failed and job == "prove":
            url = ping.url
        return url.rstrip("/") if url else None

    def start(self, job: str) -> None:
        """Ping `<url>/start`."""
        url = self.ping_url(job)
        if url:
            _post(url + "/start", b"", {}, self.settings.timeout_seconds)

    def finish(
        self,
        job: str,
        *,
        ok: bool,
        error: str | None = None,
        snapshot_id: str | None = None,
        event: str | None = None,
    ) -> dict[str, bool]:
        """Ping success or fail and POST the webhook; return which were delivered."""
        delivered = {}
        url = self.ping_url(job, failed=not ok)
        if url:
            if ok:
                delivered["ping"] = _post(url, b"", {}, self.settings.timeout_seconds)
            else:
                body = (error or "failed").splitlines()[0].encode()[:10000]
                delivered["ping"] = _post(
                    url + "/fail",
                    body,
                    {"Content-Type": "text/plain; charset=utf-8"},
                    self.settings.timeout_seconds,
                )
        if self.settings.webhook:
            delivered["webhook"] = self.webhook(
                event or ("succeeded" if ok else "failed"),
                job,
                ok=ok,
                error=error,
                snapshot_id=snapshot_id,
            )
        return delivered

    def webhook(
        self,
        event: str,
        job: str,
        *,
        ok: bool,
        error: str | None = None,
        snapshot_id: str | None = None,
    ) -> bool:
        """POST one signed event; return True when the endpoint took it."""
        webhook = self.settings.webhook
        if webhook is None:
            return False
        document: dict[str, Any] = {
            "event": event,
            "job": job,
            "node": self.node,
            "ok": ok,
            "time": utc_text(datetime.now(UTC)),
            "snapshot_id": snapshot_id,
            "error": error,
        }
        body = json.dumps(document, sort_keys=True).encode()
        headers = {"Content-Type": "application/json"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        return _post(webhook.url, body, headers, self.settings.timeout_seconds)
