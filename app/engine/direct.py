"""PDFs written straight from the source bytes, no decoder: plain JPEG and PNG.

`passthrough_jpeg` walks a JPEG's headers (app.engine.jpeg_header) and embeds
it as /DCTDecode, in the web worker; `embed_jpeg` does the same in the child
from Pillow's header for the JPEGs img2pdf cannot embed (EXIF-mirrored ones,
with an ICC profile or XMP). A mirrored JPEG is stored as it is and drawn
flipped/turned by the page's `cm` matrix. A plain 8-bit PNG's IDAT is copied
as a /FlateDecode stream with its PNG predictor.
"""

from __future__ import annotations

import struct

import img2pdf
from PIL import Image

from app.engine import structure
from app.engine.checks import _ends_with_eoi
from app.engine.facts import _MIRRORED, _ROTATION, _Facts, _png_chunks
from app.engine.img2pdf_route import (
    _IMG2PDF_FORMAT,
    _MAX_PAGE_PT,
    _MIN_PAGE_PT,
    _jp2_dpi,
    _layout_at,
)
from app.engine.jpeg_header import jpeg_header
from app.engine.pdfwriter import write_embedded_pdf, write_jpeg_pdf
from app.errors import ImageTooLarge, InvalidImage
from app.sniff import SNIFF_BYTES, sniff_image_type

# PNG colour types the plain-PNG writer takes at 8 bits: grey, RGB -> (colours, space).
_PLAIN_PNG_SPACES = {0: (1, b"/DeviceGray"), 2: (3, b"/DeviceRGB")}


def _plain_png(im: Image.Image, data: bytes, facts: _Facts) -> tuple[float, float] | None:
    """The dpi img2pdf would use for a plain PNG it copies, if the small writer can
    write the same PDF: 8-bit grey or RGB, no ICC profile, one pHYs at most.
    None: img2pdf writes it (palettes, other depths, ICC profiles)."""
    if facts.png_depth != 8 or facts.png_color_type not in _PLAIN_PNG_SPACES:
        return None
    if "icc_profile" in im.info or im.mode not in {"L", "RGB"}:
        return None
    if sum(kind == b"pHYs" for kind, _, _ in _png_chunks(data)) > 1:
        return None  # Pillow keeps the last one; not plain
    dpi = img2pdf.pil_get_dpi(im, img2pdf.ImageFormat.PNG, img2pdf.default_dpi)
    return float(dpi[0]), float(dpi[1])


def _write_png_pdf(data: bytes, dpi: tuple[float, float], facts: _Facts, fd: int) -> int:
    """img2pdf's PDF for a plain PNG whose IDAT `_check_png` has checked: the IDAT
    payloads copied as they are (/FlateDecode, PNG predictors), no join, no pikepdf."""
    width, height = struct.unpack_from(">II", data, 16)
    colours, space = _PLAIN_PNG_SPACES[facts.png_color_type]
    view = memoryview(data)
    parts = [view[start:end] for kind, start, end in _png_chunks(data) if kind == b"IDAT"]
    entries = (
        b"/ColorSpace %s /BitsPerComponent 8 /Filter /FlateDecode /DecodeParms"
        b" << /Predictor 15 /Colors %d /BitsPerComponent 8 /Columns %d >>" % (space, colours, width)
    )
    return write_embedded_pdf(
        parts, width, height, entries, _page(width, height, dpi, facts.orientation), fd
    )


def _page(width: int, height: int, ndpi, orientation: int):
    """(page w, page h, image w, image h, user unit, rotate) as img2pdf lays it out."""
    page_w, page_h, img_w, img_h = _layout_at(width, height, ndpi)
    unit = 1.0
    if min(page_w, page_h) >= _MIN_PAGE_PT and max(page_w, page_h) > _MAX_PAGE_PT:
        unit = float(img2pdf.find_scale(page_w, page_h))
    rotate = _ROTATION.get(orientation, 0)
    return (page_w / unit, page_h / unit, img_w / unit, img_h / unit, unit, rotate)


def passthrough_jpeg(data: bytes, max_pixels: int, fd: int) -> int | None:
    """The embed-jpeg route without Pillow, img2pdf or a fork: the PDF img2pdf
    would write for a plain JPEG (see `jpeg_header`), written to `fd`;
    its size, or None when the file is not plain (the sandboxed path converts it).

    Nothing here decodes: a bounded walk of the segments before the first scan
    and of the Exif IFD0, then the bytes copied verbatim (docs/decisions.md).
    A file that does not end with EOI may be truncated and needs the decoder's
    check, so it is not plain.
    """
    if sniff_image_type(data[:SNIFF_BYTES]) != "jpeg" or not _ends_with_eoi(data):
        return None
    head = jpeg_header(data)
    if head is None:
        return None
    structure.scan(data, "jpeg")  # the sandboxed path's caps: ImageTooComplex
    if head.width * head.height > max_pixels:
        raise ImageTooLarge()
    ndpi = (img2pdf.default_dpi, img2pdf.default_dpi)
    if head.dpi is not None:
        ndpi = (round(head.dpi[0]), round(head.dpi[1]))
        if ndpi == (0, 0):
            ndpi = (img2pdf.default_dpi, img2pdf.default_dpi)
    colour = {1: b"/DeviceGray", 3: b"/DeviceRGB", 4: b"/DeviceCMYK"}[head.components]
    if head.components == 4 and head.adobe:
        colour += b" /Decode [1 0 1 0 1 0 1 0]"
    layout, matrix = _shown_layout(head.width, head.height, ndpi, head.orientation)
    return write_jpeg_pdf(data, head.width, head.height, colour, layout, fd, matrix)


def _shown_layout(width: int, height: int, ndpi, orientation: int):
    """(layout, orientation for the `cm` matrix): img2pdf's /Rotate for 3, 6 and 8;
    for the mirrored 2, 4, 5 and 7 the page of the shown image (its axes' dpi:
    swapped for 5 and 7, as the Pillow route's transposed copy had them) and a
    matrix that flips/turns the stored image onto it."""
    if orientation not in _MIRRORED:
        return _page(width, height, ndpi, orientation), 1
    if orientation in (5, 7):
        width, height, ndpi = height, width, (ndpi[1], ndpi[0])
    return _page(width, height, ndpi, 1), orientation


# Pillow's JPEG modes -> (colour space, components) as img2pdf writes them.
_JPEG_SPACES = {"L": (b"/DeviceGray", 1), "RGB": (b"/DeviceRGB", 3), "CMYK": (b"/DeviceCMYK", 4)}


def embed_jpeg(data: bytes, im: Image.Image, orientation: int, fd: int) -> int | None:
    """A mirrored JPEG the worker-side walk did not take (ICC profile, XMP, MPO,
    ...), embedded verbatim from Pillow's header as img2pdf would embed it
    unmirrored: its colour space, /Decode for Adobe CMYK, its ICC profile and
    dpi; for an MPO, the bytes img2pdf embeds for its first page (`_embed_mpo`).
    None for a mode img2pdf refuses."""
    if im.mode not in _JPEG_SPACES:
        return None
    if im.format == "MPO":
        return _embed_mpo(data, orientation, fd)
    if im.format != "JPEG":
        return None
    # img2pdf's own reading of the header (colour, ICC profile kept or dropped,
    # dpi), with the orientation left to the matrix.
    colour, ndpi, width, height, _, icc = img2pdf.get_imgmetadata(
        im, _IMG2PDF_FORMAT["jpeg"], img2pdf.default_dpi, None, data, img2pdf.Rotation["0"]
    )
    return _embed(data, im.mode, colour, ndpi, width, height, icc, orientation, fd)


# img2pdf's colour spaces of a JPEG -> Pillow's mode of it.
_JPEG_MODES = {"L": "L", "RGB": "RGB", "CMYK": "CMYK", "CMYK;I": "CMYK"}


def _embed_mpo(data: bytes, orientation: int, fd: int) -> int | None:
    """A mirrored MPO: img2pdf's own reading (`read_images`, first page only, its
    orientation left to the matrix) gives the bytes it embeds for the first page,
    the whole file for one main image with its large thumbnails, else the first
    frame cut out by its MP entry, and that frame's header; they are embedded as
    they are. Nothing is decoded. None (Pillow's route) for an MPO img2pdf
    refuses or would not embed as a JPEG."""
    try:
        pages = img2pdf.read_images(data, None, first_frame_only=True, rot=img2pdf.Rotation["0"])
    except Exception:  # MP entries that do not add up, a frame that is no JPEG
        return None
    colour, ndpi, kind, part, _, width, height, _, _, _, _, icc = pages[0]
    mode = _JPEG_MODES.get(colour.name)
    if kind != img2pdf.ImageFormat.JPEG or mode is None:
        return None
    return _embed(part, mode, colour, ndpi, width, height, icc, orientation, fd)


def _embed(part, mode: str, colour, ndpi, width: int, height: int, icc, orientation: int, fd: int):
    space, components = _JPEG_SPACES[mode]
    entries = b"/ColorSpace %s /BitsPerComponent 8 /Filter /DCTDecode" % space
    profile = None
    if icc:
        entries = b"/ColorSpace [/ICCBased 7 0 R] /BitsPerComponent 8 /Filter /DCTDecode"
        profile = (components, space, icc)
    if colour == img2pdf.Colorspace["CMYK;I"]:
        entries += b" /Decode [1 0 1 0 1 0 1 0]"
    layout, matrix = _shown_layout(width, height, ndpi, orientation)
    return write_embedded_pdf([part], width, height, entries, layout, fd, matrix, profile)


def _codestream_depths(data: bytes) -> set[int]:
    """The bits per component of every component in the codestream's SIZ segment
    (of the jp2c box in a .jp2), a signed one as 0; empty if there is none."""
    start = 0
    if data[:4] != b"\xff\x4f\xff\x51":
        boxes = structure._boxes(data, 0, len(data))
        start = next((at for kind, at, _ in boxes if kind == b"jp2c"), -1)
    if start < 0 or data[start : start + 4] != b"\xff\x4f\xff\x51" or len(data) < start + 42:
        return set()
    (count,) = struct.unpack_from(">H", data, start + 40)
    sizes = data[start + 42 : start + 42 + 3 * count : 3]
    if len(sizes) != count:
        return set()
    return {0 if b & 0x80 else b + 1 for b in sizes}


# Pillow's modes of a deep (> 8-bit) JPEG 2000 without alpha -> (colour space, channels).
_JP2_SPACES = {
    "L": (b"/DeviceGray", 1),
    "I;16": (b"/DeviceGray", 1),
    "I;16B": (b"/DeviceGray", 1),
    "RGB": (b"/DeviceRGB", 3),
}


def embed_jp2(data: bytes, im: Image.Image, depth: int, fd: int) -> int | None:
    """A JPEG 2000 deeper than 8 bits embedded verbatim (/JPXDecode takes 1-38
    bits per component; img2pdf refuses the "I;16" mode Pillow reports), with
    the checks img2pdf's 8-bit embed makes: Pillow's header, and for a .jp2
    img2pdf's header parser (ihdr, an enumerated sRGB/grey colr box) agreeing
    with it. None (Pillow decodes it) for anything else: alpha, ICC profiles."""
    space = _JP2_SPACES.get(im.mode)
    if space is None:
        return None
    if _codestream_depths(data) != {depth}:
        # Decoders use the codestream's precision; a deeper ihdr/bpcc would be
        # the page's /BitsPerComponent (pdfium scales by it), and signed or mixed
        # components are not what /Device* takes.
        raise InvalidImage()
    width, height = im.size
    if data[:4] != b"\xff\x4f\xff\x51":  # a .jp2 box file, not a bare codestream
        try:
            w, h, ics, _, _, channels, bpp = img2pdf.jp2(data).parse()
        except Exception:  # a colr box with a profile, a missing box: Pillow's route
            return None
        if (w, h) != (width, height) or channels != space[1] or bpp > depth:
            return None
        if ics != ("L" if space[1] == 1 else "RGB"):
            return None
    entries = b"/ColorSpace %s /BitsPerComponent %d /Filter /JPXDecode" % (space[0], depth)
    layout = _page(width, height, _jp2_dpi(data), 1)
    return write_embedded_pdf([data], width, height, entries, layout, fd, version=5)
