#!/usr/bin/env python3
"""Load test of one e2-micro: the real service under the VM's CPU and memory limits.

    .venv/bin/python scripts/loadtest.py --mode short            # CI, under 2 minutes
    .venv/bin/python scripts/loadtest.py --mode full --plots docs/img

What it does, all on loopback and all bounded in time and request count:

1. Makes a corpus of source images once (cached under /var/cache/img2pdf-tests,
   or the temp dir): photo-like JPEGs of 1-12 MP, screenshot/photo/alpha PNGs,
   and bad inputs (HTML, an oversized body, a pixel bomb, a closed port).
2. Serves them from a separate process with 50-200 ms of latency per request.
3. Starts `scripts/entrypoint.sh prod` inside a fresh cgroup limited like an
   e2-micro (0.5 CPU: quota 50000 us per 100000 us; 1 GiB; no swap), with the
   host's backend (tests/support/cgroups.py): `systemd-run --scope` on a
   systemd + cgroup v2 host, a raw v2 group, or v1 cpu/memory groups. The
   service's first process is inside before it execs, so gunicorn and every
   worker it forks are inside before they exist.
4. Offers an open-loop Poisson arrival rate, step by step, from an asyncio +
   httpx client (timeout 30 s, the load balancer's backend timeout), and
   records per step: throughput, latency percentiles, status mix, client-side
   failures (timeouts, resets), CPU used and throttled, peak memory.
5. Checks for OOM kills (v1 memory.oom_control, v2 memory.events, the log's
   "was sent SIGKILL"),
   removes the cgroups, and writes a JSON report (+ markdown tables, plots).

Exit status: 0 when every answer was one the contract allows for its input
(good images: 200 or 503; bad ones: their 4xx/502 or 503), no request timed
out or lost its connection, and nothing was OOM-killed; 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import io
import json
import math
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import cgroups  # noqa: E402
from tests.support.images import non_image, pixel_bomb_png  # noqa: E402
from tests.support.servers import free_port  # noqa: E402

GIB = 1024**3
MIB = 1024**2
HOST = cgroups.detect()
CPU_QUOTA_US, CPU_PERIOD_US = 50_000, 100_000  # e2-micro: 2 vCPU at 25 % = 0.5 CPU
MEMORY_LIMIT = GIB
CLIENT_TIMEOUT_S = 30.0  # the load balancer's backend timeout (backend_timeout_sec)
SOURCE_DELAY_S = (0.05, 0.2)
CORPUS_VERSION = "v1"
MAX_REQUESTS = 20_000  # hard cap across a whole run, whatever the steps say
MAX_INFLIGHT = 400  # the client never holds more open requests than this

# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Kind:
    """One kind of request in the mix: which source, how often, what answers are right."""

    name: str
    weight: float  # percent of the mix
    path: str  # on the source server ("" = unreachable)
    expect: tuple[int, ...]
    good: bool  # a valid image the service should convert


JPEG_SIZES = {1: (1152, 864), 2: (1632, 1224), 4: (2304, 1728), 8: (3264, 2448), 12: (4000, 3000)}

# 70 % JPEG (1-12 MP, smaller ones commoner), 20 % PNG, 10 % bad inputs.
MIX = (
    Kind("jpeg-1mp", 18, "/jpeg-1mp.jpg", (200,), True),
    Kind("jpeg-2mp", 16, "/jpeg-2mp.jpg", (200,), True),
    Kind("jpeg-4mp", 14, "/jpeg-4mp.jpg", (200,), True),
    Kind("jpeg-8mp", 12, "/jpeg-8mp.jpg", (200,), True),
    Kind("jpeg-12mp", 10, "/jpeg-12mp.jpg", (200,), True),
    Kind("png-screenshot", 10, "/png-screenshot.png", (200,), True),
    Kind("png-photo-2mp", 5, "/png-photo.png", (200,), True),
    Kind("png-alpha-1.4mp", 5, "/png-alpha.png", (200,), True),
    Kind("bad-html", 3, "/not-an-image.html", (415,), False),
    Kind("bad-unreachable", 3, "", (502,), False),
    # 20 MiB past the cap, half of them chunked: the service reads the whole cap
    # before it can say 413. Past capacity its 0.5 CPU may not read that within
    # SOURCE_TOTAL_TIMEOUT / SOURCE_MIN_RATE, and 504 is then the documented answer.
    Kind("bad-too-large-bytes", 2, "/too-large.jpg", (413, 504), False),
    Kind("bad-pixel-bomb", 2, "/pixel-bomb.png", (413,), False),
)
# The worst allowed input for memory: big RGBA PNGs take img2pdf's alpha path
# (~11 B/pixel): eight at once would pass 1 GiB without admission. (16 MP needs
# more than the whole default budget and gets 413 at once: not a memory test.)
WORST_MIX = (Kind("png-alpha-8mp", 100, "/png-alpha-8mp.png", (200,), True),)


def _photo(w: int, h: int, seed: int, grain: float = 0.25) -> Image.Image:
    """Smooth colour fields plus grain: compresses like a phone photo (~0.33 B/px at q85)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    base = Image.frombytes("RGB", (16, 12), rng.randbytes(16 * 12 * 3))
    base = base.resize((w, h), Image.Resampling.BICUBIC)
    mid_size = (max(1, w // 16), max(1, h // 16))
    mid = Image.frombytes("RGB", mid_size, rng.randbytes(mid_size[0] * mid_size[1] * 3))
    base = Image.blend(base, mid.resize((w, h), Image.Resampling.BILINEAR), 0.3)
    if not grain:
        return base
    noise = Image.merge("RGB", [Image.effect_noise((w, h), 64) for _ in range(3)])
    return Image.blend(base, noise, grain)


def _screenshot(w: int, h: int, seed: int) -> Image.Image:
    """Flat UI blocks, lines of 'text' and one photo: a typical screenshot PNG."""
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    im = Image.new("RGB", (w, h), (246, 247, 249))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x, y = rng.randrange(w), rng.randrange(h)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.rectangle([x, y, x + rng.randrange(40, 400), y + rng.randrange(20, 200)], colour)
    for y in range(0, h, 18):
        x = 20
        while x < w - 80:
            n = rng.randrange(2, 12) * 7
            draw.rectangle([x, y + 4, x + n, y + 12], (40, 40, 40))
            x += n + 7
    im.paste(_photo(w // 3, h // 3, seed), (w // 2, h // 3))
    return im


def _cutout(w: int, h: int, seed: int, grain: float = 0.25) -> Image.Image:
    """RGBA photo cut out on a transparent background: img2pdf's alpha path."""
    im = _photo(w, h, seed, grain).convert("RGBA")
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).ellipse([w // 10, h // 10, w * 9 // 10, h * 9 // 10], 255)
    im.putalpha(mask)
    return im


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def corpus_dir() -> Path:
    for base in (Path("/var/cache/img2pdf-tests"), Path(tempfile.gettempdir()) / "img2pdf-tests"):
        with contextlib.suppress(OSError):
            target = base / f"loadtest-{CORPUS_VERSION}"
            target.mkdir(parents=True, exist_ok=True)
            probe = target / ".writable"
            probe.touch()
            return target
    raise RuntimeError("no writable cache directory for the image corpus")


def build_corpus(directory: Path) -> dict[str, Path]:
    """Write every source file once; later runs reuse them (keyed by CORPUS_VERSION)."""
    makers = {
        f"jpeg-{mp}mp.jpg": (lambda w=w, h=h, s=mp: _encode(_photo(w, h, s), "JPEG", quality=85))
        for mp, (w, h) in JPEG_SIZES.items()
    }
    makers.update(
        {
            "png-screenshot.png": lambda: _encode(_screenshot(1920, 1080, 7), "PNG"),
            "png-photo.png": lambda: _encode(_photo(1600, 1200, 8), "PNG"),
            "png-alpha.png": lambda: _encode(_cutout(1200, 1200, 9), "PNG"),
            "png-alpha-8mp.png": lambda: _encode(_cutout(2828, 2828, 10, grain=0), "PNG"),
            "not-an-image.html": non_image,
            "pixel-bomb.png": pixel_bomb_png,
        }
    )
    files = {}
    for name, make in makers.items():
        path = directory / name
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(make())
            tmp.replace(path)
        files["/" + name] = path
    return files


# --------------------------------------------------------------------------- source server

TOO_LARGE_BYTES = 24 * MIB  # over MAX_SOURCE_BYTES (20 MiB)


class _SourceHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        server = self.server
        time.sleep(random.uniform(*SOURCE_DELAY_S))  # noqa: S311 - an origin's time to first byte
        path = self.path.split("?", 1)[0]
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            if path == "/too-large.jpg":
                self._too_large("declared" in self.path)
                return
            data = server.files.get(path)
            if data is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    def _too_large(self, declared: bool):
        """A JPEG-looking body past the byte cap; half the time without a Content-Length."""
        chunk = b"\xff\xd8\xff\xe0" + b"\0" * (256 * 1024 - 4)
        self.send_response(200)
        if declared:
            self.send_header("Content-Length", str(TOO_LARGE_BYTES))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(TOO_LARGE_BYTES // len(chunk)):
            part = chunk if i == 0 else b"\0" * len(chunk)
            self.wfile.write(part if declared else f"{len(part):x}\r\n".encode() + part + b"\r\n")
        if not declared:
            self.wfile.write(b"0\r\n\r\n")


class _SourceHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the stdlib's 5 would drop SYNs under a burst


def _serve_sources(files: dict[str, str], conn) -> None:
    httpd = _SourceHTTPServer(("127.0.0.1", 0), _SourceHandler)
    httpd.files = {p: Path(f).read_bytes() for p, f in files.items()}  # type: ignore[attr-defined]
    conn.send(httpd.server_address[1])
    httpd.serve_forever()


class SourceProcess:
    """The origin servers, in their own process so they never compete for the client's GIL."""

    def __init__(self, files: dict[str, Path]):
        ctx = multiprocessing.get_context("fork")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve_sources, args=({p: str(f) for p, f in files.items()}, child), daemon=True
        )
        self.proc.start()
        if not parent.poll(30):
            raise RuntimeError("source server did not start")
        self.port = parent.recv()

    def url(self, kind: Kind, n: int) -> str:
        if not kind.path:
            return f"http://127.0.0.1:{closed_port()}/gone.jpg"
        suffix = "?declared" if kind.path == "/too-large.jpg" and n % 2 else f"?n={n}"
        return f"http://127.0.0.1:{self.port}{kind.path}{suffix}"

    def close(self):
        if self.proc.is_alive():
            self.proc.terminate()
        self.proc.join(10)


_CLOSED_PORT: int | None = None


def closed_port() -> int:
    """A loopback port nothing listens on (connection refused -> 502)."""
    global _CLOSED_PORT
    if _CLOSED_PORT is None:
        _CLOSED_PORT = free_port()
    return _CLOSED_PORT


# --------------------------------------------------------------------------- cgroups


_HOME: dict[str, Path] = {}


def own_cgroup(controller: str) -> Path:
    """This process's v1 group as it was at start: new groups nest under it."""
    if controller not in _HOME:
        _HOME[controller] = cgroups.own_v1_cgroup(controller)
    return _HOME[controller]


class ClientBoost:
    """Puts the load generator (and the source server it forks) in a cpu group with more
    shares, so a busy host delays the measuring side less. No quota: it only wins ties.
    v1 only: on v2 the client stays where it is (a runner's job has the host to itself)."""

    def __init__(self, name: str, shares: int = 4096):
        self.dir: Path | None = None
        if HOST.backend != "v1":
            return
        for ctl in cgroups.V1_CONTROLLERS:  # remember home before leaving it
            own_cgroup(ctl)
        self.home = own_cgroup("cpu")
        self.dir = self.home / name
        self.dir.mkdir(exist_ok=True)
        (self.dir / "cpu.shares").write_text(str(shares))
        (self.dir / "cgroup.procs").write_text(str(os.getpid()))

    def close(self) -> None:
        if self.dir is None:
            return
        for pid in (self.dir / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (self.home / "cgroup.procs").write_text(pid)
        deadline = time.monotonic() + 10
        while self.dir.exists():
            try:
                self.dir.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def make_cgroup(name: str, cpu_weight: int = 800) -> cgroups.Group:
    """An e2-micro's limits (0.5 CPU, 1 GiB, no swap) with the host's backend.

    The weight (v1: 8192 shares) only matters when the host is busy: it lets the service
    have its 0.5 CPU there too (a VM's baseline is its own), while the quota still caps it."""
    if HOST.backend == "v1":
        for ctl in cgroups.V1_CONTROLLERS:
            own_cgroup(ctl)
    limits = cgroups.Limits(
        cpu_quota_us=CPU_QUOTA_US,
        cpu_period_us=CPU_PERIOD_US,
        memory_max=MEMORY_LIMIT,
        cpu_weight=cpu_weight,
    )
    return cgroups.make_group(name, limits, HOST)


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class Variant:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""


class LimitedService:
    """`scripts/entrypoint.sh prod` inside fresh e2-micro cgroups, in its own process group."""

    def __init__(self, variant: Variant, workdir: Path):
        self.variant = variant
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / f"data-{self.port}"
        self.log_path = workdir / f"service-{variant.name}-{self.port}.log"
        self.cg = make_cgroup(f"img2pdf-load-{os.getpid()}-{self.port}")
        self.proc: subprocess.Popen | None = None
        self.samples: list[tuple[float, int, int]] = []  # (t, rss, usage)
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self.escaped: list[int] = []

    def start(self, timeout: float = 90.0) -> LimitedService:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PDF_", "SENTRY_"))},
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DATA_DIR": str(self.data_dir),
            "ALLOW_PRIVATE_SOURCE_URLS": "1",
            "VENV": str(ROOT / ".venv"),
            "PUBLIC_BASE_URL": self.base,
            **self.variant.env,
        }
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.cg.wrap([str(ROOT / "scripts" / "entrypoint.sh"), "prod"]),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log()[-4000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if _get_status(self.port, "/ping") == 200 and self._workers_up():
                    break
            time.sleep(0.3)
        else:
            self.stop()
            raise RuntimeError(f"service did not answer /ping:\n{self.log()[-4000:]}")
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        return self

    def _workers_up(self) -> bool:
        wanted = int(self.variant.env.get("WEB_CONCURRENCY", "2"))
        return self.log().count('"msg":"started"') >= wanted

    def group_pids(self) -> list[int]:
        assert self.proc
        out = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True)
        return [int(p) for p in out.stdout.split()]

    def check_confinement(self) -> dict[str, object]:
        """Every process of the service is in both limited groups (none escaped)."""
        pids = set(self.group_pids())
        held = self.cg.pids_by_controller()
        inside = {ctl: sorted(pids - held[ctl]) for ctl in ("cpu", "memory")}
        self.escaped = sorted(set(inside["cpu"]) | set(inside["memory"]))
        return {
            "service_pids": sorted(pids),
            "outside_cpu": inside["cpu"],
            "outside_memory": inside["memory"],
        }

    def _sample(self) -> None:
        """Peak anonymous memory every 0.2 s; stored PDFs deleted so page cache stays small."""
        while not self._stop_sampling.wait(0.2):
            with contextlib.suppress(OSError):
                m = self.cg.stats()
                self.samples.append((time.monotonic(), int(m["anon"]), int(m["memory_current"])))
            with contextlib.suppress(OSError):
                for p in self.data_dir.glob("*.pdf"):
                    with contextlib.suppress(OSError):
                        p.unlink()

    def peak_between(self, t0: float, t1: float) -> tuple[int, int]:
        window = [s for s in self.samples if t0 <= s[0] <= t1]
        return (max((s[1] for s in window), default=0), max((s[2] for s in window), default=0))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kills(self) -> list[str]:
        return [ln for ln in self.log().splitlines() if "was sent SIGKILL" in ln or "SIGKILL" in ln]

    def worker_boots(self) -> int:
        return len(re.findall(r"Booting worker", self.log()))

    def stop(self) -> None:
        self._stop_sampling.set()
        if self._sampler:
            self._sampler.join(5)
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def remove_cgroups(self) -> bool:
        try:
            self.cg.remove()
        except OSError:
            return False
        return not self.cg.exists


def _get_status(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def keepalive_probe(port: int, idle_s: float) -> dict[str, object]:
    """One connection, idle longer than uvicorn's 5 s default, then reused.

    The LB keeps idle backend connections for 600 s; the backend must keep them
    longer or the LB's next request on one meets a reset (a 502 to the client).
    """
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/ping")
        conn.getresponse().read()
        sock = conn.sock
        local = sock.getsockname() if sock else None
        time.sleep(idle_s)
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        resp.read()
        same = conn.sock is sock and sock is not None and sock.getsockname() == local
        return {"idle_s": idle_s, "reused": bool(same and resp.status == 200), "error": None}
    except (OSError, http.client.HTTPException) as exc:
        return {"idle_s": idle_s, "reused": False, "error": type(exc).__name__}
    finally:
        conn.close()


# --------------------------------------------------------------------------- load


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


# --------------------------------------------------------------------------- plans

DEFAULTS = Variant("defaults", {}, "WEB_CONCURRENCY=2, CONVERT_THREADS=2, budget 320 MiB")


@dataclass
class Plan:
    variant: Variant
    rates: list[float]
    duration: float
    mix: tuple[Kind, ...] = MIX
    label: str = "mix"


def plans_for(mode: str) -> list[Plan]:
    if mode == "short":
        # Under, near and well past one VM's capacity, then the worst allowed inputs.
        return [
            Plan(DEFAULTS, [2, 6, 40], 10),
            Plan(DEFAULTS, [3], 8, WORST_MIX, "worst-memory"),
        ]
    knee = [4, 6, 8, 12]
    return [
        Plan(DEFAULTS, [1, 2, 4, 6, 7, 8, 10, 12, 16, 24], 20),
        Plan(DEFAULTS, [1, 3], 20, WORST_MIX, "worst-memory"),
        Plan(Variant("workers=1", {"WEB_CONCURRENCY": "1"}), knee, 20),
        Plan(Variant("workers=3", {"WEB_CONCURRENCY": "3"}), knee, 20),
        Plan(Variant("workers=3", {"WEB_CONCURRENCY": "3"}), [1, 3], 20, WORST_MIX, "worst-memory"),
        Plan(Variant("convert_threads=1", {"CONVERT_THREADS": "1"}), knee, 20),
        Plan(Variant("convert_threads=4", {"CONVERT_THREADS": "4"}), knee, 20),
        Plan(Variant("budget=448MiB", {"WORKER_MEMORY_BUDGET": str(448 * MIB)}), knee, 20),
        Plan(
            Variant("budget=448MiB", {"WORKER_MEMORY_BUDGET": str(448 * MIB)}),
            [1, 3],
            20,
            WORST_MIX,
            "worst-memory",
        ),
        # The defaults again, last: the spread between the two is the run's noise.
        Plan(Variant("defaults-repeat", {}), knee, 20),
    ]


def run(mode: str, workdir: Path, seed: int, only: str | None) -> dict[str, object]:
    files = build_corpus(corpus_dir())
    boost = ClientBoost(f"img2pdf-loadclient-{os.getpid()}")
    try:
        return _run(mode, workdir, seed, only, files)
    finally:
        boost.close()


def _run(mode: str, workdir: Path, seed: int, only: str | None, files) -> dict[str, object]:
    sources = SourceProcess(files)
    rng = random.Random(seed)  # noqa: S311 - reproducible load, not secrets
    budget = [MAX_REQUESTS]
    report: dict[str, object] = {
        "mode": mode,
        "limits": {
            "cpu_quota_us": CPU_QUOTA_US,
            "cpu_period_us": CPU_PERIOD_US,
            "memory_limit": MEMORY_LIMIT,
            "client_timeout_s": CLIENT_TIMEOUT_S,
            "source_delay_s": SOURCE_DELAY_S,
        },
        "corpus": {p: f.stat().st_size for p, f in files.items()},
        "mix": [asdict(k) for k in MIX],
        "runs": [],
    }
    plans = plans_for(mode)
    if only:
        plans = [p for p in plans if p.variant.name == only]
    try:
        # One service per variant, reused for its plans (a fresh one per variant).
        by_variant: dict[str, list[Plan]] = {}
        for plan in plans:
            by_variant.setdefault(plan.variant.name, []).append(plan)
        for plans_of_variant in by_variant.values():
            report["runs"].append(_run_variant(plans_of_variant, sources, workdir, rng, budget))
    finally:
        sources.close()
    report["violations"] = violations(report)
    return report


def _run_variant(plans: list[Plan], sources, workdir: Path, rng, budget) -> dict[str, object]:
    variant = plans[0].variant
    svc = LimitedService(variant, workdir)
    entry: dict[str, object] = {"variant": variant.name, "env": variant.env, "steps": []}
    try:
        svc.start()
        entry["cgroup_backend"] = svc.cg.backend
        entry["limits_read_back"] = svc.cg.read_back()
        entry["confinement"] = svc.check_confinement()
        entry["keepalive"] = keepalive_probe(svc.port, 7.0)
        for plan in plans:
            for rate in plan.rates:
                step = run_step(
                    svc, sources, plan.mix, rate, plan.duration, rng, budget, plan.label
                )
                entry["steps"].append(step)
                _print_step(variant.name, step)
        mem = svc.cg.stats()
        entry["oom_kills_total"] = mem["oom_kill"]
        entry["failcnt_total"] = mem["limit_hits"]
        entry["confinement_end"] = svc.check_confinement()
    finally:
        svc.stop()
        entry["sigkill_log_lines"] = svc.kills()[:10]
        entry["log_errors"] = [
            ln[:300] for ln in svc.log().splitlines() if '"level":"error"' in ln
        ][:10]
        entry["log"] = str(svc.log_path)
        entry["cgroups_removed"] = svc.remove_cgroups()
    return entry


def _fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _print_step(variant: str, s: dict) -> None:
    print(
        f"[{variant:>18} {s['label']:>12}] offered {s['offered_per_s']:>5.1f}/s  "
        f"ok {s['ok_per_s']:5.2f}/s  p50 {_fmt_ms(s['p50_s']):>6} p95 {_fmt_ms(s['p95_s']):>6} "
        f"p99 {_fmt_ms(s['p99_s']):>6} ms  503 {s['share_503']:5.1%}  "
        f"cpu {s['cpu_share']:.2f}  rss {s['peak_rss'] / MIB:5.0f} MiB  "
        f"max_usage {s['max_usage'] / MIB:5.0f} MiB  oom {s['oom_kills']}  {s['statuses']}",
        flush=True,
    )


def violations(report: dict) -> list[str]:
    out = []
    for run_ in report["runs"]:
        v = run_["variant"]
        if not run_.get("cgroups_removed"):
            out.append(f"{v}: cgroups were not removed")
        conf = run_.get("confinement", {})
        if conf.get("outside_cpu") or conf.get("outside_memory"):
            out.append(f"{v}: service processes outside the limited cgroups: {conf}")
        if run_.get("oom_kills_total"):
            out.append(f"{v}: {run_['oom_kills_total']} OOM kill(s) in the memory cgroup")
        if run_.get("sigkill_log_lines"):
            out.append(f"{v}: workers killed: {run_['sigkill_log_lines'][:3]}")
        ka = run_.get("keepalive", {})
        if not ka.get("reused"):
            out.append(f"{v}: an idle keep-alive connection was not kept: {ka}")
        for s in run_.get("steps", []):
            where = f"{v} {s['label']} @{s['offered_per_s']}/s"
            if s["client_failures"]:
                bad = {k: n for k, n in s["statuses"].items() if not k.isdigit()}
                out.append(f"{where}: requests without an HTTP answer: {bad}")
            if s["unexpected_count"]:
                out.append(f"{where}: answers the contract does not allow: {s['unexpected']}")
            if s["busy_without_retry_after"]:
                out.append(f"{where}: 503 without Retry-After: {s['busy_without_retry_after']}")
            if s["oom_kills"]:
                out.append(f"{where}: {s['oom_kills']} OOM kill(s)")
    return out


# --------------------------------------------------------------------------- output


def markdown(report: dict) -> str:
    lines = []
    for run_ in report["runs"]:
        lines += [
            f"\n#### {run_['variant']}\n",
            "| load | offered/s | 200/s | p50 ms | p95 ms | p99 ms | 503 % | statuses | "
            "CPU used | peak RSS MiB | peak usage MiB | OOM |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
        ]
        for s in run_["steps"]:
            mix = ", ".join(f"{k}: {n}" for k, n in s["statuses"].items())
            lines.append(
                f"| {s['label']} | {s['offered_per_s']:g} | {s['ok_per_s']:.2f} | "
                f"{_fmt_ms(s['p50_s'])} | {_fmt_ms(s['p95_s'])} | {_fmt_ms(s['p99_s'])} | "
                f"{s['share_503'] * 100:.1f} | {mix} | {s['cpu_share']:.2f} | "
                f"{s['peak_rss'] / MIB:.0f} | {s['max_usage'] / MIB:.0f} | {s['oom_kills']} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict, outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    runs = [(r["variant"], [s for s in r["steps"] if s["label"] == "mix"]) for r in report["runs"]]
    runs = [(v, steps) for v, steps in runs if steps]

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for variant, steps in runs:
        x = [s["offered_per_s"] for s in steps]
        ax.plot(x, [s["ok_per_s"] for s in steps], marker="o", label=f"{variant}: 200/s")
        if variant == DEFAULTS.name:
            ax.plot(
                x,
                [s["answers_per_s"] * s["share_503"] for s in steps],
                marker="x",
                linestyle="--",
                label=f"{variant}: 503/s",
            )
    top = max((s["offered_per_s"] for _, st in runs for s in st), default=1)
    ax.plot([0, top], [0, top * 0.9], color="grey", linewidth=0.8, label="90 % of offered (ideal)")
    ax.set_xlabel("offered load (requests/s, Poisson, 90 % valid images)")
    ax.set_ylabel("answers per second")
    ax.set_title("Throughput of one e2-micro (0.5 CPU, 1 GiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = outdir / "capacity-throughput.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for variant, steps in runs:
        if variant != DEFAULTS.name:
            continue
        x = [s["offered_per_s"] for s in steps]
        for key, style in (("p50_s", "-"), ("p95_s", "--"), ("p99_s", ":")):
            ax.plot(
                x,
                [s[key] if s[key] is not None else math.nan for s in steps],
                marker="o",
                linestyle=style,
                label=f"200s: {key[:-2]}",
            )
        ax.plot(
            x,
            [s["p95_503_s"] if s["p95_503_s"] is not None else math.nan for s in steps],
            marker="x",
            linestyle="-.",
            label="503s: p95",
        )
        ax2 = ax.twinx()
        ax2.bar(x, [s["share_503"] * 100 for s in steps], width=0.6, alpha=0.2, color="red")
        ax2.set_ylabel("503 share (%)", color="red")
        ax2.set_ylim(0, 100)
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (s, log)")
    ax.set_title("Latency vs offered load, defaults (bars: share of 503s)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = outdir / "capacity-latency.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    for variant, steps in runs:
        x = [s["offered_per_s"] for s in steps]
        ax.plot(
            x,
            [s["p95_s"] if s["p95_s"] is not None else math.nan for s in steps],
            marker="o",
            label=variant,
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("p95 latency of 200s (s, log)")
    ax.set_title("Tuning variants, same run")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = outdir / "capacity-variants.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("short", "full"), default="short")
    ap.add_argument("--json", type=Path, help="write the report here")
    ap.add_argument("--markdown", type=Path, help="write the per-step tables here")
    ap.add_argument("--plots", type=Path, help="write PNG plots into this directory")
    ap.add_argument("--only", help="run only this variant (e.g. defaults)")
    ap.add_argument("--seed", type=int, default=20_240_601)
    ap.add_argument("--workdir", type=Path, help="logs and stored PDFs (default: a temp dir)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("root is needed to create cgroups", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        report = run(args.mode, workdir, args.seed, args.only)
        report["elapsed_s"] = time.monotonic() - started
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str))
        if args.markdown:
            args.markdown.write_text(markdown(report))
        if args.plots:
            for p in plot(report, args.plots):
                print(f"plot: {p}")
    steps = sum(len(r["steps"]) for r in report["runs"])
    print(f"elapsed {report['elapsed_s']:.0f} s, {steps} steps")
    for v in report["violations"]:
        print(f"VIOLATION: {v}")
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
