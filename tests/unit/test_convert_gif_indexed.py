"""A GIF's first frame written as an /Indexed image from Pillow's 1 B/px decode.

Each file is rendered (pypdfium2, transparent background) twice: as converted,
and through libvips' RGB(A) frame (the route GIFs took before), and the two
must match pixel for pixel, alpha included (a fully transparent pixel's colour
is not shown); the alpha also matches Pillow's.
"""

from __future__ import annotations

import io
import os

import numpy as np
import pikepdf
import pytest
from PIL import Image

from app.engine import img2pdf_route, streamed
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from app.errors import InvalidImage
from app.pages import visible_size
from tests.support import images
from tests.unit.test_convert_stream import rendered_rgba

rng = np.random.default_rng(7)


def gif(w: int, h: int, colours: int = 256, transparency: int | None = None, **params) -> bytes:
    im = Image.fromarray(rng.integers(0, colours, (h, w), dtype=np.uint8), "P")
    im.putpalette(rng.integers(0, 256, colours * 3, dtype=np.uint8).tobytes())
    buf = io.BytesIO()
    if transparency is not None:
        params["transparency"] = transparency
    im.save(buf, "GIF", **params)
    return buf.getvalue()


def through_libvips(data: bytes) -> bytes:
    """The same file through libvips' decoded frame (the route before /Indexed)."""
    with Image.open(io.BytesIO(data)) as im:
        dpi = img2pdf_route.img2pdf.pil_get_dpi(
            im, img2pdf_route.img2pdf.ImageFormat.GIF, img2pdf_route.img2pdf.default_dpi
        )
    fd = os.memfd_create("pdf")
    try:
        size = streamed._stream(data, "gif", 1, dpi, fd)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def converted(data: bytes) -> bytes:
    info = inspect_image(data, 10**8)
    assert info.route == "stream" and info.indexed
    return convert_to_pdf(data, info)


CASES = {
    "marked": lambda: images.gif(64, 48),
    "transparent": lambda: images.gif_transparent(64, 48),
    "noise 256": lambda: gif(37, 23),
    "noise 256, index 200 transparent": lambda: gif(37, 23, transparency=200),
    "two colours, 1x1": lambda: gif(1, 1, 2),
    "four colours, 7x3, index 3 transparent": lambda: gif(7, 3, 4, transparency=3),
    "sixteen colours, 1x9": lambda: gif(1, 9, 16, transparency=0),
    "interlaced": lambda: gif(40, 31, 64, interlace=True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_renders_as_the_rgb_frame_did_alpha_included(name):
    data = CASES[name]()
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im.convert("RGBA"))
        size = im.size
    pdf = converted(data)
    assert b"/Indexed /DeviceRGB 255" in pdf
    got = rendered_rgba(pdf, size)
    before = rendered_rgba(through_libvips(data), size)
    assert np.array_equal(got[..., 3], want[..., 3])
    assert np.array_equal(before[..., 3], want[..., 3])
    opaque = want[..., 3] == 255  # what a fully transparent pixel holds is not shown
    assert np.array_equal(got[..., :3][opaque], before[..., :3][opaque])
    assert np.abs(got[..., :3][opaque].astype(int) - want[..., :3][opaque]).max() <= 2


def test_indices_are_stored_as_they_are():
    data = gif(50, 20, transparency=9)
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
        palette = bytes(im.getpalette("RGB"))
    with pikepdf.open(io.BytesIO(converted(data))) as doc:
        (image,) = doc.pages[0].get_images().values()
        got = np.frombuffer(image.read_bytes(), np.uint8).reshape(20, 50)
        assert bytes(image.ColorSpace[3])[: len(palette)] == palette
        assert list(image.Mask) == [9, 9]
        assert "/SMask" not in image
    assert np.array_equal(got, want)


def test_page_size_is_exact_in_points():
    data = gif(300, 150)
    with pikepdf.open(io.BytesIO(converted(data))) as doc:
        assert visible_size(doc.pages[0]) == pytest.approx((300 * 72 / 96, 150 * 72 / 96))


def test_estimate_is_one_byte_a_pixel_not_an_rgba_frame():
    data = images.gif(64, 48)
    info = inspect_image(data, 10**8)
    big = type(info)("gif", 8000, 5000, "P", 1, "stream", 0, False, False, True)
    assert estimate_peak_bytes(big, len(data)) < 80 * 1024 * 1024
    framed = type(info)("gif", 8000, 5000, "P", 1, "stream", 0, False, False, False)
    assert estimate_peak_bytes(framed, len(data)) >= 7 * 8000 * 5000


def test_a_frame_smaller_than_the_screen_keeps_libvips():
    im = Image.new("P", (10, 6), 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    buf = io.BytesIO()
    im.save(buf, "GIF")
    data = bytearray(buf.getvalue())
    # Logical screen 20x12; the image descriptor keeps 10x6 at (0, 0).
    data[6:10] = (20).to_bytes(2, "little") + (12).to_bytes(2, "little")
    info = inspect_image(bytes(data), 10**8)
    assert info.route == "stream" and not info.indexed
    assert convert_to_pdf(bytes(data), info).startswith(b"%PDF-")


@pytest.mark.parametrize("cut", [0.3, 0.8])
def test_truncated_gif_is_invalid(cut):
    data = gif(120, 80)
    data = data[: int(len(data) * cut)]
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**8))
