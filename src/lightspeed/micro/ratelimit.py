"""A per-client token bucket for the one thing anyone can ask for free: a new allowance.

Creating an allowance costs the server an invoice on its node and about 5 KB in its store
before anything is paid, so one client must not be able to create them as fast as it can
send requests. Time is an input (``now``), as everywhere below ``node``.

Clients are keyed by remote address; IPv6 addresses by their /64 prefix (one subscriber
usually holds a whole /64). Memory is bounded: past ``max_clients`` the least recently seen
client's bucket is dropped (it starts again full), so an attacker needs that many addresses
to wipe a throttled client's record.
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
    """``burst`` requests at once, then one more every ``interval`` seconds, per client."""

    burst: int
    interval: float
    max_clients: int = 100_000
    _buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        if self.burst < 1 or self.interval <= 0 or self.max_clients < 1:
            raise UsageError("rate limit: burst and max_clients must be >= 1, interval > 0")

    def take(self, key: str, now: float) -> float:
        """Take one request from ``key``'s bucket: 0.0 if allowed, else the seconds to wait."""
        tokens, at = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) / self.interval)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) * self.interval
        self._buckets[key] = (tokens, now)  # the most recently seen goes last
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait
