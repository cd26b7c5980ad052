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

from app.engine import pricing
from app.engine.convert import convert_to_pdf
from app.engine.direct import passthrough_jpeg
from app.engine.img2pdf_route import _img2pdf
from app.engine.inspect import _facts, _open, _scan, inspect_image
from app.engine.normalise import _normalise
from app.pages import visible_size
from tests.support import images
from tests.support.limits import convert_under_address_limit

W, H = 96, 48  # not square, so a swapped page is caught


def make(
    orientation: int, *, dpi=(72, 72), mode: str = "RGB", icc: bool = False, size=(W, H)
) -> bytes:
    im = images.photo(*size, seed=orientation)
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


def mpo(orientation: int, *, dpi=(72, 72), thumbnail: bool = False, size=(W, H)) -> bytes:
    """A two-frame MPO as Pillow writes it (its first frame `make`'s, the second
    another photo), or with its MP entries marked one main image and its large
    thumbnail (img2pdf then embeds the whole file)."""
    im = Image.open(io.BytesIO(make(orientation, dpi=dpi, size=size)))
    buf = io.BytesIO()
    other = images.photo(*size, seed=99)
    im.save(buf, "MPO", save_all=True, append_images=[other], exif=im.info["exif"], dpi=dpi)
    data = buf.getvalue()
    if thumbnail:
        sizes = [entry["Size"] for entry in Image.open(io.BytesIO(data)).mpinfo[0xB002]]
        order = "<" if data[data.find(b"MPF\0") + 4 : data.find(b"MPF\0") + 6] == b"II" else ">"
        for attribute, size, marked in zip((0x030000, 0), sizes, (0xA0030000, 0x40010001)):
            was = struct.pack(order + "LL", attribute, size)
            assert data.count(was) == 1
            data = data.replace(was, struct.pack(order + "LL", marked, size))
    return data


def first_frame(data: bytes) -> bytes:
    im = Image.open(io.BytesIO(data))
    offset, size = im._MpoImageFile__mpoffsets[0], im.mpinfo[0xB002][0]["Size"]
    return data[offset : offset + size]


def before(data: bytes) -> bytes:
    """The PDF the Pillow route wrote for a mirrored MPO: decoded, transposed, JPEG q95."""
    with _open(data, "jpeg") as im:
        facts = _facts(im, data, "jpeg", _scan(data, "jpeg"))
    normalised, rotation, dpi = _normalise(data, "jpeg", facts)
    return _img2pdf(normalised, rotation, dpi)


@pytest.mark.parametrize("thumbnail", [False, True])
@pytest.mark.parametrize("orientation", [2, 4, 5, 7])
def test_a_mirrored_mpo_embeds_what_img2pdf_embeds_flipped_by_the_matrix(orientation, thumbnail):
    data = mpo(orientation, thumbnail=thumbnail)
    assert Image.open(io.BytesIO(data)).format == "MPO"
    info = inspect_image(data, 10**9)
    assert info.route == "embed-jpeg"
    pdf = convert_to_pdf(data, info)
    # img2pdf's bytes for the first page: the whole file for a main image and its
    # thumbnail, else the first frame cut out; nothing decoded or re-encoded.
    assert image_stream(pdf) == (data if thumbnail else first_frame(data))
    old = before(data)
    # The first frame as shown; the second frame (another photo) would differ by ~50.
    assert_renders_as_shown(pdf, first_frame(data))
    # As the Pillow route drew it, less that route's re-encoding at q95.
    got, want = rendered(pdf).astype(int), rendered(old).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 3
    row, col = {2: (0, 1), 4: (1, 0), 5: (0, 0), 7: (1, 1)}[orientation]
    y, x = (4 if row == 0 else got.shape[0] - 5), (4 if col == 0 else got.shape[1] - 5)
    assert got[y, x, 0] > 200 and got[y, x, 1] < 80  # the mark where exif_transpose puts it


@pytest.mark.parametrize("thumbnail", [False, True])
@pytest.mark.parametrize("orientation", [2, 5])
def test_a_mirrored_mpo_page_is_the_pillow_routes(orientation, thumbnail):
    data = mpo(orientation, dpi=(100, 200), thumbnail=thumbnail)
    pdf = convert_to_pdf(data, inspect_image(data, 10**9))
    want = (H * 72 / 200, W * 72 / 100) if orientation >= 5 else (W * 72 / 100, H * 72 / 200)
    assert page_size(pdf) == pytest.approx(want, abs=1e-3)
    assert page_size(pdf) == pytest.approx(page_size(before(data)), abs=1e-3)


def test_an_mpo_img2pdf_cannot_read_keeps_the_pillow_route():
    # A first MP entry 10 bytes long: img2pdf's cut is no JPEG and it raises; the
    # embed gives up and the Pillow route (which reads the frame from its offset)
    # draws it, mirrored, exactly as before.
    data = mpo(5)
    size = Image.open(io.BytesIO(data)).mpinfo[0xB002][0]["Size"]
    order = "<" if b"MPF\0II" in data else ">"
    was = struct.pack(order + "LL", 0x030000, size)
    assert data.count(was) == 1
    data = data.replace(was, struct.pack(order + "LL", 0x030000, 10))
    info = inspect_image(data, 10**9)
    pdf = convert_to_pdf(data, info)
    got = rendered(pdf)
    assert got.shape == (W, H, 3)  # turned: 96 x 48 stored, 48 x 96 shown
    assert np.abs(got.astype(int) - rendered(before(data)).astype(int)).max() == 0
    assert got[4, 4, 0] > 200 and got[4, 4, 1] < 80


def test_a_mirrored_mpo_converts_within_a_bare_jpegs_estimate():
    # 12 MP: the Pillow route needed ~100 MB (8 B/px); embedded, the child needs
    # little more than img2pdf's cut of the first frame, under embed-jpeg's price.
    data = mpo(5, size=(4000, 3000))
    info = inspect_image(data, 40_000_000)
    assert info.route == "embed-jpeg"
    limit = pricing.estimate_peak_bytes(info, len(data))
    status = convert_under_address_limit(data, info, limit)
    assert status.startswith(b"ok "), status
    status = convert_under_address_limit(data, info, 3 * len(data))
    assert status.startswith(b"ok "), status  # the decode needed 8 B/px: 96 MB
