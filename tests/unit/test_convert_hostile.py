"""Each file that once hurt the service, reproduced small, and each byte-level cap at
its boundary. These run the conversion in-process (the caps and fixes live in the
conversion code); tests/service/test_sandbox.py runs them under the kernel limits."""

from __future__ import annotations

import io
import struct
import warnings

import pikepdf
import pytest
from PIL import Image

from app.engine import structure
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pillow_warnings import take_warning_count
from app.engine.pricing import estimate_peak_bytes
from app.errors import ImageTooComplex, InvalidImage
from tests.support import hostile, images

MAX_PIXELS = 40_000_000


def convert(data: bytes) -> bytes:
    return convert_to_pdf(data, inspect_image(data, MAX_PIXELS))


def page_size(pdf: bytes) -> tuple[float, float]:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        box = [float(v) for v in doc.pages[0].mediabox]
    return box[2] - box[0], box[3] - box[1]


# --- found by trying it -------------------------------------------------------


@pytest.mark.timeout(60)
def test_jp2_with_display_resolution_before_capture_resolution_converts():
    """img2pdf's parse_res looped forever on this valid file; the page uses `resc`."""
    pdf = convert(hostile.jp2_with_display_resolution_first(64, 48, dpi=150))
    assert page_size(pdf) == pytest.approx((64 * 72 / 150, 48 * 72 / 150), abs=0.01)


def test_sixteen_bit_tiff_page_is_sized_at_the_default_dpi_not_one_dpi():
    pdf = convert(images.tiff16(32, 24))  # no resolution tags: 96 dpi, as for 8-bit
    assert page_size(pdf) == pytest.approx((32 * 72 / 96, 24 * 72 / 96))


def test_sixteen_bit_tiff_keeps_its_own_dpi():
    im = Image.new("I;16", (40, 20), 1000)
    buf = io.BytesIO()
    im.save(buf, "TIFF", dpi=(100, 200))
    assert page_size(convert(buf.getvalue())) == pytest.approx((40 * 72 / 100, 20 * 72 / 200))


def test_jpeg_segments_before_the_scan_are_capped_at_the_boundary():
    at_cap = hostile.jpeg_with_empty_app_segments(structure.JPEG_MAX_SEGMENTS)
    assert convert(at_cap).startswith(b"%PDF-")
    over = hostile.jpeg_with_empty_app_segments(structure.JPEG_MAX_SEGMENTS + 1)
    with pytest.raises(ImageTooComplex):
        inspect_image(over, MAX_PIXELS)


def _one_component_per_scan(data: bytes) -> bytes:
    """The first SOS header says it codes one of the frame's components: the scan
    count then matters (the decoder expects more scans), so the file is counted."""
    sos = data.index(b"\xff\xda")
    return data[: sos + 4] + b"\x01" + data[sos + 5 :]


@pytest.mark.parametrize(
    "base",
    [
        pytest.param(
            images.encode(images.noisy_gradient(32, 32), "JPEG", progressive=True), id="progressive"
        ),
        pytest.param(
            _one_component_per_scan(images.jpeg(32, 32)), id="sequential-a-component-per-scan"
        ),
    ],
)
def test_jpeg_scans_are_capped(base: bytes):
    scans = base.count(b"\xff\xda")
    at_cap = base + b"\xff\xda" * (structure.JPEG_MAX_SCANS - scans)
    assert structure.scan(at_cap, "jpeg").components == 3
    with pytest.raises(ImageTooComplex):
        structure.scan(at_cap + b"\xff\xda", "jpeg")
    assert inspect_image(at_cap, MAX_PIXELS).kind == "jpeg"
    with pytest.raises(ImageTooComplex):
        inspect_image(at_cap + b"\xff\xda", MAX_PIXELS)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_a_sequential_jpeg_whose_first_scan_has_every_component_is_not_counted(mode: str):
    """No pass over the file for the common camera JPEG: libjpeg refuses a second
    scan in such a file at once, so extra scans cannot cost a decoder anything."""
    base = images.encode(images.noisy_gradient(32, 32).convert(mode), "JPEG", quality=90)
    eoi = len(base) - 2
    second_scan = base[base.index(b"\xff\xda") : eoi]
    padded = base[:eoi] + second_scan * (structure.JPEG_MAX_SCANS + 1) + base[eoi:]
    assert structure.scan(padded, "jpeg").components == len(mode)
    two_scans = base[:eoi] + second_scan + base[eoi:]
    with Image.open(io.BytesIO(two_scans)) as im, pytest.raises(OSError, match="broken data"):
        im.load()


def test_png_chunks_other_than_idat_are_capped_at_the_boundary():
    at_cap = hostile.png_with_empty_chunks(structure.PNG_MAX_OTHER_CHUNKS)
    assert convert(at_cap).startswith(b"%PDF-")
    with pytest.raises(ImageTooComplex):
        inspect_image(hostile.png_with_empty_chunks(structure.PNG_MAX_OTHER_CHUNKS + 1), 10**6)


def test_png_chunk_total_is_capped_at_the_boundary():
    base = images.png(8, 8)
    # IHDR, IDAT, IEND + empty IDAT chunks (legal: they add no data)
    at_cap = base[:33] + hostile.png_chunk(b"IDAT", b"") * (structure.PNG_MAX_CHUNKS - 3)
    at_cap += base[33:]
    assert convert(at_cap).startswith(b"%PDF-")
    over = base[:33] + hostile.png_chunk(b"IDAT", b"") * (structure.PNG_MAX_CHUNKS - 2)
    with pytest.raises(ImageTooComplex):
        inspect_image(over + base[33:], MAX_PIXELS)


def test_gif_extension_blocks_before_the_image_are_capped():
    base = images.gif(16, 16)
    start = 13 + 3 * (2 ** ((base[10] & 7) + 1))
    comment = b"\x21\xfe\x01x\x00"
    existing = 0
    pos = start
    while base[pos] == 0x21:  # Pillow writes a graphic control/comment block or two
        existing += 1
        pos += 2
        while base[pos]:
            pos += base[pos] + 1
        pos += 1
    at_cap = base[:start] + comment * (structure.GIF_MAX_BLOCKS_BEFORE_IMAGE - existing)
    assert convert(at_cap + base[start:]).startswith(b"%PDF-")
    with pytest.raises(ImageTooComplex):
        inspect_image(at_cap + comment + base[start:], MAX_PIXELS)


def test_webp_chunks_are_capped():
    base = images.webp(16, 16)
    extra = b"XTRA" + struct.pack("<I", 0)
    over = base + extra * structure.WEBP_MAX_CHUNKS  # base has at least one chunk
    with pytest.raises(ImageTooComplex):
        inspect_image(over, MAX_PIXELS)


def test_jp2_boxes_are_capped():
    base = images.jp2(16, 16)
    free = struct.pack(">I", 8) + b"free"
    with pytest.raises(ImageTooComplex):
        inspect_image(base + free * structure.JP2_MAX_BOXES, MAX_PIXELS)


def test_tiff_ifd_chain_is_walked_only_to_the_count_cap():
    data = hostile.tiff_ifd_chain(5000)  # the original had 180k: minutes of page counting
    info = inspect_image(data, MAX_PIXELS)
    assert (info.width, info.height, info.frames) == (1, 1, structure.FRAMES_COUNTED)
    with pikepdf.open(io.BytesIO(convert_to_pdf(data, info))) as doc:
        assert len(doc.pages) == 1


def test_tiff_ifd_loop_terminates():
    data = bytearray(hostile.tiff_ifd_chain(2))
    # point the second IFD back at the first
    second = 8 + (2 + 12 * 8 + 4 + 2)
    struct.pack_into("<I", data, second + 2 + 12 * 8, 8)
    assert inspect_image(bytes(data), MAX_PIXELS).frames == 2


def test_idat_inflating_to_exactly_the_rows_is_embedded():
    rows = hostile.png_rows(100, 100)
    assert convert(hostile.png_idat(100, 100, rows)).startswith(b"%PDF-")


def test_idat_inflating_one_byte_past_the_rows_is_refused():
    rows = hostile.png_rows(100, 100)
    with pytest.raises(InvalidImage):
        convert(hostile.png_idat(100, 100, rows + b"\x00"))


def test_idat_zlib_bomb_is_refused_without_inflating_it():
    """64 MiB of zeros behind 100x100 px: refused after ~30 KB of inflating."""
    with pytest.raises(InvalidImage):
        convert(hostile.png_idat_bomb(100, 100, 64 * 1024 * 1024))


def test_data_after_the_idat_stream_end_is_refused():
    good = hostile.png_idat(100, 100, hostile.png_rows(100, 100))
    iend = good.rindex(b"IEND") - 4
    extra = hostile.png_chunk(b"IDAT", b"\x00" * 16)
    with pytest.raises(InvalidImage):
        convert(good[:iend] + extra + good[iend:])


def test_exif_warning_flood_is_counted_not_printed():
    data = hostile.jpeg_with_exif_flood(entries=2000)
    take_warning_count()
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        convert(data)
    assert escaped == []
    assert take_warning_count() >= 2000


# --- estimates are upper bounds for their route --------------------------------


def test_sixteen_bit_jp2_is_embedded_and_priced_as_a_copy():
    # No decoder runs (tests/unit/test_convert_jp2_deep.py renders them).
    data = hostile.jp2_16bit_gray(256, 256)
    info = inspect_image(data, MAX_PIXELS)
    assert info.route == "embed-jp2"
    assert estimate_peak_bytes(info, len(data)) < 256 * 256 + 6 * len(data) + 9 * 2**20
    with pikepdf.open(io.BytesIO(convert_to_pdf(data, info))) as doc:
        assert len(doc.pages) == 1
        assert doc.pages[0].Resources.XObject.Im0.read_raw_bytes() == data


def test_truncated_progressive_cmyk_jpeg_is_refused_without_its_coefficients():
    # The walk to the scans' end finds it cut (tests/unit/test_convert_jpeg_cut.py):
    # no decoder holds its coefficients, so none are priced.
    data = hostile.truncated_progressive_cmyk_jpeg(256, 256, cut=200)
    info = inspect_image(data, MAX_PIXELS)
    assert info.decoder_bytes == 0
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, info)


def test_complete_progressive_jpeg_is_not_decoded_so_not_priced_for_it():
    im = Image.effect_noise((64, 64), 60).convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", progressive=True)
    assert inspect_image(buf.getvalue(), MAX_PIXELS).decoder_bytes == 0
