"""Hostile clients and sources against the real `scripts/entrypoint.sh prod`.

Each test here reproduces a defect found by attacking the running service:
the request that broke it, and the clean answer it gets now.
"""

from __future__ import annotations

import json
import socket

import pytest

from tests.support import images
from tests.support.servers import Service, http


def assert_error(resp, status: int, code: str) -> None:
    assert resp.status == status, (resp.status, resp.body[:300])
    body = resp.json()
    assert body["code"] == code, body
    assert set(body) <= {"detail", "code", "item"}, body


# --- a Location whose host is a malformed IDNA A-label -------------------------


@pytest.mark.parametrize("location", ["http://xn--/", "http://xn--zz-/x", "https://xn--/a.png"])
def test_a_redirect_to_a_malformed_idna_host_is_a_502_not_a_500(service, source, location):
    # httpx decodes the Location's host while building its next request (even with
    # redirects off) and idna raises IDNAError, a UnicodeError: it escaped as a 500.
    url = source.add_redirect(f"/idna/{len(location)}", location)
    assert_error(service.post(url), 502, "source_bad_redirect")
    assert "unhandled error" not in service.log()
    assert "IDNAError" not in service.log()


# --- bodies that are not JSON ------------------------------------------------------


NOT_JSON = {
    "syntax": b"{{{",
    "truncated": b'{"source_url": "http://a',
    "not_utf8": b'{"source_url": "http://127.0.0.1/\xff\xfe"}',
    "nested_past_the_recursion_limit": b"[" * 20_000 + b"]" * 20_000,
    "a_5000_digit_number": b'{"source_url": "http://a", "page_size": 1' + b"0" * 5000 + b"}",
}


@pytest.mark.parametrize("body", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_every_body_that_is_not_json_gets_the_same_422(service, body):
    # Three of these were FastAPI's 400 "There was an error parsing the body" and
    # the others a 422 naming a character offset as the field to check ("check: 1").
    resp = http("POST", service.base + "/image_to_pdf", body)
    assert_error(resp, 422, "invalid_request")
    assert resp.json()["detail"].endswith("(the body is not valid JSON).")


# --- HEAD on every GET route -----------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/ping", "/limits", "/openapi.json", "/static/app.js"])
def test_head_answers_like_get_without_a_body(service, path):
    got = http("GET", service.base + path)
    head = http("HEAD", service.base + path)
    assert got.status == 200
    assert head.status == 200, (path, head.body[:200])
    assert head.body == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert int(head.headers["content-length"]) == len(got.body)


@pytest.mark.parametrize("path", ["/image_to_pdf", "/image_to_pdf/upload"])
def test_head_on_post_routes_stays_a_json_405(service, path):
    resp = http("HEAD", service.base + path)
    assert resp.status == 405
    assert resp.body == b""


def test_openapi_has_one_operation_per_route_and_logs_no_warning(service):
    spec = http("GET", service.base + "/openapi.json").json()
    operations = [
        op["operationId"] for methods in spec["paths"].values() for op in methods.values()
    ]
    assert len(operations) == len(set(operations)), operations
    assert "head" not in spec["paths"]["/files/{name}"]
    assert "Duplicate Operation ID" not in service.log()


# --- a trailing slash -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/ping/", "/limits/", "/files/{name}/"])
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_clients_host(service, source, path):
    converted = service.post(source.add_bytes("/slash.png", images.png())).json()
    name = converted["converted_url"].rsplit("/", 1)[1]
    target = path.format(name=name).encode()
    with socket.create_connection(("127.0.0.1", service.port), timeout=30) as sock:
        # A raw request: a client library would follow the redirect off the machine.
        sock.sendall(
            b"GET " + target + b" HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        )
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 "), head
    assert b"evil.example" not in head.lower()
    assert json.loads(body) == {"detail": "Not Found", "code": "not_found"}


# --- Range requests on /files --------------------------------------------------------


@pytest.fixture(scope="module")
def stored_pdf(service, source):
    converted = service.post(source.add_bytes("/ranged.png", images.png())).json()
    url = converted["converted_url"]
    return url, http("GET", url).body


@pytest.mark.parametrize("header", ["bytes=abc", "bytes=5-2", "items=0-1", "bytes", "bytes=-"])
def test_an_unreadable_range_is_ignored_not_a_plain_text_400(stored_pdf, header):
    url, whole = stored_pdf
    resp = http("GET", url, headers={"Range": header})
    assert resp.status == 200, (resp.status, resp.body[:100])
    assert resp.body == whole


def test_a_range_past_the_end_is_a_json_416(stored_pdf):
    url, whole = stored_pdf
    last = http("GET", url, headers={"Range": f"bytes={len(whole) - 1}-"})
    assert last.status == 206
    assert last.body == whole[-1:]
    resp = http("GET", url, headers={"Range": f"bytes={len(whole)}-"})
    assert_error(resp, 416, "range_not_satisfiable")
    assert resp.headers["content-range"] == f"bytes */{len(whole)}"


# --- an answer sent before the request body arrived ------------------------------


@pytest.fixture(scope="module")
def patient(tmp_path_factory):
    """A body timeout far longer than any wait below: only the early close can end them."""
    svc = Service(tmp_path_factory.mktemp("patient"), env={"HTTP_BODY_TIMEOUT": "600"}).start()
    yield svc
    svc.stop()


def _early_answer(svc: Service, head: bytes, first_body: bytes) -> tuple[bytes, bool]:
    """Send the headers and the start of a body that never completes; read until the
    server closes (True) or 60 s pass without it (False)."""
    with socket.create_connection(("127.0.0.1", svc.port)) as sock:
        sock.sendall(head + first_body)
        sock.settimeout(60)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            return out, False
        except ConnectionResetError:
            return out, True
        return out, True


MULTIPART = "multipart/form-data; boundary=xx"
# 50 MiB of images plus the form overhead is the upload cap.
UPLOAD_CAP = 50 * 1024 * 1024 + 64 * 1024


def _upload_head(length: int, content_type: str = MULTIPART) -> bytes:
    return (
        b"POST /image_to_pdf/upload HTTP/1.1\r\nHost: t\r\n"
        + f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n".encode()
    )


PART = (
    b'--xx\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
    b"Content-Type: image/png\r\n\r\n"
)


@pytest.mark.parametrize(
    ("length", "content_type", "status", "code"),
    [
        # One byte over the cap: refused on its Content-Length, unread.
        (UPLOAD_CAP + 1, MULTIPART, 413, "upload_too_large"),
        (1024 * 1024, "text/plain", 422, "invalid_request"),
    ],
)
def test_an_upload_answered_before_its_body_arrived_closes_the_connection(
    patient, length, content_type, status, code
):
    # The service answers at once but used to keep the connection (and the
    # client's upload) waiting for the rest of a body it would never read, until
    # HTTP_BODY_TIMEOUT: a browser saw its 413 only after 30 s.
    out, closed = _early_answer(patient, _upload_head(length, content_type), PART + b"\0" * 4096)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()), out[:200]
    assert f'"code":"{code}"'.encode() in out
    assert closed, "the server kept the connection open waiting for the unread body"
    assert http("GET", patient.base + "/ping").status == 200


def test_a_complete_upload_keeps_its_connection_alive(patient):
    body = PART + images.png(8, 8) + b"\r\n--xx--\r\n"
    with socket.create_connection(("127.0.0.1", patient.port)) as sock:
        sock.settimeout(30)
        for _ in range(2):
            sock.sendall(_upload_head(len(body)) + body)
            out = b""
            while b'"converted_url"' not in out:
                chunk = sock.recv(65536)
                assert chunk, out
                out += chunk
            assert out.startswith(b"HTTP/1.1 200 "), out[:200]
