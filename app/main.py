"""The FastAPI app: routes, error handlers and start-up wiring. Logic lives elsewhere."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.admission import Admission
from app.errors import ApiError
from app.fetch import FetchPolicy
from app.observability import AccessLogMiddleware, configure_logging, init_sentry
from app.pipeline import Services, convert_source_url
from app.settings import Settings
from app.storage import LocalStorage, content_disposition, make_storage

log = logging.getLogger("img2pdf")

EXAMPLE_SOURCE = "https://example.com/cat.png"


class ConvertRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"source_url": EXAMPLE_SOURCE}]})

    source_url: str = Field(
        min_length=1,
        max_length=2048,
        description="http(s) URL of a JPEG, PNG, GIF, TIFF, WebP, BMP or JPEG 2000 image.",
    )


class ConvertResponse(BaseModel):
    source_url: str = Field(description="The source URL exactly as sent.")
    converted_url: str = Field(description="Where to download the PDF.")


class ErrorBody(BaseModel):
    detail: str
    code: str


ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "URL not allowed (scheme, credentials, port, or a non-public address).",
        413: "Source too large (bytes or pixels).",
        415: "Not a supported image.",
        422: "Malformed request, or a corrupt image.",
        502: "Source unreachable or answered an error.",
        503: "Busy (see Retry-After) or storage unavailable.",
        504: "Source too slow.",
    }.items()
}

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def _error(status: int, code: str, detail: str, headers: dict[str, str] | None = None):
    return JSONResponse({"detail": detail, "code": code}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        request.scope.setdefault("state", {})["error_code"] = exc.code
        return _error(exc.status, exc.code, exc.detail, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        request.scope.setdefault("state", {})["error_code"] = "invalid_request"
        fields = sorted({".".join(str(p) for p in e.get("loc", ())[1:]) for e in exc.errors()})
        where = f" (check: {', '.join(f for f in fields if f)})" if any(fields) else ""
        detail = 'Send JSON like {"source_url": "https://example.com/cat.png"}' + where + "."
        return _error(422, "invalid_request", detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return _error(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        # The traceback goes to the log and Sentry (the exception propagates to
        # the server-error middleware after this response); the client learns nothing.
        log.error("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "Internal error.")


def build_services(settings: Settings) -> Services:
    return Services(
        settings=settings,
        policy=FetchPolicy.from_settings(settings),
        admission=Admission(
            settings.worker_memory_budget, settings.admission_wait_s, settings.retry_after_s
        ),
        storage=make_storage(settings),
        convert_limiter=anyio.CapacityLimiter(settings.convert_threads),
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """App factory: gunicorn and uvicorn call it once per worker process."""
    settings = settings or Settings.from_env()
    configure_logging()
    init_sentry(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
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

    app = FastAPI(
        title="img2pdf",
        summary="Turn an image at a URL into a PDF and say where to download it.",
        version=settings.release or "dev",
        lifespan=lifespan,
    )
    _install_error_handlers(app)
    app.add_middleware(AccessLogMiddleware)

    @app.get("/ping", summary="Liveness check")
    async def ping() -> dict[str, str]:
        return {"ping": "pong"}

    @app.post(
        "/image_to_pdf",
        response_model=ConvertResponse,
        responses=ERROR_RESPONSES,
        summary="Convert the image at source_url into a PDF",
    )
    async def image_to_pdf(body: ConvertRequest, request: Request) -> ConvertResponse:
        svc: Services = request.app.state.services
        url = await convert_source_url(body.source_url, svc)
        return ConvertResponse(source_url=body.source_url, converted_url=url)

    @app.get("/files/{name}", summary="Download a converted PDF (local storage only)")
    async def download(name: str, request: Request):
        storage = request.app.state.services.storage
        path = storage.path_for(name) if isinstance(storage, LocalStorage) else None
        if path is None:
            return _error(404, "not_found", "No such file.")
        return FileResponse(
            path,
            media_type="application/pdf",
            headers={
                "Content-Disposition": content_disposition(name),
                "Cache-Control": "public, max-age=86400",
                "X-Content-Type-Options": "nosniff",
            },
        )

    return app
