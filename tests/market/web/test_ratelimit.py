"""The per-key rate limiter on both of its backends: counters in this process, and counters in
the real Redis at 127.0.0.1:6379 shared by several limiters (several workers)."""

from __future__ import annotations

from uuid import uuid4

import pytest

from market.web.ratelimit import (
    WINDOW_SECONDS, MemoryCounters, RateLimiter, RedisCounters, limiter_from_settings,
)

REDIS_URL = "redis://127.0.0.1:6379/0"
# 12:00:10 on some day: 50 seconds left in its window.
NOW = 1_790_000_000 - 1_790_000_000 % WINDOW_SECONDS + 10


def _redis_or_skip():
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        client.close()
        pytest.skip(f"no Redis answers at {REDIS_URL}: {exc}")
    return client


@pytest.fixture()
def prefix():
    return f"test:{uuid4().hex}"


@pytest.fixture()
def redis_client(prefix):
    client = _redis_or_skip()
    yield client
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(params=["memory", "redis"])
def make_limiter(request, prefix):
    """Limiters over one backend: every Redis limiter gets its own client (its own worker)."""
    if request.param == "memory":
        counters = MemoryCounters()
        return lambda: RateLimiter(counters, prefix=prefix)
    request.getfixturevalue("redis_client")
    return lambda: RateLimiter(RedisCounters(REDIS_URL), prefix=prefix)


def test_the_request_after_the_limit_in_a_window_is_refused(make_limiter):
    limiter = make_limiter()
    for n in range(1, 6):
        allowed, window = limiter.hit_request(7, limit=5, now=NOW)
        assert allowed and window.used == n and window.remaining == 5 - n
        assert 1 <= window.reset_seconds <= 60
    allowed, window = limiter.hit_request(7, limit=5, now=NOW)
    assert not allowed
    assert window.used == 5 and window.remaining == 0  # reported as full, never past it
    assert window.reset_seconds == 50
    # Another key has its own count.
    assert limiter.hit_request(8, limit=5, now=NOW)[0]


@pytest.mark.parametrize("offset, reset", [(0, 60), (1, 59), (59, 1)])
def test_the_reset_is_the_seconds_left_in_the_window(make_limiter, offset, reset):
    start = NOW - NOW % WINDOW_SECONDS
    _, window = make_limiter().hit_request(1, limit=1, now=start + offset)
    assert window.reset_seconds == reset


def test_a_token_reservation_over_the_limit_is_taken_back(make_limiter):
    limiter = make_limiter()
    assert limiter.take_tokens(3, 600, limit=1000, now=NOW)[0]
    allowed, window = limiter.take_tokens(3, 500, limit=1000, now=NOW)
    assert not allowed
    assert window.used == 600 and window.remaining == 400  # the 500 were taken back
    assert limiter.tokens_window(3, limit=1000, now=NOW).used == 600
    allowed, window = limiter.take_tokens(3, 400, limit=1000, now=NOW)  # exactly to the limit
    assert allowed and window.used == 1000 and window.remaining == 0
    assert not limiter.take_tokens(3, 1, limit=1000, now=NOW)[0]
    assert limiter.tokens_window(3, limit=1000, now=NOW).used == 1000


def test_used_tokens_never_pass_the_limit(make_limiter):
    limiter = make_limiter()
    granted = 0
    for tokens in [300, 450, 400, 250, 100, 999, 1, 0]:
        allowed, window = limiter.take_tokens(4, tokens, limit=1000, now=NOW)
        granted += tokens if allowed else 0
        assert window.used == granted <= 1000
    assert granted == 1000


def test_limiters_sharing_one_redis_share_their_counters(redis_client, prefix):
    # Two workers: each its own limiter and connection, one Redis between them.
    first, second = (RateLimiter(RedisCounters(REDIS_URL), prefix=prefix) for _ in range(2))
    for _ in range(2):
        assert first.hit_request(9, limit=4, now=NOW)[0]
        assert second.hit_request(9, limit=4, now=NOW)[0]
    assert not first.hit_request(9, limit=4, now=NOW)[0]
    assert not second.hit_request(9, limit=4, now=NOW)[0]

    assert first.take_tokens(9, 700, limit=1000, now=NOW)[0]
    allowed, window = second.take_tokens(9, 400, limit=1000, now=NOW)
    assert not allowed and window.used == 700
    assert second.take_tokens(9, 300, limit=1000, now=NOW)[0]
    assert first.tokens_window(9, limit=1000, now=NOW).used == 1000


def test_the_counts_start_again_in_the_next_window(make_limiter):
    limiter = make_limiter()
    start = NOW - NOW % WINDOW_SECONDS
    assert limiter.hit_request(5, limit=1, now=start + 59)[0]
    assert not limiter.hit_request(5, limit=1, now=start + 59.9)[0]
    allowed, window = limiter.hit_request(5, limit=1, now=start + 60)
    assert allowed and window.used == 1 and window.reset_seconds == 60

    assert limiter.take_tokens(5, 1000, limit=1000, now=start + 30)[0]
    assert not limiter.take_tokens(5, 1, limit=1000, now=start + 59)[0]
    assert limiter.take_tokens(5, 1000, limit=1000, now=start + 60)[0]
    assert limiter.tokens_window(5, limit=1000, now=start + 60).used == 1000
    assert limiter.tokens_window(5, limit=1000, now=start + 120).used == 0


def test_redis_counters_expire_after_two_windows(redis_client, prefix):
    limiter = RateLimiter(RedisCounters(REDIS_URL), prefix=prefix)
    limiter.hit_request(6, limit=10, now=NOW)
    limiter.take_tokens(6, 5, limit=10, now=NOW)
    keys = sorted(k.decode() for k in redis_client.scan_iter(match=f"{prefix}:*"))
    start = NOW - NOW % WINDOW_SECONDS
    assert keys == [f"{prefix}:6:req:{start}", f"{prefix}:6:tok:{start}"]
    assert all(0 < redis_client.ttl(k) <= 2 * WINDOW_SECONDS for k in keys)


def test_the_settings_choose_the_backend():
    assert isinstance(limiter_from_settings({}).counters, MemoryCounters)
    assert isinstance(limiter_from_settings({"REDIS_URL": REDIS_URL}).counters, RedisCounters)
