"""Uncompressed BMP written as a PDF image in strips, without decoding it whole.

`parse` reads the headers strictly: the file header, a BITMAPINFOHEADER, V4 or
V5 header, BI_RGB at 1/4/8/16/24/32 bits per pixel or BI_BITFIELDS at 24/32
with the standard masks and at 16 with 5-6-5 or 5-5-5 ones, BI_RLE8 at 8 and
BI_RLE4 at 4 bits, top-down or bottom-up rows. It returns None for the BMPs it
leaves to Pillow (OS/2 and V2/V3 headers, other masks) and raises InvalidImage
for a header that cannot describe its file: pixel data past the end or inside
the headers, a zero or negative width, a zero height, more palette entries than
the depth can index, a palette past the end. (A palette that runs into the
pixel data is left to Pillow, which reads it so.)

An RLE stream (app.engine.bmp_rle) is decoded a segment of at most a strip at a
time: one pass notes the decoder's state where each segment starts, then each
segment is decoded again from there in the PDF's row order (top row first).

`strips` yields PNG-filtered (Up) rows for app.engine.pdfwriter, a strip of
rows at a time straight from the file's bytes: palette images as /Indexed at
the file's own bit depth (1, 4 or 8; row padding stripped), 24/32-bit as RGB
with BGR swapped per strip, 16-bit as RGB scaled as Pillow scales it (a
65,536-entry table), 32-bit alpha (BI_BITFIELDS with an alpha mask, as
Pillow reads it) as the /SMask unless every pixel is opaque.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import img2pdf

from app.engine import bmp_rle, vips
from app.engine.img2pdf_route import _IMG2PDF_FORMAT
from app.engine.streamed import _write_streamed
from app.engine.vips import Header
from app.errors import InvalidImage

_FILE_HEADER = 14
# DIB header sizes taken: BITMAPINFOHEADER, BITMAPV4HEADER, BITMAPV5HEADER.
_INFO_HEADERS = {40, 108, 124}
_BI_RGB, _BI_BITFIELDS = 0, 3
# Run-length compressions taken -> the depth each is defined at.
_RLE_DEPTHS = {1: 8, 2: 4}
_PALETTE_DEPTHS = {1, 4, 8}
# BI_BITFIELDS masks taken (red, green, blue, alpha) -> alpha present; the
# layout of each is BGR(A/X) in byte order, as BI_RGB's.
_MASKS = {
    (24, (0xFF0000, 0xFF00, 0xFF)): False,
    (32, (0xFF0000, 0xFF00, 0xFF, 0)): False,
    (32, (0xFF0000, 0xFF00, 0xFF, 0xFF000000)): True,
}
# 16-bit BI_BITFIELDS masks (red, green, blue) taken -> green's bits; BI_RGB at
# 16 bits is 5-5-5. Bit 15 of a 5-5-5 pixel is unused.
_MASKS16 = {(0xF800, 0x7E0, 0x1F): 6, (0x7C00, 0x3E0, 0x1F): 5}


@dataclass(frozen=True)
class Bmp:
    width: int
    height: int
    depth: int  # bits per pixel: 1, 4, 8, 24 or 32
    top_down: bool
    offset: int  # first byte of the pixel data
    stride: int  # bytes per stored row, padded to 4
    palette: bytes | None  # RGB, padded to 2 ** depth entries (black past the file's)
    alpha: bool  # 32-bit with an alpha mask
    rle: bool = False  # BI_RLE8 / BI_RLE4: `offset` is the stream's first byte
    green: int = 0  # 16-bit: green's bits (5 or 6), red and blue 5 each

    @property
    def row_bytes(self) -> int:
        """Bytes of one row without the padding."""
        return (self.width * self.depth + 7) // 8


def parse(data: bytes) -> Bmp | None:
    """The layout of an uncompressed BMP the strips can write, None for the ones
    Pillow decodes, InvalidImage for a header its file cannot back."""
    size = len(data)
    if size < _FILE_HEADER + 4 or data[:2] != b"BM":
        return None
    (offset,) = struct.unpack_from("<I", data, 10)
    (header_size,) = struct.unpack_from("<I", data, _FILE_HEADER)
    if header_size not in _INFO_HEADERS:
        return None
    if _FILE_HEADER + header_size > size:
        raise InvalidImage()
    width, height, planes, depth, compression, _, _, _, colours = struct.unpack_from(
        "<iiHHIIiiI", data, _FILE_HEADER + 4
    )
    masks_at = _FILE_HEADER + 40  # after a BITMAPINFOHEADER; inside V4/V5 headers
    if width <= 0 or height == 0:
        raise InvalidImage()
    if planes != 1:
        return None
    alpha = False
    green = 5 if compression == _BI_RGB and depth == 16 else 0
    if compression == _BI_BITFIELDS and depth == 16:
        if header_size == 40 and masks_at + 12 > size:
            raise InvalidImage()
        green = _MASKS16.get(struct.unpack_from("<3I", data, masks_at), 0)
        if not green:
            return None
    elif compression == _BI_BITFIELDS:
        count = 3 if depth == 24 or header_size == 40 else 4
        if header_size == 40 and masks_at + 12 > size:
            raise InvalidImage()
        mask = struct.unpack_from(f"<{count}I", data, masks_at)
        if header_size == 40 and depth == 32:
            mask = (*mask, 0)  # reserved, not alpha, in a BITMAPINFOHEADER (Pillow too)
        if (depth, mask) not in _MASKS:
            return None
        alpha = _MASKS[(depth, mask)]
    elif compression in _RLE_DEPTHS:
        if depth != _RLE_DEPTHS[compression]:
            return None
    elif compression != _BI_RGB or depth not in _PALETTE_DEPTHS | {16, 24, 32}:
        return None
    palette = None
    if depth in _PALETTE_DEPTHS:
        entries = colours or 1 << depth
        if entries > 1 << depth:
            raise InvalidImage()
        start = _FILE_HEADER + header_size
        if offset == start:  # Pillow's reading: the offset left the palette out
            offset += 4 * entries
        if start + 4 * entries > size:
            raise InvalidImage()
        if start + 4 * entries > offset:
            return None  # a palette that runs into the pixels: Pillow reads it so
        table = data[start : start + 4 * entries]  # B, G, R, reserved
        rgb = bytes(v for i in range(0, len(table), 4) for v in table[i : i + 3][::-1])
        palette = rgb.ljust(3 << depth, b"\0")
    top_down = height < 0
    height = abs(height)
    if compression in _RLE_DEPTHS:
        if offset < _FILE_HEADER + header_size or offset >= size:
            raise InvalidImage()  # no stream: Pillow finds too little image data
        return Bmp(width, height, depth, top_down, offset, width, palette, False, True)
    stride = (width * depth + 31) // 32 * 4
    if offset < _FILE_HEADER + header_size or offset + stride * height > size:
        raise InvalidImage()
    return Bmp(width, height, depth, top_down, offset, stride, palette, alpha, green=green)


def header(bmp: Bmp, data: bytes) -> Header:
    """The pdfwriter header; a 32-bit image whose every pixel is opaque gets no /SMask."""
    if bmp.rle:  # one byte per index, whatever the file's depth
        return Header(bmp.width, bmp.height, 1, False, 8, None, bmp.palette.ljust(768, b"\0"))
    if bmp.palette is not None:
        return Header(bmp.width, bmp.height, 1, False, bmp.depth, None, bmp.palette)
    return Header(bmp.width, bmp.height, 3, bmp.alpha and not _opaque(bmp, data), 8, None)


def _opaque(bmp: Bmp, data: bytes) -> bool:
    vips.load()
    pixels = vips.np.frombuffer(data, vips.np.uint8, bmp.stride * bmp.height, bmp.offset)
    return int(pixels[3::4].min()) == 255  # a reduction: no array of the image's size


def strips(bmp: Bmp, data: bytes, head: Header):
    """(colour rows, alpha rows or None) per strip of rows, top to bottom, each row
    PNG-filtered (Up, its filter byte first), for pdfwriter.write_pdf."""
    vips.load()
    np = vips.np
    if bmp.stride > vips.STRIP_BYTES:
        yield from _wide_strips(bmp, data, head)
        return
    rows = max(1, min(bmp.height, vips.STRIP_BYTES // bmp.stride))
    colour_prev = np.zeros(bmp.row_bytes if bmp.palette is not None else 3 * bmp.width, np.uint8)
    alpha_prev = np.zeros(bmp.width, np.uint8)
    for y in range(0, bmp.height, rows):
        n = min(rows, bmp.height - y)
        first = y if bmp.top_down else bmp.height - y - n
        block = np.frombuffer(data, np.uint8, n * bmp.stride, bmp.offset + first * bmp.stride)
        block = block.reshape(n, bmp.stride)
        if not bmp.top_down:
            block = block[::-1]
        if bmp.palette is not None:
            colour, alpha = block[:, : bmp.row_bytes], None
        elif bmp.green:
            colour, alpha = _rgb16(block[:, : 2 * bmp.width], bmp.green).reshape(n, -1), None
        else:
            pixels = block[:, : bmp.width * bmp.depth // 8].reshape(n, bmp.width, bmp.depth // 8)
            colour = pixels[:, :, 2::-1].reshape(n, 3 * bmp.width)
            alpha = pixels[:, :, 3] if head.alpha else None
        colour_rows, colour_prev = _up(colour, colour_prev)
        alpha_rows = None
        if alpha is not None:
            alpha_rows, alpha_prev = _up(alpha, alpha_prev)
        yield colour_rows, alpha_rows


def _wide_strips(bmp: Bmp, data: bytes, head: Header):
    """`strips` for rows longer than a strip: each row in pieces of whole pixels
    (bytes of indices for a palette), its filter type before the first, the row
    above read again from the file for the Up filter. Memory stays O(strip) for a
    one-row image of any width (a 16 MB row was held whole five times over)."""
    np = vips.np
    step = bmp.depth // 8 if bmp.palette is None else 1  # bytes of one unit
    units = bmp.width if bmp.palette is None else bmp.row_bytes
    per = max(1, vips.STRIP_BYTES // step)

    def row(y: int):
        stored = y if bmp.top_down else bmp.height - 1 - y
        return np.frombuffer(data, np.uint8, bmp.row_bytes, bmp.offset + stored * bmp.stride)

    for y in range(bmp.height):
        here, above = row(y), row(y - 1) if y else None
        for start in range(0, units, per):
            end = min(units, start + per)
            cur = here[start * step : end * step]
            prev = above[start * step : end * step] if above is not None else np.zeros_like(cur)
            if bmp.palette is not None:
                yield _piece(cur, prev, start == 0), None
                continue
            if bmp.green:
                colour = _piece(_rgb16(cur, bmp.green), _rgb16(prev, bmp.green), start == 0)
                yield colour, None
                continue
            cur, prev = cur.reshape(-1, step), prev.reshape(-1, step)
            colour = _piece(cur[:, 2::-1], prev[:, 2::-1], start == 0)
            alpha = _piece(cur[:, 3], prev[:, 3], start == 0) if head.alpha else None
            yield colour, alpha


_RGB16: dict[int, object] = {}


def _rgb16(pixels, green: int):
    """16-bit pixels (bytes, little-endian, last axis) -> RGB samples, a new last
    axis of 3: each field scaled as Pillow's BGR;15 / BGR;16 unpackers scale it,
    value * 255 // max, through a 65,536-entry table."""
    np = vips.np
    table = _RGB16.get(green)
    if table is None:
        value = np.arange(65536, dtype=np.int64)
        fields = ((value >> 5 + green) & 31, (value >> 5) & (1 << green) - 1, value & 31)
        maxima = (31, (1 << green) - 1, 31)
        table = np.stack([f * 255 // m for f, m in zip(fields, maxima, strict=True)], -1).astype(
            np.uint8
        )
        _RGB16[green] = table
    value = pixels[..., 0::2].astype(np.uint16) | pixels[..., 1::2].astype(np.uint16) << 8
    return table[value]


def _piece(cur, prev, first: bool):
    """A piece of a row minus the same piece of the row above (PNG Up), flat;
    the row's filter type first if the piece starts the row."""
    np = vips.np
    out = np.empty(cur.size + first, np.uint8)
    if first:
        out[0] = 2
    np.subtract(cur, prev, out=out[int(first) :].reshape(cur.shape))
    return out


def _up(rows, prev):
    """`rows` (n, row bytes) with the PNG Up filter: each row minus the one above."""
    np = vips.np
    out = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
    out[:, 0] = 2
    np.subtract(rows[0], prev, out=out[0, 1:])
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
    return out, rows[-1].copy()


def write(data: bytes, bmp: Bmp, im, fd: int) -> int:
    """The PDF of `bmp` on `fd`, its page at the dpi img2pdf reads through Pillow."""
    dpi = img2pdf.pil_get_dpi(im, _IMG2PDF_FORMAT["bmp"], img2pdf.default_dpi)
    head = header(bmp, data)
    if bmp.rle:
        rows = bmp_rle.strips(data, bmp.offset, bmp.width, bmp.height, bmp.depth == 4, bmp.top_down)
        return _write_streamed(None, head, 1, dpi, fd, rows)
    return _write_streamed(None, head, 1, dpi, fd, strips(bmp, data, head))
