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
