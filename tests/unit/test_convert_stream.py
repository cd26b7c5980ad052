"""The streaming engine (app.engine.streamed): lossless, alpha kept as /SMask, exact pages.

Every decoding route is checked sample for sample: the PDF's image streams are
decoded (qpdf undoes the PNG predictor) and compared with the source's pixels,
colour and alpha separately; and the page is rendered with a transparent
background (pypdfium2) and compared with the source, alpha included.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image

from app.engine import vips
from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from app.errors import InvalidImage
from app.pages import visible_size
from tests.support import images

rng = np.random.default_rng(16)


def noise(w: int, h: int, bands: int, dtype=np.uint8) -> np.ndarray:
    top = 256 if dtype == np.uint8 else 65536
    return rng.integers(0, top, (h, w, bands), dtype=np.uint32).astype(dtype)


def encode(arr: np.ndarray, fmt: str, mode: str, **params) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze(), mode).save(buf, fmt, **params)
    return buf.getvalue()


def png_raw(arr: np.ndarray, colour_type: int, depth: int = 16) -> bytes:
    """A PNG from big-endian samples, for what Pillow cannot write (16-bit RGBA)."""
    h, w, _ = arr.shape
    rows = arr.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def convert(data: bytes) -> bytes:
    info = inspect_image(data, 10**8)
    assert info.route == "stream"
    return convert_to_pdf(data, info)


def streams(pdf: bytes) -> tuple[np.ndarray, np.ndarray | None]:
    """The decoded colour and soft-mask samples, as (h, w, bands) arrays."""
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (image,) = doc.pages[0].get_images().values()
        out = []
        for obj in (image, image.get("/SMask")):
            if obj is None:
                out.append(None)
                continue
            bands = 1 if obj.ColorSpace == "/DeviceGray" else 3
            if isinstance(obj.ColorSpace, pikepdf.Array):  # [/ICCBased profile]
                bands = int(obj.ColorSpace[1].N)
            dtype = ">u2" if int(obj.BitsPerComponent) == 16 else np.uint8
            data = np.frombuffer(obj.read_bytes(), dtype)
            out.append(data.reshape(int(obj.Height), int(obj.Width), bands))
        return out[0], out[1]


def rendered_rgba(pdf: bytes, size: tuple[int, int]) -> np.ndarray:
    doc = pdfium.PdfDocument(pdf)
    try:
        page = doc[0]
        scale = size[0] / page.get_width()
        bitmap = page.render(scale=scale, fill_color=(0, 0, 0, 0), rev_byteorder=True)
        return np.asarray(bitmap.to_pil().convert("RGBA"))
    finally:
        doc.close()


def test_rgba_png_samples_and_alpha_are_identical():
    src = noise(97, 61, 4)
    pdf = convert(encode(src, "PNG", "RGBA"))
    colour, alpha = streams(pdf)
    assert np.array_equal(colour, src[..., :3])
    assert alpha is not None and np.array_equal(alpha, src[..., 3:])
    assert b"/Predictor 15" in pdf


def test_grey_alpha_png_keeps_both_channels():
    src = noise(40, 30, 2)
    colour, alpha = streams(convert(encode(src, "PNG", "LA")))
    assert np.array_equal(colour, src[..., :1])
    assert alpha is not None and np.array_equal(alpha, src[..., 1:])


def test_sixteen_bit_rgba_png_keeps_sixteen_bits_and_alpha():
    src = noise(33, 21, 4, np.uint16)
    pdf = convert(png_raw(src, 6))
    colour, alpha = streams(pdf)
    assert colour.dtype == np.dtype(">u2")
    assert np.array_equal(colour, src[..., :3])
    assert alpha is not None and np.array_equal(alpha, src[..., 3:])


def test_palette_png_with_trns_gets_its_transparency_as_a_soft_mask():
    data = images.palette_transparent_png(64, 48)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    colour, alpha = streams(convert(data))
    assert alpha is not None and np.array_equal(alpha[..., 0], want[..., 3])
    opaque = want[..., 3] > 0
    assert np.array_equal(colour[opaque], want[..., :3][opaque])


def test_interlaced_png_decodes_to_the_same_pixels():
    data = images.png_interlaced(67, 45)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    colour, alpha = streams(convert(data))
    assert alpha is None
    assert np.array_equal(colour, want)


@pytest.mark.parametrize(
    ("fmt", "params"),
    [("TIFF", {"compression": "tiff_lzw"}), ("WEBP", {"lossless": True, "exact": True})],
)
def test_tiff_and_lossless_webp_with_alpha_are_lossless(fmt, params):
    src = noise(50, 38, 4)
    colour, alpha = streams(convert(encode(src, fmt, "RGBA", **params)))
    assert np.array_equal(colour, src[..., :3])
    assert alpha is not None and np.array_equal(alpha, src[..., 3:])


def test_gif_with_transparency_renders_with_its_alpha():
    data = images.gif_transparent(64, 48)
    want = np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))
    got = rendered_rgba(convert(data), (64, 48))
    assert np.array_equal(got[..., 3], want[..., 3])
    opaque = want[..., 3] == 255
    assert np.abs(got[..., :3][opaque].astype(int) - want[..., :3][opaque]).max() <= 2


def test_rendered_page_matches_the_source_alpha_included():
    # 8x8 blocks: rendering at 1:1 must not depend on the viewer's resampling.
    src = np.kron(noise(12, 9, 4), np.ones((8, 8, 1), np.uint8))
    src[..., 3] = np.where(src[..., 3] < 128, 0, 255)  # a viewer premultiplies partial alpha
    got = rendered_rgba(convert(encode(src, "PNG", "RGBA")), (96, 72))
    assert np.array_equal(got[..., 3], src[..., 3])
    opaque = src[..., 3] == 255
    assert np.abs(got[..., :3][opaque].astype(int) - src[..., :3][opaque]).max() <= 1


@pytest.mark.parametrize("cut", [0.3, 0.9])
def test_truncated_png_on_the_streaming_route_is_invalid(cut):
    data = encode(noise(120, 80, 4), "PNG", "RGBA")
    data = data[: int(len(data) * cut)]
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**8))


def test_truncated_tiff_is_invalid():
    data = encode(noise(120, 80, 4), "TIFF", "RGBA")[:-3000]
    with pytest.raises(InvalidImage):
        convert_to_pdf(data, inspect_image(data, 10**8))


def test_a_page_beyond_the_pdf_limit_gets_a_user_unit_and_keeps_its_size():
    data = encode(noise(300, 200, 4), "PNG", "RGBA", dpi=(1, 1))
    pdf = convert(data)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        page = doc.pages[0]
        assert float(page.obj.UserUnit) == 10
        assert visible_size(page) == pytest.approx((300 * 72, 200 * 72))


def test_the_soft_mask_stream_is_written_after_the_colour_stream_in_strips():
    """Strips smaller than the image: the predictor carries the row above across strips."""
    saved = vips.STRIP_BYTES
    vips.STRIP_BYTES = 64 * 3  # under one row of 70 px: one row per strip
    try:
        src = noise(70, 23, 4)
        colour, alpha = streams(convert(encode(src, "PNG", "RGBA")))
    finally:
        vips.STRIP_BYTES = saved
    assert np.array_equal(colour, src[..., :3])
    assert alpha is not None and np.array_equal(alpha, src[..., 3:])


def test_streaming_estimate_does_not_scale_like_a_decoded_copy():
    """The route holds strips, not the image: a 30 MP RGBA PNG is priced under
    the 120 MB a conversion process may use, where img2pdf's path needed 23 B/px."""
    w, h = 6000, 5000
    info = inspect_image(png_raw(noise(8, 8, 4, np.uint16), 6), 10**8)
    big = type(info)("png", w, h, "RGBA", 1, "stream")
    assert estimate_peak_bytes(big, 20 * 2**20) < 120 * 2**20
    assert estimate_peak_bytes(big, 20 * 2**20) >= 1.0 * w * h


def test_an_icc_profile_is_kept_only_for_its_own_colour_space():
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = noise(20, 10, 4)
    with pikepdf.open(io.BytesIO(convert(encode(src, "PNG", "RGBA", icc_profile=srgb)))) as doc:
        (image,) = doc.pages[0].get_images().values()
        assert image.ColorSpace[0] == "/ICCBased"
        assert image.ColorSpace[1].read_bytes() == srgb
    opaque = np.kron(noise(6, 4, 4), np.ones((8, 8, 1), np.uint8))
    opaque[..., 3] = 255
    got = rendered_rgba(convert(encode(opaque, "PNG", "RGBA", icc_profile=srgb)), (48, 32))
    assert np.abs(got.astype(int) - opaque).max() <= 3  # sRGB renders as sRGB
    grey = noise(20, 10, 2)  # an RGB profile on a grey image is dropped, not embedded
    with pikepdf.open(io.BytesIO(convert(encode(grey, "PNG", "LA", icc_profile=srgb)))) as doc:
        (image,) = doc.pages[0].get_images().values()
        assert image.ColorSpace == "/DeviceGray"


def test_a_tiff_with_an_ifd_chain_past_the_count_cap_is_not_streamed():
    """libtiff under libvips counts every IFD (180k took > 15 s); Pillow reads the first."""
    from app.engine import structure
    from tests.support import hostile

    many = inspect_image(hostile.tiff_ifd_chain(structure.FRAMES_COUNTED), 10**8)
    assert many.route != "stream"
    assert inspect_image(images.tiff(64, 48), 10**8).route == "stream"
