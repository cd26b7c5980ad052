"""`inspect_image`: the header read before admission (size, kind, route).

Caps the file's structure byte by byte first (app.engine.structure), then opens
the header with Pillow only, derives the facts (app.engine.facts) and the route
(app.engine.routes) that pricing and the child use.
"""

from __future__ import annotations

import io
import logging
import mmap
import sys
import warnings
from dataclasses import replace

import img2pdf
from PIL import Image

from app.engine import structure
from app.engine.facts import _ORIENTATION_TAG, ImageInfo, _Facts, _png_exif
from app.engine.jp2_bands import plan as jp2_plan
from app.engine.pillow_warnings import counted_warnings
from app.engine.png_strips import BadData
from app.engine.pricing import (
    _jp2_decoder_bytes,
    _jpeg_coefficient_bytes,
    jp2_bands_decoder_bytes,
    webp_decoder_bytes,
)
from app.engine.routes import _route, _stream_or
from app.engine.streamed import _adam7_png, _indexed_gif, still_webp
from app.engine.webp import features as webp_features
from app.engine.webp import first_frame
from app.errors import ApiError, ImageTooLarge, InvalidImage, UnsupportedImage
from app.sniff import SNIFF_BYTES, sniff_image_type

log = logging.getLogger(__name__)

_PIL_FORMATS = {
    "jpeg": ["JPEG", "MPO"],
    "png": ["PNG"],
    "gif": ["GIF"],
    "tiff": ["TIFF"],
    "bmp": ["BMP"],
    "webp": ["WEBP"],
    "jp2": ["JPEG2000"],
}


def _open(data: bytes, kind: str) -> Image.Image:
    """Open the header with Pillow restricted to the sniffed format."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            # A mapped source (app.sandbox) is a file object itself: a BytesIO would copy it.
            source = data if isinstance(data, mmap.mmap) else io.BytesIO(data)
            return Image.open(source, formats=_PIL_FORMATS[kind])
        except Image.DecompressionBombError:
            raise ImageTooLarge() from None


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """Identify the image and check its size from the header alone (no decoding)."""
    kind = sniff_image_type(data[:SNIFF_BYTES])
    if kind is None:
        raise UnsupportedImage()
    shape = _scan(data, kind)  # before any parser: ImageTooComplex
    if kind == "webp" and (still := still_webp(data)) is not None:
        return _inspect_webp(data, still, shape, max_pixels)
    if kind == "webp" and (frame := first_frame(data)) is not None:
        return _inspect_webp_frame(frame, shape, max_pixels)
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
            # Only the Pillow route decodes a progressive JPEG: a cut one is found
            # without a decoder (checks._check_jpeg).
            if kind == "jpeg" and shape.progressive and route == "pillow-jpeg":
                decoder = _jpeg_coefficient_bytes(width, height, shape.components)
            if kind == "jp2" and route in {"pillow", "pillow-flatten"}:
                decoder = _jp2_decoder_bytes(width, height, len(im.getbands()))
            if kind == "jp2" and route == "jp2-bands":
                plan = jp2_plan(data)  # the route's own: not None
                decoder = jp2_bands_decoder_bytes(plan) if plan else sys.maxsize
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


def _inspect_webp(data: bytes, still, shape: structure.Structure, max_pixels: int) -> ImageInfo:
    """A still WebP, read by libwebp alone (app.engine.webp): Pillow's open starts
    its animation decoder, which reserves two RGBA canvases (8 B/px of address
    space) before a pixel is read."""
    try:
        width, height, alpha = webp_features(data)
    except BadData:
        raise InvalidImage() from None
    if width * height > max_pixels:
        raise ImageTooLarge()
    decoder = webp_decoder_bytes(width, height, still.lossless, alpha)
    mode = "RGBA" if alpha else "RGB"
    info = ImageInfo("webp", width, height, mode, shape.frames, "stream", decoder)
    return replace(info, webp_bands=True)


def _inspect_webp_frame(frame, shape: structure.Structure, max_pixels: int) -> ImageInfo:
    """An animated WebP whose first frame app.engine.webp decodes in bands: the
    canvas's size, libwebp's planes for the frame."""
    try:
        webp_features(frame.still)
    except BadData:
        raise InvalidImage() from None
    width, height = frame.canvas_width, frame.canvas_height
    if width * height > max_pixels:
        raise ImageTooLarge()
    decoder = webp_decoder_bytes(frame.width, frame.height, frame.lossless, frame.frame_alpha)
    decoder += len(frame.still)  # the frame's chunks, copied into a still WebP of their own
    mode = "RGBA" if frame.alpha else "RGB"
    info = ImageInfo("webp", width, height, mode, shape.frames, "stream", decoder)
    return replace(info, webp_bands=True)


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
        jp2_sound=shape.sound,
        transparency="transparency" in im.info,
        mpo=im.format == "MPO",
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
