"""JPEGs that do not end with EOI (app.engine.jpeg_header.reaches_eoi, checks._check_jpeg):
a walk over segments and scans finds the scans' end without a decoder. Cut
progressive files are refused (422) with no decode (libjpeg held all their
coefficients to say the same); complete files with a trailer after EOI embed
verbatim with no decode; cut baseline files keep the 1/8-scale decode check."""

from __future__ import annotations

import io
import struct

import pikepdf
import pytest
from PIL import JpegImagePlugin

from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.jpeg_header import _MAX_MARKERS, has_scan, reaches_eoi
from app.errors import ImageTooComplex, InvalidImage
from tests.support import images


def jpeg(mode: str = "RGB", *, progressive: bool = True, **params) -> bytes:
    im = images.photo(96, 64, seed=7).convert(mode)
    return images.encode(im, "JPEG", quality=90, progressive=progressive, **params)


@pytest.fixture
def loads(monkeypatch) -> list[int]:
    """Counts Pillow's JPEG decodes (its load)."""
    calls: list[int] = []
    original = JpegImagePlugin.JpegImageFile.load

    def counted(self):
        calls.append(1)
        return original(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", counted)
    return calls


def embedded(pdf: bytes) -> bytes:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        return doc.pages[0].Resources.XObject.Im0.read_raw_bytes()


@pytest.mark.parametrize("mode", ["RGB", "CMYK", "L"])
def test_every_cut_of_a_progressive_jpeg_is_refused_without_a_decode(mode, loads):
    data = jpeg(mode)
    first_scan = data.index(b"\xff\xda")
    for cut in [first_scan + 2, *range(first_scan + 20, len(data) - 1, 97), len(data) - 1]:
        cut_data = data[:cut]
        with pytest.raises(InvalidImage):  # from the header read for the first few
            info = inspect_image(cut_data, 10**9)
            assert info.decoder_bytes == 0
            convert_to_pdf(cut_data, info)
    assert loads == []


@pytest.mark.parametrize("progressive", [True, False])
@pytest.mark.parametrize("trailer", [b"x" * 65, b"\0" * 100, b"\xff\xd8\xff" + b"t" * 200])
def test_complete_jpeg_with_a_trailer_embeds_without_a_decode(progressive, trailer, loads):
    data = jpeg(progressive=progressive, icc_profile=b"") + trailer  # not plain: the child
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    assert embedded(pdf) == data
    assert loads == []


def test_cut_baseline_jpeg_keeps_the_decode_check(loads):
    data = jpeg(progressive=False)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data[: len(data) // 2], inspect_image(data[: len(data) // 2], 10**9))
    assert loads != []


@pytest.mark.parametrize("progressive", [True, False])
def test_reaches_eoi_only_with_the_whole_file(progressive):
    data = jpeg(progressive=progressive)
    assert reaches_eoi(data)
    assert not reaches_eoi(data[:-1])  # the last byte of EOI
    assert not any(reaches_eoi(data[:cut]) for cut in range(len(data) - 1))


def test_an_eoi_inside_a_segment_is_not_the_end():
    # An Exif thumbnail is a whole JPEG, EOI included, inside APP1.
    thumb = jpeg(progressive=False)
    exif = b"Exif\0\0" + thumb
    data = jpeg()
    data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:]
    assert reaches_eoi(data)
    assert not reaches_eoi(data[: data.rindex(b"\xff\xda") + 40])


def test_restart_markers_are_part_of_the_scan():
    data = jpeg(progressive=False, restart_marker_blocks=1)
    assert sum(data.count(bytes([0xFF, rst])) for rst in range(0xD0, 0xD8)) > 20
    assert reaches_eoi(data)
    assert not reaches_eoi(data[:-2])
    assert not reaches_eoi(data[:-200])


def test_markers_past_the_cap_are_too_complex():
    data = jpeg()
    scans_end = data.rindex(b"\xff\xd9")
    comments = b"\xff\xfe\x00\x02" * (_MAX_MARKERS + 1)
    with pytest.raises(ImageTooComplex):
        reaches_eoi(data[:scans_end] + comments)
    few = b"\xff\xfe\x00\x02" * (_MAX_MARKERS - 40)
    assert reaches_eoi(data[:scans_end] + few + b"\xff\xd9")


def headers_only(data: bytes, marker: bytes, extra: int = 0) -> bytes:
    """`data` cut just before its first `marker` segment (plus `extra` bytes of
    it), then an EOI and a trailer: segments, no scan (or a scan header only)."""
    return data[: data.index(marker) + extra] + b"\xff\xd9trailer"


@pytest.mark.parametrize("progressive", [True, False])
@pytest.mark.parametrize(
    ("marker", "extra"),
    [
        (b"\xff\xc4", 0),  # after the frame header, before the Huffman tables
        (b"\xff\xda", 0),  # before the first scan header
        (b"\xff\xda", 1),  # inside its marker: 0xFF is then a fill byte before EOI
    ],
)
def test_an_eoi_before_any_scan_is_not_a_whole_image(progressive, marker, extra):
    # The walk took the EOI for the scans' end with no scan walked: such a file
    # was embedded (200, an image no reader draws) where Pillow's decode fails
    # ("cannot load this image") and the 1/8-scale check answered 422.
    data = headers_only(jpeg(progressive=progressive), marker, extra)
    assert not reaches_eoi(data)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


def test_one_scan_then_eoi_is_whole():
    # The boundary: after the first scan (of a progressive file) an EOI ends it.
    data = jpeg()
    second = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    assert reaches_eoi(data[:second] + b"\xff\xd9trailer")


@pytest.mark.parametrize("progressive", [True, False])
@pytest.mark.parametrize("marker", [b"\xff\xc4", b"\xff\xda"])
def test_headers_ending_with_eoi_are_not_an_image(progressive, marker):
    # Ending with EOI, the file skipped every check and img2pdf embedded its
    # headers (200, a page no reader draws); Pillow cannot load it.
    data = jpeg(progressive=progressive)
    data = data[: data.index(marker)] + b"\xff\xd9"
    assert not has_scan(data)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


def test_a_scan_header_is_found_past_the_tables():
    assert has_scan(jpeg()) and has_scan(jpeg(progressive=False))


@pytest.mark.parametrize("length", [0, 1])
def test_a_segment_length_under_two_ends_both_walks(length):
    """A length field below 2 (it counts itself) is no segment: libjpeg stops with
    "Bogus marker length". Both walks stop there rather than search on from
    inside it (a length of 2, the empty segment, is still walked over)."""
    data = jpeg(progressive=False)
    at = data.index(b"\xff\xdb")  # the first quantisation table
    bogus = data[:at] + b"\xff\xfe" + struct.pack(">H", length) + data[at:]
    assert not has_scan(bogus) and not reaches_eoi(bogus)
    empty = data[:at] + b"\xff\xfe\x00\x02" + data[at:]  # an empty COM segment
    assert has_scan(empty) and reaches_eoi(empty)
