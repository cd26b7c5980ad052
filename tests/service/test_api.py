"""The API against the real `scripts/entrypoint.sh prod` and a real source server."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import re
import socket
import time

import pytest

from tests.service.conftest import open_pdf
from tests.support import images
from tests.support.servers import http

UUID_PDF = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\.pdf"
LEAKS = ("Traceback", "127.0.0.1", "upstream secret text", "Errno", "httpx", "PIL")

FORMATS = {
    "jpeg": images.jpeg(640, 480),
    "cmyk_jpeg": images.cmyk_jpeg(),
    "png": images.png(300, 200),
    "alpha_png": images.alpha_png(300, 200),
    "png16_alpha": images.png16_alpha(),
    "gif_animated": images.gif_animated(),
    "tiff": images.tiff(),
    "tiff16": images.tiff16(),
    "webp_alpha": images.webp_alpha(),
    "bmp": images.bmp(),
    "jp2": images.jp2(),
    "jpeg_orientation_5": images.jpeg_with_orientation(5),
    "tiny": images.png(1, 1),
}


def assert_healthy(service):
    assert http("GET", service.base + "/ping").json() == {"ping": "pong"}


def assert_error(resp, status, code):
    assert resp.status == status, (resp.status, resp.body)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["code"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    for leak in LEAKS:
        assert leak not in resp.body.decode(), (leak, body)


def test_ping(service):
    resp = http("GET", service.base + "/ping")
    assert resp.status == 200
    assert resp.json() == {"ping": "pong"}
    assert resp.headers["x-request-id"]


@pytest.mark.parametrize("kind", sorted(FORMATS))
def test_each_format_converts_to_a_downloadable_one_page_pdf(service, source, kind):
    url = source.add_bytes(f"/ok/{kind}.img", FORMATS[kind])
    resp = service.post(url)
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body["source_url"] == url
    assert re.fullmatch(re.escape(service.base) + "/files/" + UUID_PDF, body["converted_url"])
    pdf = http("GET", body["converted_url"])
    assert pdf.status == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert f'filename="{kind}.pdf"' in pdf.headers["content-disposition"]
    assert len(open_pdf(pdf.body).pages) == 1


def test_jpeg_is_embedded_byte_for_byte(service, source):
    data = images.jpeg(800, 600, quality=85)
    resp = service.post(source.add_bytes("/lossless.jpg", data, "image/jpeg"))
    pdf = http("GET", resp.json()["converted_url"]).body
    assert data in pdf


def test_source_url_is_echoed_exactly_as_sent(service, source):
    source.add_bytes("/echo.png", images.png())
    url = source.url("/echo.png?b=2&a=1#frag")
    assert service.post(url).json()["source_url"] == url


def test_content_type_is_ignored_magic_bytes_decide(service, source):
    url = source.add_bytes("/lying.txt", images.png(), "text/plain")
    assert service.post(url).status == 200
    url = source.add_bytes("/lying.png", images.non_image(), "image/png")
    assert_error(service.post(url), 415, "unsupported_image_type")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_request"),
        (b"{}", "invalid_request"),
        (b'{"source_url": 42}', "invalid_request"),
        (b'{"source_url": ""}', "invalid_request"),
        (json.dumps({"source_url": "https://x/" + "a" * 3000}).encode(), "invalid_request"),
    ],
)
def test_malformed_requests_are_422(service, body, code):
    resp = http("POST", service.base + "/image_to_pdf", body)
    assert_error(resp, 422, code)
    assert_healthy(service)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/cat.png",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        "http://user:secret@127.0.0.1/cat.png",
        "not a url",
        "http:///nohost.png",
    ],
)
def test_urls_refused_even_when_private_sources_are_allowed(service, url):
    assert_error(service.post(url), 400, "url_not_allowed")
    assert_healthy(service)


def test_bad_sources_get_clear_errors_and_leak_nothing(service, source):
    cases = [
        (source.add_bytes("/svg", images.svg()), 415, "unsupported_image_type"),
        (source.add_bytes("/pdf", images.pdf()), 415, "unsupported_image_type"),
        (source.add_bytes("/random", images.random_bytes()), 415, "unsupported_image_type"),
        (source.add_bytes("/truncated.jpg", images.truncated_jpeg()), 422, "invalid_image"),
        (source.add_bytes("/truncated.png", images.truncated_png()), 422, "invalid_image"),
        (source.add_bytes("/bomb.png", images.pixel_bomb_png()), 413, "image_too_large"),
        (source.add_status("/missing", 404), 502, "source_http_error"),
        (source.add_status("/broken", 500), 502, "source_http_error"),
        ("http://127.0.0.1:1/closed.png", 502, "source_unreachable"),
        (source.add_endless("/endless", images.jpeg()[:100]), 413, "source_too_large"),
    ]
    for url, status, code in cases:
        assert_error(service.post(url), status, code)
        assert_healthy(service)


def test_oversized_source_is_413(service, source):
    big = images.jpeg()[:100] + b"\0" * (21 * 1024 * 1024)
    assert_error(service.post(source.add_bytes("/huge.jpg", big)), 413, "source_too_large")
    assert_healthy(service)


def test_slow_source_is_504_within_the_total_timeout(service, source):
    url = source.add_slow("/slow.png", images.png()[:50], delay_s=0.5)
    t0 = time.monotonic()
    resp = service.post(url)
    assert_error(resp, 504, "source_timeout")
    assert time.monotonic() - t0 < 8
    assert_healthy(service)


def test_redirects_are_followed_up_to_three(service, source):
    target = source.add_bytes("/final.png", images.png())
    hop = target
    for i in range(3):
        hop = source.add_redirect(f"/hop{i}", hop)
    assert service.post(hop).status == 200
    hop4 = source.add_redirect("/hop3", hop)
    resp = service.post(hop4)
    assert resp.status in (400, 502)
    assert resp.json()["code"] in ("too_many_redirects", "url_not_allowed", "source_http_error")


def test_twenty_parallel_requests(service, source):
    urls = [source.add_bytes(f"/par/{i}.jpg", images.jpeg(400 + i, 300)) for i in range(10)]
    urls += [source.add_bytes(f"/par/{i}.png", images.alpha_png(200 + i, 100)) for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(service.post, urls))
    statuses = [r.status for r in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 10
    converted = {r.json()["converted_url"] for r in results if r.status == 200}
    assert len(converted) == statuses.count(200)
    assert_healthy(service)


@pytest.mark.parametrize(
    "path",
    [
        "/files/nope.pdf",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files/../app/main.py",
        "/files/00000000-0000-4000-8000-000000000000.pdf",
    ],
)
def test_files_serves_only_existing_uuid_names(service, path):
    resp = http("GET", service.base + path)
    assert resp.status == 404
    assert resp.json()["code"] == "not_found"


def test_unknown_route_and_method_are_json(service):
    assert_error(http("GET", service.base + "/nope"), 404, "not_found")
    assert_error(http("GET", service.base + "/image_to_pdf"), 405, "method_not_allowed")


def test_openapi_and_docs(service):
    spec = http("GET", service.base + "/openapi.json").json()
    assert "/image_to_pdf" in spec["paths"]
    assert "/ping" in spec["paths"]
    assert http("GET", service.base + "/docs").status == 200
    assert http("GET", service.base + "/redoc").status == 200


def test_access_log_is_json_lines_with_request_id(service):
    resp = http("GET", service.base + "/ping", headers={"X-Request-Id": "trace-me-123"})
    assert resp.headers["x-request-id"] == "trace-me-123"
    access: list[dict] = []
    for _ in range(50):  # the line is written just after the response is sent
        lines = [json.loads(ln) for ln in service.log().splitlines() if ln.startswith("{")]
        access = [e for e in lines if e.get("msg") == "request"]
        if any(e["request_id"] == "trace-me-123" for e in access):
            break
        time.sleep(0.1)
    assert any(e["request_id"] == "trace-me-123" and e["status"] == 200 for e in access)
    assert all({"method", "path", "status", "duration_ms"} <= e.keys() for e in access)


def test_a_conversion_logs_its_access_line_and_not_the_source_url(service, source):
    url = source.add_bytes("/private/holiday-photo-of-ana.jpg", images.jpeg())
    start = len(service.log())
    resp = http(
        "POST", service.base + "/image_to_pdf", {"source_url": url}, headers={"X-Request-Id": "one"}
    )
    assert resp.status == 200
    for _ in range(50):  # the access line is written just after the response is sent
        new = service.log()[start:]
        if '"request_id":"one"' in new:
            break
        time.sleep(0.1)
    lines = [json.loads(ln) for ln in new.splitlines() if ln.startswith("{")]
    assert [e["msg"] for e in lines] == ["request"]
    assert "holiday-photo-of-ana" not in new  # the HTTP client's INFO line named it


# --- hostile requests: caps before parsing, summaries, odd sources ----------------------


def raw_exchange(service, head: bytes, body_parts: list[bytes], timeout: float = 20.0) -> bytes:
    """Sends a request head and body parts on a raw socket; returns what came back
    (stops sending as soon as an answer starts)."""
    with socket.create_connection(("127.0.0.1", service.port), timeout=timeout) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        answer = b""
        for part in body_parts:
            with contextlib.suppress(BlockingIOError):
                answer += sock.recv(65536)
            if answer:
                break
            try:
                sock.sendall(part)
            except (BlockingIOError, OSError):
                break
        sock.settimeout(timeout)
        try:
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return answer


def status_and_json(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), answer[:200]
    return int(head.split()[1]), json.loads(body)


def test_a_declared_oversized_body_is_refused_before_it_arrives(service):
    """55 MB announced, 1 KB sent: the 413 comes without waiting for the rest
    (before, the whole body was read and parsed: 26 s and 2.6 GB)."""
    head = (
        b"POST /image_to_pdf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 55000000\r\n\r\n"
    )
    answer = raw_exchange(service, head, [b'{"source_urls": [' + b'"http://a", ' * 80])
    status, body = status_and_json(answer)
    assert status == 413 and body["code"] == "request_too_large", body
    assert_healthy(service)


def test_a_chunked_body_is_counted_and_cut_at_the_cap(service):
    head = (
        b"POST /image_to_pdf HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 16384
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    # 100 chunks (1.6 MB) are offered; the answer arrives after the cap (64 KiB).
    answer = raw_exchange(service, head, [chunk] * 100)
    status, body = status_and_json(answer)
    assert status == 413 and body["code"] == "request_too_large", body
    assert "65536 bytes" in body["detail"]
    assert_healthy(service)


def test_a_body_just_under_the_cap_is_parsed(service):
    pad = 64 * 1024 - len(b'{"source_url": ""}')
    exact = b'{"source_url": ""' + b" " * pad + b"}"
    assert len(exact) == 64 * 1024
    assert_error(http("POST", service.base + "/image_to_pdf", exact), 422, "invalid_request")
    over = b'{"source_url": ""' + b" " * (pad + 1) + b"}"
    assert_error(http("POST", service.base + "/image_to_pdf", over), 413, "request_too_large")


def test_source_url_length_boundary(service, source):
    base = source.url("/long/")
    at_cap = base + "a" * (2048 - len(base))
    assert len(at_cap) == 2048
    assert_error(service.post(at_cap), 502, "source_http_error")  # fetched: a 404
    assert_error(service.post(at_cap + "a"), 422, "invalid_request")


def test_a_422_names_a_few_fields_then_counts_the_rest(service):
    resp = http("POST", service.base + "/image_to_pdf", {"source_urls": [""] * 10_000})
    assert_error(resp, 422, "invalid_request")
    detail = resp.json()["detail"]
    assert len(resp.body) < 500, len(resp.body)
    assert "source_urls.0, source_urls.1, source_urls.2" in detail
    assert "and 9995 more" in detail


@pytest.mark.parametrize("location", ["http:x", "https:127.0.0.1", "http://[::1"])
def test_a_malformed_redirect_is_a_502_not_a_500(service, source, location):
    url = source.add_redirect(f"/bad-location/{len(location)}", location)
    assert_error(service.post(url), 502, "source_bad_redirect")
    assert "unhandled error" not in service.log()


def test_head_on_a_file_and_the_download_name(service, source):
    url = source.add_bytes("/albums/Holiday-Photo.png", images.png())
    converted = service.post(url).json()["converted_url"]
    head = http("HEAD", converted)
    assert head.status == 200
    assert head.body == b""
    got = http("GET", converted)
    assert int(head.headers["content-length"]) == len(got.body)
    for resp in (head, got):
        disposition = resp.headers["content-disposition"]
        assert 'filename="Holiday-Photo.pdf"' in disposition, disposition
    missing = http("HEAD", service.base + "/files/00000000-0000-4000-8000-000000000000.pdf")
    assert missing.status == 404
