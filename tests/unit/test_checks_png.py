"""The IDAT check of the plain PNG route (app.engine.checks._check_png)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pikepdf
import pytest
from isal import isal_zlib
from PIL import Image

from app.engine import checks
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.errors import InvalidImage


def grey_png(width: int, height: int, level: int, fill: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), fill).save(buf, "PNG", compress_level=level)
    return buf.getvalue()


def embedded_samples(pdf: bytes, width: int, height: int) -> np.ndarray:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = next(iter(doc.pages[0].get_images().values()))
        return np.frombuffer(pikepdf.PdfImage(image).read_bytes(), np.uint8).reshape(height, width)


def chunk(kind: bytes, payload: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + payload))
    return struct.pack(">I", len(payload)) + kind + payload + crc


def one_idat(data: bytes) -> bytes:
    """The same PNG with its IDAT chunks joined into one (as some encoders write)."""
    pos, head, idat, tail = 8, b"", b"", b""
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IDAT":
            idat += payload
        elif idat:
            tail += chunk(kind, payload)
        else:
            head += chunk(kind, payload)
        pos += 12 + length
    return data[:8] + head + chunk(b"IDAT", idat) + tail


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (1024, 1023), (1024, 1025)])
def test_output_the_inflater_still_holds_after_the_last_idat_is_read(width, height):
    # 1024 x 1024 black: 1,049,600 bytes of rows from 1,097 compressed bytes. The first
    # call stops at its 1 MiB output limit with all the input read, the rest of the
    # rows still inside the inflater; they were dropped and the valid file refused.
    data = grey_png(width, height, 6)
    info = inspect_image(data, 10**9)
    assert info.route == "embed-png"
    pdf = convert_to_pdf(data, info)
    assert not embedded_samples(pdf, width, height).any()


def test_rows_past_the_header_still_held_by_the_inflater_are_refused():
    # 1024 x 1024 rows under a header that says 1024 x 1023: the extra row only comes
    # out of the inflater after the input is used up.
    data = bytearray(grey_png(1024, 1024, 6))
    data[20:24] = (1023).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    with pytest.raises(InvalidImage):
        convert_to_pdf(bytes(data), inspect_image(bytes(data), 10**9))


def test_one_large_idat_is_fed_to_the_inflater_64_kib_at_a_time(monkeypatch):
    # Each call that stops at its output limit copies the input it left: fed a whole
    # multi-megabyte IDAT, that copying grew with the square of the chunk.
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (1100, 1000), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG", compress_level=1)
    data = one_idat(buf.getvalue())
    assert data.count(b"IDAT") == 1 and len(data) > 1 << 20
    fed = []
    real = isal_zlib.decompressobj

    class Counting:
        def __init__(self):
            self.inner = real()

        def decompress(self, chunk, limit):
            fed.append(len(chunk))
            return self.inner.decompress(chunk, limit)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    monkeypatch.setattr(checks.isal_zlib, "decompressobj", Counting)
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    assert max(fed) <= 64 * 1024
    assert embedded_samples(pdf, 1000, 1100).tolist() == pixels.tolist()


def flip_crc(data: bytes, kind: bytes, nth: int = 0) -> bytes:
    """`data` with one bit of the CRC of its `nth` chunk of type `kind` flipped."""
    pos, seen = 8, 0
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        if data[pos + 4 : pos + 8] == kind:
            if seen == nth:
                at = pos + 8 + length
                return data[:at] + bytes([data[at] ^ 1]) + data[at + 1 :]
            seen += 1
        pos += 12 + length
    raise AssertionError(f"no {kind!r} chunk {nth}")


def png_of(mode: str, **params) -> bytes:
    shape = (37, 53) if mode in {"L", "P", "I;16"} else (37, 53, len(mode))
    values = np.random.default_rng(3).integers(0, 256, shape, np.uint8)
    if mode == "I;16":
        image = Image.fromarray(values.astype(np.uint16) * 257)
    else:
        image = Image.fromarray(values, "L" if mode == "P" else mode)
    if mode == "P":
        image = image.convert("P")
    buf = io.BytesIO()
    image.save(buf, "PNG", **params)
    return buf.getvalue()


# (name, file, route, how the stream route reads it)
ROUTES = [
    ("rgb", lambda: png_of("RGB"), "embed-png", None),
    ("palette", lambda: png_of("P"), "embed-png", None),
    ("rgba-split", lambda: png_of("RGBA"), "stream", "split"),
    ("grey16-libvips", lambda: png_of("I;16"), "stream", "libvips"),
]


def adam7_file() -> bytes:
    from tests.unit.test_convert_adam7 import flat_adam7_png

    values = np.random.default_rng(4).integers(0, 256, (29, 31, 4), np.uint8)
    return flat_adam7_png(values, 6, 6)


ROUTES.append(("rgba-adam7", adam7_file, "stream", "adam7"))


@pytest.mark.parametrize(("name", "make", "route", "how"), ROUTES, ids=[r[0] for r in ROUTES])
def test_a_bad_idat_crc_is_refused_by_every_png_route(name, make, route, how):
    # libpng (and libvips over it, with fail_on=error) refuse a critical chunk whose
    # CRC is wrong; Pillow checks every chunk before IDAT but skips IDAT's. The
    # split and Adam7 reads and the IDAT copy embedded such files; now all refuse.
    data = make()
    info = inspect_image(data, 10**9)
    assert info.route == route
    assert (how == "adam7") == info.adam7
    convert_to_pdf(data, info)
    for nth in range(data.count(b"IDAT")):
        bad = flip_crc(data, b"IDAT", nth)
        with pytest.raises(InvalidImage):
            convert_to_pdf(bad, inspect_image(bad, 10**9))


def test_a_bad_crc_in_the_last_of_many_idat_chunks_is_refused():
    data = png_of("RGBA")
    many = bytearray(data[:8])
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind, payload = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        step = 1000 if kind == b"IDAT" else max(1, length)
        for at in range(0, max(1, length), step):
            many += chunk(kind, payload[at : at + step])
        pos += 12 + length
    count = bytes(many).count(b"IDAT")
    assert count > 5
    convert_to_pdf(bytes(many), inspect_image(bytes(many), 10**9))
    bad = flip_crc(bytes(many), b"IDAT", count - 1)
    with pytest.raises(InvalidImage):
        convert_to_pdf(bad, inspect_image(bad, 10**9))


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_a_bad_iend_crc_is_refused_and_a_bad_ancillary_crc_after_idat_is_not(mode):
    # libpng: a critical chunk's CRC error is an error, an ancillary one's is a
    # warning and the chunk is dropped.
    data = png_of(mode)
    end = data.rindex(b"IEND") - 4
    text = data[:end] + chunk(b"tEXt", b"Comment\x00hi") + data[end:]
    convert_to_pdf(flip_crc(text, b"tEXt"), inspect_image(text, 10**9))
    bad = flip_crc(data, b"IEND")
    with pytest.raises(InvalidImage):
        convert_to_pdf(bad, inspect_image(bad, 10**9))
