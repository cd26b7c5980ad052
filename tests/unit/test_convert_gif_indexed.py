"""A GIF's first frame written as an /Indexed image from Pillow's 1 B/px decode.

Each file is rendered (pypdfium2, transparent background) twice: as converted,
and through libvips' RGB(A) frame (the route GIFs took before), and the two
must match pixel for pixel, alpha included (a fully transparent pixel's colour
is not shown); the alpha also matches Pillow's.
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pikepdf
import pytest
from PIL import Image

from app.engine import img2pdf_route, streamed
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from app.errors import ImageTooLarge, InvalidImage
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


def gif_frame(screen, box, transparency=None, colours=16) -> bytes:
    """A GIF whose first frame `box` = (left, top, width, height) sits on a
    logical screen `screen` = (w, h); palette index 0 is not black."""
    left, top, fw, fh = box
    im = Image.fromarray(rng.integers(1, colours, (fh, fw), dtype=np.uint8), "P")
    im.putpalette(bytes(range(100, 100 + colours * 3)) if colours <= 50 else rng.bytes(768))
    buf = io.BytesIO()
    params = {} if transparency is None else {"transparency": transparency}
    im.save(buf, "GIF", background=5, optimize=False, **params)
    return images.place_gif_frame(buf.getvalue(), screen, left, top)


def stored(pdf: bytes):
    """The /Indexed samples and the /Mask colour key."""
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (image,) = doc.pages[0].get_images().values()
        got = np.frombuffer(image.read_bytes(), np.uint8)
        mask = list(image.Mask) if "/Mask" in image else None
        return got.reshape(int(image.Height), int(image.Width)), mask


# (screen, frame box): inside, touching the right and bottom edges, at the
# top-left corner, one pixel, one row / column of padding.
SMALL_FRAMES = [
    ((10, 8), (2, 3, 4, 3)),
    ((10, 8), (6, 5, 4, 3)),
    ((10, 8), (0, 0, 4, 3)),
    ((10, 8), (9, 7, 1, 1)),
    ((10, 8), (0, 0, 10, 7)),
    ((10, 8), (1, 0, 9, 8)),
]


@pytest.mark.parametrize("transparency", [None, 3])
@pytest.mark.parametrize(("screen", "box"), SMALL_FRAMES)
def test_a_frame_smaller_than_the_screen_is_indexed_and_padded_transparent(
    screen, box, transparency
):
    """Browsers show the page around the first frame (not the background colour);
    libvips does too when the GIF has a transparent index, Pillow pads with it."""
    data = gif_frame(screen, box, transparency)
    info = inspect_image(data, 10**8)
    assert info.route == "stream" and info.indexed and (info.width, info.height) == screen
    pdf = convert_to_pdf(data, info)
    got, mask = stored(pdf)
    left, top, fw, fh = box
    inside = np.zeros(screen[::-1], bool)
    inside[top : top + fh, left : left + fw] = True
    key = 255 if transparency is None else transparency
    assert mask == [key, key]
    assert (got[~inside] == key).all()
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
        want_rgba = np.asarray(im.convert("RGBA"))
    assert np.array_equal(got[inside], want[inside])
    rendered = rendered_rgba(pdf, screen)
    alpha = np.where(inside & (want != key), 255, 0)
    assert np.array_equal(rendered[..., 3], alpha)
    shown = alpha == 255
    assert np.abs(rendered[..., :3][shown].astype(int) - want_rgba[..., :3][shown]).max() <= 2
    if transparency is not None:  # libvips' RGBA frame: the same page
        before = rendered_rgba(through_libvips(data), screen)
        assert np.array_equal(before[..., 3], alpha)


def test_a_full_colour_table_without_transparency_pads_with_index_0_as_pillow():
    data = gif_frame((12, 9), (3, 2, 5, 4), colours=256)
    info = inspect_image(data, 10**8)
    assert info.indexed
    got, mask = stored(convert_to_pdf(data, info))
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
    assert mask is None and np.array_equal(got, want)
    assert (got[:2] == 0).all() and (got[:, 8:] == 0).all()


@pytest.mark.parametrize(
    ("box", "grown"),
    [((7, 5, 4, 3), (11, 8)), ((0, 0, 12, 9), (12, 9)), ((20, 20, 4, 3), (24, 23))],
)
def test_a_frame_past_the_screen_grows_it_as_both_decoders_do(box, grown):
    data = gif_frame((10, 8), box, transparency=3)
    info = inspect_image(data, 10**8)
    assert info.indexed and (info.width, info.height) == grown
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == grown
        want = np.asarray(im)
    got, mask = stored(convert_to_pdf(data, info))
    assert mask == [3, 3] and np.array_equal(got, want)
    before = rendered_rgba(through_libvips(data), grown)
    assert np.array_equal(rendered_rgba(convert_to_pdf(data, info), grown)[..., 3], before[..., 3])


def test_a_frame_offset_far_past_the_screen_is_too_large_from_its_header():
    data = gif_frame((10, 8), (60000, 60000, 4, 3))
    with pytest.raises(ImageTooLarge):
        inspect_image(data, 40_000_000)
    edge = gif_frame((10, 8), (6000, 6000, 4, 3))
    assert inspect_image(edge, 40_000_000).pixels == 6004 * 6003


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_a_truncated_small_frame_is_invalid(cut):
    data = gif_frame((400, 300), (50, 40, 300, 200))
    data = data[: int(len(data) * cut)]
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**8))


@pytest.mark.parametrize("cut", [0.3, 0.8])
def test_truncated_gif_is_invalid(cut):
    data = gif(120, 80)
    data = data[: int(len(data) * cut)]
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**8))


def lzw_gif(screen, box, table: int, indices: np.ndarray) -> bytes:
    """A GIF89a with a global table of `table` entries (a power of 2, index i the
    grey 100 + i), whose first frame `box` = (left, top, w, h) holds `indices`, any
    of 0-255 even past the table: 8-bit LZW codes, a clear code every 250 pixels
    so every code stays 9 bits."""
    bits = table.bit_length() - 2
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80 | bits, 0, 0)
    head += b"".join(bytes([100 + i] * 3) for i in range(table))
    left, top, fw, fh = box
    head += b"\x2c" + struct.pack("<HHHHB", left, top, fw, fh, 0)
    return head + images.gif_lzw_frame(indices) + b"\x3b"


@pytest.mark.parametrize("table", [2, 16, 128])
@pytest.mark.parametrize("used", [[255], [254, 255], list(range(200, 256))])
def test_indices_past_a_short_table_stay_black_inside_a_smaller_frame(table, used):
    # Index 255 was the spare keyed out around a frame smaller than the screen even
    # when the frame's own pixels used it: they showed transparent where Pillow
    # (and a table padded with black) shows black.
    screen, box = (23, 17), (3, 2, 16, 12)
    values = np.array(used * (16 * 12 // len(used) + 1), np.uint8)[: 16 * 12].reshape(12, 16)
    values[0, :3] = [0, table - 1, 1]
    data = lzw_gif(screen, box, table, values)
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
        want_rgba = np.asarray(im.convert("RGBA"))
    left, top, fw, fh = box
    inside = np.zeros(screen[::-1], bool)
    inside[top : top + fh, left : left + fw] = True
    assert np.array_equal(want[inside].reshape(12, 16), values)
    pdf = converted(data)
    got, mask = stored(pdf)
    assert np.array_equal(got[inside], want[inside])
    rendered = rendered_rgba(pdf, screen)
    assert (rendered[..., 3][inside] == 255).all()
    assert (rendered[..., 3][~inside] == 0).all()
    assert np.abs(rendered[..., :3][inside].astype(int) - want_rgba[..., :3][inside]).max() <= 2
    assert mask is not None and mask[0] not in set(values.reshape(-1).tolist())


def test_with_every_index_past_a_short_table_used_the_padding_is_index_0():
    screen, box = (23, 17), (3, 2, 16, 16)
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)  # 2-entry table, 2-255 used
    data = lzw_gif(screen, box, 2, values)
    got, mask = stored(converted(data))
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
    left, top, fw, fh = box
    assert mask is None
    assert np.array_equal(got[top : top + fh, left : left + fw], values)
    assert np.array_equal(got, want)
    assert (got[:top] == 0).all() and (got[:, left + fw :] == 0).all()
