"""EXIF-mirrored JPEGs (orientation 2, 4, 5, 7) embedded verbatim, flipped/turned
by the page's matrix: rendered by pypdfium2 against Pillow's exif_transpose of
the decoded JPEG for all eight orientations, the page size of the shown image
(sides swapped for 5-8), and the image stream equal to the source bytes. Plain
files take the worker-side passthrough; ones with an ICC profile (or CMYK) the
child's `embed_jpeg`."""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageCms, ImageOps

from app.engine.convert import convert_to_pdf
from app.engine.direct import passthrough_jpeg
from app.engine.inspect import inspect_image
from app.pages import visible_size
from tests.support import images

W, H = 96, 48  # not square, so a swapped page is caught


def make(orientation: int, *, dpi=(72, 72), mode: str = "RGB", icc: bool = False) -> bytes:
    im = images.photo(W, H, seed=orientation)
    im.paste((250, 20, 20), (0, 0, 16, 16))  # a red mark at the stored top-left
    if mode != "RGB":
        im = im.convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    params: dict = {"exif": exif.tobytes(), "quality": 92, "dpi": dpi}
    if icc:
        params["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return images.encode(im, "JPEG", **params)


def passthrough(data: bytes) -> bytes | None:
    fd = os.memfd_create("test-pdf")
    try:
        size = passthrough_jpeg(data, 10**9, fd)
        return None if size is None else os.pread(fd, size, 0)
    finally:
        os.close(fd)


def shown(data: bytes) -> np.ndarray:
    """What a viewer shows: Pillow's decode, turned by exif_transpose."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))


def rendered(pdf: bytes, points_per_pixel: float = 1.0) -> np.ndarray:
    doc = pdfium.PdfDocument(pdf)
    try:
        return np.asarray(doc[0].render(scale=1 / points_per_pixel).to_pil().convert("RGB"))
    finally:
        doc.close()


def image_stream(pdf: bytes) -> bytes:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        (page,) = doc.pages
        return page.Resources.XObject.Im0.read_raw_bytes()


def page_size(pdf: bytes) -> tuple[float, float]:
    with pikepdf.open(io.BytesIO(pdf)) as doc:
        return visible_size(doc.pages[0])


def assert_renders_as_shown(pdf: bytes, data: bytes) -> None:
    want = shown(data).astype(int)
    got = rendered(pdf).astype(int)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    # Two JPEG decoders (pdfium's, Pillow's) differ by their upsampling only:
    # a flipped or turned image would differ by ~100 on average.
    assert diff.mean() < 3, diff.mean()
    assert np.percentile(diff, 99) < 24, np.percentile(diff, 99)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_plain_jpeg_every_orientation_renders_like_exif_transpose(orientation):
    data = make(orientation)
    pdf = passthrough(data)
    assert pdf is not None, "the worker-side passthrough takes every orientation"
    assert image_stream(pdf) == data
    assert_renders_as_shown(pdf, data)
    # The red mark sits where exif_transpose puts the stored top-left corner.
    corner = {1: (0, 0), 2: (0, 1), 3: (1, 1), 4: (1, 0), 5: (0, 0), 6: (0, 1), 7: (1, 1)}
    corner[8] = (1, 0)
    row, col = corner[orientation]
    got = rendered(pdf)
    y = 4 if row == 0 else got.shape[0] - 5
    x = 4 if col == 0 else got.shape[1] - 5
    assert got[y, x, 0] > 200 and got[y, x, 1] < 80, (orientation, got[y, x])


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("variant", ["icc", "cmyk-xmp", "grey-xmp"])
def test_child_embeds_mirrored_jpegs_the_walk_leaves(orientation, variant):
    mode = {"icc": "RGB", "cmyk-xmp": "CMYK", "grey-xmp": "L"}[variant]
    data = make(orientation, mode=mode, icc=variant == "icc")
    if variant.endswith("xmp"):  # an XMP packet: the worker-side walk leaves the file
        xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'/>"
        data = data[:2] + b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp + data[2:]
    assert passthrough(data) is None, "not plain: the child writes it"
    info = inspect_image(data, 10**9)
    assert info.route == "embed-jpeg"
    pdf = convert_to_pdf(data, info)
    assert image_stream(pdf) == data
    if variant != "cmyk-xmp":  # pdfium and Pillow convert CMYK differently
        assert_renders_as_shown(pdf, data)
    if variant == "icc":
        with pikepdf.open(io.BytesIO(pdf)) as doc:
            space = doc.pages[0].Resources.XObject.Im0.ColorSpace
            assert space[0] == "/ICCBased" and space[1].N == 3


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("icc", [False, True])
def test_page_is_the_shown_image_at_its_axes_dpi(orientation, icc):
    data = make(orientation, dpi=(100, 200), icc=icc)
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    assert image_stream(pdf) == data
    # Turned a quarter (5-8): the stored height is the shown width, at its dpi.
    want = (H * 72 / 200, W * 72 / 100) if orientation >= 5 else (W * 72 / 100, H * 72 / 200)
    assert page_size(pdf) == pytest.approx(want, abs=1e-3)


def test_an_mpo_keeps_the_pillow_route():
    first = make(5)
    im = Image.open(io.BytesIO(first))
    buf = io.BytesIO()
    im.save(buf, "MPO", save_all=True, append_images=[im.copy()], exif=im.info["exif"])
    data = buf.getvalue()
    info = inspect_image(data, 10**9)
    assert info.route == "pillow-jpeg"
    got = rendered(convert_to_pdf(data, info))
    assert got.shape == shown(first).shape  # turned (96x48 stored, 48x96 shown)
    assert got[4, 4, 0] > 200 and got[4, 4, 1] < 80  # the mark: transposed, still top-left
