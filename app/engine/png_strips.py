"""PNG-filtered strips read straight from a PNG's IDAT (8- and 16-bit, alpha split)."""

from __future__ import annotations

from isal import isal_zlib

from app.engine import vips

# Compressed bytes handed to the inflater at a time. Each call that stops at its
# output limit copies the input it left (`unconsumed_tail`): fed a whole 4 MB IDAT
# (one chunk, as some encoders write), that copying grew with the square of the
# chunk and cost 2 MP ~8 ms.
FEED_BYTES = 64 * 1024


class BadData(ValueError):
    """The PNG's image data is not what its header promises (the caller: 422)."""


def png_filtered_strips(idat, width: int, height: int, colours: int):
    """(colour, alpha) rows of an 8-bit non-interlaced grey+alpha or RGBA PNG,
    split straight from its inflated, still-filtered data.

    PNG filters work byte by byte against the same byte of the pixel to the left
    and of the row above, so for 8-bit samples each channel's filtered bytes
    depend only on that channel: the filtered rows split into a colour and an
    alpha image are valid filtered rows of each, with the same filter type. No
    sample is unfiltered or decoded; the data is only inflated (ISA-L) up to the
    `height` rows the header gives, checked to hold them with filter types 0-4,
    and re-deflated; anything after them is not read.
    `idat` yields the IDAT payloads in order.
    """
    vips.load()
    bands = colours + 1
    row = 1 + width * bands
    expected = row * height
    if row > vips.STRIP_BYTES:
        yield from _wide_rows(_inflated(idat, expected, vips.STRIP_BYTES), width, height, colours)
        return
    rows_per_strip = max(1, min(height, vips.STRIP_BYTES // row))
    split = _Splitter(rows_per_strip, width, colours)
    strip = bytearray(rows_per_strip * row)  # a strip that spans inflate chunks
    filled = 0
    done = 0
    for chunk in _inflated(idat, expected, rows_per_strip * row):
        view = memoryview(chunk)
        while view:
            want = min(rows_per_strip, height - done) * row
            if filled == 0 and len(view) >= want:  # a whole strip in one chunk: no copy
                yield split(view[:want], want // row)
                view = view[want:]
            else:
                take = min(len(view), want - filled)
                strip[filled : filled + take] = view[:take]
                filled += take
                view = view[take:]
                if filled < want:
                    continue
                yield split(strip, want // row)
                filled = 0
            done += want // row
    if done != height:  # a partly filled strip leaves `done` short too
        raise BadData("image data cut short")


def _inflated(idat, expected: int, step: int):
    """The first `expected` bytes the IDAT payloads inflate to, `step` at most at
    a time. What follows them (more rows, bytes after the stream) is not read:
    Pillow and libvips ignore it too, and the PDF, deflated anew, carries none of it."""
    inflater = isal_zlib.decompressobj()
    produced = 0
    for part in idat:
        view = memoryview(part)
        for at in range(0, len(view), FEED_BYTES):
            tail = view[at : at + FEED_BYTES]
            while tail and produced < expected and not inflater.eof:
                try:
                    chunk = inflater.decompress(tail, min(expected - produced, step))
                except isal_zlib.error:
                    raise BadData("corrupt image data") from None
                produced += len(chunk)
                tail = inflater.unconsumed_tail
                if chunk:
                    yield chunk
        if produced == expected:
            return
    # The input is used up, but a call cut short by its output limit can still hold
    # output (the rest of a long match): ask for it until there is none.
    while produced < expected and not inflater.eof:
        try:
            chunk = inflater.decompress(b"", min(expected - produced, step))
        except isal_zlib.error:
            raise BadData("corrupt image data") from None
        if not chunk:
            return
        produced += len(chunk)
        yield chunk


def _wide_rows(chunks, width: int, height: int, colours: int):
    """`png_filtered_strips` for rows longer than a strip: each row in pieces of
    whole pixels (its filter type alone first), so memory stays O(strip) even
    for a 40 MP image one pixel high (one 160 MB row)."""
    bands = colours + 1
    row = 1 + width * bands
    pending = bytearray()
    at = 0  # bytes of the current row already split; 0: its filter type is next
    done = 0
    for chunk in chunks:
        pending += chunk
        while pending:
            if at == 0:
                kind = pending[0]
                if kind > 4:
                    raise BadData("unknown PNG filter type")
                del pending[:1]
                at = 1
                types = vips.np.array([kind], vips.np.uint8)
                yield types, types
                continue
            take = min(row - at, len(pending) // bands * bands)
            if take == 0:
                break
            samples = vips.np.frombuffer(bytes(pending[:take]), vips.np.uint8).reshape(-1, bands)
            del pending[:take]
            yield (
                vips.np.ascontiguousarray(samples[:, :colours]).reshape(-1),
                vips.np.ascontiguousarray(samples[:, colours]),
            )
            at += take
            if at == row:
                at, done = 0, done + 1
    if done != height or pending or at:
        raise BadData("image data cut short")


def _up(rows: vips.np.ndarray, prev: vips.np.ndarray | None) -> vips.np.ndarray:
    """`rows` (n, row bytes) with the PNG Up filter applied, its type first."""
    out = vips.np.empty((rows.shape[0], rows.shape[1] + 1), vips.np.uint8)
    out[:, 0] = 2
    if prev is None:
        out[0, 1:] = rows[0]
    else:
        vips.np.subtract(rows[0], prev, out=out[0, 1:])
    vips.np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out


class _Splitter:
    """Splits strips of filtered rows into colour and alpha rows, into two buffers
    made once and reused: each strip's arrays are valid until the next is asked for.

    The copy goes channel by channel (one strided pass per channel): numpy copies
    a (rows, width, 3) slice with an inner loop of 3 bytes, ~3x slower."""

    def __init__(self, rows: int, width: int, colours: int):
        np = vips.np
        self.width, self.colours = width, colours
        self.colour = np.empty((rows, 1 + width * colours), np.uint8)
        self.alpha = np.empty((rows, 1 + width), np.uint8)

    def __call__(self, data, n: int):
        np = vips.np
        width, colours = self.width, self.colours
        rows = np.frombuffer(data, np.uint8, count=n * (1 + width * (colours + 1)))
        rows = rows.reshape(n, -1)
        types = rows[:, 0]
        if int(types.max()) > 4:
            raise BadData("unknown PNG filter type")
        samples = rows[:, 1:].reshape(n, width, colours + 1)
        colour, alpha = self.colour[:n], self.alpha[:n]
        colour[:, 0] = types
        alpha[:, 0] = types
        pixels = colour[:, 1:].reshape(n, width, colours)
        for channel in range(colours):
            pixels[:, :, channel] = samples[:, :, channel]
        alpha[:, 1:] = samples[:, :, colours]
        return colour, alpha
