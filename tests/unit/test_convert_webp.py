"""A still WebP decoded in bands by libwebp (app.engine.webp), never whole.

Every sample is compared with Pillow's decode of the same file (libwebp's own
RGB(A) output, which libvips gives too), every row and column, alpha included.
Small band sizes force many bands on small images, so the band edges (first and
last rows of each, odd heights, a 2-row last band) are all looked at.
"""

from __future__ import annotations

import io
import struct
from dataclasses import replace

import numpy as np
import pikepdf
import pytest
from PIL import Image

from app.engine import vp8l, webp
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes, webp_decoder_bytes
from app.errors import ImageTooLarge, InvalidImage
from tests.support import images
from tests.unit.test_convert_stream import streams

rng = np.random.default_rng(161)


def photo(w: int, h: int, mode: str) -> np.ndarray:
    """Blocky noise: colour edges everywhere, so chroma upsampling shows."""
    small = rng.integers(0, 256, (h // 3 + 1, w // 3 + 1, len(mode)), dtype=np.uint8)
    return small.repeat(3, 0).repeat(3, 1)[:h, :w]


def encode(arr: np.ndarray, mode: str, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "WEBP", **params)
    return buf.getvalue()


def reference(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGBA" if im.mode == "RGBA" else "RGB"))


def converted(data: bytes) -> bytes:
    info = inspect_image(data, 10**8)
    assert info.route == "stream" and info.webp_bands
    return convert_to_pdf(data, info)


@pytest.fixture
def small_bands(monkeypatch):
    """Bands of a few rows: 64 px wide RGB -> 6 rows, RGBA -> 4 rows."""
    monkeypatch.setattr(webp, "LOSSY_BAND_BYTES", 64 * 3 * 6)
    monkeypatch.setattr(webp, "LOSSLESS_BAND_BYTES", 64 * 3 * 6)


CASES = {
    "lossy rgb": ("RGB", {"quality": 70}),
    "lossy rgba": ("RGBA", {"quality": 70}),
    "lossy rgb, no filter sharpness": ("RGB", {"quality": 20}),
    "lossless rgb": ("RGB", {"lossless": True}),
    "lossless rgba": ("RGBA", {"lossless": True, "exact": True}),
}


@pytest.mark.parametrize("size", [(64, 41), (64, 2), (64, 1), (63, 47), (1, 30)])
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_band_holds_libwebps_own_pixels(small_bands, name, size):
    mode, params = CASES[name]
    data = encode(photo(*size, mode), mode, **params)
    want = reference(data)
    colour, alpha = streams(converted(data))
    assert np.array_equal(colour, want[..., :3])
    if mode == "RGBA":
        assert alpha is not None and np.array_equal(alpha[..., 0], want[..., 3])
    else:
        assert alpha is None


def test_bands_overlap_where_the_upsampler_reads_neighbours(small_bands, monkeypatch):
    """Without the two extra rows each side, a crop's first and last rows get
    mirrored chroma: the samples at every band edge would differ."""
    data = encode(photo(64, 40, "RGB"), "RGB", quality=90)
    monkeypatch.setattr(webp, "_OVERLAP", 0)
    colour, _ = streams(converted(data))
    assert not np.array_equal(colour, reference(data))


def test_band_rows_are_even_and_fill_the_budget():
    assert webp.band_rows(7302, 3, lossless=False) == webp.LOSSY_BAND_BYTES // (7302 * 3) // 2 * 2
    assert webp.band_rows(16383, 4, lossless=True) % 2 == 0
    assert webp.band_rows(10**9, 4, lossless=False) == 2


def test_forty_megapixel_estimate_prices_the_band_not_a_frame(monkeypatch):
    """Lossy: the band and (with alpha) libwebp's alpha planes; lossless: the
    VP8L decoder's arena (its window), or without it libwebp's ARGB frame
    (4 B/px), which no crop avoids."""
    lossy = encode(photo(64, 48, "RGB"), "RGB")
    lossy_alpha = encode(photo(64, 48, "RGBA"), "RGBA")
    lossless = encode(photo(64, 48, "RGBA"), "RGBA", lossless=True)
    mb = 1024 * 1024
    estimates = []
    for data in (lossy, lossy_alpha, lossless):
        info = inspect_image(data, 10**8)
        lossless_bits = webp.layout(data).lossless
        decoder = webp_decoder_bytes(7302, 5477, lossless_bits, info.mode == "RGBA")
        big = replace(info, width=7302, height=5477, decoder_bytes=decoder)
        estimates.append(estimate_peak_bytes(big, 20 * mb))
    assert estimates[0] < 100 * mb  # was 1.3 GB (32 B/px)
    assert estimates[0] < estimates[1] < 260 * mb
    assert vp8l.available()
    arena = vp8l.arena_bytes(7302, 5477, vp8l.band_rows(7302, 4))
    assert arena < webp_decoder_bytes(7302, 5477, True, True) < arena + 3 * mb
    assert estimates[2] < 140 * mb  # was 237 MB (libwebp's frame)
    monkeypatch.setattr(vp8l, "_lib", False)  # not built: libwebp's frame again
    assert webp_decoder_bytes(7302, 5477, True, True) > 4 * 7302 * 5477


def test_an_icc_profile_and_the_exif_orientation_are_kept():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6
    arr = photo(40, 30, "RGB")
    data = encode(arr, "RGB", icc_profile=icc, exif=exif.tobytes(), lossless=True)
    pdf = converted(data)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (image,) = doc.pages[0].get_images().values()
        assert image.ColorSpace[0] == "/ICCBased"
        assert image.ColorSpace[1].read_bytes() == icc
        box = doc.pages[0].MediaBox
        # 96 dpi as img2pdf reads a WebP; turned by orientation 6: 30 x 40 px shown.
        assert (float(box[2]), float(box[3])) == (30 * 72 / 96, 40 * 72 / 96)
    colour, _ = streams(pdf)
    assert np.array_equal(colour, arr)


def test_an_animated_webp_has_its_first_frame_in_bands():
    # (test_convert_webp_animated: the same samples as libvips' frame before.)
    data = images.webp_animated(32, 24)
    info = inspect_image(data, 10**8)
    assert info.webp_bands
    assert convert_to_pdf(data, info).startswith(b"%PDF-")


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.999])
def test_a_truncated_webp_is_invalid_in_any_band(small_bands, keep):
    """Cut in the first band's data or a later one's: the header still reads."""
    data = encode(photo(64, 64, "RGB"), "RGB", quality=90)
    short = data[: int(len(data) * keep)]
    with pytest.raises(InvalidImage):
        convert_to_pdf(short, inspect_image(short, 10**8))


def vp8x(width: int, height: int, image: bytes) -> bytes:
    """A VP8X file around the image chunks of a simple WebP, canvas as given."""
    body = b"VP8X" + struct.pack("<I", 10) + bytes(4)
    body += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body += image
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body


@pytest.mark.parametrize("canvas", [(65, 48), (64, 47), (16383, 16383), (1, 1)])
def test_a_canvas_that_lies_about_the_frame_is_invalid(canvas):
    data = encode(photo(64, 48, "RGB"), "RGB")
    bad = vp8x(*canvas, data[12:])
    with pytest.raises(InvalidImage):
        convert_to_pdf(bad, inspect_image(bad, 10**9))


def test_a_frame_past_the_pixel_cap_is_refused_from_its_header():
    data = encode(photo(64, 48, "RGB"), "RGB")
    with pytest.raises(ImageTooLarge):
        inspect_image(data, 64 * 48 - 1)
    assert inspect_image(data, 64 * 48).pixels == 64 * 48


def test_without_libwebp_a_still_webp_keeps_the_libvips_frame(monkeypatch):
    """No usable libwebp (a Pillow built without its wheel's libraries and no
    system copy): the whole-frame route, priced as before."""
    monkeypatch.setattr(webp, "_lib", False)
    data = encode(photo(40, 30, "RGB"), "RGB", lossless=True)
    info = inspect_image(data, 10**8)
    assert info.route == "stream" and not info.webp_bands
    assert estimate_peak_bytes(info, len(data)) >= 32 * 40 * 30
    colour, _ = streams(convert_to_pdf(data, info))
    assert np.array_equal(colour, reference(data))


@pytest.mark.parametrize("fill", [0x00, 0x55, 0xFF])
@pytest.mark.parametrize("size", [(50, 40), (1, 8), (3, 601)])
def test_a_corrupt_alpha_chunk_is_invalid_not_out_of_memory(small_bands, fill, size):
    # libwebp answers a damaged ALPH bitstream with VP8_STATUS_OUT_OF_MEMORY: it was
    # taken for the process's limit (413 conversion_memory_exceeded); Pillow and
    # libvips call the file undecodable.
    from tests.support import hostile

    data = hostile.webp_alpha_corrupt(*size, fill)
    with pytest.raises(OSError):
        Image.open(io.BytesIO(data)).load()
    info = inspect_image(data, 10**8)
    assert info.webp_bands
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, info)


@pytest.mark.parametrize("lossless", [False, True])
def test_image_alpha_without_the_vp8x_alpha_flag_is_not_drawn(small_bands, lossless):
    # libwebp's WebPDecode draws an ALPH chunk (or VP8L alpha) whatever the VP8X
    # header says. libvips follows the header (3 bands) for both, Pillow for an
    # ALPH chunk (alpha 255) but not for VP8L: the header decides, as libvips has it.
    from app.engine import vips

    rgba = photo(31, 23, "RGBA")
    rgba[..., 3] = rng.integers(0, 256, (23, 31), dtype=np.uint8)
    data = bytearray(encode(rgba, "RGBA", lossless=lossless, quality=90))
    assert data[12:16] == b"VP8X" or lossless
    if data[12:16] != b"VP8X":  # a simple VP8L file: put it in an extended one
        data = bytearray(vp8x(31, 23, bytes(data[12:])))
    data[20] &= ~0x10
    data = bytes(data)
    vips.load()
    by_libvips = vips.pyvips.Image.new_from_buffer(data, "")
    assert by_libvips.bands == 3
    want = np.frombuffer(by_libvips.write_to_memory(), np.uint8).reshape(23, 31, 3)
    with Image.open(io.BytesIO(data)) as im:
        assert np.array_equal(np.asarray(im.convert("RGB")), want)
    colour, alpha = streams(converted(data))
    assert alpha is None
    assert np.array_equal(colour, want)


@pytest.mark.parametrize("lossless", [False, True])
def test_the_vp8x_alpha_flag_without_image_alpha_is_opaque(lossless):
    data = bytearray(encode(photo(31, 23, "RGB"), "RGB", lossless=lossless, quality=90))
    data = bytearray(vp8x(31, 23, bytes(data[12:])))
    data[20] |= 0x10
    data = bytes(data)
    with Image.open(io.BytesIO(data)) as im:
        want = np.asarray(im.convert("RGBA"))
    colour, alpha = streams(converted(data))
    assert np.array_equal(colour, want[..., :3])
    assert alpha is None or (alpha == 255).all()


def test_a_libwebp_of_another_abi_is_not_used_and_libvips_decodes(monkeypatch):
    # libwebp refuses a config of another ABI major (WebPInitDecoderConfigInternal
    # returns 0, WebPGetFeaturesInternal VP8_STATUS_INVALID_PARAM): found at load,
    # such a library is passed over, not used to refuse every WebP with 422.
    monkeypatch.setattr(webp, "_ABI", 0x0300)
    monkeypatch.setattr(webp, "_lib", None)
    assert not webp.available()
    data = encode(photo(40, 30, "RGBA"), "RGBA", lossless=True)
    info = inspect_image(data, 10**8)
    assert info.route == "stream" and not info.webp_bands
    colour, alpha = streams(convert_to_pdf(data, info))
    want = reference(data)
    assert np.array_equal(colour, want[..., :3])
    assert alpha is not None and np.array_equal(alpha, want[..., 3:])
    monkeypatch.setattr(webp, "_ABI", 0x02FF)  # another minor of the same major: used
    monkeypatch.setattr(webp, "_lib", None)
    assert webp.available()
