"""BOLT 9 feature bits: names, contexts, dependencies, and ``init`` negotiation.

A feature is a pair of bits: the even one means "required", the odd one
"supported" ("it's OK to be odd"). :class:`Features` is an immutable set of bit
numbers with conversions to and from the big-endian byte fields of ``init``,
``node_announcement``, ``channel_announcement``, ``channel_type`` and invoices.
This table is the reference one for the package (the invoice code keeps a
small private copy of the bits it needs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lightspeed.errors import DecodeError, PeerProtocolError


@dataclass(frozen=True)
class FeatureInfo:
    """One row of BOLT 9's table (at commit a3772650)."""

    name: str
    bit: int  # the even (compulsory) bit; bit + 1 is the optional one
    contexts: str  # letters from I, N, C, 9, B, T; empty for ASSUMED features
    depends: tuple[str, ...] = ()
    assumed: bool = False


# BOLT #9 table, in bit order. ASSUMED features have no context column: every node
# has them, and they "can be safely ignored".
_TABLE = (
    FeatureInfo("option_data_loss_protect", 0, "", assumed=True),
    FeatureInfo("option_upfront_shutdown_script", 4, "IN"),
    FeatureInfo("gossip_queries", 6, ""),
    FeatureInfo("var_onion_optin", 8, "", assumed=True),
    FeatureInfo("gossip_queries_ex", 10, "IN"),
    FeatureInfo("option_static_remotekey", 12, "", assumed=True),
    FeatureInfo("payment_secret", 14, "", assumed=True),
    FeatureInfo("basic_mpp", 16, "IN9", ("payment_secret",)),
    FeatureInfo("option_support_large_channel", 18, "IN"),
    FeatureInfo("option_anchors", 22, "INT"),
    FeatureInfo("option_route_blinding", 24, "IN9"),
    FeatureInfo("option_shutdown_anysegwit", 26, "IN"),
    FeatureInfo("option_dual_fund", 28, "IN"),
    FeatureInfo("option_quiesce", 34, "IN"),
    FeatureInfo("option_attribution_data", 36, "IN9"),
    FeatureInfo("option_onion_messages", 38, "IN"),
    FeatureInfo("option_provide_storage", 42, "IN"),
    FeatureInfo("option_channel_type", 44, "", assumed=True),
    FeatureInfo("option_scid_alias", 46, "INT"),
    FeatureInfo("option_payment_metadata", 48, "9"),
    FeatureInfo("option_zeroconf", 50, "INT", ("option_scid_alias",)),
    FeatureInfo("option_simple_close", 60, "IN", ("option_shutdown_anysegwit",)),
    FeatureInfo("option_splice", 62, "IN"),
)
FEATURES: dict[str, FeatureInfo] = {info.name: info for info in _TABLE}
NAME_BY_BIT: dict[int, str] = {info.bit: info.name for info in _TABLE}
#: Even bits of the features BOLT 9 marks ASSUMED: every node has them.
ASSUMED: frozenset[int] = frozenset(info.bit for info in _TABLE if info.assumed)
CONTEXTS = frozenset("INC9BT")


def bit_of(name: str) -> int:
    """The even bit of a named feature; KeyError for a name BOLT 9 does not define."""
    try:
        return FEATURES[name].bit
    except KeyError:
        raise KeyError(f"unknown feature {name!r}") from None


def _closure(names: Iterable[str]) -> set[str]:
    """The names plus all their transitive dependencies."""
    result: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in result:
            result.add(name)
            todo.extend(FEATURES[name].depends)
    return result


@dataclass(frozen=True)
class Features:
    """A set of feature bits (even: required, odd: supported)."""

    bits: frozenset[int] = frozenset()

    @classmethod
    def of(cls, required: Iterable[str] = (), optional: Iterable[str] = (), *, with_dependencies: bool = False) -> Features:
        """Features by name. ``with_dependencies`` adds missing transitive dependencies as optional."""
        required, optional = set(required), set(optional)
        if with_dependencies:
            optional = (_closure(required | optional) - required) | optional
        return cls(frozenset({bit_of(n) for n in required} | {bit_of(n) + 1 for n in optional}))

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        """Parse a big-endian feature field (bit 0 is the least significant bit of the last byte)."""
        binary = bin(int.from_bytes(data, "big"))[:1:-1]  # little-endian digit string, no "0b"
        return cls(frozenset(i for i, digit in enumerate(binary) if digit == "1"))

    def to_bytes(self) -> bytes:
        """Big-endian, minimal length (BOLT 1: SHOULD use the minimum length)."""
        value = sum(1 << bit for bit in self.bits)
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    def supports(self, name: str) -> bool:
        bit = bit_of(name)
        return bit in self.bits or bit + 1 in self.bits

    def requires(self, name: str) -> bool:
        """BOLT #9: if both bits of a pair are set, the feature is treated as mandatory."""
        return bit_of(name) in self.bits

    def names(self) -> list[str]:
        """Names of the known features set (either bit), in bit order."""
        return [NAME_BY_BIT[pair] for pair in sorted({b & ~1 for b in self.bits}) if pair in NAME_BY_BIT]

    def unknown_required(self) -> list[int]:
        """Even bits BOLT 9 does not assign."""
        return sorted(b for b in self.bits if b % 2 == 0 and b not in NAME_BY_BIT)

    def for_context(self, context: str) -> Features:
        """The bits of known features that belong in a field of ``context`` (I, N, C, 9, B or T).

        BOLT #9: MUST NOT set feature bits in fields not specified by the table. ASSUMED
        features are kept: older peers still look for them (LND and Core Lightning set them
        in node_announcement too).
        """
        return Features(frozenset(b for b in self.bits if (b & ~1) in NAME_BY_BIT and (
            FEATURES[NAME_BY_BIT[b & ~1]].assumed or context in FEATURES[NAME_BY_BIT[b & ~1]].contexts)))

    def __or__(self, other: Features) -> Features:
        return Features(self.bits | other.bits)

    def __and__(self, other: Features) -> Features:
        return Features(self.bits & other.bits)

    def missing_dependencies(self) -> list[tuple[str, str]]:
        """(feature, dependency) pairs where a set feature lacks one of its transitive dependencies."""
        missing: list[tuple[str, str]] = []
        for name in self.names():
            missing.extend((name, dep) for dep in sorted(_closure(FEATURES[name].depends)) if not self.supports(dep))
        return missing

    def check(self, context: str, field: str = "features") -> None:
        """Validate a feature field we received in ``context`` (one of I, N, C, 9, B, T).

        Raises DecodeError for: both bits of a pair set where the origin "MUST NOT set both
        the optional and mandatory bits"; a known feature in a field its Context column does
        not list ("MUST NOT set feature bits in fields not specified by the table"); a missing
        dependency ("MUST set all transitive feature dependencies"). ASSUMED features are
        accepted anywhere, since senders still set them for older peers.
        """
        if context not in CONTEXTS or len(context) != 1:
            raise ValueError(f"unknown feature context {context!r}")
        both = sorted(b for b in self.bits if b % 2 == 0 and b + 1 in self.bits)
        if both:
            raise DecodeError(field, f"both bits of feature pair {both[0]}/{both[0] + 1} are set")
        for name in self.names():
            info = FEATURES[name]
            if not info.assumed and info.contexts and context not in info.contexts:
                raise DecodeError(field, f"{name} is not allowed in context {context}")
        missing = self.missing_dependencies()
        if missing:
            raise DecodeError(field, f"{missing[0][0]} is set without its dependency {missing[0][1]}")


def negotiate(local: Features, globalfeatures: bytes | Features, features: bytes = b"") -> Features:
    """Check a peer's ``init`` features against ours; returns the features negotiated.

    Pass the remote ``init``'s two fields, or one already combined :class:`Features`.
    BOLT #1: the receiving node MUST combine (bitwise OR) the two feature bitmaps;
    upon receiving unknown even feature bits that are non-zero: MUST close the
    connection; if the feature vector does not set all known, transitive
    dependencies: MUST close the connection. Raises PeerProtocolError then, naming
    the bits. A known feature the peer requires and we do not implement ends the
    connection too (we could not honour it).

    ASSUMED features (BOLT #9: "ASSUMED to be present by all nodes, and can be safely
    ignored") are never a reason to refuse: a peer may require them (Electrum and LND
    require option_data_loss_protect) and a peer that leaves them out still has them,
    also as a dependency (basic_mpp without payment_secret).

    BOLT #1: a feature is *negotiated* if either both peers offered it, or the local
    node offered it as even. The result holds our bits of every negotiated feature,
    ASSUMED ones included.
    """
    if isinstance(globalfeatures, Features):
        remote = globalfeatures | Features.from_bytes(features)
    else:
        remote = Features.from_bytes(globalfeatures) | Features.from_bytes(features)
    ours = {bit & ~1 for bit in local.bits}
    required = sorted(bit for bit in remote.bits if bit % 2 == 0 and bit not in ours and bit not in ASSUMED)
    if required:
        names = ", ".join(f"{b} ({NAME_BY_BIT.get(b, 'unknown')})" for b in required)
        raise PeerProtocolError(f"peer requires feature bits we do not support: {names}")
    missing = [(f, dep) for f, dep in remote.missing_dependencies() if FEATURES[dep].bit not in ASSUMED]
    if missing:
        feature, dep = missing[0]
        raise PeerProtocolError(f"peer sets {feature} without its dependency {dep}")
    offered = {b & ~1 for b in remote.bits}
    ours_required = {b for b in local.bits if b % 2 == 0}
    common = {pair for pair in ours if pair in offered or pair in ours_required or pair in ASSUMED}
    return Features(frozenset(b for b in local.bits if b & ~1 in common))
