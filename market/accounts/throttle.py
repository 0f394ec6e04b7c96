"""Sign-in throttling: failures slow the next try down, exponentially, without a lock-out.

Two counts of failed sign-ins are kept, in moving windows of the ``limits`` library (in Redis
when ``REDIS_URL`` is set, so every worker on every host shares them; in this process
otherwise):

- per account *and* address: after ``free_failures`` failures for one e-mail from one address,
  each further failure doubles the wait before the next try from there, from
  ``backoff_seconds`` up to ``max_backoff_seconds``;
- per address: the same ladder with ``free_failures_per_address``, across all e-mails, which
  slows one address guessing at many accounts.

The account's count is keyed by its address as well, so an attacker guessing at an e-mail never
locks its owner out: the owner signing in from another address is not slowed at all, and from
the same address gets in once the wait has passed. A success clears the account-and-address
count. A throttled try is answered before its password is checked, with the seconds to wait.

The ladder is a set of moving windows: step ``k`` allows ``free + k`` failures in
``backoff * 2**k`` seconds, so each failure past the free ones roughly doubles the wait.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerSecond
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int = 5
    free_failures_per_address: int = 30
    backoff_seconds: int = 30
    max_backoff_seconds: int = 86_400


def _ladder(free: int, policy: ThrottlePolicy) -> list[RateLimitItemPerSecond]:
    steps, window = [], max(policy.backoff_seconds, 1)
    k = 0
    while True:
        steps.append(RateLimitItemPerSecond(free + k, window, namespace="market-login"))
        if window >= policy.max_backoff_seconds:
            return steps
        k, window = k + 1, min(window * 2, policy.max_backoff_seconds)


def _account_key(email: str) -> str:
    # The e-mail as typed is not kept in the counters' store, only a digest of it.
    return hashlib.sha256(email.strip().lower().encode("utf-8")).hexdigest()[:32]


class LoginThrottle:
    def __init__(self, storage: Storage, policy: ThrottlePolicy = ThrottlePolicy()) -> None:
        self.storage = storage
        self.policy = policy
        self._limiter = MovingWindowRateLimiter(storage)
        self._account_ladder = _ladder(policy.free_failures, policy)
        self._address_ladder = _ladder(policy.free_failures_per_address, policy)

    @classmethod
    def from_settings(cls, settings) -> LoginThrottle:
        url = settings.get("REDIS_URL") or "memory://"
        policy = ThrottlePolicy(
            free_failures=int(settings["LOGIN_FREE_FAILURES"]),
            free_failures_per_address=int(settings["LOGIN_FREE_FAILURES_PER_IP"]),
            backoff_seconds=int(settings["LOGIN_BACKOFF_SECONDS"]),
            max_backoff_seconds=int(settings["LOGIN_MAX_BACKOFF_SECONDS"]))
        return cls(storage_from_string(url), policy)

    def _counts(self, email: str, address: str):
        account = ("account", _account_key(email), address)
        yield from ((step, account) for step in self._account_ladder)
        yield from ((step, ("address", address)) for step in self._address_ladder)

    def wait_seconds(self, email: str, address: str) -> int:
        """Seconds before a sign-in for this e-mail from this address may be tried; 0: now."""
        now = time.time()
        wait = 0.0
        for step, ids in self._counts(email, address):
            if not self._limiter.test(step, *ids):
                reset = self._limiter.get_window_stats(step, *ids).reset_time
                wait = max(wait, reset - now, 1)
        return math.ceil(wait)

    def failed(self, email: str, address: str) -> None:
        """Count one failed sign-in."""
        for step, ids in self._counts(email, address):
            self._limiter.hit(step, *ids)

    def succeeded(self, email: str, address: str) -> None:
        """The account-and-address count starts afresh; the address's own count stays."""
        for step in self._account_ladder:
            self._limiter.clear(step, "account", _account_key(email), address)

    def reset(self) -> None:
        """Forget every count (the test suite's fresh start)."""
        self.storage.reset()
