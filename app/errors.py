"""Every client-visible failure: one exception type with a fixed status and code.

The handlers (app/handlers.py) turn these into `{"detail", "code"}` JSON, plus
`item` when one image of several failed; anything else is a bug (500). Messages
are written here, never copied from upstream responses or exceptions.

The hierarchy, grouped by whose fault it is, with each status and code (each
class states its own in the same two lines; tests/unit/test_errors.py checks
that this tree matches them):

    ApiError                       the base: status, code, detail, headers
    ├── Retryable                  the service, for now: sends Retry-After
    │   ├── Busy                   503 busy (admission: memory or data budget)
    │   ├── StorageUnavailable     503 storage_unavailable
    │   └── RateLimited            429 rate_limited
    ├── the request
    │   ├── UrlNotAllowed          400 url_not_allowed (the SSRF guard)
    │   ├── RequestTooLarge        413 request_too_large (JSON body cap)
    │   ├── UriTooLong             414 uri_too_long
    │   ├── TooManyImages          413 too_many_images (MAX_PAGES)
    │   ├── UploadTooLarge         413 upload_too_large (MAX_UPLOAD_BYTES)
    │   ├── BadUpload              422 invalid_request (not a usable form)
    │   └── ClientClosedRequest    499 client_closed_request (logged only)
    ├── the source URL
    │   ├── SourceUnreachable      502 source_unreachable
    │   ├── SourceHttpError        502 source_http_error
    │   ├── SourceBadRedirect      502 source_bad_redirect
    │   ├── SourceTimeout          504 source_timeout
    │   └── SourceTooLarge         413 source_too_large (MAX_SOURCE_BYTES)
    ├── the image
    │   ├── UnsupportedImage       415 unsupported_image_type
    │   ├── InvalidImage           422 invalid_image
    │   ├── ImageTooLarge          413 image_too_large (MAX_IMAGE_PIXELS)
    │   ├── ImageTooComplex        413 image_too_complex
    │   ├── ConversionTimeout      422 conversion_timeout
    │   ├── ConversionTooLarge     413 conversion_memory_exceeded
    │   ├── ConversionCrashed      422 conversion_crashed
    │   └── BatchTooLarge          413 batch_too_large (pages never fit the budgets)
    └── ItemFailed                 its cause's status and code, plus `item`
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


class Retryable(ApiError):
    """A failure of the moment, not of the request: the answer says when to retry."""

    def __init__(self, retry_after_s: int, detail: str | None = None):
        super().__init__(detail, headers={"Retry-After": str(retry_after_s)})
        self.retry_after_s = retry_after_s


class Busy(Retryable):
    """Admission: no room in this worker's memory or download budget in time."""

    status, code = 503, "busy"
    detail = "The service is busy; retry shortly."


class StorageUnavailable(Retryable):
    """The bucket (or the data folder) failed; nothing was stored."""

    status, code = 503, "storage_unavailable"
    detail = "Storing the PDF failed; retry shortly."


class RateLimited(Retryable):
    """This client's token bucket is empty (app/ratelimit.py)."""

    status, code = 429, "rate_limited"
    detail = "Too many requests from your address; slow down."


# --- the request ---


class UrlNotAllowed(ApiError):
    """Scheme, credentials, port, or an address that is not public (app/fetch.py)."""

    status, code = 400, "url_not_allowed"
    detail = "This URL is not allowed."


class RequestTooLarge(ApiError):
    """The JSON body is over MAX_JSON_BODY_BYTES (app/bodycap.py)."""

    status, code = 413, "request_too_large"
    detail = "The request body is too large."


class UriTooLong(ApiError):
    """The request target (path and query) is over app/bodycap.py's cap."""

    status, code = 414, "uri_too_long"
    detail = "The request URL is too long."


class TooManyImages(ApiError):
    """More than MAX_PAGES images in a list or an upload."""

    status, code = 413, "too_many_images"
    detail = "Too many images in one request."


class UploadTooLarge(ApiError):
    """The whole multipart body, counted as it arrives (app/uploads.py)."""

    status, code = 413, "upload_too_large"
    detail = "The upload is too large."


class BadUpload(ApiError):
    """Not a multipart form with image files in parts named "files"."""

    status, code = 422, "invalid_request"
    detail = 'Send multipart/form-data with image files in parts named "files".'


class ClientClosedRequest(ApiError):
    """The client went away before its request arrived; nobody reads the answer."""

    status, code = 499, "client_closed_request"
    detail = "The client closed the request."


# --- the source URL ---


class SourceUnreachable(ApiError):
    """No connection: DNS, refused, reset, or a TLS failure."""

    status, code = 502, "source_unreachable"
    detail = "The source URL could not be reached."


class SourceHttpError(ApiError):
    """An error status, too many redirects, or a redirect without a Location."""

    status, code = 502, "source_http_error"
    detail = "The source URL answered with an error."


class SourceBadRedirect(ApiError):
    """A Location that is not an absolute http(s) URL."""

    status, code = 502, "source_bad_redirect"
    detail = "The source URL redirected to a malformed URL."


class SourceTimeout(ApiError):
    """Connect, read, total or minimum-rate timeout: the source was too slow."""

    status, code = 504, "source_timeout"
    detail = "The source URL was too slow to answer."


class SourceTooLarge(ApiError):
    """More than MAX_SOURCE_BYTES on the wire (or in one uploaded file)."""

    status, code = 413, "source_too_large"
    detail = "The source file is too large."


# --- the image ---


class UnsupportedImage(ApiError):
    """Sniffed from the first bytes, never from a Content-Type."""

    status, code = 415, "unsupported_image_type"
    detail = "The source is not a supported image."


class InvalidImage(ApiError):
    """A supported type that does not decode: truncated, corrupt, inconsistent."""

    status, code = 422, "invalid_image"
    detail = "The image is corrupt or cannot be decoded."


class ImageTooLarge(ApiError):
    """Width x height over MAX_IMAGE_PIXELS, read from the header before decoding."""

    status, code = 413, "image_too_large"
    detail = "The image has too many pixels."


class ImageTooComplex(ApiError):
    """More markers, chunks, boxes or frames than app/engine/structure.py allows."""

    status, code = 413, "image_too_complex"
    detail = "The image has too many parts (markers, chunks, boxes or frames) to convert."


class ConversionTimeout(ApiError):
    """The conversion's child process ran past CONVERT_TIMEOUT and was killed."""

    status, code = 422, "conversion_timeout"
    detail = "Converting the image took too long; it was stopped."


class ConversionTooLarge(ApiError):
    """The conversion's child process hit its memory limit."""

    status, code = 413, "conversion_memory_exceeded"
    detail = "Converting the image needed more memory than it was allowed; it was stopped."


class ConversionCrashed(ApiError):
    """The decoder's child process died (a signal or an unexpected exit)."""

    status, code = 422, "conversion_crashed"
    detail = "The image decoder failed on this image."


class BatchTooLarge(ApiError):
    """Several images whose pages can never fit the data pool or whose join the work pool."""

    status, code = 413, "batch_too_large"
    detail = "These images together need more memory than this service allows."


class ItemFailed(ApiError):
    """One image of several failed: the original status and code, and which one."""

    def __init__(self, cause: ApiError, index: int, label: str = ""):
        named = f' ("{label}")' if label else ""
        super().__init__(f"Image {index}{named}: {cause.detail}", headers=cause.headers)
        self.status = cause.status
        self.code = cause.code
        self.item = index
