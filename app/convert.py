"""Image bytes -> one-page PDF, by one of two engines.

img2pdf embeds JPEG/JPEG 2000 byte for byte and copies the IDAT of plain PNGs,
so the common cases never decode a pixel. A plain JPEG does not even reach
img2pdf: `passthrough_jpeg` writes the same PDF from a bounded walk of its
segment headers, in the web worker itself (app.pipeline), without a fork. Every
other image that libvips can read (PNG with alpha, 16-bit, interlaced or palette
+ tRNS; TIFF; GIF; WebP; mirrored orientations) takes the "stream" route
(app.pdfstream): decoded in strips, written as PNG-predictor deflate streams
with alpha as /SMask, oriented by the page's matrix; memory O(strip). Pillow
remains for what neither handles (BMP, 16-bit JPEG 2000, mirrored JPEGs) and for
what img2pdf cannot see (a truncated JPEG or PNG embeds silently).
Pillow-normalised images with alpha are flattened onto white, never onto black.

Everything but `passthrough_jpeg` runs inside a conversion's child process
(app.sandbox): the file's structure is capped byte by byte (app.structure)
before any parser sees it, and the child's address space is limited by the
kernel to the estimate below.

Memory: `estimate_peak_bytes` feeds admission control and is the child's
RLIMIT_AS. Its coefficients come from `scripts/measure_convert_memory.py`: peak
RSS growth (VmHWM reset via /proc/self/clear_refs) and address-space growth
(VmPeak) of a fresh process per sample, noisy "photos" at 2 and 12 MP (30 MP for
the streamed PNG). Measured with img2pdf 0.6.3, Pillow 13.0, libvips 8.18,
Python 3.11, x86_64; the child's copy of the source comes on top:

    sample                        route            peak growth
    JPEG, baseline/progressive    embed-jpeg       2.0-2.8 B/px
    PNG RGB                       embed-png        3.0-3.9 x source bytes
    PNG RGBA / LA / palette+tRNS  stream           10 MB at 2 MP, 21 at 12, 23 at 30
    PNG 16-bit RGBA, TIFF         stream           <= 21 MB at 12 MP
    GIF                           stream           5.7 B/px (libvips holds the frame)
    WebP                          stream           9 B/px resident, 27 B/px address space
    JPEG, EXIF mirrored           pillow-jpeg       8.0 B/px
    BMP RGB                       img2pdf-decode    8.9 B/px
    JPEG 2000 16-bit grey         pillow            9.8 B/px (10.8 address space)
    progressive CMYK JPEG, cut    embed-jpeg        8.0 B/px (the truncation check's
                                                    decode keeps every coefficient)

`_COST` is the worst sample per route plus ~25%; the route is predicted from the
header by `inspect_image`, and when it is unknown the dearest route is assumed.
A progressive JPEG that will be decoded adds its coefficients (`decoder_bytes`).
WebP gets its own per-pixel floor: its decoder dominates every route.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import img2pdf
from isal import isal_zlib
from PIL import Image

from app import pdfstream, structure
from app.errors import ApiError, ImageTooLarge, InvalidImage, UnsupportedImage
from app.sniff import SNIFF_BYTES, sniff_image_type

log = logging.getLogger(__name__)
# img2pdf warns on every alpha image and tiny page; those are expected paths here.
logging.getLogger("img2pdf").setLevel(logging.ERROR)

PRODUCER = "img2pdf-service"

_PIL_FORMATS = {
    "jpeg": ["JPEG", "MPO"],
    "png": ["PNG"],
    "gif": ["GIF"],
    "tiff": ["TIFF"],
    "bmp": ["BMP"],
    "webp": ["WEBP"],
    "jp2": ["JPEG2000"],
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_ORIENTATION_TAG = 0x0112
_ROTATION = {1: 0, 3: 180, 6: 90, 8: 270}
# Mirrored orientations img2pdf refuses, and the Pillow transpose that undoes each
# (the same table ImageOps.exif_transpose uses).
_MIRRORED = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    7: Image.Transpose.TRANSVERSE,
}
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

# route -> (bytes per pixel, bytes per source byte): worst measured + ~25%.
_COST: dict[str, tuple[float, float]] = {
    "embed-jpeg": (1.0, 6.0),
    "embed-png": (0.5, 5.0),
    "embed-jp2": (0.5, 5.0),
    "img2pdf-alpha": (23.0, 1.0),
    "img2pdf-decode": (16.0, 1.0),
    "pillow": (13.5, 1.0),
    "pillow-flatten": (10.5, 1.0),
    "pillow-jpeg": (10.5, 1.0),
    # app.pdfstream: libvips decodes strips; see _STREAM_* below for per-kind floors.
    "stream": (1.5, 1.25),
}
# The streaming route holds a strip, not the image, except where libvips' loader
# keeps a whole frame: interlaced PNG (all of it), GIF (an RGBA frame), WebP (the
# decoded frame). Bytes per pixel per kind, worst measured + ~25%.
_STREAM_PER_PIXEL = {"gif": 7.0, "webp": 32.0}
_STREAM_INTERLACED_PER_PIXEL = 10.5
# pdfstream.adam7_strips (8-bit interlaced PNG, no palette; libvips reads only
# the header) holds 7 inflaters and bands of at least 8 full rows a few times
# over: measured 5.3 MB at 40 MP 4:3 (0.09 B/px slope). (B/px, B/source byte), and
# bytes per pixel of width for the bands.
_ADAM7_COST = (0.25, 1.25)  # the child reads its own copy of the source
# A GIF as /Indexed: Pillow's decoded "P" frame (1 B/px) and one strip.
_INDEXED_GIF_COST = (1.25, 1.25)
_ADAM7_PER_COLUMN = 400  # measured 320 at 200,000 px wide (RGBA)
_STREAM_FIXED = 8 * 1024 * 1024  # libvips, the loader's buffers, numpy strips
_WEBP_PER_PIXEL = 32.0
_FIXED_OVERHEAD = 8 * 1024 * 1024  # pikepdf/img2pdf bookkeeping, buffers


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


# Flattening onto white needs ~10.5 B/px where img2pdf's soft-mask path needs ~23:
# the page looks the same (PDF pages are white), only the PDF's own transparency
# is lost. Used when the soft-mask path would not fit the memory budget.
LOW_MEMORY_ALPHA_ROUTE = "pillow-flatten"


def low_memory_variant(info: ImageInfo) -> ImageInfo | None:
    """A cheaper way to convert `info`, or None when there is none."""
    if info.route == "img2pdf-alpha":
        return replace(info, route=LOW_MEMORY_ALPHA_ROUTE)
    return None


@dataclass(frozen=True)
class ImageInfo:
    kind: str  # jpeg/png/gif/tiff/bmp/webp/jp2 (app.sniff names)
    width: int
    height: int
    mode: str  # Pillow mode from the header, e.g. "RGB", "RGBA", "I;16", "P", "L"
    frames: int
    # Conversion route predicted from the header (keys of _COST); "" = unknown,
    # so estimate_peak_bytes assumes the worst route for the kind.
    route: str = field(default="", compare=False)
    # Memory a decoder needs beyond the route's per-pixel cost: libjpeg keeps
    # every DCT coefficient (2 bytes each) of a progressive JPEG it decodes.
    decoder_bytes: int = field(default=0, compare=False)
    # An interlaced PNG: libvips decodes all of it before the first strip.
    interlaced: bool = field(default=False, compare=False)
    # ...unless pdfstream's Adam7 decoder takes it: bands of >= 8 full rows.
    adam7: bool = field(default=False, compare=False)
    # A GIF written as an /Indexed image from Pillow's 1 B/px frame.
    indexed: bool = field(default=False, compare=False)

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass(frozen=True)
class _Facts:
    """What the header says about how to convert: read without decoding pixels."""

    orientation: int = 1
    png_depth: int = 8
    png_color_type: int = 2
    png_interlaced: bool = False
    tiff_depth: int = 8
    jp2_depth: int = 8
    transparency: bool = False


def _open(data: bytes, kind: str) -> Image.Image:
    """Open the header with Pillow restricted to the sniffed format."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(io.BytesIO(data), formats=_PIL_FORMATS[kind])
        except Image.DecompressionBombError:
            raise ImageTooLarge() from None


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Identify the image and check its size from the header alone (no decoding)."""
    kind = sniff_image_type(data[:SNIFF_BYTES])
    if kind is None:
        raise UnsupportedImage()
    shape = _scan(data, kind)  # before any parser: ImageTooComplex
    try:
        with counted_warnings(), _open(data, kind) as im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise InvalidImage()
            if width * height > max_pixels:
                raise ImageTooLarge()
            facts = _facts(im, data, kind, shape)
            route = _stream_or(_route(kind, im.mode, facts), data, kind, facts, shape)
            decoder = 0
            decodes = route == "pillow-jpeg" or not _ends_with_eoi(data)
            if kind == "jpeg" and shape.progressive and decodes:
                decoder = _jpeg_coefficient_bytes(width, height, shape.components)
            interlaced = kind == "png" and facts.png_interlaced
            adam7 = interlaced and route == "stream" and _adam7_png(im, facts)
            indexed = route == "stream" and _indexed_gif(kind, im)
            return ImageInfo(
                kind,
                width,
                height,
                im.mode,
                shape.frames,
                route,
                decoder,
                interlaced,
                adam7,
                indexed,
            )
    except ApiError:
        raise
    except Exception:
        log.info("image header unreadable", exc_info=True)
        raise InvalidImage() from None


# The last scan, with the very object it was made from (held, so its id cannot
# be reused): a conversion process inspects and then converts the same bytes,
# and the walk over a 12 MP JPEG costs ~4-8 ms.
_last_scan: tuple[bytes, str, structure.Structure] | None = None


def _scan(data: bytes, kind: str) -> structure.Structure:
    global _last_scan
    if _last_scan is not None and _last_scan[0] is data and _last_scan[1] == kind:
        return _last_scan[2]
    shape = structure.scan(data, kind)
    _last_scan = (data, kind, shape)
    return shape


def _jpeg_coefficient_bytes(width: int, height: int, components: int) -> int:
    """All DCT coefficients of a progressive JPEG: 64 x 2 bytes per 8x8 block and
    component, for blocks up to the largest MCU (16x16) at full resolution."""
    return (-(-width // 16) * 16) * (-(-height // 16) * 16) * max(components, 1) * 2


# Decoder warnings (Pillow warns per corrupt Exif tag: one file printed 32,397
# lines) are counted here and reported as one number by the caller.
_warning_count = 0


def take_warning_count() -> int:
    """Warnings counted since the last call."""
    global _warning_count
    count, _warning_count = _warning_count, 0
    return count


@contextlib.contextmanager
def counted_warnings() -> Iterator[None]:
    global _warning_count
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        finally:
            _warning_count += len(caught)
            caught.clear()


def estimate_peak_bytes(info: ImageInfo, source_len: int) -> int:
    """Upper bound on the extra memory convert_to_pdf needs for this image.

    An ImageInfo without a known route (not made by inspect_image) gets the
    dearest route, since any kind can end up on any of them.
    """
    routes = [info.route] if info.route in _COST else list(_COST)
    pixels = max(info.width, 0) * max(info.height, 0)
    source_len = max(source_len, 0)
    decoder = max(info.decoder_bytes, 0)
    if info.kind == "jpeg" and info.route not in _COST:
        decoder = max(decoder, _jpeg_coefficient_bytes(info.width, info.height, 4))
    worst = 0.0
    for route in routes:
        per_pixel, per_source_byte = _COST[route]
        if route == "stream":
            per_pixel = max(per_pixel, _STREAM_PER_PIXEL.get(info.kind, 0.0))
            if info.kind == "png" and info.interlaced and not info.adam7:
                per_pixel = max(per_pixel, _STREAM_INTERLACED_PER_PIXEL)
        elif info.kind == "webp":
            per_pixel = max(per_pixel, _WEBP_PER_PIXEL)
        fixed = _STREAM_FIXED if route == "stream" else 0
        if route == "stream" and info.adam7:
            per_pixel, per_source_byte = _ADAM7_COST
        if route == "stream" and info.indexed:
            per_pixel, per_source_byte = _INDEXED_GIF_COST
            fixed += _ADAM7_PER_COLUMN * max(info.width, 0)
        worst = max(worst, per_pixel * pixels + per_source_byte * source_len + fixed)
    return int(worst) + decoder + _FIXED_OVERHEAD


def convert_to_pdf(data: bytes, info: ImageInfo) -> bytes:
    """Convert the first frame of `data` into a one-page PDF sized to the image."""
    fd = os.memfd_create("img2pdf-pdf", os.MFD_CLOEXEC)
    try:
        size = convert_to_fd(data, info, fd)
        return os.pread(fd, size, 0) if size else b""
    finally:
        os.close(fd)


def convert_to_fd(data: bytes, info: ImageInfo, fd: int) -> int:
    """Write the one-page PDF of `data`'s first frame to `fd` (at its start); its size."""
    try:
        with counted_warnings():
            return _convert(data, info, fd)
    except ApiError:
        raise
    except MemoryError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge() from None
    except img2pdf.ImageOpenError:
        raise UnsupportedImage() from None
    except OSError as exc:
        if "not available" in str(exc):  # Pillow: "decoder X not available"
            raise UnsupportedImage() from None
        log.info("image undecodable", exc_info=True)
        raise InvalidImage() from None
    except Exception:
        # Pillow, img2pdf and libvips report corrupt input with many exception types.
        log.info("image undecodable", exc_info=True)
        raise InvalidImage() from None


def _write_bytes(fd: int, pdf: bytes) -> int:
    view = memoryview(pdf)
    while view:
        n = os.write(fd, view)
        view = view[n:]
    return len(pdf)


def _convert(data: bytes, info: ImageInfo, fd: int) -> int:
    kind = info.kind if info.kind in _PIL_FORMATS else sniff_image_type(data[:SNIFF_BYTES])
    if kind is None:
        raise UnsupportedImage()
    if kind == "jpeg":
        size = passthrough_jpeg(data, sys.maxsize, fd)
        if size is not None:
            return size
    shape = _scan(data, kind)
    with _open(data, kind) as im:
        facts = _facts(im, data, kind, shape)
        route = _route(kind, im.mode, facts)
        if info.route == "stream" or (info.route not in _COST and route != "embed-png"):
            route = _stream_or(route, data, kind, facts, shape)
        dpi = _tiff_dpi(im, facts) if kind == "tiff" else None
        if route == "stream":
            orientation = facts.orientation
            if kind == "tiff":
                orientation = _valid_orientation(im.tag_v2.get(_ORIENTATION_TAG, 1))
            raw_dpi = img2pdf.pil_get_dpi(im, _IMG2PDF_FORMAT[kind], img2pdf.default_dpi)
        if route == "img2pdf-alpha" and info.route == LOW_MEMORY_ALPHA_ROUTE:
            route = LOW_MEMORY_ALPHA_ROUTE  # the caller chose the cheaper flattening
        if kind == "jpeg" and not _ends_with_eoi(data):
            _check_jpeg(im)
        plain_png = split = None
        if kind == "png" and route == "embed-png":
            plain_png = _plain_png(im, data, facts)
        if kind == "png" and route == "stream":
            split = _split_png(im, data, facts)
        if route == "stream" and _indexed_gif(kind, im):
            return _stream_indexed(im, raw_dpi, fd)
    if route == "stream":
        return _stream(data, kind, orientation, raw_dpi, fd, split)
    if kind == "png" and route == "embed-png":
        # Only the copying route needs this; decoding routes fail on truncation.
        _check_png(data, facts)
        if plain_png is not None:
            return _write_png_pdf(data, plain_png, facts, fd)

    if not route.startswith("pillow"):
        try:
            return _write_bytes(fd, _img2pdf(data, _ROTATION.get(facts.orientation, 0), dpi))
        except _IMG2PDF_REFUSALS as exc:
            log.info("img2pdf refused (%s); normalising with Pillow", type(exc).__name__)
    normalised, rotation, dpi = _normalise(data, kind, facts)
    return _write_bytes(fd, _img2pdf(normalised, rotation, dpi))


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
    return pdfstream.write_embedded_pdf(
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
    would write for a plain JPEG (see `structure.jpeg_header`), written to `fd`;
    its size, or None when the file is not plain (the sandboxed path converts it).

    Nothing here decodes: a bounded walk of the segments before the first scan
    and of the Exif IFD0, then the bytes copied verbatim (docs/decisions.md).
    A file that does not end with EOI may be truncated and needs the decoder's
    check, so it is not plain.
    """
    if sniff_image_type(data[:SNIFF_BYTES]) != "jpeg" or not _ends_with_eoi(data):
        return None
    head = structure.jpeg_header(data)
    if head is None or head.orientation in _MIRRORED:
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
    layout = _page(head.width, head.height, ndpi, head.orientation)
    return pdfstream.write_jpeg_pdf(data, head.width, head.height, colour, layout, fd)


def _stream_or(
    route: str, data: bytes, kind: str, facts: _Facts, shape: structure.Structure
) -> str:
    """The "stream" route when app.pdfstream can decode this image, else `route`.

    Plain 8-bit PNGs keep img2pdf's IDAT copy; JPEG, JPEG 2000 and BMP stay on
    their routes (libvips here has no JPEG 2000 or BMP loader). A TIFF whose IFD
    chain reaches the count cap stays with Pillow, which reads only the first:
    libtiff under libvips walks every IFD to count pages (180k took > 15 s).
    """
    if route == "embed-png" and facts.png_depth <= 8:
        return route
    if kind == "tiff" and shape.frames >= structure.FRAMES_COUNTED:
        return route
    if route.startswith("embed-") and kind != "png":
        return route
    try:
        image = pdfstream.open_image(data, kind)
    except Exception:  # libvips refuses the header: the old route reports it
        return route
    if image is None or pdfstream.header(image) is None:
        return route
    return "stream"


def _indexed_gif(kind: str, im: Image.Image) -> bool:
    """A GIF whose first frame is one palette image covering the whole screen:
    Pillow decodes it at 1 B/px and the PDF takes its indices as they are
    (libvips would hold it as an RGB or RGBA frame, 3-4 B/px)."""
    if kind != "gif" or im.mode != "P" or len(im.tile) != 1:
        return False
    transparency = im.info.get("transparency")
    if transparency is not None and not isinstance(transparency, int):
        return False
    return tuple(im.tile[0].extents) == (0, 0, *im.size)


def _stream_indexed(im: Image.Image, dpi, fd: int) -> int:
    """The stream route for `_indexed_gif`: an /Indexed image, its transparent index
    (GIF transparency is all or nothing) a /Mask colour key."""
    try:
        im.load()
    except (OSError, EOFError, SyntaxError, ValueError):
        raise InvalidImage() from None
    palette = bytes(im.getpalette("RGB") or b"")[: 256 * 3]
    palette = palette.ljust(256 * 3, b"\0")  # indices past a short palette: black
    key = im.info.get("transparency")
    head = pdfstream.Header(im.width, im.height, 1, False, 8, None, palette, key)
    return _write_streamed(None, head, 1, dpi, fd, pdfstream.indexed_strips(im))


def _png_palette(data: bytes) -> tuple[bytes, bytes | None]:
    """PLTE padded to 256 entries (indices past it: black), and the alpha of each
    of the 256 indices when there is a tRNS chunk (entries past it: opaque)."""
    palette = opacity = None
    for ctype, start, end in _png_chunks(data):
        if ctype == b"PLTE" and palette is None:
            palette = data[start : start + min(end - start, 768) // 3 * 3]
        elif ctype == b"tRNS" and opacity is None:
            opacity = data[start : min(end, start + 256)].ljust(256, b"\xff")
        elif ctype in {b"IDAT", b"IEND"}:
            break
    if not palette:
        raise InvalidImage()
    return palette.ljust(768, b"\0"), opacity


def _stream(data: bytes, kind: str, orientation: int, dpi, fd: int, split=None) -> int:
    """The stream route; `split` = (width, height, colours) of a PNG whose filtered
    data is split without decoding (`pdfstream.png_filtered_strips`), else libvips."""
    strips = None
    if split is not None:
        width, height, colours, alpha, interlaced = split
        image = None
        head = pdfstream.Header(width, height, colours, alpha, 8, None)
        view = memoryview(data)
        idat = (view[a:b] for kind_, a, b in _png_chunks(data) if kind_ == b"IDAT")
        if interlaced == "palette":
            palette, opacity = _png_palette(data)
            alpha = opacity is not None
            head = pdfstream.Header(width, height, 1, alpha, 8, None, palette)
            strips = pdfstream.adam7_strips(idat, width, height, 1, alpha, opacity)
        elif interlaced:
            strips = pdfstream.adam7_strips(idat, width, height, colours, alpha)
        else:
            strips = pdfstream.png_filtered_strips(idat, width, height, colours)
    else:
        image = pdfstream.open_image(data, kind)
        head = pdfstream.header(image) if image is not None else None
    if head is None:
        raise UnsupportedImage()
    return _write_streamed(image, head, orientation, dpi, fd, strips)


def _write_streamed(image, head, orientation: int, dpi, fd: int, strips) -> int:
    dpi_x, dpi_y = float(dpi[0]), float(dpi[1])
    shown_w, shown_h = head.width, head.height
    if orientation >= 5:
        shown_w, shown_h, dpi_x, dpi_y = shown_h, shown_w, dpi_y, dpi_x
    page_w, page_h, img_w, img_h = _layout_at(shown_w, shown_h, (dpi_x, dpi_y))
    unit = 1.0
    if max(page_w, page_h) > _MAX_PAGE_PT:
        unit = float(img2pdf.find_scale(page_w, page_h))
    layout = (page_w / unit, page_h / unit, img_w / unit, img_h / unit, unit)
    return pdfstream.write_pdf(image, head, orientation, layout, fd, strips)


# PNG colour types whose 8-bit filtered data splits into colour + alpha: grey+alpha, RGBA.
_SPLIT_PNG_COLOURS = {4: 1, 6: 3}
# 8-bit colour types the Adam7 decoder takes -> (colours, alpha): grey and RGB
# without tRNS; a palette (3) is written as /Indexed, its tRNS as a soft mask.
_ADAM7_PNG = {0: (1, False), 2: (3, False), 3: (1, False), 4: (1, True), 6: (3, True)}


def _adam7_png(im: Image.Image, facts: _Facts) -> bool:
    """An interlaced 8-bit grey/RGB (no tRNS), palette, grey+alpha or RGBA PNG without
    an ICC profile: `pdfstream.adam7_strips` decodes it in bands; libvips takes the
    others."""
    if not facts.png_interlaced or facts.png_depth != 8:
        return False
    if facts.png_color_type not in _ADAM7_PNG or "icc_profile" in im.info:
        return False
    return not (facts.transparency and facts.png_color_type in {0, 2})


def _split_png(
    im: Image.Image, data: bytes, facts: _Facts
) -> tuple[int, int, int, bool, str] | None:
    """(width, height, colours, alpha, how) when the PNG's data is read here rather
    than by libvips: an 8-bit grey+alpha or RGBA PNG, not interlaced, whose
    filtered data is split undecoded (how ""); or an interlaced one `_adam7_png`
    takes ("adam7", or "palette" for an /Indexed image).
    Never with an ICC profile (libvips handles those)."""
    width, height = struct.unpack_from(">II", data, 16)
    if _adam7_png(im, facts):
        colours, alpha = _ADAM7_PNG[facts.png_color_type]
        return width, height, colours, alpha, "palette" if facts.png_color_type == 3 else "adam7"
    if facts.png_depth != 8 or facts.png_interlaced:
        return None
    if facts.png_color_type not in _SPLIT_PNG_COLOURS or "icc_profile" in im.info:
        return None
    return width, height, _SPLIT_PNG_COLOURS[facts.png_color_type], True, ""


def _facts(im: Image.Image, data: bytes, kind: str, shape: structure.Structure) -> _Facts:
    """Orientation and bit depths, from tags/chunks only (no getexif() on PNG: it decodes).

    TIFF orientation is 1 here: Pillow itself transposes a TIFF by its tag on load.
    """
    if kind == "png":
        exif = _png_exif(data)
        orientation = 1
        if exif:
            parsed = Image.Exif()
            parsed.load(exif)
            orientation = parsed.get(_ORIENTATION_TAG, 1)
        return _Facts(
            orientation=_valid_orientation(orientation),
            png_depth=data[24],
            png_color_type=data[25],
            png_interlaced=data[28] != 0,
            transparency="transparency" in im.info,
        )
    orientation = 1
    if kind in {"jpeg", "webp"}:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    tiff_depth = 8
    if kind == "tiff":
        bits = im.tag_v2.get(258, 1)  # BitsPerSample: one value per channel
        tiff_depth = max(bits) if isinstance(bits, tuple) and bits else int(bits or 1)
    return _Facts(
        orientation=_valid_orientation(orientation),
        tiff_depth=tiff_depth,
        jp2_depth=shape.depth if kind == "jp2" else 8,
        transparency="transparency" in im.info,
    )


def _tiff_dpi(im: Image.Image, facts: _Facts) -> tuple[float, float]:
    """A TIFF's dpi as img2pdf reads it, for the pixels as Pillow hands them over.

    Pillow reports (1, 1) when the file has no resolution tags (img2pdf then
    falls back to the tags, else its default), and its load transposes the
    pixels by the orientation tag but not the dpi: swap them for 5-8.
    """
    dpi = img2pdf.pil_get_dpi(im, img2pdf.ImageFormat.TIFF, img2pdf.default_dpi)
    if im.tag_v2.get(_ORIENTATION_TAG) in {5, 6, 7, 8}:
        dpi = (dpi[1], dpi[0])
    return float(dpi[0]), float(dpi[1])


def _valid_orientation(value: object) -> int:
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _route(kind: str, mode: str, facts: _Facts) -> str:
    alpha = mode in _ALPHA_MODES or facts.transparency
    if mode in {"P", "PA"} and alpha:
        # img2pdf 0.6.3 writes the soft mask of a palette image with the palette's
        # bit depth (2 bits for a 4-colour GIF) but 8-bit data: opaque areas vanish.
        return "pillow-flatten"
    if facts.orientation in _MIRRORED:
        if kind == "jpeg":
            return "pillow-jpeg"
        return "pillow-flatten" if alpha else "pillow"
    if kind == "jpeg":
        return "embed-jpeg"
    if kind == "jp2":
        # img2pdf embeds 8-bit JPEG 2000 only; deeper files are decoded (openjpeg
        # keeps 4 bytes per sample) and re-encoded.
        return "embed-jp2" if facts.jp2_depth <= 8 else ("pillow-flatten" if alpha else "pillow")
    if kind == "png":
        if alpha and facts.png_depth > 8:
            return "pillow-flatten"
        if alpha:
            return "img2pdf-alpha"
        return "img2pdf-decode" if facts.png_interlaced else "embed-png"
    if kind == "tiff" and facts.tiff_depth > 8:
        return "pillow-flatten" if alpha else "pillow"
    if kind in {"webp", "bmp"} and alpha:
        return "pillow-flatten"
    return "img2pdf-alpha" if alpha else "img2pdf-decode"


def _ends_with_eoi(data: bytes) -> bool:
    """A JPEG whose last marker is EOI (FF D9) was not cut short.

    Byte stuffing keeps FF D9 out of entropy-coded data, so a download cut at a
    random point practically never ends on it. This skips the decode for the
    common case: the check cost 55 of 75 ms on a 12 MP JPEG.
    """
    return data[-64:].rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _check_jpeg(im: Image.Image) -> None:
    """img2pdf embeds truncated JPEGs silently; a 1/8-scale decode finds them cheaply."""
    im.draft(im.mode, (1, 1))
    im.load()


def _png_chunks(data: bytes):
    """Yield (type, start, end) of each chunk's payload; InvalidImage if cut short."""
    pos = 8
    size = len(data)
    while pos + 8 <= size:
        length, ctype = struct.unpack_from(">I4s", data, pos)
        start, end = pos + 8, pos + 8 + length
        if end + 4 > size:
            raise InvalidImage()
        yield ctype, start, end
        if ctype == b"IEND":
            return
        pos = end + 4
    raise InvalidImage()


def _png_exif(data: bytes) -> bytes | None:
    try:
        for ctype, start, end in _png_chunks(data):
            if ctype == b"eXIf":
                return data[start:end]
    except InvalidImage:
        return None  # convert_to_pdf reports truncation; inspection only wants orientation
    return None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def _png_raw_size(width: int, height: int, facts: _Facts) -> int:
    bits = facts.png_depth * _PNG_CHANNELS.get(facts.png_color_type, 4)
    passes = _ADAM7 if facts.png_interlaced else ((0, 0, 1, 1),)
    total = 0
    for x0, y0, dx, dy in passes:
        w, h = math.ceil((width - x0) / dx), math.ceil((height - y0) / dy)
        if w > 0 and h > 0:
            total += h * (1 + (w * bits + 7) // 8)
    return total


_PNG_FILTERS = bytes(range(5))


def _check_png(data: bytes, facts: _Facts) -> None:
    """img2pdf copies IDAT without looking: inflate it (streaming, bounded memory) to
    make sure the chunks are complete and hold exactly the rows the header promises.

    Inflating stops at the expected size + 1 byte: a stream that would give more
    (a 20 MB IDAT of 20 GiB of zeros took 344 s here, and was then stored) is
    refused, as is any data after the stream's end. The stored PDF never carries
    more than its pixels need.
    """
    width, height = struct.unpack_from(">II", data, 16)
    expected = _png_raw_size(width, height, facts)
    # Each row starts with its filter type (0-4): readers refuse others, so a PDF
    # carrying one would hold an image nobody decodes. Checked for plain rows only.
    row = 0 if facts.png_interlaced else _png_raw_size(width, 1, facts)
    inflater = isal_zlib.decompressobj()  # ISA-L: ~3x zlib's speed (docs/performance.md)
    produced = 0
    view = memoryview(data)
    try:
        for ctype, start, end in _png_chunks(data):
            if ctype != b"IDAT" or start == end:
                continue
            if inflater.eof:
                raise InvalidImage()  # compressed data after the end of the stream
            pending = view[start:end]
            while pending and not inflater.eof:
                room = min(expected + 1 - produced, 1 << 20)
                rows = inflater.decompress(pending, room)
                if row and rows[(-produced) % row :: row].translate(None, _PNG_FILTERS):
                    raise InvalidImage()
                produced += len(rows)
                if produced > expected:
                    raise InvalidImage()
                pending = inflater.unconsumed_tail
            if inflater.unused_data:
                raise InvalidImage()
    except (zlib.error, isal_zlib.error):
        raise InvalidImage() from None
    finally:
        view.release()
    if not inflater.eof or produced < expected:
        raise InvalidImage()


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


def _normalise(data: bytes, kind: str, facts: _Facts) -> tuple[bytes, int, tuple[float, float]]:
    """Re-encode frame 0 in a form img2pdf accepts.

    Returns (bytes, rotation left to do, dpi of the source for the pixels as
    returned): the page gets exactly the size img2pdf gives the source format.
    One decoded image is alive at a time where possible: each step closes the last.
    """
    im = _open(data, kind)
    try:
        if kind == "tiff":
            dpi = _tiff_dpi(im, facts)
        elif kind == "jp2":
            dpi = _jp2_dpi(data)
        else:
            dpi = img2pdf.pil_get_dpi(im, _IMG2PDF_FORMAT[kind], img2pdf.default_dpi)
        im.load()
        rotation = _ROTATION.get(facts.orientation, 0)
        transpose = _MIRRORED.get(facts.orientation)
        if transpose is not None:
            im = _replace(im, im.transpose(transpose))
            rotation = 0
        icc = im.info.get("icc_profile")
        if transpose in {Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE}:
            dpi = (dpi[1], dpi[0])
        dpi = (float(dpi[0]), float(dpi[1]))
        if kind == "jpeg" and im.mode in {"RGB", "L", "CMYK"}:
            # The source was lossy already; a PNG of a photo would be several times larger.
            return _encode(im, "JPEG", quality=95, icc_profile=icc, dpi=dpi), rotation, dpi
        if im.mode in _ALPHA_MODES or "transparency" in im.info:
            im = _replace(im, _flatten(im))
        elif im.mode.startswith("I;16"):
            if im.mode not in {"I;16", "I;16B"}:
                im = _replace(im, im.convert("I;16"))
            icc = None  # PNG stores 16-bit greyscale directly; embed copies it
        elif im.mode in {"I", "F"}:
            im = _replace(im, _to_l(im))
        elif im.mode not in {"RGB", "L", "1", "P"}:
            im = _replace(im, im.convert("RGB"))
        if icc and im.mode not in {"RGB", "L"}:
            icc = None
        return (
            _encode(im, "PNG", icc_profile=icc, dpi=dpi, compress_level=PNG_COMPRESS_LEVEL),
            rotation,
            dpi,
        )
    finally:
        im.close()


def _jp2_dpi(data: bytes) -> tuple[float, float]:
    try:
        if data[:4] == b"\xff\x4f\xff\x51":
            return (img2pdf.default_dpi, img2pdf.default_dpi)
        *_, hdpi, vdpi, _channels, _bpp = img2pdf.jp2(data).parsejp2()
    except Exception:
        return (img2pdf.default_dpi, img2pdf.default_dpi)
    return (hdpi or img2pdf.default_dpi, vdpi or img2pdf.default_dpi)


def _replace(old: Image.Image, new: Image.Image) -> Image.Image:
    old.close()
    return new


def _flatten(im: Image.Image) -> Image.Image:
    """Composite onto white: transparent areas must print as paper, not black."""
    if im.mode not in {"RGBA", "LA"}:
        im = im.convert("LA" if im.mode in {"La", "L"} else "RGBA")
    if im.mode == "LA":
        out = Image.new("L", im.size, 255)
        out.paste(im.getchannel("L"), mask=im.getchannel("A"))
    else:
        out = Image.new("RGB", im.size, (255, 255, 255))
        out.paste(im, mask=im)  # RGBA onto RGB pastes in place; the mask is its alpha
    return out


def _to_l(im: Image.Image) -> Image.Image:
    """32-bit int/float greyscale -> 8 bits, scaled by the actual range."""
    low, high = im.getextrema()
    span = (high - low) or 1
    return im.point(lambda v: (v - low) * 255.0 / span).convert("L")


def _encode(im: Image.Image, fmt: str, **params) -> bytes:
    params = {k: v for k, v in params.items() if v is not None}
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()
