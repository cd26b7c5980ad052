"""Alpha images keep their soft mask within a small work pool; the largest convert.

The streaming route (app.engine.streamed) holds strips, not the image: an alpha PNG
that img2pdf's soft-mask path could not fit (and that was flattened onto white,
or above ~20 MP refused with 413) now converts with its alpha as /SMask.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io

from PIL import Image

from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from tests.service.conftest import open_pdf
from tests.support import images
from tests.support.servers import Service, http


def test_alpha_image_over_the_old_soft_mask_budget_keeps_its_soft_mask(tmp_path, source):
    data = images.alpha_png(1000, 800)
    info = inspect_image(data, 10**8)
    assert info.route == "stream"
    streaming = estimate_peak_bytes(info, len(data))
    old = estimate_peak_bytes(dataclasses.replace(info, route="img2pdf-alpha"), len(data))
    budget = (streaming + old) // 2  # img2pdf's soft-mask path does not fit, streaming does
    assert streaming < budget < old
    url = source.add_bytes("/fallback/alpha.png", data)
    svc = Service(tmp_path, env={"WORKER_MEMORY_BUDGET": str(budget)}).start()
    try:
        resp = svc.post(url)
        assert resp.status == 200, resp.body
        pdf = http("GET", resp.json()["converted_url"]).body
        assert len(open_pdf(pdf).pages) == 1
        assert b"/SMask" in pdf
    finally:
        svc.stop()


def test_with_room_the_alpha_channel_is_kept_as_a_soft_mask(service, source):
    resp = service.post(source.add_bytes("/fallback/keep.png", images.alpha_png(200, 100)))
    assert resp.status == 200
    assert b"/SMask" in http("GET", resp.json()["converted_url"]).body


def poster(w: int, h: int) -> bytes:
    """A 6000x5000 RGBA poster export: gradients, so it is small on the wire."""
    grad = Image.linear_gradient("L").resize((w, h))
    im = Image.merge("RGB", (grad, grad.transpose(Image.Transpose.FLIP_LEFT_RIGHT), grad))
    im.putalpha(grad.transpose(Image.Transpose.ROTATE_180))
    buf = io.BytesIO()
    im.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def test_concurrent_thirty_megapixel_alpha_pngs_are_never_413(service, source):
    """Once 413 on every request (estimated 23 B/px, over the whole work pool)."""
    url = source.add_bytes("/fallback/poster.png", poster(6000, 5000))
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: service.post(url, timeout=120), range(4)))
    statuses = sorted(r.status for r in answers)
    assert set(statuses) <= {200, 503}, statuses
    done = [r for r in answers if r.status == 200]
    assert done, statuses
    pdf = open_pdf(http("GET", done[0].json()["converted_url"]).body)
    (image,) = pdf.pages[0].get_images().values()
    assert (int(image.Width), int(image.Height)) == (6000, 5000)
    assert int(image.SMask.Width) == 6000
