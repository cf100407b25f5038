"""The server's in-process cache of allowances: least recently used out, sized by memory.

The store stays the truth (an evicted allowance reloads, and the store's compare-and-set
catches a stale entry); the cache only saves a load per call. A FIFO bound made every call
past the bound a miss once more allowances were active than it held (each call 2-3.7x
slower past 100,000): the least recently used entry goes first here, and the bound is
bytes, so allowances with many lanes count for what they hold.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from lightspeed.errors import UsageError

V = TypeVar("V")

#: Estimated bytes of one cached allowance, measured with tracemalloc (see
#: tests/test_perf18_cache.py): the parsed terms and their invoice text, the state, the dict
#: slot; plus per lane its LaneState and two 32-byte values.
ENTRY_BYTES = 1_600
LANE_BYTES = 180
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024  # about 160,000 one-lane allowances


def entry_bytes(lanes: int) -> int:
    """What an allowance of ``lanes`` lanes is counted for against the cache's budget."""
    return ENTRY_BYTES + LANE_BYTES * lanes


class LruCache(Generic[V]):
    """Keys to values, evicting the least recently used past ``max_bytes`` or ``max_entries``.

    Each value is put with its size in bytes (an estimate: :func:`entry_bytes`).
    """

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES, max_entries: int | None = None) -> None:
        if max_bytes < 1 or (max_entries is not None and max_entries < 1):
            raise UsageError("cache_bytes and max_cached: must be at least 1")
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self.bytes = 0
        self._items: OrderedDict[bytes, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: bytes) -> bool:
        return key in self._items

    def get(self, key: bytes) -> V | None:
        """The value, now the most recently used; ``None`` if absent."""
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[0]

    def put(self, key: bytes, value: V, size: int) -> None:
        """Insert (or replace) as the most recently used, then evict down to the bounds."""
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self._items[key] = (value, size)
        self.bytes += size
        while len(self._items) > 1 and (self.bytes > self.max_bytes or (
                self.max_entries is not None and len(self._items) > self.max_entries)):
            _, (_, evicted) = self._items.popitem(last=False)
            self.bytes -= evicted

    def pop(self, key: bytes) -> V | None:
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]
