"""Interlaced (Adam7) PNG in bands: the seven passes read side by side, bounded memory."""

from __future__ import annotations

import zlib

from PIL import Image

from app.engine import vips
from app.engine.png_strips import BadData, _up

# Adam7: (x0, y0, dx, dy) of the 7 passes, stored one after another.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)
_ADAM7_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _adam7_passes(width: int, height: int, bands: int):
    """(x0, y0, dx, dy, pass width, pass height, row bytes) of each non-empty pass."""
    passes = []
    for x0, y0, dx, dy in ADAM7:
        pw, ph = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pw > 0 and ph > 0:
            passes.append((x0, y0, dx, dy, pw, ph, 1 + pw * bands))
    return passes


class _PassReader:
    """An inflater positioned at the start of one pass, reading its rows in order."""

    def __init__(self, inflater, parts, index: int, offset: int):
        self.inflater = inflater
        self.parts = parts
        self.index = index
        self.tail = parts[index][offset:] if index < len(parts) else b""

    def read(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            if not self.tail:
                self.index += 1
                if self.inflater.eof or self.index >= len(self.parts):
                    raise BadData("image data cut short")
                self.tail = self.parts[self.index]
                continue
            try:
                chunk = self.inflater.decompress(self.tail, n - len(out))
            except zlib.error:
                raise BadData("corrupt image data") from None
            self.tail = self.inflater.unconsumed_tail
            out += chunk
            if self.inflater.eof and len(out) < n:
                raise BadData("image data cut short")
        return bytes(out)


def _adam7_readers(parts, passes) -> list[_PassReader]:
    """Inflate once, only counting bytes, and keep a copy of the inflater (its
    state and 32 KB window) where each pass starts. zlib, not ISA-L: ISA-L's
    inflater cannot be copied."""
    starts = []
    total = 0
    for *_, ph, row in passes:
        starts.append(total)
        total += ph * row
    inflater = zlib.decompressobj()
    readers: list[_PassReader] = []
    produced = 0
    for index, part in enumerate(parts):
        tail = part
        while produced < total:
            while len(readers) < len(starts) and starts[len(readers)] == produced:
                offset = len(part) - len(tail)
                readers.append(_PassReader(inflater.copy(), parts, index, offset))
            if not tail or inflater.eof:
                break
            room = min(total - produced, 1 << 20)
            if len(readers) < len(starts):
                room = min(room, starts[len(readers)] - produced)
            try:
                produced += len(inflater.decompress(tail, room))
            except zlib.error:
                raise BadData("corrupt image data") from None
            tail = inflater.unconsumed_tail
        if produced == total:
            break
    if produced != total or len(readers) != len(passes):
        raise BadData("image data cut short")
    return readers


def _unfilter(raw: bytes, prev: bytes | None, width: int, rows: int, bands: int):
    """`rows` filtered PNG rows of 8-bit samples, unfiltered by Pillow's PNG decoder
    (in C; Avg and Paeth go pixel by pixel): the row above, if any, goes first as
    an unfiltered row so that the first row's Up/Avg/Paeth see it."""
    mode = _ADAM7_MODES[bands]
    if prev is not None:
        raw = b"\x00" + prev + raw
        rows += 1
    image = Image.frombytes(mode, (width, rows), zlib.compress(raw, 0), "zip", mode)
    samples = vips.np.asarray(image).reshape(rows, width, bands)
    return samples[1:] if prev is not None else samples


def adam7_strips(idat, width: int, height: int, colours: int, alpha: bool, opacity=None):
    """(colour, alpha) rows, Up-filtered, of an 8-bit Adam7-interlaced grey, RGB,
    grey+alpha or RGBA PNG, without its whole frame: one inflater per pass, all
    advanced together band by band (8 rows or more), each pass's rows unfiltered
    against that pass's row above and scattered into the band. `idat` yields
    the IDAT payloads; rows must hold filter types 0-4 and be all there.
    `opacity`: for a palette PNG (colours 1: indices), the alpha of each of the
    256 indices (from tRNS); the alpha rows are looked up from it."""
    vips.load()
    bands = colours + (1 if alpha and opacity is None else 0)
    lut = vips.np.frombuffer(opacity, vips.np.uint8) if opacity is not None else None
    parts = [part for part in idat if len(part)]
    passes = _adam7_passes(width, height, bands)
    readers = _adam7_readers(parts, passes)
    prev: list[bytes | None] = [None] * len(passes)
    band = max(8, vips.STRIP_BYTES // max(1, width * bands) // 8 * 8)
    last_colour = last_alpha = None
    for y0 in range(0, height, band):
        y1 = min(y0 + band, height)
        strip = vips.np.empty((y1 - y0, width, bands), vips.np.uint8)
        for p, (x0, py0, dx, dy, pw, ph, row) in enumerate(passes):
            first = max(0, -(-(y0 - py0) // dy))
            stop = min(ph, -(-(y1 - py0) // dy))
            n = stop - first
            if n <= 0:
                continue
            raw = readers[p].read(n * row)
            if int(vips.np.frombuffer(raw, vips.np.uint8)[::row].max()) > 4:
                raise BadData("unknown PNG filter type")
            samples = _unfilter(raw, prev[p], pw, n, bands)
            prev[p] = samples[-1].tobytes()
            top = py0 + first * dy - y0
            strip[top : top + (n - 1) * dy + 1 : dy, x0::dx] = samples
        rows = strip.reshape(y1 - y0, width, bands)
        colour_rows = vips.np.ascontiguousarray(rows[..., :colours]).reshape(y1 - y0, -1)
        colour_out = _up(colour_rows, last_colour)
        last_colour = colour_rows[-1].copy()
        alpha_out = None
        if alpha:
            if lut is not None:
                alpha_rows = lut[colour_rows]
            else:
                alpha_rows = vips.np.ascontiguousarray(rows[..., colours])
            alpha_out = _up(alpha_rows, last_alpha)
            last_alpha = alpha_rows[-1].copy()
        yield colour_out, alpha_out
