"""Conversion children and the work pool: a job never waits while holding work-pool
bytes, so concurrent jobs whose peaks do not fit together take turns instead of
blocking each other until ADMISSION_WAIT runs out."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from app.engine.inspect import inspect_image
from app.engine.pricing import estimate_peak_bytes
from app.sandbox import inspect_reservation
from tests.support import images, processes
from tests.support.servers import Service, SourceServer

MIB = 1024 * 1024


def test_jobs_whose_peaks_do_not_fit_together_take_turns(tmp_path):
    data = images.alpha_png(1400, 1000)
    info = inspect_image(data, 10**8)
    peak = estimate_peak_bytes(info, len(data))
    share = inspect_reservation(len(data))
    # Three inspection shares fit at once, but no share plus a peak does.
    budget = 3 * share
    assert 2 * share + peak > budget >= peak
    assert peak <= budget
    svc = Service(
        tmp_path,
        env={
            "WEB_CONCURRENCY": "1",
            "WORKER_MEMORY_BUDGET": str(budget),
            "ADMISSION_WAIT": "60",
        },
    ).start()
    source = SourceServer()
    try:
        url = source.add_bytes("/a.png", data)
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda _: svc.post(url, timeout=120).status, range(4)))
        assert statuses == [200] * 4
        assert processes.conversion_children(svc.proc.pid) == []
    finally:
        source.close()
        svc.stop()
