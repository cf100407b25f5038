"""Compact storage of the counterparty's revealed per-commitment secrets (BOLT 3 "shachain").

The peer reveals one secret per revoked commitment, 2^48 of them over a
channel's life. Because each secret at index ``I`` can derive every secret whose
index extends ``I``'s trailing-zero prefix, 49 entries suffice to re-derive all
of them: bucket ``b`` holds the latest secret whose index has exactly ``b``
trailing zeros. A new secret must derive every secret it replaces; if it does
not, the peer lied (or our storage is corrupt) and the insert is refused
without changing the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lightspeed.crypto.keys import MAX_INDEX, derive_secret
from lightspeed.errors import DecodeError

BUCKETS = 49
_ENTRY_LEN = 1 + 6 + 32


class ShachainError(DecodeError):
    """A revealed per-commitment secret is inconsistent with those already received."""


def _bucket(index: int) -> int:
    """BOLT 3 ``where_to_put_secret``: number of trailing zero bits (48 for index 0)."""
    if index == 0:
        return 48
    return (index & -index).bit_length() - 1


@dataclass
class ShachainStore:
    """Up to 49 ``(index, secret)`` entries; secrets must arrive at 2^48-1, 2^48-2, ... in turn."""

    _known: list[tuple[int, bytes] | None] = field(default_factory=lambda: [None] * BUCKETS)
    next_index: int = MAX_INDEX
    # serialize()'s bytes until the next insert: the store writes them at every channel save.
    _serialized: bytes | None = field(default=None, compare=False, repr=False)

    def insert(self, index: int, secret: bytes) -> None:
        """Store the secret revealed for ``index``; raise :class:`ShachainError` if it is wrong."""
        where = f"per_commitment_secret {index}"
        if len(secret) != 32:
            raise ShachainError(where, "must be 32 bytes")
        if index != self.next_index:
            raise ShachainError(where, f"expected index {self.next_index} next")
        self._insert_checked(index, secret)
        self.next_index = index - 1

    def _insert_checked(self, index: int, secret: bytes) -> None:
        bucket = _bucket(index)
        # BOLT #3: for each lower bucket, the new secret MUST derive the stored one,
        # otherwise "the secret is incorrect" and the insert fails.
        for lower in range(bucket):
            known = self._known[lower]
            if known is not None and derive_secret(secret, bucket, known[0]) != known[1]:
                raise ShachainError(
                    f"per_commitment_secret {index}",
                    f"does not derive the secret already received for index {known[0]}",
                )
        self._known[bucket] = (index, secret)
        self._serialized = None

    def get(self, index: int) -> bytes | None:
        """The secret for ``index`` if it was revealed (derived from a stored entry), else ``None``."""
        if not 0 <= index <= MAX_INDEX or index <= self.next_index:
            return None
        for bucket, known in enumerate(self._known):
            if known is not None and (index >> bucket) << bucket == known[0]:
                return derive_secret(known[1], bucket, index)
        return None  # unreachable for a consistent store

    def __len__(self) -> int:
        """Number of stored entries (at most 49)."""
        return sum(1 for known in self._known if known is not None)

    def serialize(self) -> bytes:
        """``count`` then ``bucket(1) || index(6) || secret(32)`` per entry, buckets ascending."""
        if self._serialized is not None:
            return self._serialized
        entries = [(b, k) for b, k in enumerate(self._known) if k is not None]
        out = bytearray([len(entries)])
        for bucket, (index, secret) in entries:
            out += bytes([bucket]) + index.to_bytes(6, "big") + secret
        self._serialized = bytes(out)
        return self._serialized

    @classmethod
    def parse(cls, data: bytes) -> ShachainStore:
        """Inverse of :meth:`serialize`; re-checks every entry, so a corrupt record is refused."""
        if not data:
            raise DecodeError("shachain", "empty record")
        count = data[0]
        if count > BUCKETS or len(data) != 1 + count * _ENTRY_LEN:
            raise DecodeError("shachain", f"record length {len(data)} does not fit {count} entries")
        entries: list[tuple[int, bytes]] = []
        for k in range(count):
            pos = 1 + k * _ENTRY_LEN
            bucket = data[pos]
            index = int.from_bytes(data[pos + 1 : pos + 7], "big")
            if bucket >= BUCKETS or _bucket(index) != bucket:
                raise DecodeError(
                    "shachain", f"entry {k}: index {index} does not belong in bucket {bucket}"
                )
            entries.append((index, bytes(data[pos + 7 : pos + _ENTRY_LEN])))
        store = cls()
        if not entries:
            return store
        lowest = min(index for index, _ in entries)
        if sorted(index for index, _ in entries) != sorted(_expected_indices(lowest)):
            raise DecodeError(
                "shachain", "entries are not those a store holds after a full sequence"
            )
        for index, secret in sorted(entries, reverse=True):
            store._insert_checked(index, secret)
        store.next_index = lowest - 1
        return store


def _expected_indices(lowest: int) -> list[int]:
    """Indices a store holds after receiving every secret from 2^48-1 down to ``lowest``."""
    result = []
    for bucket in range(BUCKETS):
        step = 1 << bucket
        # Smallest index >= lowest whose lowest set bit is exactly `bucket`.
        candidate = -(-lowest // step) * step
        if bucket < 48 and not (candidate >> bucket) & 1:
            candidate += step
        if bucket == 48:
            candidate = 0 if lowest == 0 else -1
        if 0 <= candidate <= MAX_INDEX and _bucket(candidate) == bucket:
            result.append(candidate)
    return result
