"""A per-client token bucket (sans-IO: the caller passes the time).

Creating an allowance costs the server an invoice and a store row, and anyone may ask;
each client address gets ``per_minute`` of them, with bursts up to the same number.
Memory is bounded: the least recently seen clients are dropped beyond ``max_clients``
(a dropped client starts again with a full bucket, which only errs towards serving).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class RateLimiter:
    per_minute: int
    max_clients: int = 100_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)  # client -> (tokens, at)

    def take(self, client: str, now: float) -> float:
        """Spend one token of ``client``'s bucket: 0 if allowed, else seconds until one is back."""
        tokens, at = self._buckets.pop(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - at) * self.per_minute / 60)
        if tokens >= 1:
            self._buckets[client] = (tokens - 1, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1 - tokens) * 60 / self.per_minute
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
