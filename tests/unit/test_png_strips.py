"""app.engine.png_strips: how the IDAT reaches the inflater."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pikepdf
import pytest
from PIL import Image

from app.engine import png_strips, vips
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from tests.support import images


class RecordingInflater:
    """isal's inflater, recording the size of each input it is handed."""

    def __init__(self, real, sizes: list[int]):
        self.real, self.sizes = real, sizes

    def decompress(self, data, max_length=0):
        self.sizes.append(len(data))
        return self.real.decompress(data, max_length)

    def __getattr__(self, name):
        return getattr(self.real, name)


def test_one_large_idat_is_fed_to_the_inflater_in_bounded_pieces(monkeypatch):
    # Each call that stops at its output limit copies the input left over: a
    # whole 1.3 MB IDAT handed over at once made that copying quadratic.
    width, height = 400, 300
    rng = np.random.default_rng(5)
    rgba = rng.integers(0, 256, (height, width, 4), np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rgba.reshape(height, -1))
    idat = zlib.compress(raw, 1)
    assert len(idat) > 4 * png_strips.FEED_BYTES
    sizes: list[int] = []
    real = png_strips.isal_zlib.decompressobj

    class Isal:
        error = png_strips.isal_zlib.error

        @staticmethod
        def decompressobj():
            return RecordingInflater(real(), sizes)

    monkeypatch.setattr(png_strips, "isal_zlib", Isal)
    strips = png_strips.png_filtered_strips(iter([idat]), width, height, 3)
    colour = np.concatenate([c[:, 1:].copy() for c, _a in strips])
    assert max(sizes) <= png_strips.FEED_BYTES
    assert colour.tobytes() == rgba[:, :, :3].tobytes()


@pytest.mark.parametrize("strip_kib", [4, 16, 32])
def test_output_the_inflater_still_holds_after_the_last_idat_is_read(monkeypatch, strip_kib):
    # With strips smaller than the default, the last call often used up the input
    # while output was still pending: "image data cut short" (422) for a valid file.
    monkeypatch.setattr(vips, "STRIP_BYTES", strip_kib * 1024)
    data = images.encode(images.noisy_gradient(400, 300, "RGBA"), "PNG", compress_level=6)
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = next(iter(doc.pages[0].get_images().values()))
        colour = np.frombuffer(image.read_bytes(), np.uint8).reshape(300, 400, 3)
        alpha = np.frombuffer(image.SMask.read_bytes(), np.uint8).reshape(300, 400)
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im)
    assert colour.tolist() == want[..., :3].tolist()
    assert alpha.tolist() == want[..., 3].tolist()
