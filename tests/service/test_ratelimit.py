"""Per-client rate limit on the real service, with the LB's X-Forwarded-For.

The tests' LB is loopback (LB_SOURCE_RANGES=127.0.0.0/8); the default ranges
against real peers are in test_lb_peers.py.
"""

from __future__ import annotations

import json
from http.client import HTTPConnection

from tests.service.test_upload import multipart
from tests.support import images
from tests.support.fixtures import service_fixture
from tests.support.servers import http

LB = {"LB_SOURCE_RANGES": "127.0.0.0/8"}  # the tests' load balancer is loopback


def one_worker(name: str, env: dict[str, str]):
    """A one-worker service in gclb mode with the given rate-limit settings."""
    return service_fixture(name, {"CLIENT_IP_SOURCE": "gclb", "WEB_CONCURRENCY": "1", **env})


limited = one_worker("limited", {"RATE_LIMIT_PER_MINUTE": "6", "RATE_LIMIT_BURST": "2", **LB})
# The deploy's limits (ansible group_vars): 30/min, burst 10, 20 pages.
deployed = one_worker(
    "deployed",
    {"RATE_LIMIT_PER_MINUTE": "30", "RATE_LIMIT_BURST": "10", "MAX_PAGES": "20", **LB},
)
# gclb mode with the real LB ranges: a loopback peer is NOT the LB.
direct = one_worker("direct", {"RATE_LIMIT_PER_MINUTE": "6", "RATE_LIMIT_BURST": "2"})


def post_as(svc, url, xff):
    return http(
        "POST",
        svc.base + "/image_to_pdf",
        {"source_url": url},
        headers={"X-Forwarded-For": xff},
    )


def test_limit_per_client_behind_the_lb(limited, source):
    url = source.add_bytes("/rl.png", images.png())
    lb = "34.120.1.2"
    a = [post_as(limited, url, f"203.0.113.1, {lb}").status for _ in range(3)]
    assert a == [200, 200, 429]
    # Another client behind the same LB has its own bucket.
    assert post_as(limited, url, f"203.0.113.2, {lb}").status == 200
    # Spoofing a first entry does not give client 1 a fresh bucket.
    spoofed = post_as(limited, url, f"9.9.9.9, 203.0.113.1, {lb}")
    assert spoofed.status == 429
    body = spoofed.json()
    assert body["code"] == "rate_limited"
    assert body["detail"]
    assert int(spoofed.headers["retry-after"]) >= 1
    # Health checks and downloads are never limited.
    assert all(http("GET", limited.base + "/ping").status == 200 for _ in range(10))


def test_a_list_costs_one_token_per_image_up_to_a_full_bucket(limited, source):
    url = source.add_bytes("/rl-batch.png", images.png())
    # Burst 2: three images cost the whole bucket (2), not 3 that could never be paid.
    assert post_list(limited, [url, url, url], "203.0.113.50").status == 200
    refused = post_list(limited, [url, url], "203.0.113.50")
    assert refused.status == 429, refused.body
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


def post_list(svc, urls, client):
    return http(
        "POST",
        svc.base + "/image_to_pdf",
        {"source_urls": urls},
        headers={"X-Forwarded-For": f"{client}, 34.120.1.2"},
    )


def test_two_images_cost_two_tokens(limited, source):
    url = source.add_bytes("/rl-two.png", images.png())
    assert post_list(limited, [url, url], "203.0.113.60").status == 200
    # Burst 2, both spent on that one request.
    refused = post_as(limited, url, "203.0.113.60, 34.120.1.2")
    assert refused.status == 429, refused.body


def test_uploads_are_limited_too(limited):
    body, ctype = multipart([("files", "a.png", images.png())])
    headers = {"Content-Type": ctype, "X-Forwarded-For": "203.0.113.70, 34.120.1.2"}
    statuses = [
        http("POST", limited.base + "/image_to_pdf/upload", body, headers=headers).status
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]


def _post_with_header_lines(svc, url: str, lines: list[str]) -> int:
    conn = HTTPConnection("127.0.0.1", svc.port, timeout=60)
    body = json.dumps({"source_url": url}).encode()
    conn.putrequest("POST", "/image_to_pdf")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(len(body)))
    for line in lines:
        conn.putheader("X-Forwarded-For", line)
    conn.endheaders(body)
    status = conn.getresponse().status
    conn.close()
    return status


def test_every_forwarded_for_line_is_read(limited, source):
    """The LB appends its entry to the last line; a client may send its own first
    line. Reading only the first line would key this client by the peer."""
    url = source.add_bytes("/rl-lines.png", images.png())
    lines = ["9.9.9.9", "203.0.113.80, 34.120.1.2"]
    assert [_post_with_header_lines(limited, url, lines) for _ in range(2)] == [200, 200]
    assert post_as(limited, url, "203.0.113.80, 34.120.1.2").status == 429


def test_deploy_limits_accept_a_list_of_twenty(deployed, source):
    """With 30/min and burst 10 a list of 11-20 images was refused forever
    (Retry-After: 2, again and again). One token per image, capped at a full
    bucket: a 20-image list passes on a full bucket."""
    url = source.add_bytes("/rl-deploy.png", images.png(16, 12))
    for n, client in ((20, "203.0.113.90"), (11, "203.0.113.91"), (10, "203.0.113.92")):
        resp = post_list(deployed, [url] * n, client)
        assert resp.status == 200, (n, resp.body)


def test_retry_after_is_what_the_bucket_lacks(deployed, source):
    url = source.add_bytes("/rl-retry.png", images.png(16, 12))
    assert post_list(deployed, [url] * 20, "203.0.113.95").status == 200
    twenty = post_list(deployed, [url] * 20, "203.0.113.95")
    assert twenty.status == 429
    assert twenty.json()["code"] == "rate_limited"
    # 10 tokens at 0.5/s; a little refilled while the first list converted.
    assert 15 <= int(twenty.headers["retry-after"]) <= 20
    one = post_as(deployed, url, "203.0.113.95, 34.120.1.2")
    assert one.status == 429
    assert 1 <= int(one.headers["retry-after"]) <= 2


def test_forwarded_for_from_outside_the_lb_ranges_cannot_rotate_the_key(direct, source):
    """Anything reaching the backend without the LB (here: loopback) is keyed by
    its own address, whatever X-Forwarded-For it invents."""
    url = source.add_bytes("/rl-direct.png", images.png())
    statuses = [post_as(direct, url, f"203.0.113.{i}, 34.120.1.2").status for i in range(3)]
    assert statuses == [200, 200, 429]
