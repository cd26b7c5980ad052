"""Interlaced (Adam7) 8-bit PNGs decoded in bands by app.engine.adam7.adam7_strips.

The files are written here with every filter type (None, Sub, Up, Average,
Paeth) cycling through each pass's rows, so every unfilter runs against a
pass's own row above; sizes 1-8 leave some of the 7 passes empty. The PDF's
samples are compared with Pillow's decode of the same file, alpha included.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import zlib

import numpy as np
import pikepdf
import pytest
from PIL import Image

from app.engine import adam7, vips
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
rng = np.random.default_rng(167)


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


def adam7_deep(values: np.ndarray, colour_type: int, depth: int, extra: bytes = b"") -> bytes:
    """An interlaced PNG of raw sample `values` (h, w, channels) at any bit depth,
    filter types cycling 0-4 per row of each pass (bytes per pixel: PNG's, 1
    under 8 bits)."""
    h, w, channels = values.shape
    bpp = max(1, depth * channels // 8)

    def packed(line: np.ndarray) -> bytes:
        if depth == 16:
            return line.astype(">u2").tobytes()
        if depth == 8:
            return line.astype(np.uint8).tobytes()
        bits = np.unpackbits(line.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - depth :]
        return np.packbits(bits.reshape(-1)).tobytes()

    raw = bytearray()
    for p, (x0, y0, dx, dy) in enumerate(ADAM7):
        sub = values[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        prev = bytes(len(packed(sub[0])))
        for r, line in enumerate(sub):
            row = packed(line)
            raw += _filter((p + r) % 5, row, prev, bpp)
            prev = row
    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 1)
    idat = chunk(b"IDAT", zlib.compress(bytes(raw), 9))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + idat + chunk(b"IEND", b"")


def libvips_decode(data: bytes) -> np.ndarray:
    """libvips' whole-frame decode (the route these files took before): (h, w, bands)."""
    vips.load()
    image = vips.pyvips.Image.new_from_buffer(data, "")
    dtype = np.uint16 if image.format == "ushort" else np.uint8
    flat = np.frombuffer(image.write_to_memory(), dtype)
    return flat.reshape(image.height, image.width, image.bands)


DEEP = [
    (0, 1, False),
    (0, 2, False),
    (0, 4, False),
    (0, 16, False),
    (0, 1, True),
    (0, 4, True),
    (0, 8, True),
    (0, 16, True),
    (2, 16, False),
    (2, 8, True),
    (2, 16, True),
    (4, 16, False),
    (6, 16, False),
]


@pytest.mark.parametrize(("w", "h"), [(1, 1), (9, 7), (33, 17), (3, 40)])
@pytest.mark.parametrize(("colour_type", "depth", "trns"), DEEP)
def test_every_depth_and_trns_colour_gives_libvips_samples(colour_type, depth, trns, w, h):
    """16-bit compared at 16 bits; grey under 8 bits expanded as libvips expands
    it; a tRNS colour is transparent exactly where the samples equal it."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    top = 1 << depth
    values = rng.integers(0, min(top, 4 if trns else top), (h, w, channels))
    extra = b""
    if trns:
        extra = chunk(b"tRNS", struct.pack(f">{channels}H", *values[0, 0]))
    data = adam7_deep(values, colour_type, depth, extra)
    info = inspect_image(data, 10**8)
    assert info.route == "stream" and info.adam7
    assert estimate_peak_bytes(info, len(data)) < 64 * 1024 * 1024
    colour, alpha = streams(convert_to_pdf(data, info))
    want = libvips_decode(data)
    colours = 1 if colour_type in (0, 4) else 3
    assert colour.dtype.itemsize == (2 if depth == 16 else 1)
    assert np.array_equal(colour, want[..., :colours])
    if colour_type in (4, 6) or trns:
        assert alpha is not None and np.array_equal(alpha, want[..., colours:])
        if trns:
            hidden = (values == values[0, 0]).all(axis=-1)
            assert np.array_equal(alpha[..., 0] == 0, hidden)
    else:
        assert alpha is None and want.shape[2] == colours


@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("alphas", [None, b"\x00\x80"])
def test_palettes_under_eight_bits_are_indexed(depth, alphas):
    values = rng.integers(0, 1 << depth, (13, 11, 1))
    plte = chunk(b"PLTE", rng.bytes(3 << depth))
    extra = plte + (chunk(b"tRNS", alphas) if alphas else b"")
    data = adam7_deep(values, 3, depth, extra)
    info = inspect_image(data, 10**8)
    assert info.adam7
    pdf = convert_to_pdf(data, info)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (image,) = doc.pages[0].get_images().values()
        indices = np.frombuffer(image.read_bytes(), np.uint8).reshape(13, 11)
        mask = image.get("/SMask")
        alpha = None if mask is None else np.frombuffer(mask.read_bytes(), np.uint8)
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(indices, np.asarray(im))
    assert np.array_equal(indices, values[..., 0])
    if alphas:
        lut = np.frombuffer(alphas.ljust(256, b"\xff"), np.uint8)
        assert alpha is not None and np.array_equal(alpha.reshape(13, 11), lut[values[..., 0]])
    else:
        assert alpha is None


@pytest.mark.parametrize(("colour_type", "depth"), [(0, 16), (2, 16), (6, 16), (0, 2)])
def test_bands_smaller_than_the_image_at_every_depth(monkeypatch, colour_type, depth):
    monkeypatch.setattr(vips, "STRIP_BYTES", 64)
    channels = {0: 1, 2: 3, 6: 4}[colour_type]
    values = rng.integers(0, 1 << depth, (45, 19, channels))
    data = adam7_deep(values, colour_type, depth)
    colour, alpha = streams(convert_to_pdf(data, inspect_image(data, 10**8)))
    want = libvips_decode(data)
    colours = 1 if colour_type == 0 else 3
    assert np.array_equal(colour, want[..., :colours])
    if colour_type == 6:
        assert np.array_equal(alpha, want[..., 3:])


@pytest.mark.parametrize(("colour_type", "space"), [(0, "GRAY"), (2, "RGB "), (0, "RGB ")])
def test_an_icc_profile_is_kept_for_its_own_colour_space(colour_type, space):
    from PIL import ImageCms

    made = ImageCms.createProfile("sRGB") if space == "RGB " else None
    if made is not None:
        icc = ImageCms.ImageCmsProfile(made).tobytes()
    else:
        icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
        icc[16:20] = b"GRAY"
        icc = bytes(icc)
    extra = chunk(b"iCCP", b"p\x00\x00" + zlib.compress(icc))
    channels = 1 if colour_type == 0 else 3
    data = adam7_deep(rng.integers(0, 65536, (6, 5, channels)), colour_type, 16, extra)
    info = inspect_image(data, 10**8)
    assert info.adam7
    with pikepdf.open(io.BytesIO(convert_to_pdf(data, info))) as doc:
        (image,) = doc.pages[0].get_images().values()
        kept = space == ("GRAY" if colour_type == 0 else "RGB ")
        if kept:
            assert image.ColorSpace[0] == "/ICCBased"
            assert image.ColorSpace[1].read_bytes() == icc
        else:
            assert image.ColorSpace == "/DeviceGray"


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


def test_a_wide_image_pays_for_its_bands_per_column():
    """Bands are >= 8 full rows: at 200,000 x 200 px (40 MP) a 16-bit RGBA file
    needed 107 MB, whatever its file size; the estimate must not rest on it."""
    data = adam7_deep(rng.integers(0, 65536, (2, 3, 4)), 6, 16)
    info = inspect_image(data, 10**8)
    assert info.adam7
    wide = dataclasses.replace(info, width=200_000, height=200)
    assert estimate_peak_bytes(wide, 1000) >= 107 * 1000 * 1000


@pytest.mark.parametrize("cut", [0.2, 0.97])
@pytest.mark.parametrize(("colour_type", "depth"), [(6, 16), (0, 2), (3, 4), (2, 16)])
def test_short_data_at_any_depth_is_invalid(cut, colour_type, depth):
    channels = {0: 1, 2: 3, 3: 1, 6: 4}[colour_type]
    extra = chunk(b"PLTE", bytes(48)) if colour_type == 3 else b""
    data = adam7_deep(rng.integers(0, 1 << depth, (40, 30, channels)), colour_type, depth, extra)
    start = data.index(b"IDAT") + 4
    end = data.index(b"IEND") - 8
    body = data[start : start + int((end - start) * cut)]
    short = data[: start - 8] + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    with pytest.raises(InvalidImage):
        convert_to_pdf(short, inspect_image(short, 10**8))


@pytest.mark.parametrize(("colour_type", "depth"), [(6, 16), (0, 1), (2, 16)])
def test_an_unknown_filter_type_at_any_depth_is_invalid(colour_type, depth):
    channels = {0: 1, 2: 3, 6: 4}[colour_type]
    data = adam7_deep(rng.integers(0, 1 << depth, (16, 16, channels)), colour_type, depth)
    start = data.index(b"IDAT") + 4
    raw = bytearray(zlib.decompress(data[start : data.index(b"IEND") - 8]))
    raw[-(1 + (16 * channels * depth + 7) // 8)] = 5  # the last row of the last pass
    ihdr = data[8 : 8 + 25]
    bad = b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(bytes(raw)))
    bad += chunk(b"IEND", b"")
    with pytest.raises(InvalidImage):
        convert_to_pdf(bad, inspect_image(bad, 10**8))


@pytest.mark.parametrize("trns", [b"\x00", b"\x00\x07\x00\x07"])
def test_a_trns_too_short_for_rgb_is_invalid(trns):
    """Pillow refuses the header: a clean 422, before any pixel is read."""
    data = adam7_deep(rng.integers(0, 256, (9, 7, 3)), 2, 8, chunk(b"tRNS", trns))
    with pytest.raises(InvalidImage):
        inspect_image(data, 10**8)


def flat_adam7_png(arr: np.ndarray, colour_type: int, level: int) -> bytes:
    """An interlaced 8-bit PNG of `arr` (h, w, bands), every row filter type 0, its
    zlib stream in one IDAT (numpy-fast, for images of megabytes)."""
    h, w, _ = arr.shape
    raw = bytearray()
    for x0, y0, dx, dy in ADAM7:
        sub = arr[y0::dy, x0::dx]
        if sub.size:
            rows = sub.reshape(sub.shape[0], -1)
            raw += np.hstack([np.zeros((rows.shape[0], 1), np.uint8), rows]).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 1)
    idat = chunk(b"IDAT", zlib.compress(bytes(raw), level))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def test_one_large_idat_is_fed_to_the_inflater_64_kib_at_a_time(monkeypatch):
    # A call cut short by its output limit copies the input it left: fed a whole
    # multi-megabyte IDAT (one chunk), that copying grew with the square of its size.
    src = noise(700, 500, 4)
    data = flat_adam7_png(src, 6, 1)
    assert data.count(b"IDAT") == 1 and len(data) > 1 << 20
    fed = []
    real = zlib.decompressobj

    class Counting:
        def __init__(self, inner=None):
            self.inner = inner or real()

        def decompress(self, chunk, limit):
            fed.append(len(chunk))
            return self.inner.decompress(chunk, limit)

        def copy(self):
            return Counting(self.inner.copy())

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(adam7.zlib, "decompressobj", Counting)
    colour, alpha = streams(pdf_of(data))
    assert max(fed) <= 64 * 1024
    assert np.array_equal(colour, src[..., :3])
    assert alpha is not None and np.array_equal(alpha, src[..., 3:])


@pytest.mark.parametrize(
    ("colour_type", "depth", "key"),
    [
        (0, 1, (2,)),
        (0, 1, (5,)),
        (0, 2, (5,)),
        (0, 4, (0x15,)),
        (0, 8, (0x105,)),
        (0, 8, (0xFF05,)),
        (2, 8, (0x105, 0x106, 0x107)),
        (2, 8, (5, 0x106, 7)),
    ],
)
def test_a_trns_colour_past_the_bit_depth_keys_its_low_bits_as_libpng(colour_type, depth, key):
    # libpng (and libvips over it) keeps only the bit depth's low bits of a tRNS
    # sample; the key was dropped as out of range and the pixels drawn opaque.
    channels = 1 if colour_type == 0 else 3
    values = rng.integers(0, 1 << depth, (9, 11, channels))
    values[4, 5] = [k & ((1 << depth) - 1) for k in key]
    trns = chunk(b"tRNS", b"".join(struct.pack(">H", k) for k in key))
    data = adam7_deep(values, colour_type, depth, trns)
    want = libvips_decode(data)
    assert want.shape[2] == channels + 1 and want[4, 5, -1] == 0
    colour, alpha = streams(convert_to_pdf(data, inspect_image(data, 10**8)))
    assert np.array_equal(colour, want[..., :channels])
    assert alpha is not None and np.array_equal(alpha, want[..., channels:])
