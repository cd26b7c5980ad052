"""Logs as JSON lines (journald and Cloud Logging parse them) and Sentry for bugs.

Client mistakes (4xx) and upstream trouble are answered, not reported: Sentry
only hears about what a developer has to fix.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import uuid

from app.settings import Settings

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, separators=(",", ":"), default=str)


class OncePerInterval(logging.Filter):
    """Lets one record whose message starts with `prefix` through per `interval_s`;
    the next one carries how many were dropped in between.

    asyncio logs `socket.accept() out of system resource` for every failed
    accept: when file descriptors run out that was 200,000 lines in 30 s.
    """

    def __init__(self, prefix: str, interval_s: float = 60.0, clock=time.monotonic):
        super().__init__()
        self.prefix = prefix
        self.interval_s = interval_s
        self.clock = clock
        self.last: float | None = None
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = self.clock()
        if self.last is not None and now - self.last < self.interval_s:
            self.dropped += 1
            return False
        if self.dropped:
            record.msg = f"{record.msg} ({self.dropped} more in the last {now - self.last:.0f} s)"
            record.args = ()
        self.last, self.dropped = now, 0
        return True


ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


def configure_logging(level: str | None = None) -> None:
    level = (level or os.environ.get("LOG_LEVEL", "INFO")).upper()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "gunicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # Our middleware writes the access log; the servers' own would duplicate it.
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request at INFO: a second line per conversion, with the
    # source URL the access line leaves out. Its warnings still get through.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    asyncio_logger = logging.getLogger("asyncio")
    if not any(isinstance(f, OncePerInterval) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(OncePerInterval(ACCEPT_EXHAUSTED))
    # Servers reconfigure the root logger after import; pin our own level.
    app_logger = logging.getLogger("img2pdf")
    app_logger.setLevel(level)
    app_logger.disabled = False


def init_sentry(settings: Settings) -> bool:
    if not settings.sentry_dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        release=settings.release,
        environment=settings.environment,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        send_default_pii=False,
        max_request_body_size="never",
    )
    return True


class AccessLogMiddleware:
    """One JSON line per request with a request id, status and duration.

    Pure ASGI (not BaseHTTPMiddleware) so streaming file responses stay cheap.
    """

    def __init__(self, app, logger_name: str = "img2pdf.access"):
        self.app = app
        self.log = logging.getLogger(logger_name)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status: int | None = None

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            fields = {
                "request_id": request_id,
                "method": scope.get("method"),
                "path": scope.get("path"),
                # No answer sent: the status a middleware recorded (499), else a bug.
                "status": status if status is not None else scope["state"].get("status", 500),
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
            }
            error_code = scope["state"].get("error_code")
            if error_code:
                fields["error_code"] = error_code
            self.log.info("request", extra={"fields": fields})
