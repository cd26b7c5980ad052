"""Seed corpus for the VP8L harness: lossless WebP payloads of Pillow's encoder.

Each file is what app.engine.vp8l.stream hands the decoder: the bytes after the
VP8L chunk header to the end of the file. Photos, screenshots, palettes (1, 2,
4, 16 and 256 colours, widths that are not a multiple of the bundle), alpha,
every `method`, small and odd sizes.

Usage: scripts/fuzz_vp8l_native/corpus.py OUTDIR
"""

from __future__ import annotations

import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))

from PIL import Image

from app.engine.vp8l import stream
from tests.support.images import banded_gradient, cutout, noisy_gradient, photo, screenshot


def _palette(w: int, h: int, colours: int, seed: int) -> Image.Image:
    im = Image.new("P", (w, h))
    im.putpalette([(i * 37 + seed) % 256 for i in range(768)])
    im.putdata([((x * 7 + y * 3 + seed) % colours) for y in range(h) for x in range(w)])
    return im.convert("RGBA" if seed % 2 else "RGB")


def images():
    for w, h in [(1, 1), (2, 3), (5, 1), (17, 9), (64, 48), (130, 7)]:
        yield f"photo{w}x{h}", photo(w, h, seed=w + h)
        if min(w, h) >= 9:  # they paste a photo a third their size
            yield f"shot{w}x{h}", screenshot(w, h, seed=w)
        yield f"cut{w}x{h}", cutout(w, h, seed=h)
        for colours in (1, 2, 3, 4, 5, 16, 17, 256):
            yield f"pal{colours}_{w}x{h}", _palette(w, h, colours, colours + w)
    yield "noisy", noisy_gradient(40, 30, "RGBA")
    yield "banded", banded_gradient(90, 20)
    yield "wide", screenshot(1200, 3, seed=5)
    yield "tall", photo(3, 400, seed=6)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    n = 0
    for name, im in images():
        for method in range(7):
            for exact in (False, True):
                buf = io.BytesIO()
                im.save(buf, format="WEBP", lossless=True, method=method, exact=exact)
                payload = stream(buf.getvalue())
                path = os.path.join(out, f"{name}_m{method}{'e' if exact else ''}")
                with open(path, "wb") as f:
                    f.write(bytes(payload))
                n += 1
    print(n, "seeds in", out)


if __name__ == "__main__":
    main(sys.argv[1])
