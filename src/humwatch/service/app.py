"""The service's FastAPI application: :func:`create_app` builds it from :class:`ServiceSettings`.

One process holds: the store (:mod:`.store`), every monitor of the folder loaded once
(:mod:`.scoring`), the ingest path (:mod:`.ingest`, run in worker threads; each machine's clips
scored in batches by its scoring thread, :class:`~humwatch.service.scoring.Batcher`), the notification
threads (:mod:`.notify`), the JSON API under ``/api/v1`` (:mod:`.api`), the dashboard (:mod:`.dashboard`)
and ``/docs`` (the OpenAPI page, with Swagger UI served from the package). Every user error is
answered with a status and ``{"detail": "<one line>"}``; nothing a client sends can cause a 500.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from humwatch.errors import HumwatchError, one_line
from humwatch.service.config import ServiceSettings
from humwatch.service.guard import SecurityHeaders

log = logging.getLogger("humwatch.service")
HERE = Path(__file__).resolve().parent
MULTIPART_SLACK = 1 << 20
"""Bytes a multipart request may hold beyond the upload limit (its headers and form fields)."""


@dataclass
class Service:
    """Everything one server process holds."""

    settings: ServiceSettings
    store: object
    pool: object
    ingestor: object
    notifier: object | None
    sweeper: object | None = None
    """The stale-machine check's thread (:class:`humwatch.service.health.StaleSweeper`)."""
    probe: object = field(init=False)
    failed_logins: object = field(init=False)
    uploads: object = field(init=False)
    metrics: object = field(init=False)
    batcher: object = field(init=False)
    """Scores concurrent clips of one machine together (:class:`humwatch.service.scoring.Batcher`): the ingestor's scorer."""

    def __post_init__(self):
        from humwatch.service.guard import SlidingWindow, WriteProbe
        from humwatch.service.metrics import Metrics
        from humwatch.service.scoring import Batcher

        self.metrics = Metrics(self.store)
        self.batcher = Batcher(
            self.pool, self.settings.max_batch, self.settings.batch_wait_ms / 1000.0, self.metrics.score_batch_clips.observe
        )
        self.ingestor.scorer = self.batcher
        self.probe = WriteProbe(self.store, self.write_folders)
        self.failed_logins = SlidingWindow(self.settings.max_failed_logins)
        self.uploads = SlidingWindow(self.settings.max_uploads_per_minute)

    def write_folders(self) -> list[tuple[str, Path]]:
        """(what, folder) of every folder the service writes to (the write probe's list)."""
        from sqlalchemy.engine import make_url

        folders = [("the upload folder", self.ingestor.tmp_dir)]
        url = make_url(self.store.url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            folders.append(("the database's folder", Path(url.database).parent))
        return folders

    @classmethod
    def open(cls, settings: ServiceSettings) -> "Service":
        """Check the store's schema, load the monitors, start the notification threads."""
        from humwatch.service.health import StaleSweeper
        from humwatch.service.ingest import Ingestor
        from humwatch.service.notify import Notifier
        from humwatch.service.scoring import MonitorPool
        from humwatch.service.store import Store

        store = Store(settings.db_url)
        try:
            store.check_schema()
            pool = MonitorPool(settings.monitors, device=settings.device)
            pool.warm_up()
            notifier = Notifier(settings, store) or None
            ingestor = Ingestor(store, pool, settings, notifier)
            ingestor.ensure_machines()
            ingestor.clean_incoming()
            if notifier is not None:
                notifier.start()
            sweeper = StaleSweeper(store, notifier)
            sweeper.start()
        except BaseException:
            store.close()
            raise
        return cls(settings, store, pool, ingestor, notifier, sweeper)

    def close(self) -> None:
        self.batcher.close()
        if self.sweeper is not None:
            self.sweeper.stop()
        if self.notifier is not None:
            self.notifier.stop()
        self.store.close()


class BodyLimit:
    """ASGI middleware: refuses (413) a request body over ``limit`` bytes, by its Content-Length
    up front or while it streams in (chunked uploads), before anything buffers it whole."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.responses import JSONResponse

        from humwatch.service.ingest import UploadError

        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode() or "0"
        too_big = f"request body over the {self.limit / 1e6:g} MB limit"
        if not declared.isdigit() or int(declared) > self.limit:
            return await JSONResponse(
                {"detail": too_big if declared.isdigit() else "bad Content-Length"}, 413 if declared.isdigit() else 400
            )(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise UploadError(413, too_big)
            return message

        return await self.app(scope, limited, send)


def _flat(text) -> str:
    """A text (an HTTP error's detail) on one line, at most 500 characters."""
    return " ".join(str(text).split())[:500]


def _install_error_handlers(app) -> None:
    from fastapi.exceptions import RequestValidationError
    from sqlalchemy.exc import SQLAlchemyError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse

    from humwatch.service.dashboard import html_error
    from humwatch.service.guard import os_reason, store_reason
    from humwatch.service.ingest import UploadError
    from humwatch.service.store import StoreError

    def wants_html(request) -> bool:
        return not request.url.path.startswith(("/api/", "/openapi")) and "text/html" in request.headers.get("accept", "")

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        if wants_html(request):
            return html_error(request, exc.status_code, _flat(exc.detail), getattr(exc, "headers", None))
        return JSONResponse({"detail": _flat(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        detail = _flat(f"{where}: {first.get('msg', 'invalid')}")
        if wants_html(request):
            return html_error(request, 422, detail)
        return JSONResponse({"detail": detail}, 422)

    @app.exception_handler(UploadError)
    async def upload_error(request, exc: UploadError):
        return JSONResponse({"detail": one_line(exc, 500)}, exc.status)

    def unavailable(request, detail: str):
        return JSONResponse({"detail": detail}, 503, headers={"retry-after": "5"})

    @app.exception_handler(StoreError)
    @app.exception_handler(SQLAlchemyError)
    async def store_error(request, exc: Exception):
        log.error("store: %s", one_line(getattr(exc, "orig", None) or exc, 500))
        why = store_reason(exc)
        request.app.state.service.metrics.store_error(cannot_write=why is not None)
        if why is None:
            return unavailable(request, "the database is not available")
        request.app.state.service.probe.failed(why)
        return unavailable(request, f"the store cannot write: {why}")

    @app.exception_handler(OSError)
    async def disk_error(request, exc: OSError):
        """A full or read-only disk under the uploads or the kept audio: the clip was not stored,
        and the client (a listener keeps its spool) is told to come back later."""
        log.error("disk: %s", one_line(exc, 500))
        why = os_reason(exc)
        request.app.state.service.probe.failed(f"the server's files: {why}")
        return unavailable(request, f"the server cannot write its files: {why}")

    @app.exception_handler(HumwatchError)
    async def user_error(request, exc: HumwatchError):
        return JSONResponse({"detail": one_line(exc, 500)}, 422)


def create_app(settings: ServiceSettings, service: Service | None = None):
    """The application; ``service`` (already open) is used as it is, else one is opened from
    ``settings`` now (loading every monitor) and closed on shutdown."""
    from fastapi import FastAPI

    from humwatch._version import __version__
    from humwatch.service import api, dashboard

    settings.validate()
    if service is None:  # a server process of its own (humwatch serve): its numeric libraries' threads
        limit_threads(settings.threads)
    svc = service or Service.open(settings)

    @asynccontextmanager
    async def lifespan(app):
        yield
        if service is None:
            svc.close()

    app = FastAPI(
        title="humwatch service",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description="Scores machine sound clips with fitted monitors, keeps scores and alerts. "
        "Every endpoint but /health needs a token (`humwatch token create`): "
        "`Authorization: Bearer <token>`.",
    )
    app.state.service = svc
    app.add_middleware(BodyLimit, limit=int(settings.max_upload_mb * 1e6) + MULTIPART_SLACK)
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app)
    app.include_router(api.router)
    dashboard.install(app)
    return app


def limit_threads(n: int) -> None:
    """At most ``n`` threads per torch or BLAS operation in this process from now on (0: leave their
    default, every core). The service's parallelism is its concurrent clips (one scoring thread per
    machine, the uploads' worker threads) and ``--workers``; each of those also spreading every small
    operation over every core makes them wait for each other (measured: docs/service.md, Batching
    and load)."""
    if n <= 0:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(limits=n)


def app_from_env():
    """The application of one uvicorn worker process (``humwatch serve --workers N``): settings from
    ``$HUMWATCH_SERVICE_SETTINGS``."""
    try:
        return create_app(ServiceSettings.from_env())
    except HumwatchError as e:
        log.error("error: %s", e)
        raise SystemExit(2) from None
