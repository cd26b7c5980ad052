"""Per-client token buckets so one client cannot monopolise a 1 GB VM.

Behind the Google load balancer the TCP peer is the LB itself; the client is
the entry the LB appends to X-Forwarded-For: `<client>, <lb address>`, so the
SECOND-TO-LAST entry. Anything before it was written by the client and is
never trusted. Buckets live in each worker process (with N workers a client
can get up to N times the rate); an LRU cap bounds their memory.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from app.errors import RateLimited

CONVERSION_PATHS = ("/image_to_pdf",)


def client_address(scope: dict, source: str) -> str:
    """The client's address as the configured front (`peer` or `gclb`) reports it."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if source != "gclb":
        return peer
    raw = b",".join(v for k, v in scope.get("headers") or [] if k == b"x-forwarded-for")
    hops = [h.strip() for h in raw.decode("latin-1").split(",") if h.strip()]
    if len(hops) < 2:
        return peer  # not from the LB (health checks, local calls): use the peer
    candidate = hops[-2]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


class TokenBuckets:
    """`rate` tokens per second up to `burst`; one token per conversion request."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.rate = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens (at most a full bucket): 0.0 when allowed, else
        seconds until that many are available (nothing is taken then)."""
        cost = min(float(cost), float(self.burst))
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


class RateLimitMiddleware:
    """Answers 429 + Retry-After before any work (or download) starts."""

    def __init__(self, app, buckets: TokenBuckets | None, client_ip_source: str = "peer"):
        self.app = app
        self.buckets = buckets
        self.client_ip_source = client_ip_source

    async def __call__(self, scope, receive, send):
        if (
            self.buckets is None
            or scope["type"] != "http"
            or scope.get("method") != "POST"
            or not scope.get("path", "").startswith(CONVERSION_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        key = client_address(scope, self.client_ip_source)
        scope.setdefault("state", {})["rate_limit_key"] = key
        wait = self.buckets.take(key)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["error_code"] = RateLimited.code
        body = json.dumps({"detail": RateLimited.detail, "code": RateLimited.code}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(max(1, math.ceil(wait))).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def charge_images(scope: dict, buckets: TokenBuckets | None, images: int) -> None:
    """A request converting several images pays one token per image (the middleware
    took the first); raises RateLimited when the client's bucket cannot cover it."""
    key = (scope.get("state") or {}).get("rate_limit_key")
    if buckets is None or key is None or images <= 1:
        return
    wait = buckets.take(key, images - 1)
    if wait > 0:
        raise RateLimited(retry_after_s=max(1, math.ceil(wait)))
