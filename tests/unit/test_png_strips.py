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


def rgba_png(width: int, height: int, seed: int = 9) -> tuple[bytes, np.ndarray]:
    rgba = np.random.default_rng(seed).integers(0, 256, (height, width, 4), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, "PNG", compress_level=1)
    return buf.getvalue(), rgba


def planes(pdf: bytes, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        image = next(iter(doc.pages[0].get_images().values()))
        colour = np.frombuffer(image.read_bytes(), np.uint8).reshape(height, width, 3)
        alpha = np.frombuffer(image.SMask.read_bytes(), np.uint8).reshape(height, width)
    return colour, alpha


@pytest.mark.parametrize("spare", [True, False], ids=["ahead", "serial"])
def test_strips_made_ahead_or_not_give_the_same_exact_pdf(monkeypatch, spare):
    # 500 x 400 RGBA: 2,001-byte rows, 65 to a strip, 7 strips.
    monkeypatch.setattr(png_strips, "spare_core", lambda: spare)
    threads = []
    real = png_strips.threading.Thread

    def counted(*args, **kwargs):
        threads.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(png_strips.threading, "Thread", counted)
    data, rgba = rgba_png(500, 400)
    colour, alpha = planes(convert_to_pdf(data, inspect_image(data, 10**9)), 500, 400)
    assert colour.tolist() == rgba[..., :3].tolist()
    assert alpha.tolist() == rgba[..., 3].tolist()
    assert threads == (["png-strips"] if spare else [])


def test_a_one_strip_image_never_starts_a_thread(monkeypatch):
    monkeypatch.setattr(png_strips, "spare_core", lambda: True)
    monkeypatch.setattr(png_strips, "_ahead", lambda items: pytest.fail("thread for one strip"))
    data, rgba = rgba_png(64, 48)
    colour, alpha = planes(convert_to_pdf(data, inspect_image(data, 10**9)), 64, 48)
    assert colour.tolist() == rgba[..., :3].tolist()
    assert alpha.tolist() == rgba[..., 3].tolist()


@pytest.mark.parametrize("flaw", ["filter_5_in_last_row", "cut_short", "corrupt"])
def test_errors_in_the_thread_ahead_are_raised_to_the_caller(monkeypatch, flaw):
    monkeypatch.setattr(png_strips, "spare_core", lambda: True)
    width, height = 500, 400
    rows = [
        bytes([y % 5]) + bytes(range(256)) * (width * 4 // 256) + bytes(width * 4 % 256)
        for y in range(height)
    ]
    if flaw == "filter_5_in_last_row":
        rows[-1] = b"\x05" + rows[-1][1:]
    packed = zlib.compress(b"".join(rows))
    if flaw == "cut_short":
        packed = zlib.compress(b"".join(rows[:-1]))
    if flaw == "corrupt":
        packed = packed[: len(packed) // 2] + bytes(64) + packed[len(packed) // 2 :]
    before = png_strips.threading.active_count()
    strips = png_strips.png_filtered_strips(iter([packed]), width, height, 3)
    with pytest.raises(png_strips.BadData):
        for _ in strips:
            pass
    assert png_strips.threading.active_count() == before


def test_a_caller_that_stops_early_leaves_no_thread(monkeypatch):
    monkeypatch.setattr(png_strips, "spare_core", lambda: True)
    data, _ = rgba_png(500, 400)
    from app.engine.facts import _png_chunks

    idat = [data[a:b] for kind, a, b in _png_chunks(data) if kind == b"IDAT"]
    before = png_strips.threading.active_count()
    strips = png_strips.png_filtered_strips(iter(idat), 500, 400, 3)
    next(strips)
    assert png_strips.threading.active_count() == before + 1
    strips.close()  # what a writer that fails mid-way leaves to the garbage collector
    assert png_strips.threading.active_count() == before


def test_spare_core_reads_the_runnable_count(monkeypatch, tmp_path):
    cpus = len(png_strips.os.sched_getaffinity(0))
    real_open = open

    def fake(running):
        path = tmp_path / f"loadavg{running}"
        path.write_bytes(b"0.50 0.40 0.30 %d/300 4242\n" % running)
        return lambda name, mode="r", *a, **k: real_open(
            path if name == "/proc/loadavg" else name, mode, *a, **k
        )

    monkeypatch.setattr("builtins.open", fake(cpus - 1))
    assert png_strips.spare_core() is (cpus > 1)
    monkeypatch.setattr("builtins.open", fake(cpus))
    assert png_strips.spare_core() is False
