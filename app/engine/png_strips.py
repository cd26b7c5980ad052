"""PNG-filtered strips read straight from a PNG's IDAT (8- and 16-bit, alpha split)."""

from __future__ import annotations

import contextlib
import os
import queue
import threading

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

    Images of more than one strip are inflated and split in a second thread, up
    to AHEAD strips ahead of the one the caller deflates (`_ahead`).
    """
    vips.load()
    strips = _strips(idat, width, height, colours)
    if (1 + width * (colours + 1)) * height <= vips.STRIP_BYTES or not spare_core():
        return strips
    return _ahead(strips)


def spare_core() -> bool:
    """Whether a core is idle now (fewer runnable tasks than CPUs, this one
    included). The second thread costs ~8 % more CPU for ~40 % less time: worth
    it on an idle core, a loss when every core is busy (concurrent conversions)."""
    try:
        with open("/proc/loadavg", "rb") as f:
            running = int(f.read().split()[3].split(b"/")[0])
        return running < len(os.sched_getaffinity(0))
    except (OSError, ValueError, IndexError):
        return False


def _strips(idat, width: int, height: int, colours: int):
    bands = colours + 1
    row = 1 + width * bands
    expected = row * height
    if row > vips.STRIP_BYTES:
        yield from _wide_rows(_inflated(idat, expected, vips.STRIP_BYTES), width, height, colours)
        return
    rows_per_strip = max(1, min(height, vips.STRIP_BYTES // row))
    split = _Splitter(width, colours)
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
    """Splits a strip of filtered rows into new colour and alpha row arrays.

    The copy goes channel by channel (one strided pass per channel): numpy copies
    a (rows, width, 3) slice with an inner loop of 3 bytes, ~3x slower."""

    def __init__(self, width: int, colours: int):
        self.width, self.colours = width, colours

    def __call__(self, data, n: int):
        np = vips.np
        width, colours = self.width, self.colours
        rows = np.frombuffer(data, np.uint8, count=n * (1 + width * (colours + 1)))
        rows = rows.reshape(n, -1)
        types = rows[:, 0]
        if int(types.max()) > 4:
            raise BadData("unknown PNG filter type")
        samples = rows[:, 1:].reshape(n, width, colours + 1)
        colour = np.empty((n, 1 + width * colours), np.uint8)
        alpha = np.empty((n, 1 + width), np.uint8)
        colour[:, 0] = types
        alpha[:, 0] = types
        pixels = colour[:, 1:].reshape(n, width, colours)
        for channel in range(colours):
            pixels[:, :, channel] = samples[:, :, channel]
        alpha[:, 1:] = samples[:, :, colours]
        return colour, alpha


# Strips made ahead of the one being deflated. ISA-L (inflate and deflate) and
# numpy's copies release the GIL, so with a second core inflate + split in one
# thread and deflate + write in the other overlap. Memory: AHEAD + 2 strips
# (~0.5 MiB) and the thread's stack.
AHEAD = 2
_STACK_BYTES = 512 * 1024  # the default (8 MiB) would count against RLIMIT_AS


def _ahead(items, depth: int = AHEAD):
    """The items of `items`, made by a second thread at most `depth` ahead; its
    exceptions are raised here. Without a thread (none can start), in this one."""
    made: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    end = object()

    def put(item) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                made.put(item, timeout=0.05)
                return

    def produce() -> None:
        try:
            for item in items:
                put(item)
                if stop.is_set():
                    return
            put(end)
        except BaseException as exc:
            put(exc)

    worker = threading.Thread(target=produce, name="png-strips", daemon=True)
    previous = threading.stack_size(_STACK_BYTES)
    try:
        worker.start()
    except (RuntimeError, MemoryError):
        yield from items
        return
    finally:
        threading.stack_size(previous)
    try:
        while True:
            item = made.get()
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()
