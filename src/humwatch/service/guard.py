"""What keeps the service standing in front of browsers, hostile clients and a full disk: security
headers on every answer, sliding-window rate limits (failed sign-ins per client address, uploads
per token), and a write probe that lets ``/health`` say when the store cannot write.

The rate limits are in-process and in memory (one window per ``humwatch serve`` worker process):
a plant's listeners need no shared state (Redis and the like) for this, and a limit that is per
worker is at most ``--workers`` times looser. Libraries such as slowapi were close, but they key
limits on the request alone; here the upload limit is keyed on the token's name, known only after
authentication, and failed sign-ins are counted only when a token was shown and refused.
"""

from __future__ import annotations

import collections
import errno
import logging
import math
import os
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("humwatch.service")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
"""The dashboard's pages load only the server's own scripts and styles (no inline script: the
chart's data travel as a JSON data block, read by ``static/chart.js``). Swagger UI draws its icons
as ``data:`` images."""
SECURITY_HEADERS = {
    b"content-security-policy": CSP.encode(),
    b"x-content-type-options": b"nosniff",
    b"x-frame-options": b"DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" with a form POST,
    # and the dashboard's forms check that they come from its own pages
    b"referrer-policy": b"same-origin",
    b"cross-origin-opener-policy": b"same-origin",
}
PROBE_EVERY_S = 5.0
"""How long /health trusts its last write probe."""
PROBE_BYTES = 4096


class SecurityHeaders:
    """ASGI middleware: adds :data:`SECURITY_HEADERS` to every HTTP answer (those it already has stay)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS.items() if k not in have]
                message = {**message, "headers": list(message.get("headers", [])) + extra}
            await send(message)

        return await self.app(scope, receive, with_headers)


class SlidingWindow:
    """At most ``limit`` events per key in any ``window_s`` seconds (``limit`` 0: no limit).
    Thread-safe: FastAPI runs the dependencies that count in its worker threads."""

    MAX_KEYS = 10_000

    def __init__(self, limit: int, window_s: float = 60.0, clock=time.monotonic):
        self.limit, self.window_s, self.clock = int(limit), float(window_s), clock
        self._events: dict[str, collections.deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> collections.deque:
        q = self._events.get(key)
        if q is None:
            if len(self._events) >= self.MAX_KEYS:  # bounded memory under a flood of addresses
                self._forget_idle(now)
            q = self._events[key] = collections.deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        return q

    def _forget_idle(self, now: float) -> None:
        for k in [k for k, q in self._events.items() if not q or q[-1] <= now - self.window_s]:
            del self._events[k]
        if len(self._events) >= self.MAX_KEYS:
            self._events.clear()

    def retry_after(self, key: str) -> int | None:
        """Seconds until ``key`` may act again when it has used up its window, else None."""
        if self.limit <= 0:
            return None
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if len(q) < self.limit:
                return None
            return max(1, math.ceil(q[0] + self.window_s - now))

    def hit(self, key: str) -> int | None:
        """Count one event for ``key``; like :meth:`retry_after` when it was over the limit
        (the event is then not counted)."""
        if self.limit <= 0:
            return None
        with self._lock:
            now = self.clock()
            q = self._recent(key, now)
            if len(q) >= self.limit:
                return max(1, math.ceil(q[0] + self.window_s - now))
            q.append(now)
            return None


def too_many(what: str, retry_after: int):
    from fastapi import HTTPException

    return HTTPException(429, f"{what}: try again in {retry_after} s", headers={"retry-after": str(retry_after)})


def client_address(request) -> str:
    """The client's address (uvicorn puts a local reverse proxy's X-Forwarded-For there)."""
    return request.client.host if request.client else "unknown"


# ------------------------------------------------------------------------------- writes


WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EFBIG: "file too large",
    errno.EIO: "input/output error",
}


def os_reason(e: OSError) -> str:
    return WRITE_ERRNOS.get(e.errno) or " ".join(str(e.strerror or e).split())[:200] or type(e).__name__


STORE_WRITE_WORDS = (
    ("disk is full", "the database's disk is full"),
    ("no space left", "the database's disk is full"),
    ("could not extend file", "the database's disk is full"),
    ("readonly database", "the database is read-only"),
    ("read-only", "the database is read-only"),
    ("disk i/o error", "the database's disk gives I/O errors"),
    ("unable to open database", "the database file cannot be opened"),
)


def store_reason(e: Exception) -> str | None:
    """Why a database error means the store cannot write (a full disk, a read-only file), or None
    for any other database error."""
    text = str(getattr(e, "orig", None) or e).lower()
    return next((why for words, why in STORE_WRITE_WORDS if words in text), None)


class WriteProbe:
    """Whether the service can write: a small file written and synced in each of its folders (the
    incoming uploads, the SQLite database's), and a real write transaction in the store; the
    answer is kept :data:`PROBE_EVERY_S` seconds. A write that fails in a request says so at once
    (:meth:`failed`), so /health does not wait for the next probe to tell."""

    def __init__(self, store, folders):
        self.store, self.folders = store, folders
        self._lock = threading.Lock()
        self._at, self._problem = -math.inf, None

    def failed(self, reason: str) -> None:
        with self._lock:
            self._at, self._problem = time.monotonic(), reason

    def problem(self) -> str | None:
        """None when the service can write, else why not (one line, without the server's paths)."""
        with self._lock:
            if time.monotonic() - self._at < PROBE_EVERY_S:
                return self._problem
            self._problem, self._at = self._probe(), time.monotonic()
            if self._problem:
                log.error("the store cannot write: %s", self._problem)
            return self._problem

    def _probe(self) -> str | None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        for name, folder in self.folders():
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=".probe-", dir=folder)
                try:
                    with os.fdopen(fd, "wb") as f:
                        f.write(b"\0" * PROBE_BYTES)
                        f.flush()
                        os.fsync(f.fileno())
                finally:
                    os.unlink(tmp)
            except OSError as e:
                return f"{name}: {os_reason(e)}"
        try:  # a real write (SQLite writes the page even when the value is the same), committed
            with self.store.write() as s:
                s.execute(text("UPDATE alembic_version SET version_num = version_num"))
        except SQLAlchemyError as e:
            return store_reason(e) or "the database refuses writes"
        return None
