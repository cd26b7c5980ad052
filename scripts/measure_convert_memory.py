#!/usr/bin/env python3
"""Measure the peak extra memory of app.engine per conversion route.

Why a fresh subprocess per sample: ru_maxrss is a high-water mark for the whole
process and sees C allocations (Pillow, zlib, qpdf) that tracemalloc cannot.
Each child imports everything, reads its input, warms up on a tiny image, notes
ru_maxrss, converts once and reports the growth. Two sizes per route give a
slope (bytes per pixel) and show what does not scale with pixels.

    .venv/bin/python scripts/measure_convert_memory.py [--mp 4 12]

Prints one row per route; copy the slopes (plus margin) into app/engine/pricing.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.images import banded_gradient as _photo  # noqa: E402
from tests.support.images import bmp16 as _bmp16  # noqa: E402
from tests.support.images import bmp_rgba as _bmp_rgba  # noqa: E402
from tests.support.images import encode as _save  # noqa: E402

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[2])
from app.engine import vips
from app.engine.convert import convert_to_fd, convert_to_pdf
from app.engine.pricing import estimate_peak_bytes
from app.engine.inspect import inspect_image
from tests.support import images

vips.configure()  # as the conversion zygote does

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)

data = open(sys.argv[1], "rb").read()
warm = images.alpha_png(8, 8)
convert_to_pdf(warm, inspect_image(warm, 10**9))
# ru_maxrss/VmHWM start at the parent's peak (Linux copies it over fork+exec);
# "5" to clear_refs resets this process's high-water mark to its current RSS.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS")
size_before = status("VmSize")
info = inspect_image(data, 10**9)
# As in the conversion process: the PDF goes to a memfd, never into our heap.
out = os.memfd_create("pdf")
start = time.perf_counter()
try:
    size = convert_to_fd(data, info, out)
except Exception:  # a damaged sample: what its check cost is what counts
    size = 0
ms = (time.perf_counter() - start) * 1000
peak = status("VmHWM")
# The kernel limit of a conversion process is RLIMIT_AS: address space counts.
space = status("VmPeak") - size_before
print(json.dumps({"route": info.route, "pixels": info.width * info.height,
                  "source": len(data), "pdf": size, "delta": peak - before, "space": space,
                  "ms": ms, "estimate": estimate_peak_bytes(info, len(data))}))
"""


def _gif_on_screen(w: int, h: int) -> bytes:
    """The first frame (w-16) x (h-16) at (8, 8) on a w x h screen, no transparency."""
    from tests.support.images import place_gif_frame

    return place_gif_frame(_save(_photo(w - 16, h - 16, "P"), "GIF"), (w, h), 8, 8)


def _png16_rgba(w: int, h: int) -> bytes:
    import struct
    import zlib

    from tests.support.images import _png_chunk

    rows = []
    for y in range(h):
        a = 0 if y < h // 3 else 65535
        px = struct.pack(">HHHH", (y * 37) & 0xFFFF, 20000, 40000, a)
        rows.append(b"\x00" + px * w)
    idat = zlib.compress(b"".join(rows), 6)
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _mirrored_jpeg(w: int, h: int, icc: bool = False) -> bytes:
    from PIL import Image, ImageCms

    exif = Image.Exif()
    exif[0x0112] = 5
    params = {"exif": exif.tobytes()}
    if icc:  # not plain: the child embeds it (direct.embed_jpeg)
        params["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _save(_photo(w, h), "JPEG", quality=90, **params)


def _mirrored_png(mode: str):
    def make(w: int, h: int) -> bytes:
        from PIL import Image

        exif = Image.Exif()
        exif[0x0112] = 2
        return _save(_photo(w, h, mode), "PNG", exif=exif.tobytes())

    return make


def _rle_bmp(w: int, h: int, rle4: bool = False, single: bool = False) -> bytes:
    """RLE8 (or RLE4, 16 colours) of a screenshot's grey: encoded runs of equal
    indices (RLE4: of equal pairs), each row ended by end of line; `single`: a
    photo, every run one pixel long, the stream's worst case (2 bytes a pixel)."""
    import struct

    import numpy as np

    from tests.support.images import photo, screenshot

    source = photo(w, h, seed=3) if single else screenshot(w, h, seed=3)
    grey = np.asarray(source.convert("L"), np.uint8)
    indices = grey >> 4 if rle4 else grey
    rows = []
    for row in indices[::-1]:  # bottom-up
        if rle4:
            row = row[: w - w % 2].reshape(-1, 2)
            row = (row[:, 0] << 4 | row[:, 1]).astype(np.uint8)
        if single:
            counts = np.full(row.size, 2 if rle4 else 1, np.uint8)
            values = row
        else:
            starts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
            lengths = np.diff(np.r_[starts, row.size])
            pieces = -(-lengths // 127)  # runs of at most 127 (254 RLE4 pixels)
            values = np.repeat(row[starts], pieces)
            counts = np.full(values.size, 127, np.int64)
            last = np.cumsum(pieces) - 1
            counts[last] = lengths - (pieces - 1) * 127
            counts = (counts * (2 if rle4 else 1)).astype(np.uint8)
        pairs = np.empty(values.size * 2, np.uint8)
        pairs[0::2], pairs[1::2] = counts, values
        rows.append(pairs.tobytes() + (bytes([1, 0]) if rle4 and w % 2 else b"") + b"\0\0")
    palette = b"".join(
        struct.pack("<4B", v, 255 - v, v // 2, 0) for v in range(16 if rle4 else 256)
    )
    stream = b"".join(rows)
    info = struct.pack(
        "<IiiHHIIiiII", 40, w, h, 1, 4 if rle4 else 8, 2 if rle4 else 1, len(stream), 0, 0, 0, 0
    )
    offset = 14 + len(info) + len(palette)
    return (
        b"BM" + struct.pack("<IHHI", offset + len(stream), 0, 0, offset) + info + palette + stream
    )


def _mirrored_mpo(w: int, h: int) -> bytes:
    """A two-frame MPO (Pillow's), orientation 5."""
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 5
    im = _photo(w, h)
    buf = io.BytesIO()
    im.save(buf, "MPO", save_all=True, append_images=[im], exif=exif.tobytes(), quality=90)
    return buf.getvalue()


def _jp2_16(w: int, h: int) -> bytes:
    from PIL import Image

    grey = _photo(w, h, "L")
    return _save(Image.frombytes("I;16", (w, h), grey.tobytes() * 2), "JPEG2000")


def _progressive_cmyk_cut(w: int, h: int) -> bytes:
    """Not ending in EOI: the truncation check decodes it (at 1/8 scale), and libjpeg
    keeps every coefficient of a progressive image for that."""
    return _save(_photo(w, h).convert("CMYK"), "JPEG", quality=90, progressive=True)[:-200]


def _png_interlaced(mode: str):
    """Adam7. Pillow ignores `interlace` when saving (its files are never
    interlaced), so libvips writes these."""

    def make(w: int, h: int) -> bytes:
        import pyvips

        im = _photo(w, h, "RGB" if mode == "P" else mode)
        bands = 3 if mode == "P" else len(mode)
        vi = pyvips.Image.new_from_memory(im.tobytes(), w, h, bands, "uchar")
        data = vi.pngsave_buffer(interlace=True, compression=6, palette=mode == "P")
        assert data[28] == 1, "not interlaced"
        assert mode != "P" or data[25] == 3, "not a palette"
        return data

    return make


def _png_interlaced_deep(mode: str, depth: int, trns: bool = False):
    """Adam7 by libvips at other bit depths; `trns`: a tRNS colour chunk added."""

    def make(w: int, h: int) -> bytes:
        import struct
        import zlib

        import pyvips

        im = _photo(w, h, "RGB" if mode == "P" else mode)
        bands = 3 if mode == "P" else len(mode)
        vi = pyvips.Image.new_from_memory(im.tobytes(), w, h, bands, "uchar")
        if depth == 16:
            vi = (vi.cast("ushort") * 257).cast("ushort")
            vi = vi.copy(interpretation="grey16" if bands < 3 else "rgb16")
        options = {"bitdepth": depth} if depth < 8 else {}
        data = vi.pngsave_buffer(interlace=True, compression=6, palette=mode == "P", **options)
        assert data[28] == 1 and data[24] == depth, "not interlaced at that depth"
        if trns:
            body = struct.pack(">" + "H" * bands, *([7] * bands))
            crc = struct.pack(">I", zlib.crc32(b"tRNS" + body))
            data = data[:33] + struct.pack(">I", len(body)) + b"tRNS" + body + crc + data[33:]
        return data

    return make


SAMPLES = {
    "jpeg (embed)": lambda w, h: _save(_photo(w, h), "JPEG", quality=90),
    "jpeg progressive (embed)": lambda w, h: _save(
        _photo(w, h), "JPEG", quality=90, progressive=True
    ),
    "png rgb (embed)": lambda w, h: _save(_photo(w, h), "PNG"),
    "png rgba": lambda w, h: _save(_photo(w, h, "RGBA"), "PNG"),
    "png rgba interlaced": _png_interlaced("RGBA"),
    "png rgb interlaced": _png_interlaced("RGB"),
    "png palette interlaced": _png_interlaced("P"),
    "png16 rgba interlaced": _png_interlaced_deep("RGBA", 16),
    "png16 grey interlaced": _png_interlaced_deep("L", 16),
    "png grey 2-bit interlaced": _png_interlaced_deep("L", 2),
    "png palette 4-bit interlaced": _png_interlaced_deep("P", 4),
    "png rgb + tRNS interlaced": _png_interlaced_deep("RGB", 8, trns=True),
    "png palette + tRNS": lambda w, h: _save(_photo(w, h, "P"), "PNG", transparency=0),
    "png16 rgba": _png16_rgba,
    "tiff rgba": lambda w, h: _save(_photo(w, h, "RGBA"), "TIFF", compression="tiff_lzw"),
    "tiff rgb (img2pdf decode)": lambda w, h: _save(_photo(w, h), "TIFF", compression="tiff_lzw"),
    "tiff16 gray (pillow)": lambda w, h: _save(_photo(w, h, "L").convert("I;16"), "TIFF"),
    "gif": lambda w, h: _save(_photo(w, h, "P"), "GIF"),
    "gif transparent": lambda w, h: _save(_photo(w, h, "P"), "GIF", transparency=0),
    "gif frame inside a bigger screen": lambda w, h: _gif_on_screen(w, h),
    "webp rgba lossy": lambda w, h: _save(_photo(w, h, "RGBA"), "WEBP", quality=80),
    "webp rgb lossy": lambda w, h: _save(_photo(w, h), "WEBP", quality=80),
    "webp rgba lossless": lambda w, h: _save(_photo(w, h, "RGBA"), "WEBP", lossless=True),
    "webp rgb lossless": lambda w, h: _save(_photo(w, h), "WEBP", lossless=True),
    "webp animated lossless": lambda w, h: _save(
        _photo(w, h, "RGBA"), "WEBP", save_all=True, append_images=[_photo(w, h)], lossless=True
    ),
    "webp animated lossy": lambda w, h: _save(
        _photo(w, h), "WEBP", save_all=True, append_images=[_photo(w, h, "L").convert("RGB")]
    ),
    "webp animated rgba lossy": lambda w, h: _save(
        _photo(w, h, "RGBA"), "WEBP", save_all=True, append_images=[_photo(w, h)], quality=80
    ),
    "jpeg orientation 5": _mirrored_jpeg,
    "jpeg orientation 5 + icc (child)": lambda w, h: _mirrored_jpeg(w, h, icc=True),
    "png rgb orientation 2 (pillow)": _mirrored_png("RGB"),
    "png rgba orientation 2 (flatten)": _mirrored_png("RGBA"),
    "bmp rgb": lambda w, h: _save(_photo(w, h), "BMP"),
    "bmp rgba (bitfields)": lambda w, h: _bmp_rgba(w, h, _photo(w, h, "RGBA")),
    "bmp 8-bit palette": lambda w, h: _save(_photo(w, h, "P"), "BMP"),
    "bmp 1-bit": lambda w, h: _save(_photo(w, h, "L").convert("1"), "BMP"),
    "bmp rgba one row (pieces)": lambda w, h: _bmp_rgba(w * h, 1, _photo(w * h, 1, "RGBA")),
    "bmp 16-bit 5-6-5": lambda w, h: _bmp16(w, h),
    "bmp rle8": _rle_bmp,
    "bmp rle4": lambda w, h: _rle_bmp(w, h, rle4=True),
    "bmp rle8 runs of one": lambda w, h: _rle_bmp(w, h, single=True),
    "jpeg mpo orientation 5": _mirrored_mpo,
    "jp2 16-bit gray": _jp2_16,
    "jp2 rgba (bands)": lambda w, h: _save(_photo(w, h, "RGBA"), "JPEG2000"),
    "jp2 la (bands)": lambda w, h: _save(_photo(w, h, "LA"), "JPEG2000"),
    "jp2 rgba 9/7 1:8 (bands)": lambda w, h: _save(
        _photo(w, h, "RGBA"), "JPEG2000", irreversible=True, quality_layers=[8]
    ),
    "jp2 rgba tiled (bands)": lambda w, h: _save(
        _photo(w, h, "RGBA"), "JPEG2000", tile_size=(1000, 1000)
    ),
    "jpeg progressive cmyk, cut (check)": _progressive_cmyk_cut,
}


def _measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(ROOT)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mp", type=float, nargs=2, default=(4.0, 12.0), metavar=("SMALL", "BIG"))
    parser.add_argument("--only", help="substring of a sample name")
    args = parser.parse_args()
    sizes = [(int((mp * 1e6 * 4 / 3) ** 0.5), int((mp * 1e6 * 3 / 4) ** 0.5)) for mp in args.mp]
    print(
        f"{'sample':34} {'route':15} {'MP':>5} {'src MB':>7} {'peak MB':>8} "
        f"{'B/px':>6} {'slope B/px':>10} {'AS MB':>7} {'est MB':>7} {'ms':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in SAMPLES.items():
            if args.only and args.only not in name:
                continue
            rows = []
            for w, h in sizes:
                path = Path(tmp) / "sample"
                path.write_bytes(make(w, h))
                rows.append(_measure(path))
            small, big = rows
            slope = (big["delta"] - small["delta"]) / (big["pixels"] - small["pixels"])
            for row in rows:
                print(
                    f"{name:34} {row['route']:15} {row['pixels'] / 1e6:5.1f} "
                    f"{row['source'] / 1e6:7.1f} {row['delta'] / 1e6:8.1f} "
                    f"{row['delta'] / row['pixels']:6.2f} {slope:10.2f} "
                    f"{row['space'] / 1e6:7.1f} {row['estimate'] / 1e6:7.1f} {row['ms']:6.0f}"
                    + ("  UNDER" if row["estimate"] < max(row["delta"], row["space"]) else "")
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
