"""The img2pdf route: img2pdf with its patches, and the page layout.

img2pdf's quadratic PNG chunk join, its PNG re-encoding and its JPEG 2000
resolution parser are swapped at import for linear/faster ones; `_layout_at`
gives the page size (px * 72 / dpi) every writer uses.
"""

from __future__ import annotations

import io
import logging
import struct

import img2pdf
from PIL import Image

from app.engine.pdfwriter import PRODUCER

# img2pdf warns on every alpha image and tiny page; those are expected paths here.
logging.getLogger("img2pdf").setLevel(logging.ERROR)
# img2pdf refusals that a Pillow-normalised copy gets past; ValueError covers
# ">8 bits per sample" and "unknown colorspace".
_IMG2PDF_REFUSALS = (
    img2pdf.AlphaChannelError,
    img2pdf.ExifOrientationError,
    img2pdf.JpegColorspaceError,
    img2pdf.UnsupportedColorspaceError,
    ValueError,
)

# PDF page-size limits in points (pikepdf refuses anything outside them).
_MIN_PAGE_PT = 3.0
_MAX_PAGE_PT = 14400.0


def _parse_png_linear(rawdata: bytes) -> tuple[bytes, bytes]:
    """img2pdf.parse_png with the same result in linear time.

    img2pdf 0.6.3 concatenates IDAT chunks with `bytes +=`, which is quadratic:
    a 73 MB PNG in 64 KB chunks took 100 s. Joining once costs one copy.
    """
    idat: list[bytes] = []
    palette: list[bytes] = []
    i = 16
    while i < len(rawdata):
        (n,) = struct.unpack(">I", rawdata[i - 8 : i - 4])
        if i + n > len(rawdata):
            raise img2pdf.ImageOpenError("invalid png: truncated chunk")
        kind = rawdata[i - 4 : i]
        if kind == b"IDAT":
            idat.append(rawdata[i : i + n])
        elif kind == b"PLTE":
            palette.append(rawdata[i : i + n])
        i += n + 12
    return b"".join(idat), b"".join(palette)


# Level 2 deflate: when img2pdf has to re-encode pixels (alpha images, TIFF,
# BMP, WebP) Pillow's default level 6 spent ~1 s on a 2 MP RGBA image; level 2
# took 0.2 s and, with the default filter heuristics, produced no larger data
# on photo-like content (measured by scripts/bench.py). PDF readers inflate
# either the same way.
PNG_COMPRESS_LEVEL = 2


def _to_png_data_fast(img: Image.Image) -> tuple[bytes, bytes, int]:
    """img2pdf.to_png_data with a cheaper deflate level; same outputs."""
    buf = io.BytesIO()
    img.save(buf, format="png", compress_level=PNG_COMPRESS_LEVEL)
    raw = buf.getvalue()
    idat, palette = _parse_png_linear(raw)
    depth = raw[24]
    if depth not in (1, 2, 4, 8, 16):
        raise ValueError(f"invalid bit depth: {depth}")
    return idat, palette, depth


def _jp2_parse_res(data: bytes) -> tuple[float | None, float | None]:
    """img2pdf.jp2.parse_res, advancing past boxes other than `resc`.

    img2pdf 0.6.3 only moves on when the first box is `resc`: a valid file whose
    `res ` box starts with a display resolution (`resd`) looped forever.
    """
    pos = 0
    while pos + 8 <= len(data):
        length, kind, end, contents = img2pdf.jp2.getBox(data, pos, len(data))
        if kind == b"resc":
            return img2pdf.jp2.parse_resc(contents)
        if length == 0 or end <= pos:
            break
        pos = end
    return None, None


img2pdf.parse_png = _parse_png_linear
img2pdf.to_png_data = _to_png_data_fast
img2pdf.jp2.parse_res = staticmethod(_jp2_parse_res)


def _layout(width_px: int, height_px: int, ndpi: tuple[float, float]):
    """img2pdf's default (page = image at its dpi), kept inside the PDF page limits.

    Pages under 3 pt (a 1x1 image at 96 dpi is 0.75 pt) are scaled up keeping the
    aspect ratio; extreme strips that cannot keep it get a 3 pt page around them.
    """
    return _layout_at(width_px, height_px, ndpi)


def _layout_at(width_px: int, height_px: int, ndpi: tuple[float, float]):
    dpi_x = ndpi[0] if ndpi[0] and ndpi[0] > 0 else img2pdf.default_dpi
    dpi_y = ndpi[1] if ndpi[1] and ndpi[1] > 0 else img2pdf.default_dpi
    w, h = img2pdf.px_to_pt(width_px, dpi_x), img2pdf.px_to_pt(height_px, dpi_y)
    if min(w, h) < _MIN_PAGE_PT:
        scale = _MIN_PAGE_PT / min(w, h)
        w, h = w * scale, h * scale
    if max(w, h) > _MAX_PAGE_PT:
        # img2pdf divides both sides by a power of ten (/UserUnit): the short side
        # must survive that, else shrink to fit without a UserUnit.
        userunit = img2pdf.find_scale(w, h)
        if min(w, h) / userunit < _MIN_PAGE_PT:
            scale = (_MAX_PAGE_PT - 1) / max(w, h)
            w, h = w * scale, h * scale
    return max(w, _MIN_PAGE_PT), max(h, _MIN_PAGE_PT), w, h


def _img2pdf(data: bytes, rotation: int, dpi: tuple[float, float] | None = None) -> bytes:
    """img2pdf with our layout; `dpi` (the source's) overrides what img2pdf reads
    from `data` where that differs: normalised copies and Pillow-transposed TIFFs."""

    def layout(width_px: int, height_px: int, ndpi: tuple[float, float]):
        return _layout_at(width_px, height_px, dpi or ndpi)

    # A BytesIO, not bytes: img2pdf tries a bytes argument as a file name first.
    # Its read() hands back `data` itself, so this costs no copy.
    return img2pdf.convert(
        io.BytesIO(data),
        rotation=img2pdf.Rotation[str(rotation)],
        first_frame_only=True,
        layout_fun=layout,
        nodate=True,
        producer=PRODUCER,
        creator=PRODUCER,
    )


_IMG2PDF_FORMAT = {
    "jpeg": img2pdf.ImageFormat.JPEG,
    "png": img2pdf.ImageFormat.PNG,
    "gif": img2pdf.ImageFormat.GIF,
    "tiff": img2pdf.ImageFormat.TIFF,
    "bmp": img2pdf.ImageFormat.other,
    "webp": img2pdf.ImageFormat.other,
    "jp2": img2pdf.ImageFormat.JPEG2000,
}


def _jp2_dpi(data: bytes) -> tuple[float, float]:
    try:
        if data[:4] == b"\xff\x4f\xff\x51":
            return (img2pdf.default_dpi, img2pdf.default_dpi)
        *_, hdpi, vdpi, _channels, _bpp = img2pdf.jp2(data).parsejp2()
    except Exception:
        return (img2pdf.default_dpi, img2pdf.default_dpi)
    return (hdpi or img2pdf.default_dpi, vdpi or img2pdf.default_dpi)
