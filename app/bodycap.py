"""Caps on a request's size that hold before anything parses it: the body of the
JSON route, and the request target (URL) of every route.

FastAPI reads the whole body into memory and then parses the JSON, so a 55 MB
list of URLs cost a worker 2.6 GB before pydantic could say "too many". This
middleware refuses a declared Content-Length over the cap at once, and counts a
chunked (or lying) body as it streams, answering 413 the moment it passes the
cap; only a body under the cap is handed on. A client that hangs up mid-body is
logged by the access line as 499, nothing else.
"""

from __future__ import annotations

import json

from app.errors import ApiError, ClientClosedRequest, RequestTooLarge, UriTooLong

# Request targets (path and query) longer than this are refused with 414;
# h11 already refuses a header block that is still incomplete past 16 KiB.
MAX_TARGET_BYTES = 8192
_URI_TOO_LONG = f"The request URL is too long: at most {MAX_TARGET_BYTES} bytes."


class BodyCapMiddleware:
    def __init__(self, app, paths: tuple[str, ...], limit: int):
        self.app = app
        self.paths = frozenset(paths)
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        if target > MAX_TARGET_BYTES:
            await self._refuse(scope, send, UriTooLong(_URI_TOO_LONG))
            return
        if scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1").strip()
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, send, RequestTooLarge(self._detail()))
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                state = scope.setdefault("state", {})
                state["error_code"] = ClientClosedRequest.code
                state["status"] = ClientClosedRequest.status
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.limit:
                await self._refuse(scope, send, RequestTooLarge(self._detail()))
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        del chunks
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _detail(self) -> str:
        return f"The request body is too large: at most {self.limit} bytes."

    async def _refuse(self, scope, send, error: ApiError) -> None:
        scope.setdefault("state", {})["error_code"] = error.code
        body = json.dumps({"detail": error.detail, "code": error.code}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
