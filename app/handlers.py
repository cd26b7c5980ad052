"""Exception handlers: every failure becomes `{"detail", "code"}` JSON.

An `ApiError` (app/errors.py) carries its own status and code. FastAPI's and
Starlette's own failures (validation, bad JSON, 404/405, a client hanging up)
are mapped to the same shape here; anything else is a bug: a 500 that says
nothing, its traceback in the log and Sentry.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from app.errors import ApiError, ClientClosedRequest

log = logging.getLogger("img2pdf")

_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def error_response(
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


def install_error_handlers(app: FastAPI) -> None:
    """Every failure answers `{"detail", "code"}` JSON; only a bug is a 500."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        request.scope.setdefault("state", {})["error_code"] = exc.code
        return error_response(
            exc.status, exc.code, exc.detail, exc.headers, getattr(exc, "item", None)
        )

    def invalid(request: Request, where: str):
        request.scope.setdefault("state", {})["error_code"] = "invalid_request"
        if request.url.path.endswith("/upload"):
            detail = 'Send multipart/form-data with image files in parts named "files"'
        else:
            detail = (
                'Send JSON like {"source_url": "https://example.com/cat.png"},'
                ' or "source_urls" with a list of such URLs'
            )
        return error_response(422, "invalid_request", detail + where + ".")

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
        return error_response(exc.status_code, code, detail, getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect):
        # The client hung up mid-body: its event, not ours. Logged by the access
        # line (499), never as an error and never to Sentry.
        gone = ClientClosedRequest()
        request.scope.setdefault("state", {})["error_code"] = gone.code
        return error_response(gone.status, gone.code, gone.detail)

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception):
        # The traceback goes to the log and Sentry (the exception propagates to
        # the server-error middleware after this response); the client learns nothing.
        log.error("unhandled error", exc_info=exc)
        return error_response(500, "internal_error", "Internal error.")
