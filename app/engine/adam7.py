"""Interlaced (Adam7) PNG in bands: the seven passes read side by side, bounded memory.

Every PNG colour type and bit depth: 16-bit kept at 16, grey under 8 bits
expanded to 8, palettes as indices, grey/RGB tRNS as an alpha of 0 or full.
"""

from __future__ import annotations

import zlib

from PIL import Image

from app.engine import vips
from app.engine.png_strips import FEED_BYTES, BadData, _up

# Adam7: (x0, y0, dx, dy) of the 7 passes, stored one after another.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)
_ADAM7_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _adam7_passes(width: int, height: int, bits: int):
    """(x0, y0, dx, dy, pass width, pass height, row bytes) of each non-empty pass,
    for `bits` per pixel (PNG rows are whole bytes, their filter type first)."""
    passes = []
    for x0, y0, dx, dy in ADAM7:
        pw, ph = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pw > 0 and ph > 0:
            passes.append((x0, y0, dx, dy, pw, ph, 1 + (pw * bits + 7) // 8))
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


def _pieces(part: memoryview):
    return [part[at : at + FEED_BYTES] for at in range(0, len(part), FEED_BYTES)]


def _unfilter(raw: bytes, prev: bytes | None, rows: int, bpp: int):
    """`rows` filtered PNG rows of `bpp` bytes per pixel (1 for bit depths under 8),
    unfiltered by Pillow's PNG decoder (in C; Avg and Paeth go pixel by pixel):
    (rows, row bytes) uint8. The row above, if any, goes first as an unfiltered
    row so that the first row's Up/Avg/Paeth see it. PNG filters work on each
    byte against the same byte of the pixel to the left, so 6 and 8 bytes per
    pixel (16-bit RGB, RGBA) are two independent halves of 3 and 4."""
    filtered = vips.np.frombuffer(raw, vips.np.uint8).reshape(rows, -1)
    types, body = filtered[:, :1], filtered[:, 1:]
    length = body.shape[1]
    pixels = body.reshape(rows, length // bpp, bpp)
    above = None
    if prev is not None:
        above = vips.np.frombuffer(prev, vips.np.uint8).reshape(length // bpp, bpp)
    half = bpp // 2 if bpp > 4 else bpp
    out = vips.np.empty((rows, length // bpp, bpp), vips.np.uint8)
    for lane in range(0, bpp, half):
        group = vips.np.ascontiguousarray(pixels[:, :, lane : lane + half]).reshape(rows, -1)
        data = vips.np.concatenate([types, group], axis=1).tobytes()
        if above is not None:
            data = b"\x00" + above[:, lane : lane + half].tobytes() + data
        unfiltered = _pillow_unfilter(data, length // bpp, half, above is not None)
        out[:, :, lane : lane + half] = unfiltered
    return out.reshape(rows, length)


def _pillow_unfilter(data: bytes, width: int, bpp: int, skip_first: bool):
    mode = _ADAM7_MODES[bpp]
    rows = len(data) // (1 + width * bpp)
    image = Image.frombytes(mode, (width, rows), zlib.compress(data, 0), "zip", mode)
    samples = vips.np.asarray(image).reshape(rows, width, bpp)
    return samples[1:] if skip_first else samples


# PNG colour type -> channels in the file.
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def adam7_strips(idat, width: int, height: int, colours: int, alpha: bool, opacity=None, **how):
    """(colour, alpha) rows, Up-filtered, of an Adam7-interlaced PNG, without its
    whole frame: one inflater per pass, all advanced together band by band (8
    rows or more), each pass's rows unfiltered against that pass's row above and
    scattered into the band. `idat` yields the IDAT payloads; rows must hold
    filter types 0-4 and be all there.

    `how`: depth (1, 2, 4, 8 or 16) and colour_type (PNG's) of the file, default
    8-bit grey/RGB (+alpha) from `colours` and `alpha`; `key`: a grey/RGB tRNS
    colour (raw sample values) drawn transparent. 16-bit samples stay 16-bit,
    big-endian (alpha too); grey under 8 bits is scaled to 8 as libpng and
    Pillow expand it; of a `key` sample only its low `depth` bits count, as in
    libpng. `opacity`: for a palette PNG (indices out), the alpha of each of
    the 256 indices (from tRNS); the alpha rows are looked up from it."""
    vips.load()
    np = vips.np
    depth = how.get("depth", 8)
    colour_type = how.get("colour_type", {1: 0, 3: 2}[colours] + (4 if alpha else 0))
    if opacity is not None or colour_type == 3:
        colour_type = 3
    key = how.get("key")
    if key is not None:  # libpng keeps a tRNS sample's low `depth` bits
        key = tuple(k & ((1 << depth) - 1) for k in key)
    channels = CHANNELS[colour_type]
    bits = depth * channels
    bpp = max(1, bits // 8)
    size = 2 if depth == 16 else 1  # bytes per output sample
    cell = channels * size if depth >= 8 else 1  # band bytes per pixel
    lut = np.frombuffer(opacity, np.uint8) if opacity is not None else None
    key_bytes = None
    if key is not None:
        key_bytes = np.frombuffer(b"".join(k.to_bytes(size, "big") for k in key), np.uint8)
    # In pieces of FEED_BYTES: a call cut short by its output limit copies the
    # input it left, so a whole multi-megabyte IDAT fed at once cost its square.
    parts = [piece for part in idat for piece in _pieces(memoryview(part))]
    passes = _adam7_passes(width, height, bits)
    readers = _adam7_readers(parts, passes)
    prev: list[bytes | None] = [None] * len(passes)
    band = max(8, vips.STRIP_BYTES // max(1, width * cell) // 8 * 8)
    last_colour = last_alpha = None
    for y0 in range(0, height, band):
        y1 = min(y0 + band, height)
        strip = np.empty((y1 - y0, width, cell), np.uint8)
        for p, (x0, py0, dx, dy, pw, ph, row) in enumerate(passes):
            first = max(0, -(-(y0 - py0) // dy))
            stop = min(ph, -(-(y1 - py0) // dy))
            n = stop - first
            if n <= 0:
                continue
            raw = readers[p].read(n * row)
            if int(np.frombuffer(raw, np.uint8)[::row].max()) > 4:
                raise BadData("unknown PNG filter type")
            rows = _unfilter(raw, prev[p], n, bpp)
            prev[p] = rows[-1].tobytes()
            top = py0 + first * dy - y0
            strip[top : top + (n - 1) * dy + 1 : dy, x0::dx] = _samples(rows, pw, depth, cell)
        yield_colour, yield_alpha = _split(strip, colour_type, depth, size, lut, key_bytes, key)
        colour_out = _up(yield_colour, last_colour)
        last_colour = yield_colour[-1].copy()
        alpha_out = None
        if yield_alpha is not None:
            alpha_out = _up(yield_alpha, last_alpha)
            last_alpha = yield_alpha[-1].copy()
        yield colour_out, alpha_out


def _samples(rows, pw: int, depth: int, cell: int):
    """Unfiltered pass rows -> (n, pw, cell) bytes; under 8 bits, one value a pixel."""
    n = rows.shape[0]
    if depth >= 8:
        return rows[:, : pw * cell].reshape(n, pw, cell)
    shifts = vips.np.arange(8 - depth, -1, -depth, dtype=vips.np.uint8)
    values = (rows[:, :, None] >> shifts) & ((1 << depth) - 1)
    return values.reshape(n, -1)[:, :pw].reshape(n, pw, 1)


def _split(strip, colour_type: int, depth: int, size: int, lut, key_bytes, key):
    """A band's (colour rows, alpha rows or None), each (rows, row bytes)."""
    np = vips.np
    n, width, _ = strip.shape
    if colour_type == 3:  # palette: indices, alpha looked up from tRNS
        indices = np.ascontiguousarray(strip[..., 0])
        return indices, (lut[indices] if lut is not None else None)
    colours = 1 if colour_type in (0, 4) else 3
    if depth < 8:  # grey 1, 2, 4 bits: expanded to 8 (x255, x85, x17)
        values = strip[..., 0]
        colour = values * np.uint8(255 // ((1 << depth) - 1))
        alpha = None
        if key is not None:
            alpha = np.where(values == key[0], 0, 255).astype(np.uint8)
        return np.ascontiguousarray(colour), alpha
    colour = np.ascontiguousarray(strip[..., : colours * size]).reshape(n, -1)
    if colour_type in (4, 6):
        return colour, np.ascontiguousarray(strip[..., colours * size :]).reshape(n, -1)
    if key is None:
        return colour, None
    opaque = np.full((n, width), 255, np.uint8)
    if key_bytes is not None:
        opaque[(strip[..., : colours * size] == key_bytes).all(axis=-1)] = 0
    return colour, np.repeat(opaque, size, axis=1) if size == 2 else opaque
