"""With the default settings, the service refuses every private source."""

from __future__ import annotations

import pytest

from tests.support import images
from tests.support.servers import Service


@pytest.fixture(scope="module")
def strict_service(tmp_path_factory):
    svc = Service(tmp_path_factory.mktemp("strict"), env={"ALLOW_PRIVATE_SOURCE_URLS": "0"})
    svc.start()
    yield svc
    svc.stop()


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "2130706433",
        "0x7f000001",
        "169.254.169.254",
        "10.0.0.1",
        "192.168.1.1",
        "0.0.0.0",
        "[::ffff:0:7f00:1]",  # IPv4-translated 127.0.0.1
        "[::ffff:0:a9fe:a9fe]",  # IPv4-translated 169.254.169.254
        "[2002:a9fe:a9fe::1]",  # 6to4 of the metadata address
    ],
)
def test_loopback_private_and_metadata_addresses_are_refused(strict_service, source, host):
    source.add_bytes("/private.png", images.png())
    before = len(source.hits)
    port = source.port if host in ("127.0.0.1", "localhost") else 80
    resp = strict_service.post(f"http://{host}:{port}/private.png")
    assert resp.status == 400, resp.body
    assert resp.json()["code"] == "url_not_allowed"
    assert "127.0.0.1" not in resp.json()["detail"]
    assert len(source.hits) == before  # never contacted
