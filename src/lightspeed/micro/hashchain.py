"""PayWord hash chains: the client's tokens and the server's one-hash check.

A lane of ``length`` links is built from a secret tip: ``h[length] = tip`` and
``h[i] = SHA256(h[i+1])``, so the anchor ``h[0]`` commits to the whole lane. The
client reveals ``h[1], h[2], ...`` in order; anyone holding ``h[j]`` can check a later
link ``h[i]`` with ``i - j`` hashes, and nobody can compute a link not yet revealed.

Walking a chain forwards means hashing backwards from the tip. :class:`ChainWalker`
does it with binary pebbling: it keeps at most ``log2(length) + 1`` links (about 31 for
a billion) and spends ``O(log length)`` hashes per link on average, instead of keeping
all links or rehashing from the tip each time. Its state is a short list, so a client
can persist it and resume.

Building a lane costs ``length`` hashes once (the anchor must be computed); that is
PayWord's price, about 0.3 µs per link here.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from lightspeed.errors import UsageError

LINK_SIZE = 32


def lane_tip(seed: bytes, lane: int) -> bytes:
    """The secret last link of ``lane``, derived from the allowance's seed."""
    if len(seed) < 16:
        raise UsageError("seed: must be at least 16 random bytes")
    return hmac.new(seed, b"lightspeed/lane" + lane.to_bytes(4, "big"), hashlib.sha256).digest()


def hash_times(value: bytes, times: int) -> bytes:
    """``SHA256`` applied ``times`` times (0 returns ``value``)."""
    sha256 = hashlib.sha256
    for _ in range(times):
        value = sha256(value).digest()
    return value


def anchor(tip: bytes, length: int) -> bytes:
    """``h[0]`` of a lane of ``length`` links ending in ``tip``."""
    return hash_times(tip, length)


def links_to(link: bytes, steps: int, expected: bytes) -> bool:
    """True if hashing ``link`` ``steps`` times gives ``expected`` (constant-time compare)."""
    return hmac.compare_digest(hash_times(link, steps), expected)


@dataclass
class ChainWalker:
    """Hands out a lane's links in increasing order, keeping ``O(log length)`` of them.

    ``pebbles`` is a stack of ``(index, link)`` with decreasing indices; the top is the
    nearest known link at or above the next one wanted. ``link(i)`` drops pebbles below
    ``i`` (skipped links), then halves the gap to ``i`` repeatedly, pushing a pebble at
    each midpoint: each link costs the hashes of one halving path, and the pebbles left
    behind serve the following links.
    """

    length: int
    pebbles: list[tuple[int, bytes]] = field(default_factory=list)
    hashes: int = 0  # hashes computed so far (for the benchmark and the tests)

    @classmethod
    def from_tip(cls, tip: bytes, length: int) -> ChainWalker:
        if length < 1:
            raise UsageError("length: a lane has at least one link")
        return cls(length=length, pebbles=[(length, tip)])

    @property
    def next_index(self) -> int:
        """The lowest index still obtainable (links below it were handed out or skipped)."""
        return self._next

    def __post_init__(self) -> None:
        self._next = 1

    def link(self, index: int) -> bytes:
        """The link at ``index``; links below it can no longer be obtained afterwards."""
        if not 1 <= index <= self.length:
            raise UsageError(f"index: {index} is outside 1..{self.length}")
        if index < self._next:
            raise UsageError(f"index: link {index} was already handed out or skipped")
        stack = self.pebbles
        while stack and stack[-1][0] < index:
            stack.pop()
        top_index, top_value = stack[-1]
        while top_index > index:
            mid = (index + top_index) // 2
            value = hash_times(top_value, top_index - mid)
            self.hashes += top_index - mid
            stack.append((mid, value))
            top_index, top_value = mid, value
        stack.pop()  # handed out: never needed again
        self._next = index + 1
        return top_value

    def skip_to(self, index: int) -> None:
        """Give up the links below ``index`` (they were spent elsewhere); never moves back."""
        self._next = max(self._next, index)

    def to_json(self) -> dict[str, object]:
        """The walker's whole state: resumable after a restart."""
        return {"length": self.length, "next": self._next,
                "pebbles": [[i, v.hex()] for i, v in self.pebbles]}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ChainWalker:
        pebbles = data["pebbles"]
        assert isinstance(pebbles, list)
        length, nxt = data["length"], data["next"]
        assert isinstance(length, int) and isinstance(nxt, int)
        walker = cls(length=length, pebbles=[(int(i), bytes.fromhex(v)) for i, v in pebbles])
        walker._next = nxt
        return walker
