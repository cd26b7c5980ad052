"""The conversion child reads its source as a read-only mapping of the memfd
(app.sandbox._map_source), not a copy: every kind inspects the same from it, the
stream routes convert from it unchanged, and the others get bytes."""

from __future__ import annotations

import mmap
import os

import pytest

from app import sandbox
from app.engine.convert import convert_to_pdf
from app.engine.inspect import _open, inspect_image
from app.errors import ApiError
from tests.support import hostile, images

KINDS = {
    "jpeg": lambda: images.jpeg(64, 48),
    "mirrored_jpeg": lambda: images.jpeg_with_orientation(2, 64, 48),
    "png": lambda: images.png(64, 48),
    "alpha_png": lambda: images.alpha_png(300, 250),
    "la_png": lambda: images.la_png(64, 48),
    "png16_alpha": lambda: images.png16_alpha(32, 24),
    "interlaced_png": lambda: images.png_interlaced(64, 48),
    "palette_trns_png": lambda: images.palette_transparent_png(64, 48),
    "gif": lambda: images.gif(64, 48),
    "gif_transparent": lambda: images.gif_transparent(64, 48),
    "tiff": lambda: images.tiff(64, 48),
    "tiff_alpha": lambda: images.tiff_alpha(64, 48),
    "webp_alpha": lambda: images.webp_alpha(64, 48),
    "bmp": lambda: images.bmp(64, 48),
    "jp2": lambda: images.jp2(64, 48),
    "truncated_png": lambda: images.truncated_png(64, 48),
    "jp2_16bit": lambda: hostile.jp2_16bit_gray(64, 64),
}


def mapped(data: bytes) -> mmap.mmap:
    fd = os.memfd_create("test-src", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        return sandbox._map_source(fd, len(data))
    finally:
        os.close(fd)


def outcome(call):
    try:
        return call()
    except ApiError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_inspects_and_converts_the_same_from_the_mapping(kind):
    data = KINDS[kind]()
    source = mapped(data)
    info = outcome(lambda: inspect_image(data, 10**8))
    assert outcome(lambda: inspect_image(source, 10**8)) == info
    if isinstance(info, str):
        return
    # What the child converts from: the mapping on the stream routes, else bytes.
    given = sandbox._for_route(source, info.route)
    assert isinstance(given, mmap.mmap) == (info.route in sandbox.MAPPED_ROUTES)
    assert outcome(lambda: convert_to_pdf(given, info)) == outcome(
        lambda: convert_to_pdf(data, info)
    )


def test_the_mapping_is_read_only_and_pillow_reads_it_in_place():
    data = images.alpha_png(64, 48)
    source = mapped(data)
    with pytest.raises(TypeError):
        source[0] = 0
    with _open(source, "png") as im:
        assert im.fp is source  # no BytesIO copy of the whole file
        assert im.size == (64, 48)


def test_routes_that_copy_get_bytes_and_the_mapping_is_unmapped():
    data = images.bmp(64, 48)
    source = mapped(data)
    info = inspect_image(source, 10**8)
    assert info.route not in sandbox.MAPPED_ROUTES
    given = sandbox._for_route(source, info.route)
    assert type(given) is bytes and given == data
    assert source.closed


def test_an_empty_source_is_empty_bytes():
    fd = os.memfd_create("test-src", os.MFD_CLOEXEC)
    try:
        assert sandbox._map_source(fd, 0) == b""
    finally:
        os.close(fd)
