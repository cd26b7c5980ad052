"""The routes that skip img2pdf (and, for a plain JPEG, the sandbox) attacked
through the real service: what they accept must be what the sandboxed path
accepts, and what they refuse gets the same clean answer."""

from __future__ import annotations

import pytest

from app.engine import structure
from app.pages import visible_size
from tests.service.conftest import open_pdf
from tests.support import images
from tests.support.servers import http
from tests.unit.test_fastpaths_adversarial import (
    EXIF_IFD0,
    REFUSED_BY_PILLOW,
    alpha_png,
    alpha_rows,
    jpeg_with_stray,
    png_with_filters,
)


def assert_error(resp, status: int, code: str) -> None:
    assert resp.status == status, (resp.status, resp.body[:300])
    body = resp.json()
    assert body == {"detail": body["detail"], "code": code}, body


@pytest.mark.parametrize("name", list(REFUSED_BY_PILLOW))
def test_a_jpeg_header_pillow_refuses_is_a_422_not_an_embedded_pdf(service, source, name):
    # The in-worker walk embedded these (200) although the sandboxed path, which
    # opens the file with Pillow as img2pdf does, answers 422.
    url = source.add_bytes(f"/fastpath/{name}.jpg", REFUSED_BY_PILLOW[name])
    assert_error(service.post(url), 422, "invalid_image")
    assert "unhandled error" not in service.log()


@pytest.mark.parametrize("colour_type", [0, 2])
def test_a_plain_png_row_with_filter_type_5_is_a_422_not_a_stored_pdf(service, source, colour_type):
    # The plain-PNG writer copies IDAT as it is: the size check passed and the
    # service answered 200 with an image no reader decodes.
    bad = source.add_bytes(
        f"/fastpath/filter5-{colour_type}.png", png_with_filters([0, 5], colour_type)
    )
    assert_error(service.post(bad), 422, "invalid_image")
    good = source.add_bytes(
        f"/fastpath/filter4-{colour_type}.png", png_with_filters([0, 4], colour_type)
    )
    assert service.post(good).status == 200


def test_an_alpha_png_with_one_row_too_many_converts_as_before(service, source):
    # The decoding route (Pillow, then libvips) converts it; the split answered 422.
    width, height = 13, 9
    rows = alpha_rows(width, height, 4)
    data = alpha_png(rows + rows[: 1 + width * 4], width, height)
    resp = service.post(source.add_bytes("/fastpath/alpha-extra-row.png", data))
    assert resp.status == 200, resp.body[:300]
    assert "unhandled error" not in service.log()


@pytest.mark.parametrize("colour_type, bands", [(6, 4), (4, 2)])
def test_a_40_mp_alpha_png_one_row_high_converts(service, source, colour_type, bands):
    # One 160 MB row: the split held whole rows (the inflated row, its copy and
    # both halves, ~550 MiB for a 155 KB file) against a 73 MiB estimate, so
    # the kernel limit stopped it (413 conversion_memory_exceeded).
    width = 40_000_000
    data = alpha_png(b"\x00" + bytes(width * bands), width, 1, colour_type)
    resp = service.post(source.add_bytes(f"/fastpath/wide-{colour_type}.png", data))
    assert resp.status == 200, resp.body[:300]


@pytest.mark.parametrize("stray", [b"\xff", b"\x00"], ids=["fill", "junk"])
def test_a_20_mib_run_of_stray_bytes_is_refused_at_once(service, source, stray):
    # The worker's walk hands such a file to the sandbox, where Pillow's header
    # loop stepped over each byte: 20 MiB of fill bytes ran into the 15 s
    # conversion timeout (422 conversion_timeout, a child's CPU for 15 s).
    size = 20 * 1024 * 1024 - len(images.jpeg(16, 8))
    url = source.add_bytes(f"/fastpath/stray-{stray.hex()}.jpg", jpeg_with_stray(stray * size))
    assert_error(service.post(url), 413, "image_too_complex")


def test_a_few_fill_bytes_still_convert(service, source):
    cap = structure.JPEG_MAX_STRAY_BYTES
    url = source.add_bytes("/fastpath/fill-at-cap.jpg", jpeg_with_stray(b"\xff" * cap))
    assert service.post(url).status == 200


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        # Pillow stops before the orientation: upright, 16 x 8 px at 72 dpi.
        ("orientation after data past the end (5)", (16, 8)),
        # Pillow skips XResolution but reads orientation 5: turned, 72 dpi.
        ("resolution past the data limit", (8, 16)),
    ],
)
def test_exif_pillow_stops_reading_decides_the_page(service, source, name, shown):
    # The worker's walk read the orientation (5, mirrored and turned) or the
    # resolution (300 dpi) after an IFD0 entry Pillow stops at or skips: the
    # PDF showed what Pillow does not. Now Pillow's reading decides.
    url = source.add_bytes(f"/fastpath/exif-{len(name)}.jpg", EXIF_IFD0[name])
    resp = service.post(url)
    assert resp.status == 200, resp.body[:300]
    pdf = open_pdf(http("GET", resp.json()["converted_url"]).body)
    page = pdf.pages[0]
    assert "/Rotate" not in page
    assert visible_size(page) == pytest.approx(shown, abs=1e-3)
    matrix = page.Contents.read_bytes().split(b" cm")[0].split()[-6:]
    assert (matrix[1:3] == [b"0", b"0"]) == (shown == (16, 8)), matrix  # unturned iff upright
