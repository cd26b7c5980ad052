#!/usr/bin/env python3
"""Hostile-client numbers against the real service (loopback only, bounded).

  .venv/bin/python scripts/bench_hostile.py body      # worker peak RSS for a 55 MB URL list
  .venv/bin/python scripts/bench_hostile.py slowloris # a header-dripping flood: /ping and recovery

`body` posts {"source_urls": ["http://a", ... x5,000,000]} (55 MB, with its
Content-Length) to a one-worker service and prints the worker's RSS before, its
peak (VmHWM) and the time to the answer. `slowloris` gives each worker 256
descriptors (prlimit; the unit's LimitNOFILE is 4096) and opens FLOOD
connections that send one header line every 3 s for FLOOD_S seconds, while /ping
is asked every 0.5 s; it prints how many pings failed during the flood, how
long after the flood the first ping succeeded, and how many flood connections
the server itself closed. The connection cap is set below the descriptor limit
(MAX_CONNECTIONS_PER_WORKER=200 of 256, as 1000 of 4096 in production).
Numbers go in docs/security.md.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.client import HTTPConnection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.servers import Service, hwm_kib, rss_kib

FLOOD = 900
FLOOD_S = 20.0
NOFILE = 256


def bench_body() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(Path(tmp), env={"WEB_CONCURRENCY": "1"}).start()
        try:
            worker = max(svc.pids())
            before = rss_kib(worker)
            body = b'{"source_urls": [' + b'"http://a", ' * 4_999_999 + b'"http://a"]}'
            started = time.monotonic()
            conn = HTTPConnection("127.0.0.1", svc.port, timeout=300)
            status = 0
            with contextlib.suppress(OSError):
                conn.request("POST", "/image_to_pdf", body, {"Content-Type": "application/json"})
            with contextlib.suppress(OSError):
                status = conn.getresponse().status
            elapsed = time.monotonic() - started
            print(
                json.dumps(
                    {
                        "body_mb": round(len(body) / 1e6, 1),
                        "status": status,
                        "answer_s": round(elapsed, 2),
                        "worker_rss_before_mib": round(before / 1024),
                        "worker_peak_mib": round(hwm_kib(worker) / 1024),
                        "worker_rss_after_mib": round(rss_kib(worker) / 1024),
                    }
                )
            )
        finally:
            svc.stop()


def _ping(svc: Service) -> float | None:
    started = time.monotonic()
    try:
        conn = HTTPConnection("127.0.0.1", svc.port, timeout=2)
        conn.request("GET", "/ping")
        ok = conn.getresponse().status == 200
        conn.close()
    except OSError:
        return None
    return time.monotonic() - started if ok else None


def bench_slowloris() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(Path(tmp), env={"MAX_CONNECTIONS_PER_WORKER": "200"}).start()
        try:
            master = svc.proc.pid if svc.proc else 0
            for pid in svc.pids():
                if pid != master:
                    subprocess.run(
                        ["prlimit", f"--pid={pid}", f"--nofile={NOFILE}:{NOFILE}"], check=True
                    )
            pings: list[tuple[float, float | None]] = []
            stop = threading.Event()

            def pinger() -> None:
                while not stop.is_set():
                    pings.append((time.monotonic(), _ping(svc)))
                    time.sleep(0.5)

            thread = threading.Thread(target=pinger, daemon=True)
            socks: list[socket.socket] = []
            start = time.monotonic()
            thread.start()
            for _ in range(FLOOD):
                with contextlib.suppress(OSError):
                    sock = socket.create_connection(("127.0.0.1", svc.port), timeout=1)
                    sock.setblocking(False)
                    with contextlib.suppress(OSError):
                        sock.send(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
                    socks.append(sock)
            closed_by_server: set[int] = set()
            while time.monotonic() - start < FLOOD_S:
                time.sleep(3)
                for sock in socks:
                    if sock.fileno() in closed_by_server:
                        continue
                    try:
                        sock.send(b"X-Slow: 1\r\n")
                        if sock.recv(1024) == b"":
                            closed_by_server.add(sock.fileno())
                    except BlockingIOError:
                        pass
                    except OSError:
                        closed_by_server.add(sock.fileno())
            flood_end = time.monotonic()
            for sock in socks:
                sock.close()
            while time.monotonic() - flood_end < 15:
                time.sleep(0.5)
                if pings and pings[-1][0] > flood_end and pings[-1][1] is not None:
                    break
            stop.set()
            thread.join()
            during = [p for t, p in pings if start <= t < flood_end]
            after_ok = [t for t, p in pings if t >= flood_end and p is not None]
            failed_before_end = [t for t, p in pings if t < flood_end and p is None]
            print(
                json.dumps(
                    {
                        "flood_connections": len(socks),
                        "flood_s": FLOOD_S,
                        "pings_during_flood": len(during),
                        "pings_failed_during_flood": sum(p is None for p in during),
                        "slowest_ok_ping_s": round(max((p for p in during if p), default=0), 3),
                        "first_ok_ping_after_flood_s": round(after_ok[0] - flood_end, 2)
                        if after_ok
                        else None,
                        "last_failed_ping_s_after_start": round(failed_before_end[-1] - start, 1)
                        if failed_before_end
                        else None,
                        "flood_connections_closed_by_server": len(closed_by_server),
                        "accept_errors_logged": svc.log().count("out of system resource"),
                        "log_bytes": len(svc.log()),
                    }
                )
            )
        finally:
            svc.stop()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else "body"
    {"body": bench_body, "slowloris": bench_slowloris}[what]()
