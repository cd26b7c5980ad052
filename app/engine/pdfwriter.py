"""The small PDF writer around the image streams (pikepdf would hold each in memory).

Each strip is split into colour and alpha, PNG-filtered (Up) and deflated
straight into the PDF image stream (`/FlateDecode` with `/Predictor 15`, the
PNG predictor PDF readers undo); the alpha stream goes to a memfd and is
appended after the colour stream, as the image's `/SMask`. No sample is held
twice and none is re-encoded twice.

Orientation costs nothing: the image is stored as decoded and placed on the
page by the content stream's matrix (`cm`), which flips and turns it as the
EXIF/TIFF orientation says; the page has the shown size (px * 72 / dpi).
Deflate is ISA-L (`isal`) level 1: see docs/performance.md for the numbers.
"""

from __future__ import annotations

import os

from isal import isal_zlib

from app.engine import vips
from app.engine.vips import _SAMPLE, DEFLATE_LEVEL, Header
from app.fdio import write_all

PRODUCER = "img2pdf-service"


class _Out:
    """Writes to a file descriptor and counts the offset (for the xref table)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.pos = 0
        self.offsets: dict[int, int] = {}

    def write(self, data: bytes | memoryview) -> None:
        self.pos += write_all(self.fd, data)

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
        self.prev: vips.np.ndarray | None = None
        self.deflate = isal_zlib.compressobj(DEFLATE_LEVEL)
        self.size = 0

    def strip(self, rows: vips.np.ndarray) -> bytes:
        """`rows`: (n, row_bytes) uint8 samples, big-endian if 16-bit."""
        out = vips.np.empty((rows.shape[0], rows.shape[1] + 1), vips.np.uint8)
        out[:, 0] = 2  # PNG filter type Up, on every row
        if self.prev is None:
            self.prev = vips.np.zeros(self.row_bytes, vips.np.uint8)
        vips.np.subtract(rows[0], self.prev, out=out[0, 1:])
        vips.np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])
        self.prev = rows[-1].copy()
        return self.filtered(out)

    def filtered(self, rows: vips.np.ndarray) -> bytes:
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
    region = vips.pyvips.Region.new(image)
    bands = head.colours + (1 if head.alpha else 0)
    rows = max(1, min(height, vips.STRIP_BYTES // max(1, width * bands * bps)))
    dtype = _SAMPLE[image.format][0]
    for y in range(0, height, rows):
        n = min(rows, height - y)
        samples = vips.np.frombuffer(_fetch(region, y, width, n), dtype).reshape(n, width, bands)
        if bps == 2:
            samples = samples.astype(">u2")
        out.write(colour.strip(_rows(samples[..., : head.colours], n)))
        if alpha_out is not None and alpha is not None:
            alpha_out.write(alpha.strip(_rows(samples[..., head.colours :], n)))


def _fetch(region, y: int, width: int, rows: int) -> bytes:
    """The next strip; libvips' allocation failures are MemoryError (the process's limit)."""
    try:
        return region.fetch(0, y, width, rows)
    except vips.pyvips.Error as exc:
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


def _rows(samples: vips.np.ndarray, n: int) -> vips.np.ndarray:
    """(n, width, bands) samples -> (n, row bytes) uint8, copied only when split."""
    return vips.np.ascontiguousarray(samples).view(vips.np.uint8).reshape(n, -1)


def _copy(src_fd: int, size: int, out: _Out) -> None:
    offset = 0
    while offset < size:
        chunk = os.pread(src_fd, min(vips.STRIP_BYTES, size - offset), offset)
        if not chunk:
            raise OSError("soft mask stream shorter than written")
        out.write(chunk)
        offset += len(chunk)


def write_jpeg_pdf(
    data: bytes, width: int, height: int, colour: bytes, layout, out_fd: int, orientation: int = 1
) -> int:
    """A one-page PDF around `data`, a JPEG embedded verbatim (/DCTDecode); its size.

    `colour` is the /ColorSpace entry (plus /Decode for inverted CMYK).
    """
    entries = b"/ColorSpace %s /BitsPerComponent 8 /Filter /DCTDecode" % colour
    return write_embedded_pdf([data], width, height, entries, layout, out_fd, orientation)


def write_embedded_pdf(
    parts,
    width: int,
    height: int,
    entries: bytes,
    layout,
    out_fd: int,
    orientation: int = 1,
    icc: tuple[int, bytes, bytes] | None = None,
    version: int = 3,
) -> int:
    """A one-page PDF whose image stream is `parts` (bytes-likes) written as they are.

    The objects img2pdf writes for the same image: the image at its pixel size,
    drawn by `q w 0 0 h x y cm /Im0 Do Q`, the page turned by /Rotate. `entries`
    are the image dictionary's own (colour space, bits, filter, parameters);
    `layout` is (page width, page height, image width, image height, user unit,
    rotate). Returns the PDF's size.

    `orientation` (EXIF 2, 4, 5, 7: mirrored) draws the stored image flipped or
    turned by the `cm` matrix instead; `layout` is then the shown image's.
    `icc` (components, alternate space, profile) is written as object 7, for
    `entries` to name as `[/ICCBased 7 0 R]`. `version`: the least PDF 1.x
    the image needs (5 for /JPXDecode).
    """
    page_w, page_h, img_w, img_h, unit, rotate = layout
    out = _Out(out_fd)
    # /UserUnit is PDF 1.6, as img2pdf marks it.
    out.write(b"%%PDF-1.%d\n%%\xe2\xe3\xcf\xd3\n" % max(version, 6 if unit != 1 else 3))
    out.obj(1, b"<< /Type /Catalog /Pages 2 0 R >>")
    out.obj(2, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>")
    content = b"q\n%.4f 0 0 %.4f %.4f %.4f cm\n/Im0 Do\nQ" % (
        img_w,
        img_h,
        (page_w - img_w) / 2.0,
        (page_h - img_h) / 2.0,
    )
    if orientation != 1:
        box = ((page_w - img_w) / 2, (page_h - img_h) / 2, img_w, img_h)
        matrix = b" ".join(_num(v) for v in _orientation_matrix(orientation, box))
        content = b"q\n" + matrix + b" cm\n/Im0 Do\nQ"
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
    if icc is not None:
        components, alternate, profile = icc
        head = b"<< /N %d /Alternate %s /Length %d >>\n" % (components, alternate, len(profile))
        out.obj(7, head + b"stream\n" + profile + b"\nendstream")
    count = 8 if icc is not None else 7
    xref = out.pos
    lines = [b"xref\n0 %d\n" % count, b"0000000000 65535 f \n"]
    lines += [b"%010d 00000 n \n" % out.offsets[num] for num in range(1, count)]
    out.write(b"".join(lines))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R /Info 6 0 R >>\n" % count)
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.pos
