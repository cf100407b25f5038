"""Bech32 (BIP 173) and bech32m (BIP 350) without the 90-character limit.

BOLT 11 invoices are bech32 strings that are usually longer than BIP 173's
90-character cap, so the limit is a parameter (``max_length=None`` lifts it).
Words are 5-bit integers; :func:`words_to_bytes` converts a whole word list with
one big-integer operation instead of a per-bit loop (the hot spot of the
slower Python decoders).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from lightspeed.errors import DecodeError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHAR_TO_WORD = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


class Encoding(Enum):
    """Which checksum constant a string uses."""

    BECH32 = _BECH32_CONST
    BECH32M = _BECH32M_CONST


def _polymod(values: Sequence[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _checksum(hrp: str, words: Sequence[int], encoding: Encoding) -> list[int]:
    polymod = _polymod([*_hrp_expand(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ encoding.value
    return [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]


def bech32_encode(
    hrp: str, words: Sequence[int], encoding: Encoding = Encoding.BECH32
) -> str:
    """Encode ``words`` (5-bit values) under ``hrp``; the result is lower case."""
    if any(not 0 <= w < 32 for w in words):
        raise ValueError("bech32 words must be 5-bit values")
    hrp = hrp.lower()
    return hrp + "1" + "".join(CHARSET[w] for w in [*words, *_checksum(hrp, words, encoding)])


def bech32_decode(
    text: str, max_length: int | None = 90
) -> tuple[str, list[int], Encoding]:
    """Split and verify a bech32/bech32m string: ``(hrp, data words, encoding)``.

    The checksum words are removed. Raises :class:`DecodeError` on mixed case,
    characters outside the charset, a missing separator or a bad checksum.
    """
    if max_length is not None and len(text) > max_length:
        raise DecodeError("bech32", f"longer than {max_length} characters")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise DecodeError("bech32", "contains a character outside US-ASCII 33-126")
    if text.lower() != text and text.upper() != text:
        raise DecodeError("bech32", "mixes upper and lower case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1:
        raise DecodeError("bech32", "no human-readable part before the separator '1'")
    if pos + 7 > len(text):
        raise DecodeError("bech32", "data part shorter than the 6-character checksum")
    hrp = text[:pos]
    try:
        words = [_CHAR_TO_WORD[c] for c in text[pos + 1 :]]
    except KeyError as exc:
        raise DecodeError("bech32", f"character {exc.args[0]!r} is not in the bech32 charset") from None
    const = _polymod([*_hrp_expand(hrp), *words])
    for encoding in Encoding:
        if const == encoding.value:
            return hrp, words[:-6], encoding
    raise DecodeError("bech32", "checksum does not match")


def words_to_int(words: Sequence[int]) -> int:
    """Big-endian integer value of a sequence of 5-bit words."""
    value = 0
    for w in words:
        value = value << 5 | w
    return value


def words_to_bytes(words: Sequence[int], *, pad: bool = True) -> bytes:
    """Convert 5-bit words to bytes.

    With ``pad`` (BOLT 11 tagged fields), trailing bits that do not fill a byte are
    dropped. Without it (BIP 173 segwit programs), more than 4 padding bits or
    non-zero padding raise :class:`DecodeError`.
    """
    nbits = len(words) * 5
    nbytes, extra = divmod(nbits, 8)
    value = words_to_int(words)
    if not pad:
        if extra > 4:
            raise DecodeError("bech32", "more than 4 bits of padding")
        if value & ((1 << extra) - 1):
            raise DecodeError("bech32", "non-zero padding bits")
    return (value >> extra).to_bytes(nbytes, "big")


def bytes_to_words(data: bytes) -> list[int]:
    """Convert bytes to 5-bit words, zero-padding the last word."""
    nbits = len(data) * 8
    nwords = -(-nbits // 5)
    value = int.from_bytes(data, "big") << (nwords * 5 - nbits)
    return [(value >> (5 * (nwords - 1 - i))) & 31 for i in range(nwords)]


def int_to_words(value: int, length: int | None = None) -> list[int]:
    """Big-endian 5-bit words of a non-negative integer (minimal, or exactly ``length``)."""
    if value < 0:
        raise ValueError("negative value")
    if length is None:
        length = max(1, -(-value.bit_length() // 5))
    if value >> (5 * length):
        raise ValueError(f"{value} does not fit in {length} words")
    return [(value >> (5 * (length - 1 - i))) & 31 for i in range(length)]


def encode_segwit_address(hrp: str, version: int, program: bytes) -> str:
    """BIP 173/350 address: bech32 for version 0, bech32m for versions 1-16."""
    encoding = Encoding.BECH32 if version == 0 else Encoding.BECH32M
    return bech32_encode(hrp, [version, *bytes_to_words(program)], encoding)


def decode_segwit_address(hrp: str, address: str) -> tuple[int, bytes]:
    """Decode and validate a segwit address for ``hrp``: ``(version, program)``."""
    got_hrp, words, encoding = bech32_decode(address)
    if got_hrp != hrp:
        raise DecodeError("address", f"human-readable part {got_hrp!r} is not {hrp!r}")
    if not words:
        raise DecodeError("address", "no witness version")
    version = words[0]
    if version > 16:
        raise DecodeError("address", f"witness version {version} is above 16")
    program = words_to_bytes(words[1:], pad=False)
    if not 2 <= len(program) <= 40:
        raise DecodeError("address", f"witness program of {len(program)} bytes")
    if version == 0 and len(program) not in (20, 32):
        raise DecodeError("address", "version 0 program must be 20 or 32 bytes")
    expected = Encoding.BECH32 if version == 0 else Encoding.BECH32M
    if encoding is not expected:
        raise DecodeError("address", f"witness version {version} requires {expected.name.lower()}")
    return version, program
