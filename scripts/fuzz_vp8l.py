"""Differential fuzz of the streaming VP8L decoder (app/engine/vp8l.py) against
libwebp's WebPDecode, in process, on the same bytes.

Six cases in ten mutate a corpus file: Pillow's lossless output (photo,
screenshot, palette and alpha images, 1-3 px wide ones too, methods 0-6) and
streams of the VP8L writer (tests/support/vp8l_writer.py: each transform, the
colour cache, meta prefix codes, copies), with 1-4 mutations (mostly one): bit
flips and byte changes (mostly in the stream's first bytes, where the header,
transforms and codes are), insertions and deletions, a cut file, a cut stream
re-wrapped with right sizes, an edited chunk or RIFF size, bytes appended. The
other four are streams the writer generates at random (`generated`: transforms
in a random order, caches, meta codes, copies at their boundaries), three in
ten of them mutated too. Each case ends as:

    same       both decode, the same pixels (a fifth also read through
               Decoder.rows in bands of a random height, RGB or RGBA)
    refused    both refuse
    large      over LARGE pixels by the header: not decoded (memory)
    DIFFERENT  both decode, other pixels
    OURS-REFUSES / OURS-DECODES   one decodes what the other refuses
    ERROR      our decoder raised something else than BadData

Every mismatch is saved as /tmp/fuzz-vp8l-<seed>-<case>.webp; the case being
decoded is kept in /tmp/fuzz-vp8l-current-<pid>.webp, so a crash leaves its input.

    PYTHONPATH=. .venv/bin/python scripts/fuzz_vp8l.py [cases] [seed]
    PYTHONPATH=. .venv/bin/python scripts/fuzz_vp8l.py --minimise FILE
"""

from __future__ import annotations

import os
import random
import struct
import sys
from collections import Counter

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np

from app.engine import vp8l
from app.engine.png_strips import BadData
from tests.support import images
from tests.support import vp8l_writer as w

LARGE = 1 << 22  # pixels: libwebp and the comparison each hold the whole frame
CURRENT = f"/tmp/fuzz-vp8l-current-{os.getpid()}.webp"


def _pillow_corpus() -> list[bytes]:
    sources = [
        images.photo(61, 43, 1),
        images.screenshot(97, 33, 2),
        images.screenshot(40, 30, 3).quantize(7).convert("RGB"),
        images.screenshot(33, 17, 4).quantize(2).convert("RGB"),
        images.cutout(50, 40, 5),
        images.noisy_gradient(70, 20, "RGBA"),
        images.photo(1, 40, 6),  # narrow: plane codes whose distance is under 1
        images.screenshot(60, 30, 7).crop((20, 0, 22, 30)).quantize(3).convert("RGB"),
        images.cutout(3, 25, 8),
    ]
    out = []
    for i, im in enumerate(sources):
        for method in range(7):
            quality = (0, 25, 50, 75, 100)[(i + method) % 5]
            out.append(
                images.encode(
                    im, "WEBP", lossless=True, method=method, quality=quality, exact=method % 2 == 0
                )
            )
    return out


def _random_argb(n: int, rng: random.Random) -> list[int]:
    return [rng.getrandbits(32) for _ in range(n)]


def _writer_corpus() -> list[bytes]:
    rng = random.Random(7)  # noqa: S311 (reproducible)
    out = []
    width, height = 23, 13
    tiles = w._sub_size(width, 2) * w._sub_size(height, 2)
    lits = [w.Lit.argb(v) for v in _random_argb(width * 3, rng)]
    body = [*lits, w.Hit(1), w.Copy(20, 1), w.Copy.raw(7, 50), w.Hit(0), w.Copy(9, 2)]
    body += [w.Lit.argb(v) for v in _random_argb(width * height - len(lits) - 38, rng)]
    modes = w.Predictor.of(2, [m % 16 for m in range(tiles)])
    cross = w.CrossColour.of(2, [tuple(rng.randrange(256) for _ in range(3)) for _ in range(tiles)])
    groups = w.group_image([rng.randrange(4) for _ in range(tiles)])
    variants = [
        w.Image(width, height, w.Pixels(body, cache_bits=2)),
        w.Image(width, height, w.Pixels(body, cache_bits=4), [modes]),
        w.Image(width, height, w.Pixels(body, cache_bits=1), [w.SubtractGreen(), modes, cross]),
        w.Image(width, height, w.Pixels(body, cache_bits=3, meta=(2, groups)), [cross], alpha=True),
        w.Image(width, height, w.Pixels(body, cache_bits=11, meta=(2, groups))),
    ]
    for colours in (2, 3, 11, 40):
        limit = min(colours + 1, 1 << (8 >> w.bundle_bits(colours)))  # one past the palette
        indices = [[rng.randrange(limit) for _ in range(width)] for _ in range(height)]
        packed = w.bundle(indices, colours)
        pixels = w.Pixels([w.Lit(0, 0, g, 0) for row in packed for g in row])
        palette = w.ColourIndexing(_random_argb(colours, rng))
        xsize = len(packed[0])
        more = [w.Predictor.of(3, [11] * (w._sub_size(xsize, 3) * w._sub_size(height, 3)))]
        variants.append(w.Image(width, height, pixels, [palette, *more[: colours % 2]]))
    for im in variants:
        out.append(im.riff(vp8x=len(out) % 2 == 1))
    return out


def generated(rng: random.Random) -> bytes:
    """A random stream of the writer: transforms in a random order, a cache,
    meta codes, and symbols whose copies are often at a boundary (a distance of
    the pixels so far or one more, a length to the last pixel or one past)."""
    width, height = rng.choice([1, 2, 3, rng.randint(1, 40)]), rng.randint(1, 24)
    transforms, xsize = [], width
    for kind in rng.sample(range(4), rng.randint(0, 4)):
        bits = rng.randint(2, 4)
        tiles = w._sub_size(xsize, bits) * w._sub_size(height, bits)
        if kind == 0:
            transforms.append(w.Predictor.of(bits, [rng.randrange(16) for _ in range(tiles)]))
        elif kind == 1:
            multipliers = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(tiles)]
            transforms.append(w.CrossColour.of(bits, multipliers))
        elif kind == 2:
            transforms.append(w.SubtractGreen())
        else:
            colours = rng.choice([1, 2, 3, 4, 5, 16, 17, rng.randint(1, 256)])
            transforms.append(w.ColourIndexing(_random_argb(colours, rng)))
            xsize = w._sub_size(xsize, w.bundle_bits(colours))
    cache_bits = rng.choice([0, 0, 1, 2, rng.randint(1, 11)])
    colours = _random_argb(rng.randint(1, 6), rng)
    total, pos, symbols = xsize * height, 0, []
    while pos < total:
        roll = rng.random()
        if roll < 0.5 or pos == 0:
            symbols.append(
                w.Lit.argb(rng.choice(colours) ^ rng.choice([0, 0, 1 << rng.randrange(32)]))
            )
            pos += 1
        elif roll < 0.6 and cache_bits:
            symbols.append(w.Hit(rng.randrange(1 << cache_bits)))
            pos += 1
        else:
            left = total - pos
            length = rng.choice([1, 2, rng.randint(1, min(left, 4096)), min(left, 4096)])
            if left <= 4096 and rng.random() < 0.05:
                length = left + 1  # one past the last pixel
            if rng.random() < 0.5:
                symbols.append(w.Copy(length, rng.randint(1, 120)))
            else:
                dist = rng.choice([pos, pos, pos + 1, rng.randint(1, pos)])
                symbols.append(w.Copy.raw(length, min(dist, w.MAX_DISTANCE)))
            pos += length
    meta = None
    if rng.random() < 0.3:
        bits = rng.randint(2, 4)
        tiles = w._sub_size(xsize, bits) * w._sub_size(height, bits)
        meta = (bits, w.group_image([rng.randrange(rng.randint(1, 4)) for _ in range(tiles)]))
    pixels = w.Pixels(symbols, cache_bits=cache_bits, meta=meta)
    if meta is None and rng.random() < 0.2:  # a max_symbol field, past the alphabet at times
        alphabet = w.NUM_LITERALS + w.NUM_LENGTHS + (1 << cache_bits if cache_bits else 0)
        field = rng.choice([True, alphabet, alphabet + 1, rng.randint(2, alphabet + 2)])
        green = {w._green_symbol(s) for s in symbols}
        pixels.codes = [[w.Code.of(green, max_symbol=field)]]
    if rng.random() < 0.03:  # a colour cache of 0 or over 11 bits
        pixels.cache_bits, pixels.cache_flag = rng.choice([0, 12, 15]), True
    im = w.Image(width, height, pixels, transforms, alpha=rng.random() < 0.5)
    return im.riff(vp8x=rng.random() < 0.3)


def corpus() -> list[bytes]:
    return _pillow_corpus() + _writer_corpus()


def _payload_start(data: bytes) -> int:
    at = data.find(b"VP8L")
    return at + 8 if at >= 0 else 12


def mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    start = _payload_start(data)
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3, 4])):
        if len(out) <= start + 1:
            break
        roll = rng.random()
        near = start + min(int(rng.expovariate(1 / 40)), len(out) - start - 1)
        anywhere = rng.randrange(start, len(out))
        at = near if rng.random() < 0.7 else anywhere
        if roll < 0.35:
            out[at] ^= 1 << rng.randrange(8)
        elif roll < 0.55:
            out[at] = rng.randrange(256)
        elif roll < 0.62:
            del out[at : at + rng.randint(1, 4)]
        elif roll < 0.69:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
        elif roll < 0.77:  # the file cut
            return bytes(out[: rng.randrange(start, len(out))])
        elif roll < 0.85:  # the stream cut, the sizes made right
            return w.riff(bytes(out[start : rng.randrange(start, len(out))]))
        elif roll < 0.93:  # a size field: the VP8L chunk's or the RIFF's
            field = start - 4 if rng.random() < 0.7 else 4
            (size,) = struct.unpack_from("<I", out, field)
            size = rng.choice([0, size - 1, size + 1, size + rng.randrange(-64, 64), 2**32 - 1])
            struct.pack_into("<I", out, field, size % 2**32)
        else:
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    return bytes(out)


def _header_pixels(data: bytes) -> int:
    at = _payload_start(data)
    if len(data) < at + 5:
        return 0
    bits = int.from_bytes(data[at + 1 : at + 5], "little")
    return ((bits & 0x3FFF) + 1) * ((bits >> 14 & 0x3FFF) + 1)


def outcome(data: bytes, rng: random.Random | None = None) -> str:
    if _header_pixels(data) > LARGE:
        return "large"
    with open(CURRENT, "wb") as f:
        f.write(data)
    reference = w.libwebp_rgba(data)
    try:
        width, height, rgba = vp8l.decode_rgba(data)
        ours = (width, height, bytes(rgba))
    except BadData:
        ours = None
    except Exception as exc:  # MemoryError included: a mismatch to look at
        return f"ERROR {type(exc).__name__}: {str(exc)[:60]}"
    if reference is None:
        return "refused" if ours is None else "OURS-DECODES"
    if ours is None:
        return "OURS-REFUSES"
    if ours != reference:
        return "DIFFERENT"
    if rng is not None and rng.random() < 0.2:
        return _rows(data, reference, rng)
    return "same"


def _rows(data: bytes, reference, rng: random.Random) -> str:
    width, height, rgba = reference
    bands = rng.choice([3, 4])
    count = rng.choice([1, 2, 3, 7, 16, height])
    expected = np.frombuffer(rgba, np.uint8).reshape(height, width, 4)[:, :, :bands]
    got = []
    try:
        max_rows = rng.choice([count, height])
        with vp8l.Decoder(vp8l.stream(data), width, height, bands, max_rows) as decoder:
            done = 0
            while done < height:
                rows = np.array(decoder.rows(count))
                if len(rows) != min(count, height - done):
                    return f"DIFFERENT rows: {len(rows)} of {count} at {done}"
                got.append(rows)
                done += len(rows)
    except BadData:
        return f"OURS-REFUSES rows (bands {bands}, {count} a call)"
    if not np.array_equal(np.concatenate(got), expected):
        return f"DIFFERENT rows (bands {bands}, {count} a call)"
    return "same"


def minimise(path: str) -> None:
    """Shrink a mismatch: drop byte runs and zero bytes while the outcome stays;
    the sizes of the RIFF and VP8L chunk are kept right when they were."""
    with open(path, "rb") as f:
        data = f.read()
    target = outcome(data)
    print(f"{path}: {len(data)} bytes, {target}")
    start = _payload_start(data)
    payload = data[start:]
    rewrap = w.riff(payload) == data or w.riff(payload)[: len(data)] == data

    def build(p: bytes) -> bytes:
        return w.riff(p) if rewrap else data[:start] + p

    step = max(1, len(payload) // 2)
    while step >= 1:
        at = 0
        while at < len(payload):
            trial = payload[:at] + payload[at + step :]
            if outcome(build(trial)) == target:
                payload = trial
            else:
                at += step
        step //= 2
    for at in range(len(payload)):
        if payload[at]:
            trial = payload[:at] + b"\0" + payload[at + 1 :]
            if outcome(build(trial)) == target:
                payload = trial
    small = build(payload)
    out = path.replace(".webp", "") + "-min.webp"
    with open(out, "wb") as f:
        f.write(small)
    print(f"{out}: {len(small)} bytes, payload {payload.hex()}")


def main() -> None:
    if not vp8l.available():
        sys.exit("libvp8l.so missing or stale: run scripts/build_native.sh")
    if sys.argv[1:2] == ["--minimise"]:
        minimise(sys.argv[2])
        return
    cases = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 16
    rng = random.Random(seed)  # noqa: S311 (reproducible)
    files = corpus()
    for i, data in enumerate(files):
        result = outcome(data)
        if result != "same":
            print(f"  corpus {i}: {result}")
    counts: Counter[str] = Counter()
    for case in range(cases):
        kind = "generated" if rng.random() < 0.4 else "mutated"
        if kind == "generated":
            data = generated(rng)
            if rng.random() < 0.3:
                kind, data = "generated+mutated", mutate(data, rng)
        else:
            data = mutate(rng.choice(files), rng)
        result = outcome(data, rng)
        counts[f"{kind} {result.split(' ')[0]}"] += 1
        if result.split(" ")[0] not in ("same", "refused", "large"):
            path = f"/tmp/fuzz-vp8l-{seed}-{case}.webp"
            with open(path, "wb") as f:
                f.write(data)
            print(f"  case {case}: {result} -> {path}", flush=True)
    os.unlink(CURRENT)
    print(f"corpus {len(files)}  cases {cases}  seed {seed}")
    for kind in ("mutated", "generated", "generated+mutated"):
        found = {k.split(" ")[1]: v for k, v in counts.items() if k.split(" ")[0] == kind}
        print(f"  {kind:18} " + "  ".join(f"{k} {v}" for k, v in sorted(found.items())))


if __name__ == "__main__":
    main()
