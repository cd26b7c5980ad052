"""The FastAPI app: routes, error handlers and start-up wiring. Logic lives elsewhere."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from app.admission import Admission
from app.batch import convert_many, url_source
from app.bodycap import BodyCapMiddleware
from app.errors import ApiError, ClientClosedRequest
from app.fetch import FetchPolicy
from app.observability import AccessLogMiddleware, configure_logging, init_sentry
from app.pages import PageSize
from app.pipeline import Services, convert_source_url
from app.ratelimit import RateLimitMiddleware, TokenBuckets, charge_images
from app.server import GuardedH11Protocol
from app.settings import Settings
from app.storage import LocalStorage, content_disposition, download_filename, make_storage
from app.uploads import UPLOAD_OPENAPI, read_upload

log = logging.getLogger("img2pdf")

EXAMPLE_SOURCE = "https://example.com/cat.png"
EXAMPLE_SOURCES = ["https://example.com/page-1.jpg", "https://example.com/page-2.png"]
EXAMPLE_PDF = "https://storage.googleapis.com/img2pdf-pdfs/0b7c6a52-3d1e-4f4e-9a7b-2f0c1d2e3f40.pdf"
WEB_DIR = Path(__file__).resolve().parent / "web"
PAGE_SIZE_HELP = (
    "`image` (default): each page is the image's own size. `A4` or `Letter`: portrait"
    " paper, the image scaled up or down to fit and centred."
)
SourceUrl = Annotated[str, Field(min_length=1, max_length=2048)]


class ConvertRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"source_url": EXAMPLE_SOURCE},
                {"source_urls": EXAMPLE_SOURCES, "page_size": "A4"},
            ]
        }
    )

    source_url: SourceUrl | None = Field(
        default=None,
        description="http(s) URL of a JPEG, PNG, GIF, TIFF, WebP, BMP or JPEG 2000 image.",
    )
    source_urls: list[SourceUrl] | None = Field(
        default=None,
        min_length=1,
        description="Instead of source_url: several image URLs (1 to MAX_PAGES, default 20)"
        " -> one PDF with one page per image, in this order.",
    )
    page_size: PageSize = Field(default=PageSize.image, description=PAGE_SIZE_HELP)

    @field_validator("page_size", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        if isinstance(value, str):
            return {p.value.lower(): p for p in PageSize}.get(value.strip().lower(), value)
        return value

    @model_validator(mode="after")
    def _one_of(self) -> ConvertRequest:
        if (self.source_url is None) == (self.source_urls is None):
            raise ValueError("send either source_url or source_urls")
        return self


class ConvertResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"source_url": EXAMPLE_SOURCE, "converted_url": EXAMPLE_PDF},
                {
                    "source_url": EXAMPLE_SOURCES[0],
                    "source_urls": EXAMPLE_SOURCES,
                    "converted_url": EXAMPLE_PDF,
                },
            ]
        }
    )

    source_url: str = Field(description="The source URL exactly as sent (the first of a list).")
    source_urls: list[str] | None = Field(
        default=None, description="Only for a list request: the URLs as sent, one page each."
    )
    converted_url: str = Field(description="Where to download the PDF.")


class UploadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"source_files": ["page-1.jpg", "page-2.png"], "converted_url": EXAMPLE_PDF}
            ]
        }
    )

    source_files: list[str] = Field(description="The uploaded file names, one page each, in order.")
    converted_url: str = Field(description="Where to download the PDF.")


class Limits(BaseModel):
    max_pages: int = Field(description="Images per request (URL list or upload).")
    max_upload_bytes: int = Field(description="Total size of one upload.")
    max_source_bytes: int = Field(description="Size of one image file.")
    max_image_pixels: int = Field(description="Pixels of one image (width x height).")


class ErrorBody(BaseModel):
    detail: str
    code: str
    item: int | None = Field(
        default=None, description="Which image (1-based) failed, when several were sent."
    )


ERROR_RESPONSES = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "URL not allowed (scheme, credentials, port, or a non-public address).",
        413: "Source too large (bytes or pixels).",
        415: "Not a supported image.",
        422: "Malformed request, or a corrupt image.",
        502: "Source unreachable or answered an error.",
        429: "Too many requests from this client (see Retry-After).",
        503: "Busy (see Retry-After) or storage unavailable.",
        504: "Source too slow.",
    }.items()
}

# The page loads only its own files; previews of pasted URLs are plain <img> loads.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data: https: http:; object-src 'none';"
        " base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def _error(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    item: int | None = None,
):
    body: dict[str, object] = {"detail": detail, "code": code}
    if item is not None:
        body["item"] = item
    return JSONResponse(body, status_code=status, headers=headers)


_FASTAPI_BODY_ERROR = "There was an error parsing the body"
_NOT_JSON = " (the body is not valid JSON)"

# A 422 names this many fields at most, then how many more there were.
_FIELDS_SHOWN = 5


def _field_summary(fields: list[str]) -> str:
    shown = ", ".join(fields[:_FIELDS_SHOWN])
    more = len(fields) - _FIELDS_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def _field_order(field: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in field.split("."))


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        request.scope.setdefault("state", {})["error_code"] = exc.code
        return _error(exc.status, exc.code, exc.detail, exc.headers, getattr(exc, "item", None))

    def invalid(request: Request, where: str):
        request.scope.setdefault("state", {})["error_code"] = "invalid_request"
        if request.url.path.endswith("/upload"):
            detail = 'Send multipart/form-data with image files in parts named "files"'
        else:
            detail = (
                'Send JSON like {"source_url": "https://example.com/cat.png"},'
                ' or "source_urls" with a list of such URLs'
            )
        return _error(422, "invalid_request", detail + where + ".")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            # Its "location" is a character offset, not a field.
            return invalid(request, _NOT_JSON)
        named = {".".join(str(p) for p in e.get("loc", ())[1:]) for e in errors}
        fields = sorted((f for f in named if f), key=_field_order)
        return invalid(request, f" (check: {_field_summary(fields)})" if fields else "")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
            # FastAPI's answer when decoding the body raised something other than
            # JSONDecodeError (not UTF-8, nested past the recursion limit, a number
            # of more than 4,300 digits): the same bad JSON as `{{{`, so the same 422.
            return invalid(request, _NOT_JSON)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return _error(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # The client hung up mid-body: its event, not ours. Logged by the access
        # line (499), never as an error and never to Sentry.
        gone = ClientClosedRequest()
        request.scope.setdefault("state", {})["error_code"] = gone.code
        return _error(gone.status, gone.code, gone.detail)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        # The traceback goes to the log and Sentry (the exception propagates to
        # the server-error middleware after this response); the client learns nothing.
        log.error("unhandled error", exc_info=exc)
        return _error(500, "internal_error", "Internal error.")


class PdfFile(FileResponse):
    """A stored PDF. Starlette answered a Range it could not read with a plain-text
    400 and one past the end with an empty 416; a malformed Range is now ignored
    (the whole file, as RFC 9110 allows) and the 416 is checked by `download`."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader:
            return []


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


def create_app(settings: Settings | None = None) -> FastAPI:
    """App factory: gunicorn and uvicorn call it once per worker process."""
    settings = settings or Settings.from_env()
    configure_logging()
    init_sentry(settings)
    GuardedH11Protocol.configure(settings)  # the HTTP server's limits in this process

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
        # Starlette answered `/ping/` with a 307 to `http://<the request's Host>/ping`:
        # a redirect to whatever host a client names. No route here needs it.
        redirect_slashes=False,
    )
    _install_error_handlers(app)
    # Outermost last: the access log sees (and times) rate-limited answers too.
    buckets = make_buckets(settings)
    app.state.rate_buckets = buckets
    # The JSON body and every URL are capped before anything parses them
    # (inside the rate limit, which reads no body at all).
    app.add_middleware(
        BodyCapMiddleware, paths=("/image_to_pdf",), limit=settings.max_json_body_bytes
    )
    app.add_middleware(
        RateLimitMiddleware,
        buckets=buckets,
        client_ip_source=settings.client_ip_source,
        lb_ranges=settings.lb_source_ranges,
    )
    app.add_middleware(AccessLogMiddleware)

    def also_head(path: str, endpoint) -> None:
        """HEAD answers like GET without the body (curl -I, link checkers, monitors);
        kept out of the schema, where a second method with the same operation id
        made FastAPI warn on every /openapi.json."""
        app.add_api_route(path, endpoint, methods=["HEAD"], include_in_schema=False)

    @app.get("/ping", summary="Liveness check")
    async def ping() -> dict[str, str]:
        return {"ping": "pong"}

    also_head("/ping", ping)

    @app.post(
        "/image_to_pdf",
        response_model=ConvertResponse,
        response_model_exclude_none=True,
        responses=ERROR_RESPONSES,
        summary="Convert the image at source_url (or several at source_urls) into a PDF",
    )
    async def image_to_pdf(body: ConvertRequest, request: Request) -> ConvertResponse:
        """One image: `{"source_url"}`, answered `{"source_url", "converted_url"}`.

        Several: `{"source_urls": [...]}` makes one PDF with a page per image, in order,
        answered with the list too. If any image fails, nothing is stored and the
        error's `item` (and its `detail`) says which one (1-based).
        """
        svc: Services = request.app.state.services
        if body.source_url is not None:
            charge_images(request.scope, request.app.state.rate_buckets, 1)
            if body.page_size == PageSize.image:
                url = await convert_source_url(body.source_url, svc)
            else:
                url = await convert_many([url_source(body.source_url, svc)], body.page_size, svc)
            return ConvertResponse(source_url=body.source_url, converted_url=url)
        urls = body.source_urls or []
        charge_images(request.scope, request.app.state.rate_buckets, len(urls))
        url = await convert_many([url_source(u, svc) for u in urls], body.page_size, svc)
        return ConvertResponse(source_url=urls[0], source_urls=urls, converted_url=url)

    @app.post(
        "/image_to_pdf/upload",
        response_model=UploadResponse,
        responses=ERROR_RESPONSES,
        summary="Convert uploaded image files into one PDF",
        openapi_extra=UPLOAD_OPENAPI,
    )
    async def upload(request: Request) -> UploadResponse:
        """`multipart/form-data` with one or more parts named `files` (one page each, in
        order) and an optional `page_size` field. Same limits and checks as URLs, plus a
        total size cap (MAX_UPLOAD_BYTES). Example:
        `curl -F files=@page-1.jpg -F files=@page-2.png -F page_size=A4 .../image_to_pdf/upload`
        """
        svc: Services = request.app.state.services
        async with read_upload(request, svc) as (sources, page_size):
            charge_images(request.scope, request.app.state.rate_buckets, len(sources))
            url = await convert_many(sources, page_size, svc)
            names = [s.name for s in sources]
        return UploadResponse(source_files=names, converted_url=url)

    @app.get("/limits", response_model=Limits, summary="Limits a client should check first")
    async def limits(request: Request) -> Limits:
        s: Settings = request.app.state.services.settings
        return Limits(
            max_pages=s.max_pages,
            max_upload_bytes=s.max_upload_bytes,
            max_source_bytes=s.max_source_bytes,
            max_image_pixels=s.max_image_pixels,
        )

    also_head("/limits", limits)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(WEB_DIR / "index.html", headers=PAGE_HEADERS)

    also_head("/", page)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/files/{name}", summary="Download a converted PDF (local storage only)")
    async def download(name: str, request: Request):
        storage = request.app.state.services.storage
        path = storage.path_for(name) if isinstance(storage, LocalStorage) else None
        if path is None:
            return _error(404, "not_found", "No such file.")
        filename = storage.filename_for(name) or download_filename(name)
        try:
            stat = path.stat()  # once, here: a file deleted since `path_for` is a 404
        except OSError:
            return _error(404, "not_found", "No such file.")
        size = stat.st_size
        http_range = request.headers.get("range")
        if http_range is not None and "if-range" not in request.headers:
            try:
                PdfFile._parse_range_header(http_range, size)
            except RangeNotSatisfiable:
                return _error(
                    416,
                    "range_not_satisfiable",
                    "The requested range starts past the end of the file.",
                    {"Content-Range": f"bytes */{size}"},
                )
        return PdfFile(
            path,
            stat_result=stat,
            media_type="application/pdf",
            headers={
                "Content-Disposition": content_disposition(filename),
                "Cache-Control": "public, max-age=86400",
                "X-Content-Type-Options": "nosniff",
            },
        )

    also_head("/files/{name}", download)

    return app
