"""Hostile clients and sources against the real gunicorn service (issue: HTTP layer).

Slow headers and bodies, too many connections, descriptor exhaustion, huge JSON
bodies and sources that trickle. Every flood here is bounded (hundreds of
loopback connections, a few seconds).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import random
import select
import socket
import subprocess
import time
from http.client import HTTPConnection

import pytest
from PIL import Image

from tests.service.test_api import assert_error, assert_healthy
from tests.service.test_sentry import wait_for
from tests.support import images
from tests.support.fixtures import service_fixture
from tests.support.servers import Response, Service, http, hwm_kib

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 2.0


guarded = service_fixture(
    "guarded",
    {
        "HTTP_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "HTTP_BODY_TIMEOUT": str(BODY_TIMEOUT),
        "WEB_CONCURRENCY": "1",
    },
)


def the_worker(svc) -> int:
    """The one worker of a WEB_CONCURRENCY=1 service (the master is the entry point)."""
    assert svc.proc
    (worker,) = [pid for pid in svc.pids() if pid != svc.proc.pid]
    return worker


def connect(svc) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
    return sock


def drip_until_closed(sock: socket.socket, lines: list[bytes], pause: float) -> bytes | None:
    """Sends one line per `pause`; returns what the server answered when it hung
    up, or None if every line went out and the connection is still open."""
    for line in lines:
        readable, _, _ = select.select([sock], [], [], pause)
        if readable:
            return _read_all(sock)
        try:
            sock.sendall(line)
        except OSError:
            return _read_all(sock)
    return None


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_headers_sent_slowly_are_cut_at_the_header_timeout(guarded):
    """One header line every 0.25 s for 10 s (ten times the timeout): before,
    the connection was kept for as long as the client kept dripping."""
    with connect(guarded) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\n")
        answer = drip_until_closed(sock, [b"X-Slow: 1\r\n"] * 40, pause=0.25)
    assert answer is not None, "still open after ten header timeouts"
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "request_timeout"
    assert_healthy(guarded)


def test_a_new_connection_that_sends_nothing_is_closed(guarded):
    with connect(guarded) as sock:
        readable, _, _ = select.select([sock], [], [], 10 * HEADER_TIMEOUT)
        assert readable, "still open after ten header timeouts"
        assert _read_all(sock).startswith(b"HTTP/1.1 408 ")


def test_an_idle_keep_alive_connection_outlives_the_header_timeout(guarded):
    """The LB keeps connections open for up to 600 s between requests: only the
    time a request takes to arrive is limited, not the idle time between them."""
    request = b"GET /ping HTTP/1.1\r\nHost: lb\r\n\r\n"
    with connect(guarded) as sock:
        stream = sock.makefile("rb")
        sock.sendall(request)
        assert read_response(stream).startswith(b"HTTP/1.1 200 ")
        time.sleep(3 * HEADER_TIMEOUT)
        readable, _, _ = select.select([sock], [], [], 0)
        assert not readable, "the server closed an idle keep-alive connection"
        sock.sendall(request)
        assert read_response(stream).startswith(b"HTTP/1.1 200 ")


def read_response(stream) -> bytes:
    """One whole response (headers and Content-Length body) from a socket file."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        assert line, "connection closed"
        head += line
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.lower().split(b"\r\n")
        if line.startswith(b"content-length:")
    )
    return head + stream.read(length)


def test_a_body_sent_slowly_is_cut_at_the_body_timeout(guarded):
    head = (
        b"POST /image_to_pdf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    with connect(guarded) as sock:
        sock.sendall(head)
        answer = drip_until_closed(sock, [b" "] * 40, pause=0.25)  # 10 s, 5 timeouts
    assert answer is not None, "still open after five body timeouts"
    assert wait_for(lambda: '"status":499' in guarded.log())
    assert "unhandled error" not in guarded.log()
    assert_healthy(guarded)


def test_a_header_block_past_16_kib_is_a_json_400(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nX-Big: " + b"a" * 20_000)
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:100]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == "bad_request"


@pytest.mark.parametrize(("length", "status"), [(8192, 404), (8193, 414)])
def test_request_urls_are_capped(guarded, length, status):
    target = "/" + "a" * (length - 1)
    resp = http("GET", guarded.base + target)
    assert resp.status == status
    assert resp.json()["code"] == ("not_found" if status == 404 else "uri_too_long")


# --- the connection cap and descriptor exhaustion ------------------------------------


CAP = 50


# A long header timeout, so only the cap can close the flood's connections.
capped = service_fixture(
    "capped",
    {"HTTP_HEADER_TIMEOUT": "60", "MAX_CONNECTIONS_PER_WORKER": str(CAP), "WEB_CONCURRENCY": "1"},
)


def open_partial(svc, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        sock = connect(svc)
        sock.sendall(b"GET /ping HTTP/1.1\r\nX-Slow: 1\r\n")
        socks.append(sock)
    return socks


def closed_by_server(socks: list[socket.socket], settle_s: float = 5.0) -> int:
    """How many of `socks` the server has closed, waiting until none closes for a while."""
    closed: set[int] = set()
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        open_ = [s for s in socks if s.fileno() not in closed]
        readable, _, _ = select.select(open_, [], [], 0.5)
        if not readable:
            break
        for sock in readable:
            with contextlib.suppress(OSError):
                sock.recv(65536)
            closed.add(sock.fileno())
    return len(closed)


def test_open_connections_per_worker_are_capped_evicting_the_slowest(capped):
    """200 connections stuck in their headers, cap 50: the oldest are evicted as
    new ones arrive, and a real request still gets through. The log says so once."""
    socks = open_partial(capped, 200)
    try:
        assert closed_by_server(socks) >= 200 - CAP
        assert http("GET", capped.base + "/ping", timeout=10).status == 200
    finally:
        for sock in socks:
            sock.close()
    lines = [json.loads(ln) for ln in capped.log().splitlines() if ln.startswith("{")]
    limit_lines = [e for e in lines if e.get("msg") == "connection limits applied"]
    assert len(limit_lines) == 1, limit_lines  # 150 evictions, one line per minute
    assert limit_lines[0]["evicted"] == 1


@pytest.fixture
def few_descriptors(tmp_path):
    """A worker allowed 64 descriptors and a cap far above that: accept() fails."""
    svc = Service(tmp_path, env={"HTTP_HEADER_TIMEOUT": "3", "WEB_CONCURRENCY": "1"}).start()
    worker = the_worker(svc)
    subprocess.run(["prlimit", f"--pid={worker}", "--nofile=64:64"], check=True)
    yield svc
    svc.stop()


def test_descriptor_exhaustion_is_logged_once_and_the_worker_recovers(few_descriptors):
    svc = few_descriptors
    socks = []
    with contextlib.suppress(OSError):
        for _ in range(150):
            socks.append(connect(svc))
            socks[-1].sendall(b"GET /ping HTTP/1.1\r\n")
    time.sleep(2)  # the flood sits while the worker keeps failing accept()
    for sock in socks:
        sock.close()
    log = svc.log()
    assert log.count("out of system resource") <= 1, log.count("out of system resource")
    # The header timeout frees the worker's descriptors; then it serves again.
    assert wait_for(lambda: _pings(svc), timeout=20)


def _pings(svc) -> bool:
    with contextlib.suppress(OSError):
        return http("GET", svc.base + "/ping", timeout=2).status == 200
    return False


# --- huge JSON bodies: memory ---------------------------------------------------------


single = service_fixture("single", {"WEB_CONCURRENCY": "1"})


def test_a_big_url_list_costs_the_worker_no_memory(single):
    """5.5 MB of URLs, chunked (no length to refuse up front): cut at the 64 KiB
    cap. Parsed, this list cost a worker ~260 MiB (55 MB: 2.6 GB)."""
    worker = the_worker(single)
    before = hwm_kib(worker)
    body = b'{"source_urls": [' + b'"http://a", ' * 500_000 + b'"http://a"]}'
    conn = HTTPConnection("127.0.0.1", single.port, timeout=60)
    with contextlib.suppress(OSError):  # the server may stop reading once it answered
        conn.request(
            "POST",
            "/image_to_pdf",
            body=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
    raw = conn.getresponse()
    resp = Response(raw.status, {k.lower(): v for k, v in raw.getheaders()}, raw.read())
    conn.close()
    assert_error(resp, 413, "request_too_large")
    grown_mib = (hwm_kib(worker) - before) / 1024
    assert grown_mib < 32, grown_mib


# --- slow sources must not starve others ------------------------------------------------


def noise_png(width: int, height: int) -> bytes:
    pixels = random.Random(7).randbytes(width * height * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), pixels).save(out, "PNG", compress_level=1)
    return out.getvalue()


def test_sources_that_trickle_do_not_turn_others_away(single, source):
    """Six sources announce 20 MiB and send a byte a second. They used to hold
    6 x 20 MiB of the 64 MiB download pool, so a 5 MB image got 503 busy."""
    head = images.png()[:64]
    slow = [
        source.add_slow(f"/trickle/{i}.png", head, delay_s=1.0, chunks=20 * 1024 * 1024 - 64)
        for i in range(6)
    ]
    big = noise_png(1300, 1300)
    assert len(big) > 5_000_000
    big_url = source.add_bytes("/legit-big.png", big)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        pending = [pool.submit(single.post, url) for url in slow]
        assert wait_for(lambda: sum(h.startswith("/trickle/") for h in source.hits) >= 6)
        time.sleep(0.3)  # they have their headers and first bytes
        legit = single.post(big_url)
        assert legit.status == 200, legit.body
        slow_answers = [f.result() for f in pending]
    for resp in slow_answers:
        assert_error(resp, 504, "source_timeout")
    assert "slowly" in slow_answers[0].json()["detail"]
