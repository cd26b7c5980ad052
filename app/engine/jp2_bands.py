"""JPEG 2000 with alpha in bands of full rows: libopenjp2's decode area, through ctypes.

Pillow decodes a JPEG 2000 tile by tile into openjpeg's int32 samples and then
its own image: 24.5 B/px for RGBA (981 MB at 40 MP). Here libopenjp2 is asked
for one band of full rows at a time (`opj_set_decode_area` + `opj_decode`):
since openjpeg 2.3 the decoder reads every packet header but decodes only the
code-blocks the window needs and allocates only the window (src/lib/openjp2/
tcd.c, `opj_tcd_is_subband_area_of_interest`; dwt.c's partial inverse
transforms). Each band is flattened onto white with the very Pillow call the
"pillow-flatten" route makes (`Image.paste` with the alpha as mask), so the
pixels are that route's, and handed to app.engine.pdfwriter in strips.

Reading openjpeg 2.5.4's j2k.c:
- `opj_j2k_set_decode_area` accepts a new area after a decode only for a
  single-tile image whose tile data it kept (`m_cp.tcps[0].m_data`), and
  `opj_j2k_decode_tiles` keeps that data when the area is not the whole image
  ("Keep current tcp data"), and t1.c reuses the decoded code-blocks the next
  window still needs. So a single-tile image is read once per REUSE_BANDS
  bands and each band re-decodes from the kept tile data. For several tiles a
  new area needs a fresh codec (its header re-read, tiles outside the area
  skipped): they are decoded a tile at a time (`tile_strips`), or in bands
  when a tile or a row of them is too large.
- The decoder starts threads only when asked (`opj_codec_set_threads`) or when
  the environment says so (`OPJ_NUM_THREADS`, read by
  `opj_j2k_create_decompress`): the codec is pinned to 0 threads, so it runs in
  the calling thread under the service's syscall filter.

What takes this route (`plan`): an 8-bit unsigned RGBA or grey+alpha image,
every component full size, the structure app.engine.structure checks for the
copy routes (boxes, tile-parts, ihdr agreeing with SIZ) except the colour
space, a colr box that is sRGB (RGBA) or greyscale (LA) by enumeration, no
palette, no cdef other than the plain one Pillow writes; and openjpeg's own
header read must agree. Anything else keeps Pillow. The component-definition
box is ignored (`OPJ_DPARAMETERS_IGNORE_PCLR_CMAP_CDEF_FLAG`), as Pillow's
tile-by-tile decode ignores it.

The library is the copy in the pinned Pillow wheel, else the system's
libopenjp2.so.7; only a 2.5.x library is used, whose structures below match its
openjpeg.h (sizes checked by tests/unit/test_convert_jp2_bands.py).
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass

from PIL import Image

from app.engine import clib, structure, vips
from app.engine.png_strips import BadData, _up

# int32 samples of a decoded band, all components (openjpeg's own window);
# rows come in multiples of 64 (a code-block's height) when the band allows.
# Measured at 40 MP RGBA (20 MB lossy source, scripts/measure_convert_memory.py):
# 5 MiB bands 119.3 MB peak / 7.1 s, 6 MiB 121.3 MB / 6.8 s; one-off runs:
# 4 MiB 117 MB / 11.6 s, 8 MiB 126 MB / 7.9 s (see docs/performance.md).
BAND_BYTES = 5 * 1024 * 1024
_ROW_ALIGN = 64
# A single-tile codec is reused for this many bands (one more per
# REUSE_SOURCE_BYTES of source past 16 MiB), then read afresh: a reused one
# grows (40 MP: 66 MB in use after the first band, 110 MB by the last), a fresh
# one re-reads and parses the tile's packets (~50 ms for an 8 MB source, ~1.4 s
# for 75 MB). 8: 111 MB / 5.8 s where reuse throughout took 129 MB / 6.1 s and
# a fresh codec per band 101 MB / 10.1 s (8 MB bands, 8 MB source); a 75 MB
# source took 21.8 s at 8, 14.2 s at 32.
REUSE_BANDS = 8
REUSE_SOURCE_BYTES = 2 * 1024 * 1024
# A file of several tiles is decoded a tile at a time (each tile's own int32
# samples at most TILE_BYTES) into a row of tiles held flattened (at most
# ROW_BYTES): bands across tiles re-read and re-decode each tile they cut
# (40 MP in 1000x1000 tiles: 53.6 s in 53-row bands).
TILE_BYTES = 16 * 1024 * 1024
ROW_BYTES = 24 * 1024 * 1024
# Every fresh codec parses the headers of all the file's tiles (their SOT
# markers, a tile-coding structure each) and a band decodes every tile it cuts:
# work grows as codecs x tiles. 4096 tiles of 8x8 a tile at a time (16.7 M)
# took 22 s against Pillow's 0.07 s for the whole file (one decode); 1024 of
# 16x16 (1 M) 1.4 s. A band's tiles are decoded (in part), not only parsed:
# they count BAND_TILE_WEIGHT each (30 bands x 4096 tiles of 2x1200, 8192x1200
# px: 5.5 s; 123 bands x 1024 tiles of 32x1200, 32768x1200 px: 10.6 s). Past
# MAX_CODEC_TILES a file keeps Pillow, which decodes it once, as before this route.
MAX_CODEC_TILES = 1024 * 1024
BAND_TILE_WEIGHT = 8
_STREAM_CHUNK = 1024 * 1024  # opj_stream_create's buffer (OPJ_J2K_STREAM_CHUNK_SIZE)
_KNOWN_VERSION = b"2.5."
_CODEC_J2K, _CODEC_JP2 = 0, 2  # OPJ_CODEC_FORMAT
_IGNORE_PCLR_CMAP_CDEF = 0x0001  # OPJ_DPARAMETERS_IGNORE_PCLR_CMAP_CDEF_FLAG
# OPJ_COLOR_SPACE values Pillow unpacks as plain RGBA / LA (no YCC conversion).
_CLRSPC_UNKNOWN, _CLRSPC_UNSPECIFIED, _CLRSPC_SRGB, _CLRSPC_GRAY = -1, 0, 1, 2
_PLAIN_SPACES = {
    4: {_CLRSPC_UNKNOWN, _CLRSPC_UNSPECIFIED, _CLRSPC_SRGB},
    2: {_CLRSPC_UNKNOWN, _CLRSPC_UNSPECIFIED, _CLRSPC_GRAY},
}
# ihdr NC -> the colr EnumCS taken (16 sRGB, 17 greyscale).
_ENUM_CS = {4: (b"\x00\x00\x00\x10",), 2: (b"\x00\x00\x00\x11",)}
_SIGNATURE = b"\xff\x4f\xff\x51"


class _DParameters(ctypes.Structure):
    """opj_dparameters_t (openjpeg.h 2.5: 8252 bytes)."""

    _fields_ = [
        ("cp_reduce", ctypes.c_uint32),
        ("cp_layer", ctypes.c_uint32),
        ("infile", ctypes.c_char * 4096),
        ("outfile", ctypes.c_char * 4096),
        ("decod_format", ctypes.c_int),
        ("cod_format", ctypes.c_int),
        ("DA_x0", ctypes.c_uint32),
        ("DA_x1", ctypes.c_uint32),
        ("DA_y0", ctypes.c_uint32),
        ("DA_y1", ctypes.c_uint32),
        ("m_verbose", ctypes.c_int),
        ("tile_index", ctypes.c_uint32),
        ("nb_tile_to_decode", ctypes.c_uint32),
        ("jpwl_correct", ctypes.c_int),
        ("jpwl_exp_comps", ctypes.c_int),
        ("jpwl_max_tiles", ctypes.c_int),
        ("flags", ctypes.c_uint),
    ]


class _Component(ctypes.Structure):
    """opj_image_comp_t (64 bytes; `bpp` is deprecated but still there)."""

    _fields_ = [
        (name, ctypes.c_uint32)
        for name in ("dx", "dy", "w", "h", "x0", "y0", "prec", "bpp", "sgnd")
    ] + [
        ("resno_decoded", ctypes.c_uint32),
        ("factor", ctypes.c_uint32),
        ("data", ctypes.POINTER(ctypes.c_int32)),
        ("alpha", ctypes.c_uint16),
    ]


class _Image(ctypes.Structure):
    """opj_image_t (48 bytes)."""

    _fields_ = [
        ("x0", ctypes.c_uint32),
        ("y0", ctypes.c_uint32),
        ("x1", ctypes.c_uint32),
        ("y1", ctypes.c_uint32),
        ("numcomps", ctypes.c_uint32),
        ("color_space", ctypes.c_int),
        ("comps", ctypes.POINTER(_Component)),
        ("icc_profile_buf", ctypes.c_void_p),
        ("icc_profile_len", ctypes.c_uint32),
    ]


_READ = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_SKIP = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_SEEK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)
_END_OF_STREAM = ctypes.c_size_t(-1).value  # (OPJ_SIZE_T)-1

_lib = None


def _bind(lib) -> None:
    p = ctypes.c_void_p
    lib.opj_version.restype = ctypes.c_char_p
    lib.opj_stream_create.argtypes = [ctypes.c_size_t, ctypes.c_int]
    lib.opj_stream_create.restype = p
    lib.opj_stream_set_read_function.argtypes = [p, _READ]
    lib.opj_stream_set_skip_function.argtypes = [p, _SKIP]
    lib.opj_stream_set_seek_function.argtypes = [p, _SEEK]
    lib.opj_stream_set_user_data.argtypes = [p, p, p]
    lib.opj_stream_set_user_data_length.argtypes = [p, ctypes.c_uint64]
    lib.opj_stream_destroy.argtypes = [p]
    lib.opj_create_decompress.argtypes = [ctypes.c_int]
    lib.opj_create_decompress.restype = p
    lib.opj_set_default_decoder_parameters.argtypes = [ctypes.POINTER(_DParameters)]
    lib.opj_setup_decoder.argtypes = [p, ctypes.POINTER(_DParameters)]
    lib.opj_codec_set_threads.argtypes = [p, ctypes.c_int]
    lib.opj_read_header.argtypes = [p, p, ctypes.POINTER(ctypes.POINTER(_Image))]
    lib.opj_set_decode_area.argtypes = [p, ctypes.POINTER(_Image)] + [ctypes.c_int32] * 4
    lib.opj_decode.argtypes = [p, p, ctypes.POINTER(_Image)]
    lib.opj_destroy_codec.argtypes = [p]
    lib.opj_image_destroy.argtypes = [ctypes.POINTER(_Image)]


def _library():
    """libopenjp2 2.5.x, loaded once: the Pillow wheel's copy, else the system's."""
    global _lib
    if _lib is None:
        _lib = clib.load("openjp2", "openjp2", _accept) or False
    return _lib or None


def _accept(lib) -> bool:
    lib.opj_version.restype = ctypes.c_char_p
    if not (lib.opj_version() or b"").startswith(_KNOWN_VERSION):
        return False  # structures of another version are not known here
    _bind(lib)
    return True


def available() -> bool:
    return _library() is not None


@dataclass(frozen=True)
class Plan:
    """What the band decoder needs to know about a file it takes."""

    width: int
    height: int
    components: int  # 4 (RGBA) or 2 (grey + alpha)
    codec: int  # _CODEC_J2K or _CODEC_JP2
    single_tile: bool
    # The tile grid in image rows and columns: where the first tile row and
    # column end (the grid starts at or above/left of the image), and the
    # tiles' height and width.
    first_tile_rows: int = 0
    tile_height: int = 0
    first_tile_columns: int = 0
    tile_width: int = 0

    @property
    def by_tile(self) -> bool:
        """Decoded a tile at a time, a row of tiles held flattened (`tile_strips`):
        several tiles, each within TILE_BYTES and a row of them within ROW_BYTES."""
        if self.single_tile or not self.tile_width or not self.tile_height:
            return False
        tile = min(self.tile_width, self.width) * min(self.tile_height, self.height)
        rows = min(self.tile_height, self.height) * self.width * self.colours
        return tile * self.components * 4 <= TILE_BYTES and rows <= ROW_BYTES

    @property
    def tiles(self) -> int:
        if self.single_tile or not self.tile_width or not self.tile_height:
            return 1
        columns = len(_edges(self.first_tile_columns, self.tile_width, self.width))
        return columns * len(_edges(self.first_tile_rows, self.tile_height, self.height))

    @property
    def codec_tiles(self) -> int:
        """Codecs the decode reads afresh times the tiles each one parses (a
        band's weighted: it decodes them)."""
        if self.single_tile:
            return 0
        if self.by_tile:
            return self.tiles * self.tiles
        return len(bands(self)) * self.tiles * BAND_TILE_WEIGHT

    @property
    def colours(self) -> int:
        return self.components - 1


# The last plan, with the very object it was made for (held, so its id cannot
# be reused): inspection, the route and the writer ask for the same bytes.
_last_plan: tuple[object, Plan | None] | None = None


def plan(data) -> Plan | None:
    """The band route's plan for `data`, or None when the file keeps Pillow."""
    global _last_plan
    if _last_plan is not None and _last_plan[0] is data:
        return _last_plan[1]
    found = _plan(data)
    _last_plan = (data, found)
    return found


def _plan(data) -> Plan | None:
    if len(data) < 12 or _library() is None:
        return None
    raw = bytes(data[:4])
    try:
        if raw == _SIGNATURE:
            codec, siz = _CODEC_J2K, structure._codestream_sound(data, 0, len(data))
            start = 0
        else:
            codec = _CODEC_JP2
            start, siz = _jp2_sound(data)
    except (structure._Unsound, struct.error, IndexError):
        return None
    components = len(siz.depths)
    if components not in (2, 4) or set(siz.depths) != {7}:  # 8-bit unsigned only
        return None
    tiles, grid = _tile_grid(data, start)
    found = _header(data, codec)
    if found is None:
        return None
    x0, y0, x1, y1, numcomps, space, comps = found
    if numcomps != components or space not in _PLAIN_SPACES[components]:
        return None
    if (x1 - x0, y1 - y0) != (siz.width, siz.height):
        return None
    if any(c != (1, 1, 8, 0) for c in comps):  # dx, dy, prec, sgnd
        return None
    found = Plan(siz.width, siz.height, components, codec, tiles == 1, *grid)
    return found if found.codec_tiles <= MAX_CODEC_TILES else None


def _jp2_sound(data) -> tuple[int, structure._Siz]:
    """A .jp2 the band decoder takes: structure's checks for the copy routes
    (boxes, ihdr agreeing with the codestream, tile-parts) with the colour
    space of an alpha image, no palette and a plain cdef. Returns the
    codestream's offset and its SIZ; raises structure._Unsound."""
    need = structure._need
    boxes = structure._exact_boxes(data, 0, len(data))
    need(len(boxes) >= 4)
    kind, s, e = boxes[0]
    need(kind == b"jP  " and data[s:e] == b"\r\n\x87\n")
    kind, s, e = boxes[1]
    need(kind == b"ftyp" and e - s >= 8 and (e - s) % 4 == 0)
    need(b"jp2 " in {bytes(data[at : at + 4]) for at in range(s + 8, e, 4)})
    header = next((b for b in boxes if b[0] == b"jp2h"), None)
    stream = next((b for b in boxes if b[0] == b"jp2c"), None)
    need(header is not None and stream is not None and header[1] < stream[1])
    assert header is not None and stream is not None
    children = structure._exact_boxes(data, header[1], header[2])
    need(bool(children) and children[0][0] == b"ihdr" and children[0][2] - children[0][1] == 14)
    s = children[0][1]
    height, width, nc, bpc, c = struct.unpack_from(">IIHBB", data, s)
    need(c == 7 and data[s + 12] <= 1 and data[s + 13] <= 1 and bpc == 7)
    kinds = [kind for kind, _, _ in children]
    need(kinds.count(b"colr") >= 1 and b"pclr" not in kinds and b"cmap" not in kinds)
    for kind, cs, ce in children:
        if kind == b"colr":
            need(ce - cs == 7 and data[cs] == 1 and bytes(data[cs + 3 : ce]) in _ENUM_CS[nc])
        elif kind == b"cdef":
            need(bytes(data[cs:ce]) == _plain_cdef(nc))
        elif kind == b"res ":
            for sub, rs, re_ in structure._exact_boxes(data, cs, ce):
                need(sub not in (b"resc", b"resd") or re_ - rs == 10)
    siz = structure._codestream_sound(data, stream[1], stream[2])
    need((width, height, nc) == (siz.width, siz.height, len(siz.depths)))
    return stream[1], siz


def _plain_cdef(nc: int) -> bytes:
    """The cdef box Pillow (openjpeg's encoder) writes: colour channels in order,
    the last an opacity for the whole image."""
    if nc not in _ENUM_CS:
        raise structure._Unsound()
    entries = [(i, 0, i + 1) for i in range(nc - 1)] + [(nc - 1, 1, 0)]
    return struct.pack(">H", nc) + b"".join(struct.pack(">HHH", *e) for e in entries)


def _tile_grid(data, start: int) -> tuple[int, tuple[int, int, int, int]]:
    """(tiles, (image rows in the first tile row, tile height, image columns in
    the first tile column, tile width)) from SIZ (sound: XTOsiz <= XOsiz <
    XTOsiz + XTsiz, the same for Y)."""
    xsiz, ysiz, xo, yo, xt, yt, xto, yto = struct.unpack_from(">IIIIIIII", data, start + 8)
    tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
    return tiles, (yto + yt - yo, yt, xto + xt - xo, xt)


class _Source:
    """An openjpeg input stream reading `data` (bytes or a mapping) in place."""

    def __init__(self, lib, data):
        self.lib = lib
        vips.load()
        self.view = vips.np.frombuffer(data, vips.np.uint8)  # no copy; keeps `data` alive
        self.base = self.view.ctypes.data
        self.size = len(self.view)
        self.pos = 0
        self.read = _READ(self._read)
        self.skip = _SKIP(self._skip)
        self.seek = _SEEK(self._seek)
        stream = lib.opj_stream_create(_STREAM_CHUNK, 1)
        if not stream:
            raise MemoryError()
        self.stream = stream
        lib.opj_stream_set_read_function(stream, self.read)
        lib.opj_stream_set_skip_function(stream, self.skip)
        lib.opj_stream_set_seek_function(stream, self.seek)
        lib.opj_stream_set_user_data(stream, None, None)
        lib.opj_stream_set_user_data_length(stream, self.size)

    def _read(self, buffer, count, _user) -> int:
        n = min(count, self.size - self.pos)
        if n <= 0:
            return _END_OF_STREAM
        ctypes.memmove(buffer, self.base + self.pos, n)
        self.pos += n
        return n

    def _skip(self, count, _user) -> int:
        target = min(max(self.pos + count, 0), self.size)
        moved = target - self.pos
        if count and not moved:
            return -1
        self.pos = target
        return moved

    def _seek(self, position, _user) -> int:
        if not 0 <= position <= self.size:
            return 0
        self.pos = position
        return 1

    def close(self) -> None:
        if self.stream:
            self.lib.opj_stream_destroy(self.stream)
            self.stream = None
        # Let go of the source's buffer now (a mapping cannot close while a
        # view of it lives) and of the callbacks, which refer back to this object.
        self.view = self.read = self.skip = self.seek = None


class _Decoder:
    """A codec with its header read: (codec, image, source); `close` frees all."""

    def __init__(self, lib, data, codec_format: int):
        self.lib = lib
        self.source = _Source(lib, data)
        self.codec = lib.opj_create_decompress(codec_format)
        self.image = ctypes.POINTER(_Image)()
        if not self.codec:
            self.close()
            raise MemoryError()
        params = _DParameters()
        lib.opj_set_default_decoder_parameters(params)
        params.flags |= _IGNORE_PCLR_CMAP_CDEF
        ok = lib.opj_setup_decoder(self.codec, params)
        ok = ok and lib.opj_codec_set_threads(self.codec, 0)
        ok = ok and lib.opj_read_header(self.source.stream, self.codec, ctypes.byref(self.image))
        if not ok or not self.image:
            self.close()
            raise BadData("JPEG 2000 header unreadable")
        # The image's origin on the reference grid (a decode moves the image's
        # own x0/y0 to its area's).
        self.origin = (self.image.contents.x0, self.image.contents.y0)

    def decode(self, x0: int, y0: int, x1: int, y1: int) -> None:
        lib = self.lib
        if not lib.opj_set_decode_area(self.codec, self.image, x0, y0, x1, y1):
            raise BadData("JPEG 2000 decode area refused")
        if not lib.opj_decode(self.codec, self.source.stream, self.image):
            raise BadData("JPEG 2000 data unreadable")

    def close(self) -> None:
        if self.image:
            self.lib.opj_image_destroy(self.image)
            self.image = ctypes.POINTER(_Image)()
        if self.codec:
            self.lib.opj_destroy_codec(self.codec)
            self.codec = None
        self.source.close()


def _header(data, codec_format: int):
    """(x0, y0, x1, y1, numcomps, colour space, [(dx, dy, prec, sgnd)]) as
    openjpeg reads the header, or None if it cannot."""
    lib = _library()
    if lib is None:
        return None
    try:
        decoder = _Decoder(lib, data, codec_format)
    except BadData:
        return None
    try:
        image = decoder.image.contents
        comps = [
            (c.dx, c.dy, c.prec, c.sgnd)
            for c in (image.comps[i] for i in range(min(image.numcomps, 16384)))
        ]
        return image.x0, image.y0, image.x1, image.y1, image.numcomps, image.color_space, comps
    finally:
        decoder.close()


def band_rows(width: int, components: int) -> int:
    """Rows per decoded band: BAND_BYTES of int32 samples, in multiples of
    _ROW_ALIGN when that many fit."""
    rows = max(1, BAND_BYTES // max(1, width * components * 4))
    return rows // _ROW_ALIGN * _ROW_ALIGN if rows >= _ROW_ALIGN else rows


def bands(plan: Plan) -> list[tuple[int, int]]:
    """[top, bottom) of each band. Of several tiles, whole rows of tiles go
    together when one fits in a band: a band that cuts a tile decodes that tile
    again for the next band (its header and packets are read again)."""
    rows = band_rows(plan.width, plan.components)
    if plan.single_tile or not 0 < plan.tile_height <= rows:
        edges = list(range(0, plan.height, rows))
    else:
        step = rows // plan.tile_height * plan.tile_height
        edges = [0, *range(plan.first_tile_rows + step - plan.tile_height, plan.height, step)]
    return list(zip(edges, [*edges[1:], plan.height], strict=True))


def flattened_strips(data, plan: Plan):
    """(colour, None) rows, Up-filtered, of the image flattened onto white:
    openjpeg decodes `band_rows` rows at a time (or a tile at a time:
    `tile_strips`), handed on in strips of vips.STRIP_BYTES. BadData when
    openjpeg fails on any band."""
    vips.load()
    lib = _library()
    if lib is None:
        raise BadData("libopenjp2 not available")
    if plan.by_tile:
        yield from tile_strips(lib, data, plan)
        return
    width = plan.width
    step = max(1, vips.STRIP_BYTES // (width * 4))
    last = None
    decoder = None
    reuse = max(REUSE_BANDS, len(data) // REUSE_SOURCE_BYTES)
    try:
        for index, (top, bottom) in enumerate(bands(plan)):
            if decoder is None or not plan.single_tile or index % reuse == 0:
                # A single tile is re-decoded from the data the codec kept; of
                # several tiles, each band needs the header read afresh.
                if decoder is not None:
                    decoder.close()
                decoder = _Decoder(lib, data, plan.codec)
            planes = _decode_band(decoder, plan, top, bottom)
            for a in range(0, bottom - top, step):
                b = min(bottom - top, a + step)
                colour = _flatten(planes, plan, a, b)
                yield _up(colour, last), None
                last = colour[-1].copy()
            del planes
    finally:
        if decoder is not None:
            decoder.close()


def _edges(first: int, step: int, size: int) -> list[tuple[int, int]]:
    """[start, end) of each tile along one axis of `size` pixels."""
    edges = [0, *range(min(first, size), size, step)]
    return list(zip(edges, [*edges[1:], size], strict=True))


def tile_strips(lib, data, plan: Plan):
    """`flattened_strips` for `plan.by_tile`: each row of tiles is decoded a
    tile at a time (a fresh codec each: after a decode, openjpeg sets a new area
    only on a single-tile image) into a flattened row of tiles."""
    step = max(1, vips.STRIP_BYTES // (plan.width * 4))
    columns = _edges(plan.first_tile_columns, plan.tile_width, plan.width)
    last = None
    for top, bottom in _edges(plan.first_tile_rows, plan.tile_height, plan.height):
        row = vips.np.empty((bottom - top, plan.width * plan.colours), vips.np.uint8)
        for left, right in columns:
            decoder = _Decoder(lib, data, plan.codec)
            try:
                planes = _decode_band(decoder, plan, top, bottom, left, right)
                for a in range(0, bottom - top, step):
                    b = min(bottom - top, a + step)
                    flat = _flatten(planes, plan, a, b, right - left)
                    row[a:b, left * plan.colours : right * plan.colours] = flat
                del planes
            finally:
                decoder.close()
        for a in range(0, bottom - top, step):
            colour = row[a : a + step]
            yield _up(colour, last), None
            last = colour[-1].copy()
        del row


def _decode_band(decoder: _Decoder, plan: Plan, top: int, bottom: int, left=0, right=None):
    """Rows [top, bottom), columns [left, right) (all by default) of each
    component: (rows, columns) int32 views of openjpeg's own buffers (valid
    until the next decode or close)."""
    right = plan.width if right is None else right
    x0, y0 = decoder.origin
    decoder.decode(x0 + left, y0 + top, x0 + right, y0 + bottom)
    image = decoder.image.contents
    planes = []
    for i in range(plan.components):
        comp = image.comps[i]
        if (comp.w, comp.h) != (right - left, bottom - top) or not comp.data:
            raise BadData("JPEG 2000 band of an unexpected size")
        buffer = (ctypes.c_int32 * (comp.w * comp.h)).from_address(
            ctypes.addressof(comp.data.contents)
        )
        planes.append(vips.np.frombuffer(buffer, vips.np.int32).reshape(comp.h, comp.w))
    return planes


def _flatten(planes, plan: Plan, a: int, b: int, width: int | None = None):
    """Rows [a, b) of the band (`width` columns, the image's by default)
    flattened onto white as the pillow-flatten route does it
    (normalise._flatten): (rows, width * colours) uint8."""
    n, width = b - a, plan.width if width is None else width
    size = (width, n)
    if plan.components == 4:
        rgba = vips.np.empty((n, width, 4), vips.np.uint8)
        for i in range(4):
            rgba[..., i] = planes[i][a:b]
        im = Image.frombuffer("RGBA", size, rgba, "raw", "RGBA", 0, 1)
        out = Image.new("RGB", size, (255, 255, 255))
        out.paste(im, mask=im)
    else:
        grey = planes[0][a:b].astype(vips.np.uint8)
        alpha = planes[1][a:b].astype(vips.np.uint8)
        out = Image.new("L", size, 255)
        out.paste(
            Image.frombuffer("L", size, grey, "raw", "L", 0, 1),
            mask=Image.frombuffer("L", size, alpha, "raw", "L", 0, 1),
        )
    return vips.np.frombuffer(out.tobytes(), vips.np.uint8).reshape(n, width * plan.colours)
