"""app.engine: every supported input becomes a correct one-page PDF, and every
bad input becomes the right client error (never a 500, never a decoded bomb)."""

from __future__ import annotations

import dataclasses
import io
import time
from dataclasses import dataclass

import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageOps

from app.engine.convert import convert_to_pdf
from app.engine.facts import ImageInfo
from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from app.engine.routes import low_memory_variant
from app.errors import ImageTooLarge, InvalidImage, UnsupportedImage
from tests.support import images

MAX_PIXELS = 40_000_000


def convert(data: bytes) -> bytes:
    return convert_to_pdf(data, inspect_image(data, MAX_PIXELS))


@dataclass
class Page:
    width: float
    height: float
    rotate: int


def one_page(pdf_bytes: bytes) -> Page:
    """Open with pikepdf (a strict parser), insist on one page, return its geometry."""
    with pikepdf.open(io.BytesIO(pdf_bytes)) as pdf:
        assert len(pdf.pages) == 1
        page = pdf.pages[0]
        box = [float(v) for v in page.mediabox]
        return Page(box[2] - box[0], box[3] - box[1], int(page.obj.get("/Rotate", 0)))


def render(pdf_bytes: bytes, size: tuple[int, int] | None = None) -> Image.Image:
    """Rasterise page 1 as a viewer would (rotation applied, white paper)."""
    doc = pdfium.PdfDocument(pdf_bytes)
    try:
        page = doc[0]
        scale = 4.0 if size is None else size[0] / page.get_width()
        im = page.render(scale=scale).to_pil().convert("RGB")
    finally:
        doc.close()
    return im if size is None else im.resize(size)


def near(pixel, colour, tol: int = 40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(pixel, colour, strict=True))


def page_stream_bytes(pdf_bytes: bytes) -> list[bytes]:
    with pikepdf.open(io.BytesIO(pdf_bytes)) as pdf:
        return [xobj.read_raw_bytes() for xobj in pdf.pages[0].get_images().values()]


# --- formats -----------------------------------------------------------------

FORMATS = {
    "jpeg": images.jpeg,
    "jpeg_gray": lambda: images.jpeg(mode="L"),
    "cmyk_jpeg": images.cmyk_jpeg,
    "png": images.png,
    "png_interlaced": images.png_interlaced,
    "png_gray": lambda: images.png(mode="L"),
    "png_1bit": lambda: images.png(mode="1"),
    "png_palette": lambda: images.png(mode="P"),
    "png16": images.png16,
    "png16_gray": images.png16_gray,
    "png16_alpha": images.png16_alpha,
    "alpha_png": images.alpha_png,
    "la_png": images.la_png,
    "palette_transparent_png": images.palette_transparent_png,
    "gif": images.gif,
    "gif_transparent": images.gif_transparent,
    "gif_animated": images.gif_animated,
    "tiff": images.tiff,
    "tiff_1bit": lambda: images.tiff(mode="1", compression="group4"),
    "tiff_cmyk": lambda: images.tiff(mode="CMYK"),
    "tiff_alpha": images.tiff_alpha,
    "tiff16": images.tiff16,
    "tiff_multipage": images.tiff_multipage,
    "webp": images.webp,
    "webp_alpha": images.webp_alpha,
    "webp_animated": images.webp_animated,
    "bmp": images.bmp,
    "jp2": images.jp2,
}


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_becomes_a_one_page_pdf_sized_to_the_image(name):
    data = FORMATS[name]()
    info = inspect_image(data, MAX_PIXELS)
    pdf = convert_to_pdf(data, info)
    page = one_page(pdf)
    assert page.width / page.height == pytest.approx(info.width / info.height, rel=0.02)
    assert pdf.startswith(b"%PDF-")


def test_inspect_reports_header_facts_without_decoding():
    info = inspect_image(images.gif_animated(40, 30, frames=3), MAX_PIXELS)
    assert (info.kind, info.width, info.height, info.mode, info.frames) == ("gif", 40, 30, "P", 3)
    assert inspect_image(images.png16_gray(), MAX_PIXELS).mode == "I;16"
    assert inspect_image(images.alpha_png(), MAX_PIXELS).mode == "RGBA"


def test_output_is_reproducible_and_names_no_tool_version():
    data = images.png()
    first, second = convert(data), convert(data)
    assert first == second
    with pikepdf.open(io.BytesIO(first)) as pdf:
        assert str(pdf.docinfo["/Producer"]) == "img2pdf-service"
        assert "/CreationDate" not in pdf.docinfo


# --- byte-for-byte embedding ---------------------------------------------------


@pytest.mark.parametrize("make", [images.jpeg, images.cmyk_jpeg, images.jp2])
def test_jpeg_and_jp2_are_embedded_unchanged(make):
    data = make(320, 240)
    pdf = convert(data)
    assert page_stream_bytes(pdf) == [data]


def test_plain_png_idat_is_copied_not_reencoded():
    data = images.png(200, 100)
    with Image.open(io.BytesIO(images.png(200, 100))) as im:
        assert im.format == "PNG"
    idat_start = data.index(b"IDAT") + 4
    idat_len = int.from_bytes(data[idat_start - 8 : idat_start - 4], "big")
    assert page_stream_bytes(convert(data)) == [data[idat_start : idat_start + idat_len]]


# --- colour and alpha ----------------------------------------------------------

ALPHA = {
    "alpha_png": images.alpha_png,
    "png16_alpha": images.png16_alpha,
    "palette_transparent_png": images.palette_transparent_png,
    "gif_transparent": images.gif_transparent,
    "tiff_alpha": images.tiff_alpha,
    "webp_alpha": images.webp_alpha,
}


@pytest.mark.parametrize("name", sorted(ALPHA))
def test_transparent_pixels_render_white_and_opaque_ones_keep_their_colour(name):
    data = ALPHA[name](64, 48)
    im = render(convert(data), (64, 48))
    assert near(im.getpixel((12, 24)), images.RED), im.getpixel((12, 24))
    assert near(im.getpixel((52, 24)), images.WHITE, tol=8), im.getpixel((52, 24))


def test_grey_with_alpha_renders_white_behind_transparency():
    im = render(convert(images.la_png(64, 48)), (64, 48))
    assert near(im.getpixel((12, 24)), (80, 80, 80))
    assert near(im.getpixel((52, 24)), images.WHITE, tol=8)


def test_cmyk_jpeg_colours_are_not_inverted():
    im = render(convert(images.cmyk_jpeg(64, 48)), (64, 48))
    assert near(im.getpixel((32, 24)), images.RED, tol=60), im.getpixel((32, 24))


@pytest.mark.parametrize("make", [images.png16_gray, images.tiff16])
def test_sixteen_bit_grey_keeps_its_tones(make):
    im = render(convert(make(32, 24)), (32, 24))
    assert near(im.getpixel((4, 12)), (0, 0, 0), tol=10)
    assert near(im.getpixel((28, 12)), images.WHITE, tol=10)


def test_sixteen_bit_rgb_png():
    im = render(convert(images.png16(32, 24)), (32, 24))
    assert near(im.getpixel((4, 12)), images.RED)
    assert near(im.getpixel((28, 12)), images.BLUE)


# --- orientation ---------------------------------------------------------------


def _quadrant_colours(im: Image.Image) -> list[tuple[int, int, int]]:
    w, h = im.size
    return [im.getpixel((x, y)) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4)]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_a_viewer_would(orientation):
    data = images.jpeg_with_orientation(orientation, 64, 32)
    with Image.open(io.BytesIO(data)) as im:
        expected = ImageOps.exif_transpose(im).convert("RGB")
    pdf = convert(data)
    page = one_page(pdf)
    shown = (page.height, page.width) if page.rotate in (90, 270) else (page.width, page.height)
    assert shown[0] / shown[1] == pytest.approx(expected.width / expected.height, rel=0.02)
    got = render(pdf, None).resize(expected.size)
    for got_px, want_px in zip(_quadrant_colours(got), _quadrant_colours(expected), strict=True):
        assert near(got_px, want_px, tol=60), (orientation, got_px, want_px)


def test_unmirrored_rotation_keeps_the_jpeg_bytes():
    data = images.jpeg_with_orientation(6, 64, 32)
    pdf = convert(data)
    assert page_stream_bytes(pdf) == [data]
    assert one_page(pdf).rotate == 90


# --- sizes and frames ----------------------------------------------------------


@pytest.mark.parametrize("make", [images.png, images.jpeg, images.gif])
def test_one_pixel_image_gets_a_valid_page(make):
    page = one_page(convert(make(1, 1)))
    assert page.width >= 3 and page.height >= 3


def test_extreme_strip_stays_inside_pdf_page_limits():
    page = one_page(convert(images.png(20000, 1)))
    for side in (page.width, page.height):
        assert 3 <= side <= 14400


@pytest.mark.parametrize("make", [images.gif_animated, images.webp_animated, images.tiff_multipage])
def test_multi_frame_images_give_the_first_frame_only(make):
    pdf = convert(make(64, 48))
    one_page(pdf)
    assert near(render(pdf, (64, 48)).getpixel((32, 24)), images.RED)


# --- rejections ----------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [images.svg(), images.random_bytes(), images.pdf(), images.non_image(), b"", b"GIF"],
    ids=["svg", "random", "pdf", "html", "empty", "short"],
)
def test_non_images_are_unsupported(data):
    with pytest.raises(UnsupportedImage):
        inspect_image(data, MAX_PIXELS)


def test_corrupt_header_is_invalid():
    with pytest.raises(InvalidImage):
        inspect_image(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, MAX_PIXELS)


@pytest.mark.parametrize("make", [images.truncated_jpeg, images.truncated_png])
def test_truncated_images_are_invalid(make):
    data = make()
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, MAX_PIXELS))


def test_png_missing_rows_is_invalid_not_embedded():
    data = images.pixel_bomb_png(2000, 2000)  # 4 MP claimed, one short row present
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, MAX_PIXELS))


@pytest.mark.parametrize("side", [7000, 20000, 60000])
def test_pixel_bomb_is_rejected_from_the_header_quickly(side):
    data = images.pixel_bomb_png(side, side)
    assert len(data) < 1000
    start = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        inspect_image(data, MAX_PIXELS)
    assert time.perf_counter() - start < 0.05


def test_pillow_bomb_limit_never_escapes_as_a_500(monkeypatch):
    data = images.png(200, 200)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(ImageTooLarge):
        inspect_image(data, MAX_PIXELS)
    info = ImageInfo("png", 200, 200, "RGB", 1)
    with pytest.raises(ImageTooLarge):
        convert_to_pdf(data, info)


def test_a_wrong_format_behind_a_right_signature_is_invalid():
    data = b"\xff\xd8\xff\xe0" + images.random_bytes(2000)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, ImageInfo("jpeg", 10, 10, "RGB", 1))


# --- memory estimate -----------------------------------------------------------


def test_estimate_grows_with_pixels_and_source_size():
    small = ImageInfo("png", 100, 100, "RGBA", 1)
    big = ImageInfo("png", 4000, 4000, "RGBA", 1)
    assert estimate_peak_bytes(small, 1000) < estimate_peak_bytes(big, 1000)
    assert estimate_peak_bytes(big, 1000) < estimate_peak_bytes(big, 10_000_000)


def test_estimate_for_decoding_routes_exceeds_embedding_routes():
    jpeg = inspect_image(images.jpeg(400, 300), MAX_PIXELS)
    alpha = inspect_image(images.alpha_png(400, 300), MAX_PIXELS)
    assert estimate_peak_bytes(alpha, 1000) > estimate_peak_bytes(jpeg, 1000)


def test_unknown_route_assumes_the_worst_for_the_kind():
    guessed = ImageInfo("png", 4000, 4000, "RGB", 1)
    embedded = inspect_image(images.png(4000, 4000), MAX_PIXELS)
    assert embedded.route == "embed-png"
    assert estimate_peak_bytes(guessed, 1000) > estimate_peak_bytes(embedded, 1000)
    # 64 MP RGBA through img2pdf's alpha path was measured at ~735 MB.
    assert estimate_peak_bytes(ImageInfo("png", 8000, 8000, "RGBA", 1), 0) > 735_000_000


def test_png_split_into_many_idat_chunks_embeds_quickly_and_intact():
    """img2pdf's own chunk joining is quadratic; app.engine.img2pdf_route swaps in a linear one."""
    import struct
    import zlib

    data = images.png(300, 200)
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    idat = data[start : start + length]
    pieces = [idat[i : i + 7] for i in range(0, len(idat), 7)]
    chunks = b"".join(
        struct.pack(">I", len(p)) + b"IDAT" + p + struct.pack(">I", zlib.crc32(b"IDAT" + p))
        for p in pieces
    )
    split = data[: start - 8] + chunks + data[start + length + 4 :]
    assert page_stream_bytes(convert(split)) == [idat]


def test_truncated_jpeg_with_zero_padding_is_still_invalid():
    data = images.truncated_jpeg() + b"\0" * 16
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**8))


def test_complete_jpeg_with_trailing_padding_converts_unchanged():
    data = images.jpeg(320, 240) + b"\0" * 8
    pdf = convert_to_pdf(data, inspect_image(data, 10**8))
    assert data.rstrip(b"\0") in pdf


def soft_mask_route(data: bytes) -> ImageInfo:
    """The image on img2pdf's soft-mask route (taken when libvips cannot stream it)."""
    return dataclasses.replace(inspect_image(data, 10**8), route="img2pdf-alpha")


def test_low_memory_variant_flattens_alpha_onto_white_for_less_memory():
    data = images.alpha_png(64, 48)
    info = soft_mask_route(data)
    cheaper = low_memory_variant(info)
    assert cheaper is not None and cheaper.route != info.route
    assert estimate_peak_bytes(cheaper, len(data)) < estimate_peak_bytes(info, len(data))
    pdf = convert_to_pdf(data, cheaper)
    assert b"/SMask" not in pdf  # flattened: no soft mask
    im = render(pdf, (64, 48))
    assert near(im.getpixel((8, 24)), images.RED)
    assert near(im.getpixel((56, 24)), images.WHITE)
    # Routes without a cheaper way have no variant.
    assert low_memory_variant(inspect_image(images.jpeg(), 10**8)) is None


def test_low_memory_variant_of_grey_with_alpha_renders_white_behind_transparency():
    data = images.la_png(64, 48)  # left half grey 80 opaque, right half transparent
    cheaper = low_memory_variant(soft_mask_route(data))
    assert cheaper is not None
    pdf = convert_to_pdf(data, cheaper)
    assert b"/SMask" not in pdf
    im = render(pdf, (64, 48))
    assert near(im.getpixel((8, 24)), (80, 80, 80))
    assert near(im.getpixel((56, 24)), images.WHITE, tol=5)


def test_grey_with_alpha_is_priced_as_an_alpha_image():
    """LA streams with a soft mask; on img2pdf's soft-mask path it costs ~23 B/px."""
    w, h = 1000, 1000
    info = inspect_image(images.la_png(w, h), 10**8)
    assert info.route == "stream"
    assert b"/SMask" in convert_to_pdf(images.la_png(64, 48), inspect_image(images.la_png(), 10**8))
    assert estimate_peak_bytes(soft_mask_route(images.la_png(w, h)), 0) >= 23 * w * h


def test_webp_is_priced_at_its_decoder_floor_on_every_whole_frame_route():
    """A whole WebP frame is decoded: ~27 B/px of address space with libvips, Pillow alike
    (an animated WebP, or any WebP off the banded route of app.engine.webp)."""
    w, h = 1000, 1000
    for data in (images.webp(w, h), images.webp_alpha(w, h)):
        info = inspect_image(data, 10**8)
        assert info.route == "stream" and info.webp_bands
        whole = dataclasses.replace(info, webp_bands=False, decoder_bytes=0)
        for route in ("stream", "pillow-flatten", "img2pdf-decode"):
            priced = dataclasses.replace(whole, route=route)
            assert estimate_peak_bytes(priced, len(data)) >= 32 * w * h, route
