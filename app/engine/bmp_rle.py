"""BI_RLE8 / BI_RLE4 BMP pixels in segments of at most a strip, as Pillow reads them.

Pillow's BmpRleDecoder (PIL/BmpImagePlugin.py) is the reference: its pixels are
what the service drew before, so `_run` follows it step for step, quirks
included. The decoder fills the image in stream order (the bottom row first in
a bottom-up file) as one run of `width * height` indices:

- an encoded run (count, index) writes `count` pixels, cut at the end of the
  row its `x` says it is in (RLE4: the two nibbles in turn, high first);
- 0 0 (end of line) pads with index 0 to the next row boundary of the output
  (nothing at a boundary); 0 1 (end of bitmap) stops;
- 0 2 dx dy (delta) writes index 0 for dx + dy * width pixels, cut at the end;
- 0 n (n >= 3, absolute) copies n indices (RLE4: n nibbles) cut only at the end
  of the image, so it may run on into the next row; then the file position is
  aligned to an even byte (of the file, not of the stream).

A stream that stops before every pixel is written (end of bitmap early, the
file ends) is refused, as Pillow refuses it ("not enough image data").

Memory is O(strip): `strips` first runs the stream once without writing
pixels and notes the decoder's state (file position, pixels written, x) at the
start of the op that first writes into each segment; then it decodes each
segment again from its note, in the PDF's order (top row first: a bottom-up
file's segments last to first). Work is O(stream bytes + pixels): every op
reads at least two bytes, writes only its own pixels, and each segment
replays at most one op started before it.
"""

from __future__ import annotations

import re

from app.engine import vips
from app.errors import InvalidImage

# ASCII hex digits -> their values: bytes.hex() splits a byte into its nibbles.
_NIBBLES = bytes.maketrans(b"0123456789abcdef", bytes(range(16)))
# Encoded runs back to back (a count byte that is not 0, any index): taken in
# batches of _MIN_BATCH to _BATCH by numpy. The cap bounds what a segment's
# decode reads past its end.
_ENCODED = re.compile(rb"(?:[\x01-\xff][\x00-\xff])+")
_MIN_BATCH, _BATCH = 8, 4096


def _run(data, state, total: int, width: int, rle4: bool, lo: int, hi: int, out, bounds=None):
    """Pillow's decoder from `state` = (file position, pixels written, x) until
    `hi` pixels are written, the stream ends or `total` is reached. Pixels in
    [lo, hi) go to `out` (a zeroed bytearray of hi - lo). With `bounds` (sorted
    pixel positions), writes nothing and returns, for each bound, the state at
    the start of the op that first writes past it. Returns (state, notes)."""
    pos, n, x = state
    size = len(data)
    np = vips.np
    notes = []
    bound_at = 0
    next_bound = bounds[0] if bounds else total + 1
    stop = min(hi, total)
    while n < stop:
        if pos + 2 > size:
            break
        start = (pos, n, x)
        count = data[pos]
        value = data[pos + 1]
        pos += 2
        if count and pos + 2 < size and data[pos] and np is not None:
            # Two encoded runs or more in a row: up to _BATCH at once in numpy.
            batch = _ENCODED.match(data, pos - 2, min(size, pos - 2 + 2 * _BATCH))
            runs = (batch.end() - pos + 2) // 2
            if runs >= _MIN_BATCH:
                made, found = _batch(
                    data, pos - 2, runs, n, x, width, rle4, lo, hi, out, bounds, bound_at
                )
                if found:
                    notes.extend(found)
                    bound_at += len(found)
                    next_bound = bounds[bound_at] if bound_at < len(bounds) else total + 1
                pos += 2 * runs - 2
                n += made
                x += made
                continue
        if count:  # encoded run, cut at the end of the row x is in
            if x + count > width:
                count = max(0, width - x)
            if out is not None and count:
                a, b = max(n, lo), min(n + count, hi)
                if a < b:
                    if rle4:
                        pattern = bytes((value >> 4, value & 15)) * ((b - a) // 2 + 2)
                        skip = (a - n) % 2
                        out[a - lo : b - lo] = pattern[skip : skip + b - a]
                    else:
                        out[a - lo : b - lo] = bytes((value,)) * (b - a)
            n += count
            x += count
        elif value == 0:  # end of line: index 0 to the output's next row boundary
            if n % width:
                n += width - n % width
            x = 0
        elif value == 1:  # end of bitmap
            break
        elif value == 2:  # delta: index 0 for right + up rows
            if pos + 2 > size:
                break
            n += min(total - n, data[pos] + data[pos + 1] * width)
            pos += 2
            x = n % width
        else:  # absolute run of `value` indices, cut only at the image's end
            count = min(total - n, value)
            wanted = (count + 1) // 2 if rle4 else count
            got = min(wanted, size - pos)
            made = got + min(got, count // 2) if rle4 else got
            if out is not None and made:
                a, b = max(n, lo), min(n + made, hi)
                if a < b:
                    if rle4:
                        first = pos + (a - n) // 2
                        nibbles = data[first : pos + (b - n + 1) // 2].hex().encode()
                        skip = (a - n) % 2
                        out[a - lo : b - lo] = nibbles.translate(_NIBBLES)[skip : skip + b - a]
                    else:
                        out[a - lo : b - lo] = data[pos + a - n : pos + b - n]
            pos += got
            n += made
            if got < wanted or n == total:
                if bounds is not None and n > next_bound:
                    notes.extend([start] * _passed(bounds, bound_at, n))
                break
            x += value
            pos += pos % 2  # Pillow aligns the file position to 16 bits
        if n > next_bound:
            passed = _passed(bounds, bound_at, n)
            notes.extend([start] * passed)
            bound_at += passed
            next_bound = bounds[bound_at] if bound_at < len(bounds) else total + 1
    return (pos, n, x), notes


def _batch(
    data, pos: int, runs: int, n: int, x: int, width: int, rle4: bool, lo, hi, out, bounds, at
):
    """`runs` encoded runs from `pos` at once, as `_run` takes them one by one:
    each cut at the end of the row x is in (so they never cross a row of the
    output). Writes the pixels in [lo, hi) to `out`; with `bounds`, returns the
    notes for bounds[at:] the runs pass. Returns (pixels written, notes)."""
    np = vips.np
    pairs = np.frombuffer(data, np.uint8, 2 * runs, pos)
    ends = np.minimum(np.cumsum(pairs[0::2], dtype=np.int64), max(0, width - x))
    made = int(ends[-1])
    notes = []
    if bounds is not None:
        while at + len(notes) < len(bounds) and bounds[at + len(notes)] < n + made:
            i = int(np.searchsorted(ends, bounds[at + len(notes)] - n, "right"))
            before = int(ends[i - 1]) if i else 0
            notes.append((pos + 2 * i, n + before, x + before))
    if out is None or made == 0:
        return made, notes
    a, b = max(n, lo), min(n + made, hi)
    if a >= b:
        return made, notes
    first = int(np.searchsorted(ends, a - n, "right"))
    last = int(np.searchsorted(ends, b - n - 1, "right"))
    starts = np.concatenate(([0], ends[:-1]))[first : last + 1]
    lengths = ends[first : last + 1] - starts
    values = pairs[1::2][first : last + 1]
    pixels = np.repeat(values, lengths)
    if rle4:  # high nibble on each run's even pixels, low on its odd ones
        offsets = np.arange(pixels.size) - np.repeat(starts - starts[0], lengths)
        pixels = np.where(offsets % 2 == 0, pixels >> 4, pixels & 15).astype(np.uint8)
    skip = a - n - int(starts[0])
    np.frombuffer(out, np.uint8)[a - lo : b - lo] = pixels[skip : skip + b - a]
    return made, notes


def _passed(bounds, at: int, n: int) -> int:
    """How many of bounds[at:] lie below `n`."""
    count = 0
    while at + count < len(bounds) and bounds[at + count] < n:
        count += 1
    return count


def segments(width: int, height: int) -> list[tuple[int, int, int]]:
    """(first stream row, first pixel, last pixel + 1) of each segment, in stream
    order: bands of whole rows of at most a strip, or pieces of one row for rows
    wider than a strip."""
    strip = vips.STRIP_BYTES
    if width <= strip:
        rows = max(1, strip // width)
        return [(r, r * width, min(r + rows, height) * width) for r in range(0, height, rows)]
    return [
        (r, r * width + c, r * width + min(c + strip, width))
        for r in range(height)
        for c in range(0, width, strip)
    ]


def strips(data, offset: int, width: int, height: int, rle4: bool, top_down: bool):
    """The indices (8-bit, one per pixel) of an RLE BMP as pdfwriter strips, top
    row first: (rows, None), each row with its PNG filter type first (Up for
    bands of whole rows, None for the pieces of a wide row). InvalidImage when
    the stream writes fewer than every pixel (before anything is yielded)."""
    vips.load()
    np = vips.np
    total = width * height
    parts = segments(width, height)
    bounds = [first for _, first, _ in parts]
    (_, written, _), notes = _run(data, (offset, 0, 0), total, width, rle4, 0, total, None, bounds)
    if written < total:
        raise InvalidImage()
    order = range(len(parts)) if top_down else range(len(parts) - 1, -1, -1)
    if width > vips.STRIP_BYTES:  # pieces: a row's own pieces stay left to right
        per_row = -(-width // vips.STRIP_BYTES)
        order = [
            row * per_row + piece
            for row in (range(height) if top_down else range(height - 1, -1, -1))
            for piece in range(per_row)
        ]
    prev = np.zeros(width, np.uint8) if width <= vips.STRIP_BYTES else None
    for index in order:
        _, lo, hi = parts[index]
        out = bytearray(hi - lo)
        _run(data, notes[index], total, width, rle4, lo, hi, out)
        if prev is None:
            yield (b"\0" if lo % width == 0 else b"") + out, None
            continue
        rows = np.frombuffer(out, np.uint8).reshape(-1, width)
        if not top_down:
            rows = rows[::-1]
        filtered = np.empty((rows.shape[0], width + 1), np.uint8)
        filtered[:, 0] = 2
        np.subtract(rows[0], prev, out=filtered[0, 1:])
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        prev = rows[-1].copy()
        yield filtered, None
