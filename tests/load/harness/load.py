"""The open-loop client: Poisson arrivals, every answer classified, one step summarised."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

import httpx

from tests.load.harness.corpus import Kind
from tests.load.harness.service import LimitedService

CLIENT_TIMEOUT_S = 30.0  # the load balancer's backend timeout (load_balancer_backend_timeout_sec)
MAX_INFLIGHT = 400  # the client never holds more open requests than this


@dataclass
class Result:
    kind: str
    good: bool
    expect: tuple[int, ...]
    start: float
    latency: float
    status: int | None  # None: no HTTP answer (see error)
    error: str | None = None
    retry_after: bool = False


def _classify(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "disconnected"
    if isinstance(exc, httpx.ConnectError):
        return "connect_error"
    if isinstance(exc, httpx.ReadError | httpx.WriteError):
        return "reset"
    return f"error:{type(exc).__name__}"


async def _one(client, base, sources, kind: Kind, n: int, results: list[Result]) -> None:
    t0 = time.monotonic()
    try:
        r = await client.post(base + "/image_to_pdf", json={"source_url": sources.url(kind, n)})
        results.append(
            Result(
                kind.name,
                kind.good,
                kind.expect,
                t0,
                time.monotonic() - t0,
                r.status_code,
                retry_after="retry-after" in r.headers,
            )
        )
    except Exception as exc:  # every failure is a finding, none may escape
        results.append(
            Result(
                kind.name, kind.good, kind.expect, t0, time.monotonic() - t0, None, _classify(exc)
            )
        )


async def offer(base, sources, mix, rate: float, duration: float, rng: random.Random, budget):
    """Open loop: Poisson arrivals at `rate`/s for `duration` s; waits for every answer."""
    results: list[Result] = []
    kinds, weights = list(mix), [k.weight for k in mix]
    limits = httpx.Limits(max_connections=MAX_INFLIGHT, max_keepalive_connections=MAX_INFLIGHT)
    timeout = httpx.Timeout(CLIENT_TIMEOUT_S, connect=5.0)
    client_shed = 0
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False) as client:
        tasks: set[asyncio.Task] = set()
        t0 = time.monotonic()
        next_at = t0
        n = 0
        while True:
            next_at += rng.expovariate(rate)
            if next_at - t0 >= duration or budget[0] <= 0:
                break
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if len(tasks) >= MAX_INFLIGHT:
                client_shed += 1
                continue
            kind = rng.choices(kinds, weights)[0]
            n += 1
            budget[0] -= 1
            task = asyncio.create_task(_one(client, base, sources, kind, n, results))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        launched_until = time.monotonic()
        if tasks:
            await asyncio.wait(set(tasks), timeout=CLIENT_TIMEOUT_S + 10)
    return results, t0, launched_until, client_shed


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def summarise(results: list[Result], t0: float, duration: float) -> dict[str, object]:
    statuses: dict[str, int] = {}
    for r in results:
        key = str(r.status) if r.status is not None else r.error or "error"
        statuses[key] = statuses.get(key, 0) + 1
    window_end = t0 + duration
    ok = [r for r in results if r.status == 200]
    ok_in_window = [r for r in ok if r.start + r.latency <= window_end]
    good = [r for r in results if r.good]
    answered = [r for r in results if r.status is not None]
    unexpected = [r for r in results if r.status is not None and r.status not in (*r.expect, 503)]
    lat_ok = [r.latency for r in ok]
    return {
        "requests": len(results),
        "statuses": dict(sorted(statuses.items())),
        "ok": len(ok),
        "ok_per_s": len(ok_in_window) / duration,
        "answers_per_s": len([r for r in answered if r.start + r.latency <= window_end]) / duration,
        "good_share_ok": len([r for r in good if r.status == 200]) / len(good) if good else None,
        "share_503": statuses.get("503", 0) / len(results) if results else 0.0,
        "busy_without_retry_after": sum(r.status == 503 and not r.retry_after for r in results),
        "p50_s": _pct(lat_ok, 50),
        "p95_s": _pct(lat_ok, 95),
        "p99_s": _pct(lat_ok, 99),
        "max_s": max(lat_ok, default=None),
        "p95_503_s": _pct([r.latency for r in results if r.status == 503], 95),
        "client_failures": len([r for r in results if r.status is None]),
        "unexpected": sorted({f"{r.kind}:{r.status}" for r in unexpected}),
        "unexpected_count": len(unexpected),
        "by_kind_p95_s": {
            k: _pct([r.latency for r in ok if r.kind == k], 95)
            for k in sorted({r.kind for r in ok})
        },
    }


def run_step(svc: LimitedService, sources, mix, rate, duration, rng, budget, label=""):
    # Settle: memory freed, no stragglers, then measure from a clean peak.
    time.sleep(2.0)
    peak_reset = svc.cg.reset_peak()
    st0 = svc.cg.stats()
    boots0 = svc.worker_boots()
    wall0 = time.monotonic()
    results, t0, _launched_until, shed = asyncio.run(
        offer(svc.base, sources, mix, rate, duration, rng, budget)
    )
    wall1 = time.monotonic()
    st1 = svc.cg.stats()
    peak_rss, peak_usage = svc.peak_between(wall0, wall1)
    step = {
        "label": label,
        "offered_per_s": rate,
        "duration_s": duration,
        "wall_s": wall1 - wall0,
        "client_shed": shed,
        **summarise(results, t0, duration),
        "cpu_s": st1["cpu_usage_s"] - st0["cpu_usage_s"],
        "cpu_share": (st1["cpu_usage_s"] - st0["cpu_usage_s"]) / (wall1 - wall0),
        "nr_throttled": st1["nr_throttled"] - st0["nr_throttled"],
        "throttled_s": st1["throttled_s"] - st0["throttled_s"],
        "peak_rss": peak_rss,
        "peak_usage_sampled": peak_usage,
        # The group's high-water mark: since this step where the kernel can reset it
        # (v1; v2 from Linux 6.12), else since the service started (never lower).
        "max_usage": st1["memory_peak"],
        "max_usage_since_start": not peak_reset,
        "failcnt": st1["limit_hits"] - st0["limit_hits"],
        "oom_kills": st1["oom_kill"] - st0["oom_kill"],
        "worker_boots": svc.worker_boots() - boots0,
    }
    step["cpu_s_per_ok"] = step["cpu_s"] / step["ok"] if step["ok"] else None
    return step
