"""An alpha image too big for the soft-mask path still converts, flattened onto white."""

from __future__ import annotations

from app.convert import estimate_peak_bytes, inspect_image, low_memory_variant
from tests.service.conftest import open_pdf
from tests.support import images
from tests.support.servers import Service, http


def test_alpha_image_over_the_work_pool_is_flattened_not_refused(tmp_path, source):
    data = images.alpha_png(1000, 800)
    info = inspect_image(data, 10**8)
    full = estimate_peak_bytes(info, len(data))
    cheap = estimate_peak_bytes(low_memory_variant(info), len(data))
    budget = (full + cheap) // 2  # the soft-mask path does not fit, flattening does
    assert cheap < budget < full
    url = source.add_bytes("/fallback/alpha.png", data)
    svc = Service(tmp_path, env={"WORKER_MEMORY_BUDGET": str(budget)}).start()
    try:
        resp = svc.post(url)
        assert resp.status == 200, resp.body
        pdf = http("GET", resp.json()["converted_url"]).body
        assert len(open_pdf(pdf).pages) == 1
        assert b"/SMask" not in pdf
    finally:
        svc.stop()


def test_with_room_the_alpha_channel_is_kept_as_a_soft_mask(service, source):
    resp = service.post(source.add_bytes("/fallback/keep.png", images.alpha_png(200, 100)))
    assert resp.status == 200
    assert b"/SMask" in http("GET", resp.json()["converted_url"]).body
