"""Lossless WebP (VP8L) row by row, in bounded memory: the project's own decoder.

libwebp keeps the whole ARGB frame of a VP8L image while it decodes (4 B/px,
171 MB at 40 MP), whatever the crop. app/engine/native/vp8l.c keeps only the
pixels a backward reference can still reach (1,048,456, or 7 rows and 8 pixels)
and hands out finished rows; it fails where libwebp fails and gives libwebp's
pixels where both succeed (tests/unit/test_vp8l_stream.py).

The library is built from its source by scripts/build_native.sh, where the
service runs; it carries the sha256 of the source it was built from, and one
built from other source is not used. Without it, lossless WebP keeps libwebp's
whole-frame decode (app.engine.webp), priced as such (app.engine.pricing).

The decoder allocates nothing: it gets one arena, mapped here privately and
lazily (pages cost memory only once touched), sized by `arena_bytes`; a stream
that needs more (thousands of prefix-code groups, which libwebp's encoder never
writes) is a MemoryError, so the job's own limit decides.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import struct
from pathlib import Path

from app.engine import vips
from app.engine.png_strips import BadData

NATIVE = Path(__file__).with_name("native")
SOURCE = NATIVE / "vp8l.c"
LIBRARY = NATIVE / "libvp8l.so"

# Decoded bytes per band of rows handed on (the strips are cut from it).
BAND_BYTES = 2 * 1024 * 1024
# Prefix-code tables and groups the arena allows for: libwebp's encoder writes
# at most 2,600 groups (MAX_HUFF_IMAGE_SIZE); a group's tables are ~2-20 KB.
TABLE_BYTES = 24 * 1024 * 1024
_WINDOW = 1_048_456  # the farthest a backward reference reaches, in pixels
_MAX_COPY = 4096
_FIXED = 512 * 1024  # the state, code-length scratch, colour caches, a sub-image's tables
_ERRORS = {-1: "data", -2: "arena", -3: "args"}

_lib = None


def _load():
    """The library, when it is built from this very source; else None."""
    global _lib
    if _lib is None:
        _lib = _open() or False
    return _lib or None


def _open():
    try:
        expected = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
        lib = ctypes.CDLL(str(LIBRARY))
    except OSError:
        return None
    lib.vp8l_source_id.restype = ctypes.c_char_p
    lib.vp8l_source_id.argtypes = []
    if lib.vp8l_source_id() != expected.encode():
        return None
    lib.vp8l_open.restype = ctypes.c_int
    lib.vp8l_open.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int32),
    ]
    lib.vp8l_rows.restype = ctypes.c_int
    lib.vp8l_rows.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    return lib


def available() -> bool:
    return _load() is not None


def band_rows(width: int, bands: int) -> int:
    return max(1, BAND_BYTES // max(1, width * bands))


def arena_bytes(width: int, height: int, max_rows: int) -> int:
    """The most the decoder may hold for a width x height image handed out
    max_rows at a time (the coded width is at most the image's)."""
    blocks = -(-width // 4) * -(-height // 4)  # a sub-image at its finest (2-bit blocks)
    window = max(_WINDOW, 7 * width + 8)
    cap = min(width * height + _MAX_COPY + 1, 2 * window + (max_rows + 1) * width + 2 * _MAX_COPY)
    # predictor, cross-colour and entropy images; the group map; the palette;
    # the window; three rows of scratch
    return _FIXED + 3 * 4 * blocks + 4 * 65536 + 1024 + 4 * cap + 3 * 4 * width + TABLE_BYTES


def stream(data) -> memoryview | None:
    """What libwebp's VP8L decoder reads of a still WebP: from the VP8L chunk's
    payload to the end of `data` (not the chunk's size), or from the first byte
    after "WEBP" when a file without VP8X has a bare VP8L bitstream there. None
    when the first image is not VP8L. BadData where WebPDecode (which has all the data)
    refuses the container (src/dec/webp_dec.c: ParseRIFF, ParseVP8X,
    ParseOptionalChunks, ParseVP8Header)."""
    view = memoryview(data)
    size = len(view)
    if size < 12 or bytes(view[:4]) != b"RIFF" or bytes(view[8:12]) != b"WEBP":
        raise BadData("not a RIFF WebP")
    riff = struct.unpack_from("<I", view, 4)[0]
    if riff < 12 or riff > size - 8:
        raise BadData("WebP RIFF size does not match its data")
    pos = 12
    vp8x = False
    if size - pos >= 4 and bytes(view[pos : pos + 4]) == b"VP8X":
        if size - pos < 8 or struct.unpack_from("<I", view, pos + 4)[0] != 10:
            raise BadData("WebP VP8X chunk malformed")
        if size - pos < 18:
            raise BadData("WebP VP8X chunk cut short")
        canvas = (
            1 + int.from_bytes(view[pos + 12 : pos + 15], "little"),
            1 + int.from_bytes(view[pos + 15 : pos + 18], "little"),
        )
        vp8x = True
        pos += 18
        skipped = 18 + 4  # what ParseOptionalChunks counts against the RIFF size
        while True:
            if size - pos < 8:
                raise BadData("WebP chunks cut short")
            fourcc, length = struct.unpack_from("<4sI", view, pos)
            disk = (8 + length + 1) & ~1
            skipped += disk
            if skipped > riff:
                raise BadData("WebP chunk larger than its RIFF")
            if fourcc in (b"VP8 ", b"VP8L"):
                break
            if size - pos < disk:
                raise BadData("WebP chunk cut short")
            pos += disk
    if size - pos < 8:
        raise BadData("WebP image chunk cut short")
    fourcc, length = struct.unpack_from("<4sI", view, pos)
    if fourcc == b"VP8 ":
        return None
    if fourcc != b"VP8L":
        # No chunk header (only without VP8X): ParseVP8Header takes the data
        # itself as a VP8L bitstream when it has the signature, else as VP8.
        raw = view[pos:]
        return raw if raw[0] == 0x2F and not raw[4] >> 5 else None
    if length > riff - 12 or length > size - pos - 8:
        raise BadData("WebP VP8L chunk larger than its data")
    payload = view[pos + 8 :]
    if len(payload) < 5 or payload[0] != 0x2F or payload[4] >> 5:
        raise BadData("WebP VP8L header unreadable")
    if vp8x and size_of(payload) != canvas:
        raise BadData("WebP canvas and image sizes differ")
    return payload


def size_of(payload) -> tuple[int, int]:
    """(width, height) from a VP8L header (its signature byte, then 14 bits each)."""
    bits = int.from_bytes(payload[1:5], "little")
    return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1


class Decoder:
    """Rows of one VP8L stream, top to bottom, as (rows, width, bands) uint8
    arrays (bands 3: RGB, 4: RGBA, as libwebp's MODE_RGB/MODE_RGBA)."""

    def __init__(self, payload, width: int, height: int, bands: int, max_rows: int):
        lib = _load()
        if lib is None:
            raise BadData("the VP8L decoder is not built")
        vips.load()  # numpy
        self._lib, self.width, self.height, self.bands = lib, width, height, bands
        self.max_rows = max(1, min(max_rows, height, 65536))
        self._data = vips.np.frombuffer(payload, vips.np.uint8)  # no copy; kept alive here
        size = arena_bytes(width, height, self.max_rows)
        try:
            self._arena = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        except OSError as exc:  # ENOMEM: past the job's RLIMIT_AS, as a malloc would be
            raise MemoryError("no room for the VP8L decoder's arena") from exc
        self._anchor = ctypes.c_char.from_buffer(self._arena)  # closing waits for its release
        self._address = ctypes.addressof(self._anchor)
        info = (ctypes.c_int32 * 3)()
        status = lib.vp8l_open(
            self._data.ctypes.data, len(self._data), self._address, size, self.max_rows, info
        )
        if status == 0 and (info[0], info[1]) != (width, height):
            status = -1  # the caller's size is libwebp's reading of the same header
        if status != 0:
            self.close()
            _raise(status)
        self._out = vips.np.empty((self.max_rows, width, bands), vips.np.uint8)

    def rows(self, count: int):
        """The next `count` rows at most (fewer at the end; none after it)."""
        count = max(1, min(count, self.max_rows))
        got = self._lib.vp8l_rows(self._address, self._out.ctypes.data, self.bands, count)
        if got < 0:
            self.close()
            _raise(got)
        return self._out[:got]

    def close(self) -> None:
        if self._arena is not None:
            self._address = self._anchor = None
            self._arena.close()
            self._arena = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    _arena = None


def _raise(status: int):
    if _ERRORS.get(status) == "arena":
        raise MemoryError("the VP8L stream needs more decoder memory than allowed")
    raise BadData("WebP image data unreadable")


def decode_rgba(data) -> tuple[int, int, bytes]:
    """A whole still lossless WebP file as (width, height, RGBA bytes); for tests
    and the fuzzer, which compare it with libwebp's."""
    payload = stream(data)
    if payload is None:
        raise BadData("not a lossless WebP")
    width, height = size_of(payload)
    out = bytearray()
    with Decoder(payload, width, height, 4, band_rows(width, 4)) as decoder:
        while block := decoder.rows(decoder.max_rows).tobytes():
            out += block
    return width, height, bytes(out)
