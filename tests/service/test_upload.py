"""`POST /image_to_pdf/upload` (multipart `files` parts) against the real service."""

from __future__ import annotations

import http.client
import json
import socket
import time
import uuid

import pytest

from tests.service.conftest import open_pdf
from tests.service.test_api import assert_error, assert_healthy
from tests.service.test_batch import centre_colours, flat, near, stored
from tests.service.test_sentry import Receiver, wait_for
from tests.support import images
from tests.support.servers import Service
from tests.support.servers import http as request


def multipart(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, str]:
    """(field name, file name or None for a plain field, content) -> body, content type."""
    boundary = uuid.uuid4().hex
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


def upload(service, files: list[tuple[str, bytes]], **fields: str):
    parts = [("files", name, data) for name, data in files]
    parts += [(k, None, v.encode()) for k, v in fields.items()]
    body, ctype = multipart(parts)
    return request(
        "POST", service.base + "/image_to_pdf/upload", body, headers={"Content-Type": ctype}
    )


def test_two_files_make_a_two_page_pdf_in_order(service):
    jpeg = flat(images.GREEN, 20, 40, "JPEG")
    resp = upload(service, [("red.png", flat(images.RED, 40, 20)), ("green.jpg", jpeg)])
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body["source_files"] == ["red.png", "green.jpg"]
    pdf = request("GET", body["converted_url"])
    assert pdf.status == 200 and 'filename="' in pdf.headers["content-disposition"]
    doc = open_pdf(pdf.body)
    sizes = [(round(float(p.mediabox[2])), round(float(p.mediabox[3]))) for p in doc.pages]
    assert sizes == [(30, 15), (15, 30)]
    colours = centre_colours(pdf.body)
    assert near(colours[0], images.RED) and near(colours[1], images.GREEN), colours
    assert jpeg in pdf.body  # byte for byte


def test_page_size_field(service):
    resp = upload(service, [("a.png", images.png())], page_size="Letter")
    assert resp.status == 200, resp.body
    pdf = open_pdf(request("GET", resp.json()["converted_url"]).body)
    assert [round(float(v)) for v in pdf.pages[0].mediabox] == [0, 0, 612, 792]


def test_a_bad_file_fails_the_upload_naming_it_and_stores_nothing(service):
    before = stored(service)
    resp = upload(
        service,
        [("ok.png", images.png()), ("notes.txt", images.non_image()), ("ok2.png", images.png())],
    )
    assert_error(resp, 415, "unsupported_image_type")
    assert resp.json()["item"] == 2
    assert resp.json()["detail"] == 'Image 2 ("notes.txt"): The source is not a supported image.'
    assert stored(service) == before
    assert_healthy(service)


def test_a_hostile_file_name_is_not_echoed_raw(service):
    resp = upload(service, [('<script>"x".svg', images.svg())])
    assert_error(resp, 415, "unsupported_image_type")  # one file: the plain error
    resp = upload(service, [("a.png", images.png()), ('<script>"x".svg', images.svg())])
    assert "<script>" not in resp.json()["detail"]


@pytest.mark.parametrize(
    ("parts", "why"),
    [
        ([], "no parts"),
        ([("other", "a.png", images.png())], "wrong field name"),
        ([("files", None, b"not a file")], "a plain field named files"),
        ([("files", "a.png", images.png()), ("page_size", None, b"A5")], "bad page size"),
    ],
)
def test_malformed_uploads_are_422(service, parts, why):
    body, ctype = multipart(parts)
    resp = request(
        "POST", service.base + "/image_to_pdf/upload", body, headers={"Content-Type": ctype}
    )
    assert_error(resp, 422, "invalid_request")
    assert "files" in resp.json()["detail"] or "page_size" in resp.json()["detail"], why


def test_json_sent_to_the_upload_route_is_422(service):
    resp = request("POST", service.base + "/image_to_pdf/upload", {"source_url": "x"})
    assert_error(resp, 422, "invalid_request")


def test_too_many_files_is_413(service):
    resp = upload(service, [(f"{i}.png", images.png(8, 8)) for i in range(21)])
    assert_error(resp, 413, "too_many_images")
    assert upload(service, [(f"{i}.png", images.png(8, 8)) for i in range(20)]).status == 200


@pytest.fixture(scope="module")
def small_caps(tmp_path_factory):
    """MAX_UPLOAD_BYTES 300 KiB in total, MAX_SOURCE_BYTES 200 KiB per image."""
    svc = Service(
        tmp_path_factory.mktemp("caps"),
        env={"MAX_UPLOAD_BYTES": str(300 * 1024), "MAX_SOURCE_BYTES": str(200 * 1024)},
    ).start()
    yield svc
    svc.stop()


def big_png(kib: int) -> bytes:
    data = images.png(64, 48)
    return data + b"\0" * (kib * 1024 - len(data))  # trailing bytes after IEND


def test_total_upload_cap_is_413_and_stores_nothing(small_caps):
    before = stored(small_caps)
    resp = upload(
        small_caps, [("a.png", big_png(150)), ("b.png", big_png(150)), ("c.png", big_png(150))]
    )
    assert_error(resp, 413, "upload_too_large")
    assert stored(small_caps) == before
    assert upload(small_caps, [("a.png", big_png(100)), ("b.png", big_png(100))]).status == 200


def test_total_upload_cap_holds_without_content_length(small_caps):
    """A chunked body is counted as it arrives."""
    body, ctype = multipart([("files", f"{i}.png", big_png(150)) for i in range(3)])
    conn = http.client.HTTPConnection("127.0.0.1", small_caps.port, timeout=30)
    conn.putrequest("POST", "/image_to_pdf/upload")
    conn.putheader("Content-Type", ctype)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    try:
        for i in range(0, len(body), 64 * 1024):
            chunk = body[i : i + 64 * 1024]
            conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may answer and close before the whole body is sent
    resp = conn.getresponse()
    assert resp.status == 413
    assert b"upload_too_large" in resp.read()
    conn.close()
    assert_healthy(small_caps)


def test_one_file_over_the_per_image_cap_is_named(small_caps):
    resp = upload(small_caps, [("ok.png", images.png()), ("huge.png", big_png(250))])
    assert_error(resp, 413, "source_too_large")
    assert resp.json()["item"] == 2


def test_openapi_documents_the_upload(service):
    spec = request("GET", service.base + "/openapi.json").json()
    op = spec["paths"]["/image_to_pdf/upload"]["post"]
    form = op["requestBody"]["content"]["multipart/form-data"]
    assert form["schema"]["properties"]["files"]["type"] == "array"
    assert form["examples"]
    ok = op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["$ref"].endswith("/UploadResponse")
    assert spec["components"]["schemas"]["UploadResponse"]["examples"]


def test_a_client_aborting_its_upload_is_a_client_event(tmp_path):
    """Half an upload, then the client hangs up: a 499 access line, no error
    line, nothing for Sentry (it was a ClientDisconnect traceback at error level)."""
    receiver = Receiver()
    svc = Service(
        tmp_path, env={"SENTRY_DSN": receiver.dsn, "WEB_CONCURRENCY": "1", "LOG_LEVEL": "INFO"}
    ).start()
    try:
        body, ctype = multipart([("files", "big.png", images.random_bytes(2_000_000))])
        with socket.create_connection(("127.0.0.1", svc.port)) as sock:
            sock.sendall(
                b"POST /image_to_pdf/upload HTTP/1.1\r\nHost: x\r\n"
                + f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 4]
            )
            time.sleep(0.5)  # let the server start reading the form
        assert wait_for(lambda: '"status":499' in svc.log()), svc.log()[-2000:]
        time.sleep(2)  # an error event would be on its way by now
        lines = [json.loads(ln) for ln in svc.log().splitlines() if ln.startswith("{")]
        aborted = [e for e in lines if e.get("status") == 499]
        assert aborted[0]["path"] == "/image_to_pdf/upload"
        assert aborted[0]["error_code"] == "client_closed_request"
        assert not [e for e in lines if e["level"] in ("error", "critical")], lines
        assert "Traceback" not in svc.log()
        assert receiver.events() == []
    finally:
        svc.stop()
        receiver.httpd.shutdown()
