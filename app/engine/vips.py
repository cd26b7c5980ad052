"""libvips and numpy, loaded on first use; the strip size; image headers.

Imported on first use (`load`), in the conversion processes only: the web
worker that imports the engine for its estimates needs neither, and numpy's
OpenBLAS starts a thread at import, which the conversion zygote must not have.
Modules that use them read `vips.np` / `vips.pyvips` / `vips.STRIP_BYTES` at
call time.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Any

# Imported on first use (load), in the conversion processes only: the web
# worker that imports the engine for its estimates needs neither, and numpy's
# OpenBLAS starts a thread at import, which the conversion zygote must not have
# (a fork copies only the forking thread).
np: Any = None
pyvips: Any = None
_loaded = False


def load() -> None:
    global np, pyvips, _loaded
    if _loaded:
        return
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    import numpy

    np = numpy
    try:  # pyvips reads the libvips of the pyvips-binary wheel
        import pyvips as vips
    except (ImportError, OSError):  # pragma: no cover - a machine without libvips
        vips = None
    pyvips = vips
    _loaded = True


# Samples per strip: peak memory grows with it (a 30 MP RGBA PNG: +19 MB at
# 64 KB, +41 MB at 1 MB), speed barely (2 MP: 74-80 ms at any size here).
STRIP_BYTES = 128 * 1024
DEFLATE_LEVEL = 1

# libvips loaders by sniffed kind, and the formats we can stream.
# libvips holds a whole frame for GIF and WebP (WebP: ~9 B/px resident, ~27 B/px
# of address space with its loader's worker thread; Pillow: 17 and 25).
_LOADERS = {"png": "pngload_source", "tiff": "tiffload_source", "gif": "gifload_source"}
_LOADERS["webp"] = "webpload_source"
_SAMPLE = {"uchar": ("u1", 8), "ushort": ("<u2", 16)}


def available() -> bool:
    load()
    return pyvips is not None


def configure() -> None:
    """One conversion per process: no operation cache, one thread, one malloc arena.

    Each glibc arena reserves 64 MB of address space, which the child's
    RLIMIT_AS counts; libvips' own caches would keep decoded tiles alive.
    """
    load()
    if pyvips is None:
        return
    pyvips.cache_set_max(0)
    pyvips.cache_set_max_mem(0)
    pyvips.cache_set_max_files(0)
    pyvips.vips_lib.vips_concurrency_set(1)
    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc).mallopt(-8, 1)  # M_ARENA_MAX = 1


@dataclass(frozen=True)
class Header:
    """What libvips says about an image without decoding its pixels."""

    width: int
    height: int
    colours: int  # 1 or 3
    alpha: bool
    depth: int  # 8 or 16
    icc: bytes | None
    # An /Indexed image (colours 1, 8-bit indices): its RGB palette, and the
    # index drawn transparent (a /Mask colour key), if any.
    palette: bytes | None = None
    key: int | None = None


def open_image(data: bytes, kind: str):
    """A lazily decoding libvips image of frame 0, or None when it cannot stream this kind."""
    load()
    if pyvips is None or kind not in _LOADERS:
        return None
    loader = getattr(pyvips.Image, _LOADERS[kind])
    options = {"access": "sequential", "fail_on": "error"}
    if kind in {"gif", "webp", "tiff"}:
        options["n"] = 1
    # A source over our bytes, not a buffer argument: pyvips copies a buffer.
    return loader(pyvips.Source.new_from_memory(data), **options)


def header(image) -> Header | None:
    """The image's layout if this engine can write it, else None (the caller falls back)."""
    if image.format not in _SAMPLE or image.coding != "none":
        return None
    alpha = bool(image.hasalpha())
    colours = image.bands - (1 if alpha else 0)
    if colours not in (1, 3) or image.interpretation in {"cmyk", "lab", "labs", "labq"}:
        return None
    icc = None
    if "icc-profile-data" in image.get_fields():
        icc = bytes(image.get("icc-profile-data"))
        # ICCBased needs a profile for the stream's own colour space (/N).
        if icc[16:20] != (b"GRAY" if colours == 1 else b"RGB "):
            icc = None
    return Header(image.width, image.height, colours, alpha, _SAMPLE[image.format][1], icc)
