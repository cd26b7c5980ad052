import pytest

from app.ratelimit import TokenBuckets, client_address


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def scope(peer="35.191.0.10", xff=None, *more_lines):
    headers = [(b"x-forwarded-for", v.encode()) for v in (xff, *more_lines) if v]
    return {"type": "http", "client": (peer, 5555), "headers": headers}


def test_burst_then_refill_at_the_rate():
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=0.5, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = buckets.take("a")
    assert 1.9 < wait <= 2.0  # one token takes 2 s at 0.5/s
    clock.now += 2.0
    assert buckets.take("a") == 0.0
    assert buckets.take("a") > 0


def test_clients_do_not_share_a_bucket():
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=0.1, burst=1, clock=clock)
    assert buckets.take("203.0.113.1") == 0.0
    assert buckets.take("203.0.113.1") > 0
    assert buckets.take("198.51.100.7") == 0.0


def test_bucket_count_is_bounded():
    buckets = TokenBuckets(rate_per_s=1, burst=1, max_clients=100, clock=Clock())
    for i in range(1000):
        buckets.take(f"client-{i}")
    assert len(buckets._buckets) == 100


def test_gclb_client_is_the_second_to_last_forwarded_entry():
    s = scope(xff="203.0.113.9, 34.120.1.2")
    assert client_address(s, "gclb") == "203.0.113.9"
    assert client_address(s, "peer") == "35.191.0.10"


def test_spoofed_first_entries_are_ignored():
    spoofed = scope(xff="1.2.3.4, 5.6.7.8, 203.0.113.9, 34.120.1.2")
    assert client_address(spoofed, "gclb") == "203.0.113.9"


def test_without_an_lb_entry_the_peer_is_used():
    assert client_address(scope(xff="203.0.113.9"), "gclb") == "35.191.0.10"
    assert client_address(scope(), "gclb") == "35.191.0.10"
    assert client_address(scope(xff="junk, 34.120.1.2"), "gclb") == "35.191.0.10"


def test_a_request_can_cost_several_tokens_but_never_more_than_a_bucket():
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=1.0, burst=5, clock=clock)
    assert buckets.take("a", cost=3) == 0.0
    wait = buckets.take("a", cost=3)  # 2 left: refused, nothing taken
    assert 0.9 < wait <= 1.0
    assert buckets.take("a", cost=2) == 0.0
    clock.now += 100
    assert buckets.take("a", cost=50) == 0.0  # capped at the bucket size
    assert buckets.take("a") > 0


LB_PEERS = [
    "130.211.0.0",  # first and last of 130.211.0.0/22
    "130.211.3.255",
    "35.191.0.0",  # first and last of 35.191.0.0/16
    "35.191.255.255",
    "::ffff:35.191.0.1",  # the same peer on a dual-stack socket
]
NOT_LB_PEERS = [
    "130.210.255.255",  # one below and one above each range
    "130.211.4.0",
    "35.190.255.255",
    "35.192.0.0",
    "127.0.0.1",
    "10.128.0.5",
]


@pytest.mark.parametrize("peer", LB_PEERS)
def test_forwarded_for_trusted_from_the_lb_ranges(peer):
    assert client_address(scope(peer, "203.0.113.9, 34.120.1.2"), "gclb") == "203.0.113.9"


@pytest.mark.parametrize("peer", NOT_LB_PEERS)
def test_forwarded_for_ignored_from_anything_else(peer):
    """A peer outside the LB's ranges reached the backend directly: its header is
    its own invention, so it is keyed by its address and cannot rotate the key."""
    assert client_address(scope(peer, "203.0.113.9, 34.120.1.2"), "gclb") == peer


def test_lb_ranges_come_from_the_setting():
    s = scope("127.0.0.1", "203.0.113.9, 34.120.1.2")
    assert client_address(s, "gclb", ("127.0.0.0/8",)) == "203.0.113.9"
    assert client_address(scope(xff="203.0.113.9, 34.120.1.2"), "gclb", ("127.0.0.0/8",)) == (
        "35.191.0.10"
    )


def test_every_forwarded_for_line_is_read():
    """Two header lines are one list: the LB's entry is on the last line."""
    s = scope("35.191.0.10", "9.9.9.9", "203.0.113.9, 34.120.1.2")
    assert client_address(s, "gclb") == "203.0.113.9"
    split = scope("35.191.0.10", "203.0.113.9", "34.120.1.2")
    assert client_address(split, "gclb") == "203.0.113.9"


def test_the_least_recently_used_bucket_is_evicted():
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=0.001, burst=1, max_clients=2, clock=clock)
    assert buckets.take("a") == 0.0
    assert buckets.take("b") == 0.0
    assert buckets.take("a") > 0  # a used again: b is now the oldest
    assert buckets.take("c") == 0.0  # evicts b, not a (nor c, the newest)
    assert list(buckets._buckets) == ["a", "c"]
    assert buckets.take("a") > 0  # still drained: its bucket was kept
    assert buckets.take("b") == 0.0  # forgotten, so full again


def test_waiting_takes_nothing():
    buckets = TokenBuckets(rate_per_s=1.0, burst=2, clock=Clock())
    assert buckets.wait("a") == 0.0
    assert buckets.wait("a", cost=2) == 0.0
    assert buckets.take("a", cost=2) == 0.0
    assert buckets.wait("a") == pytest.approx(1.0)
    assert buckets.wait("a", cost=2) == pytest.approx(2.0)


def test_deploy_settings_let_every_allowed_request_through():
    """30/min, burst 10, MAX_PAGES 20: a list costs one token per image up to a
    full bucket, so even 20 images pass once the bucket is full."""
    clock = Clock()
    buckets = TokenBuckets(rate_per_s=30 / 60, burst=10, clock=clock)
    for images in range(1, 21):  # each from a full bucket
        assert buckets.take(f"client-{images}", cost=images) == 0.0, images
    assert buckets.take("x", cost=20) == 0.0
    # Retry-After is computed from what is missing: 10 tokens at 0.5/s.
    assert buckets.take("x", cost=20) == pytest.approx(20.0)
    assert buckets.take("x", cost=1) == pytest.approx(2.0)
    clock.now += 5
    assert buckets.take("x", cost=20) == pytest.approx(15.0)
