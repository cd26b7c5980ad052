"""Truncation checks img2pdf does not do: a cut JPEG or PNG would embed silently."""

from __future__ import annotations

import math
import struct
import zlib

from isal import isal_zlib
from PIL import Image

from app.engine.facts import _Facts, _png_chunks
from app.engine.jpeg_header import reaches_eoi
from app.engine.png_strips import FEED_BYTES
from app.errors import InvalidImage


def _ends_with_eoi(data: bytes) -> bool:
    """A JPEG whose last marker is EOI (FF D9) was not cut short.

    Byte stuffing keeps FF D9 out of entropy-coded data, so a download cut at a
    random point practically never ends on it. This skips the decode for the
    common case: the check cost 55 of 75 ms on a 12 MP JPEG.
    """
    return data[-64:].rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")


def _check_jpeg(im: Image.Image, data: bytes, progressive: bool) -> None:
    """img2pdf embeds truncated JPEGs silently: a file that does not end with EOI
    is walked to its scans' end (`reaches_eoi`, no decoder). Found: complete
    (data after the EOI is a trailer). Not found: a progressive file is cut
    short, which is what Pillow's decode concludes for every such file (it
    raises "image file is truncated"), without libjpeg holding all of its DCT
    coefficients (8 B/px for CMYK) to say so; a baseline one keeps the 1/8-scale
    decode (streamed, so bounded), which accepts some files that end early."""
    if reaches_eoi(data):
        return
    if progressive:
        raise InvalidImage()
    im.draft(im.mode, (1, 1))
    im.load()


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
# Output asked of the inflater per call.
_CHECK_STEP = 1 << 20


def _check_png_crcs(data: bytes) -> None:
    """Refuse a PNG whose critical chunk (IHDR, PLTE, IDAT, IEND) has a wrong CRC,
    as libpng does by default and libvips (fail_on=error) does over it; an
    ancillary chunk's bad CRC is, as there, not an error. Pillow checks every
    chunk before IDAT but not IDAT's: the routes that copy or split IDAT, and
    Pillow's, would otherwise take a damaged file the libvips route refuses.
    ISA-L's CRC-32: ~0.3-0.6 ms for 8 MiB."""
    view = memoryview(data)
    pos = 8
    try:
        while pos + 8 <= len(data):  # a file cut short: each route says how it ends
            length, ctype = struct.unpack_from(">I4s", data, pos)
            start, end = pos + 8, pos + 8 + length
            if end + 4 > len(data):
                return
            if not ctype[0] & 0x20:  # upper-case first letter: critical
                crc = isal_zlib.crc32(view[start:end], isal_zlib.crc32(ctype))
                if crc != int.from_bytes(view[end : end + 4], "big"):
                    raise InvalidImage()
            if ctype == b"IEND":
                return
            pos = end + 4
    finally:
        view.release()


def _check_png(data: bytes, facts: _Facts) -> None:
    """img2pdf copies IDAT without looking: inflate it (streaming, bounded memory) to
    make sure the chunks are complete and hold exactly the rows the header promises.

    Inflating stops at the expected size + 1 byte: a stream that would give more
    (a 20 MB IDAT of 20 GiB of zeros took 344 s here, and was then stored) is
    refused, as is any data after the stream's end. The stored PDF never carries
    more than its pixels need. The input goes in FEED_BYTES at a time: a call cut
    short by its output limit copies the input it left, so a whole 4 MB IDAT fed
    at once cost the square of its size.
    """
    width, height = struct.unpack_from(">II", data, 16)
    expected = _png_raw_size(width, height, facts)
    # Each row starts with its filter type (0-4): readers refuse others, so a PDF
    # carrying one would hold an image nobody decodes. Checked for plain rows only.
    row = 0 if facts.png_interlaced else _png_raw_size(width, 1, facts)
    inflater = isal_zlib.decompressobj()  # ISA-L: ~3x zlib's speed (docs/performance.md)
    produced = 0

    def inflate(pending) -> bytes:
        nonlocal produced
        rows = inflater.decompress(pending, min(expected + 1 - produced, _CHECK_STEP))
        if row and rows[(-produced) % row :: row].translate(None, _PNG_FILTERS):
            raise InvalidImage()
        produced += len(rows)
        if produced > expected:
            raise InvalidImage()
        return rows

    view = memoryview(data)
    try:
        for ctype, start, end in _png_chunks(data):
            if ctype != b"IDAT" or start == end:
                continue
            for at in range(start, end, FEED_BYTES):
                if inflater.eof:
                    raise InvalidImage()  # compressed data after the end of the stream
                pending = view[at : min(at + FEED_BYTES, end)]
                while pending and not inflater.eof:
                    inflate(pending)
                    pending = inflater.unconsumed_tail
                if inflater.unused_data:
                    raise InvalidImage()
        # The input is used up, but a call cut short by its output limit can still
        # hold output (the rest of a long match, or of a run of zeros).
        while not inflater.eof and inflate(b""):
            pass
    except (zlib.error, isal_zlib.error):
        raise InvalidImage() from None
    finally:
        view.release()
    if not inflater.eof or produced < expected:
        raise InvalidImage()
