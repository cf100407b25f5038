"""BOLT 11 tagged fields: their type numbers, raw form, and the structured values some carry."""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.bitcoin.address import p2pkh_address, p2sh_address, segwit_address
from lightspeed.bitcoin.network import Network
from lightspeed.codec.bech32 import CHARSET

# BOLT #11: tagged field types (5-bit), named by their bech32 character.
TAG_PAYMENT_HASH = 1  # p
TAG_ROUTE_HINT = 3  # r
TAG_FEATURES = 5  # 9
TAG_EXPIRY = 6  # x
TAG_FALLBACK = 9  # f
TAG_DESCRIPTION = 13  # d
TAG_PAYMENT_SECRET = 16  # s
TAG_PAYEE = 19  # n
TAG_DESCRIPTION_HASH = 23  # h
TAG_MIN_FINAL_CLTV_EXPIRY = 24  # c
TAG_METADATA = 27  # m

KNOWN_TAGS = frozenset({
    TAG_PAYMENT_HASH, TAG_ROUTE_HINT, TAG_FEATURES, TAG_EXPIRY, TAG_FALLBACK,
    TAG_DESCRIPTION, TAG_PAYMENT_SECRET, TAG_PAYEE, TAG_DESCRIPTION_HASH,
    TAG_MIN_FINAL_CLTV_EXPIRY, TAG_METADATA,
})

# BOLT #11: fixed data_length (in 5-bit words) of p, h, s and n.
FIXED_LENGTH_WORDS = {
    TAG_PAYMENT_HASH: 52,
    TAG_DESCRIPTION_HASH: 52,
    TAG_PAYMENT_SECRET: 52,
    TAG_PAYEE: 53,
}

DEFAULT_EXPIRY = 3600
DEFAULT_MIN_FINAL_CLTV_EXPIRY = 18
MAX_FIELD_WORDS = 1023  # data_length is 10 bits

FALLBACK_P2PKH = 17
FALLBACK_P2SH = 18

ROUTE_HINT_HOP_BYTES = 51  # 33 pubkey + 8 scid + 4 + 4 + 2


def tag_letter(tag: int) -> str:
    return CHARSET[tag]


def tag_from_letter(letter: str) -> int:
    index = CHARSET.find(letter)
    if len(letter) != 1 or index < 0:
        raise ValueError(f"{letter!r} is not a bech32 character")
    return index


@dataclass(frozen=True)
class TaggedField:
    """One tagged field exactly as it appears on the wire.

    ``data`` is the field's 5-bit words as bech32 characters (``data_length`` is
    ``len(data)``). Keeping every field in this form, in order, is what makes
    decode-then-encode lossless, including fields a reader must skip.
    """

    tag: int
    data: str

    @property
    def letter(self) -> str:
        return CHARSET[self.tag]


@dataclass(frozen=True)
class RouteHintHop:
    """One hop of an ``r`` field: the channel from ``pubkey`` towards the payee."""

    pubkey: bytes
    short_channel_id: int
    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int

    def to_bytes(self) -> bytes:
        return (
            self.pubkey
            + self.short_channel_id.to_bytes(8, "big")
            + self.fee_base_msat.to_bytes(4, "big")
            + self.fee_proportional_millionths.to_bytes(4, "big")
            + self.cltv_expiry_delta.to_bytes(2, "big")
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> RouteHintHop:
        return cls(
            pubkey=data[0:33],
            short_channel_id=int.from_bytes(data[33:41], "big"),
            fee_base_msat=int.from_bytes(data[41:45], "big"),
            fee_proportional_millionths=int.from_bytes(data[45:49], "big"),
            cltv_expiry_delta=int.from_bytes(data[49:51], "big"),
        )


def format_short_channel_id(scid: int) -> str:
    """``BLOCKxTXxOUT`` form of a 64-bit short channel id."""
    return f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}"


def parse_short_channel_id(text: str) -> int:
    parts = text.split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"short channel id {text!r} is not BLOCKxTXxOUT")
    block, tx, out = (int(p) for p in parts)
    if block >= 1 << 24 or tx >= 1 << 24 or out >= 1 << 16:
        raise ValueError(f"short channel id {text!r} is out of range")
    return block << 40 | tx << 16 | out


@dataclass(frozen=True)
class Fallback:
    """An ``f`` field: witness ``version`` 0-16 and program, or 17 (P2PKH) / 18 (P2SH) and a hash."""

    version: int
    data: bytes

    def address(self, network: Network) -> str:
        if self.version == FALLBACK_P2PKH:
            return p2pkh_address(self.data, network)
        if self.version == FALLBACK_P2SH:
            return p2sh_address(self.data, network)
        return segwit_address(self.version, self.data, network)
