"""Feature bits in invoices (the ``9`` field), with the BOLT 9 names.

An even bit is required, an odd bit optional ("it's OK to be odd"). The reader
fails on an unknown even bit, so :data:`UNDERSTOOD` is what this implementation
can honour when paying, not merely what it can name.
"""

from __future__ import annotations

from collections.abc import Iterable

# BOLT #9 feature names (the pair's even bit), plus LND's AMP (30/31).
FEATURE_NAMES: dict[int, str] = {
    0: "option_data_loss_protect",
    4: "option_upfront_shutdown_script",
    6: "gossip_queries",
    8: "var_onion_optin",
    10: "gossip_queries_ex",
    12: "option_static_remotekey",
    14: "payment_secret",
    16: "basic_mpp",
    18: "option_support_large_channel",
    22: "option_anchors",
    24: "option_route_blinding",
    26: "option_shutdown_anysegwit",
    28: "option_dual_fund",
    30: "amp",
    34: "option_quiesce",
    36: "option_attribution_data",
    38: "option_onion_messages",
    42: "option_provide_storage",
    44: "option_channel_type",
    46: "option_scid_alias",
    48: "option_payment_metadata",
    50: "option_zeroconf",
    60: "option_simple_close",
    62: "option_splice",
}
_BIT_BY_NAME = {name: bit for bit, name in FEATURE_NAMES.items()}

# Features an invoice may carry that a Lightspeed payer understands (both bits of each pair).
# option_route_blinding (24/25): BOLT 11 carries no blinded path, so an invoice requiring it is
# paid over a normal route by a payer that supports route blinding (node.pay checks ours).
UNDERSTOOD = frozenset({8, 9, 14, 15, 16, 17, 24, 25, 30, 31, 48, 49})


def feature_name(bit: int) -> str:
    """``payment_secret`` for 14, ``payment_secret (optional)`` for 15, ``unknown_N`` otherwise."""
    name = FEATURE_NAMES.get(bit & ~1)
    if name is None:
        return f"unknown_{bit}"
    return name if bit % 2 == 0 else f"{name} (optional)"


def feature_bit(name: str) -> int:
    """The even (required) bit of a named feature."""
    try:
        return _BIT_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown feature name {name!r}") from None


def has_feature(bits: Iterable[int], name: str) -> bool:
    """True if the feature is set, as required (even bit) or optional (odd bit)."""
    even = feature_bit(name)
    bits = set(bits)
    return even in bits or even + 1 in bits


def unknown_even_bits(bits: Iterable[int]) -> list[int]:
    return sorted(b for b in bits if b % 2 == 0 and b not in UNDERSTOOD)


def bits_to_int(bits: Iterable[int]) -> int:
    value = 0
    for b in bits:
        value |= 1 << b
    return value


def int_to_bits(value: int) -> frozenset[int]:
    return frozenset(i for i in range(value.bit_length()) if (value >> i) & 1)
