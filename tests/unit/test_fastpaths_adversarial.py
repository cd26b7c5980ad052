"""Inputs the routes that skip img2pdf handled differently from the sandboxed path.

Headers the in-worker JPEG walk (app.engine.jpeg_header) once accepted
although Pillow refuses the file: the passthrough embedded them (200, a PDF
whose image no reader decodes) where the sandboxed path answers 422. Each must
now be left to the sandbox, which keeps its answer. A plain PNG whose rows
carry an unknown filter type was stored although no reader decodes it."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pikepdf
import pytest
from pikepdf import PdfImage
from PIL import Image

from app.engine import jpeg_header, pricing, structure
from app.engine.convert import convert_to_pdf
from app.engine.direct import passthrough_jpeg
from app.engine.inspect import inspect_image
from app.errors import ImageTooComplex, InvalidImage
from tests.support import images
from tests.support.limits import convert_under_address_limit


def segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def with_sof_tail(extra: int) -> bytes:
    """The SOF segment of a 3-component JPEG with `extra` bytes after its last component."""
    data = images.jpeg(16, 8)
    at = data.index(b"\xff\xc0")
    (length,) = struct.unpack_from(">H", data, at + 2)
    body = data[at + 4 : at + 2 + length] + b"\0" * extra
    return data[:at] + segment(0xC0, body) + data[at + 2 + length :]


def with_dqt(body: bytes) -> bytes:
    data = images.jpeg(16, 8)
    return data[:2] + segment(0xDB, body) + data[2:]


def passthrough(data: bytes) -> int | None:
    fd = os.memfd_create("test-pdf")
    try:
        return passthrough_jpeg(data, 10**9, fd)
    finally:
        os.close(fd)


REFUSED_BY_PILLOW = {
    # Pillow reads the components in steps of 3 to the segment's end: a tail of
    # 1, 2 or 4 bytes makes its open fail (IndexError).
    "sof_tail_1": with_sof_tail(1),
    "sof_tail_2": with_sof_tail(2),
    "sof_tail_4": with_sof_tail(4),
    # A DQT that is not whole tables of 65 (8-bit) or 129 (16-bit) bytes.
    "dqt_one_byte_over": with_dqt(b"\x00" + b"\x01" * 64 + b"\x00"),
    "dqt_short": with_dqt(b"\x00" + b"\x01" * 10),
    "dqt_16bit_short": with_dqt(b"\x10" + b"\x01" * 64),
}


@pytest.mark.parametrize("name", list(REFUSED_BY_PILLOW))
def test_header_pillow_refuses_is_left_to_the_sandbox(name):
    data = REFUSED_BY_PILLOW[name]
    assert jpeg_header.jpeg_header(data) is None
    assert passthrough(data) is None
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


ACCEPTED_BY_PILLOW = {
    # A fourth component entry (3 bytes) Pillow reads and libjpeg is not asked about:
    # img2pdf embeds it, so the sandbox still does.
    "sof_tail_3": with_sof_tail(3),
    "dqt_empty": with_dqt(b""),
    "dqt_four_tables": with_dqt((b"\x00" + b"\x01" * 64) * 4),
    "dqt_16bit": with_dqt(b"\x11" + b"\x00\x01" * 64),
    "dqt_five_tables": with_dqt((b"\x00" + b"\x01" * 64) * 5),
}


@pytest.mark.parametrize("name", list(ACCEPTED_BY_PILLOW))
def test_headers_pillow_accepts_still_convert(name):
    data = ACCEPTED_BY_PILLOW[name]
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    assert pdf.startswith(b"%PDF-")


@pytest.mark.parametrize("name", ["dqt_empty", "dqt_four_tables", "dqt_16bit"])
def test_well_formed_tables_keep_the_fast_path(name):
    # The check must not send ordinary files to the sandbox: 4 tables at most per
    # segment (ids 0-3), 8- or 16-bit precision.
    assert jpeg_header.jpeg_header(ACCEPTED_BY_PILLOW[name]) is not None


def test_more_tables_than_ids_in_one_segment_go_to_the_sandbox():
    # The walk stops after 4 tables: a segment of 1,000 tables costs no loop here.
    assert jpeg_header.jpeg_header(ACCEPTED_BY_PILLOW["dqt_five_tables"]) is None


# --- plain PNG: IDAT copied into the PDF as it is ---------------------------------


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_with_filters(filters: list[int], colour_type: int = 2, width: int = 5) -> bytes:
    """An 8-bit grey (0) or RGB (2) PNG, one row per filter type given."""
    channels = {0: 1, 2: 3}[colour_type]
    raw = b"".join(bytes([f]) + bytes(i % 251 for i in range(width * channels)) for f in filters)
    ihdr = struct.pack(">IIBBBBB", width, len(filters), 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("colour_type", [0, 2])
@pytest.mark.parametrize("bad", [5, 255])
@pytest.mark.parametrize("row", [0, 3])
def test_plain_png_with_an_unknown_filter_type_is_refused(colour_type, bad, row):
    # The IDAT is copied into the PDF undecoded: a row with filter type 5+ passed the
    # size check and was stored (200), an image no reader decodes (Pillow: OSError).
    filters = [0, 1, 2, 3, 4]
    filters[row] = bad
    data = png_with_filters(filters, colour_type)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


@pytest.mark.parametrize("colour_type", [0, 2])
def test_plain_png_with_every_filter_type_still_converts(colour_type):
    # Filter types 0-4, the last one on the last row: the boundary of the check.
    data = png_with_filters([0, 1, 2, 3, 4], colour_type)
    with Image.open(io.BytesIO(data)) as im:
        im.load()  # a valid file
    assert convert_to_pdf(data, inspect_image(data, 10**9)).startswith(b"%PDF-")


def test_filter_types_are_checked_at_row_starts_across_inflate_chunks():
    # 1 MiB inflate steps do not align with rows: a width making rows of 2,999 bytes
    # puts row starts at every offset within a step; only the last row's type is bad.
    rows = 1000
    data = png_with_filters([4] * (rows - 1) + [5], 0, width=2998)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))
    ok = png_with_filters([4] * rows, 0, width=2998)
    assert convert_to_pdf(ok, inspect_image(ok, 10**9)).startswith(b"%PDF-")


# --- 8-bit alpha PNG: filtered rows split into colour + /SMask --------------------


def alpha_png(raw: bytes, width: int, height: int, colour_type: int = 6) -> bytes:
    """An 8-bit RGBA (6) or grey+alpha (4) PNG whose IDAT is `raw`, deflated whole."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def alpha_rows(width: int, height: int, bands: int) -> bytes:
    return b"".join(
        bytes([y % 5]) + bytes((y * 31 + i) % 256 for i in range(width * bands))
        for y in range(height)
    )


def render(pdf: bytes, width: int) -> Image.Image:
    import pypdfium2 as pdfium

    page = pdfium.PdfDocument(pdf)[0]
    bitmap = page.render(scale=width / page.get_size()[0], fill_color=(255, 255, 255, 255))
    return bitmap.to_pil().convert("RGB")


def on_white(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        rgba = im.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")


TRAILING = {
    "one_more_row": lambda rows, row: rows + rows[:row],
    "one_more_byte": lambda rows, row: rows + b"\0",
}


@pytest.mark.parametrize("colour_type, bands", [(6, 4), (4, 2)])
@pytest.mark.parametrize("extra", list(TRAILING))
def test_alpha_png_with_data_past_its_rows_converts_as_pillow_decodes_it(colour_type, bands, extra):
    # The split refused these (422) although the decoding routes before it (Pillow)
    # and libvips convert them: nothing past the header's rows reaches the PDF.
    width, height = 13, 9
    rows = alpha_rows(width, height, bands)
    data = alpha_png(TRAILING[extra](rows, 1 + width * bands), width, height, colour_type)
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    assert b"/SMask" in pdf
    got = np.asarray(render(pdf, width), int)
    want = np.asarray(on_white(data), int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1  # pdfium's alpha blend rounds


@pytest.mark.parametrize("cut", [1, 14])
def test_alpha_png_short_of_its_rows_is_still_refused(cut):
    width, height = 13, 9
    rows = alpha_rows(width, height, 4)
    data = alpha_png(rows[:-cut], width, height)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


def pdf_planes(pdf: bytes) -> tuple[np.ndarray, np.ndarray]:
    """The colour image (its alpha dropped: pikepdf joins the soft mask) and the
    soft mask, as the PDF stores them."""
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = next(iter(doc.pages[0].get_images().values()))
        colour = PdfImage(image).as_pil_image()
        mask = PdfImage(image.SMask).as_pil_image()
        return np.asarray(colour), np.asarray(mask)


# Rows longer than a strip (128 KiB) take the piecewise split: 40,000 RGBA pixels
# make a 160,001-byte row, 70,000 grey+alpha pixels a 140,001-byte one.
WIDE = [(6, 4, 40_000), (4, 2, 70_000)]


@pytest.mark.parametrize("colour_type, bands, width", WIDE)
def test_rows_longer_than_a_strip_split_exactly(colour_type, bands, width):
    height = 5
    noise = np.random.default_rng(7).integers(0, 256, (height, width * bands), np.uint8)
    raw = b"".join(bytes([y % 5]) + noise[y].tobytes() for y in range(height))
    data = alpha_png(raw, width, height, colour_type)
    colour, mask = pdf_planes(convert_to_pdf(data, inspect_image(data, 10**9)))
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
    assert colour.reshape(height, width, -1)[..., : bands - 1].tolist() == want[..., :-1].tolist()
    assert mask.reshape(height, width).tolist() == want[..., -1].tolist()


@pytest.mark.parametrize("colour_type, bands, width", WIDE)
@pytest.mark.parametrize("flaw", ["filter_5_in_last_row", "one_byte_short", "one_pixel_short"])
def test_rows_longer_than_a_strip_are_checked_like_the_others(colour_type, bands, width, flaw):
    height = 3
    rows = [bytes([1]) + bytes(width * bands) for _ in range(height)]
    if flaw == "filter_5_in_last_row":
        rows[-1] = b"\x05" + rows[-1][1:]
    raw = b"".join(rows)
    if flaw == "one_byte_short":
        raw = raw[:-1]
    if flaw == "one_pixel_short":
        raw = raw[:-bands]
    data = alpha_png(raw, width, height, colour_type)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


def test_a_40_mp_row_splits_in_bounded_memory():
    # One 160 MB row (40 MP, 1 px high): the split held the whole row several
    # times over (~550 MiB). In a child limited to twice the route's estimate
    # for the image, it now converts.
    width = 40_000_000
    data = alpha_png(b"\x00" + bytes(width * 4), width, 1)
    info = inspect_image(data, 40_000_000)
    limit = 2 * pricing.estimate_peak_bytes(info, len(data))
    status = convert_under_address_limit(data, info, limit)
    assert status.startswith(b"ok "), status


# --- what the in-worker walk hands to the sandbox: fill bytes, junk, RST ---------


def jpeg_with_stray(stray: bytes) -> bytes:
    """A plain JPEG with `stray` between its APP0 segment and the next marker."""
    data = images.jpeg(16, 8)
    app0 = 4 + struct.unpack_from(">H", data, 4)[0]
    return data[:app0] + stray + data[app0:]


CAP = structure.JPEG_MAX_STRAY_BYTES


@pytest.mark.parametrize("byte", [b"\xff", b"\x00"], ids=["fill", "junk"])
def test_stray_bytes_up_to_the_cap_convert(byte):
    # Fill bytes are valid JPEG and junk is what Pillow steps over: at the cap,
    # the file still converts in the sandbox (the walk in the worker declines).
    data = jpeg_with_stray(byte * CAP)
    assert jpeg_header.jpeg_header(data) is None
    assert convert_to_pdf(data, inspect_image(data, 10**9)).startswith(b"%PDF-")


@pytest.mark.parametrize("byte", [b"\xff", b"\x00"], ids=["fill", "junk"])
def test_stray_bytes_past_the_cap_are_too_complex(byte):
    # 20 MiB of them made Pillow's header loop run for over a minute per file
    # (inspect, convert and img2pdf each open it): a 15 s timeout of CPU each.
    with pytest.raises(ImageTooComplex):
        inspect_image(jpeg_with_stray(byte * (CAP + 1)), 10**9)


def test_fill_and_junk_count_together():
    with pytest.raises(ImageTooComplex):
        inspect_image(
            jpeg_with_stray(b"\xff" * (CAP // 2 + 2) + b"\xe5\x00\x02" + b"\x00" * (CAP // 2)),
            10**9,
        )


def test_restart_markers_before_the_frame_count_as_segments():
    data = images.jpeg(16, 8)
    before = structure.JPEG_MAX_SEGMENTS
    with pytest.raises(ImageTooComplex):
        inspect_image(data[:2] + b"\xff\xd0" * before + data[2:], 10**9)
    few = data[:2] + b"\xff\xd0" * 3 + data[2:]
    assert convert_to_pdf(few, inspect_image(few, 10**9)).startswith(b"%PDF-")


# --- Exif IFD0 entries Pillow stops at or skips --------------------------------


def jpeg_with_ifd0(entries: list[tuple[int, int, int, bytes]], tail: bytes = b"") -> bytes:
    """A 16x8 JPEG whose Exif (big-endian) IFD0 holds `entries` (tag, type, count,
    4-byte value or offset) in this order, `tail` after the IFD."""
    ifd = struct.pack(">H", len(entries))
    ifd += b"".join(struct.pack(">HHI", t, k, n) + v for t, k, n, v in entries)
    exif = b"Exif\0\0MM\0*" + struct.pack(">I", 8) + ifd + b"\0\0\0\0" + tail
    data = images.jpeg(16, 8)
    return data[:2] + segment(0xE1, exif) + data[2:]


def pillow_reading(data: bytes) -> tuple[int, tuple[float, float]]:
    with Image.open(io.BytesIO(data)) as im:
        dpi = im.info.get("dpi", (72, 72))
        return im.getexif().get(0x0112, 1), (float(dpi[0]), float(dpi[1]))


SHORT, RATIONAL, ASCII = 3, 5, 2
ORIENTATION_5 = (0x0112, SHORT, 1, struct.pack(">HH", 5, 0))
ORIENTATION_6 = (0x0112, SHORT, 1, struct.pack(">HH", 6, 0))
UNIT_INCH = (0x0128, SHORT, 1, struct.pack(">HH", 2, 0))


def x_resolution(at: int) -> tuple[int, int, int, bytes]:
    return (0x011A, RATIONAL, 1, struct.pack(">I", at))


# IFD0 starts at 8; with n entries its end (and the tail) is at 8 + 2 + 12n + 4.
EXIF_IFD0 = {
    # Make's 20 bytes lie past the end: Pillow's read of IFD0 stops there, so
    # the orientation after it is never read (the walk took 5 and 6 from it).
    "orientation after data past the end (5)": jpeg_with_ifd0(
        [(0x010F, ASCII, 20, struct.pack(">I", 4000)), ORIENTATION_5]
    ),
    "orientation after data past the end (6)": jpeg_with_ifd0(
        [(0x010F, ASCII, 20, struct.pack(">I", 4000)), ORIENTATION_6]
    ),
    # Data one byte past the end: Make's 8 bytes at 38 (IFD0's end), 7 bytes there.
    "data one byte past the end": jpeg_with_ifd0(
        [(0x010F, ASCII, 8, struct.pack(">I", 38)), ORIENTATION_5], tail=b"x" * 7
    ),
    # Out-of-line data adding up to more than the Exif stream (146 bytes): Pillow
    # skips the tags past that sum (Software, then XResolution), reading no dpi;
    # the walk read 300 dpi. Each value lies inside the stream (at 86, IFD0's end).
    "resolution past the data limit": jpeg_with_ifd0(
        [
            (0x010F, ASCII, 60, struct.pack(">I", 86)),
            (0x0110, ASCII, 60, struct.pack(">I", 86)),
            (0x0131, ASCII, 60, struct.pack(">I", 86)),
            UNIT_INCH,
            x_resolution(86),
            ORIENTATION_5,
        ],
        tail=struct.pack(">II", 300, 1) + b"M" * 52,
    ),
}


@pytest.mark.parametrize("name", EXIF_IFD0)
def test_exif_the_walk_reads_as_pillow_or_leaves_to_the_sandbox(name):
    data = EXIF_IFD0[name]
    head = jpeg_header.jpeg_header(data)
    if head is not None:
        orientation, dpi = pillow_reading(data)
        assert (head.orientation, head.dpi or (72.0, 72.0)) == (orientation, dpi), name
    assert convert_to_pdf(data, inspect_image(data, 10**9)).startswith(b"%PDF-")


def test_exif_data_that_ends_at_the_last_byte_is_read():
    # The boundary: Make's 8 bytes end exactly at the stream's end; Pillow reads
    # on, so the walk keeps the file and reads the orientation after it.
    data = jpeg_with_ifd0([(0x010F, ASCII, 8, struct.pack(">I", 38)), ORIENTATION_5], b"x" * 8)
    assert pillow_reading(data)[0] == 5
    head = jpeg_header.jpeg_header(data)
    assert head is not None and head.orientation == 5


def alpha_png_in_chunks(raw: bytes, width: int, height: int, sizes, colour_type: int = 6):
    """`alpha_png` with its deflated data cut into IDAT chunks of the given sizes
    (the last takes the rest)."""
    packed = zlib.compress(raw)
    chunks, at = [], 0
    for size in sizes:
        chunks.append(png_chunk(b"IDAT", packed[at : at + size]))
        at += size
    chunks.append(png_chunk(b"IDAT", packed[at:]))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + b"".join(chunks) + png_chunk(b"IEND", b"")
    )


# 300 RGBA pixels: 1,201-byte rows, 109 to a 128 KiB strip, so 250 rows make three
# strips, the last of 32 rows. IDAT chunks of 1 and 7 bytes make every strip span
# many inflate chunks; one chunk holding everything gives whole strips at once.
@pytest.mark.parametrize("colour_type, bands", [(6, 4), (4, 2)])
@pytest.mark.parametrize("sizes", [[1] * 40 + [7] * 3000, []], ids=["small_idat", "one_idat"])
def test_alpha_png_strips_across_idat_chunks_split_exactly(colour_type, bands, sizes):
    width, height = 300, 250
    noise = np.random.default_rng(11).integers(0, 256, (height, width * bands), np.uint8)
    raw = b"".join(bytes([y % 5]) + noise[y].tobytes() for y in range(height))
    data = alpha_png_in_chunks(raw, width, height, sizes, colour_type)
    assert data.count(b"IDAT") == len(sizes) + 1
    colour, mask = pdf_planes(convert_to_pdf(data, inspect_image(data, 10**9)))
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
    assert colour.reshape(height, width, -1)[..., : bands - 1].tolist() == want[..., :-1].tolist()
    assert mask.reshape(height, width).tolist() == want[..., -1].tolist()


@pytest.mark.parametrize("cut_rows", [1, 32, 33])
def test_alpha_png_a_strip_short_across_idat_chunks_is_refused(cut_rows):
    # The data ends inside the last strip (1 row short), exactly at the second
    # strip's end (32 rows short: the last strip is missing whole), or one row
    # before that end.
    width, height = 300, 250
    rows = alpha_rows(width, height, 4)
    data = alpha_png_in_chunks(rows[: -cut_rows * (1 + width * 4)], width, height, [7] * 500)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))
