"""The "stream" routes: libvips decodes in strips, app.engine.pdfwriter writes.

16-bit, alpha, interlaced (app.engine.adam7) or palette+tRNS PNGs, TIFF, WebP
(a still one in bands by app.engine.webp), GIF (app.engine.gif) and mirrored
orientations. Where a 16-bit PNG is converted:
`_stream` (libvips strips) or `_split_png` (PNG-filtered strips straight from
the IDAT, app.engine.png_strips).
"""

from __future__ import annotations

import struct

import img2pdf
from PIL import Image

from app.engine import jp2_bands
from app.engine.adam7 import adam7_strips
from app.engine.facts import _Facts, _png_chunks
from app.engine.gif import indexed_strips
from app.engine.img2pdf_route import _MAX_PAGE_PT, _jp2_dpi, _layout_at
from app.engine.pdfwriter import write_pdf
from app.engine.png_strips import png_filtered_strips
from app.engine.vips import Header, header, open_image
from app.engine.webp import Layout, features, first_frame, frame_strips, layout, webp_strips
from app.engine.webp import available as webp_available
from app.errors import InvalidImage, UnsupportedImage


def _indexed_gif(kind: str, im: Image.Image) -> bool:
    """A GIF whose first frame is one palette image: Pillow decodes it at 1 B/px
    onto the screen (grown, as libvips grows it, to hold a frame that reaches
    past it) and the PDF takes its indices as they are (libvips would hold it
    as an RGB or RGBA frame, 3-4 B/px)."""
    if kind != "gif" or im.mode != "P" or len(im.tile) != 1:
        return False
    transparency = im.info.get("transparency")
    if transparency is not None and not isinstance(transparency, int):
        return False
    x0, y0, x1, y1 = im.tile[0].extents
    return 0 <= x0 < x1 <= im.width and 0 <= y0 < y1 <= im.height


def _spare_index(im: Image.Image, table: int) -> int | None:
    """The index that shows the screen around a smaller first frame transparent
    when the GIF has no transparent index of its own: the highest one past its
    colour table (`table` entries) that no pixel uses. A frame may use indices
    past a short table (Pillow shows them black, as the PDF's palette padded
    with black does): keyed out, they showed transparent. None when every index
    past the table is used. One histogram pass over the decoded 1 B/px image, no copy."""
    counts = im.histogram()
    for index in range(255, table - 1, -1):
        if not counts[index]:
            return index
    return None


def _stream_indexed(im: Image.Image, dpi, fd: int) -> int:
    """The stream route for `_indexed_gif`: an /Indexed image, its transparent index
    (GIF transparency is all or nothing) a /Mask colour key.

    Around a first frame smaller than the screen, browsers show the page through
    (they ignore the GIF's background colour), and so does libvips with a
    transparent index: the padding is the transparent index, else a spare
    index keyed out (`_spare_index`); with a full 256-colour table, or every
    index past the table used, and no transparency there is none to spare, and
    the padding is index 0, as Pillow shows it."""
    box = tuple(im.tile[0].extents)
    try:
        im.load()
    except (OSError, EOFError, SyntaxError, ValueError):
        raise InvalidImage() from None
    colours = bytes(im.getpalette("RGB") or b"")[: 256 * 3]
    palette = colours.ljust(256 * 3, b"\0")  # indices past a short palette: black
    key = im.info.get("transparency")
    pad = None
    if box != (0, 0, *im.size):
        if key is None:
            key = _spare_index(im, len(colours) // 3)
        pad = key if key is not None else 0
    head = Header(im.width, im.height, 1, False, 8, None, palette, key)
    strips = indexed_strips(im, box if pad is not None else None, pad)
    return _write_streamed(None, head, 1, dpi, fd, strips)


def still_webp(data: bytes) -> Layout | None:
    """The chunks of a still WebP that app.engine.webp decodes in bands; None for
    an animated one (libvips composes its first frame) or without libwebp."""
    found = layout(data)
    if found is None or found.animated or not webp_available():
        return None
    return found


def _png_key(data: bytes, colour_type: int) -> tuple[int, ...] | None:
    """A grey (colour type 0) or RGB (2) PNG's tRNS colour, raw sample values."""
    for ctype, start, end in _png_chunks(data):
        if ctype == b"tRNS":
            count = 1 if colour_type == 0 else 3
            if end - start < 2 * count:
                return None  # libpng ignores a short tRNS
            return struct.unpack_from(f">{count}H", data, start)
        if ctype in {b"IDAT", b"IEND"}:
            break
    return None


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
    data is split without decoding (`png_filtered_strips`), else libvips."""
    strips = None
    if split is not None:
        width, height, colours, alpha, interlaced, icc = split
        image = None
        head = Header(width, height, colours, alpha, 8, None)
        view = memoryview(data)
        idat = (view[a:b] for kind_, a, b in _png_chunks(data) if kind_ == b"IDAT")
        depth, colour_type = data[24], data[25]
        if interlaced == "palette":
            palette, opacity = _png_palette(data)
            alpha = opacity is not None
            head = Header(width, height, 1, alpha, 8, None, palette)
            how = {"depth": depth, "colour_type": 3}
            strips = adam7_strips(idat, width, height, 1, alpha, opacity, **how)
        elif interlaced:
            key = _png_key(data, colour_type) if colour_type in (0, 2) else None
            alpha = alpha or key is not None
            head = Header(width, height, colours, alpha, 16 if depth == 16 else 8, icc)
            how = {"depth": depth, "colour_type": colour_type, "key": key}
            strips = adam7_strips(idat, width, height, colours, alpha, **how)
        else:
            strips = png_filtered_strips(idat, width, height, colours)
    elif kind == "webp" and (still := still_webp(data)) is not None:
        image = None
        width, height, alpha = features(data)
        icc = still.icc if still.icc and still.icc[16:20] == b"RGB " else None
        head = Header(width, height, 3, alpha, 8, icc)
        strips = webp_strips(data, width, height, alpha, still.lossless)
    elif kind == "webp" and (frame := first_frame(data)) is not None:
        image = None
        found = layout(data)
        icc = found.icc if found and found.icc and found.icc[16:20] == b"RGB " else None
        head = Header(frame.canvas_width, frame.canvas_height, 3, frame.alpha, 8, icc)
        strips = frame_strips(frame)
    else:
        image = open_image(data, kind)
        head = header(image) if image is not None else None
    if head is None:
        raise UnsupportedImage()
    return _write_streamed(image, head, orientation, dpi, fd, strips)


def _stream_jp2(data: bytes, fd: int) -> int:
    """The jp2-bands route: a JPEG 2000 with alpha flattened onto white band by
    band (app.engine.jp2_bands), on the page img2pdf gives the pillow-flatten
    route's PNG (the file's resolution box, else img2pdf's default dpi)."""
    found = jp2_bands.plan(data)
    if found is None:  # inspection chose the route from the same bytes
        raise UnsupportedImage()
    head = Header(found.width, found.height, found.colours, False, 8, None)
    strips = jp2_bands.flattened_strips(data, found)
    return _write_streamed(None, head, 1, _jp2_dpi(data), fd, strips)


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
    return write_pdf(image, head, orientation, layout, fd, strips)


# PNG colour types whose 8-bit filtered data splits into colour + alpha: grey+alpha, RGBA.
_SPLIT_PNG_COLOURS = {4: 1, 6: 3}
# Colour types the Adam7 decoder takes -> (colours, alpha), and their bit depths
# (PNG's own table); a palette (3) is written as /Indexed, its tRNS as a soft
# mask; grey/RGB tRNS becomes an alpha of 0 or full, as libvips makes it.
_ADAM7_PNG = {0: (1, False), 2: (3, False), 3: (1, False), 4: (1, True), 6: (3, True)}
_ADAM7_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}


def _adam7_png(im: Image.Image, facts: _Facts) -> bool:
    """An interlaced PNG of any colour type and bit depth PNG allows:
    `adam7_strips` decodes it in bands."""
    if not facts.png_interlaced or facts.png_color_type not in _ADAM7_PNG:
        return False
    return facts.png_depth in _ADAM7_DEPTHS[facts.png_color_type]


def _png_icc(im: Image.Image, colours: int) -> bytes | None:
    """The iCCP profile Pillow read, when it is for the image's own colour space
    (ICCBased needs /N to match), as libvips' header keeps it."""
    icc = im.info.get("icc_profile")
    if not icc or icc[16:20] != (b"GRAY" if colours == 1 else b"RGB "):
        return None
    return bytes(icc)


def _split_png(im: Image.Image, data: bytes, facts: _Facts):
    """(width, height, colours, alpha, how, icc) when the PNG's data is read here rather
    than by libvips: an 8-bit grey+alpha or RGBA PNG, not interlaced, whose
    filtered data is split undecoded (how ""); or an interlaced one `_adam7_png`
    takes ("adam7", or "palette" for an /Indexed image; `icc` its profile).
    A non-interlaced one with an ICC profile is libvips'."""
    width, height = struct.unpack_from(">II", data, 16)
    if _adam7_png(im, facts):
        colours, alpha = _ADAM7_PNG[facts.png_color_type]
        if facts.png_color_type == 3:
            return width, height, colours, alpha, "palette", None
        return width, height, colours, alpha, "adam7", _png_icc(im, colours)
    if facts.png_depth != 8 or facts.png_interlaced:
        return None
    if facts.png_color_type not in _SPLIT_PNG_COLOURS or "icc_profile" in im.info:
        return None
    return width, height, _SPLIT_PNG_COLOURS[facts.png_color_type], True, "", None
