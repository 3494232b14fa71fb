"""A fault-injecting HTTP proxy on 127.0.0.1 in front of an S3 endpoint (tests only).

Every request is forwarded unchanged (the Host header too, so S3 signatures still verify).
For a fraction of requests, one fault:
- "503":  answer 503 SlowDown without forwarding;
- "drop": close the connection without an answer, before forwarding;
- "lost": forward the request, then close the connection without the answer (S3 did the work,
  the client does not know);
- "slow": wait 0.2-1.0 s, then forward.
With outage_after=N, every request after the first N meets a fault: an outage.

Repeatable from the seed although clients send requests in parallel: each request's decision
(fault or not, which one, how slow) comes from its own random.Random, seeded by the seed, the
request's kind (method and path without the bucket, which tests name at random, with object
ids, restic's data subdirectories and times blanked) and how many requests of that kind came
before it. The k-th request of each kind meets the same fault in every run, whichever thread
forwards it; a retried request is the next of its kind, decided afresh.
"""

from __future__ import annotations

import http.client
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("503", "drop", "lost", "slow")
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
_OWN = {"content-length", "date", "server"}  # written by this proxy's own response
_VARYING = re.compile(
    r"[0-9a-f]{16,}|(?<=/data/)[0-9a-f]{2}(?=/)|\d{4}-?\d{2}-?\d{2}T[0-9:.]+Z?|\d{6,}"
)
_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


def _without_bucket(target: str) -> str:
    """Return a path-style request target without its bucket: "/b/k?q" -> "/k?q"."""
    path, mark, query = target.partition("?")
    return "/" + path.lstrip("/").partition("/")[2] + mark + query


class FaultProxy:
    """Forward HTTP to upstream; inject faults into `fraction` of the requests (seeded)."""

    def __init__(
        self, upstream: str, *, fraction: float, seed: int, faults=FAULTS, outage_after=None
    ):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.fraction = fraction
        self.faults = tuple(faults)
        self.outage_after = outage_after  # from this request on, every request meets a fault
        self.seed = seed
        self.counts: Counter = Counter()
        self.decisions: dict[tuple[str, int], str | None] = {}  # (kind, index) -> fault
        self._kinds: Counter = Counter()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def choose(self, method: str, target: str) -> tuple[str | None, random.Random]:
        """Return the fault for a request (None: forward as is) and its own seeded RNG."""
        kind = f"{method} {_VARYING.sub('*', _without_bucket(target))}"
        with self._lock:
            self.counts["requests"] += 1
            outage = self.outage_after is not None and self.counts["requests"] > self.outage_after
            index = self._kinds[kind]
            self._kinds[kind] += 1
        decision = random.Random(f"{self.seed}|{kind}|{index}")
        fault = None
        if outage or decision.random() < self.fraction:
            fault = decision.choice(self.faults)
        with self._lock:
            self.decisions[(kind, index)] = fault
            if fault:
                self.counts[fault] += 1
        return fault, decision

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self, body: bytes) -> tuple[int, str, list, bytes]:
                upstream = http.client.HTTPConnection(
                    proxy.upstream_host, proxy.upstream_port, timeout=60
                )
                try:
                    headers = {
                        name: value
                        for name, value in self.headers.items()
                        if name.lower() not in _HOP_BY_HOP
                    }
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    return response.status, response.reason, response.getheaders(), response.read()
                finally:
                    upstream.close()

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.close()

            def _handle(self) -> None:
                body = self._body()
                fault, decision = proxy.choose(self.command, self.path)
                if fault == "drop":
                    return self._drop()
                if fault == "503":
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(_SLOW_DOWN)))
                    self.end_headers()
                    self.wfile.write(_SLOW_DOWN)
                    return None
                if fault == "slow":  # the fault itself: an answer 0.2 to 1 s late
                    time.sleep(0.2 + 0.8 * decision.random())
                try:
                    status, reason, headers, payload = self._forward(body)
                except OSError:
                    return self._drop()
                if fault == "lost":
                    return self._drop()
                self.send_response(status, reason)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP | _OWN:
                        self.send_header(name, value)
                if self.command != "HEAD" or payload:
                    self.send_header("Content-Length", str(len(payload)))
                else:
                    length = dict((n.lower(), v) for n, v in headers).get("content-length")
                    if length is not None:
                        self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return None

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
