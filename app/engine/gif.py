"""GIF as /Indexed: the palette indices in strips, Up-filtered."""

from __future__ import annotations

from app.engine import vips
from app.engine.png_strips import _up


def indexed_strips(image):
    """Up-filtered rows of a decoded Pillow "P" image, a strip at a time (a crop
    copies only its rows): the palette indices of an /Indexed image."""
    vips.load()
    width, height = image.size
    rows = max(1, min(height, vips.STRIP_BYTES // max(1, width)))
    last = None
    for y in range(0, height, rows):
        n = min(rows, height - y)
        strip = vips.np.frombuffer(image.crop((0, y, width, y + n)).tobytes(), vips.np.uint8)
        strip = strip.reshape(n, width)
        yield _up(strip, last), None
        last = strip[-1].copy()
