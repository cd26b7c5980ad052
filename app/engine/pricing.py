"""Memory: `estimate_peak_bytes` feeds admission control and is the child's RLIMIT_AS.

Its coefficients come from `scripts/measure_convert_memory.py`: peak
RSS growth (VmHWM reset via /proc/self/clear_refs) and address-space growth
(VmPeak) of a fresh process per sample, noisy "photos" at 2 and 12 MP (30 MP for
the streamed PNG). Measured with img2pdf 0.6.3, Pillow 13.0, libvips 8.18,
Python 3.11, x86_64; the child's copy of the source comes on top:

    sample                        route            peak growth
    JPEG, baseline/progressive    embed-jpeg       2.0-2.8 B/px
    PNG RGB                       embed-png        3.0-3.9 x source bytes
    PNG RGBA / LA / palette+tRNS  stream           10 MB at 2 MP, 21 at 12, 23 at 30
    PNG 16-bit RGBA, TIFF         stream           <= 21 MB at 12 MP
    GIF (any first frame)         stream           1.0 B/px (Pillow's indices, /Indexed)
    WebP, still, lossy            stream           69 MB at 40 MP RGB (a 32 MiB band);
                                                   RGBA 115 MB address space (alpha planes)
    WebP, still, lossless         stream           app.engine.vp8l: 14.7 MB at 40 MP (its
                                                   window; 72 MB address space, the arena);
                                                   libwebp, when vp8l is not built: 4.26 B/px
    WebP, animated: first frame   stream           78 MB at 40 MP lossy RGB (bands, as still)
    JPEG, EXIF mirrored           embed-jpeg        ~0 at 40 MP (verbatim; was 8.0 B/px)
    BMP 1/8/24/32-bit, alpha      bmp               0.7-1.1 MB at 40 MP (strips)
    BMP RLE8/RLE4, 16-bit         bmp               1.3-1.5 / 5.9 MB at 40 MP (segments,
                                                    strips; was 3.0 / 8.0 B/px)
    JPEG 2000 16-bit grey         embed-jp2         2.2 MB at 40 MP (verbatim)
    progressive CMYK JPEG, cut    embed-jpeg        ~0 (a marker walk finds the cut;
                                                    was 8.0 B/px for the decode)
    MPO JPEG, EXIF mirrored       embed-jpeg        0.5 x source (img2pdf's cut of the
                                                    first frame; was 8.0 B/px, Pillow)
    JPEG 2000 8-bit RGBA / LA     pillow-flatten    25-27 / 15-17 B/px (openjpeg: int32
                                                    samples; + _jp2_decoder_bytes)
    JPEG 2000 8-bit RGBA / LA     jp2-bands         40 MP RGBA: 119 MB (20 MB source),
                                                    195 MB (75 MB); in 1000x1000
                                                    tiles 71 MB; LA 107 MB (38 MB)

`_COST` is the worst sample per route plus ~25%; the route is predicted from the
header by `inspect_image`, and when it is unknown the dearest route is assumed.
A progressive JPEG that will be decoded (only on the pillow-jpeg route) adds its
coefficients (`decoder_bytes`).
WebP gets its own per-pixel floor: its decoder dominates every route.
"""

from __future__ import annotations

from app.engine import vp8l
from app.engine.facts import ImageInfo
from app.engine.jp2_bands import Plan, band_rows
from app.engine.webp import LOSSLESS_BAND_BYTES, LOSSY_BAND_BYTES

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
    # app.engine.streamed: libvips decodes strips; see _STREAM_* below for per-kind floors.
    "stream": (1.5, 1.25),
    # app.engine.bmp: strips straight from the file's bytes.
    "bmp": (0.25, 1.25),
    # app.engine.jp2_bands: per pixel, openjpeg's code-block structures for
    # the whole tile (~1 B/px RGBA: 40 MB at 40 MP); per source byte, the
    # child's copy and the tile data openjpeg copies; the band or tile itself
    # is in decoder_bytes (jp2_bands_decoder_bytes). With it, the estimate is
    # 15-19 % over the measured address space + source at 40 MP RGBA.
    "jp2-bands": (1.5, 2.5),
}
# The streaming route holds a strip, not the image, except where libvips' loader
# keeps a whole frame: interlaced PNG (all of it), GIF (an RGBA frame), WebP (the
# decoded frame). Bytes per pixel per kind, worst measured + ~25%.
_STREAM_PER_PIXEL = {"gif": 7.0, "webp": 32.0}
_STREAM_INTERLACED_PER_PIXEL = 10.5
# adam7_strips (interlaced PNG, any depth; libvips reads only
# the header) holds 7 inflaters and bands of at least 8 full rows a few times
# over: measured 5.3 MB at 40 MP 4:3 (0.09 B/px slope; 16-bit RGBA 7.0 MB,
# 0.13). (B/px, B/source byte), and bytes per pixel of width for the bands.
_ADAM7_COST = (0.25, 1.25)  # the child reads its own copy of the source
# The bands per column of width: measured at 200,000 x 200 (40 MP): 16-bit
# RGBA 535 B, 8-bit RGBA 300 B (each band's unfilter copies it a few times).
_ADAM7_BAND_PER_COLUMN = 700
# A GIF as /Indexed: Pillow's decoded "P" frame (1 B/px) and one strip.
_INDEXED_GIF_COST = (1.25, 1.25)
_ADAM7_PER_COLUMN = 400  # measured 320 at 200,000 px wide (RGBA)
_STREAM_FIXED = 8 * 1024 * 1024  # libvips, the loader's buffers, numpy strips
_WEBP_PER_PIXEL = 32.0
# A still WebP in bands (app.engine.webp): the band buffer and libwebp's own
# planes are in decoder_bytes; per pixel and per source byte, this is the rest.
_WEBP_BANDS_COST = (0.25, 1.25)
# libwebp's planes kept whatever the crop, in address space: lossless keeps the
# ARGB frame (4 B/px; measured 170.9 MB at 40 MP RGBA), lossy with alpha the
# alpha plane and its VP8L decoder's 8-bit frame (measured 114.9 MB at 40 MP).
_WEBP_LOSSLESS_FRAME = 4.25
_WEBP_ALPHA_PLANE = 2.25
_FIXED_OVERHEAD = 8 * 1024 * 1024  # pikepdf/img2pdf bookkeeping, buffers
# What a band of app.engine.jp2_bands costs, in multiples of its int32
# samples: openjpeg's output window, its tile-component window, the
# code-blocks decoded around the window (kept while a band still needs them),
# what a reused codec accumulates between fresh ones, the flattening's strips.
_JP2_BAND_FACTOR = 10.0
_JP2_TILE_FACTOR = 4.0


def _jpeg_coefficient_bytes(width: int, height: int, components: int) -> int:
    """All DCT coefficients of a progressive JPEG: 64 x 2 bytes per 8x8 block and
    component, for blocks up to the largest MCU (16x16) at full resolution."""
    return (-(-width // 16) * 16) * (-(-height // 16) * 16) * max(components, 1) * 2


def webp_decoder_bytes(width: int, height: int, lossless: bool, alpha: bool) -> int:
    """What the decoder keeps while app.engine.webp decodes a still WebP in bands:
    one band (at most the whole image) and libwebp's whole-height planes; or, for
    a lossless image when app.engine.vp8l is built, its arena (all of it: the
    arena is address space, which the child's RLIMIT_AS counts)."""
    pixels = width * height
    if lossless and vp8l.available():
        bands = 4 if alpha else 3
        rows = vp8l.band_rows(width, bands)
        return min(rows, height) * width * bands + vp8l.arena_bytes(width, height, rows)
    band = min(LOSSLESS_BAND_BYTES if lossless else LOSSY_BAND_BYTES, pixels * 4)
    planes = _WEBP_LOSSLESS_FRAME if lossless else (_WEBP_ALPHA_PLANE if alpha else 0.0)
    return int(band + planes * pixels)


def _jp2_decoder_bytes(width: int, height: int, bands: int) -> int:
    """openjpeg's tile buffers for a JPEG 2000 Pillow decodes: 4 bytes per sample
    (int32), before Pillow's own copy; + 25% (RGBA measured 25-27 B/px all told
    on pillow-flatten, whose 10.5 B/px did not cover it)."""
    return 5 * width * height * max(bands, 1)


def jp2_bands_decoder_bytes(plan: Plan) -> int:
    """What app.engine.jp2_bands holds besides the tile data: one band's int32
    samples (band_rows rows, at most the image's) times _JP2_BAND_FACTOR; or,
    decoding a tile at a time, one tile's times _JP2_TILE_FACTOR and a row of
    tiles flattened."""
    width, height, components = plan.width, plan.height, plan.components
    if plan.by_tile:
        tile = min(plan.tile_width, width) * min(plan.tile_height, height) * components * 4
        row = min(plan.tile_height, height) * width * plan.colours
        return int(_JP2_TILE_FACTOR * tile + row)
    rows = min(height, band_rows(width, components))
    return int(_JP2_BAND_FACTOR * rows * width * components * 4)


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
        fixed = _STREAM_FIXED if route in {"stream", "bmp"} else 0
        if route == "stream" and info.adam7:
            per_pixel, per_source_byte = _ADAM7_COST
            # A band holds min(height, 8) rows or more: an image under 8 rows
            # pays for its own rows (1,000,000 x 1 16-bit RGBA: 85 MB peak).
            rows = min(max(info.height, 1), 8)
            fixed += _ADAM7_BAND_PER_COLUMN * max(info.width, 0) * rows // 8
        if route == "stream" and info.webp_bands:
            per_pixel, per_source_byte = _WEBP_BANDS_COST
        if route == "stream" and info.indexed:
            per_pixel, per_source_byte = _INDEXED_GIF_COST
            fixed += _ADAM7_PER_COLUMN * max(info.width, 0)
        worst = max(worst, per_pixel * pixels + per_source_byte * source_len + fixed)
    return int(worst) + decoder + _FIXED_OVERHEAD
