"""The amount in the human-readable part: digits and an optional multiplier, in bitcoin."""

from __future__ import annotations

import re

from lightspeed.errors import DecodeError

MSAT_PER_BTC = 100_000_000_000
# msat per unit of each multiplier; "p" (pico-BTC) is a tenth of a msat.
_MSAT_PER_UNIT = {"": MSAT_PER_BTC, "m": 100_000_000, "u": 100_000, "n": 100}
_AMOUNT = re.compile(r"([0-9]+)([munp]?)")


def parse_amount(text: str) -> int:
    """Amount part of the hrp (``"2500u"``) in millisatoshi."""
    match = _AMOUNT.fullmatch(text)
    if match is None:
        # BOLT #11: if amount contains a non-digit OR is followed by anything except a
        # multiplier: MUST fail the payment.
        raise DecodeError("amount", f"{text!r} is not digits followed by an optional multiplier m, u, n or p")
    digits, multiplier = match.groups()
    if digits[0] == "0":
        # BOLT #11: a writer MUST encode amount as a positive decimal integer with no leading 0s.
        raise DecodeError("amount", f"{digits!r} is not a positive integer without leading zeros")
    value = int(digits)
    if multiplier == "p":
        # BOLT #11: if multiplier is `p` and the last decimal of amount is not 0: MUST fail.
        if value % 10:
            raise DecodeError("amount", f"{text!r} is a sub-millisatoshi amount (pico amount not ending in 0)")
        return value // 10
    return value * _MSAT_PER_UNIT[multiplier]


def format_amount(amount_msat: int) -> str:
    """Shortest hrp amount for ``amount_msat`` (BOLT #11: SHOULD use the largest multiplier)."""
    if amount_msat <= 0:
        raise ValueError("an invoice amount must be positive")
    for multiplier in ("", "m", "u", "n"):
        unit = _MSAT_PER_UNIT[multiplier]
        if amount_msat % unit == 0:
            return f"{amount_msat // unit}{multiplier}"
    return f"{amount_msat * 10}p"
