"""The files that once hurt the service, full size where that is cheap to build,
against the real service: each gets its clean answer within the conversion
timeout, the workers' memory stays inside their budget, and nothing is left
running afterwards."""

from __future__ import annotations

import io
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pikepdf
import pytest

from app.engine import structure
from tests.support import hostile, images, processes
from tests.support.fixtures import service_fixture
from tests.support.servers import Service, SourceServer, http
from tests.unit.test_checks_png import flip_crc

MIB = 1024 * 1024
TIMEOUT = 5
BUDGET = 224 * MIB
DOWNLOADS = 64 * MIB


svc = service_fixture(
    "svc",
    {
        "CONVERT_TIMEOUT": str(TIMEOUT),
        "WORKER_MEMORY_BUDGET": str(BUDGET),
        "DOWNLOAD_BUDGET": str(DOWNLOADS),
    },
    tmp_name="hostile",
)


@pytest.fixture(scope="module")
def source():
    server = SourceServer()
    yield server
    server.close()


def post(svc: Service, source: SourceServer, name: str, data: bytes):
    # The client waits at most the conversion timeout plus the fetch and a margin.
    return svc.post(source.add_bytes(f"/{name}", data), timeout=TIMEOUT + 20)


def pdf_of(svc: Service, response) -> pikepdf.Pdf:
    url = response.json()["converted_url"]
    got = http("GET", url)
    assert got.status == 200
    return pikepdf.open(io.BytesIO(got.body))


CASES = {
    # name: (builder, status, code)
    "jp2-resd-first": (lambda: hostile.jp2_with_display_resolution_first(600, 400), 200, None),
    "jpeg-5M-app5": (
        lambda: hostile.jpeg_with_empty_app_segments(5_000_000),
        413,
        "image_too_complex",
    ),
    "png-1.7M-chunks": (
        lambda: hostile.png_with_empty_chunks(1_700_000),
        413,
        "image_too_complex",
    ),
    "png-idat-bomb": (
        lambda: hostile.png_idat_bomb(100, 100, 512 * MIB),
        422,
        "invalid_image",
    ),
    "tiff-180k-ifds": (lambda: hostile.tiff_ifd_chain(180_000), 200, None),
    "jpeg-exif-flood": (lambda: hostile.jpeg_with_exif_flood(5400, 14000), 200, None),
    "jp2-16bit": (lambda: hostile.jp2_16bit_gray(1500, 1500), 200, None),
    "jpeg-progressive-cmyk-truncated": (
        lambda: hostile.truncated_progressive_cmyk_jpeg(2500, 2500),
        422,
        "invalid_image",
    ),
    "tiff16": (lambda: images.tiff16(32, 24), 200, None),
    "png16-interlaced-cut": (
        lambda: hostile.png16_interlaced_cut(3000, 2000),
        422,
        "invalid_image",
    ),
    "gif-frame-at-60000": (lambda: hostile.gif_frame_at(60000, 60000), 413, "image_too_large"),
    "gif-frame-past-the-screen": (lambda: hostile.gif_frame_at(5000, 4000), 200, None),
    "webp-canvas-lie": (lambda: hostile.webp_canvas_lie(64, 48), 422, "invalid_image"),
    "webp-canvas-lie-small": (
        lambda: hostile.webp_canvas_lie(64, 48, (32, 48)),
        422,
        "invalid_image",
    ),
    "webp-lossless-cut": (lambda: hostile.webp_lossless_cut(4000, 4000), 422, "invalid_image"),
    "webp-alpha-corrupt": (lambda: hostile.webp_alpha_corrupt(600, 400), 422, "invalid_image"),
    # The split and IDAT-copy routes took these while the libvips one refused.
    "png-alpha-bad-idat-crc": (
        lambda: flip_crc(images.alpha_png(600, 400), b"IDAT"),
        422,
        "invalid_image",
    ),
    "png-plain-bad-idat-crc": (
        lambda: flip_crc(images.png(600, 400), b"IDAT"),
        422,
        "invalid_image",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_file_gets_its_clean_answer(svc, source, name):
    make, status, code = CASES[name]
    data = make()
    assert len(data) <= 20 * MIB
    r = post(svc, source, name, data)
    assert r.status == status, (name, r.status, r.body[:300])
    if code is not None:
        assert r.json()["code"] == code
        assert set(r.json()) == {"detail", "code"}
    else:
        with pdf_of(svc, r) as pdf:
            assert len(pdf.pages) == 1


def test_sixteen_bit_tiff_page_size_is_exact(svc, source):
    r = post(svc, source, "tiff16-size", images.tiff16(32, 24))
    with pdf_of(svc, r) as pdf:
        box = [float(v) for v in pdf.pages[0].mediabox]
    assert (box[2] - box[0], box[3] - box[1]) == pytest.approx((24.0, 18.0))


def test_segment_cap_boundary_through_the_service(svc, source):
    ok = post(svc, source, "at-cap", hostile.jpeg_with_empty_app_segments(1024))
    assert ok.status == 200
    over = post(svc, source, "over-cap", hostile.jpeg_with_empty_app_segments(1025))
    assert (over.status, over.json()["code"]) == (413, "image_too_complex")
    assert structure.JPEG_MAX_SEGMENTS == 1024


def test_decoder_warnings_are_one_counted_log_line(svc, source):
    before = svc.log()
    r = post(svc, source, "exif-flood-log", hostile.jpeg_with_exif_flood(5400, 14000))
    assert r.status == 200
    new = svc.log()[len(before) :]
    assert "Possibly corrupt" not in new and "Tag data larger" not in new
    counted = [line for line in new.splitlines() if "decoder warnings" in line]
    assert len(counted) == 1, counted


def _catch_conversion_child(svc: Service, pending) -> int:
    """The first conversion child to appear (polled from /proc), while the request
    it serves is still pending."""
    while True:
        found = processes.conversion_children(svc.proc.pid)
        if found:
            return found[0]
        if pending.done():
            pytest.fail("the conversion ended before its child was seen: use a slower image")
        time.sleep(0.002)


@pytest.mark.parametrize(
    ("signals", "status", "code"),
    [
        ([signal.SIGSTOP], 422, "conversion_timeout"),  # a decoder that never returns
        ([signal.SIGSTOP, signal.SIGSEGV, signal.SIGCONT], 422, "conversion_crashed"),
    ],
)
def test_a_hung_or_crashing_conversion_is_killed_and_answered(svc, source, signals, status, code):
    """Stand-ins for a decoder bug, sent to the real child of a real request."""
    # 30 MP of alpha PNG: ~0.15 s of conversion (3 MP took ~20 ms once the alpha
    # split got faster, and the child came and went between two polls).
    data = images.alpha_png(6000, 5000)
    url = source.add_bytes(f"/victim-{code}.png", data)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(svc.post, url, TIMEOUT + 20)
        child = _catch_conversion_child(svc, pending)
        for sig in signals:
            os.kill(child, sig)
        r = pending.result()
    assert (r.status, r.json()["code"]) == (status, code)
    assert set(r.json()) == {"detail", "code"}
    assert processes.conversion_children(svc.proc.pid) == []
    assert http("GET", svc.base + "/ping").status == 200


def test_afterwards_nothing_runs_and_workers_stayed_inside_their_budget(svc, source):
    """Runs last in this module: after all the files above."""
    root = svc.proc.pid
    assert processes.conversion_children(root) == []
    workers = processes.workers(root)
    assert len(workers) == 2
    print("worker peak RSS MiB:", [processes.peak_rss(pid) // MIB for pid in workers])
    for pid in workers:
        # A worker never decodes: its own peak is its baseline plus the bytes it
        # holds (sources, PDFs), far under budget + downloads.
        assert processes.peak_rss(pid) < BUDGET + DOWNLOADS, pid
    assert processes.cpu_used_over(processes.tree(root), 1.0) < 0.2
    assert http("GET", svc.base + "/ping").status == 200
