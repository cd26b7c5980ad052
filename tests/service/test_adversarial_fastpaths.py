"""The routes that skip img2pdf (and, for a plain JPEG, the sandbox) attacked
through the real service: what they accept must be what the sandboxed path
accepts, and what they refuse gets the same clean answer."""

from __future__ import annotations

import pytest

from tests.unit.test_fastpaths_adversarial import REFUSED_BY_PILLOW


def assert_error(resp, status: int, code: str) -> None:
    assert resp.status == status, (resp.status, resp.body[:300])
    body = resp.json()
    assert body == {"detail": body["detail"], "code": code}, body


@pytest.mark.parametrize("name", list(REFUSED_BY_PILLOW))
def test_a_jpeg_header_pillow_refuses_is_a_422_not_an_embedded_pdf(service, source, name):
    # The in-worker walk embedded these (200) although the sandboxed path, which
    # opens the file with Pillow as img2pdf does, answers 422.
    url = source.add_bytes(f"/fastpath/{name}.jpg", REFUSED_BY_PILLOW[name])
    assert_error(service.post(url), 422, "invalid_image")
    assert "unhandled error" not in service.log()
