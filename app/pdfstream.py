"""The streaming engine: decode with libvips in strips, write the PDF as it goes.

For the routes that must decode (PNG with alpha, 16-bit, interlaced or
palette + tRNS; TIFF; GIF; WebP; mirrored orientations) the image is read by
libvips with sequential access, a strip of rows at a time, and never held whole.
Each strip is split into colour and alpha, PNG-filtered (Up) and deflated
straight into the PDF image stream (`/FlateDecode` with `/Predictor 15`, the
PNG predictor PDF readers undo); the alpha stream goes to a memfd and is
appended after the colour stream, as the image's `/SMask`. No sample is held
twice and none is re-encoded twice.

Orientation costs nothing: the image is stored as decoded and placed on the
page by the content stream's matrix (`cm`), which flips and turns it as the
EXIF/TIFF orientation says; the page has the shown size (px * 72 / dpi).

The PDF around the streams is written here (a few small objects): pikepdf
would hold each stream in memory before writing it (docs/decisions.md).
Deflate is ISA-L (`isal`) level 1: see docs/performance.md for the numbers.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import zlib
from dataclasses import dataclass
from typing import Any

from isal import isal_zlib
from PIL import Image

# Imported on first use (_load), in the conversion processes only: the web
# worker that imports app.convert for its estimates needs neither, and numpy's
# OpenBLAS starts a thread at import, which the conversion zygote must not have
# (a fork copies only the forking thread).
np: Any = None
pyvips: Any = None
_loaded = False


def _load() -> None:
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
PRODUCER = "img2pdf-service"

# libvips loaders by sniffed kind, and the formats we can stream.
# libvips holds a whole frame for GIF and WebP (WebP: ~9 B/px resident, ~27 B/px
# of address space with its loader's worker thread; Pillow: 17 and 25).
_LOADERS = {"png": "pngload_source", "tiff": "tiffload_source", "gif": "gifload_source"}
_LOADERS["webp"] = "webpload_source"
_SAMPLE = {"uchar": ("u1", 8), "ushort": ("<u2", 16)}


def available() -> bool:
    _load()
    return pyvips is not None


def configure() -> None:
    """One conversion per process: no operation cache, one thread, one malloc arena.

    Each glibc arena reserves 64 MB of address space, which the child's
    RLIMIT_AS counts; libvips' own caches would keep decoded tiles alive.
    """
    _load()
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
    _load()
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


class _Out:
    """Writes to a file descriptor and counts the offset (for the xref table)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pos = 0
        self.offsets: dict[int, int] = {}

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
        self.pos += len(data)

    def begin(self, num: int) -> None:
        self.offsets[num] = self.pos
        self.write(b"%d 0 obj\n" % num)

    def obj(self, num: int, body: bytes) -> None:
        self.begin(num)
        self.write(body + b"\nendobj\n")


class _Filter:
    """PNG Up filter and deflate for one image stream, strip by strip."""

    def __init__(self, row_bytes: int):
        # The row above, for the Up filter: made on the first strip only, as the
        # split PNG route never filters (a 40 MP row would reserve 160 MB here).
        self.row_bytes = row_bytes
        self.prev: np.ndarray | None = None
        self.deflate = isal_zlib.compressobj(DEFLATE_LEVEL)
        self.size = 0

    def strip(self, rows: np.ndarray) -> bytes:
        """`rows`: (n, row_bytes) uint8 samples, big-endian if 16-bit."""
        out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        out[:, 0] = 2  # PNG filter type Up, on every row
        if self.prev is None:
            self.prev = np.zeros(self.row_bytes, np.uint8)
        np.subtract(rows[0], self.prev, out=out[0, 1:])
        np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
        self.prev = rows[-1].copy()
        return self.filtered(out)

    def filtered(self, rows: np.ndarray) -> bytes:
        """`rows`: (n, 1 + row_bytes), each row's PNG filter type first: deflated as is."""
        data = self.deflate.compress(rows)
        self.size += len(data)
        return data

    def end(self) -> bytes:
        data = self.deflate.flush()
        self.size += len(data)
        return data


def _orientation_matrix(orientation: int, box: tuple[float, float, float, float]):
    """The `cm` matrix that draws the stored image (unit square) as shown in `box`.

    A stored pixel at fractions (u, v) from its top-left is shown at (X, Y) from
    the shown image's top-left, by EXIF orientation; PDF image space has y up.
    """
    x0, y0, w, h = box
    shown = {
        1: lambda u, v: (u, v),
        2: lambda u, v: (1 - u, v),
        3: lambda u, v: (1 - u, 1 - v),
        4: lambda u, v: (u, 1 - v),
        5: lambda u, v: (v, u),
        6: lambda u, v: (1 - v, u),
        7: lambda u, v: (1 - v, 1 - u),
        8: lambda u, v: (v, 1 - u),
    }[orientation]

    def page(x: float, y: float) -> tuple[float, float]:
        sx, sy = shown(x, 1 - y)
        return x0 + sx * w, y0 + (1 - sy) * h

    ex, ey = page(0, 0)
    ax, ay = page(1, 0)
    cx, cy = page(0, 1)
    return (ax - ex, ay - ey, cx - ex, cy - ey, ex, ey)


def _num(value: float) -> bytes:
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    return (text if text not in {"", "-0"} else "0").encode()


def write_pdf(image, head: Header, orientation: int, layout, out_fd: int, strips=None) -> int:
    """Decode `image` strip by strip into a one-page PDF on `out_fd`; returns its size.

    `layout` is (page width, page height, image width, image height, user unit)
    for the image as shown, in PDF units (points / user unit). `strips`, if
    given, replaces libvips: an iterator of (colour, alpha) arrays of rows that
    carry their PNG filter type first (`png_filtered_strips`).
    """
    page_w, page_h, img_w, img_h, unit = layout
    out = _Out(out_fd)
    out.write(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    out.obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
    out.obj(2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
    box = ((page_w - img_w) / 2, (page_h - img_h) / 2, img_w, img_h)
    matrix = b" ".join(_num(v) for v in _orientation_matrix(orientation, box))
    content = b"q\n" + matrix + b" cm\n/Im0 Do\nQ\n"
    media = b"[0 0 %s %s]" % (_num(page_w), _num(page_h))
    user_unit = b" /UserUnit %s" % _num(unit) if unit != 1 else b""
    out.obj(
        3,
        b"<< /Type /Page /Parent 2 0 R /MediaBox "
        + media
        + user_unit
        + b" /Resources << /XObject << /Im0 5 0 R >> >> /Contents 4 0 R >>",
    )
    out.obj(4, b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")

    # 5: colour image, 6: its length; 7: soft mask, 8: its length; 9: ICC; 10: info
    colour_space = b"/DeviceGray" if head.colours == 1 else b"/DeviceRGB"
    if head.icc:
        colour_space = b"[/ICCBased 9 0 R]"
    smask = b" /SMask 7 0 R" if head.alpha else b""
    if head.palette is not None:
        hival = len(head.palette) // 3 - 1
        colour_space = b"[/Indexed /DeviceRGB %d <%s>]" % (hival, head.palette.hex().encode())
        if head.key is not None:
            smask = b" /Mask [%d %d]" % (head.key, head.key)
    bps = head.depth // 8
    width, height = head.width, head.height
    out.begin(5)
    out.write(_image_dict(width, height, colour_space, head.colours, head.depth, 6) + smask)
    out.write(b" >>\nstream\n")
    start = out.pos
    colour = _Filter(width * head.colours * bps)
    alpha = _Filter(width * bps) if head.alpha else None
    alpha_fd = os.memfd_create("img2pdf-smask", os.MFD_CLOEXEC) if head.alpha else -1
    try:
        alpha_out = _Out(alpha_fd) if head.alpha else None
        if strips is not None:
            for colour_rows, alpha_rows in strips:
                out.write(colour.filtered(colour_rows))
                if alpha_out is not None and alpha is not None:
                    alpha_out.write(alpha.filtered(alpha_rows))
        else:
            _vips_strips(image, head, out, colour, alpha_out, alpha)
        out.write(colour.end())
        length = out.pos - start
        out.write(b"\nendstream\nendobj\n")
        out.obj(6, b"%d" % length)
        if alpha_out is not None and alpha is not None:
            alpha_out.write(alpha.end())
            out.begin(7)
            out.write(_image_dict(width, height, b"/DeviceGray", 1, head.depth, 8))
            out.write(b" >>\nstream\n")
            _copy(alpha_fd, alpha_out.pos, out)
            out.write(b"\nendstream\nendobj\n")
            out.obj(8, b"%d" % alpha_out.pos)
    finally:
        if alpha_fd >= 0:
            os.close(alpha_fd)
    if head.icc:
        icc = head.icc
        alternate = b"/DeviceGray" if head.colours == 1 else b"/DeviceRGB"
        out.obj(
            9,
            b"<< /N %d /Alternate %s /Length %d >>\nstream\n" % (head.colours, alternate, len(icc))
            + icc
            + b"\nendstream",
        )
    producer = PRODUCER.encode()
    out.obj(10, b"<< /Producer (%s) /Creator (%s) >>" % (producer, producer))
    xref = out.pos
    count = 11
    lines = [b"xref\n0 %d\n" % count, b"0000000000 65535 f \n"]
    for num in range(1, count):
        if num in out.offsets:
            lines.append(b"%010d 00000 n \n" % out.offsets[num])
        else:
            lines.append(b"0000000000 65535 f \n")
    out.write(b"".join(lines))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 10 0 R >>\n" % count)
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.pos


def _vips_strips(image, head: Header, out: _Out, colour: _Filter, alpha_out, alpha) -> None:
    width, height = head.width, head.height
    bps = head.depth // 8
    region = pyvips.Region.new(image)
    bands = head.colours + (1 if head.alpha else 0)
    rows = max(1, min(height, STRIP_BYTES // max(1, width * bands * bps)))
    dtype = _SAMPLE[image.format][0]
    for y in range(0, height, rows):
        n = min(rows, height - y)
        samples = np.frombuffer(_fetch(region, y, width, n), dtype).reshape(n, width, bands)
        if bps == 2:
            samples = samples.astype(">u2")
        out.write(colour.strip(_rows(samples[..., : head.colours], n)))
        if alpha_out is not None and alpha is not None:
            alpha_out.write(alpha.strip(_rows(samples[..., head.colours :], n)))


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
    _load()
    bands = colours + 1
    row = 1 + width * bands
    expected = row * height
    if row > STRIP_BYTES:
        yield from _wide_rows(_inflated(idat, expected, STRIP_BYTES), width, height, colours)
        return
    rows_per_strip = max(1, min(height, STRIP_BYTES // row))
    pending = bytearray()
    produced = 0
    done = 0
    for chunk in _inflated(idat, expected, rows_per_strip * row):
        produced += len(chunk)
        pending += chunk
        while len(pending) >= rows_per_strip * row or (produced == expected and pending):
            n = min(rows_per_strip, len(pending) // row)
            if n == 0:
                break
            yield _split_rows(pending[: n * row], n, width, colours)
            del pending[: n * row]
            done += n
    if produced != expected or done != height:
        raise BadData("image data cut short")


def _inflated(idat, expected: int, step: int):
    """The first `expected` bytes the IDAT payloads inflate to, `step` at most at
    a time. What follows them (more rows, bytes after the stream) is not read:
    Pillow and libvips ignore it too, and the PDF, deflated anew, carries none of it."""
    inflater = isal_zlib.decompressobj()
    produced = 0
    for part in idat:
        tail = part
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
                types = np.array([kind], np.uint8)
                yield types, types
                continue
            take = min(row - at, len(pending) // bands * bands)
            if take == 0:
                break
            samples = np.frombuffer(bytes(pending[:take]), np.uint8).reshape(-1, bands)
            del pending[:take]
            yield (
                np.ascontiguousarray(samples[:, :colours]).reshape(-1),
                np.ascontiguousarray(samples[:, colours]),
            )
            at += take
            if at == row:
                at, done = 0, done + 1
    if done != height or pending or at:
        raise BadData("image data cut short")


# Adam7: (x0, y0, dx, dy) of the 7 passes, stored one after another.
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
ADAM7 += ((0, 1, 1, 2),)
_ADAM7_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _adam7_passes(width: int, height: int, bands: int):
    """(x0, y0, dx, dy, pass width, pass height, row bytes) of each non-empty pass."""
    passes = []
    for x0, y0, dx, dy in ADAM7:
        pw, ph = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pw > 0 and ph > 0:
            passes.append((x0, y0, dx, dy, pw, ph, 1 + pw * bands))
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


def _unfilter(raw: bytes, prev: bytes | None, width: int, rows: int, bands: int):
    """`rows` filtered PNG rows of 8-bit samples, unfiltered by Pillow's PNG decoder
    (in C; Avg and Paeth go pixel by pixel): the row above, if any, goes first as
    an unfiltered row so that the first row's Up/Avg/Paeth see it."""
    mode = _ADAM7_MODES[bands]
    if prev is not None:
        raw = b"\x00" + prev + raw
        rows += 1
    image = Image.frombytes(mode, (width, rows), zlib.compress(raw, 0), "zip", mode)
    samples = np.asarray(image).reshape(rows, width, bands)
    return samples[1:] if prev is not None else samples


def _up(rows: np.ndarray, prev: np.ndarray | None) -> np.ndarray:
    """`rows` (n, row bytes) with the PNG Up filter applied, its type first."""
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = 2
    if prev is None:
        out[0, 1:] = rows[0]
    else:
        np.subtract(rows[0], prev, out=out[0, 1:])
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out


def adam7_strips(idat, width: int, height: int, colours: int, alpha: bool, opacity=None):
    """(colour, alpha) rows, Up-filtered, of an 8-bit Adam7-interlaced grey, RGB,
    grey+alpha or RGBA PNG, without its whole frame: one inflater per pass, all
    advanced together band by band (8 rows or more), each pass's rows unfiltered
    against that pass's row above and scattered into the band. `idat` yields
    the IDAT payloads; rows must hold filter types 0-4 and be all there.
    `opacity`: for a palette PNG (colours 1: indices), the alpha of each of the
    256 indices (from tRNS); the alpha rows are looked up from it."""
    _load()
    bands = colours + (1 if alpha and opacity is None else 0)
    lut = np.frombuffer(opacity, np.uint8) if opacity is not None else None
    parts = [part for part in idat if len(part)]
    passes = _adam7_passes(width, height, bands)
    readers = _adam7_readers(parts, passes)
    prev: list[bytes | None] = [None] * len(passes)
    band = max(8, STRIP_BYTES // max(1, width * bands) // 8 * 8)
    last_colour = last_alpha = None
    for y0 in range(0, height, band):
        y1 = min(y0 + band, height)
        strip = np.empty((y1 - y0, width, bands), np.uint8)
        for p, (x0, py0, dx, dy, pw, ph, row) in enumerate(passes):
            first = max(0, -(-(y0 - py0) // dy))
            stop = min(ph, -(-(y1 - py0) // dy))
            n = stop - first
            if n <= 0:
                continue
            raw = readers[p].read(n * row)
            if int(np.frombuffer(raw, np.uint8)[::row].max()) > 4:
                raise BadData("unknown PNG filter type")
            samples = _unfilter(raw, prev[p], pw, n, bands)
            prev[p] = samples[-1].tobytes()
            top = py0 + first * dy - y0
            strip[top : top + (n - 1) * dy + 1 : dy, x0::dx] = samples
        rows = strip.reshape(y1 - y0, width, bands)
        colour_rows = np.ascontiguousarray(rows[..., :colours]).reshape(y1 - y0, -1)
        colour_out = _up(colour_rows, last_colour)
        last_colour = colour_rows[-1].copy()
        alpha_out = None
        if alpha:
            if lut is not None:
                alpha_rows = lut[colour_rows]
            else:
                alpha_rows = np.ascontiguousarray(rows[..., colours])
            alpha_out = _up(alpha_rows, last_alpha)
            last_alpha = alpha_rows[-1].copy()
        yield colour_out, alpha_out


def indexed_strips(image):
    """Up-filtered rows of a decoded Pillow "P" image, a strip at a time (a crop
    copies only its rows): the palette indices of an /Indexed image."""
    _load()
    width, height = image.size
    rows = max(1, min(height, STRIP_BYTES // max(1, width)))
    last = None
    for y in range(0, height, rows):
        n = min(rows, height - y)
        strip = np.frombuffer(image.crop((0, y, width, y + n)).tobytes(), np.uint8)
        strip = strip.reshape(n, width)
        yield _up(strip, last), None
        last = strip[-1].copy()


def _split_rows(data: bytearray, n: int, width: int, colours: int):
    rows = np.frombuffer(data, np.uint8).reshape(n, -1)
    types = rows[:, 0]
    if int(types.max()) > 4:
        raise BadData("unknown PNG filter type")
    samples = rows[:, 1:].reshape(n, width, colours + 1)
    colour = np.empty((n, 1 + width * colours), np.uint8)
    colour[:, 0] = types
    colour[:, 1:] = samples[:, :, :colours].reshape(n, -1)
    alpha = np.empty((n, 1 + width), np.uint8)
    alpha[:, 0] = types
    alpha[:, 1:] = samples[:, :, colours]
    return colour, alpha


def _fetch(region, y: int, width: int, rows: int) -> bytes:
    """The next strip; libvips' allocation failures are MemoryError (the process's limit)."""
    try:
        return region.fetch(0, y, width, rows)
    except pyvips.Error as exc:
        if "out of memory" in f"{exc.message} {exc.detail}":
            raise MemoryError() from None
        raise


def _image_dict(width: int, height: int, space: bytes, colours: int, depth: int, length: int):
    return (
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d /ColorSpace %s"
        b" /BitsPerComponent %d /Filter /FlateDecode /DecodeParms << /Predictor 15"
        b" /Colors %d /BitsPerComponent %d /Columns %d >> /Length %d 0 R"
        % (width, height, space, depth, colours, depth, width, length)
    )


def _rows(samples: np.ndarray, n: int) -> np.ndarray:
    """(n, width, bands) samples -> (n, row bytes) uint8, copied only when split."""
    return np.ascontiguousarray(samples).view(np.uint8).reshape(n, -1)


def _copy(src_fd: int, size: int, out: _Out) -> None:
    offset = 0
    while offset < size:
        chunk = os.pread(src_fd, min(STRIP_BYTES, size - offset), offset)
        if not chunk:
            raise OSError("soft mask stream shorter than written")
        out.write(chunk)
        offset += len(chunk)


def write_jpeg_pdf(data: bytes, width: int, height: int, colour: bytes, layout, out_fd: int) -> int:
    """A one-page PDF around `data`, a JPEG embedded verbatim (/DCTDecode); its size.

    `colour` is the /ColorSpace entry (plus /Decode for inverted CMYK).
    """
    entries = b"/ColorSpace %s /BitsPerComponent 8 /Filter /DCTDecode" % colour
    return write_embedded_pdf([data], width, height, entries, layout, out_fd)


def write_embedded_pdf(parts, width: int, height: int, entries: bytes, layout, out_fd: int) -> int:
    """A one-page PDF whose image stream is `parts` (bytes-likes) written as they are.

    The objects img2pdf writes for the same image: the image at its pixel size,
    drawn by `q w 0 0 h x y cm /Im0 Do Q`, the page turned by /Rotate. `entries`
    are the image dictionary's own (colour space, bits, filter, parameters);
    `layout` is (page width, page height, image width, image height, user unit,
    rotate). Returns the PDF's size.
    """
    page_w, page_h, img_w, img_h, unit, rotate = layout
    out = _Out(out_fd)
    # /UserUnit is PDF 1.6, as img2pdf marks it.
    out.write(b"%%PDF-1.%d\n%%\xe2\xe3\xcf\xd3\n" % (6 if unit != 1 else 3))
    out.obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
    out.obj(2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
    content = b"q\n%.4f 0 0 %.4f %.4f %.4f cm\n/Im0 Do\nQ" % (
        img_w,
        img_h,
        (page_w - img_w) / 2.0,
        (page_h - img_h) / 2.0,
    )
    media = b"[0 0 %s %s]" % (_num(page_w), _num(page_h))
    extra = b" /UserUnit %s" % _num(unit) if unit != 1 else b""
    if rotate:
        extra += b" /Rotate %d" % rotate
    out.obj(
        3,
        b"<< /Type /Page /Parent 2 0 R /MediaBox "
        + media
        + extra
        + b" /Resources << /XObject << /Im0 5 0 R >> >> /Contents 4 0 R >>",
    )
    out.obj(4, b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    out.begin(5)
    out.write(
        b"<< /Type /XObject /Subtype /Image /Width %d /Height %d %s /Length %d >>\nstream\n"
        % (width, height, entries, sum(len(part) for part in parts))
    )
    for part in parts:
        out.write(part)
    out.write(b"\nendstream\nendobj\n")
    producer = PRODUCER.encode()
    out.obj(6, b"<< /Producer (%s) /Creator (%s) >>" % (producer, producer))
    xref = out.pos
    lines = [b"xref\n0 7\n", b"0000000000 65535 f \n"]
    lines += [b"%010d 00000 n \n" % out.offsets[num] for num in range(1, 7)]
    out.write(b"".join(lines))
    out.write(b"trailer\n<< /Size 7 /Root 1 0 R /Info 6 0 R >>\n")
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.pos
