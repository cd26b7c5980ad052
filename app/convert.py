"""Image bytes -> one-page PDF bytes, with img2pdf as the engine.

img2pdf embeds JPEG/JPEG 2000 byte for byte and copies the IDAT of plain PNGs,
so the common cases never decode a pixel. Pillow is used only where img2pdf
refuses (16-bit with alpha, 16-bit TIFF, WebP/BMP with alpha, mirrored EXIF
orientations) or cannot see a problem (a truncated JPEG or PNG embeds silently).
Normalised images with alpha are flattened onto white, the colour a page shows
behind img2pdf's own soft masks; a black background is never produced.

Memory (a 1 GB VM): `estimate_peak_bytes` feeds admission control. Its
coefficients come from `scripts/measure_convert_memory.py`: peak RSS growth of a
fresh process per sample (VmHWM after resetting it via /proc/self/clear_refs;
like ru_maxrss it sees the C allocations tracemalloc misses, without inheriting
the parent's peak), 2 MP and 8 MP noisy "photos" (incompressible, so re-encoded
PNG copies are as large as they get). Measured with img2pdf 0.6.3, Pillow 13.0,
pikepdf 10.18, Python 3.11, x86_64:

    sample                        route            peak growth
    JPEG, baseline/progressive    embed-jpeg       4.1-5.0 x source bytes (~3 B/px)
    PNG RGB                       embed-png        3.0-3.9 x source bytes
    PNG RGBA                      img2pdf-alpha    18.3 B/px
    TIFF LZW / BMP RGB            img2pdf-decode   12.4 B/px
    GIF (P)                       img2pdf-decode    2.9 B/px
    WebP RGB                      img2pdf-decode   25.7 B/px (Pillow decodes via RGBA)
    WebP RGBA                     pillow-flatten   18.3 B/px
    PNG 16-bit RGBA               pillow-flatten    8.0 B/px
    PNG RGBA, EXIF mirrored       pillow-flatten    8.0 B/px
    PNG RGB, EXIF mirrored        pillow           10.7 B/px
    TIFF 16-bit grey              pillow            6.0 B/px
    JPEG, EXIF mirrored           pillow-jpeg       8.3 B/px

`_COST` is the worst sample per route plus ~25%; the route is predicted from the
header by `inspect_image`, and when it is unknown the dearest route is assumed.
WebP gets its own per-pixel floor: its decoder dominates every route.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import warnings
import zlib
from dataclasses import dataclass, field, replace

import img2pdf
from PIL import Image

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
}
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


img2pdf.parse_png = _parse_png_linear
img2pdf.to_png_data = _to_png_data_fast


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
    try:
        with _open(data, kind) as im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise InvalidImage()
            if width * height > max_pixels:
                raise ImageTooLarge()
            frames = int(getattr(im, "n_frames", 1) or 1)
            facts = _facts(im, data, kind)
            return ImageInfo(kind, width, height, im.mode, frames, _route(kind, im.mode, facts))
    except ApiError:
        raise
    except Exception:
        log.info("image header unreadable", exc_info=True)
        raise InvalidImage() from None


def estimate_peak_bytes(info: ImageInfo, source_len: int) -> int:
    """Upper bound on the extra memory convert_to_pdf needs for this image.

    An ImageInfo without a known route (not made by inspect_image) gets the
    dearest route, since any kind can end up on any of them.
    """
    routes = [info.route] if info.route in _COST else list(_COST)
    pixels = max(info.width, 0) * max(info.height, 0)
    source_len = max(source_len, 0)
    worst = 0.0
    for route in routes:
        per_pixel, per_source_byte = _COST[route]
        if info.kind == "webp":
            per_pixel = max(per_pixel, _WEBP_PER_PIXEL)
        worst = max(worst, per_pixel * pixels + per_source_byte * source_len)
    return int(worst) + _FIXED_OVERHEAD


def convert_to_pdf(data: bytes, info: ImageInfo) -> bytes:
    """Convert the first frame of `data` into a one-page PDF sized to the image."""
    try:
        return _convert(data, info)
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
        # Pillow and img2pdf report corrupt input with many exception types.
        log.info("image undecodable", exc_info=True)
        raise InvalidImage() from None


def _convert(data: bytes, info: ImageInfo) -> bytes:
    kind = info.kind if info.kind in _PIL_FORMATS else sniff_image_type(data[:SNIFF_BYTES])
    if kind is None:
        raise UnsupportedImage()
    with _open(data, kind) as im:
        facts = _facts(im, data, kind)
        route = _route(kind, im.mode, facts)
        if route == "img2pdf-alpha" and info.route == LOW_MEMORY_ALPHA_ROUTE:
            route = LOW_MEMORY_ALPHA_ROUTE  # the caller chose the cheaper flattening
        if kind == "jpeg" and not _ends_with_eoi(data):
            _check_jpeg(im)
    if kind == "png" and route == "embed-png":
        # Only the copying route needs this; decoding routes fail on truncation.
        _check_png(data, facts)

    if not route.startswith("pillow"):
        try:
            return _img2pdf(data, _ROTATION.get(facts.orientation, 0))
        except _IMG2PDF_REFUSALS as exc:
            log.info("img2pdf refused (%s); normalising with Pillow", type(exc).__name__)
    normalised, rotation = _normalise(data, kind, facts)
    return _img2pdf(normalised, rotation)


def _facts(im: Image.Image, data: bytes, kind: str) -> _Facts:
    """Orientation and bit depths, from tags/chunks only (no getexif() on PNG: it decodes)."""
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
    if kind in {"jpeg", "tiff", "webp"}:
        orientation = im.getexif().get(_ORIENTATION_TAG, 1)
    tiff_depth = 8
    if kind == "tiff":
        bits = im.tag_v2.get(258, 1)  # BitsPerSample: one value per channel
        tiff_depth = max(bits) if isinstance(bits, tuple) and bits else int(bits or 1)
    return _Facts(
        orientation=_valid_orientation(orientation),
        tiff_depth=tiff_depth,
        transparency="transparency" in im.info,
    )


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
        return "embed-jp2"
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


def _check_png(data: bytes, facts: _Facts) -> None:
    """img2pdf copies IDAT without looking: inflate it (streaming, bounded memory) to
    make sure the chunks are complete and hold every row the header promises."""
    width, height = struct.unpack_from(">II", data, 16)
    expected = _png_raw_size(width, height, facts)
    inflater = zlib.decompressobj()
    produced = 0
    view = memoryview(data)
    try:
        for ctype, start, end in _png_chunks(data):
            if ctype != b"IDAT" or inflater.eof:
                continue
            pending = view[start:end]
            while pending and not inflater.eof:
                produced += len(inflater.decompress(pending, 1 << 20))
                pending = inflater.unconsumed_tail
    except zlib.error:
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


def _img2pdf(data: bytes, rotation: int) -> bytes:
    # A BytesIO, not bytes: img2pdf tries a bytes argument as a file name first.
    # Its read() hands back `data` itself, so this costs no copy.
    return img2pdf.convert(
        io.BytesIO(data),
        rotation=img2pdf.Rotation[str(rotation)],
        first_frame_only=True,
        layout_fun=_layout,
        nodate=True,
        producer=PRODUCER,
        creator=PRODUCER,
    )


def _normalise(data: bytes, kind: str, facts: _Facts) -> tuple[bytes, int]:
    """Re-encode frame 0 in a form img2pdf accepts; returns (bytes, rotation left to do).

    One decoded image is alive at a time where possible: each step closes the last.
    """
    im = _open(data, kind)
    try:
        im.load()
        rotation = _ROTATION.get(facts.orientation, 0)
        transpose = _MIRRORED.get(facts.orientation)
        if transpose is not None:
            im = _replace(im, im.transpose(transpose))
            rotation = 0
        icc = im.info.get("icc_profile")
        dpi = im.info.get("dpi")  # keeps the page size img2pdf would have given
        if dpi and transpose in {Image.Transpose.TRANSPOSE, Image.Transpose.TRANSVERSE}:
            dpi = (dpi[1], dpi[0])
        if kind == "jpeg" and im.mode in {"RGB", "L", "CMYK"}:
            # The source was lossy already; a PNG of a photo would be several times larger.
            return _encode(im, "JPEG", quality=95, icc_profile=icc, dpi=dpi), rotation
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
        )
    finally:
        im.close()


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
