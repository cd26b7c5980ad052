"""The worker-side JPEG header walk for the passthrough (`jpeg_header`).

Bounded by the caps of app.engine.structure; returns None for anything but the
plain case, which then goes to the sandbox.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from app.engine.structure import JPEG_MAX_SCANS, JPEG_MAX_SEGMENTS
from app.errors import ImageTooComplex

# --- JPEG header, for the passthrough written without a decoder --------------


@dataclass(frozen=True)
class JpegHeader:
    """What embedding a JPEG verbatim needs, read by a bounded walk of its markers.

    The same values Pillow's JPEG header parser gives img2pdf (mode from the
    component count, "adobe" from APP14, dpi from JFIF else Exif, the Exif
    orientation), for the plain case only: `jpeg_header` returns None for
    anything else, and the caller converts such a file in the sandbox.
    """

    width: int
    height: int
    components: int  # 1, 3 or 4 (L, RGB, CMYK)
    adobe: bool  # an APP14 "Adobe" segment: CMYK is stored inverted
    dpi: tuple[float, float] | None  # None: the file gives none (img2pdf's default)
    orientation: int  # Exif orientation 1-8 (1 when absent or invalid)


# SOF markers the passthrough takes: baseline, extended and progressive Huffman.
_PLAIN_SOF = {0xC0, 0xC1, 0xC2}
# Segments that may sit before the first scan without changing what img2pdf
# writes: tables (DQT, DHT, DRI), comments, and APP segments other than the few below.
_TABLES = {0xDB, 0xC4, 0xDD, 0xFE}


def jpeg_header(data: bytes) -> JpegHeader | None:
    """The header of a plain JPEG (8-bit, 1/3/4 components, one frame, no ICC
    profile, no XMP, no MPF), or None: then the sandboxed decoder path decides.

    Reads only segment lengths and a few fixed fields, never the entropy-coded
    data; every read is bounded by the segment it is in, and the walk stops at
    the first scan or after JPEG_MAX_SEGMENTS segments.
    """
    try:
        return _jpeg_header(data)
    except (struct.error, IndexError, ValueError):
        return None


def _jpeg_header(data: bytes) -> JpegHeader | None:
    if data[:3] != b"\xff\xd8\xff":
        return None
    pos, size = 2, len(data)
    sof: bytes | None = None
    jfif: bytes | None = None
    exif: bytes | None = None
    adobe = False
    for _ in range(JPEG_MAX_SEGMENTS):
        if pos + 4 > size or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        (length,) = struct.unpack_from(">H", data, pos + 2)
        end = pos + 2 + length
        if length < 2 or end > size:
            return None
        body = data[pos + 4 : end]
        if marker == 0xDA:
            break
        if marker in _PLAIN_SOF:
            if sof is not None:
                return None
            sof = body
        elif marker == 0xDB:
            if not _dqt_ok(body):
                return None  # Pillow refuses the file: the sandbox answers it
        elif marker == 0xE0:
            if body.startswith(b"JFIF"):
                if jfif is not None or len(body) < 12:
                    return None
                jfif = body
        elif marker == 0xE1:
            if exif is not None or not body.startswith(b"Exif\0\0"):
                return None  # XMP (Pillow reads an orientation there), or two Exif blocks
            exif = body[6:]
        elif marker == 0xE2:
            if body.startswith((b"ICC_PROFILE\0", b"MPF\0", b"FPXR\0")):
                return None
        elif marker == 0xEE:
            if body.startswith(b"Adobe"):
                if len(body) < 7:
                    return None
                adobe = True
        elif not (0xE3 <= marker <= 0xEF or marker in _TABLES):
            return None  # another SOF (arithmetic, lossless, 12-bit), DNL, DAC, ...
        pos = end
    else:
        return None
    if sof is None or len(sof) < 6 or sof[0] != 8:
        return None
    height, width = struct.unpack_from(">HH", sof, 1)
    components = sof[5]
    if width == 0 or height == 0 or components not in (1, 3, 4):
        return None
    if len(sof) != 6 + 3 * components:
        return None  # Pillow reads every 3 bytes after the count: a short tail fails it
    dpi: tuple[float, float] | None = None
    if jfif is not None:
        unit = jfif[7]
        density = struct.unpack_from(">HH", jfif, 8)
        if unit == 1:
            dpi = (float(density[0]), float(density[1]))
        elif unit == 2:
            dpi = (density[0] * 2.54, density[1] * 2.54)
    orientation = 1
    if exif is not None:
        tags = _exif_ifd0(exif)
        if tags is None:
            return None
        value = tags.get(0x0112)
        if value is not None:
            if not isinstance(value, int):
                return None
            orientation = value if 1 <= value <= 8 else 1
        if dpi is None:
            dpi = _exif_dpi(tags)
    return JpegHeader(width, height, components, adobe, dpi, orientation)


# Tables one DQT segment may hold here: four ids (0-3); more goes to the sandbox.
_DQT_MAX_TABLES = 4


def _dqt_ok(body: bytes) -> bool:
    """Pillow's DQT check (its open fails otherwise): whole tables of 1 + 64 bytes,
    or 1 + 128 when the precision nibble is set; at most _DQT_MAX_TABLES."""
    pos = 0
    for _ in range(_DQT_MAX_TABLES):
        if pos == len(body):
            return True
        pos += 1 + (64 if body[pos] < 16 else 128)
        if pos > len(body):
            return False
    return pos == len(body)


# Exif tags read here, with the one type each must have: (type, count).
_EXIF_TAGS = {0x0112: 3, 0x0128: 3, 0x011A: 5}
_EXIF_MAX_ENTRIES = 1024
# Bytes per value of the TIFF types Pillow reads (others it skips).
_TIFF_TYPE_SIZES = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8
}  # fmt: skip


def _exif_ifd0(exif: bytes) -> dict[int, object] | None:
    """Orientation, ResolutionUnit and XResolution from IFD0; None if unusual."""
    if exif[:4] == b"II*\0":
        order = "<"
    elif exif[:4] == b"MM\0*":
        order = ">"
    else:
        return None
    (offset,) = struct.unpack_from(order + "I", exif, 4)
    (count,) = struct.unpack_from(order + "H", exif, offset)
    if count > _EXIF_MAX_ENTRIES or offset + 2 + 12 * count > len(exif):
        return None
    tags: dict[int, object] = {}
    out_of_line = 0  # bytes of values stored elsewhere, summed as Pillow sums them
    for i in range(count):
        tag, kind, n = struct.unpack_from(order + "HHI", exif, offset + 2 + 12 * i)
        size = n * _TIFF_TYPE_SIZES.get(kind, 0)
        if size > 4:
            # Pillow skips the values past the stream's size in all and stops
            # reading IFD0 at one past its end: the tags it would not see go to
            # the sandbox, which reads them with Pillow.
            out_of_line += size
            (where,) = struct.unpack_from(order + "I", exif, offset + 2 + 12 * i + 8)
            if out_of_line > len(exif) or where + size > len(exif):
                return None
        if tag not in _EXIF_TAGS:
            continue
        if tag in tags or kind != _EXIF_TAGS[tag] or n != 1:
            return None
        field = offset + 2 + 12 * i + 8
        if kind == 3:
            (tags[tag],) = struct.unpack_from(order + "H", exif, field)
        else:
            (where,) = struct.unpack_from(order + "I", exif, field)
            if where + 8 > len(exif):
                return None
            tags[tag] = struct.unpack_from(order + "II", exif, where)
    return tags


def _exif_dpi(tags: dict[int, object]) -> tuple[float, float]:
    """Pillow's dpi from Exif: XResolution for both axes (x 2.54 for unit 3, cm);
    72 when the unit or the resolution is missing or the rational is 0/0-like."""
    unit, resolution = tags.get(0x0128), tags.get(0x011A)
    if unit is None or resolution is None:
        return (72.0, 72.0)
    numerator, denominator = resolution  # type: ignore[misc]
    if denominator == 0:
        return (72.0, 72.0)
    dpi = numerator / denominator
    if unit == 3:
        dpi *= 2.54
    return (dpi, dpi)


# --- the end of the scans, for a file that does not end with EOI -------------

# A marker: 0xFF then a byte that is neither stuffing (0x00), a restart marker
# (RST0-7, part of the entropy-coded data), nor fill (0xFF). Entropy-coded data
# never holds one, so the next match after a scan header is the scan's end.
_MARKER = re.compile(b"\xff[^\x00\xd0-\xd7\xff]")
# Markers that stand alone (no length field): SOI, EOI, TEM.
_STANDALONE = {0xD8, 0xD9, 0x01}
# Segments and scans walked in all: a progressive file has ~10 scans with a
# table segment or two each; more is refused as the header walk refuses it.
_MAX_MARKERS = JPEG_MAX_SEGMENTS + 4 * JPEG_MAX_SCANS


def has_scan(data: bytes) -> bool:
    """Whether a scan header (SOS) comes before the first EOI: a file of headers
    alone that ends with EOI holds no image (Pillow cannot load it), though
    img2pdf embeds it. `reaches_eoi`'s walk, stopped at the first scan."""
    return _walk(data, stop_at_scan=True)


def reaches_eoi(data: bytes) -> bool:
    """Whether the JPEG's segments and scans are followed by an EOI marker.

    A walk over marker segments by their lengths and over entropy-coded data by
    a search for the next marker (in C, linear in the file); nothing decodes.
    False when the file ends first (cut short) or the EOI comes before any
    scan (Pillow cannot load such a file). ImageTooComplex beyond
    _MAX_MARKERS markers. Data after the EOI (camera trailers) is not read.
    """
    return _walk(data, stop_at_scan=False)


def _walk(data: bytes, stop_at_scan: bool) -> bool:
    """True at an EOI after a scan (or, with `stop_at_scan`, at the first scan);
    False at an EOI before any scan, or where the file ends or a segment's
    length does not fit in it."""
    pos, size = 2, len(data)
    scans = 0
    for _ in range(_MAX_MARKERS):
        found = _MARKER.search(data, pos)
        if found is None:
            return False
        marker = data[found.start() + 1]
        pos = found.end()
        if marker == 0xD9:
            return scans > 0  # an EOI before any scan ends headers, not an image
        if marker == 0xDA:
            if stop_at_scan:
                return True
            scans += 1
        if marker in _STANDALONE:
            continue
        if pos + 2 > size:
            return False
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > size:
            return False
        pos += length  # after SOS, the search steps over the scan's data
    raise ImageTooComplex()
