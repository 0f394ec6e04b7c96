"""Sign-in throttling on both of its stores: this process's memory, and the real Redis at
127.0.0.1:6379 shared by several throttles (several workers)."""

from __future__ import annotations

import time
from uuid import uuid4

import pytest
from limits.storage import MemoryStorage, RedisStorage

from market.accounts.throttle import LoginThrottle, ThrottlePolicy

REDIS_URL = "redis://127.0.0.1:6379/0"
POLICY = ThrottlePolicy(free_failures=3, free_failures_per_address=10, backoff_seconds=30,
                        max_backoff_seconds=3600)


@pytest.fixture(params=["memory", "redis"])
def make_throttle(request):
    """Throttles over one store: every Redis one gets its own client (its own worker)."""
    if request.param == "memory":
        storage = MemoryStorage()
        return lambda: LoginThrottle(storage, POLICY)
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.skip(f"no Redis answers at {REDIS_URL}: {exc}")
    return lambda: LoginThrottle(RedisStorage(REDIS_URL), POLICY)


@pytest.fixture()
def email():
    return f"{uuid4().hex}@example.com"  # fresh counts in a shared Redis


def _address() -> str:
    n = uuid4().int
    return f"10.{n % 251}.{n // 251 % 251}.{n // 63001 % 251}"


def test_the_free_failures_pass_then_the_address_waits(make_throttle, email):
    worker_a, worker_b = make_throttle(), make_throttle()
    here, there = _address(), _address()
    for n in range(POLICY.free_failures):
        assert worker_a.wait_seconds(email, here) == 0
        (worker_a if n % 2 else worker_b).failed(email, here)
    # Counted by both workers together; the other address and the other e-mail are untouched.
    assert 0 < worker_b.wait_seconds(email, here) <= POLICY.backoff_seconds
    assert worker_a.wait_seconds(email.upper(), here) > 0  # the e-mail as typed
    assert worker_a.wait_seconds(email, there) == 0
    assert worker_a.wait_seconds("other-" + email, here) == 0


def test_a_success_clears_the_account_count(make_throttle, email):
    throttle = make_throttle()
    here = _address()
    for _ in range(POLICY.free_failures - 1):
        throttle.failed(email, here)
    throttle.succeeded(email, here)
    for _ in range(POLICY.free_failures - 1):
        throttle.failed(email, here)
    assert throttle.wait_seconds(email, here) == 0


def test_one_address_guessing_at_many_accounts_is_slowed(make_throttle):
    throttle = make_throttle()
    address = _address()
    for _ in range(POLICY.free_failures_per_address):
        throttle.failed(f"{uuid4().hex}@example.com", address)
    assert throttle.wait_seconds(f"{uuid4().hex}@example.com", address) > 0
    assert throttle.wait_seconds(f"{uuid4().hex}@example.com", _address()) == 0


def test_each_failure_past_the_free_ones_doubles_the_wait(monkeypatch):
    clock = [1_790_000_000.0]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    throttle = LoginThrottle(MemoryStorage(), POLICY)
    for _ in range(POLICY.free_failures):
        throttle.failed("a@example.com", "10.0.0.1")
    waits = []
    for _ in range(5):
        wait = throttle.wait_seconds("a@example.com", "10.0.0.1")
        waits.append(wait)
        clock[0] += wait  # the guesser waits exactly as long as told, then fails again
        assert throttle.wait_seconds("a@example.com", "10.0.0.1") == 0
        throttle.failed("a@example.com", "10.0.0.1")
    assert waits == [30, 30, 60, 120, 240]
    # Capped: never longer than the longest wait.
    for _ in range(20):
        clock[0] += throttle.wait_seconds("a@example.com", "10.0.0.1")
        throttle.failed("a@example.com", "10.0.0.1")
    assert throttle.wait_seconds("a@example.com", "10.0.0.1") <= POLICY.max_backoff_seconds
