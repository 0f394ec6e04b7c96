"""Per-key rate limits: requests and tokens per minute, in fixed one-minute windows.

With ``REDIS_URL`` set the counters live in Redis, shared by every worker on every host (an
INCRBY and its EXPIRE in one pipeline); without it they live in this process (fine for one
process; with several, each enforces the limit on its own share of the traffic). A token
reservation that would pass the limit is taken back at once, so the limit holds exactly.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

WINDOW_SECONDS = 60


@dataclass(frozen=True)
class Window:
    limit: int
    used: int
    reset_seconds: int

    @property
    def remaining(self) -> int:
        return max(self.limit - self.used, 0)


class Counters(Protocol):
    def add(self, key: str, amount: int, ttl: int) -> int: ...
    def get(self, key: str) -> int: ...


class MemoryCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[int, float]] = {}

    def add(self, key: str, amount: int, ttl: int) -> int:
        now = time.monotonic()
        with self._lock:
            value, expires = self._values.get(key, (0, now + ttl))
            if expires <= now:
                value, expires = 0, now + ttl
            value += amount
            self._values[key] = (value, expires)
            if len(self._values) > 100_000:  # drop expired windows now and then
                self._values = {k: v for k, v in self._values.items() if v[1] > now}
            return value

    def get(self, key: str) -> int:
        with self._lock:
            value, expires = self._values.get(key, (0, 0.0))
            return value if expires > time.monotonic() else 0


class RedisCounters:
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)

    def add(self, key: str, amount: int, ttl: int) -> int:
        pipe = self._redis.pipeline()
        pipe.incrby(key, amount)
        pipe.expire(key, ttl)
        return int(pipe.execute()[0])

    def get(self, key: str) -> int:
        return int(self._redis.get(key) or 0)


class RateLimiter:
    def __init__(self, counters: Counters, prefix: str = "market:rl") -> None:
        self.counters = counters
        self.prefix = prefix

    def _window(self, now: float) -> tuple[int, int]:
        start = int(now) - int(now) % WINDOW_SECONDS
        return start, start + WINDOW_SECONDS - int(now)

    def hit_request(self, key_id: int | str, limit: int, now: float | None = None
                    ) -> tuple[bool, Window]:
        """Count one request; False when it is over the limit (it is still counted)."""
        start, reset = self._window(time.time() if now is None else now)
        used = self.counters.add(f"{self.prefix}:{key_id}:req:{start}", 1, WINDOW_SECONDS * 2)
        return used <= limit, Window(limit, min(used, limit), reset)

    def take_tokens(self, key_id: int | str, tokens: int, limit: int, now: float | None = None
                    ) -> tuple[bool, Window]:
        """Reserve tokens in this minute; a reservation over the limit is taken back."""
        start, reset = self._window(time.time() if now is None else now)
        name = f"{self.prefix}:{key_id}:tok:{start}"
        used = self.counters.add(name, tokens, WINDOW_SECONDS * 2)
        if used > limit and tokens:
            used = self.counters.add(name, -tokens, WINDOW_SECONDS * 2)
            return False, Window(limit, used, reset)
        return True, Window(limit, used, reset)

    def tokens_window(self, key_id: int | str, limit: int, now: float | None = None) -> Window:
        start, reset = self._window(time.time() if now is None else now)
        return Window(limit, self.counters.get(f"{self.prefix}:{key_id}:tok:{start}"), reset)


def limiter_from_settings(settings) -> RateLimiter:
    url = settings.get("REDIS_URL") or ""
    return RateLimiter(RedisCounters(url) if url else MemoryCounters())
