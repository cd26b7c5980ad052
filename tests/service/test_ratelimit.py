"""Per-client rate limit on the real service, with the LB's X-Forwarded-For."""

from __future__ import annotations

import pytest

from tests.support import images
from tests.support.servers import Service, http


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    svc = Service(
        tmp_path_factory.mktemp("limited"),
        env={
            "RATE_LIMIT_PER_MINUTE": "6",
            "RATE_LIMIT_BURST": "2",
            "CLIENT_IP_SOURCE": "gclb",
            "WEB_CONCURRENCY": "1",
        },
    ).start()
    yield svc
    svc.stop()


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


def test_several_images_cost_one_token_each(limited, source):
    url = source.add_bytes("/rl-batch.png", images.png())
    resp = http(
        "POST",
        limited.base + "/image_to_pdf",
        {"source_urls": [url, url, url]},
        headers={"X-Forwarded-For": "203.0.113.50, 34.120.1.2"},
    )
    assert resp.status == 429, resp.body  # burst 2 cannot pay for 3 images
    assert resp.json()["code"] == "rate_limited"
    assert int(resp.headers["retry-after"]) >= 1
    two = http(
        "POST",
        limited.base + "/image_to_pdf",
        {"source_urls": [url, url]},
        headers={"X-Forwarded-For": "203.0.113.51, 34.120.1.2"},
    )
    assert two.status == 200, two.body
