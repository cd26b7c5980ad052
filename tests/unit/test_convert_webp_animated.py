"""An animated WebP's first frame decoded in bands by libwebp (webp.first_frame,
webp.frame_strips), no longer composed whole by libvips: the PDF's colour and
soft-mask samples equal those of the libvips route it took before (run in the
same test with the new path switched off), for lossy and lossless frames,
opaque or not, filling the canvas or placed inside it, odd sizes, several
bands and strips; libvips' choice of an alpha band is kept; what the banded
path does not take goes to libvips as before, with the same answer."""

from __future__ import annotations

import struct

import numpy as np
import pypdfium2 as pdfium
import pytest

import app.engine.convert as convert_module
import app.engine.inspect as inspect_module
from app.engine import pricing, streamed, vips, webp
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.errors import ApiError
from tests.support import images
from tests.support.limits import convert_under_address_limit
from tests.support.pdfs import image_samples


def animated(first, second, **params) -> bytes:
    return images.encode(first, "WEBP", save_all=True, append_images=[second], **params)


SAMPLES = {
    # Pillow writes an opaque frame whole and crops one with alpha to what it shows.
    "lossless opaque": lambda w, h: animated(
        images.photo(w, h, 1), images.photo(w, h, 2), lossless=True
    ),
    "lossy opaque": lambda w, h: animated(images.photo(w, h, 1), images.photo(w, h, 2), quality=80),
    "lossy alpha, frame inside": lambda w, h: animated(
        images.cutout(w, h, 1), images.cutout(w, h, 2), quality=80
    ),
    "lossless alpha, frame inside": lambda w, h: animated(
        images.cutout(w, h, 1), images.cutout(w, h, 2), lossless=True
    ),
    "lossless alpha, frame fills": lambda w, h: animated(
        images._half_transparent(w, h), images.cutout(w, h, 2), lossless=True
    ),
}


def rendered(pdf: bytes) -> np.ndarray:
    doc = pdfium.PdfDocument(pdf)
    try:
        return np.asarray(doc[0].render(scale=1).to_pil().convert("RGB"))
    finally:
        doc.close()


def before(data: bytes):
    """(ImageInfo, PDF) of the libvips route animated WebPs took before."""
    with pytest.MonkeyPatch.context() as patch:
        for module in (convert_module, inspect_module, streamed):
            patch.setattr(module, "first_frame", lambda _: None)
        info = inspect_image(data, 10**9)
        return info, convert_to_pdf(data, info)


def assert_as_before(data: bytes) -> None:
    info = inspect_image(data, 10**9)
    assert info.route == "stream" and info.webp_bands
    pdf = convert_to_pdf(data, info)
    old_info, old = before(data)
    assert not old_info.webp_bands
    # (The mode: Pillow's reading of the VP8X flag before, libvips' choice now.)
    assert (info.width, info.height) == (old_info.width, old_info.height)
    (colour, alpha), (old_colour, old_alpha) = image_samples(pdf), image_samples(old)
    assert np.array_equal(colour, old_colour)
    assert (alpha is None) == (old_alpha is None)
    if alpha is not None:
        assert np.array_equal(alpha, old_alpha)
    assert np.array_equal(rendered(pdf), rendered(old))


@pytest.mark.parametrize("size", [(64, 48), (65, 47), (3, 200), (201, 3)])
@pytest.mark.parametrize("name", SAMPLES)
def test_first_frame_as_libvips_composed_it(name, size):
    data = SAMPLES[name](*size)
    frame = webp.first_frame(data)
    assert frame is not None
    assert_as_before(data)


@pytest.mark.parametrize("name", SAMPLES)
def test_several_bands_and_strips(monkeypatch, name):
    monkeypatch.setattr(webp, "LOSSY_BAND_BYTES", 64 * 4 * 6)
    monkeypatch.setattr(webp, "LOSSLESS_BAND_BYTES", 64 * 4 * 6)
    monkeypatch.setattr(vips, "STRIP_BYTES", 64 * 4 * 2)
    data = SAMPLES[name](131, 97)
    frame = webp.first_frame(data)
    assert frame.height > 3 * webp.band_rows(max(frame.width, 131), 4, frame.lossless)
    assert_as_before(data)


def _set_alpha_flag(data: bytes, on: bool) -> bytes:
    flags = data[20] | 0x10 if on else data[20] & ~0x10
    return data[:20] + bytes([flags]) + data[21:]


def _only_first_frame(data: bytes) -> bytes:
    """The file without its second ANMF chunk (RIFF size fixed): one frame."""
    first = data.find(b"ANMF")
    size = struct.unpack_from("<I", data, first + 4)[0]
    second = first + 8 + size + (size & 1)
    assert data[second : second + 4] == b"ANMF"
    size2 = struct.unpack_from("<I", data, second + 4)[0]
    out = data[:second] + data[second + 8 + size2 + (size2 & 1) :]
    return out[:4] + struct.pack("<I", len(out) - 8) + out[8:]


@pytest.mark.parametrize(
    ("name", "change", "alpha"),
    [
        # libvips keeps alpha when the VP8X flag says so, even for opaque frames...
        ("lossy opaque", lambda d: _set_alpha_flag(d, True), True),
        ("lossless opaque", lambda d: d, False),
        # ...or when a frame has alpha or does not fill the canvas, one frame or more.
        ("lossy alpha, frame inside", lambda d: _set_alpha_flag(d, False), True),
        (
            "lossy alpha, frame inside",
            lambda d: _only_first_frame(_set_alpha_flag(d, False)),
            True,
        ),
        ("lossless opaque", _only_first_frame, False),
    ],
)
def test_the_canvas_alpha_is_libvips_choice(name, change, alpha):
    data = change(SAMPLES[name](64, 48))
    assert webp.first_frame(data).alpha is alpha
    assert_as_before(data)


def test_a_frame_past_the_canvas_goes_to_libvips_as_before():
    data = bytearray(SAMPLES["lossy alpha, frame inside"](64, 48))
    at = data.find(b"ANMF") + 8
    data[at : at + 3] = (20).to_bytes(3, "little")  # X = 40: 40 + 52 > 64
    data = bytes(data)
    assert webp.first_frame(data) is None
    with pytest.raises(ApiError) as now:
        convert_to_pdf(data, inspect_image(data, 10**9))
    with pytest.raises(ApiError) as then:
        before(data)
    assert (now.value.status, now.value.code) == (then.value.status, then.value.code)


@pytest.mark.parametrize("keep", [0.05, 0.3, 0.6, 0.95, 0.999])
@pytest.mark.parametrize("name", ["lossy opaque", "lossless alpha, frame inside"])
def test_a_truncated_animation_is_the_same_client_error(name, keep):
    data = SAMPLES[name](64, 48)
    data = data[: int(len(data) * keep)]
    outcome = []
    for run in (lambda: convert_to_pdf(data, inspect_image(data, 10**9)), lambda: before(data)):
        try:
            run()
            outcome.append("ok")
        except ApiError as exc:
            assert 400 <= exc.status < 500
            outcome.append(exc.status)
    assert outcome[0] == outcome[1]


def test_a_12_mp_animation_converts_within_its_banded_estimate():
    # libvips composed the frame whole (32 B/px priced: 384 MB at 12 MP); the
    # first frame in bands is priced like a still WebP and converts under it.
    data = SAMPLES["lossy opaque"](4000, 3000)
    info = inspect_image(data, 40_000_000)
    assert info.webp_bands
    limit = pricing.estimate_peak_bytes(info, len(data))
    assert limit < 120 * 1024 * 1024
    status = convert_under_address_limit(data, info, limit)
    assert status.startswith(b"ok "), status


@pytest.mark.parametrize("name", ["lossy opaque", "lossless alpha, frame inside"])
def test_every_cut_through_the_vp8x_chunk_is_a_client_error(name):
    """Cut at every byte of the first 48 (20: the VP8X chunk's header whole, its
    payload gone): the RIFF walks never index past the end; the answer is a 4xx."""
    whole = SAMPLES[name](64, 48)
    for cut in range(12, 49):
        data = whole[:cut]
        with pytest.raises(ApiError) as err:
            convert_to_pdf(data, inspect_image(data, 10**9))
        assert 400 <= err.value.status < 500, cut
