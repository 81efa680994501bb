"""Message rates from counter samples, and the per-client request limiter. Pure: time is passed in."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

RATE_KEYS = ("publish", "confirm", "deliver", "get", "deliver_get", "redeliver", "ack",
             "return_unroutable", "drop_unroutable")


class RateTracker:
    """Keeps recent samples of monotonic counters; a rate is the slope over ``window`` seconds."""

    def __init__(self, window: float = 5.0, keep: int = 64) -> None:
        self.window = window
        self._samples: deque[tuple[float, dict[str, int]]] = deque(maxlen=keep)

    def sample(self, now: float, totals: dict[str, int]) -> None:
        self._samples.append((now, dict(totals)))

    def rate(self, key: str) -> float:
        if len(self._samples) < 2:
            return 0.0
        last_time, last = self._samples[-1]
        first_time, first = self._samples[0]
        for when, values in reversed(self._samples):
            if last_time - when >= self.window:
                first_time, first = when, values
                break
        elapsed = last_time - first_time
        if elapsed <= 0:
            return 0.0
        return round((last.get(key, 0) - first.get(key, 0)) / elapsed, 2)

    def message_stats(self, keys: tuple[str, ...] = RATE_KEYS) -> dict[str, object]:
        """RabbitMQ's ``message_stats``: each counter plus ``<key>_details: {"rate": r}``."""
        latest = self._samples[-1][1] if self._samples else {}
        stats: dict[str, object] = {}
        for key in keys:
            stats[key] = latest.get(key, 0)
            stats[f"{key}_details"] = {"rate": self.rate(key)}
        return stats


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RequestLimiter:
    """A token bucket per client: ``rate`` requests per second, bursts of up to ``burst``."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        assert rate > 0 and burst >= 1
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, client: str, now: float) -> float:
        """0.0 when allowed, else the seconds to wait before the next request may pass."""
        bucket = self._buckets.get(client)
        if bucket is None:
            if len(self._buckets) >= self.max_clients:
                self._forget_full(now)
            bucket = self._buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop clients whose buckets have refilled: they are indistinguishable from new ones."""
        for client, bucket in list(self._buckets.items()):
            if bucket.tokens + (now - bucket.updated) * self.rate >= self.burst:
                del self._buckets[client]
        if len(self._buckets) >= self.max_clients:
            self._buckets.clear()
