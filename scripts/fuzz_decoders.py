"""Differential fuzzing of the banded decoders against the reference decoders.

Mutates the headers and chunks of still WebP (VP8, VP8L, VP8X with ALPH, ICCP,
EXIF), GIF (screen vs frame sizes and offsets, colour table sizes, the
transparent index) and interlaced PNG (every colour type and depth), converts
each file as the service's child does (inspect_image, convert_to_pdf) and
compares the PDF's decoded samples with Pillow's decode (libvips' for
interlaced PNG, the decoder that route replaced). Each case ends as:

    same       converted, the same samples as the reference
    refused    a clean 4xx (an ApiError under 500)
    DIFFERENT  converted, other samples than the reference
    ERROR      any other exception (a 500)
    CRASH      the process died of a signal (the sandbox answers 422
               conversion_crashed; counted here to be looked at)

Usage: scripts/fuzz_decoders.py [cases per format] [seed]
Prints the counts per format and outcome and every DIFFERENT/ERROR/CRASH case.
Runs the cases in a child process that is restarted after a crash.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.support.images import gif_lzw_frame

FORMATS = ("webp", "gif", "png")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + data))
    return struct.pack(">I", len(data)) + kind + data + crc


def _riff(chunks: list[tuple[bytes, bytes]]) -> bytes:
    body = b"WEBP"
    for kind, payload in chunks:
        body += kind + struct.pack("<I", len(payload)) + payload + b"\0" * (len(payload) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 12
    while pos + 8 <= len(data):
        kind, size = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        out.append((kind, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return out


def webp_case(rng) -> bytes:
    import numpy as np
    from PIL import Image

    w, h = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    alpha = bool(rng.integers(0, 2))
    mode = "RGBA" if alpha else "RGB"
    small = rng.integers(0, 256, (h // 3 + 1, w // 3 + 1, len(mode)), dtype=np.uint8)
    arr = small.repeat(3, 0).repeat(3, 1)[:h, :w]
    params = {"lossless": bool(rng.integers(0, 2)), "quality": int(rng.integers(1, 100))}
    if rng.integers(0, 3) == 0:
        from PIL import ImageCms

        params["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if rng.integers(0, 3) == 0:
        exif = Image.Exif()
        exif[0x0112] = int(rng.integers(0, 10))
        params["exif"] = exif.tobytes()
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "WEBP", **params)
    data = buf.getvalue()
    chunks = _webp_chunks(data)
    how = int(rng.integers(0, 7))
    if how == 0 and chunks and chunks[0][0] == b"VP8X":  # canvas size
        x = bytearray(chunks[0][1])
        x[4:7] = int(rng.integers(0, w + 3)).to_bytes(3, "little")
        x[7:10] = int(rng.integers(0, h + 3)).to_bytes(3, "little")
        chunks[0] = (b"VP8X", bytes(x))
    elif how == 1 and chunks and chunks[0][0] == b"VP8X":  # feature flags
        x = bytearray(chunks[0][1])
        x[0] = int(rng.integers(0, 256))
        chunks[0] = (b"VP8X", bytes(x))
    elif how == 2:  # a VP8X header for a simple file, or none for an extended one
        if chunks[0][0] == b"VP8X":
            chunks = [c for c in chunks if c[0] != b"VP8X"]
        else:
            flags = 0x10 if alpha else 0
            cw, ch = int(rng.integers(1, w + 2)), int(rng.integers(1, h + 2))
            head = bytes([flags, 0, 0, 0]) + (cw - 1).to_bytes(3, "little")
            chunks.insert(0, (b"VP8X", head + (ch - 1).to_bytes(3, "little")))
    elif how == 3:  # one byte of a chunk's first 32
        k = int(rng.integers(0, len(chunks)))
        kind, payload = chunks[k]
        if payload:
            p = bytearray(payload)
            p[int(rng.integers(0, min(32, len(p))))] ^= 1 << int(rng.integers(0, 8))
            chunks[k] = (kind, bytes(p))
    elif how == 4:  # the order of the chunks
        rng.shuffle(chunks)
    data = _riff(chunks)
    if how == 5:  # a chunk or RIFF size field
        sizes = [4] + [i + 4 for i in range(12, len(data) - 8) if data[i : i + 4].isalnum()]
        at = int(rng.choice(sizes))
        value = int(rng.integers(0, len(data) + 16))
        data = data[:at] + struct.pack("<I", value) + data[at + 4 :]
    elif how == 6:  # cut
        data = data[: int(rng.integers(12, len(data)))]
    return data


def lzw_gif(screen, box, table: int, indices, transparency=None, flags=None) -> bytes:
    """A GIF89a: a global table of `table` entries (0: none), its first frame
    `box` = (left, top, w, h) holding `indices`, 9-bit LZW codes."""
    bits = max(0, table.bit_length() - 2)
    gflags = (0x80 | bits) if table else 0
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, gflags if flags is None else flags, 0, 0)
    head += bytes((i * 37 + 11) % 256 for i in range(3 * table))
    if transparency is not None:
        head += b"\x21\xf9\x04\x01\x00\x00" + bytes([transparency]) + b"\x00"
    left, top, fw, fh = box
    head += b"\x2c" + struct.pack("<HHHHB", left, top, fw, fh, 0)
    return head + gif_lzw_frame(indices) + b"\x3b"


def gif_case(rng) -> bytes:
    sw, sh = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    fw, fh = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    left, top = int(rng.integers(0, 45)), int(rng.integers(0, 45))
    table = int(rng.choice([0, 2, 4, 16, 128, 256]))
    top_index = int(rng.choice([max(1, table), 256]))
    indices = rng.integers(0, top_index, (fh, fw))
    transparency = None if rng.integers(0, 2) else int(rng.integers(0, 256))
    flags = None if rng.integers(0, 8) else int(rng.integers(0, 256))
    data = lzw_gif((sw, sh), (left, top, fw, fh), table, indices, transparency, flags)
    if rng.integers(0, 6) == 0:
        data = data[: int(rng.integers(6, len(data)))]
    return data


def png_case(rng) -> bytes:
    import numpy as np

    from tests.unit.test_convert_adam7 import adam7_deep

    depths = {0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]}
    colour_type = int(rng.choice(list(depths)))
    depth = int(rng.choice(depths[colour_type]))
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour_type]
    w, h = int(rng.integers(1, 40)), int(rng.integers(1, 40))
    values = rng.integers(0, 1 << depth, (h, w, channels))
    extra = b""
    if colour_type == 3:
        extra += _chunk(b"PLTE", rng.bytes(3 * int(rng.integers(1, 1 << depth + 1))))
    if rng.integers(0, 2):
        if colour_type == 3:
            extra += _chunk(b"tRNS", rng.bytes(int(rng.integers(0, 260))))
        elif colour_type in (0, 2):
            key = [int(v) for v in values[0, 0]] if rng.integers(0, 2) else [5] * channels
            size = 2 * channels if rng.integers(0, 6) else int(rng.integers(0, 8))
            extra += _chunk(b"tRNS", b"".join(struct.pack(">H", k) for k in key)[:size])
    data = bytearray(adam7_deep(np.asarray(values), colour_type, depth, extra))
    how = int(rng.integers(0, 5))
    if how == 0:  # an IHDR field, its CRC made right
        at = int(rng.integers(16, 29))
        data[at] = (
            int(rng.integers(0, 256)) if at >= 24 else data[at] ^ (1 << int(rng.integers(0, 8)))
        )
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif how == 1:  # a byte of the zlib stream, the IDAT CRC made right
        start = data.index(b"IDAT") - 4
        (length,) = struct.unpack_from(">I", data, start)
        at = start + 8 + int(rng.integers(0, length))
        data[at] ^= 1 << int(rng.integers(0, 8))
        end = start + 8 + length
        data[end : end + 4] = struct.pack(">I", zlib.crc32(bytes(data[start + 4 : end])))
    elif how == 2:
        data = data[: int(rng.integers(33, len(data)))]
    return bytes(data)


def samples(pdf: bytes):
    """(the /Indexed palette as (256, 3) RGB or None, the samples (indices or
    colour), alpha or None) decoded from the PDF's image."""
    import numpy as np
    import pikepdf

    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (image,) = doc.pages[0].get_images().values()
        out = []
        space = image.ColorSpace
        indexed = isinstance(space, pikepdf.Array) and space[0] == "/Indexed"
        for obj in (image, image.get("/SMask")):
            if obj is None:
                out.append(None)
                continue
            space = obj.ColorSpace
            bands = 1 if space == "/DeviceGray" or indexed or obj is not image else 3
            if isinstance(space, pikepdf.Array) and space[0] == "/ICCBased":
                bands = int(space[1].N)
            bpc, h, w = int(obj.BitsPerComponent), int(obj.Height), int(obj.Width)
            dtype = ">u2" if bpc == 16 else np.uint8
            raw = np.frombuffer(obj.read_bytes(), dtype)
            if bpc < 8:  # packed rows, each to a whole byte
                bits = np.unpackbits(raw.reshape(h, -1), axis=1)[:, : w * bands * bpc]
                weights = (1 << np.arange(bpc - 1, -1, -1)).astype(np.uint8)
                raw = (bits.reshape(h, w * bands, bpc) * weights).sum(axis=2).astype(np.uint8)
                if not indexed and obj is image:  # grey under 8 bits shows scaled to 8
                    raw = raw * np.uint8(255 // ((1 << bpc) - 1))
            out.append(raw.reshape(h, w, bands))
        lut = None
        if indexed:
            base = 1 if image.ColorSpace[1] == "/DeviceGray" else 3
            table = image.ColorSpace[3]
            table = table.read_bytes() if isinstance(table, pikepdf.Stream) else bytes(table)
            lut = np.frombuffer(table.ljust(256 * base, b"\0"), np.uint8).reshape(256, base)
            lut = np.repeat(lut, 3 // base, axis=1)
        return (lut if indexed else None), out[0], out[1]


def reference(kind: str, data: bytes):
    """The reference decode: ("P", indices, box) or ("px", samples)."""
    import numpy as np
    from PIL import Image

    if kind == "png":
        from tests.unit.test_convert_adam7 import libvips_decode

        with Image.open(io.BytesIO(data)) as im:
            if im.mode == "P":
                rgba = np.asarray(im.convert("RGBA"))
                return "P", np.asarray(im), None, rgba[..., 3], rgba[..., :3]
        return "px", libvips_decode(data)
    with Image.open(io.BytesIO(data)) as im:
        if kind == "gif":
            box = tuple(im.tile[0].extents) if im.tile else None
            im.load()
            return "P", np.asarray(im), box, None, np.asarray(im.convert("RGB"))
        arr = np.asarray(im.convert("RGBA" if im.mode == "RGBA" else "RGB"))
        return "px", arr


def run_one(kind: str, data: bytes) -> str:
    import numpy as np

    from app.engine.convert import convert_to_pdf
    from app.engine.inspect import inspect_image
    from app.errors import ApiError

    try:
        info = inspect_image(data, 10**8)
        pdf = convert_to_pdf(data, info)
    except ApiError as exc:
        return "refused" if exc.status < 500 else f"ERROR {exc.status} {exc.code}"
    except Exception as exc:  # every other exception is a 500
        return f"ERROR {type(exc).__name__}: {str(exc)[:80]}"
    try:
        ref = reference(kind, data)
    except Exception:  # the reference refuses what was converted
        return "same (reference refuses)"
    lut, colour, alpha = samples(pdf)
    indexed = lut is not None
    if info.route == "pillow-flatten":  # alpha flattened onto white, by design
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            ref = ("px", np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))
    if ref[0] == "P" and not indexed:  # libvips' RGB(A) frame, else Pillow's
        from PIL import Image

        from tests.unit.test_convert_adam7 import libvips_decode

        try:
            if info.route != "stream":
                raise ValueError("a Pillow route")
            ref = ("px", libvips_decode(data))
        except Exception:  # the routes that decode with Pillow (img2pdf)
            bands = colour.shape[2] + (alpha is not None)
            with Image.open(io.BytesIO(data)) as im:
                frame = im.convert({1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[bands])
                ref = ("px", np.asarray(frame).reshape(im.height, im.width, bands))
    if ref[0] == "P":  # the colours the indices show (img2pdf may renumber them)
        want, box = ref[4], ref[2]
        got = lut[colour[..., 0]]
        if got.shape != want.shape:
            return f"DIFFERENT shape {got.shape} vs {want.shape}"
        if box is not None:
            x0, y0, x1, y1 = box
            got, want = got[y0:y1, x0:x1], want[y0:y1, x0:x1]
        if not np.array_equal(got, want):
            return "DIFFERENT colours"
        opacity = ref[3]
        if opacity is not None and not np.array_equal(
            opacity, np.full_like(opacity, 255) if alpha is None else alpha[..., 0]
        ):
            return "DIFFERENT alpha"
        return "same"
    want = ref[1]
    if alpha is None and want.shape[2] in (2, 4) and (want[..., -1] == 255).all():
        want = want[..., :-1]  # an opaque alpha: the same page
    note = ""
    if kind == "webp" and alpha is None and want.shape[2] == 4 and not data[20] & 0x10:
        want, note = want[..., :3], " (opaque by the VP8X header, as libvips)"
    got = colour if alpha is None else np.concatenate([colour, alpha.astype(colour.dtype)], axis=2)
    if got.shape != want.shape:
        return f"DIFFERENT shape {got.shape} vs {want.shape}"
    if np.array_equal(got.astype(np.int64), want.astype(np.int64)):
        return "same" + note
    return "DIFFERENT pixels"


def make(kind: str, seed: int, i: int) -> bytes:
    import numpy as np

    rng = np.random.default_rng([seed, FORMATS.index(kind), i])
    return {"webp": webp_case, "gif": gif_case, "png": png_case}[kind](rng)


def child(kind: str, seed: int, start: int, stop: int, log: str) -> None:
    import logging
    import warnings

    logging.disable(logging.CRITICAL)
    warnings.simplefilter("ignore")
    with open(log, "a", buffering=1) as out:
        for i in range(start, stop):
            out.write(f"start {i}\n")
            try:
                result = run_one(kind, make(kind, seed, i))
            except Exception as exc:  # a bug of the case builder
                result = f"skip {type(exc).__name__}: {str(exc)[:60]}"
            out.write(f"end {i} {' '.join(result.split())}\n")


def main() -> None:
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    total = Counter()
    for kind in FORMATS:
        log = f"/tmp/fuzz-decoders-{os.getpid()}-{kind}.log"
        start = 0
        results: dict[int, str] = {}
        while start < cases:
            cmd = [
                sys.executable,
                __file__,
                "--child",
                kind,
                str(seed),
                str(start),
                str(cases),
                log,
            ]
            rc = subprocess.run(cmd, check=False).returncode
            last = start
            with open(log) as f:
                for line in f:
                    word, i, *rest = line.split(" ", 2)
                    last = int(i)
                    if word == "end":
                        results[int(i)] = rest[0].strip()
            if rc == 0:
                break
            results[last] = f"CRASH rc={rc}"
            start = last + 1
        os.unlink(log)
        counts = Counter(r.split(" (")[0].split(" ")[0] for r in results.values())
        total.update({f"{kind} {k}": v for k, v in counts.items()})
        print(kind, dict(counts), flush=True)
        for i, r in sorted(results.items()):
            if r.startswith(("DIFFERENT", "ERROR", "CRASH", "skip")):
                print(f"  {kind} seed={seed} case={i}: {r}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
