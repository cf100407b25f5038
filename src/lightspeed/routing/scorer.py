"""A probabilistic scorer: what payment attempts taught us about channel liquidity.

Theory of operation (after LDK's ``ProbabilisticScorer`` and LND's mission control):

* A channel direction of capacity ``c`` holds some unknown liquidity ``L`` in
  ``[0, c]``. We keep bounds ``lo <= L <= hi`` per direction (keyed by
  :func:`~lightspeed.routing.graph.directed_key`). With no history the bounds are
  the capacity itself and the prior decides: *uniform* (LDK's linear model) or
  *bimodal* (density ``(x/c - 1/2)^2``: channels tend to be drained to one side).
* An attempt teaches: a hop that forwarded ``a`` had ``L >= a`` (``lo`` rises); the
  channel a hop failed to forward over had ``L < a`` (``hi`` falls); a node failure
  makes every channel leaving that node unlikely; a permanent failure bans it.
* What is learned fades: the offsets ``lo`` and ``c - hi`` halve every
  ``half_life_s``, so old knowledge turns back into the prior. Time is an input
  (``now``, unix seconds); nothing here reads a clock.
* ``P(success of a over a hop) = P(L >= a | lo <= L <= hi)``; path finding adds
  ``penalty(a, P) = base + (multiplier + a * amount_multiplier / 2^20) * -log10(P)``
  msat to the fees, so an unlikely hop costs as much as a certain but dearer one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from lightspeed.errors import DecodeError, UsageError
from lightspeed.routing.graph import DirectedChannel, directed_key


class Prior(Enum):
    """How liquidity is assumed to spread over the capacity before anything is learned."""

    UNIFORM = "uniform"
    BIMODAL = "bimodal"


@dataclass(frozen=True)
class ScoringParameters:
    """Weights of the probabilistic cost (defaults follow LDK's and LND's defaults)."""

    base_penalty_msat: int = 500  # per hop: prefers shorter routes among equals (LDK)
    base_penalty_amount_multiplier_msat: int = 8192  # per hop and 2^30 msat sent (LDK)
    liquidity_penalty_multiplier_msat: int = 30_000  # times -log10(P) (LDK)
    liquidity_penalty_amount_multiplier_msat: int = 192  # per 2^20 msat, times -log10(P) (LDK)
    cltv_risk_factor_billionths: int = 15  # amount * cltv_delta * this / 1e9 msat (LND)
    half_life_s: float = 6 * 3600.0  # learned bounds fade to the prior (LDK: 6 h)
    node_failure_half_life_s: float = 3600.0  # a failed node recovers trust (LND: 1 h)
    permanent_failure_ban_s: float = 24 * 3600.0
    unknown_capacity_msat: int = 100_000_000_000  # hint channels without capacity: 1 BTC
    prior: Prior = Prior.UNIFORM

    def __post_init__(self) -> None:
        if self.half_life_s <= 0 or self.node_failure_half_life_s <= 0:
            raise UsageError("half lives must be positive")
        if self.unknown_capacity_msat <= 0:
            raise UsageError("unknown_capacity_msat must be positive")


def success_probability(amount_msat: int, lo_msat: int, hi_msat: int, capacity_msat: int,
                        prior: Prior = Prior.UNIFORM) -> float:
    """``P(L >= amount | lo <= L <= hi)`` for liquidity ``L`` in ``[0, capacity]``."""
    if amount_msat <= lo_msat:
        return 1.0
    if amount_msat > hi_msat:
        return 0.0
    if prior is Prior.UNIFORM:
        # +1: liquidity is an integer in [lo, hi], and exactly hi still carries hi.
        return (hi_msat - amount_msat + 1) / (hi_msat - lo_msat + 1)
    # Liquidity is an integer in [lo, hi]: the density is integrated up to hi + 1, so
    # exactly hi still carries hi (as the +1 of the uniform case).
    c = float(max(capacity_msat, hi_msat) + 1)
    top = ((hi_msat + 1) / c - 0.5) ** 3
    spread = top - (lo_msat / c - 0.5) ** 3
    if spread <= 0.0:  # bounds too close for floats: fall back to the uniform answer
        return (hi_msat - amount_msat + 1) / (hi_msat - lo_msat + 1)
    return max((top - (amount_msat / c - 0.5) ** 3) / spread, 0.0)


@dataclass
class _Liquidity:
    """What one direction taught: offsets from the capacity's ends, and when."""

    min_offset_msat: int  # L >= min_offset
    max_offset_msat: int  # L <= capacity - max_offset
    updated_at: float


@dataclass(frozen=True)
class ScoreView:
    """The scorer's knowledge at one instant, in the shape path finding reads.

    ``bounds`` maps a directed key to ``(lo, capacity - hi)`` decayed to ``now``;
    ``node_probability`` is the chance a node forwards at all (after failures);
    ``banned`` holds directions not to use.
    """

    params: ScoringParameters
    bounds: dict[int, tuple[int, int]]
    node_probability: dict[bytes, float]
    banned: frozenset[int]

    def probability(self, key: int, amount_msat: int, capacity_msat: int, sender: bytes | None = None) -> float:
        """Success probability of one hop carrying ``amount_msat`` (``capacity_msat`` 0: unknown)."""
        if key in self.banned:
            return 0.0
        capacity = capacity_msat or self.params.unknown_capacity_msat
        lo, max_offset = self.bounds.get(key, (0, 0))
        p = success_probability(amount_msat, lo, capacity - max_offset, capacity, self.params.prior)
        if sender is not None:
            p *= self.node_probability.get(sender, 1.0)
        return p

    def penalty_msat(self, amount_msat: int, probability: float) -> int:
        """Extra cost of a hop, in msat; callers skip hops whose probability is 0."""
        p = self.params
        penalty = p.base_penalty_msat + (amount_msat * p.base_penalty_amount_multiplier_msat >> 30)
        if probability < 1.0:
            weight = p.liquidity_penalty_multiplier_msat + (
                amount_msat * p.liquidity_penalty_amount_multiplier_msat >> 20)
            penalty += int(weight * -math.log10(probability))
        return penalty


@dataclass
class ProbabilisticScorer:
    """Learned liquidity bounds per channel direction and failed nodes, fading over time."""

    params: ScoringParameters = field(default_factory=ScoringParameters)
    _liquidity: dict[int, _Liquidity] = field(default_factory=dict, repr=False)
    _node_failures: dict[bytes, float] = field(default_factory=dict, repr=False)
    _banned_until: dict[int, float] = field(default_factory=dict, repr=False)

    # -- what attempts teach ---------------------------------------------------------

    def channel_forwarded(self, channel: DirectedChannel, amount_msat: int, now: float) -> None:
        """``channel`` carried ``amount_msat`` (a hop upstream of the failure, or a success)."""
        record, capacity = self._record(channel, now)
        if amount_msat > capacity - record.max_offset_msat:
            record.max_offset_msat = 0  # newer evidence contradicts the upper bound: drop it
        record.min_offset_msat = max(record.min_offset_msat, min(amount_msat, capacity))

    def channel_failed(self, channel: DirectedChannel, amount_msat: int, now: float) -> None:
        """``channel`` could not carry ``amount_msat``: its liquidity is below it."""
        record, capacity = self._record(channel, now)
        hi = max(min(amount_msat - 1, capacity), 0)
        if hi < record.min_offset_msat:
            record.min_offset_msat = 0  # contradicts the lower bound: the newer fact wins
        record.max_offset_msat = max(record.max_offset_msat, capacity - hi)

    def node_failed(self, node_id: bytes, now: float) -> None:
        """``node_id`` failed as a node (offline, overloaded): avoid routing through it."""
        self._node_failures[node_id] = now

    def channel_banned(self, channel: DirectedChannel, now: float) -> None:
        """A permanent failure: do not use this direction for ``permanent_failure_ban_s``."""
        key = directed_key(channel.short_channel_id, channel.source, channel.target)
        self._banned_until[key] = now + self.params.permanent_failure_ban_s

    # -- what path finding reads -------------------------------------------------------

    def view(self, now: float) -> ScoreView:
        """Every bound decayed to ``now``; forgets what has faded away entirely."""
        bounds: dict[int, tuple[int, int]] = {}
        for key, record in list(self._liquidity.items()):
            factor = self._decay(now - record.updated_at, self.params.half_life_s)
            lo, max_offset = int(record.min_offset_msat * factor), int(record.max_offset_msat * factor)
            if lo == 0 and max_offset == 0:
                del self._liquidity[key]
                continue
            bounds[key] = (lo, max_offset)
        nodes: dict[bytes, float] = {}
        for node_id, failed_at in list(self._node_failures.items()):
            trust = 1.0 - self._decay(now - failed_at, self.params.node_failure_half_life_s)
            if trust >= 0.999:
                del self._node_failures[node_id]
                continue
            nodes[node_id] = trust
        banned = frozenset(k for k, until in self._banned_until.items() if until > now)
        return ScoreView(self.params, bounds, nodes, banned)

    def probability(self, channel: DirectedChannel, amount_msat: int, now: float) -> float:
        """Success probability of ``channel`` carrying ``amount_msat`` as known at ``now``."""
        key = directed_key(channel.short_channel_id, channel.source, channel.target)
        return self.view(now).probability(key, amount_msat, self._capacity(channel), channel.source)

    # -- persistence (what is learned survives a restart, as LDK persists its scorer) ------

    def to_json(self) -> dict[str, Any]:
        """Everything learned, as JSON-ready values (parameters are configuration, not state)."""
        return {
            "liquidity": [[key, r.min_offset_msat, r.max_offset_msat, r.updated_at]
                          for key, r in sorted(self._liquidity.items())],
            "node_failures": [[node.hex(), at] for node, at in sorted(self._node_failures.items())],
            "banned_until": [[key, until] for key, until in sorted(self._banned_until.items())],
        }

    @classmethod
    def from_json(cls, data: Any, params: ScoringParameters | None = None) -> ProbabilisticScorer:
        """The scorer :meth:`to_json` described; raises DecodeError naming a bad entry."""
        if not isinstance(data, dict):
            raise DecodeError("scorer", "expected a JSON object")
        scorer = cls(params or ScoringParameters())
        for i, entry in enumerate(_entries(data, "liquidity", 4)):
            key, lo, hi_offset = (_int(v, f"liquidity[{i}]") for v in entry[:3])
            scorer._liquidity[key] = _Liquidity(lo, hi_offset, _time(entry[3], f"liquidity[{i}]"))
        for i, entry in enumerate(_entries(data, "node_failures", 2)):
            try:
                node = bytes.fromhex(entry[0]) if isinstance(entry[0], str) else b""
            except ValueError:
                node = b""
            if len(node) != 33:
                raise DecodeError(f"node_failures[{i}]", "node id is not 33 bytes in hex")
            scorer._node_failures[node] = _time(entry[1], f"node_failures[{i}]")
        for i, entry in enumerate(_entries(data, "banned_until", 2)):
            scorer._banned_until[_int(entry[0], f"banned_until[{i}]")] = _time(entry[1], f"banned_until[{i}]")
        return scorer

    # -- internals -----------------------------------------------------------------------

    def _capacity(self, channel: DirectedChannel) -> int:
        if channel.capacity_sat is not None:
            return channel.capacity_sat * 1000
        return channel.policy.htlc_maximum_msat or self.params.unknown_capacity_msat

    def _record(self, channel: DirectedChannel, now: float) -> tuple[_Liquidity, int]:
        """The direction's record, decayed to ``now`` so an update starts from today's bounds."""
        key = directed_key(channel.short_channel_id, channel.source, channel.target)
        capacity = self._capacity(channel)
        record = self._liquidity.get(key)
        if record is None:
            record = self._liquidity[key] = _Liquidity(0, 0, now)
        else:
            factor = self._decay(now - record.updated_at, self.params.half_life_s)
            record.min_offset_msat = int(record.min_offset_msat * factor)
            record.max_offset_msat = int(record.max_offset_msat * factor)
            record.updated_at = max(now, record.updated_at)
        return record, capacity

    @staticmethod
    def _decay(elapsed_s: float, half_life_s: float) -> float:
        return 1.0 if elapsed_s <= 0 else 0.5 ** (elapsed_s / half_life_s)


def _entries(data: dict[str, Any], name: str, width: int) -> list[list[Any]]:
    entries = data.get(name, [])
    if not isinstance(entries, list) or not all(isinstance(e, list) and len(e) == width for e in entries):
        raise DecodeError(name, f"expected a list of {width}-item lists")
    return entries


def _int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DecodeError(field, f"{value!r} is not a non-negative integer")
    return value


def _time(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DecodeError(field, f"{value!r} is not a time in seconds")
    return float(value)
