"""BOLT 9 feature bits: names, contexts, dependencies, and ``init`` negotiation.

A feature is a pair of bits: the even one means "required", the odd one
"supported" ("it's OK to be odd"). :class:`Features` is an immutable set of bit
numbers with conversions to and from the big-endian byte fields of ``init``,
``node_announcement`` and invoices.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lightspeed.errors import PeerProtocolError

# name: (even bit, contexts from BOLT 9's table, names it depends on)
FEATURES: dict[str, tuple[int, str, tuple[str, ...]]] = {
    "option_data_loss_protect": (0, "", ()),
    "option_upfront_shutdown_script": (4, "IN", ()),
    "gossip_queries": (6, "", ()),
    "var_onion_optin": (8, "", ()),
    "gossip_queries_ex": (10, "IN", ()),
    "option_static_remotekey": (12, "", ()),
    "payment_secret": (14, "", ()),
    "basic_mpp": (16, "IN9", ("payment_secret",)),
    "option_support_large_channel": (18, "IN", ()),
    "option_anchors": (22, "INT", ()),
    "option_route_blinding": (24, "IN9", ()),
    "option_shutdown_anysegwit": (26, "IN", ()),
    "option_dual_fund": (28, "IN", ()),
    "option_quiesce": (34, "IN", ()),
    "option_attribution_data": (36, "IN9", ()),
    "option_onion_messages": (38, "IN", ()),
    "option_provide_storage": (42, "IN", ()),
    "option_channel_type": (44, "", ()),
    "option_scid_alias": (46, "INT", ()),
    "option_payment_metadata": (48, "9", ()),
    "option_zeroconf": (50, "INT", ("option_scid_alias",)),
    "option_simple_close": (60, "IN", ("option_shutdown_anysegwit",)),
    "option_splice": (62, "IN", ()),
}
NAME_BY_BIT = {bit: name for name, (bit, _, _) in FEATURES.items()}


def bit_of(name: str) -> int:
    try:
        return FEATURES[name][0]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}") from None


@dataclass(frozen=True)
class Features:
    """A set of feature bits (even: required, odd: supported)."""

    bits: frozenset[int] = frozenset()

    @classmethod
    def of(cls, required: Iterable[str] = (), optional: Iterable[str] = ()) -> Features:
        return cls(frozenset({bit_of(n) for n in required} | {bit_of(n) + 1 for n in optional}))

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        value = int.from_bytes(data, "big")
        return cls(frozenset(i for i in range(value.bit_length()) if (value >> i) & 1))

    def to_bytes(self) -> bytes:
        """Big-endian, minimal length (BOLT 1: SHOULD use the minimum length)."""
        value = 0
        for bit in self.bits:
            value |= 1 << bit
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    def supports(self, name: str) -> bool:
        bit = bit_of(name)
        return bit in self.bits or bit + 1 in self.bits

    def requires(self, name: str) -> bool:
        return bit_of(name) in self.bits

    def __or__(self, other: Features) -> Features:
        return Features(self.bits | other.bits)

    def missing_dependencies(self) -> list[tuple[str, str]]:
        """(feature, dependency) pairs where a set feature lacks a feature it depends on."""
        missing: list[tuple[str, str]] = []
        for name, (_, _, deps) in FEATURES.items():
            if self.supports(name):
                missing.extend((name, dep) for dep in deps if not self.supports(dep))
        return missing


def negotiate(local: Features, globalfeatures: bytes, features: bytes) -> Features:
    """Check a peer's ``init`` features against ours; returns the features both support.

    BOLT #1: the receiving node MUST combine (bitwise OR) the two feature bitmaps;
    upon receiving unknown even feature bits: MUST close the connection; if the
    feature vector does not set all known, transitive dependencies: MUST close.
    """
    remote = Features.from_bytes(globalfeatures) | Features.from_bytes(features)
    ours = {bit & ~1 for bit in local.bits}
    unsupported = sorted(bit for bit in remote.bits if bit % 2 == 0 and bit not in ours)
    if unsupported:
        names = ", ".join(f"{b} ({NAME_BY_BIT.get(b, 'unknown')})" for b in unsupported)
        raise PeerProtocolError(f"peer requires feature bits we do not support: {names}")
    missing = remote.missing_dependencies()
    if missing:
        feature, dep = missing[0]
        raise PeerProtocolError(f"peer sets {feature} without its dependency {dep}")
    common = {pair for pair in {b & ~1 for b in remote.bits} if pair in ours}
    return Features(frozenset(b for b in local.bits if b & ~1 in common))
