"""Inputs on which app.engine.vp8l (the native VP8L decoder and its binding) once
disagreed with libwebp's WebPDecode: each is decoded by both, which must fail
together or give the same RGBA."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from app.engine import vp8l, webp
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from tests.support import images
from tests.unit.test_convert_webp_animated import animated, assert_as_before


def libwebp_rgba(data: bytes) -> bytes | None:
    """WebPDecode's RGBA of the whole image, or None where it fails."""
    width, height, _ = webp.features(data)
    band = np.empty((height, width, 4), np.uint8)
    return band.tobytes() if webp._decode_into(webp._library(), data, band, 0) == 0 else None


def lossless_payload(w: int, h: int, mode: str = "RGBA") -> bytes:
    rng = np.random.default_rng(w * 100 + h)
    arr = rng.integers(0, 256, (h, w, len(mode)), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "WEBP", lossless=True)
    return bytes(vp8l.stream(buf.getvalue()))


def riff(body: bytes) -> bytes:
    body = b"WEBP" + body + b"\0" * (len(body) & 1)
    return b"RIFF" + struct.pack("<I", len(body)) + body


# A RIFF WebP without VP8X whose first bytes after "WEBP" are not a chunk header
# but a VP8L bitstream itself: libwebp (ParseVP8Header) takes any such data that
# passes VP8LCheckSignature as lossless, from there to the end of the file.


def test_raw_vp8l_after_the_riff_header_is_decoded_as_libwebp_does():
    payload = lossless_payload(13, 7)
    data = riff(payload)
    expected = libwebp_rgba(data)
    assert expected is not None
    assert bytes(vp8l.stream(data)) == data[12:]
    assert vp8l.decode_rgba(data) == (13, 7, expected)


def test_raw_data_that_is_not_vp8l_is_left_to_libwebp():
    # Not the VP8L signature (0x2f, version 0): libwebp reads it as a raw VP8
    # frame; the lossy route decodes it (or fails) with libwebp itself.
    payload = lossless_payload(5, 5)
    assert vp8l.stream(riff(b"\x9d" + payload[1:])) is None
    assert vp8l.stream(riff(payload[:4] + bytes([payload[4] | 0x20]) + payload[5:])) is None


def test_raw_vp8l_the_service_takes_for_a_lossless_chunk_converts():
    # The bitstream's bytes 4-7, read as a chunk size, lead app.engine.webp.layout
    # to a "VP8L" chunk at the end: the file goes the lossless way, and converts
    # as it did with libwebp. A 4 x 4 image: one predictor transform, codes of
    # one or two symbols; its bytes 6 and 7 are 0, so the size is 33,024.
    payload = bytes.fromhex("2f03c0000081000012440414b96495e97f00")
    size = struct.unpack_from("<I", payload, 4)[0]
    body = payload + bytes(8 + size - len(payload))
    body += b"VP8L" + struct.pack("<I", 5) + bytes([0x2F, 0, 0, 0, 0])
    data = riff(body)
    assert webp.layout(data).lossless
    expected = libwebp_rgba(data)
    assert expected is not None
    assert vp8l.decode_rgba(data) == (4, 4, expected)
    pdf = convert_to_pdf(data, inspect_image(data, 10**8))
    assert pdf.startswith(b"%PDF")


# An animated WebP whose first ANMF header gives another size than the frame's
# bitstream: libwebp's demux takes the bitstream's (demux.c, SetFrameInfo), and
# libvips composes that; the banded route built its still from the ANMF size,
# which WebPDecode then refused (canvas and image sizes differ).


@pytest.mark.parametrize("params", [{"lossless": True}, {"quality": 80}], ids=["VP8L", "VP8"])
@pytest.mark.parametrize("shrink", [1, 2, 15])
def test_first_frame_takes_its_size_from_its_bitstream(params, shrink):
    data = bytearray(animated(images.photo(16, 12, 1), images.photo(16, 12, 2), **params))
    at = data.find(b"ANMF") + 8
    assert int.from_bytes(data[at + 6 : at + 9], "little") == 15  # 16 wide
    data[at + 6 : at + 9] = (15 - shrink).to_bytes(3, "little")
    frame = webp.first_frame(bytes(data))
    assert (frame.width, frame.height) == (16, 12)
    assert_as_before(bytes(data))
