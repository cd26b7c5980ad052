"""The API path's plain JPEG is written straight into LocalStorage's folder
(app.pipeline.store_passthrough): real pipeline, real store, real source server."""

from __future__ import annotations

import os
import resource
import signal

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


def _in_child_with_file_size_limit(limit: int, run) -> str:
    """`run()` in a forked child whose files cannot grow past `limit` bytes (the
    kernel's EFBIG, what a full disk's ENOSPC is to the writer); what it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = "returned"
        try:
            os.close(read)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            run()
        except BaseException as exc:  # reported to the parent
            status = type(exc).__name__
        os.write(write, status.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        status = pipe.read().decode()
    os.waitpid(pid, 0)
    return status


def test_a_store_that_cannot_write_the_pdf_is_a_503_and_leaves_nothing(tmp_path, source):
    """The passthrough writes straight into the folder: a write that fails there is
    the store's outage (503, retry), not the image's fault and not a 500."""
    jpeg = images.encode(images.noisy_gradient(1600, 1200), "JPEG", quality=95)
    assert len(jpeg) > 1024 * 1024
    url = source.add_bytes("/big.jpg", jpeg)
    svc = services(tmp_path)
    assert _in_child_with_file_size_limit(1024 * 1024, lambda: convert(url, svc)) == (
        "StorageUnavailable"
    )
    assert stored(tmp_path) == []
    # The same store, given room, takes it whole.
    assert _in_child_with_file_size_limit(len(jpeg) + 4096, lambda: convert(url, svc)) == (
        "returned"
    )
    assert len(stored(tmp_path)) == 2
