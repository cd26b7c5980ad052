"""pytest fixture factories shared by the suites."""

from __future__ import annotations

import pytest

from tests.support.servers import running_service


def service_fixture(name: str, env: dict[str, str], tmp_name: str | None = None):
    """A module-scoped fixture called `name`: the real service (servers.Service) with
    `env` over the test defaults, started once for the module and stopped after it."""

    @pytest.fixture(scope="module", name=name)
    def fixture(tmp_path_factory):
        with running_service(tmp_path_factory.mktemp(tmp_name or name), env=env) as svc:
            yield svc

    return fixture
