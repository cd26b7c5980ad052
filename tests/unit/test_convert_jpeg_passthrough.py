"""The JPEG passthrough written without img2pdf (app.engine.direct.passthrough_jpeg)
against img2pdf's own output for the same file: page, boxes, rotation, image
dictionary and content matrix equal, the JPEG bytes verbatim; and every file
that is not plain (cut short, ICC, XMP, 12-bit...) left to the
sandboxed decoder path (None), which still answers as before."""

from __future__ import annotations

import io
import os
import struct
from decimal import Decimal

import pikepdf
import pytest
from PIL import Image

from app.engine import img2pdf_route
from app.engine.convert import convert_to_pdf
from app.engine.direct import passthrough_jpeg
from app.engine.inspect import inspect_image
from app.engine.structure import JPEG_MAX_SCANS
from app.errors import ImageTooComplex, ImageTooLarge, InvalidImage

ROTATION = {1: 0, 3: 180, 6: 90, 8: 270}


def make(
    mode: str = "RGB",
    size: tuple[int, int] = (40, 24),
    *,
    dpi: tuple[int, int] | None = None,
    orientation: int | None = None,
    progressive: bool = False,
    exif_dpi: tuple[int, int, int] | None = None,  # (unit, numerator, denominator)
    drop_jfif: bool = False,
    drop_adobe: bool = False,
    **params,
) -> bytes:
    colour = {"L": 90, "RGB": (200, 40, 10), "CMYK": (10, 200, 40, 30)}[mode]
    im = Image.new(mode, size, colour)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if exif_dpi is not None:
        unit, num, den = exif_dpi
        exif[0x0128] = unit
        exif[0x011A] = _Rational(num, den)
    if len(exif):
        params["exif"] = exif.tobytes()
    if dpi is not None:
        params["dpi"] = dpi
    buf = io.BytesIO()
    im.save(buf, "JPEG", progressive=progressive, **params)
    data = buf.getvalue()
    if drop_jfif:
        data = _drop_segment(data, 0xE0, b"JFIF")
    if drop_adobe:
        data = _drop_segment(data, 0xEE, b"Adobe")
    return data


class _Rational:
    """An Exif RATIONAL Pillow writes as given, zero denominators included."""

    def __new__(cls, num: int, den: int):
        from PIL.TiffImagePlugin import IFDRational

        return IFDRational(num, den)


def _drop_segment(data: bytes, marker: int, prefix: bytes) -> bytes:
    pos = 2
    while data[pos + 1] != 0xDA:
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if data[pos + 1] == marker and data[pos + 4 :].startswith(prefix):
            return data[:pos] + data[pos + 2 + length :]
        pos += 2 + length
    raise AssertionError("segment not found")


def _insert_segment(data: bytes, marker: int, body: bytes) -> bytes:
    return data[:2] + bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body + data[2:]


def ours(data: bytes, max_pixels: int = 10**9) -> bytes | None:
    fd = os.memfd_create("test-pdf")
    try:
        size = passthrough_jpeg(data, max_pixels, fd)
        return None if size is None else os.pread(fd, size, 0)
    finally:
        os.close(fd)


def img2pdfs(data: bytes, orientation: int = 1) -> bytes:
    return img2pdf_route._img2pdf(data, ROTATION[orientation])


def _numbers(array) -> list:
    return [float(v) if isinstance(v, (int, float, Decimal)) else repr(v) for v in array]


def summary(pdf_bytes: bytes) -> dict:
    pdf = pikepdf.open(io.BytesIO(pdf_bytes))
    (page,) = pdf.pages
    image = page.Resources.XObject.Im0
    ops = [
        (str(op), [float(x) for x in operands])
        for operands, op in pikepdf.parse_content_stream(page)
        if str(op) == "cm"
    ]
    return {
        "version": pdf.pdf_version,
        "mediabox": _numbers(page.MediaBox),
        "boxes": sorted(k for k in page.obj if k.endswith("Box")),
        "rotate": int(page.get("/Rotate", 0)),
        "userunit": float(page.get("/UserUnit", 1)),
        "image": {
            k: (_numbers(v) if isinstance(v, pikepdf.Array) else str(v))
            for k, v in image.stream_dict.items()
        },
        "raw": image.read_raw_bytes(),
        "cm": ops,
    }


def assert_same(data: bytes, orientation: int = 1) -> None:
    mine = ours(data)
    assert mine is not None, "a plain JPEG takes the passthrough"
    a, b = summary(mine), summary(img2pdfs(data, orientation))
    assert a["raw"] == data  # verbatim
    assert b["raw"] == data
    for key in ("version", "boxes", "rotate", "image"):
        assert a[key] == b[key], key
    assert a["mediabox"] == pytest.approx(b["mediabox"], abs=1e-3)
    (cm_a,), (cm_b,) = a["cm"], b["cm"]
    assert cm_a[1] == pytest.approx(cm_b[1], abs=1e-3)  # the operator's six numbers
    assert a["userunit"] == pytest.approx(b["userunit"])


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
@pytest.mark.parametrize("progressive", [False, True])
def test_same_pdf_as_img2pdf_per_colour_space(mode, progressive):
    assert_same(make(mode, progressive=progressive))


def test_cmyk_without_the_adobe_segment_is_not_inverted():
    data = make("CMYK", drop_adobe=True)
    assert_same(data)
    assert "/Decode" not in summary(ours(data))["image"]


def test_adobe_cmyk_is_inverted_like_img2pdf():
    assert summary(ours(make("CMYK")))["image"]["/Decode"] == [1, 0, 1, 0, 1, 0, 1, 0]


@pytest.mark.parametrize("dpi", [(0, 0), (72, 72), (300, 300), (300, 75), (0, 150), (1, 1)])
def test_jfif_dpi_gives_img2pdfs_page(dpi):
    assert_same(make(dpi=dpi))


@pytest.mark.parametrize(
    "exif_dpi",
    [(2, 300, 1), (3, 118, 1), (2, 0, 0), (2, 599, 2), (1, 144, 1)],
    ids=["inch", "cm", "zero-over-zero", "half", "no-unit"],
)
def test_exif_dpi_without_jfif_gives_img2pdfs_page(exif_dpi):
    assert_same(make(exif_dpi=exif_dpi, drop_jfif=True))


def test_exif_without_resolution_and_without_jfif_is_72_dpi():
    data = make(orientation=1, drop_jfif=True)
    assert_same(data)
    assert summary(ours(data))["mediabox"] == [0, 0, 40, 24]  # 40 x 24 px at 72 dpi


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_rotations_give_img2pdfs_rotate(orientation):
    data = make(orientation=orientation, dpi=(100, 200))
    assert_same(data, orientation)
    assert summary(ours(data))["rotate"] == ROTATION[orientation]


@pytest.mark.parametrize("orientation", [0, 9, 300])
def test_invalid_orientation_is_upright(orientation):
    data = make(orientation=orientation)
    assert_same(data, 1)


@pytest.mark.parametrize("orientation", [2, 4, 5, 7])
def test_mirrored_orientations_are_embedded_too(orientation):
    # The page matrix flips them (tests/unit/test_convert_jpeg_mirrored.py renders them).
    data = make(orientation=orientation)
    pdf = ours(data)
    assert pdf is not None and summary(pdf)["raw"] == data
    assert summary(pdf)["rotate"] == 0


@pytest.mark.parametrize(
    "size, dpi",
    [((1, 1), (300, 300)), ((3000, 2), (10, 10)), ((300, 210), (1, 1)), ((65500, 1), (72, 72))],
    ids=["tiny", "strip", "userunit", "widest"],
)
def test_page_limits_match_img2pdf(size, dpi):
    assert_same(make("L", size, dpi=dpi))


def test_cut_short_jpeg_is_not_plain_and_stays_invalid():
    data = make(size=(64, 48), progressive=True, dpi=(72, 72))
    cut = data[: len(data) // 2]
    assert ours(cut) is None
    with pytest.raises(InvalidImage):
        convert_to_pdf(cut, inspect_image(cut, 10**9))


@pytest.mark.parametrize(
    "marker, body",
    [
        (0xE2, b"ICC_PROFILE\0\x01\x01" + b"\0" * 16),
        (0xE1, b'http://ns.adobe.com/xap/1.0/\0<x tiff:Orientation="6"/>'),
        (0xE2, b"MPF\0" + b"\0" * 8),
        (0xEE, b"Adob"[:4] + b"e"),  # Adobe segment too short for its version
        (0xC9, b"\x08\x00\x10\x00\x10\x01\x01\x11\x00"),  # a second, arithmetic SOF
    ],
    ids=["icc", "xmp", "mpf", "short-adobe", "arithmetic-sof"],
)
def test_files_beyond_the_plain_case_go_to_the_decoder(marker, body):
    assert ours(_insert_segment(make(), marker, body)) is None


def test_twelve_bit_and_two_component_frames_go_to_the_decoder():
    data = make()
    sof = data.index(b"\xff\xc0")
    assert ours(data[: sof + 4] + b"\x0c" + data[sof + 5 :]) is None
    components = sof + 9
    assert ours(data[:components] + b"\x02" + data[components + 1 :]) is None


def test_pixel_cap_is_the_first_pixel_over():
    data = make(size=(40, 24))
    assert ours(data, max_pixels=40 * 24) is not None
    with pytest.raises(ImageTooLarge):
        ours(data, max_pixels=40 * 24 - 1)


def test_scan_cap_applies_as_in_the_sandbox():
    data = make(progressive=True)
    eoi = len(data) - 2
    padded = data[:eoi] + b"\xff\xda" * (JPEG_MAX_SCANS + 1) + data[eoi:]
    with pytest.raises(ImageTooComplex):
        ours(padded)
    with pytest.raises(ImageTooComplex):
        inspect_image(padded, 10**9)


# --- plain PNGs: the IDAT copied by the small writer, in the child ----------------

# The binary comment line of app.engine.pdfwriter (img2pdf's differs).
SMALL_WRITER = b"%\xe2\xe3\xcf\xd3"


def png(mode: str = "RGB", size=(40, 24), *, orientation=None, chunks=None, **params) -> bytes:
    im = Image.new(mode, size, (200, 40, 10) if mode == "RGB" else 1)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    buf = io.BytesIO()
    im.save(buf, "PNG", **params)
    data = buf.getvalue()
    if chunks is not None:
        data = _split_idat(data, chunks)
    return data


def _split_idat(data: bytes, size: int) -> bytes:
    """The same PNG with its IDAT data spread over chunks of `size` bytes."""
    import zlib

    out, pos, idat = [data[:8]], 8, b""
    tail = b""
    while pos < len(data):
        (n,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4 : pos + 8]
        chunk = data[pos : pos + 12 + n]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + n]
        elif kind == b"IEND":
            tail = chunk
        elif not idat:
            out.append(chunk)
        pos += 12 + n
    for i in range(0, len(idat), size):
        part = idat[i : i + size]
        crc = zlib.crc32(b"IDAT" + part)
        out.append(struct.pack(">I", len(part)) + b"IDAT" + part + struct.pack(">I", crc))
    return b"".join(out) + tail


def assert_png_like_img2pdf(data: bytes, orientation: int = 1, small_writer: bool = True) -> None:
    mine = convert_to_pdf(data, inspect_image(data, 10**9))
    assert (mine[9:14] == SMALL_WRITER) is small_writer
    a, b = summary(mine), summary(img2pdfs(data, orientation))
    assert a["raw"] == b["raw"]
    for key in ("version", "boxes", "rotate", "image"):
        assert a[key] == b[key], key
    assert a["mediabox"] == pytest.approx(b["mediabox"], abs=1e-3)
    assert a["cm"][0][1] == pytest.approx(b["cm"][0][1], abs=1e-3)
    assert a["userunit"] == pytest.approx(b["userunit"])


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("dpi", [None, (300, 300), (72, 150)])
def test_plain_png_same_pdf_as_img2pdf(mode, dpi):
    assert_png_like_img2pdf(png(mode, **({"dpi": dpi} if dpi else {})))


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_plain_png_rotation_as_img2pdf(orientation):
    assert_png_like_img2pdf(png(orientation=orientation, dpi=(100, 200)), orientation)


def test_plain_png_in_many_idat_chunks_is_copied_as_one_stream():
    data = png(size=(64, 48), chunks=7)
    assert data.count(b"IDAT") > 3
    assert_png_like_img2pdf(data)


def test_plain_png_aspect_only_phys_as_img2pdf():
    data = png(size=(40, 24))
    ihdr_end = 8 + 12 + 13
    import zlib

    body = struct.pack(">IIB", 2, 1, 0)  # unit 0: an aspect ratio only
    phys = struct.pack(">I", 9) + b"pHYs" + body + struct.pack(">I", zlib.crc32(b"pHYs" + body))
    assert_png_like_img2pdf(data[:ihdr_end] + phys + data[ihdr_end:])


@pytest.mark.parametrize(
    "data",
    [
        png("RGB", icc_profile=b"\0" * 128),
        png("P"),
        png("1"),
    ],
    ids=["icc", "palette", "bilevel"],
)
def test_other_plain_pngs_keep_img2pdf(data):
    assert_png_like_img2pdf(data, small_writer=False)


@pytest.mark.parametrize("size, dpi", [((1, 1), (300, 300)), ((300, 210), (1, 1))])
def test_plain_png_page_limits_as_img2pdf(size, dpi):
    assert_png_like_img2pdf(png("L", size, dpi=dpi))


# --- alpha PNGs: the filtered data split into colour and /SMask, undecoded --------


def _noisy(mode: str, size=(53, 37)) -> Image.Image:
    import random

    rnd = random.Random(7)
    im = Image.frombytes(
        mode, size, bytes(rnd.randrange(256) for _ in range(size[0] * size[1] * len(mode)))
    )
    return im


def _filter_types(stream: bytes, width: int, bands: int) -> set[int]:
    import zlib

    raw = zlib.decompress(stream)
    row = 1 + width * bands
    return {raw[i] for i in range(0, len(raw), row)}


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
@pytest.mark.parametrize("params", [{"compress_level": 6}, {"optimize": True}], ids=["6", "opt"])
def test_alpha_png_split_keeps_every_sample_and_the_files_filters(mode, params):
    im = _noisy(mode)
    buf = io.BytesIO()
    im.save(buf, "PNG", **params)
    data = buf.getvalue()
    pdf = pikepdf.open(io.BytesIO(convert_to_pdf(data, inspect_image(data, 10**9))))
    image = pdf.pages[0].Resources.XObject.Im0
    colours = len(mode) - 1
    samples = bytes(im.tobytes())
    width = im.size[0]
    pixels = [samples[i : i + len(mode)] for i in range(0, len(samples), len(mode))]
    assert image.read_bytes() == b"".join(p[:colours] for p in pixels)
    assert image.SMask.read_bytes() == b"".join(p[colours:] for p in pixels)
    # The file's own filter types (Sub, Average, Paeth...), not a re-filtered copy (Up only).
    assert _filter_types(image.read_raw_bytes(), width, colours) - {2}
    assert _filter_types(image.read_raw_bytes(), width, colours) == _filter_types(
        image.SMask.read_raw_bytes(), width, 1
    )


def _rgba_png_with_raw(raw: bytes, width: int, height: int) -> bytes:
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00" + b"\x10" * 16,  # one row short
        b"\x05" + b"\x10" * 16 + b"\x00" + b"\x10" * 16,  # filter type 5 does not exist
    ],
    ids=["short", "bad-filter"],
)
def test_alpha_png_data_not_matching_its_header_is_invalid(raw):
    # Rows past the header's are ignored, as Pillow and libvips do:
    # tests/unit/test_fastpaths_adversarial.py.
    data = _rgba_png_with_raw(raw, 4, 2)
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**9))


def test_alpha_png_exact_rows_convert():
    data = _rgba_png_with_raw((b"\x00" + b"\x10" * 16) * 2, 4, 2)
    assert convert_to_pdf(data, inspect_image(data, 10**9)).startswith(b"%PDF")
