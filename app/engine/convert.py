"""Entry points: `convert_to_pdf`/`convert_to_fd` run the route for an image.

`_convert` re-derives the route (app.engine.routes) from the same facts
`inspect_image` saw and hands the image to the module that writes that route.
Runs inside a conversion's child process (app.sandbox), except the plain JPEG
passthrough, which the web worker calls directly (app.pipeline).
"""

from __future__ import annotations

import logging
import os
import sys

import img2pdf
from PIL import Image

from app.engine import bmp
from app.engine.checks import _check_jpeg, _check_png, _check_png_crcs, _ends_with_eoi
from app.engine.direct import _plain_png, _write_png_pdf, embed_jp2, embed_jpeg, passthrough_jpeg
from app.engine.facts import _MIRRORED, _ORIENTATION_TAG, _ROTATION, ImageInfo
from app.engine.img2pdf_route import _IMG2PDF_FORMAT, _IMG2PDF_REFUSALS, _img2pdf
from app.engine.inspect import _PIL_FORMATS, _facts, _open, _scan, _tiff_dpi, _valid_orientation
from app.engine.jpeg_header import has_scan
from app.engine.normalise import _normalise
from app.engine.pillow_warnings import counted_warnings
from app.engine.pricing import _COST
from app.engine.routes import LOW_MEMORY_ALPHA_ROUTE, _route, _stream_or
from app.engine.streamed import (
    _indexed_gif,
    _split_png,
    _stream,
    _stream_indexed,
    _stream_jp2,
    still_webp,
)
from app.engine.webp import first_frame
from app.engine.webp import layout as webp_layout
from app.engine.webp import orientation as webp_orientation
from app.errors import ApiError, ImageTooLarge, InvalidImage, UnsupportedImage
from app.fdio import write_all
from app.sniff import SNIFF_BYTES, sniff_image_type

log = logging.getLogger(__name__)


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


def _convert(data: bytes, info: ImageInfo, fd: int) -> int:
    kind = info.kind if info.kind in _PIL_FORMATS else sniff_image_type(data[:SNIFF_BYTES])
    if kind is None:
        raise UnsupportedImage()
    if kind == "png":
        _check_png_crcs(data)  # every PNG route refuses what libpng refuses
    if kind == "jpeg":
        size = passthrough_jpeg(data, sys.maxsize, fd)
        if size is not None:
            return size
    shape = _scan(data, kind)
    if kind == "webp" and (still := still_webp(data)) is not None:
        # As inspection: no Pillow open (its animation decoder reserves 8 B/px),
        # no dpi in a WebP for img2pdf to read.
        dpi = (img2pdf.default_dpi, img2pdf.default_dpi)
        return _stream(data, kind, webp_orientation(still.exif), dpi, fd)
    if kind == "webp" and first_frame(data) is not None:
        # An animation's first frame in bands (webp.frame_strips), as a still one.
        dpi = (img2pdf.default_dpi, img2pdf.default_dpi)
        found = webp_layout(data)
        return _stream(data, kind, webp_orientation(found.exif if found else None), dpi, fd)
    with _open(data, kind) as im:
        facts = _facts(im, data, kind, shape)
        route = _route(kind, im.mode, facts)
        if info.route in {"stream", "bmp", "jp2-bands"} or (
            info.route not in _COST and route != "embed-png"
        ):
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
            _check_jpeg(im, data, shape.progressive)
        elif kind == "jpeg" and not has_scan(data):
            raise InvalidImage()  # headers and EOI: nothing to draw
        if kind == "jpeg" and route == "embed-jpeg" and facts.orientation in _MIRRORED:
            size = embed_jpeg(data, im, facts.orientation, fd)
            if size is not None:
                return size
            route = "pillow-jpeg"  # img2pdf would draw it unmirrored
        if route == "bmp":
            layout = bmp.parse(data)
            if layout is not None:
                return bmp.write(data, layout, im, fd)
        if kind == "jp2" and route == "embed-jp2" and facts.jp2_depth > 8:
            size = embed_jp2(data, im, facts.jp2_depth, fd)
            if size is not None:
                return size
        plain_png = split = None
        if kind == "png" and route == "embed-png":
            plain_png = _plain_png(im, data, facts)
        if kind == "png" and route == "stream":
            split = _split_png(im, data, facts)
        if route == "stream" and _indexed_gif(kind, im):
            return _stream_indexed(im, raw_dpi, fd)
    if route == "stream":
        return _stream(data, kind, orientation, raw_dpi, fd, split)
    if route == "jp2-bands":
        return _stream_jp2(data, fd)
    if kind == "png" and route == "embed-png":
        # Only the copying route needs this; decoding routes fail on truncation.
        _check_png(data, facts)
        if plain_png is not None:
            return _write_png_pdf(data, plain_png, facts, fd)

    if not route.startswith("pillow"):
        try:
            return write_all(fd, _img2pdf(data, _ROTATION.get(facts.orientation, 0), dpi))
        except _IMG2PDF_REFUSALS as exc:
            log.info("img2pdf refused (%s); normalising with Pillow", type(exc).__name__)
    normalised, rotation, dpi = _normalise(data, kind, facts)
    return write_all(fd, _img2pdf(normalised, rotation, dpi))
