"""Fixtures every suite may use."""

from __future__ import annotations

import pytest

from tests.support.servers import SourceServer


@pytest.fixture(scope="session")
def source():
    """A real HTTP server on loopback serving source images (and bad sources)."""
    server = SourceServer()
    yield server
    server.close()
