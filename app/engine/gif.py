"""GIF as /Indexed: the palette indices in strips, Up-filtered."""

from __future__ import annotations

from app.engine import vips
from app.engine.png_strips import _up


def indexed_strips(image, box=None, pad: int | None = None):
    """Up-filtered rows of a decoded Pillow "P" image, a strip at a time (a crop
    copies only its rows): the palette indices of an /Indexed image. With `box`
    (x0, y0, x1, y1), the first frame's place on the screen, every index
    outside it is `pad`."""
    vips.load()
    width, height = image.size
    rows = max(1, min(height, vips.STRIP_BYTES // max(1, width)))
    last = None
    for y in range(0, height, rows):
        n = min(rows, height - y)
        strip = vips.np.frombuffer(image.crop((0, y, width, y + n)).tobytes(), vips.np.uint8)
        strip = strip.reshape(n, width)
        if box is not None and pad is not None:
            strip = strip.copy()
            x0, y0, x1, y1 = box
            strip[: max(0, min(n, y0 - y))] = pad
            strip[max(0, y1 - y) :] = pad
            strip[:, :x0] = pad
            strip[:, x1:] = pad
        yield _up(strip, last), None
        last = strip[-1].copy()
