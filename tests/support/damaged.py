"""Damaged copies of valid images, reproducible from a seed.

Seeds cover every accepted format and the main variants of each; mutants are
truncations, byte flips, wrong length fields (PNG chunks, JPEG segments, JP2
boxes, RIFF chunks, TIFF IFD counts and offsets) and repeated slices.
"""

from __future__ import annotations

import io
import random
import struct

from PIL import Image

from tests.support import images


def _progressive_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((64, 48), 40).convert("RGB").save(buf, "JPEG", progressive=True)
    return buf.getvalue()


def _j2k() -> bytes:
    buf = io.BytesIO()
    images._marked(64, 48).save(buf, "JPEG2000", no_jp2=True)
    return buf.getvalue()


SEEDS = {
    "jpeg": lambda: images.jpeg(64, 48),
    "jpeg-progressive": _progressive_jpeg,
    "jpeg-cmyk": lambda: images.cmyk_jpeg(64, 48),
    "jpeg-exif": lambda: images.jpeg_with_orientation(6, 64, 48),
    "png": lambda: images.png(64, 48),
    "png-alpha": lambda: images.alpha_png(64, 48),
    "png-interlaced": lambda: images.png_interlaced(32, 24),
    "png16": lambda: images.png16(32, 24),
    "png-palette": lambda: images.palette_transparent_png(64, 48),
    "gif": lambda: images.gif(64, 48),
    "gif-animated": lambda: images.gif_animated(32, 24),
    "tiff": lambda: images.tiff(64, 48),
    "tiff-alpha": lambda: images.tiff_alpha(64, 48),
    "tiff16": lambda: images.tiff16(32, 24),
    "tiff-lzw": lambda: images.tiff(64, 48, compression="tiff_lzw"),
    "webp": lambda: images.webp(64, 48),
    "webp-alpha": lambda: images.webp_alpha(64, 48),
    "webp-animated": lambda: images.webp_animated(32, 24),
    "bmp": lambda: images.bmp(64, 48),
    "jp2": lambda: images.jp2(64, 48),
    "j2k": _j2k,
}


def _length_fields(data: bytes) -> list[tuple[int, int]]:
    """(offset, width) of length/offset fields a parser trusts."""
    fields: list[tuple[int, int]] = []
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        pos = 8
        while pos + 8 <= len(data):
            fields.append((pos, 4))
            (n,) = struct.unpack_from(">I", data, pos)
            pos += 12 + n
    elif data[:2] == b"\xff\xd8":
        pos = 2
        while pos + 4 <= len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
            fields.append((pos + 2, 2))
            (n,) = struct.unpack_from(">H", data, pos + 2)
            pos += 2 + n
    elif data[:4] == b"RIFF":
        fields.append((4, 4))
        pos = 12
        while pos + 8 <= len(data):
            fields.append((pos + 4, 4))
            (n,) = struct.unpack_from("<I", data, pos + 4)
            pos += 8 + n + (n & 1)
    elif data[4:8] == b"jP  ":
        pos = 0
        while pos + 8 <= len(data):
            fields.append((pos, 4))
            (n,) = struct.unpack_from(">I", data, pos)
            if n < 8:
                break
            if data[pos + 4 : pos + 8] == b"jp2h":
                fields.append((pos + 8, 4))  # first sub-box (ihdr) length
            pos += n
    elif data[:2] in (b"II", b"MM"):
        order = "<" if data[:2] == b"II" else ">"
        fields.append((4, 4))
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        if ifd + 2 <= len(data):
            fields.append((ifd, 2))
            (count,) = struct.unpack_from(order + "H", data, ifd)
            for i in range(min(count, 64)):
                entry = ifd + 2 + 12 * i
                fields += [(entry + 4, 4), (entry + 8, 4)]
    elif data[:3] == b"GIF":
        fields += [(6, 2), (8, 2), (10, 1)]
    elif data[:2] == b"BM":
        fields += [(2, 4), (10, 4), (14, 4), (18, 4), (22, 4), (34, 4)]
    return [(o, w) for o, w in fields if o + w <= len(data)]


_NASTY = [0, 1, 2, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    kind = rng.choice(["truncate", "flip", "length", "repeat"])
    if kind == "truncate":
        cut = rng.randrange(1, len(data))
        return f"truncate@{cut}", data[:cut]
    if kind == "flip":
        out = bytearray(data)
        n = rng.randint(1, 8)
        for _ in range(n):
            pos = rng.randrange(len(out))
            out[pos] ^= 1 << rng.randrange(8)
        return f"flip x{n}", bytes(out)
    if kind == "length":
        fields = _length_fields(data)
        if fields:
            offset, width = rng.choice(fields)
            value = rng.choice(_NASTY) & ((1 << (8 * width)) - 1)
            if rng.random() < 0.3:  # off by a little
                old = int.from_bytes(data[offset : offset + width], "big")
                value = (old + rng.choice([-2, -1, 1, 2, 100])) % (1 << (8 * width))
            order = "little" if data[:2] == b"II" or data[:4] == b"RIFF" else "big"
            if data[:2] == b"BM" or data[:3] == b"GIF":
                order = "little"
            out = data[:offset] + value.to_bytes(width, order) + data[offset + width :]
            return f"length@{offset}={value}", out
    start = rng.randrange(len(data))
    size = rng.randint(1, min(256, len(data) - start))
    times = rng.randint(2, 50)
    piece = data[start : start + size]
    return f"repeat@{start}+{size}x{times}", data[:start] + piece * times + data[start:]


def mutants(per_seed: int, seed: int = 14) -> list[tuple[str, bytes]]:
    """[(name, bytes)]: `per_seed` damaged copies of every seed image, reproducibly."""
    rng = random.Random(seed)
    out = []
    for name, make in SEEDS.items():
        data = make()
        for i in range(per_seed):
            what, damaged = mutate(data, rng)
            out.append((f"{name}#{i}:{what}", damaged))
    return out
