"""RLE8 / RLE4 BMPs decoded in segments (app.engine.bmp_rle): the PDF's indices
equal Pillow's decode (the route they took before), page rendered like the
img2pdf route's PDF; end of line, delta, end of bitmap, odd absolute runs and
their 16-bit padding, runs that wrap a row or cross a segment, bottom-up and
top-down; a stream that writes too few pixels is the same 422 as before."""

from __future__ import annotations

import io
import random
import struct

import numpy as np
import pikepdf
import pytest
from PIL import Image

from app.engine import bmp, bmp_rle, pricing, vips
from app.engine.convert import convert_to_pdf
from app.engine.img2pdf_route import _img2pdf
from app.engine.inspect import inspect_image
from app.errors import ApiError, InvalidImage
from tests.support.limits import convert_under_address_limit
from tests.support.pdfs import rendered_at_width

RLE8, RLE4 = 1, 2


def rle_bmp(
    width: int,
    height: int,
    stream: bytes,
    *,
    rle4: bool = False,
    top_down: bool = False,
    gap: int = 0,
    colours: int = 0,
) -> bytes:
    """A BITMAPINFOHEADER BMP around `stream`, its palette not grey (Pillow keeps
    it "P"), `gap` bytes between the palette and the stream (odd: the stream
    starts at an odd file position)."""
    depth = 4 if rle4 else 8
    entries = colours or 1 << depth
    palette = bytes(
        b for i in range(entries) for b in ((i * 37) % 256, 255 - i % 256, (i * 7 + 3) % 256, 0)
    )
    info = struct.pack(
        "<IiiHHIIiiII",
        40,
        width,
        -height if top_down else height,
        1,
        depth,
        RLE4 if rle4 else RLE8,
        len(stream),
        0,
        0,
        colours,
        0,
    )
    offset = 14 + len(info) + len(palette) + gap
    head = b"BM" + struct.pack("<IHHI", offset + len(stream), 0, 0, offset)
    return head + info + palette + b"\0" * gap + stream


def pdf_indices(pdf: bytes) -> tuple[np.ndarray, bytes]:
    """The /Indexed image's samples and palette."""
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = doc.pages[0].Resources.XObject.Im0
        space = image.ColorSpace
        assert space[0] == "/Indexed" and image.BitsPerComponent == 8
        samples = np.frombuffer(image.read_bytes(), np.uint8)
        return samples.reshape(int(image.Height), int(image.Width)), bytes(space[3])


def assert_like_before(data: bytes, *, short_palette: bool = False) -> None:
    """The route is "bmp"; indices equal Pillow's; the page renders as the PDF the
    img2pdf route (Pillow's decode) wrote before, pixel for pixel. With indices
    past a short palette, img2pdf's PDF has them past its /Indexed table (pdfium
    draws entry 0); the page renders Pillow's reading: black."""
    info = inspect_image(data, 10**9)
    assert info.route == "bmp"
    pdf = convert_to_pdf(data, info)
    pillow = Image.open(io.BytesIO(data))
    pillow.load()
    assert pillow.mode == "P"
    indices, _ = pdf_indices(pdf)
    assert np.array_equal(indices, np.asarray(pillow))
    page = rendered_at_width(pdf, pillow.width)
    if short_palette:
        assert np.array_equal(page, np.asarray(pillow.convert("RGB")))
    else:
        assert np.array_equal(page, rendered_at_width(_img2pdf(data, 0), pillow.width))


def encoded(*runs: tuple[int, int]) -> bytes:
    return b"".join(bytes(run) for run in runs)


def absolute(indices: bytes, rle4: bool = False) -> bytes:
    """An absolute run of len(indices) (>= 3) pixels, padded to 16 bits."""
    if rle4:
        nibbles = bytes(indices) + b"\0" * (len(indices) % 2)
        body = bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2))
    else:
        body = bytes(indices)
    return bytes([0, len(indices)]) + body + b"\0" * (len(body) % 2)


EOL, EOB = b"\0\0", b"\0\1"


def delta(right: int, up: int) -> bytes:
    return bytes([0, 2, right, up])


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("rle4", [False, True])
@pytest.mark.parametrize("width", [1, 3, 7, 8])
def test_every_escape_at_odd_and_even_widths(width, rle4, top_down):
    # Row by row (stream order): a run; a run past the row's end (cut); an absolute
    # run of 3 (odd: padded) then a run; a delta of one row and 1 pixel; an
    # absolute run that wraps into the next row; end of line at a row boundary
    # (nothing); the rest end-of-lines.
    stream = (
        encoded((2, 0x51))
        + EOL
        + encoded((width + 5, 0x23))
        + EOL
        + absolute(b"\x01\x02\x03", rle4)
        + encoded((1, 0x09))
        + EOL
        + delta(1, 1)
        + encoded((1, 0x0E))
        + EOL
        + absolute(bytes(range(4, 4 + width + 3)), rle4)
        + EOL
        + EOL
        + EOL * 3
    )
    assert_like_before(rle_bmp(width, 7, stream, rle4=rle4, top_down=top_down))


@pytest.mark.parametrize("rle4", [False, True])
def test_stream_at_an_odd_file_position(rle4):
    # Pillow aligns to an even position of the file, not of the stream: with the
    # stream at an odd offset the pad byte comes after an even-length run.
    body = bytes([0, 4]) + (b"\x12\x34" if rle4 else b"\x01\x02\x03\x04")
    stream = body + b"\x07" + encoded((2, 0x05)) + EOL + encoded((6, 3))
    data = rle_bmp(6, 2, stream, rle4=rle4, gap=1)
    assert struct.unpack_from("<I", data, 10)[0] % 2 == 1
    assert_like_before(data)


@pytest.mark.parametrize("rle4", [False, True])
def test_delta_past_the_image_fills_it_with_index_0(rle4):
    assert_like_before(rle_bmp(5, 4, encoded((3, 0x22)) + delta(255, 255), rle4=rle4))


@pytest.mark.parametrize("rle4", [False, True])
def test_short_palette_indices_past_it(rle4):
    # Indices past a 3-entry palette: black, as Pillow shows them.
    data = rle_bmp(4, 2, encoded((4, 0x0B)) + EOL + encoded((4, 0xCC)), rle4=rle4, colours=3)
    assert_like_before(data, short_palette=True)


# A strip of 16 bytes: width 5 -> bands of 3 rows; width 37 -> 3 pieces per row.
@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("rle4", [False, True])
@pytest.mark.parametrize("width", [5, 16, 17, 37])
def test_runs_crossing_segments(monkeypatch, width, rle4, top_down):
    monkeypatch.setattr(vips, "STRIP_BYTES", 16)
    rng = random.Random(width)
    stream = b""
    for _ in range(9):  # absolute runs that wrap rows, deltas over several segments
        stream += absolute(bytes(rng.randrange(16) for _ in range(rng.randint(3, 60))), rle4)
        stream += encoded((rng.randint(1, 40), rng.randrange(256)))
        stream += delta(rng.randint(0, 40), rng.randint(0, 2))
    stream += EOL * 40
    assert len(bmp_rle.segments(width, 11)) > 3
    assert_like_before(rle_bmp(width, 11, stream, rle4=rle4, top_down=top_down))


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("rle4", [False, True])
def test_long_sequences_of_runs(monkeypatch, rle4, top_down):
    # Back-to-back encoded runs go to numpy in batches (8 to 4,096 runs): runs
    # cut at the row's end inside a batch, RLE4's nibble order per run, a batch
    # that starts in one segment and ends in another, and 5,000 one-pixel runs
    # in a row (past the batch cap) on a 6,000-pixel row.
    monkeypatch.setattr(vips, "STRIP_BYTES", 64)
    rng = random.Random(7)
    width = 6000
    rows = [
        b"".join(bytes([1, rng.randrange(256)]) for _ in range(5000)) + EOL,
        b"".join(bytes([rng.randint(1, 300 // 20), rng.randrange(256)]) for _ in range(40)) + EOL,
        b"".join(bytes([255, rng.randrange(256)]) for _ in range(30)) + EOL,  # cut at 6,000
        b"".join(bytes([rng.randint(1, 9), rng.randrange(256)]) for _ in range(9)) + delta(3, 1),
        b"".join(bytes([rng.randint(1, 250), rng.randrange(256)]) for _ in range(60)) + EOL,
    ]
    assert_like_before(
        rle_bmp(width, 7, b"".join(rows) + delta(0, 2), rle4=rle4, top_down=top_down)
    )


def _random_stream(rng: random.Random, width: int, height: int, rle4: bool) -> bytes:
    out = bytearray()
    for _ in range(rng.randint(1, 3 * height + 5)):
        pick = rng.random()
        if pick < 0.45:
            out += bytes([rng.randint(1, min(255, width + 3)), rng.randrange(256)])
        elif pick < 0.6:
            out += EOL
        elif pick < 0.7:
            out += delta(rng.randint(0, width), rng.randint(0, 2))
        elif pick < 0.95:
            count = rng.randint(3, min(255, 2 * width + 5))
            out += bytes([0, count]) + bytes(
                rng.randrange(256) for _ in range((count + 1) // 2 if rle4 else count)
            )
            if rng.random() < 0.8 and len(out) % 2:
                out += b"\0"
        else:
            out += EOB
    if rng.random() < 0.7:
        out += EOL * (height + 1)
    if rng.random() < 0.2:
        out = out[: rng.randint(0, len(out))]
    return bytes(out)


def test_random_streams_decode_as_pillow_or_fail_as_it(monkeypatch):
    # 600 seeded streams of every escape, truncated or not, 5-byte strips: each
    # either decodes to Pillow's indices or is refused where Pillow refuses it.
    monkeypatch.setattr(vips, "STRIP_BYTES", 5)
    decoded = refused = 0
    for seed in range(600):
        rng = random.Random(seed)
        rle4 = rng.random() < 0.5
        width, height = rng.randint(1, 13), rng.randint(1, 9)
        data = rle_bmp(
            width,
            height,
            _random_stream(rng, width, height, rle4),
            rle4=rle4,
            top_down=rng.random() < 0.15,
            gap=rng.choice([0, 0, 1]),
        )
        try:
            pillow = Image.open(io.BytesIO(data))
            pillow.load()
        except ValueError:
            with pytest.raises(InvalidImage):
                convert_to_pdf(data, inspect_image(data, 10**9))
            refused += 1
            continue
        indices, _ = pdf_indices(convert_to_pdf(data, inspect_image(data, 10**9)))
        assert np.array_equal(indices, np.asarray(pillow)), seed
        decoded += 1
    assert decoded > 200 and refused > 200


SHORT = {
    "end of bitmap before the last row": encoded((4, 1)) + EOL + EOB,
    "stream ends inside a run": encoded((4, 1)) + EOL + b"\x04",
    "stream ends inside an absolute run": encoded((4, 1)) + EOL + b"\0\x04\x01",
    "stream ends inside a delta": encoded((4, 1)) + EOL + b"\0\x02\x01",
    "one pixel short": encoded((4, 1)) + EOL + encoded((3, 1)),
    "no end of line after the last row's run": encoded((4, 1)) + EOL + encoded((3, 2)) + EOB,
}


@pytest.mark.parametrize("rle4", [False, True])
@pytest.mark.parametrize("name", SHORT)
def test_a_stream_short_of_pixels_is_the_same_422(name, rle4):
    data = rle_bmp(4, 2, SHORT[name], rle4=rle4)
    with pytest.raises(ValueError, match="not enough image data"):
        Image.open(io.BytesIO(data)).load()  # the route it took before
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


def test_the_last_pixel_completes_it():
    # The boundary of the case above: one more pixel and it decodes, EOB unread.
    assert_like_before(rle_bmp(4, 2, encoded((4, 1)) + EOL + encoded((4, 2))))


@pytest.mark.parametrize(
    ("name", "value"),
    [("offset at the end of the file", None), ("offset past the end of the file", 10**6)],
)
def test_no_stream_is_a_clean_client_error(name, value):
    data = rle_bmp(4, 2, b"")
    if value is not None:
        data = data[:10] + struct.pack("<I", value) + data[14:] + encoded((4, 1)) + EOL * 2
    with pytest.raises(InvalidImage):
        bmp.parse(data)
    with pytest.raises(ApiError) as caught:
        convert_to_pdf(data, inspect_image(data, 10**9))
    assert caught.value.status == 422, name


@pytest.mark.parametrize(("compression", "depth"), [(RLE8, 4), (RLE4, 8), (RLE8, 24)])
def test_rle_at_another_depth_stays_with_pillow(compression, depth):
    data = bytearray(rle_bmp(4, 2, encoded((4, 1)) + EOL * 2))
    data[28:30] = struct.pack("<H", depth)
    data[30:34] = struct.pack("<I", compression)
    assert bmp.parse(bytes(data)) is None


def _rle8_screenshot(width: int, height: int) -> bytes:
    """Every row the same runs of 1-255 pixels (a screenshot's RLE8), then end of line."""
    rng = np.random.default_rng(7)
    row = bytearray()
    x = 0
    while x < width:
        run = int(min(width - x, rng.integers(1, 256)))
        row += bytes([run, int(rng.integers(0, 256))])
        x += run
    return rle_bmp(width, height, (bytes(row) + EOL) * height)


def test_40_mp_rle8_within_its_estimate():
    # 40 MP (8000 x 5000): before, 16 B/px was priced (Pillow decoded it whole,
    # img2pdf copied it). In a child whose address space is capped at the new
    # estimate, it converts.
    data = _rle8_screenshot(8000, 5000)
    info = inspect_image(data, 40_000_000)
    assert info.route == "bmp"
    limit = pricing.estimate_peak_bytes(info, len(data))
    assert limit < 120 * 1024 * 1024
    status = convert_under_address_limit(data, info, limit)
    assert status.startswith(b"ok "), status


class _Counted(bytes):
    """The file's bytes, counting the single-byte reads the decoder makes."""

    reads = 0

    def __getitem__(self, index):
        if isinstance(index, int):
            type(self).reads += 1
        return super().__getitem__(index)


@pytest.mark.parametrize("filler", [EOL, delta(0, 0), encoded((5, 9))])
def test_work_is_linear_in_the_stream_whatever_it_holds(monkeypatch, filler):
    # 100,000 ops that write nothing (end of line at a row boundary, a zero
    # delta, a run past the row's end) between the rows, 31 segments of 4 rows:
    # both passes together read each op's bytes a bounded number of times (a
    # segment that replayed the stream from its start would read ~30x more).
    monkeypatch.setattr(vips, "STRIP_BYTES", 64)
    width, height = 16, 124
    row = encoded((16, 3))
    stream = row + filler * 100_000 + EOL + (row + EOL) * (height - 1)
    data = _Counted(rle_bmp(width, height, stream))
    layout = bmp.parse(data)
    _Counted.reads = 0
    strips = list(bmp_rle.strips(data, layout.offset, width, height, False, False))
    assert len(strips) == len(bmp_rle.segments(width, height)) == 31
    assert _Counted.reads <= 3 * len(stream)
