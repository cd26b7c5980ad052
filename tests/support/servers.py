"""Real local servers for tests: a source-image server and the service itself.

Everything binds 127.0.0.1 on a free port; nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import http.client as http_client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


Route = Callable[[BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        server: SourceServer = self.server.owner  # type: ignore[attr-defined]
        if server.latency_s:
            time.sleep(random.uniform(*server.latency_s))  # an origin's time to first byte
        path = self.path.split("?", 1)[0]
        server.hits.append(path)
        route = server.routes.get(path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "9")
            self.end_headers()
            self.wfile.write(b"not found")
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(self)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the stdlib's 5 would drop SYNs under a burst


@dataclass
class SourceServer:
    """Serves source images and misbehaving sources on loopback.

    The one origin server of the suites, the benchmarks and the load harness
    (which runs it in a process of its own: tests/load/harness/origin.py).
    `latency_s` delays every answer by a uniform draw from that range.
    """

    routes: dict[str, Route] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    latency_s: tuple[float, float] | None = None

    def __post_init__(self):
        self.httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def add_bytes(self, path: str, data: bytes, content_type: str = "application/octet-stream"):
        def route(h: BaseHTTPRequestHandler):
            h.send_response(200)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        self.routes[path] = route
        return self.url(path)

    def add_status(self, path: str, status: int, body: bytes = b"upstream secret text"):
        def route(h: BaseHTTPRequestHandler):
            h.send_response(status)
            h.send_header("Content-Length", str(len(body)))
            h.end_headers()
            h.wfile.write(body)

        self.routes[path] = route
        return self.url(path)

    def add_redirect(self, path: str, location: str, status: int = 302):
        def route(h: BaseHTTPRequestHandler):
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = route
        return self.url(path)

    def add_slow(self, path: str, head: bytes, delay_s: float = 1.0, chunks: int = 1000):
        """Sends `head`, then one byte every `delay_s`: never finishes in time."""

        def route(h: BaseHTTPRequestHandler):
            h.send_response(200)
            h.send_header("Content-Length", str(len(head) + chunks))
            h.end_headers()
            h.wfile.write(head)
            h.wfile.flush()
            for _ in range(chunks):
                time.sleep(delay_s)
                h.wfile.write(b"\0")
                h.wfile.flush()

        self.routes[path] = route
        return self.url(path)

    def add_endless(self, path: str, head: bytes):
        """Chunked body that never ends (stops when the client hangs up)."""

        def route(h: BaseHTTPRequestHandler):
            h.send_response(200)
            h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            chunk = head + b"\0" * (64 * 1024 - len(head))
            for _ in range(100_000):
                h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                chunk = b"\0" * 64 * 1024

        self.routes[path] = route
        return self.url(path)

    def add_delayed(self, path: str, data: bytes, delay_s: float):
        """Answers after `delay_s` (a realistic remote source)."""

        def route(h: BaseHTTPRequestHandler):
            time.sleep(delay_s)
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)

        self.routes[path] = route
        return self.url(path)

    def add_too_large(self, path: str, size: int):
        """A JPEG-looking body of `size` bytes: with a Content-Length when the query
        says `declared`, else chunked (the service must count what it reads)."""

        def route(h: BaseHTTPRequestHandler):
            declared = "declared" in h.path
            chunk = b"\xff\xd8\xff\xe0" + b"\0" * (256 * 1024 - 4)
            h.send_response(200)
            if declared:
                h.send_header("Content-Length", str(size))
            else:
                h.send_header("Transfer-Encoding", "chunked")
            h.end_headers()
            for i in range(size // len(chunk)):
                part = chunk if i == 0 else b"\0" * len(chunk)
                h.wfile.write(part if declared else f"{len(part):x}\r\n".encode() + part + b"\r\n")
            if not declared:
                h.wfile.write(b"0\r\n\r\n")

        self.routes[path] = route
        return self.url(path)

    def serve_forever(self) -> None:
        """Blocks until the process ends (for a server in a process of its own)."""
        self.thread.join()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(
    method: str,
    url: str,
    body: object | None = None,
    timeout: float = 60.0,
    headers: dict[str, str] | None = None,
) -> Response:
    """A tiny HTTP client that never raises on 4xx/5xx (tests assert on them)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return Response(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Response(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


class Service:
    """The real service started by `scripts/entrypoint.sh prod|dev` in its own process group.

    `tree` is the checkout whose entrypoint runs (scripts/bench.py --before starts an
    older one); subclasses change how it is started (`command`) and when it counts
    as up (`ready`): the load harness wraps it in cgroups and waits for every worker.
    """

    stop_timeout_s = 20.0

    def __init__(
        self,
        tmp: Path,
        mode: str = "prod",
        env: dict[str, str] | None = None,
        *,
        tree: Path = ROOT,
        log_name: str = "service",
    ):
        self.port = free_port()
        self.tmp = tmp
        self.tree = tree
        self.log_path = tmp / f"{log_name}-{self.port}.log"
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("PDF_", "SENTRY_"))},
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "DATA_DIR": str(tmp / "data"),
            "ALLOW_PRIVATE_SOURCE_URLS": "1",
            "WEB_CONCURRENCY": "2",
            "VENV": str(ROOT / ".venv"),
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{self.port}",
            **(env or {}),
        }
        self.mode = mode
        self.proc: subprocess.Popen | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(self.tree / "scripts" / "entrypoint.sh"), self.mode]

    def ready(self) -> bool:
        return http("GET", self.base + "/ping", timeout=2).status == 200

    def start(self, timeout: float = 60.0) -> Service:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.tree,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited early:\n{self.log()}")
            with contextlib.suppress(OSError, http_client.HTTPException):
                if self.ready():
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"service did not answer /ping:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post(self, source_url: str, timeout: float = 60.0) -> Response:
        return http("POST", self.base + "/image_to_pdf", {"source_url": source_url}, timeout)

    def pids(self) -> list[int]:
        """The gunicorn master and its workers (not the workers' conversion zygotes)."""
        assert self.proc
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True)
        return [self.proc.pid, *(int(p) for p in out.stdout.split())]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if getattr(self, "_log", None):
            self._log.close()


@contextlib.contextmanager
def running_service(
    tmp: Path, mode: str = "prod", env: dict[str, str] | None = None
) -> Iterator[Service]:
    svc = Service(tmp, mode, env).start()
    try:
        yield svc
    finally:
        svc.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def hwm_kib(pid: int) -> int:
    """Peak RSS of a live process (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0
