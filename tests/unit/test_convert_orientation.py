"""EXIF orientation 1-8 on every format that carries it, RGB and RGBA, checked by
rendering the PDF as a viewer does (pypdfium2) against ImageOps.exif_transpose;
and the exact page size, px * 72 / dpi, on every route, non-square dpi included."""

from __future__ import annotations

import dataclasses
import io

import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageOps

from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.routes import low_memory_variant
from app.pages import visible_size
from tests.support import images

W, H = 64, 32
# Four distinct quadrants; in RGBA the bottom-right one is fully transparent.
COLOURS = [(220, 0, 0), (0, 160, 0), (0, 0, 230), (230, 200, 0)]
DPI = (100, 200)


def source(mode: str) -> Image.Image:
    im = Image.new("RGB", (W, H))
    for i, colour in enumerate(COLOURS):
        x, y = (i % 2) * W // 2, (i // 2) * H // 2
        im.paste(colour, (x, y, x + W // 2, y + H // 2))
    if mode == "RGBA":
        im = im.convert("RGBA")
        im.paste((0, 0, 0, 0), (W // 2, H // 2, W, H))
    return im


def encode(fmt: str, mode: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict = {"exif": exif.tobytes()}
    if fmt == "JPEG":
        params.update(quality=95, dpi=DPI)
    elif fmt in {"PNG", "TIFF"}:
        params["dpi"] = DPI
    elif fmt == "WEBP":
        params["lossless"] = True
    buf = io.BytesIO()
    source(mode).save(buf, fmt, **params)
    return buf.getvalue()


def expected(mode: str, orientation: int) -> Image.Image:
    """What a viewer shows: exif_transpose of the stored pixels, on white paper."""
    stored = source(mode)
    stored.getexif()[0x0112] = orientation
    shown = ImageOps.exif_transpose(stored).convert("RGBA")
    paper = Image.new("RGBA", shown.size, (255, 255, 255, 255))
    return Image.alpha_composite(paper, shown).convert("RGB")


def render(pdf: bytes, size: tuple[int, int]) -> Image.Image:
    doc = pdfium.PdfDocument(pdf)
    try:
        page = doc[0]
        im = page.render(scale=4.0).to_pil().convert("RGB")
    finally:
        doc.close()
    return im.resize(size, Image.Resampling.NEAREST)


def cells(im: Image.Image) -> list[tuple[int, int, int]]:
    w, h = im.size
    points = [(w * (2 * i + 1) // 8, h * (2 * j + 1) // 8) for j in range(4) for i in range(4)]
    return [im.getpixel(p) for p in points]


def near(a, b, tol=60) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def shown_size(pdf: bytes) -> tuple[float, float]:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert len(doc.pages) == 1
        return visible_size(doc.pages[0])


CASES = [
    (fmt, mode)
    for fmt in ("JPEG", "PNG", "TIFF", "WEBP")
    for mode in ("RGB", "RGBA")
    if not (fmt == "JPEG" and mode == "RGBA")
]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(("fmt", "mode"), CASES)
def test_orientation_renders_like_exif_transpose(fmt, mode, orientation):
    data = encode(fmt, mode, orientation)
    want = expected(mode, orientation)
    info = inspect_image(data, 10**8)
    pdf = convert_to_pdf(data, info)
    got = render(pdf, want.size)
    for i, (g, w) in enumerate(zip(cells(got), cells(want), strict=True)):
        assert near(g, w), (fmt, mode, orientation, info.route, i, g, w)
    # Exact page size: the shown pixels at the shown axes' dpi.
    dpi = DPI if fmt != "WEBP" else (96, 96)
    if orientation >= 5:
        dpi = (dpi[1], dpi[0])
    assert shown_size(pdf) == pytest.approx(
        (want.width * 72 / dpi[0], want.height * 72 / dpi[1]), abs=0.01
    ), (fmt, mode, orientation, info.route)


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_low_memory_alpha_route_keeps_orientation_and_page_size(orientation):
    data = encode("PNG", "RGBA", orientation)
    info = dataclasses.replace(inspect_image(data, 10**8), route="img2pdf-alpha")
    cheaper = low_memory_variant(info)
    assert cheaper is not None
    pdf = convert_to_pdf(data, cheaper)
    want = expected("RGBA", orientation)
    for g, w in zip(cells(render(pdf, want.size)), cells(want), strict=True):
        assert near(g, w)
    dpi = DPI if orientation < 5 else (DPI[1], DPI[0])
    assert shown_size(pdf) == pytest.approx((want.width * 72 / dpi[0], want.height * 72 / dpi[1]))


# Every other route, by the name of its maker in tests/support/images.py.
SIXTEEN_BIT = ("png16", "png16_alpha", "tiff16")  # built at 32x24, the others at 64x48
OTHER_ROUTES = (*SIXTEEN_BIT, "png_interlaced", "tiff_alpha", "gif", "gif_transparent", "bmp")
OTHER_ROUTES += ("webp_alpha", "jp2", "cmyk_jpeg", "la_png")


@pytest.mark.parametrize("maker", OTHER_ROUTES)
def test_page_is_pixels_at_the_default_dpi_on_every_other_route(maker):
    size = (32, 24) if maker in SIXTEEN_BIT else (64, 48)
    data = getattr(images, maker)(*size)
    pdf = convert_to_pdf(data, inspect_image(data, 10**8))
    assert shown_size(pdf) == pytest.approx((size[0] * 72 / 96, size[1] * 72 / 96), abs=0.01)
