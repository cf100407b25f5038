"""AMP (atomic multi-path payments) as LND does them: XOR shares of a root seed, one hash per shard.

The sender draws a random ``root`` and splits it into shares whose XOR is the root. Shard
``i`` carries ``(root_share = share_i, set_id, child_index = i)`` in onion record 14 and pays
the hash of its own preimage::

    child_preimage = SHA256(root || share_i || be32(child_index))
    payment_hash   = SHA256(child_preimage)

The payee can compute the root, hence any preimage, only once it holds every share, so it
cannot settle a part of the payment: settlement is atomic. A spontaneous AMP payment needs no
invoice. Feature bits 30/31 (``amp``, as LND assigns them).

A failed shard's share is not lost: the retry carries the same share (split further if the
retry uses several shards), with fresh child indices, so the XOR still gives the root.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lightspeed.codec.tlv import decode_tu, encode_tu
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, UsageError

AMP_RECORD_TYPE = 14
AMP_FEATURE_BITS = (30, 31)


def xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(32, "big")


@dataclass(frozen=True)
class AmpRecord:
    """Onion record 14: ``root_share`` (32), ``set_id`` (32), ``child_index`` (tu32)."""

    root_share: bytes
    set_id: bytes
    child_index: int

    def to_bytes(self) -> bytes:
        if len(self.root_share) != 32 or len(self.set_id) != 32 or not 0 <= self.child_index < 1 << 32:
            raise UsageError("amp: root_share and set_id are 32 bytes, child_index a u32")
        return self.root_share + self.set_id + encode_tu(self.child_index)

    @classmethod
    def from_bytes(cls, data: bytes) -> AmpRecord:
        if not 64 <= len(data) <= 68:
            raise DecodeError("amp", f"{len(data)} bytes, expected 64 to 68")
        return cls(data[:32], data[32:64], decode_tu(data[64:], 4, "amp.child_index"))


def child_preimage(root: bytes, share: bytes, child_index: int) -> bytes:
    return sha256(root + share + child_index.to_bytes(4, "big"))


def split(secret: bytes, parts: int) -> list[bytes]:
    """``parts`` random-looking shares whose XOR is ``secret``."""
    if parts < 1:
        raise UsageError("parts: at least one")
    shares = [os.urandom(32) for _ in range(parts - 1)]
    last = secret
    for share in shares:
        last = xor(last, share)
    return [*shares, last]


def combine(shares: list[bytes]) -> bytes:
    root = bytes(32)
    for share in shares:
        root = xor(root, share)
    return root


@dataclass(frozen=True)
class AmpShard:
    record: AmpRecord
    preimage: bytes

    @property
    def payment_hash(self) -> bytes:
        return sha256(self.preimage)


@dataclass
class AmpPayment:
    """The sender's side of one AMP payment: hands out shards, takes failed shares back."""

    root: bytes
    set_id: bytes
    next_index: int = 0

    @classmethod
    def new(cls) -> AmpPayment:
        return cls(os.urandom(32), os.urandom(32))

    def shards(self, count: int) -> list[AmpShard]:
        """The first shards of the payment: their shares XOR to the root."""
        return self.reshard(self.root, count)

    def reshard(self, share: bytes, count: int) -> list[AmpShard]:
        """Shards that together carry ``share`` (a failed shard's, for its retry)."""
        out = []
        for part in split(share, count):
            index = self.next_index
            self.next_index += 1
            record = AmpRecord(part, self.set_id, index)
            out.append(AmpShard(record, child_preimage(self.root, part, index)))
        return out
