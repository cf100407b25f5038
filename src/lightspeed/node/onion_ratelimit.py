"""Per-peer token buckets for incoming onion messages. Sans-IO: the caller passes the time.

BOLT #4 lets a reader rate-limit onion messages by dropping them ("MAY rate-limit messages by
dropping them"; "for spam-reduction a node may choose to ratelimit such peers"). Each message
costs us an ECDH, a ChaCha20 pass over the packet and, when relayed, upstream bandwidth, and
nothing is paid for it, so each peer gets a bucket of ``burst`` tokens refilled at
``per_second``; a message finding its peer's bucket empty is dropped and counted against that
peer only. Other peers and the peer's channel messages are never throttled. Memory is bounded
by the number of connected peers: a bucket is forgotten when its peer disconnects (it comes back
full, which only errs towards serving), and drops are counted for the latest
:data:`MAX_COUNTED_PEERS` peers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lightspeed.errors import UsageError

#: Peers whose drops are counted by id (the oldest counted goes first past this).
MAX_COUNTED_PEERS = 1000


@dataclass(frozen=True)
class OnionMessageLimits:
    """How many onion messages one peer may send: ``burst`` at once, then ``per_second``."""

    burst: int = 200
    per_second: int = 50

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_second < 1:
            raise UsageError("onion message limits: burst and per_second must be at least 1")


@dataclass
class PeerRateLimiter:
    """Token bucket per peer id; :meth:`allow` spends one token or says the message is dropped."""

    limits: OnionMessageLimits = field(default_factory=OnionMessageLimits)
    dropped: Counter[bytes] = field(default_factory=Counter)  # peer id -> messages dropped over its limit
    _buckets: dict[bytes, tuple[float, float]] = field(default_factory=dict)  # peer -> (tokens, at)

    def allow(self, peer_id: bytes, now: float) -> bool:
        """Spend one of ``peer_id``'s tokens at time ``now`` (seconds); False: drop the message."""
        burst = float(self.limits.burst)
        tokens, at = self._buckets.get(peer_id, (burst, now))
        tokens = min(burst, tokens + max(0.0, now - at) * self.limits.per_second)
        at = max(at, now)  # a clock that steps back neither refills nor re-counts the same interval
        if tokens >= 1.0:
            self._buckets[peer_id] = (tokens - 1.0, at)
            return True
        self._buckets[peer_id] = (tokens, at)
        self.dropped[peer_id] += 1
        if len(self.dropped) > MAX_COUNTED_PEERS:  # peers with fresh keys must not grow this forever
            del self.dropped[next(iter(self.dropped))]
        return False

    def forget(self, peer_id: bytes) -> None:
        """The peer disconnected: its bucket goes (its drop count stays, for the operator)."""
        self._buckets.pop(peer_id, None)
