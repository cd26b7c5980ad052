"""Interlaced (Adam7) 8-bit PNGs decoded in bands by app.engine.adam7.adam7_strips.

The files are written here with every filter type (None, Sub, Up, Average,
Paeth) cycling through each pass's rows, so every unfilter runs against a
pass's own row above; sizes 1-8 leave some of the 7 passes empty. The PDF's
samples are compared with Pillow's decode of the same file, alpha included.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pikepdf
import pytest
from PIL import Image

from app.engine import vips
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from app.errors import InvalidImage
from app.pages import visible_size
from tests.unit.test_convert_stream import noise, rendered_rgba, streams

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)
BANDS = {0: 1, 2: 3, 4: 2, 6: 4}
MODES = {0: "L", 2: "RGB", 4: "LA", 6: "RGBA"}


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter(kind: int, row: bytes, prev: bytes, bpp: int) -> bytes:
    out = bytearray(len(row))
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i]
        c = prev[i - bpp] if i >= bpp else 0
        pred = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
        out[i] = (x - pred) & 0xFF
    return bytes([kind]) + bytes(out)


def chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data))
    return struct.pack(">I", len(data)) + kind + data + crc


def adam7_png(arr: np.ndarray, colour_type: int, extra: bytes = b"", parts: int = 1) -> bytes:
    """An interlaced PNG of `arr` (h, w, bands), filter types cycling 0-4 per row;
    its zlib stream split over `parts` IDAT chunks; `extra` chunks before IDAT."""
    h, w, bands = arr.shape
    raw = bytearray()
    for p, (x0, y0, dx, dy) in enumerate(ADAM7):
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        prev = bytes(sub.shape[1] * bands)
        for r, line in enumerate(sub):
            row = line.tobytes()
            raw += _filter((p + r) % 5, row, prev, bands)
            prev = row
    z = zlib.compress(bytes(raw), 9)
    step = max(1, -(-len(z) // parts))
    idat = b"".join(chunk(b"IDAT", z[i : i + step]) for i in range(0, len(z), step))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 1)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + idat + chunk(b"IEND", b"")


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im)
    return arr.reshape(arr.shape[0], arr.shape[1], -1)


def pdf_of(data: bytes) -> bytes:
    info = inspect_image(data, 10**8)
    assert info.route == "stream" and info.adam7
    return convert_to_pdf(data, info)


SIZES = [(w, h) for w in range(1, 9) for h in (1, 2, 3, 5, 8)] + [(9, 9), (67, 45), (33, 130)]


@pytest.mark.parametrize("colour_type", sorted(BANDS))
@pytest.mark.parametrize(("w", "h"), SIZES)
def test_samples_are_pillows_for_every_colour_type_and_size(colour_type, w, h):
    src = noise(w, h, BANDS[colour_type])
    data = adam7_png(src, colour_type, parts=3)
    want = pillow(data)
    assert np.array_equal(want, src)  # the file really is what was meant
    colour, alpha = streams(pdf_of(data))
    colours = 3 if colour_type in {2, 6} else 1
    assert np.array_equal(colour, want[..., :colours])
    if colour_type in {4, 6}:
        assert alpha is not None and np.array_equal(alpha, want[..., colours:])
    else:
        assert alpha is None


def test_bands_smaller_than_the_image_carry_each_pass_across_bands():
    saved = vips.STRIP_BYTES
    vips.STRIP_BYTES = 1  # 8-row bands: every pass continues in the next band
    try:
        src = noise(21, 77, 4)
        data = adam7_png(src, 6, parts=7)
        colour, alpha = streams(pdf_of(data))
    finally:
        vips.STRIP_BYTES = saved
    assert np.array_equal(colour, src[..., :3])
    assert alpha is not None and np.array_equal(alpha, src[..., 3:])


def test_rendered_page_matches_pillow_alpha_included():
    src = np.kron(noise(11, 7, 4), np.ones((8, 8, 1), np.uint8))
    src[..., 3] = np.where(src[..., 3] < 128, 0, 255)  # a viewer premultiplies partial alpha
    data = adam7_png(src, 6)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    got = rendered_rgba(pdf_of(data), (88, 56))
    assert np.array_equal(got[..., 3], want[..., 3])
    opaque = want[..., 3] == 255
    assert np.abs(got[..., :3][opaque].astype(int) - want[..., :3][opaque]).max() <= 1


def test_page_size_is_exact_in_points():
    phys = chunk(b"pHYs", struct.pack(">IIB", 3780, 3780, 1))  # 96.012 dpi: 96
    data = adam7_png(noise(300, 150, 3), 2, extra=phys)
    with pikepdf.open(io.BytesIO(pdf_of(data))) as doc:
        assert visible_size(doc.pages[0]) == pytest.approx((300 * 72 / 96, 150 * 72 / 96))


def test_orientation_from_exif_is_drawn_by_the_page():
    exif = Image.Exif()
    exif[0x0112] = 6
    src = np.kron(noise(5, 3, 3), np.ones((8, 8, 1), np.uint8))
    data = adam7_png(src, 2, extra=chunk(b"eXIf", exif.tobytes()))
    got = rendered_rgba(pdf_of(data), (24, 40))
    assert np.array_equal(got[..., :3], np.rot90(src, -1))


def test_estimate_no_longer_prices_the_whole_frame():
    data = adam7_png(noise(64, 48, 4), 6)
    info = inspect_image(data, 10**8)
    big = type(info)(info.kind, 8000, 5000, info.mode, 1, info.route, 0, True, True)
    assert estimate_peak_bytes(big, len(data)) < 120 * 1024 * 1024
    whole = type(info)(info.kind, 8000, 5000, info.mode, 1, info.route, 0, True, False)
    assert estimate_peak_bytes(whole, len(data)) > 10 * 8000 * 5000


def test_transparent_rgb_keeps_libvips():
    trns = chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3))
    data = adam7_png(noise(20, 10, 3), 2, extra=trns)
    info = inspect_image(data, 10**8)
    assert info.interlaced and not info.adam7
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    colour, _ = streams(convert_to_pdf(data, info))
    assert np.array_equal(colour, want[..., :3])


@pytest.mark.parametrize("cut", [0.2, 0.6, 0.97])
def test_short_data_is_invalid(cut):
    data = adam7_png(noise(60, 40, 4), 6)
    start = data.index(b"IDAT") + 4
    end = data.index(b"IEND") - 8
    body = data[start : start + int((end - start) * cut)]
    short = data[: start - 8] + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    with pytest.raises(InvalidImage):
        convert_to_pdf(short, inspect_image(short, 10**8))


def test_an_unknown_filter_type_is_invalid():
    src = noise(16, 16, 3)
    raw = zlib.decompress(adam7_png(src, 2)[41:-16])  # the one IDAT
    last_pass = len(raw) - 8 * (1 + 16 * 3)
    bad = raw[:last_pass] + b"\x05" + raw[last_pass + 1 :]
    ihdr = struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 1)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    data += chunk(b"IDAT", zlib.compress(bad)) + chunk(b"IEND", b"")
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**8))


def palette_png(w: int, h: int, colours: int, alphas: bytes | None, parts: int = 1) -> bytes:
    src = noise(w, h, 1) % colours
    extra = chunk(b"PLTE", noise(colours, 1, 3).tobytes())
    if alphas is not None:
        extra += chunk(b"tRNS", alphas)
    return adam7_png(src, 3, extra=extra, parts=parts)


@pytest.mark.parametrize("alphas", [None, b"\x00\x80\xff\x10", b"\x00"])
@pytest.mark.parametrize(("w", "h"), [(1, 1), (3, 7), (8, 8), (5, 2), (67, 45)])
def test_palette_indices_and_trns_alpha_are_pillows(alphas, w, h):
    data = palette_png(w, h, 200, alphas, parts=2)
    with Image.open(io.BytesIO(data)) as im:
        indices = np.asarray(im)
        palette = bytes(im.getpalette("RGB"))
        rgba = np.asarray(im.convert("RGBA"))
    with pikepdf.open(io.BytesIO(pdf_of(data))) as doc:
        (image,) = doc.pages[0].get_images().values()
        assert image.ColorSpace[0] == "/Indexed"
        assert bytes(image.ColorSpace[3])[: len(palette)] == palette
        got = np.frombuffer(image.read_bytes(), np.uint8).reshape(h, w)
        assert np.array_equal(got, indices)
        smask = image.get("/SMask")
        if alphas is None:
            assert smask is None
        else:
            alpha = np.frombuffer(smask.read_bytes(), np.uint8).reshape(h, w)
            assert np.array_equal(alpha, rgba[..., 3])


def test_palette_page_renders_as_pillow_decodes_it():
    src = np.kron(noise(6, 5, 1) % 4, np.ones((8, 8, 1), np.uint8))
    extra = chunk(b"PLTE", bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]))
    data = adam7_png(src, 3, extra=extra + chunk(b"tRNS", b"\xff\x00"))
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    got = rendered_rgba(pdf_of(data), (48, 40))
    assert np.array_equal(got[..., 3], want[..., 3])
    opaque = want[..., 3] == 255
    assert np.array_equal(got[..., :3][opaque], want[..., :3][opaque])
