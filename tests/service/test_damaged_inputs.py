"""A few hundred damaged images (fixed seed) against the real service: each gets
200 with a valid PDF or a clean 4xx within the conversion timeout, never a 5xx,
and the service is idle afterwards with no conversion left running."""

from __future__ import annotations

import collections
import io
from concurrent.futures import ThreadPoolExecutor

import pikepdf
import pytest

from tests.support import damaged, processes
from tests.support.servers import Service, SourceServer, http

TIMEOUT = 5
PER_SEED = 20  # x 21 seed images
CLIENT_ERRORS = {
    (413, "image_too_large"),
    (413, "image_too_complex"),
    (413, "conversion_memory_exceeded"),
    (415, "unsupported_image_type"),
    (422, "invalid_image"),
    (422, "conversion_timeout"),
    (422, "conversion_crashed"),
}


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    service = Service(
        tmp_path_factory.mktemp("damaged"),
        env={"CONVERT_TIMEOUT": str(TIMEOUT), "ADMISSION_WAIT": "10"},
    ).start()
    yield service
    service.stop()


def test_every_damaged_input_gets_a_pdf_or_a_clean_client_error(svc):
    cases = damaged.mutants(PER_SEED)
    assert len(cases) >= 400
    source = SourceServer()
    try:
        urls = [source.add_bytes(f"/m{i}", data) for i, (_, data) in enumerate(cases)]

        def one(i: int):
            return i, svc.post(urls[i], timeout=TIMEOUT + 20)

        outcomes = collections.Counter()
        problems = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for i, r in pool.map(one, range(len(cases))):
                name = cases[i][0]
                if r.status == 200:
                    got = http("GET", r.json()["converted_url"])
                    try:
                        with pikepdf.open(io.BytesIO(got.body)) as pdf:
                            pages = len(pdf.pages)
                    except pikepdf.PdfError:
                        pages = 0
                    if got.status != 200 or pages != 1:
                        problems.append((name, "bad pdf"))
                    outcomes["200"] += 1
                    continue
                body = r.json() if r.body.startswith(b"{") else {}
                key = (r.status, body.get("code"))
                if key not in CLIENT_ERRORS or set(body) != {"detail", "code"}:
                    problems.append((name, r.status, r.body[:200]))
                outcomes[f"{r.status} {body.get('code')}"] += 1
    finally:
        source.close()
    print(f"{len(cases)} damaged inputs: {dict(outcomes)}")
    assert problems == []
    root = svc.proc.pid
    assert processes.conversion_children(root) == []
    assert processes.cpu_used_over(processes.tree(root), 1.0) < 0.2
    assert "Traceback" not in svc.log()
