from app.ratelimit import TokenBuckets, client_address


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def scope(peer="35.191.0.10", xff=None):
    headers = [(b"x-forwarded-for", xff.encode())] if xff else []
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
