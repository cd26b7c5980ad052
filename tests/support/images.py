"""Test images made in memory, so no binary fixtures live in the repo.

Every helper returns the encoded file as bytes. Images are small unless sizes
are passed; colours are flat so lossy codecs keep them recognisable.

The last section holds the realistic content of the benchmarks, the load test
and the memory measurements (scripts/bench.py, scripts/loadtest.py,
scripts/measure_convert_memory.py): photo- and screenshot-like images that
compress like the real thing. Those return Pillow images; `encode` saves them.
"""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image, ImageDraw

RED = (255, 0, 0)
GREEN = (0, 160, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    """The image saved as `fmt` (Pillow's save parameters), as bytes."""
    buf = io.BytesIO()
    im.save(buf, fmt, **params)
    return buf.getvalue()


def _marked(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Blue image with a red block in the top-left quarter: shows orientation."""
    im = Image.new("RGB", (w, h), BLUE)
    im.paste(RED, (0, 0, max(1, w // 2), max(1, h // 2)))
    return im.convert(mode) if mode != "RGB" else im


def _half_transparent(w: int, h: int) -> Image.Image:
    """RGBA: opaque red left half, fully transparent (black RGB) right half.

    The transparent pixels carry black colour on purpose: a converter that
    drops alpha shows them black, one that honours it shows the page (white).
    """
    im = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    im.paste((*RED, 255), (0, 0, max(1, w // 2), h))
    return im


def jpeg(w: int = 64, h: int = 48, *, mode: str = "RGB", quality: int = 90) -> bytes:
    return encode(_marked(w, h, mode), "JPEG", quality=quality)


def cmyk_jpeg(w: int = 64, h: int = 48) -> bytes:
    return encode(Image.new("RGB", (w, h), RED).convert("CMYK"), "JPEG", quality=95)


def jpeg_with_orientation(n: int, w: int = 64, h: int = 32) -> bytes:
    """Landscape JPEG (stored pixels) with EXIF Orientation=n; red block top-left."""
    exif = Image.Exif()
    exif[0x0112] = n
    return encode(_marked(w, h), "JPEG", quality=95, exif=exif.tobytes())


def png(w: int = 64, h: int = 48, mode: str = "RGB", **params) -> bytes:
    return encode(_marked(w, h, mode), "PNG", **params)


def alpha_png(w: int = 64, h: int = 48) -> bytes:
    return encode(_half_transparent(w, h), "PNG")


def la_png(w: int = 64, h: int = 48) -> bytes:
    im = Image.new("LA", (w, h), (0, 0))
    im.paste((80, 255), (0, 0, w // 2, h))
    return encode(im, "PNG")


def palette_transparent_png(w: int = 64, h: int = 48) -> bytes:
    """Palette PNG (tRNS): index 0 transparent black, index 1 opaque red."""
    im = Image.new("P", (w, h), 0)
    im.putpalette([0, 0, 0, *RED, *BLUE])  # a short palette: stored with 2-bit indices
    im.paste(1, (0, 0, w // 2, h))
    return encode(im, "PNG", transparency=0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_raw(
    w: int, h: int, depth: int, color_type: int, rows: list[bytes], interlace: int = 0
) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, interlace)
    idat = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def png16(w: int = 32, h: int = 24) -> bytes:
    """16-bit RGB PNG: red left half, blue right half."""
    left, right = struct.pack(">HHH", 65535, 0, 0), struct.pack(">HHH", 0, 0, 65535)
    row = left * (w // 2) + right * (w - w // 2)
    return _png_raw(w, h, 16, 2, [row] * h)


def png16_gray(w: int = 32, h: int = 24) -> bytes:
    """16-bit greyscale PNG (Pillow mode I;16): black left half, white right half."""
    row = struct.pack(">H", 0) * (w // 2) + struct.pack(">H", 65535) * (w - w // 2)
    return _png_raw(w, h, 16, 0, [row] * h)


def png16_alpha(w: int = 32, h: int = 24) -> bytes:
    """16-bit RGBA PNG: opaque red left half, transparent black right half."""
    left, right = struct.pack(">HHHH", 65535, 0, 0, 65535), struct.pack(">HHHH", 0, 0, 0, 0)
    row = left * (w // 2) + right * (w - w // 2)
    return _png_raw(w, h, 16, 6, [row] * h)


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def png_interlaced(w: int = 64, h: int = 48) -> bytes:
    """Adam7-interlaced 8-bit RGB PNG (Pillow cannot write one), red block top-left."""
    im = _marked(w, h)
    rows = []
    for x0, y0, dx, dy in _ADAM7:
        xs = range(x0, w, dx)
        for y in range(y0, h, dy):
            if xs:
                rows.append(b"".join(bytes(im.getpixel((x, y))) for x in xs))
    return _png_raw(w, h, 8, 2, rows, interlace=1)


def pixel_bomb_png(w: int = 20000, h: int = 20000) -> bytes:
    """A few hundred bytes whose header claims w x h pixels (data is one short row)."""
    return _png_raw(w, h, 8, 2, [b"\x00" * 30])


def gif(w: int = 64, h: int = 48) -> bytes:
    return encode(_marked(w, h).convert("P"), "GIF")


def gif_transparent(w: int = 64, h: int = 48) -> bytes:
    im = Image.new("P", (w, h), 0)
    im.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    im.paste(1, (0, 0, w // 2, h))
    return encode(im, "GIF", transparency=0)


def gif_lzw_frame(indices) -> bytes:
    """A GIF frame's image data for `indices` (any of 0-255, even past the colour
    table): minimum code size 8, a clear code every 250 pixels so every code stays
    9 bits, in sub-blocks, with the terminator. No compression, no decoder's say."""
    codes = []
    flat = [int(v) for v in indices.reshape(-1)]
    for at in range(0, len(flat), 250):
        codes += [256, *flat[at : at + 250]]
    codes.append(257)
    acc = nbits = 0
    out = bytearray()
    for code in codes:
        acc |= code << nbits
        nbits += 9
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc)
    blocks = b"".join(
        bytes([len(out[i : i + 255])]) + out[i : i + 255] for i in range(0, len(out), 255)
    )
    return b"\x08" + blocks + b"\x00"


def gif_animated(w: int = 64, h: int = 48, frames: int = 3) -> bytes:
    """Frame 0 is red; later frames are blue, green, ... so frame 0 is identifiable."""
    colours = [RED, BLUE, GREEN]
    ims = [Image.new("RGB", (w, h), colours[i % 3]).convert("P") for i in range(frames)]
    return encode(ims[0], "GIF", save_all=True, append_images=ims[1:], duration=100, loop=0)


def tiff(w: int = 64, h: int = 48, mode: str = "RGB", **params) -> bytes:
    return encode(_marked(w, h, mode), "TIFF", **params)


def tiff_alpha(w: int = 64, h: int = 48) -> bytes:
    return encode(_half_transparent(w, h), "TIFF")


def tiff16(w: int = 32, h: int = 24) -> bytes:
    """16-bit greyscale TIFF: black left half, white right half."""
    im = Image.new("I;16", (w, h), 65535)
    im.paste(0, (0, 0, w // 2, h))
    return encode(im, "TIFF")


def tiff_multipage(w: int = 64, h: int = 48) -> bytes:
    ims = [Image.new("RGB", (w, h), c) for c in (RED, BLUE)]
    return encode(ims[0], "TIFF", save_all=True, append_images=ims[1:])


def webp(w: int = 64, h: int = 48) -> bytes:
    return encode(_marked(w, h), "WEBP", lossless=True)


def webp_alpha(w: int = 64, h: int = 48) -> bytes:
    return encode(_half_transparent(w, h), "WEBP", lossless=True)


def webp_animated(w: int = 64, h: int = 48) -> bytes:
    ims = [Image.new("RGB", (w, h), c) for c in (RED, BLUE)]
    return encode(ims[0], "WEBP", save_all=True, append_images=ims[1:], lossless=True)


def bmp(w: int = 64, h: int = 48, mode: str = "RGB") -> bytes:
    return encode(_marked(w, h, mode), "BMP")


def _bmp_file(w: int, h: int, depth: int, compression: int, extra: bytes, pixels: bytes) -> bytes:
    """A BMP with a V5 header (masks from `extra`, 16 bytes) and `extra`'s palette."""
    import struct

    info = struct.pack("<IiiHHIIiiII", 124, w, h, 1, depth, compression, len(pixels), 0, 0, 0, 0)
    info += extra[:16].ljust(16, b"\0") + bytes(124 - 56) + extra[16:]
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels


def bmp_rgba(w: int = 64, h: int = 48, im: Image.Image | None = None) -> bytes:
    """32-bit BI_BITFIELDS with an alpha mask (Pillow saves RGBA as BI_RGB, whose
    fourth byte it then reads as padding): `im` or half transparent, bottom-up rows."""
    import struct

    pixels = (im or _half_transparent(w, h)).tobytes("raw", "BGRA", 0, -1)
    masks = struct.pack("<4I", 0xFF0000, 0xFF00, 0xFF, 0xFF000000)
    return _bmp_file(w, h, 32, 3, masks, pixels)


def bmp16(w: int = 64, h: int = 48) -> bytes:
    """16-bit 5-6-5 BI_BITFIELDS, bottom-up (Pillow decodes it whole)."""
    import struct

    import numpy as np

    rgb = np.asarray(_marked(w, h).convert("RGB"), np.uint16)[::-1]
    packed = (rgb[..., 0] >> 3) << 11 | (rgb[..., 1] >> 2) << 5 | rgb[..., 2] >> 3
    rows = np.zeros((h, (w * 2 + 3) // 4 * 2), "<u2")
    rows[:, :w] = packed
    return _bmp_file(w, h, 16, 3, struct.pack("<3I", 0xF800, 0x7E0, 0x1F), rows.tobytes())


def bmp_rle8(w: int = 64, h: int = 48) -> bytes:
    """RLE8 (Pillow decodes it; it cannot write one): runs of up to 255 of one index."""
    palette = bytes(b for i in range(256) for b in (i, 255 - i, (i * 7) % 256, 0))
    rows = bytearray()
    for y in range(h):
        x = 0
        while x < w:
            run = min(255, w - x)
            rows += bytes([run, (x // 16 + y) % 256])
            x += run
        rows += b"\0\0"  # end of line
    rows += b"\0\1"  # end of bitmap
    return _bmp_file(w, h, 8, 1, b"\0" * 16 + palette, bytes(rows))


def jp2(w: int = 64, h: int = 48) -> bytes:
    """JPEG 2000 (jp2 container); needs Pillow built with OpenJPEG."""
    return encode(_marked(w, h), "JPEG2000")


def truncated_jpeg(w: int = 256, h: int = 192) -> bytes:
    """A valid header and the first ~60% of the entropy-coded data, no EOI."""
    im = Image.effect_noise((w, h), 64).convert("RGB")
    data = encode(im, "JPEG", quality=90)
    return data[: int(len(data) * 0.6)]


def truncated_png(w: int = 64, h: int = 48) -> bytes:
    data = encode(Image.effect_noise((w, h), 64).convert("RGB"), "PNG")
    return data[: int(len(data) * 0.6)]


def svg() -> bytes:
    return (
        b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10" fill="red"/></svg>\n'
    )


def pdf() -> bytes:
    return encode(Image.new("RGB", (8, 8), RED), "PDF")


def random_bytes(n: int = 4096, seed: int = 1) -> bytes:
    """Deterministic noise that matches no image signature."""
    data = random.Random(seed).randbytes(n)
    return b"\x00\x01" + data if data[:1] in {b"\xff", b"\x89", b"G", b"I", b"M", b"B"} else data


def non_image() -> bytes:
    return b"<!doctype html><html><body>not an image</body></html>\n"


# --------------------------------------------------------------------------- realistic content


def photo(w: int, h: int, seed: int, grain: float = 0.25) -> Image.Image:
    """Smooth colour fields plus grain: compresses like a phone photo (~0.33 B/px at q85)."""
    rng = random.Random(seed)
    base = Image.frombytes("RGB", (16, 12), rng.randbytes(16 * 12 * 3))
    base = base.resize((w, h), Image.Resampling.BICUBIC)
    mid_size = (max(1, w // 16), max(1, h // 16))
    mid = Image.frombytes("RGB", mid_size, rng.randbytes(mid_size[0] * mid_size[1] * 3))
    base = Image.blend(base, mid.resize((w, h), Image.Resampling.BILINEAR), 0.3)
    if not grain:
        return base
    noise = Image.merge("RGB", [Image.effect_noise((w, h), 64) for _ in range(3)])
    return Image.blend(base, noise, grain)


def screenshot(w: int, h: int, seed: int) -> Image.Image:
    """Flat UI blocks, lines of 'text' and one photo: a typical screenshot PNG."""
    rng = random.Random(seed)
    im = Image.new("RGB", (w, h), (246, 247, 249))
    draw = ImageDraw.Draw(im)
    for _ in range(40):
        x, y = rng.randrange(w), rng.randrange(h)
        colour = tuple(rng.randrange(256) for _ in range(3))
        draw.rectangle([x, y, x + rng.randrange(40, 400), y + rng.randrange(20, 200)], colour)
    for y in range(0, h, 18):
        x = 20
        while x < w - 80:
            n = rng.randrange(2, 12) * 7
            draw.rectangle([x, y + 4, x + n, y + 12], (40, 40, 40))
            x += n + 7
    im.paste(photo(w // 3, h // 3, seed), (w // 2, h // 3))
    return im


def cutout(w: int, h: int, seed: int, grain: float = 0.25) -> Image.Image:
    """RGBA photo cut out on a transparent background: img2pdf's alpha path."""
    im = photo(w, h, seed, grain).convert("RGBA")
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).ellipse([w // 10, h // 10, w * 9 // 10, h * 9 // 10], 255)
    im.putalpha(mask)
    return im


def noisy_gradient(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Noise over a gradient (alpha: the gradient): what scripts/bench.py converts."""
    noise = Image.effect_noise((w, h), 40).convert("L")
    grad = Image.linear_gradient("L").resize((w, h))
    im = Image.merge("RGB", (noise, grad, Image.blend(noise, grad, 0.5)))
    if mode == "RGBA":
        im.putalpha(grad)
    return im


def banded_gradient(w: int, h: int, mode: str = "RGB") -> Image.Image:
    """Noise and gradient bands (alpha: a hard edge) in any mode: the memory measurements'."""
    base = Image.linear_gradient("L").resize((w, h))
    noise = Image.effect_noise((w, h), 48)
    bands = [Image.blend(base, noise, 0.5), noise, base.transpose(Image.Transpose.ROTATE_180)]
    im = Image.merge("RGB", bands)
    if mode == "RGBA":
        alpha = base.point(lambda v: 0 if v < 96 else 255)
        im.putalpha(alpha)
        return im
    return im.convert(mode) if mode != "RGB" else im


def place_gif_frame(gif: bytes, screen: tuple[int, int], left: int, top: int) -> bytes:
    """`gif` with its logical screen set to `screen` and its first frame moved to
    (left, top): a frame smaller than (or past) the screen."""
    data = bytearray(gif)
    data[6:10] = struct.pack("<HH", *screen)
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while data[pos] == 0x21:  # extension blocks
        pos += 2
        while data[pos]:
            pos += data[pos] + 1
        pos += 1
    assert data[pos] == 0x2C, "no image descriptor where one belongs"
    data[pos + 1 : pos + 5] = struct.pack("<HH", left, top)
    return bytes(data)
