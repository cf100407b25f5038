"""Base58Check (legacy Bitcoin addresses: P2PKH and P2SH)."""

from __future__ import annotations

import hashlib

from lightspeed.errors import DecodeError

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def b58encode(data: bytes) -> str:
    """Plain base58 with leading zero bytes kept as '1'."""
    value = int.from_bytes(data, "big")
    out = []
    while value:
        value, rem = divmod(value, 58)
        out.append(ALPHABET[rem])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    value = 0
    for c in text:
        try:
            value = value * 58 + _INDEX[c]
        except KeyError:
            raise DecodeError("base58", f"character {c!r} is not in the base58 alphabet") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return b"\0" * zeros + body


def b58check_encode(payload: bytes) -> str:
    return b58encode(payload + _checksum(payload))


def b58check_decode(text: str) -> bytes:
    raw = b58decode(text)
    if len(raw) < 5:
        raise DecodeError("base58check", "too short")
    payload, check = raw[:-4], raw[-4:]
    if _checksum(payload) != check:
        raise DecodeError("base58check", "checksum does not match")
    return payload
