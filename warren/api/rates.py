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
        self.depths = DepthRates(window)

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

    def churn_rates(self) -> dict[str, object]:
        """RabbitMQ's overview ``churn_rates`` for connections and channels (opened/closed)."""
        latest = self._samples[-1][1] if self._samples else {}
        churn: dict[str, object] = {}
        for shown, counter in (("connection_created", "connections_opened"), ("connection_closed", "connections_closed"),
                               ("channel_created", "channels_opened"), ("channel_closed", "channels_closed")):
            churn[shown] = latest.get(counter, 0)
            churn[f"{shown}_details"] = {"rate": self.rate(counter)}
        return churn

    def message_stats(self, keys: tuple[str, ...] = RATE_KEYS) -> dict[str, object]:
        """RabbitMQ's ``message_stats``: each counter plus ``<key>_details: {"rate": r}``."""
        latest = self._samples[-1][1] if self._samples else {}
        stats: dict[str, object] = {}
        for key in keys:
            stats[key] = latest.get(key, 0)
            stats[f"{key}_details"] = {"rate": self.rate(key)}
        return stats


Depths = dict[tuple[str, str], tuple[int, int, int]]  # (vhost, queue) -> (messages, ready, unacked)
DEPTH_KEYS = ("messages", "messages_ready", "messages_unacknowledged")


class DepthRates:
    """How fast each queue's depth changes (RabbitMQ's ``messages_details.rate`` and friends).

    Holds three snapshots, whatever the number of queues: checkpoints taken ``window`` seconds
    apart (the older one is the baseline, between one and two windows old once the node has run
    that long) and the latest sample; a rate is the slope from the baseline to the latest
    sample (positive: the queue grows)."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._checkpoints: deque[tuple[float, Depths]] = deque(maxlen=2)
        self._last: tuple[float, Depths] | None = None

    def sample(self, now: float, depths: Depths) -> None:
        self._last = (now, dict(depths))
        if not self._checkpoints or now - self._checkpoints[-1][0] >= self.window:
            self._checkpoints.append(self._last)

    def totals_details(self, vhost: str | None = None) -> dict[str, dict[str, float]]:
        """The same rates summed over every queue (of one vhost, when given): RabbitMQ's
        ``queue_totals`` in the overview and the vhost objects."""
        rates = [0.0, 0.0, 0.0]
        if self._checkpoints and self._last is not None and self._last[0] > self._checkpoints[0][0]:
            base_time, base = self._checkpoints[0]
            elapsed = self._last[0] - base_time
            for depths, sign in ((self._last[1], 1), (base, -1)):
                for (queue_vhost, _name), values in depths.items():
                    if vhost is None or queue_vhost == vhost:
                        for i, value in enumerate(values):
                            rates[i] += sign * value
            rates = [round(r / elapsed, 2) for r in rates]
        return {f"{key}_details": {"rate": rate} for key, rate in zip(DEPTH_KEYS, rates, strict=True)}

    def details(self, vhost: str, queue: str) -> dict[str, dict[str, float]]:
        """``{"messages_details": {"rate": r}, ...}`` for one queue (0.0 until it was sampled)."""
        rates = [0.0, 0.0, 0.0]
        if self._checkpoints and self._last is not None and self._last[0] > self._checkpoints[0][0]:
            base_time, base = self._checkpoints[0]
            # a queue the baseline does not know was created since, empty
            before, after = base.get((vhost, queue), (0, 0, 0)), self._last[1].get((vhost, queue))
            if after is not None:
                elapsed = self._last[0] - base_time
                rates = [round((a - b) / elapsed, 2) for a, b in zip(after, before, strict=True)]
        return {f"{key}_details": {"rate": rate} for key, rate in zip(DEPTH_KEYS, rates, strict=True)}


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
