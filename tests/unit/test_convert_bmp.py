"""Uncompressed BMPs written in strips from their bytes (app.engine.bmp): every
depth and header the strict parser takes, top-down and bottom-up, rows that
need 0-3 padding bytes, several strips; the PDF's samples (decoded by pikepdf,
soft mask included) equal Pillow's decode of the file, and pdfium renders it
like Pillow's decode on white paper. Hostile headers get a clean 4xx, those the
parser judges a 422 (InvalidImage). RLE BMPs are in test_convert_bmp_rle."""

from __future__ import annotations

import io
import struct

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image

from app.engine import bmp, pricing, vips
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.errors import ApiError, InvalidImage
from tests.support import images
from tests.support.limits import convert_under_address_limit
from tests.support.pdfs import image_samples, rendered_at_width

ALPHA_MASKS = (0xFF0000, 0xFF00, 0xFF, 0xFF000000)


def build(
    width: int,
    height: int,
    depth: int,
    *,
    top_down: bool = False,
    header: int = 40,
    compression: int = 0,
    masks: tuple[int, ...] | None = None,
    colours: int = 0,
    palette_entries: int | None = None,
    offset: int | None = None,
    pixels: bytes | None = None,
    seed: int = 1,
    ppm: tuple[int, int] = (0, 0),
) -> bytes:
    """A BMP with random samples (indices below the palette size)."""
    rng = np.random.default_rng(seed)
    stride = (width * depth + 31) // 32 * 4
    entries = 0
    if depth <= 8:
        entries = palette_entries if palette_entries is not None else (colours or 1 << depth)
    if pixels is None:
        if depth <= 8:
            count = colours or 1 << depth
            idx = rng.integers(0, count, (height, width), dtype=np.uint8)
            if depth < 8:
                per = 8 // depth
                padded = np.zeros((height, -(-width // per) * per), np.uint8)
                padded[:, :width] = idx
                shifts = np.arange(per - 1, -1, -1, dtype=np.uint8) * depth
                packed = (padded.reshape(height, -1, per) << shifts).sum(-1).astype(np.uint8)
                row = packed
            else:
                row = idx
        else:
            row = rng.integers(0, 256, (height, width * depth // 8), dtype=np.uint8)
        rows = np.zeros((height, stride), np.uint8)
        rows[:, : row.shape[1]] = row
        rows[:, row.shape[1] :] = 0xA5  # padding must not show
        pixels = rows.tobytes()
    palette = rng.integers(0, 256, (entries, 4), dtype=np.uint8).tobytes()
    info = struct.pack(
        "<IiiHHIIiiII",
        header,
        width,
        -height if top_down else height,
        1,
        depth,
        compression,
        len(pixels),
        ppm[0],
        ppm[1],
        colours,
        0,
    )
    extra = b""
    if header > 40:
        fields = (masks or (0, 0, 0, 0)) + (0,) * (4 - len(masks or ()))
        info += struct.pack("<4I", *fields[:4]) + b"\0" * (header - 56)
    elif masks is not None:
        extra = struct.pack(f"<{len(masks)}I", *masks)
    start = 14 + len(info) + len(extra) + len(palette)
    offset = start if offset is None else offset
    body = info + extra + palette
    file_header = b"BM" + struct.pack("<IHHI", 14 + len(body) + len(pixels), 0, 0, offset)
    return file_header + body + pixels


def assert_like_pillow(data: bytes, *, alpha: bool = False) -> None:
    info = inspect_image(data, 10**9)
    assert info.route == "bmp"
    pdf = convert_to_pdf(data, info)
    pillow = Image.open(io.BytesIO(data))
    pillow.load()
    rgb, soft = image_samples(pdf)
    assert np.array_equal(rgb, np.asarray(pillow.convert("RGB")))
    if alpha:
        assert soft is not None
        assert np.array_equal(soft, np.asarray(pillow.getchannel("A")))
        paper = Image.new("RGBA", pillow.size, "white")
        want = np.asarray(Image.alpha_composite(paper, pillow.convert("RGBA")).convert("RGB"))
    else:
        assert soft is None
        want = np.asarray(pillow.convert("RGB"))
    got = rendered_at_width(pdf, pillow.width).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want.astype(int)).max() <= 1  # compositing rounding only


# width -> padding bytes per row: 24-bit 1/2/3 px -> 1/2/3, 4 px -> 0; 8-bit 5/6/7 -> 3/2/1;
# 4-bit 9 px (5 bytes) -> 3; 1-bit 9 px (2 bytes) -> 2, 33 px (5 bytes) -> 3.
WIDTHS = {1: [1, 9, 33, 32], 4: [1, 9, 8], 8: [5, 6, 7, 8], 24: [1, 2, 3, 4], 32: [1, 3]}


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize(
    ("depth", "width"), [(d, w) for d, widths in WIDTHS.items() for w in widths]
)
def test_bi_rgb_every_depth_and_padding(depth, width, top_down):
    assert_like_pillow(build(width, 7, depth, top_down=top_down, seed=width))


@pytest.mark.parametrize("depth", [1, 4, 8])
def test_short_palette(depth):
    colours = 2 if depth == 1 else 3
    assert_like_pillow(build(13, 5, depth, colours=colours))


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("depth", [8, 24, 32])
def test_several_strips_keep_their_order(depth, top_down):
    # Rows of 3000 px: 128 KiB strips hold 43 (8-bit) down to 10 (32-bit) rows.
    assert_like_pillow(build(3000, 97, depth, top_down=top_down))


@pytest.mark.parametrize("header", [40, 108, 124])
def test_bitfields_without_alpha(header):
    masks = (0xFF0000, 0xFF00, 0xFF) if header == 40 else (0xFF0000, 0xFF00, 0xFF, 0)
    assert_like_pillow(build(11, 6, 32, header=header, compression=3, masks=masks))


# 16-bit: (compression, header, masks); BI_RGB is 5-5-5.
SIXTEEN = {
    "BI_RGB": (0, 40, None),
    "5-6-5": (3, 40, (0xF800, 0x7E0, 0x1F)),
    "5-5-5": (3, 40, (0x7C00, 0x3E0, 0x1F)),
    "5-6-5 V5 header": (3, 124, (0xF800, 0x7E0, 0x1F, 0)),
    "5-5-5 V4 header, alpha mask ignored": (3, 108, (0x7C00, 0x3E0, 0x1F, 0x8000)),
}


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("width", [1, 2, 3, 4])  # 2, 0, 2, 0 bytes of row padding
@pytest.mark.parametrize("name", SIXTEEN)
def test_16_bit_like_pillow(name, width, top_down):
    compression, header, masks = SIXTEEN[name]
    data = build(width, 5, 16, compression=compression, header=header, masks=masks, seed=width)
    assert_like_pillow(data)


@pytest.mark.parametrize("name", ["BI_RGB", "5-6-5"])
def test_16_bit_every_value_in_several_strips(name):
    # All 65,536 pixel values (the top bit of 5-5-5 too) three times over in
    # 2,048-pixel rows: 32 rows a strip, 3 strips.
    compression, _, masks = SIXTEEN[name]
    pixels = np.arange(65536, dtype="<u2").tobytes() * 3
    data = build(2048, 96, 16, compression=compression, masks=masks, pixels=pixels)
    assert bmp.parse(data).stride * 96 == 3 * vips.STRIP_BYTES
    assert_like_pillow(data)


def test_bitfields_24_bit():
    assert_like_pillow(build(7, 5, 24, compression=3, masks=(0xFF0000, 0xFF00, 0xFF)))


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("header", [108, 124])
def test_alpha_bitfields_is_a_soft_mask(header, top_down):
    data = build(13, 9, 32, header=header, compression=3, masks=ALPHA_MASKS, top_down=top_down)
    assert Image.open(io.BytesIO(data)).mode == "RGBA"
    assert_like_pillow(data, alpha=True)


def test_opaque_alpha_needs_no_soft_mask():
    pixels = np.random.default_rng(3).integers(0, 256, (6, 10, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    data = build(10, 6, 32, header=124, compression=3, masks=ALPHA_MASKS, pixels=pixels.tobytes())
    assert_like_pillow(data, alpha=False)


def test_page_size_from_pixels_per_metre():
    data = build(40, 20, 24, ppm=(3937, 7874))  # 100 x 200 dpi
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        box = [float(v) for v in doc.pages[0].MediaBox]
    assert box[2:] == pytest.approx([40 * 72 / 100, 20 * 72 / 200], rel=1e-3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: build(8, 8, 16, header=56),  # 16-bit, BITMAPV3INFOHEADER
        lambda: build(8, 8, 32, header=124, compression=3, masks=(0xFF000000, 0xFF0000, 0xFF00, 0)),
        lambda: build(8, 8, 24, header=56),  # BITMAPV3INFOHEADER
        # The offset 8 bytes past the header: a 4-entry palette runs into the pixels.
        lambda: _set(build(8, 8, 8, colours=4), 10, "<I", 14 + 40 + 8),
    ],
)
def test_other_bmps_stay_with_pillow(make):
    data = make()
    assert bmp.parse(data) is None
    assert inspect_image(data, 10**9).route != "bmp"


def _set(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt) :]


HOSTILE = {
    "offset past the end": lambda: _set(build(8, 8, 24), 10, "<I", 10**6),
    "offset one past the last row": lambda: _set(build(8, 8, 24), 10, "<I", 14 + 40 + 1),
    "offset inside the header": lambda: _set(build(8, 8, 24), 10, "<I", 20),
    "negative width": lambda: _set(build(8, 8, 24), 18, "<i", -8),
    "zero width": lambda: _set(build(8, 8, 24), 18, "<i", 0),
    "zero height": lambda: _set(build(8, 8, 24), 22, "<i", 0),
    "height x stride past the file": lambda: _set(build(8, 8, 24), 22, "<i", 2**31 - 1),
    "height x stride past the file, top-down": lambda: _set(build(8, 8, 24), 22, "<i", -(2**31)),
    "one row short": lambda: build(8, 8, 24)[:-1],
    "palette count > 2^bpp": lambda: build(8, 8, 4, colours=17, palette_entries=17),
    "palette past the end of the file": lambda: build(8, 8, 8, colours=4)[: 14 + 40 + 12],
    "bitfields masks cut off": lambda: build(1, 1, 32, compression=3, pixels=b"")[: 14 + 40 + 4],
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_headers_get_a_clean_client_error(name):
    data = HOSTILE[name]()
    with pytest.raises(ApiError) as caught:
        convert_to_pdf(data, inspect_image(data, 10**9))
    assert 400 <= caught.value.status < 500, (name, caught.value)


@pytest.mark.parametrize(
    "name",
    [n for n in HOSTILE if n not in {"negative width", "zero width", "zero height"}],
)
def test_the_parser_refuses_what_its_file_cannot_back(name):
    with pytest.raises(InvalidImage):
        bmp.parse(HOSTILE[name]())


def test_last_byte_of_the_file_is_the_last_pixel_row():
    data = build(8, 8, 24)
    assert bmp.parse(data) is not None  # exactly enough bytes: accepted
    assert bmp.parse(data + b"\0") is not None


# Rows longer than a strip (128 KiB): each is written in pieces. 24-bit 50,001 px
# and 8-bit 140,001 px also need padding; 1-bit 1,048,577 px is 131,073 bytes.
WIDE = {
    "24-bit": dict(width=50_001, depth=24),
    "32-bit": dict(width=40_000, depth=32),
    "32-bit alpha": dict(width=32_769, depth=32, header=124, compression=3, masks=ALPHA_MASKS),
    "16-bit 5-6-5": dict(width=65_537, depth=16, compression=3, masks=(0xF800, 0x7E0, 0x1F)),
    "8-bit": dict(width=140_001, depth=8),
    "4-bit": dict(width=262_145, depth=4),
    "1-bit": dict(width=1_048_577, depth=1),
}


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("name", WIDE)
def test_rows_longer_than_a_strip(name, top_down):
    params = dict(WIDE[name])
    width, depth = params.pop("width"), params.pop("depth")
    data = build(width, 3, depth, top_down=top_down, **params)
    assert bmp.parse(data).stride > vips.STRIP_BYTES
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    pillow = Image.open(io.BytesIO(data))
    rgb, soft = image_samples(pdf)
    assert np.array_equal(rgb, np.asarray(pillow.convert("RGB")))
    if "masks" in params and depth == 32:
        assert np.array_equal(soft, np.asarray(pillow.getchannel("A")))
    else:
        assert soft is None
    pdfium.PdfDocument(pdf)[0].render(scale=0.01)  # pdfium reads it


def test_a_one_row_bmp_converts_within_its_estimate():
    # One 16 MB row (4 MP, 32-bit with alpha): the strips held it whole several
    # times over (65 MB peak, 74 MB of address space against a 38 MB estimate).
    # In a child whose address space is capped at the estimate, it now converts.
    width = 4_000_000
    pixels = np.random.default_rng(5).integers(0, 256, width * 4, dtype=np.uint8).tobytes()
    data = build(width, 1, 32, header=124, compression=3, masks=ALPHA_MASKS, pixels=pixels)
    info = inspect_image(data, width)
    assert info.route == "bmp"
    limit = pricing.estimate_peak_bytes(info, len(data))
    status = convert_under_address_limit(data, info, limit)
    assert status.startswith(b"ok "), status


def grey_palette(depth: int, entries: int) -> bytes:
    """A BMP whose palette Pillow takes for greyscale (entry i = i, or 0/255 for two
    entries) and then reads the rows as 8-bit "L" or 1-bit "1" whatever the depth."""
    data = bytearray(build(9, 4, depth, colours=entries, palette_entries=entries))
    for i in range(entries):
        value = 255 * i if entries == 2 else i
        data[54 + 4 * i : 54 + 4 * i + 3] = bytes([value] * 3)
    return bytes(data)


def indices(data: bytes, layout: bmp.Bmp) -> np.ndarray:
    """The stored rows' palette indices, top row first (the BMP specification's reading)."""
    rows = np.frombuffer(data, np.uint8, layout.stride * layout.height, layout.offset)
    rows = rows.reshape(layout.height, layout.stride)[::-1]
    bits = np.unpackbits(rows, axis=1).reshape(layout.height, -1, layout.depth)
    weights = 1 << np.arange(layout.depth - 1, -1, -1)
    return (bits * weights).sum(-1)[:, : layout.width]


@pytest.mark.parametrize(("depth", "entries"), [(4, 16), (4, 3), (4, 2), (8, 2)])
def test_grey_looking_palettes_are_read_at_the_file_depth(depth, entries):
    # Pillow misreads these (a 4-bit grey ramp as 8-bit rows: "image data too
    # short", 422 before; two black/white entries at 4 or 8 bits as 1-bit rows:
    # other pixels). The strips write the indices at the file's depth: every
    # pixel is its palette entry, as the specification and browsers read it.
    data = grey_palette(depth, entries)
    layout = bmp.parse(data)
    assert inspect_image(data, 10**9).route == "bmp"
    rgb, soft = image_samples(convert_to_pdf(data, inspect_image(data, 10**9)))
    table = np.frombuffer(layout.palette, np.uint8).reshape(-1, 3)
    assert soft is None
    assert np.array_equal(rgb, table[indices(data, layout)])


def test_a_16_bit_bmp_at_the_source_cap_converts_within_its_estimate():
    # 10 MP of 5-6-5 (20 MB, the most MAX_SOURCE_BYTES lets in): Pillow decoded it
    # whole (16 B/px priced, 160 MB); in a child capped at the new estimate it converts.
    data = images.bmp16(3650, 2740)
    info = inspect_image(data, 40_000_000)
    assert info.route == "bmp"
    limit = pricing.estimate_peak_bytes(info, len(data))
    assert limit < 60 * 1024 * 1024
    status = convert_under_address_limit(data, info, limit)
    assert status.startswith(b"ok "), status
