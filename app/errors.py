"""Every client-visible failure is one exception type with a fixed status and code.

Handlers turn these into `{"detail", "code"}` JSON; anything else is a bug (500).
Messages are written here, never copied from upstream responses or exceptions.
"""

from __future__ import annotations


class ApiError(Exception):
    status: int = 400
    code: str = "bad_request"
    detail: str = "Bad request."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None):
        super().__init__(detail or self.detail)
        if detail:
            self.detail = detail
        self.headers = headers or {}


class UrlNotAllowed(ApiError):
    status, code, detail = 400, "url_not_allowed", "This URL is not allowed."


class SourceTooLarge(ApiError):
    status, code, detail = 413, "source_too_large", "The source file is too large."


class ImageTooLarge(ApiError):
    status, code, detail = 413, "image_too_large", "The image has too many pixels."


class UnsupportedImage(ApiError):
    status, code, detail = 415, "unsupported_image_type", "The source is not a supported image."


class InvalidImage(ApiError):
    status, code, detail = 422, "invalid_image", "The image is corrupt or cannot be decoded."


class SourceUnreachable(ApiError):
    status, code, detail = 502, "source_unreachable", "The source URL could not be reached."


class SourceHttpError(ApiError):
    status, code, detail = 502, "source_http_error", "The source URL answered with an error."


class SourceTimeout(ApiError):
    status, code, detail = 504, "source_timeout", "The source URL was too slow to answer."


class Busy(ApiError):
    status, code, detail = 503, "busy", "The service is busy; retry shortly."

    def __init__(self, retry_after_s: int, detail: str | None = None):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class StorageUnavailable(ApiError):
    status, code, detail = 503, "storage_unavailable", "Storing the PDF failed; retry shortly."

    def __init__(self, retry_after_s: int, detail: str | None = None):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class RateLimited(ApiError):
    status, code = 429, "rate_limited"
    detail = "Too many requests from your address; slow down."

    def __init__(self, retry_after_s: int, detail: str | None = None):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})


class SourceBadRedirect(ApiError):
    status, code = 502, "source_bad_redirect"
    detail = "The source URL redirected to a malformed URL."


class RequestTooLarge(ApiError):
    status, code, detail = 413, "request_too_large", "The request body is too large."


class ClientClosedRequest(ApiError):
    """The client went away before its request arrived; nobody reads the answer."""

    status, code, detail = 499, "client_closed_request", "The client closed the request."


class ConversionTimeout(ApiError):
    status, code = 422, "conversion_timeout"
    detail = "Converting the image took too long; it was stopped."


class ConversionTooLarge(ApiError):
    status, code = 413, "conversion_memory_exceeded"
    detail = "Converting the image needed more memory than it was allowed; it was stopped."


class ConversionCrashed(ApiError):
    status, code = 422, "conversion_crashed"
    detail = "The image decoder failed on this image."


class ImageTooComplex(ApiError):
    status, code = 413, "image_too_complex"
    detail = "The image has too many parts (markers, chunks, boxes or frames) to convert."
