"""Per-client token buckets so one client cannot monopolise a 1 GB VM.

The rule: a request costs one token per image, capped at a full bucket
(RATE_LIMIT_BURST), so every request the API accepts can pass once the bucket
is full: with the deploy's 30/min and burst 10, one image costs 1, a 20-image
list costs 10. The route takes the whole cost once it knows the count, before
any download starts; Retry-After is the time until the bucket holds that much.
An upload is also checked before its body arrives: with no token left it is
answered 429 at once (Retry-After: until one token is back).

Behind the Google load balancer the TCP peer is one of the LB's proxies
(130.211.0.0/22, 35.191.0.0/16: LB_SOURCE_RANGES); the client is the entry the
LB appends to X-Forwarded-For: `<client>, <lb address>`, so the SECOND-TO-LAST
entry. Anything before it was written by the client and is never trusted, and
the header is read only when the peer is in those ranges: anything else that
reaches the backend is keyed by its own address and cannot rotate its key.
Buckets live in each worker process (with N workers a client can get up to N
times the rate); an LRU cap bounds their memory.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from app.errors import RateLimited
from app.settings import LB_SOURCE_RANGES

CONVERSION_PATHS = ("/image_to_pdf",)
# Bodies worth refusing before they arrive (up to MAX_UPLOAD_BYTES).
EARLY_CHECK_PATHS = ("/image_to_pdf/upload",)


@functools.cache
def _networks(ranges: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(r) for r in ranges)


def _in_ranges(peer: str, networks) -> bool:
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks if net.version == addr.version)


def client_address(scope: dict, source: str, lb_ranges: tuple[str, ...] = LB_SOURCE_RANGES) -> str:
    """The client's address as the configured front (`peer` or `gclb`) reports it.

    `gclb` reads X-Forwarded-For (every header line) only from a peer inside
    `lb_ranges`; from any other peer the header is ignored.
    """
    peer = (scope.get("client") or ("unknown", 0))[0]
    if source != "gclb" or not _in_ranges(peer, _networks(lb_ranges)):
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

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - last) * self.rate)

    def wait(self, key: str, cost: float = 1.0) -> float:
        """Seconds until `cost` tokens (at most a full bucket) are there; takes nothing."""
        cost = min(float(cost), float(self.burst))
        return max(0.0, (cost - self._tokens(key, self.clock())) / self.rate)

    def take(self, key: str, cost: float = 1.0) -> float:
        """Take `cost` tokens (at most a full bucket): 0.0 when allowed, else
        seconds until that many are available (nothing is taken then)."""
        cost = min(float(cost), float(self.burst))
        now = self.clock()
        tokens = self._tokens(key, now)
        self._buckets.pop(key, None)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # most recently used last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def retry_after(wait_s: float) -> int:
    return max(1, math.ceil(wait_s))


class RateLimitMiddleware:
    """Answers 429 + Retry-After before an upload's body is read when the client has
    no token left. JSON requests (a capped, small body) are charged by the route,
    which knows the image count and so the exact Retry-After."""

    def __init__(
        self,
        app,
        buckets: TokenBuckets | None,
        client_ip_source: str = "peer",
        lb_ranges: tuple[str, ...] = LB_SOURCE_RANGES,
    ):
        self.app = app
        self.buckets = buckets
        self.client_ip_source = client_ip_source
        self.lb_ranges = lb_ranges

    async def __call__(self, scope, receive, send):
        if (
            self.buckets is None
            or scope["type"] != "http"
            or scope.get("method") != "POST"
            or not scope.get("path", "").startswith(CONVERSION_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        key = client_address(scope, self.client_ip_source, self.lb_ranges)
        scope.setdefault("state", {})["rate_limit_key"] = key
        if scope.get("path") not in EARLY_CHECK_PATHS:
            await self.app(scope, receive, send)
            return
        wait = self.buckets.wait(key)
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
                    (b"retry-after", str(retry_after(wait)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def charge_images(scope: dict, buckets: TokenBuckets | None, images: int) -> None:
    """Take the request's cost: one token per image, at most a full bucket. Raises
    RateLimited (nothing taken) when the client's bucket cannot cover it yet."""
    key = (scope.get("state") or {}).get("rate_limit_key")
    if buckets is None or key is None:
        return
    wait = buckets.take(key, max(1, images))
    if wait > 0:
        raise RateLimited(retry_after_s=retry_after(wait))
