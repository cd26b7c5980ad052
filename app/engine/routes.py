"""Route choice: the one place that says which route an image takes and why.

`_route` picks from the header facts (app.engine.inspect); `_stream_or` then
sends what libvips can decode to "stream". `inspect_image` records the route
(for the price) and `convert._convert` takes it again in the child.

    image                                  route        written by
    plain JPEG (the worker-side walk       (none)       direct.passthrough_jpeg,
      accepts it: app.engine.jpeg_header)               in the web worker
    other JPEG                             embed-jpeg   img2pdf_route (img2pdf)
    JPEG, EXIF-mirrored: as above          (none) /     direct.passthrough_jpeg /
                                           embed-jpeg   direct.embed_jpeg, the page's
                                                        matrix flips it
    MPO JPEG, EXIF-mirrored                embed-jpeg   direct.embed_jpeg (img2pdf's
                                                        first-page bytes), matrix
    JPEG 2000 8-bit, no alpha              embed-jp2    img2pdf_route
    JPEG 2000 > 8-bit grey/RGB, no alpha   embed-jp2    direct.embed_jp2
    JPEG 2000 8-bit RGBA / LA, plain       jp2-bands    jp2_bands (openjpeg's decode area,
      (jp2_bands.plan takes it)                         bands flattened as pillow-flatten)
    PNG 8-bit, no alpha, not interlaced    embed-png    direct (IDAT copy)
    PNG 16-bit, alpha, interlaced (any     stream       streamed._split_png + png_strips,
      depth), palette + tRNS                            or adam7, or libvips strips;
                                                        pdfwriter writes the PDF
    WebP, still (any orientation)          stream       webp.webp_strips (lossy: libwebp,
                                                        cropped bands; lossless: vp8l's
                                                        rows); inspect/convert skip Pillow
    WebP, animated (first frame)           stream       webp.frame_strips (its frame as a
                                                        still, in bands); no Pillow
    TIFF, WebP the frame walk leaves,      stream       streamed._stream (libvips strips)
      mirrored PNG/TIFF/GIF
    GIF, first frame a palette image       stream       streamed._stream_indexed + gif
      (padded when smaller than the screen)
    BMP, uncompressed (BI_RGB 1/4/8/16/24/ bmp          bmp.strips (rows from the file's
      32, standard BI_BITFIELDS, 16-bit                 bytes; bmp_rle: segments of the
      5-6-5/5-5-5), RLE8/RLE4                           stream); pdfwriter writes the PDF
    what libvips refuses, other BMPs,      img2pdf-decode / img2pdf-alpha (img2pdf_route),
      JPEG 2000 with alpha, TIFF           pillow / pillow-flatten (normalise; alpha
      at the IFD count cap                 flattened onto white)

`low_memory_variant` offers the cheaper "pillow-flatten" for "img2pdf-alpha"
when admission has no room for the dearer one.
"""

from __future__ import annotations

from dataclasses import replace

from app.engine import bmp, jp2_bands, structure
from app.engine.facts import _ALPHA_MODES, _MIRRORED, ImageInfo, _Facts
from app.engine.vips import header, open_image

# Flattening onto white needs ~10.5 B/px where img2pdf's soft-mask path needs ~23:
# the page looks the same (PDF pages are white), only the PDF's own transparency
# is lost. Used when the soft-mask path would not fit the memory budget.
LOW_MEMORY_ALPHA_ROUTE = "pillow-flatten"
# A JPEG 2000 with alpha decoded in bands of rows (app.engine.jp2_bands): the
# pillow-flatten route's pixels without openjpeg's whole int32 image.
JP2_BANDS_ROUTE = "jp2-bands"
# Pillow's modes of the > 8-bit JPEG 2000 files direct.embed_jp2 embeds.
_DEEP_JP2_MODES = frozenset({"L", "I;16", "I;16B", "RGB"})


def low_memory_variant(info: ImageInfo) -> ImageInfo | None:
    """A cheaper way to convert `info`, or None when there is none."""
    if info.route == "img2pdf-alpha":
        return replace(info, route=LOW_MEMORY_ALPHA_ROUTE)
    return None


def _stream_or(
    route: str, data: bytes, kind: str, facts: _Facts, shape: structure.Structure
) -> str:
    """The "stream" route when libvips (app.engine.streamed) can decode this image,
    "bmp" for a BMP app.engine.bmp writes in strips (InvalidImage for a header
    its file cannot back), "jp2-bands" for a JPEG 2000 with alpha that
    app.engine.jp2_bands decodes in bands, else `route`.

    Plain 8-bit PNGs keep img2pdf's IDAT copy; JPEG, JPEG 2000 and other BMPs
    stay on their routes (libvips here has no JPEG 2000 or BMP loader). A TIFF whose IFD
    chain reaches the count cap stays with Pillow, which reads only the first:
    libtiff under libvips walks every IFD to count pages (180k took > 15 s).
    """
    if kind == "bmp":
        return "bmp" if bmp.parse(data) is not None else route
    if kind == "jp2":
        if route == LOW_MEMORY_ALPHA_ROUTE and jp2_bands.plan(data) is not None:
            return JP2_BANDS_ROUTE
        return route
    if route == "embed-png" and facts.png_depth <= 8:
        return route
    if kind == "tiff" and shape.frames >= structure.FRAMES_COUNTED:
        return route
    if route.startswith("embed-") and kind != "png":
        return route
    try:
        image = open_image(data, kind)
    except Exception:  # libvips refuses the header: the old route reports it
        return route
    if image is None or header(image) is None:
        return route
    return "stream"


def _route(kind: str, mode: str, facts: _Facts) -> str:
    alpha = mode in _ALPHA_MODES or facts.transparency
    if mode in {"P", "PA"} and alpha:
        # img2pdf 0.6.3 writes the soft mask of a palette image with the palette's
        # bit depth (2 bits for a 4-colour GIF) but 8-bit data: opaque areas vanish.
        return "pillow-flatten"
    if facts.orientation in _MIRRORED:
        if kind == "jpeg":
            # Embedded as it is and flipped by the page's matrix (direct.embed_jpeg);
            # an MPO as img2pdf embeds its first page (whole, or its first frame cut out).
            return "embed-jpeg"
        return "pillow-flatten" if alpha else "pillow"
    if kind == "jpeg":
        return "embed-jpeg"
    if kind == "jp2":
        # Embedded as they are: img2pdf takes 8-bit files, direct.embed_jp2 deeper
        # grey and RGB ones. Ones with alpha are decoded and flattened (in bands
        # by app.engine.jp2_bands where _stream_or says so, else Pillow, whose
        # openjpeg keeps 4 bytes per sample): img2pdf embeds an 8-bit one with
        # its alpha ignored, and pdfium draws /SMaskInData up to 63 levels off.
        # A file whose boxes or codestream structure are broken is decoded:
        # Pillow refuses it (422) or draws what a reader would not.
        if not facts.jp2_sound:
            return "pillow-flatten" if alpha else "pillow"
        if not alpha and (facts.jp2_depth <= 8 or mode in _DEEP_JP2_MODES):
            return "embed-jp2"
        return "pillow-flatten" if alpha else "pillow"
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
