"""Hostile inputs, built in memory at small sizes that still show each problem.

Each builder reproduces a file that hurt the service before the conversion ran
in a bounded child process with byte-level caps (see docs/security.md).
"""

from __future__ import annotations

import struct
import zlib

from PIL import Image

from tests.support import images

# --- JPEG 2000 ---------------------------------------------------------------


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _jp2_boxes(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        length = length or len(data) - pos
        out.append((kind, data[pos + 8 : pos + length]))
        pos += length
    return out


def _resolution(kind: bytes, dpi: float) -> bytes:
    """resc/resd payload: dpi as pixels per metre, num/den * 10^exp."""
    ppm = round(dpi / 0.0254)
    return _box(kind, struct.pack(">HHHHbb", ppm, 1, ppm, 1, 0, 0))


def jp2_with_display_resolution_first(w: int = 64, h: int = 48, dpi: float = 150) -> bytes:
    """A valid JP2 whose `res ` superbox holds `resd` before `resc` (ISO 15444-1 allows
    either order). img2pdf 0.6.3's parse_res loops forever on it."""
    out = b""
    for kind, payload in _jp2_boxes(images.jp2(w, h)):
        if kind == b"jp2h":
            payload += _box(b"res ", _resolution(b"resd", 72) + _resolution(b"resc", dpi))
        out += _box(kind, payload)
    return out


def jp2_16bit_gray(w: int = 512, h: int = 512) -> bytes:
    """16-bit greyscale JPEG 2000 (noise, so it is not trivially small)."""
    im = Image.frombytes("I;16", (w, h), Image.effect_noise((w, h), 80).tobytes() * 2)
    return images.encode(im, "JPEG2000")


# --- JPEG --------------------------------------------------------------------


def jpeg_segment_count(data: bytes) -> int:
    """Marker segments before the first scan (what the cap counts)."""
    pos, count = 2, 0
    while True:
        marker = data[pos + 1]
        count += 1
        if marker == 0xDA:
            return count
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length


def jpeg_with_empty_app_segments(total_segments: int) -> bytes:
    """A 64x64 JPEG padded with empty APP5 segments to `total_segments` before its scan.

    The original had 5,000,000 of them (20 MB): 1.4 GiB and 55 s in Pillow's parser.
    """
    base = images.jpeg(64, 64)
    padding = total_segments - jpeg_segment_count(base)
    return base[:2] + b"\xff\xe5\x00\x02" * padding + base[2:]


def truncated_progressive_cmyk_jpeg(w: int = 1024, h: int = 1024, cut: int = 200) -> bytes:
    """Progressive CMYK JPEG missing its last bytes: checking it decodes (at 1/8
    scale), and libjpeg keeps every coefficient of a progressive image for that."""
    im = Image.effect_noise((w, h), 60).convert("RGB").convert("CMYK")
    return images.encode(im, "JPEG", quality=90, progressive=True)[:-cut]


def jpeg_with_exif_flood(entries: int = 5400, claimed: int = 14000) -> bytes:
    """Exif IFD with `entries` tags each claiming `claimed` values it does not hold.

    Pillow warns once per tag: the original printed 32,397 lines per request.
    """
    ifd = struct.pack("<H", entries)
    for i in range(entries):
        # tag, type LONG, count, offset: each claims more data than the whole file
        ifd += struct.pack("<HHII", 0x9000 + i % 0x4000, 4, claimed, 8)
    ifd += b"\x00\x00\x00\x00"
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    app1 = b"Exif\x00\x00" + tiff
    base = images.jpeg(64, 48)
    return base[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + base[2:]


# --- PNG -----------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_with_empty_chunks(total_chunks: int) -> bytes:
    """An 8x8 PNG padded with empty private ancillary chunks to `total_chunks`
    chunks other than IDAT (IHDR and IEND count). The original had 1.7 M: 480 MiB."""
    base = images.png(8, 8)
    count = _png_chunk_types(base)
    other = sum(1 for kind in count if kind != b"IDAT")
    padding = png_chunk(b"prVt", b"") * (total_chunks - other)
    return base[:33] + padding + base[33:]


def _png_chunk_types(data: bytes) -> list[bytes]:
    pos, kinds = 8, []
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        kinds.append(kind)
        pos += 12 + length
    return kinds


def png_idat(w: int, h: int, raw: bytes, level: int = 9) -> bytes:
    """8-bit RGB PNG whose IDAT is exactly zlib(`raw`): any length, any content."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw, level))
        + png_chunk(b"IEND", b"")
    )


def png_rows(w: int, h: int) -> bytes:
    """Exactly the filtered rows an 8-bit RGB w x h PNG needs (filter 0, grey)."""
    return (b"\x00" + b"\x80" * (3 * w)) * h


def png_idat_bomb(w: int = 100, h: int = 100, inflated: int = 64 * 1024 * 1024) -> bytes:
    """The rows, then zeros up to `inflated` bytes: a few KB that inflate to MBs.
    The original: 20.8 MB inflating to ~20 GiB, 344 s of CPU, then stored."""
    rows = png_rows(w, h)
    return png_idat(w, h, rows + bytes(inflated - len(rows)), level=9)


def png16_interlaced_cut(w: int, h: int) -> bytes:
    """A 16-bit RGBA Adam7 PNG whose single IDAT holds only a tenth of its data
    (the header promises w x h; the bands run out in the first passes)."""
    raw = (b"\x00" + bytes(8 * w)) * (h // 2)  # far fewer rows than the passes need
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 1)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(raw[: len(raw) // 5], 9))
        + png_chunk(b"IEND", b"")
    )


# --- GIF, WebP -----------------------------------------------------------------


def gif_frame_at(left: int, top: int, screen=(10, 8), size=(4, 3)) -> bytes:
    """A GIF whose first frame sits at (left, top) on `screen`: decoders grow the
    screen to hold it, so an offset far past it claims a huge canvas."""
    im = Image.new("P", size, 1)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    return images.place_gif_frame(images.encode(im, "GIF"), screen, left, top)


def webp_canvas_lie(w: int, h: int, canvas=(16383, 16383)) -> bytes:
    """A lossy WebP's image chunk inside a VP8X header whose canvas differs."""
    simple = images.encode(Image.new("RGB", (w, h), (200, 30, 30)), "WEBP", quality=80)
    body = b"VP8X" + struct.pack("<I", 10) + bytes(4)
    body += (canvas[0] - 1).to_bytes(3, "little") + (canvas[1] - 1).to_bytes(3, "little")
    body += simple[12:]
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


def webp_alpha_corrupt(w: int, h: int, fill: int = 0xFF) -> bytes:
    """A lossy WebP with a lossless-compressed ALPH chunk whose bitstream after its
    header byte is `fill`: libwebp reports it as VP8_STATUS_OUT_OF_MEMORY (its
    alpha decoder's init failing leaves no decoder to give the real status)."""
    import numpy as np

    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = (np.arange(w) * 255 // max(1, w - 1)).astype(np.uint8)
    data = images.encode(Image.fromarray(rgba, "RGBA"), "WEBP", quality=80)
    pos = data.index(b"ALPH")
    size = struct.unpack_from("<I", data, pos + 4)[0]
    assert data[pos + 8] & 3 == 1, "ALPH not lossless-compressed"
    return data[: pos + 9] + bytes([fill]) * (size - 1) + data[pos + 8 + size :]


def webp_lossless_cut(w: int, h: int, keep: int = 4096) -> bytes:
    """A lossless WebP cut after `keep` bytes: libwebp reserves its whole ARGB
    frame (4 B/px) before it finds the data missing."""
    im = Image.effect_noise((w, h), 60).convert("RGB")
    return images.encode(im, "WEBP", lossless=True, method=0)[:keep]


# --- TIFF ----------------------------------------------------------------------


def tiff_ifd_chain(count: int) -> bytes:
    """`count` 1x1 greyscale pages, each IFD pointing at the next.
    The original: 180 k IFDs in 20.5 MB, 373 s counting pages."""
    entries = 8
    ifd_size = 2 + 12 * entries + 4
    first = 8
    out = bytearray(b"II*\x00" + struct.pack("<I", first))
    for i in range(count):
        here = first + i * (ifd_size + 2)
        pixel = here + ifd_size  # one byte of pixel data (+1 pad) right after the IFD
        nxt = here + ifd_size + 2 if i + 1 < count else 0
        tags = [
            (256, 3, 1, 1),  # width
            (257, 3, 1, 1),  # height
            (258, 3, 1, 8),  # bits per sample
            (259, 3, 1, 1),  # no compression
            (262, 3, 1, 1),  # black is zero
            (273, 4, 1, pixel),  # strip offset
            (278, 3, 1, 1),  # rows per strip
            (279, 4, 1, 1),  # strip byte count
        ]
        out += struct.pack("<H", entries)
        for tag, typ, n, value in tags:
            out += struct.pack("<HHII", tag, typ, n, value)
        out += struct.pack("<I", nxt) + b"\x80\x00"
    return bytes(out)


def tiff_with_orientation(n: int, mode: str = "RGB", dpi=(72, 72), w: int = 64, h: int = 32):
    exif = Image.Exif()
    exif[0x0112] = n
    return images.encode(images._marked(w, h, mode), "TIFF", exif=exif.tobytes(), dpi=dpi)
