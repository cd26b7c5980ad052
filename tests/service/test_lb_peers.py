"""X-Forwarded-For is trusted only from the LB's ranges, with real TCP peers.

The service and its clients run in a network namespace of their own (`unshare
-n`) whose loopback carries the first and last address of each LB range
(130.211.0.0/22, 35.191.0.0/16) and the addresses just outside them, so the
service sees genuine peers from those ranges; nothing leaves the namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
from http.client import HTTPConnection
from pathlib import Path

from tests.support.servers import ROOT, Service

LB_PEERS = ["130.211.0.0", "130.211.3.255", "35.191.0.0", "35.191.255.255"]
OUTSIDE = ["130.210.255.255", "130.211.4.0", "35.190.255.255", "35.192.0.0"]


def _post_from(peer: str, port: int, client: str) -> int:
    conn = HTTPConnection(peer, port, timeout=30, source_address=(peer, 0))
    body = json.dumps({"source_url": "ftp://example.com/x.png"})
    conn.request(
        "POST",
        "/image_to_pdf",
        body=body,
        headers={"Content-Type": "application/json", "X-Forwarded-For": f"{client}, 34.120.1.2"},
    )
    status = conn.getresponse().status
    conn.close()
    return status


def probe(tmp: str) -> None:
    """Runs inside the namespace: two clients' requests from each peer address."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for addr in LB_PEERS + OUTSIDE:
        subprocess.run(["ip", "addr", "add", f"{addr}/32", "dev", "lo"], check=True)
    svc = Service(
        Path(tmp),
        env={
            "HOST": "0.0.0.0",
            "CLIENT_IP_SOURCE": "gclb",
            "RATE_LIMIT_PER_MINUTE": "1",
            "RATE_LIMIT_BURST": "1",
            "WEB_CONCURRENCY": "1",
        },
    ).start()
    try:
        results = {}
        for i, peer in enumerate(LB_PEERS + OUTSIDE):
            clients = [f"203.0.113.{2 * i}", f"203.0.113.{2 * i + 1}"]
            results[peer] = [_post_from(peer, svc.port, c) for c in clients]
    finally:
        svc.stop()
    print(json.dumps(results))


def test_forwarded_for_counts_only_from_the_lb_ranges(tmp_path):
    out = subprocess.run(
        [
            "unshare",
            "-n",
            "--",
            sys.executable,
            "-c",
            f"from tests.service.test_lb_peers import probe; probe({str(tmp_path)!r})",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results = json.loads(out.stdout.strip().splitlines()[-1])
    # Burst 1: two clients behind the LB have a bucket each (the URL is refused
    # with 400 after the charge); the same two headers from a peer outside the
    # ranges are one client, the peer, so the second request is rate limited.
    for peer in LB_PEERS:
        assert results[peer] == [400, 400], (peer, results)
    for peer in OUTSIDE:
        assert results[peer] == [400, 429], (peer, results)
