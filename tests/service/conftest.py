"""Fixtures that start real processes: a source server and the gunicorn service."""

from __future__ import annotations

import io

import pikepdf
import pytest

from tests.support.servers import Service


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """The production entry point (gunicorn, 2 uvicorn workers), private URLs allowed."""
    svc = Service(
        tmp_path_factory.mktemp("svc"),
        env={"SOURCE_TOTAL_TIMEOUT": "3", "SOURCE_READ_TIMEOUT": "2"},
    ).start()
    yield svc
    svc.stop()


def open_pdf(data: bytes) -> pikepdf.Pdf:
    assert data.startswith(b"%PDF-"), data[:20]
    return pikepdf.open(io.BytesIO(data))
