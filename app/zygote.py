"""Imported once by the conversion zygote (app.sandbox's forkserver), never per job.

Pillow loads its format plugins and codecs lazily, on the first open of each
kind: done in every forked child, that cost ~20 ms per conversion. Converting
a tiny image of every accepted kind here leaves all of it loaded in the zygote,
so each fork starts warm. Then the zygote's objects are moved out of the
garbage collector's sight (gc.freeze): a collection in a child would otherwise
touch, and so copy, every page of the heap it shares with the zygote.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os

from PIL import Image

from app.engine import vips
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pillow_warnings import take_warning_count


def _samples() -> list[bytes]:
    out = []
    rgb = Image.new("RGB", (8, 8), (200, 30, 30))
    rgba = Image.new("RGBA", (8, 8), (200, 30, 30, 128))
    for im, fmt, params in (
        (rgb, "JPEG", {}),
        (rgb, "PNG", {}),
        (rgba, "PNG", {}),
        (rgba.convert("LA"), "PNG", {}),
        (rgb.convert("P"), "GIF", {}),
        (rgb, "TIFF", {}),
        (rgb, "BMP", {}),
        (rgb, "WEBP", {"lossless": True}),
        (rgba, "WEBP", {"lossless": True}),
        (rgb, "JPEG2000", {}),
    ):
        buf = io.BytesIO()
        im.save(buf, fmt, **params)
        out.append(buf.getvalue())
    return out


def warm() -> None:
    vips.configure()
    Image.init()
    for data in _samples():
        # A codec missing on this machine only costs its warm-up.
        with contextlib.suppress(Exception):
            info = inspect_image(data, 10**6)
            if info.kind != "webp":  # libvips' WebP loader starts a worker thread
                convert_to_pdf(data, info)
    take_warning_count()
    # A fork copies only the forking thread: a thread started here (numpy's
    # OpenBLAS, a libvips worker) would be missing in every child, and whatever
    # waits for it there would wait forever.
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise RuntimeError(f"the conversion zygote must be single-threaded, has {threads}")


warm()
gc.collect()
gc.freeze()
