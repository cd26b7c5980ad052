"""JPEG 2000 deeper than 8 bits (12 and 16, grey and RGB, .jp2 and bare
codestream) embedded verbatim as /JPXDecode: the image stream is the source,
pypdfium2's rendering equals Pillow's decode scaled to 8 bits, the page is
the pixels at the file's dpi. Deep files with alpha keep the flattening route.
openjpeg (pylibjpeg-openjpeg) writes the 12- and 16-bit RGB samples: Pillow
writes 16 bits for greyscale only."""

from __future__ import annotations

import io

import numpy as np
import openjpeg
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image

from app.engine.convert import convert_to_pdf
from app.engine.inspect import inspect_image
from app.pages import visible_size
from tests.support import images

W, H = 70, 45  # odd sizes: no tile or code-block boundary lines up


def samples(bits: int, channels: int) -> np.ndarray:
    """Gradients over the full range plus noise in the low bits (which 8-bit
    output drops): different in every channel, so a swap shows."""
    y, x = np.mgrid[0:H, 0:W]
    top = (1 << bits) - 1
    planes = [x * top // (W - 1), y * top // (H - 1), (x + y) * top // (W + H - 2)]
    noise = np.random.default_rng(bits).integers(0, 1 << (bits - 8), (H, W))
    out = np.stack([np.clip(p ^ noise, 0, top) for p in planes[:channels]], -1)
    return np.ascontiguousarray(out.astype(np.uint16).squeeze())


def pillow_grey(bits: int, codestream: bool) -> bytes:
    im = Image.frombytes("I;16", (W, H), samples(bits, 1).astype("<u2").tobytes())
    return images.encode(im, "JPEG2000", no_jp2=codestream)


def openjpeg_file(bits: int, channels: int, codestream: bool) -> bytes:
    return openjpeg.encode(
        samples(bits, channels),
        bits_stored=bits,
        photometric_interpretation=1 if channels == 3 else 2,
        codec_format=0 if codestream else 1,
    )


CASES = {
    "grey16.jp2": lambda: pillow_grey(16, False),
    "grey16.j2k": lambda: pillow_grey(16, True),
    "grey12.jp2": lambda: openjpeg_file(12, 1, False),
    "rgb16.jp2": lambda: openjpeg_file(16, 3, False),
    "rgb12.jp2": lambda: openjpeg_file(12, 3, False),
    "rgb16.j2k": lambda: openjpeg_file(16, 3, True),
}


def decoded_8bit(data: bytes, bits: int) -> np.ndarray:
    """The file's samples as a decoder gives them, scaled to 8 bits: Pillow for
    grey (its "I;16" shifts 12-bit samples up to 16), openjpeg for RGB (Pillow's
    RGB mode wraps 16-bit values near the top round to 0)."""
    im = Image.open(io.BytesIO(data))
    if im.mode.startswith("I;16"):
        deep, bits = np.asarray(im), 16
    else:
        deep = openjpeg.decode(data)
    top = (1 << bits) - 1
    scaled = (deep.astype(np.uint32) * 255 + top // 2) // top
    if scaled.ndim == 2:
        scaled = np.repeat(scaled[..., None], 3, -1)
    return scaled.astype(np.uint8)


def rendered(pdf: bytes) -> np.ndarray:
    doc = pdfium.PdfDocument(pdf)
    try:
        return np.asarray(doc[0].render(scale=96 / 72).to_pil().convert("RGB"))
    finally:
        doc.close()


@pytest.mark.parametrize("name", CASES)
def test_deep_jpeg2000_is_embedded_and_renders_like_pillow(name):
    data = CASES[name]()
    info = inspect_image(data, 10**9)
    assert info.route == "embed-jp2", info
    pdf = convert_to_pdf(data, info)
    assert pdf.startswith(b"%PDF-1.5")
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (page,) = doc.pages
        image = page.Resources.XObject.Im0
        assert image.read_raw_bytes() == data
        assert image.Filter == "/JPXDecode"
        assert (int(image.Width), int(image.Height)) == (W, H)
        assert visible_size(page) == pytest.approx((W * 72 / 96, H * 72 / 96), abs=1e-3)
    bits = 12 if "12" in name else 16
    got, want = rendered(pdf).astype(int), decoded_8bit(data, bits).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1  # rounding to 8 bits only


def test_deep_jpeg2000_page_follows_its_resolution_box():
    # A capture resolution box (resc) of 200 x 100 dpi, as img2pdf reads it.
    data = pillow_grey(16, False)
    # img2pdf reads (num / den) * 10^exp * 100 / 2.54 per axis, horizontal first.
    res = b"\x00\x00\x00\x12resc" + bytes.fromhex("01fc0064 00fe0064 0000")
    box = b"\x00\x00\x00\x1ares " + res
    start = data.index(b"jp2h") - 4
    length = int.from_bytes(data[start : start + 4], "big")
    jp2h = (length + len(box)).to_bytes(4, "big") + data[start + 4 : start + length] + box
    data = data[:start] + jp2h + data[start + length :]
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert doc.pages[0].Resources.XObject.Im0.read_raw_bytes() == data
        size = visible_size(doc.pages[0])
    assert size == pytest.approx((W * 72 / 200, H * 72 / 100), rel=1e-3)


def test_deep_jpeg2000_with_alpha_is_still_flattened():
    rgba = np.concatenate([samples(16, 3), samples(16, 1)[..., None]], -1)
    data = openjpeg.encode(np.ascontiguousarray(rgba), bits_stored=16, codec_format=1)
    info = inspect_image(data, 10**9)
    assert (info.mode, info.route) == ("RGBA", "pillow-flatten")
    assert convert_to_pdf(data, info).startswith(b"%PDF-")


def with_alpha(mode: str, codestream: bool) -> bytes:
    """8-bit RGBA / LA, lossless: the left half clear, the right half's top half
    at alpha 128, the rest opaque; colours that show where alpha is ignored."""
    y, x = np.mgrid[0:H, 0:W]
    alpha = np.where(x < W // 2, 0, np.where(y < H // 2, 128, 255))
    rgba = np.stack([x * 255 // (W - 1), y * 255 // (H - 1), np.full_like(x, 30), alpha], -1)
    im = Image.fromarray(rgba.astype(np.uint8), "RGBA")
    return images.encode(im if mode == "RGBA" else im.convert("LA"), "JPEG2000", no_jp2=codestream)


@pytest.mark.parametrize("codestream", [False, True], ids=["jp2", "j2k"])
@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_8bit_jpeg2000_with_alpha_renders_its_transparency(mode, codestream):
    # img2pdf embedded the .jp2 with its alpha ignored (clear areas in their
    # stored colour, 255 levels off) and refused the bare codestream (422);
    # pdfium draws /SMaskInData 1 up to 63 levels off. Flattened onto white,
    # in bands (app.engine.jp2_bands).
    data = with_alpha(mode, codestream)
    info = inspect_image(data, 10**9)
    assert (info.mode, info.route) == (mode, "jp2-bands")
    pdf = convert_to_pdf(data, info)
    pillow = Image.open(io.BytesIO(data)).convert("RGBA")
    paper = Image.new("RGBA", pillow.size, "white")
    want = np.asarray(Image.alpha_composite(paper, pillow).convert("RGB")).astype(int)
    got = rendered(pdf).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 2  # compositing rounding only


def with_ihdr_depth(data: bytes, bits: int) -> bytes:
    """`data` (.jp2) with its ihdr box's bits per component set to `bits`."""
    at = data.index(b"ihdr") + 4 + 10
    return data[:at] + bytes([bits - 1]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("name", "ihdr_bits"), [("rgb12.jp2", 16), ("rgb12.jp2", 13), ("grey12.jp2", 17)]
)
def test_jp2_header_depth_unlike_the_codestream_is_not_embedded_with_it(name, ihdr_bits):
    # The page's /BitsPerComponent came from the deepest of ihdr and the SIZ
    # segment; decoders use the codestream's (12 here). pdfium, given 16 or 17,
    # drew the image 255 levels off where Pillow decodes it. Now such a file
    # fails the structural check (ihdr must agree with SIZ) and is decoded:
    # the page shows Pillow's pixels, not the copied codestream.
    data = with_ihdr_depth(CASES[name](), ihdr_bits)
    info = inspect_image(data, 10**9)
    assert info.route == "pillow"
    pdf = convert_to_pdf(data, info)
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        assert doc.pages[0].Resources.XObject.Im0.get("/Filter") != "/JPXDecode"
    # Pillow's pixels: grey scaled from 16 bits; RGB as its "RGB" mode gives
    # them (which wraps 12-bit values at the very top to 0, as Pillow does).
    with Image.open(io.BytesIO(data)) as im:
        grey = im.mode.startswith("I;16")
        want = decoded_8bit(data, 16) if grey else np.asarray(im.convert("RGB"))
    assert np.abs(rendered(pdf).astype(int) - want.astype(int)).max() <= 1


def test_jp2_header_depth_equal_to_the_codestream_still_embeds():
    data = with_ihdr_depth(CASES["rgb12.jp2"](), 12)
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    got, want = rendered(pdf).astype(int), decoded_8bit(data, 12).astype(int)
    assert np.abs(got - want).max() <= 1
