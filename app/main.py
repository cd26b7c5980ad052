"""The FastAPI app factory: start-up wiring only.

Routes live in app/routes/ (one router per resource), request and response
bodies in app/schemas.py, error answers in app/handlers.py; the work itself in
app/pipeline.py and app/batch.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from fastapi import FastAPI

from app.admission import Admission
from app.bodycap import BodyCapMiddleware
from app.fetch import FetchPolicy
from app.handlers import install_error_handlers
from app.observability import AccessLogMiddleware, configure_logging, init_sentry
from app.pipeline import Services
from app.ratelimit import RateLimitMiddleware, TokenBuckets
from app.routes import convert, files, meta, upload, web
from app.server import GuardedH11Protocol
from app.settings import Settings
from app.storage import make_storage

log = logging.getLogger("img2pdf")


def make_buckets(settings: Settings) -> TokenBuckets | None:
    if settings.rate_limit_per_minute <= 0:
        return None  # RATE_LIMIT_PER_MINUTE=0 turns the limit off
    return TokenBuckets(settings.rate_limit_per_minute / 60.0, settings.rate_limit_burst)


def build_services(settings: Settings) -> Services:
    return Services(
        settings=settings,
        policy=FetchPolicy.from_settings(settings),
        admission=Admission(
            settings.worker_memory_budget,
            settings.admission_wait_s,
            settings.retry_after_s,
            data_budget_bytes=settings.download_budget,
        ),
        storage=make_storage(settings),
        convert_limiter=anyio.CapacityLimiter(settings.convert_threads),
    )


def make_lifespan(
    settings: Settings,
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Per process: one storage client, one admission budget.
        configure_logging()
        app.state.services = build_services(settings)
        log.info(
            "started",
            extra={
                "fields": {
                    "storage": settings.storage_backend,
                    "release": settings.release,
                    "budget_bytes": settings.worker_memory_budget,
                }
            },
        )
        yield

    return lifespan


def add_middleware(app: FastAPI, settings: Settings) -> None:
    """Added innermost first. The JSON body and every URL are capped before anything
    parses them, inside the rate limit (which reads no body at all); the access log
    is outermost, so it sees (and times) rate-limited answers too."""
    app.state.rate_buckets = make_buckets(settings)
    app.add_middleware(
        BodyCapMiddleware, paths=("/image_to_pdf",), limit=settings.max_json_body_bytes
    )
    app.add_middleware(
        RateLimitMiddleware,
        buckets=app.state.rate_buckets,
        client_ip_source=settings.client_ip_source,
        lb_ranges=settings.lb_source_ranges,
    )
    app.add_middleware(AccessLogMiddleware)


def create_app(settings: Settings | None = None) -> FastAPI:
    """App factory: gunicorn and uvicorn call it once per worker process."""
    settings = settings or Settings.from_env()
    configure_logging()
    init_sentry(settings)
    GuardedH11Protocol.configure(settings)  # the HTTP server's limits in this process
    app = FastAPI(
        title="img2pdf",
        summary="Turn an image at a URL into a PDF and say where to download it.",
        version=settings.release or "dev",
        lifespan=make_lifespan(settings),
        # Starlette answered `/ping/` with a 307 to `http://<the request's Host>/ping`:
        # a redirect to whatever host a client names. No route here needs it.
        redirect_slashes=False,
    )
    install_error_handlers(app)
    add_middleware(app, settings)
    for module in (meta, convert, upload, web, files):
        app.include_router(module.router)
    web.mount_static(app)
    return app
