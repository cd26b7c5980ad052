"""The API path's plain JPEG is written straight into LocalStorage's folder
(app.pipeline.store_passthrough): real pipeline, real store, real source server."""

from __future__ import annotations

import os

import anyio
import pytest

from app.engine.direct import passthrough_jpeg
from app.errors import ImageTooLarge
from app.main import build_services
from app.pipeline import convert_source_url
from app.settings import Settings
from tests.support import images
from tests.support.servers import SourceServer


@pytest.fixture(scope="module")
def source():
    server = SourceServer()
    yield server
    server.close()


def services(data_dir, **env):
    settings = Settings.from_env(
        {
            **os.environ,
            "ALLOW_PRIVATE_SOURCE_URLS": "1",
            "DATA_DIR": str(data_dir),
            "PUBLIC_BASE_URL": "http://127.0.0.1:1",
            "STORAGE_BACKEND": "local",
            **env,
        }
    )
    return build_services(settings)


def convert(url: str, svc) -> str:
    return anyio.run(convert_source_url, url, svc)


def stored(data_dir) -> list[str]:
    return sorted(p.name for p in data_dir.iterdir())


def test_a_plain_jpeg_is_stored_with_its_name_and_nothing_else(tmp_path, source):
    jpeg = images.jpeg(640, 480)
    svc = services(tmp_path)
    url = convert(source.add_bytes("/holiday.jpg", jpeg), svc)
    name = url.rsplit("/", 1)[1]
    assert stored(tmp_path) == [name, f"{name}.filename"]
    pdf = (tmp_path / name).read_bytes()
    assert pdf.startswith(b"%PDF-") and jpeg in pdf
    assert svc.storage.filename_for(name) == "holiday.pdf"
    assert svc.admission.in_use == 0 and svc.admission.data_in_use == 0


def test_a_jpeg_at_the_pixel_cap_converts_one_over_it_stores_nothing(tmp_path, source):
    url = source.add_bytes("/cap.jpg", images.jpeg(64, 48))
    at_cap = services(tmp_path / "at", MAX_IMAGE_PIXELS=str(64 * 48))
    assert convert(url, at_cap).endswith(".pdf")
    over = services(tmp_path / "over", MAX_IMAGE_PIXELS=str(64 * 48 - 1))
    with pytest.raises(ImageTooLarge):  # the image's error, not a storage outage (503)
        convert(url, over)
    assert stored(tmp_path / "over") == []
    assert over.admission.in_use == 0 and over.admission.data_in_use == 0


def icc_jpeg() -> bytes:
    from PIL import Image, ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return images.encode(Image.new("RGB", (64, 48), (200, 30, 30)), "JPEG", icc_profile=icc)


def test_a_jpeg_that_is_not_plain_is_converted_by_the_sandbox(tmp_path, source):
    # An ICC profile is not plain: the passthrough declines and leaves no file.
    data = icc_jpeg()
    fd = os.memfd_create("probe")
    try:
        assert passthrough_jpeg(data, 10**9, fd) is None
    finally:
        os.close(fd)
    url = source.add_bytes("/profiled.jpg", data)
    svc = services(tmp_path)
    name = convert(url, svc).rsplit("/", 1)[1]
    assert stored(tmp_path) == [name, f"{name}.filename"]
    assert (tmp_path / name).read_bytes().startswith(b"%PDF-")
