"""Settings for the HTTP-layer limits, and the once-per-interval log filter."""

from __future__ import annotations

import logging

import pytest

from app.observability import ACCEPT_EXHAUSTED, OncePerInterval
from app.settings import Settings, SettingsError


def test_http_limit_defaults_and_overrides():
    s = Settings.from_env({})
    assert s.max_json_body_bytes == 65536
    assert s.lb_source_ranges == ("130.211.0.0/22", "35.191.0.0/16")
    assert (s.header_timeout_s, s.body_timeout_s, s.max_connections) == (10.0, 30.0, 1000)
    s = Settings.from_env({"LB_SOURCE_RANGES": "127.0.0.0/8, ::1/128", "SOURCE_MIN_RATE": "0"})
    assert s.lb_source_ranges == ("127.0.0.0/8", "::1/128")
    assert s.source_min_rate == 0


@pytest.mark.parametrize(
    "env",
    [
        {"LB_SOURCE_RANGES": "130.211.0.0/33"},
        {"LB_SOURCE_RANGES": "not-a-network"},
        {"MAX_JSON_BODY_BYTES": "100"},
        {"HTTP_HEADER_TIMEOUT": "0"},
        {"MAX_CONNECTIONS_PER_WORKER": "0"},
    ],
)
def test_bad_http_limits_stop_the_boot(env):
    with pytest.raises(SettingsError):
        Settings.from_env(env)


def _record(msg: str) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, (), None)


def test_accept_errors_pass_once_per_interval_with_the_count_dropped():
    now = [100.0]
    f = OncePerInterval(ACCEPT_EXHAUSTED, interval_s=60, clock=lambda: now[0])
    assert f.filter(_record(ACCEPT_EXHAUSTED))
    assert not any(f.filter(_record(ACCEPT_EXHAUSTED)) for _ in range(1000))
    assert f.filter(_record("something else"))  # other asyncio errors untouched
    now[0] += 60
    later = _record(ACCEPT_EXHAUSTED)
    assert f.filter(later)
    assert "(1000 more in the last 60 s)" in later.getMessage()
