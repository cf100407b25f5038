"""z-base-32 (Zooko's human-oriented base-32): how LND and Core Lightning print signed messages.

Bits are taken most significant first, 5 at a time; the last group is padded with zero bits.
There is no padding character and no checksum.
"""

from __future__ import annotations

from lightspeed.errors import DecodeError

ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"
_VALUES = {c: i for i, c in enumerate(ALPHABET)}


def encode(data: bytes) -> str:
    bits = len(data) * 8
    number = int.from_bytes(data, "big") << (-bits % 5)
    groups = (bits + 4) // 5
    return "".join(ALPHABET[(number >> (5 * (groups - 1 - i))) & 31] for i in range(groups))


def decode(text: str, field: str = "zbase32") -> bytes:
    """The whole bytes ``text`` encodes; the leftover bits (fewer than 8) must be zero."""
    number = 0
    for position, char in enumerate(text):
        value = _VALUES.get(char)
        if value is None:
            raise DecodeError(field, f"character {char!r} at {position} is not z-base-32")
        number = number << 5 | value
    bits = len(text) * 5
    extra = bits % 8
    if number & ((1 << extra) - 1):
        raise DecodeError(field, "has non-zero padding bits")
    if extra >= 5:  # a whole 5-bit group of padding: not what encode() writes
        raise DecodeError(field, "has a superfluous trailing character")
    return (number >> extra).to_bytes(bits // 8, "big")
