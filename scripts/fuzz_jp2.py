"""Differential fuzz of the JPEG 2000 copy routes: random header mutations of
seed files (8- and 16-bit, grey and RGB, .jp2 and bare .j2k, tiled and
untiled, with and without a resolution box), each run through inspection and
conversion and through Pillow's full decode. Prints, per seed, how many files
Pillow rejects yet still become a PDF, and how many Pillow decodes yet are
refused (the bar: 0).

    PYTHONPATH=. .venv/bin/python scripts/fuzz_jp2.py [mutations per seed] [seed] [--before]

--before runs the same mutations with the structural check switched off (every
file counts as sound): the copy routes as they were without it.
"""

from __future__ import annotations

import io
import random
import sys
import warnings

import numpy as np
import openjpeg
from PIL import Image

from app.engine import structure
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.errors import ApiError

W, H = 70, 45


def _grey(bits: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return ((x * y * 37) % (1 << bits)).astype(np.uint16 if bits > 8 else np.uint8)


def _rgb(bits: int) -> np.ndarray:
    g = _grey(bits)
    return np.ascontiguousarray(np.stack([g, g[::-1], g[:, ::-1]], -1))


def _pillow(im: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG2000", **options)
    return buf.getvalue()


def _with_res(data: bytes) -> bytes:
    res = b"\x00\x00\x00\x12resc" + bytes.fromhex("01fc0064 00fe0064 0000")
    box = b"\x00\x00\x00\x1ares " + res
    start = data.index(b"jp2h") - 4
    length = int.from_bytes(data[start : start + 4], "big")
    jp2h = (length + len(box)).to_bytes(4, "big") + data[start + 4 : start + length] + box
    return data[:start] + jp2h + data[start + length :]


def seeds() -> dict[str, bytes]:
    rgb8 = Image.fromarray(_rgb(8), "RGB")
    grey8 = Image.fromarray(_grey(8), "L")
    grey16 = Image.frombytes("I;16", (W, H), _grey(16).astype("<u2").tobytes())
    return {
        "rgb8.jp2": _pillow(rgb8),
        "rgb8-tiled.j2k": _pillow(rgb8, tile_size=(32, 32), no_jp2=True),
        "grey8-res.jp2": _with_res(_pillow(grey8)),
        "grey16-tiled.jp2": _pillow(grey16, tile_size=(32, 16)),
        "grey16.j2k": _pillow(grey16, no_jp2=True),
        "rgb16.jp2": openjpeg.encode(
            _rgb(16), bits_stored=16, photometric_interpretation=1, codec_format=1
        ),
        "rgb12-res.jp2": _with_res(
            openjpeg.encode(
                _rgb(16) >> 4, bits_stored=12, photometric_interpretation=1, codec_format=1
            )
        ),
        "rgb16.j2k": openjpeg.encode(_rgb(16), bits_stored=16, codec_format=0),
    }


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-4 byte changes in the headers (the first 200 bytes and each marker or
    box header), a few cuts or insertions."""
    out = bytearray(data)
    heads = [i for i in range(len(out) - 1) if out[i] == 0xFF and out[i + 1] >= 0x4F]
    for _ in range(rng.randint(1, 4)):
        roll = rng.random()
        if roll < 0.6:
            at = rng.randrange(min(len(out), 200))
        elif roll < 0.85 and heads:
            at = min(rng.choice(heads) + rng.randrange(14), len(out) - 1)
        else:
            at = rng.randrange(len(out))
        choice = rng.random()
        if choice < 0.7:
            out[at] = rng.randrange(256)
        elif choice < 0.8:
            out[at] ^= 1 << rng.randrange(8)
        elif choice < 0.9:
            del out[at : at + rng.randint(1, 8)]
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
    return bytes(out)


def pillow_decodes(data: bytes) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                im.load()
        return True
    except Exception:
        return False


def service(data: bytes) -> str:
    """ "pdf", or the refusal's error code."""
    try:
        convert_to_pdf(data, inspect_image(data, 40_000_000))
    except ApiError as exc:
        return exc.code
    return "pdf"


def main() -> None:
    if "--before" in sys.argv:
        sys.argv.remove("--before")
        structure._jp2_sound = lambda data: True
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 16)  # noqa: S311 (reproducible)
    totals = [0, 0, 0, 0, 0]
    for name, seed in seeds().items():
        assert pillow_decodes(seed) and structure.scan(seed, "jp2").sound, name
        rejected = leaked = refused = unsound_ok = 0
        for _ in range(count):
            data = mutate(seed, rng)
            ok = pillow_decodes(data)
            result = service(data)
            if not ok:
                rejected += 1
                leaked += result == "pdf"
            elif result != "pdf":
                refused += 1
                print(f"  {name}: Pillow decodes, service says {result}")
            if ok and not structure.scan(data, "jp2").sound:
                unsound_ok += 1
        print(
            f"{name:18} mutations {count}  Pillow rejects {rejected}  of those a PDF {leaked}"
            f"  Pillow decodes but refused {refused}  decodes but fails the check {unsound_ok}"
        )
        for i, n in enumerate((count, rejected, leaked, refused, unsound_ok)):
            totals[i] += n
    print(
        "total mutations {}  Pillow rejects {}  of those a PDF {}  refused {}  "
        "decoded instead of copied {}".format(*totals)
    )


if __name__ == "__main__":
    main()
