"""Several URLs -> one PDF (`{"source_urls": [...]}`) and paper sizes, against the
real service and a real source server."""

from __future__ import annotations

import io
import math
import random
from pathlib import Path

import pypdfium2
import pytest
from PIL import Image

from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from tests.service.conftest import open_pdf
from tests.service.test_api import assert_error, assert_healthy
from tests.support import images
from tests.support.servers import Service, http

A4 = (595, 842)
LETTER = (612, 792)


def flat(colour: tuple[int, int, int], w: int, h: int, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, fmt, quality=95)
    return buf.getvalue()


def post_urls(service, urls: list[str], **extra) -> object:
    return http("POST", service.base + "/image_to_pdf", {"source_urls": urls, **extra})


def stored(service) -> int:
    data = Path(service.env["DATA_DIR"])
    return len(list(data.glob("*.pdf"))) if data.exists() else 0


def pages_of(resp) -> list[tuple[int, int]]:
    assert resp.status == 200, resp.body
    pdf = open_pdf(http("GET", resp.json()["converted_url"]).body)
    return [(round(float(p.mediabox[2])), round(float(p.mediabox[3]))) for p in pdf.pages]


def centre_colours(pdf_bytes: bytes) -> list[tuple[int, int, int]]:
    doc = pypdfium2.PdfDocument(pdf_bytes)
    out = []
    for page in doc:
        im = page.render(scale=0.25).to_pil().convert("RGB")
        out.append(im.getpixel((im.width // 2, im.height // 2)))
    return out


def near(a, b, tolerance=40) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def test_list_makes_one_page_per_image_in_order(service, source):
    red = source.add_bytes("/batch/red.png", flat(images.RED, 40, 20))
    green = source.add_bytes("/batch/green.jpg", flat(images.GREEN, 20, 40, "JPEG"))
    blue = source.add_bytes("/batch/blue.gif", flat(images.BLUE, 30, 30, "GIF"))
    urls = [green, red, blue, red]
    resp = post_urls(service, urls)
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body.keys() == {"source_url", "source_urls", "converted_url"}
    assert body["source_urls"] == urls and body["source_url"] == urls[0]
    pdf = http("GET", body["converted_url"]).body
    assert [
        (round(float(p.mediabox[2])), round(float(p.mediabox[3]))) for p in open_pdf(pdf).pages
    ] == [(15, 30), (30, 15), (22, 22), (30, 15)]  # 96 dpi: px * 0.75
    colours = centre_colours(pdf)
    for got, want in zip(colours, [images.GREEN, images.RED, images.BLUE, images.RED], strict=True):
        assert near(got, want), colours


def test_single_url_answer_is_unchanged(service, source):
    url = source.add_bytes("/batch/one.png", images.png())
    resp = service.post(url)
    assert resp.json().keys() == {"source_url", "converted_url"}


def test_jpegs_stay_byte_for_byte_in_a_multi_page_pdf(service, source):
    first, second = images.jpeg(320, 240, quality=80), images.jpeg(200, 300, quality=70)
    resp = post_urls(
        service,
        [source.add_bytes("/batch/j1.jpg", first), source.add_bytes("/batch/j2.jpg", second)],
    )
    pdf = http("GET", resp.json()["converted_url"]).body
    assert first in pdf and second in pdf


@pytest.mark.parametrize(("size", "paper"), [("A4", A4), ("Letter", LETTER), ("a4", A4)])
def test_paper_sizes_fit_and_centre_each_image(service, source, size, paper):
    wide = source.add_bytes("/batch/wide.png", flat(images.RED, 400, 100))
    tall = source.add_bytes("/batch/tall.png", flat(images.BLUE, 100, 400))
    rotated = source.add_bytes("/batch/rot.jpg", images.jpeg_with_orientation(6, 64, 32))
    resp = post_urls(service, [wide, tall, rotated], page_size=size)
    assert pages_of(resp) == [paper] * 3
    doc = pypdfium2.PdfDocument(http("GET", resp.json()["converted_url"]).body)
    for index, colour, paper_at, image_at in (
        (0, images.RED, "top", "left"),  # wide: fitted to the width
        (1, images.BLUE, "left", "top"),  # tall: fitted to the height
    ):
        im = doc[index].render(scale=0.25).to_pil().convert("RGB")
        w, h = im.size
        edge = {"top": (w // 2, 2), "left": (2, h // 2)}
        assert near(im.getpixel((w // 2, h // 2)), colour)  # centred
        assert near(im.getpixel(edge[paper_at]), images.WHITE)  # paper around it
        assert near(im.getpixel(edge[image_at]), colour)  # fills the other way


def test_page_size_works_for_a_single_url_too(service, source):
    url = source.add_bytes("/batch/single-a4.png", images.png())
    resp = http("POST", service.base + "/image_to_pdf", {"source_url": url, "page_size": "Letter"})
    assert resp.json().keys() == {"source_url", "converted_url"}
    assert pages_of(resp) == [LETTER]


@pytest.mark.parametrize(
    "body",
    [
        {"source_urls": []},
        {"source_urls": "https://example.com/a.png"},
        {"source_urls": [42]},
        {"source_url": "https://example.com/a.png", "source_urls": ["https://example.com/b"]},
        {"source_urls": ["https://example.com/a.png"], "page_size": "A5"},
    ],
)
def test_malformed_lists_are_422(service, body):
    before = stored(service)
    assert_error(http("POST", service.base + "/image_to_pdf", body), 422, "invalid_request")
    assert stored(service) == before


def test_more_than_max_pages_is_413_before_any_fetch(service, source):
    url = source.add_bytes("/batch/count.png", images.png())
    hits = len(source.hits)
    resp = post_urls(service, [url] * 21)
    assert_error(resp, 413, "too_many_images")
    assert "20" in resp.json()["detail"]
    assert len(source.hits) == hits
    assert post_urls(service, [url] * 20).status == 200


@pytest.mark.parametrize(
    ("make_bad", "status", "code"),
    [
        (
            lambda s: s.add_bytes("/batch/bad.txt", images.non_image()),
            415,
            "unsupported_image_type",
        ),
        (lambda s: s.add_bytes("/batch/bad.jpg", images.truncated_jpeg()), 422, "invalid_image"),
        (lambda s: s.add_status("/batch/gone.png", 404), 502, "source_http_error"),
        (lambda s: "ftp://example.com/x.png", 400, "url_not_allowed"),
        (lambda s: s.add_bytes("/batch/bomb.png", images.pixel_bomb_png()), 413, "image_too_large"),
    ],
)
def test_one_bad_item_fails_the_request_naming_it_and_stores_nothing(
    service, source, make_bad, status, code
):
    good = source.add_bytes("/batch/good.png", images.png())
    before = stored(service)
    resp = post_urls(service, [good, good, make_bad(source), good])
    assert_error(resp, status, code)
    body = resp.json()
    assert body["item"] == 3
    assert body["detail"].startswith("Image 3: ")
    assert stored(service) == before
    assert_healthy(service)


def test_openapi_documents_lists_and_page_sizes(service):
    spec = http("GET", service.base + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    request = schemas["ConvertRequest"]
    assert {"source_url", "source_urls", "page_size"} <= request["properties"].keys()
    assert any("source_urls" in ex for ex in request["examples"])
    assert any("source_urls" in ex for ex in schemas["ConvertResponse"]["examples"])
    assert set(schemas["PageSize"]["enum"]) == {"image", "A4", "Letter"}


def test_a_batch_that_can_never_fit_the_budget_is_413(tmp_path, source):
    """Each image fits alone; the pages kept for earlier images push the third over
    the data pool (DOWNLOAD_BUDGET), which holds finished pages and the next source."""
    noise = Image.frombytes("RGB", (700, 700), random.Random(7).randbytes(700 * 700 * 3))
    buf = io.BytesIO()
    noise.save(buf, "PNG", compress_level=0)
    data = buf.getvalue()  # incompressible: its PDF is as large as the file
    work = estimate_peak_bytes(inspect_image(data, 40_000_000), len(data))
    url = source.add_bytes("/batch/noise.png", data)
    env = {
        "WORKER_MEMORY_BUDGET": str(max(16 * 1024 * 1024, 2 * work)),
        "DOWNLOAD_BUDGET": str(math.ceil(2.5 * len(data))),
        "MAX_SOURCE_BYTES": str(len(data) + 1024),
    }
    with_budget = Service(tmp_path, env=env).start()
    try:
        assert with_budget.post(url).status == 200
        assert post_urls(with_budget, [url, url]).status == 200
        before = stored(with_budget)
        resp = post_urls(with_budget, [url, url, url])
        assert_error(resp, 413, "batch_too_large")
        assert resp.json()["item"] == 3
        assert stored(with_budget) == before
    finally:
        with_budget.stop()
