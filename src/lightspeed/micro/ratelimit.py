"""A per-client token bucket for the one thing anyone can ask for free: a new allowance.

Creating an allowance costs the server an invoice on its node and a store row (about 5 KB)
before anything is paid, so each client gets ``per_minute`` of them, with bursts up to the
same number. Sans-IO: the caller passes the time.

Clients are keyed by remote address (:func:`client_key`); IPv6 addresses by their /64 prefix
(one subscriber usually holds a whole /64). Memory is bounded: past ``max_clients`` the least
recently seen client's bucket is dropped (it starts again full, which only errs towards
serving), so an attacker needs that many addresses to wipe a throttled client's record.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from lightspeed.errors import UsageError


def client_key(host: str | None) -> str:
    """The rate-limit key of a remote address: the address, or its /64 for IPv6."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a unix socket path or a name: as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class RateLimiter:
    per_minute: int
    max_clients: int = 100_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)  # client -> (tokens, at)

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.max_clients < 1:
            raise UsageError("rate limit: per_minute and max_clients must be at least 1")

    def take(self, client: str, now: float) -> float:
        """Spend one token of ``client``'s bucket: 0 if allowed, else seconds until one is back."""
        tokens, at = self._buckets.pop(client, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + max(0.0, now - at) * self.per_minute / 60)
        if tokens >= 1:
            self._buckets[client] = (tokens - 1, now)  # the most recently seen goes last
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1 - tokens) * 60 / self.per_minute
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
