"""Retrying one payment until it succeeds, runs out of routes, or times out (sans-IO).

Theory of operation: :class:`PaymentAttempts` is asked for its next action with the
current time. It answers :class:`SendAttempt` (a route to try), ``None`` (an attempt
is in flight: wait for its result), or a final :class:`PaymentSucceeded` /
:class:`PaymentFailed`. The runtime sends the HTLC, and reports back with
:meth:`~PaymentAttempts.attempt_succeeded` or :meth:`~PaymentAttempts.attempt_failed`
(a :class:`FailureReport`: which hop failed and the BOLT 4 code). Each report
teaches the shared :class:`~lightspeed.routing.ProbabilisticScorer` (liquidity,
failed nodes, banned channels) and this payment's own avoid lists, so the next
route goes around what failed.

Rules:

* Never more in flight than the amount: one route at a time, each delivering
  exactly ``amount_msat``; a new one only once every earlier one has failed.
* No new attempt at or after ``deadline``; the payment fails when nothing is in
  flight then (an attempt in flight may still succeed: its preimage counts).
* Failures from the payee (unknown payment hash, wrong amount or CLTV, ...) end the
  payment: another route would meet the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lightspeed.errors import UsageError
from lightspeed.onion.failure import BADONION, NODE, PERM, UPDATE, AttributedFailure, FailureCode
from lightspeed.routing import (
    MAX_HOPS,
    ChannelGraph,
    DirectedChannel,
    NoRouteError,
    ProbabilisticScorer,
    Route,
    directed_key,
    find_route,
)

#: Answers only a payee should give: from the payee they end the payment, from a
#: forwarding node they mean the node is at fault (it is avoided).
_PAYEE_ANSWERS = frozenset({
    FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
    FailureCode.FINAL_INCORRECT_CLTV_EXPIRY,
    FailureCode.FINAL_INCORRECT_HTLC_AMOUNT,
    FailureCode.INVALID_ONION_PAYLOAD,
    FailureCode.REQUIRED_NODE_FEATURE_MISSING,
    FailureCode.PERMANENT_NODE_FAILURE,
    FailureCode.TEMPORARY_NODE_FAILURE,
    FailureCode.EXPIRY_TOO_FAR,
})
#: A forwarding node's channel cannot be used, now or for long.
_BAN_CHANNEL = frozenset({
    FailureCode.PERMANENT_CHANNEL_FAILURE,
    FailureCode.REQUIRED_CHANNEL_FEATURE_MISSING,
    FailureCode.UNKNOWN_NEXT_PEER,
})
#: Our copy of the channel's policy is stale: skip it for this payment (the failure
#: carries a channel_update the runtime can apply to the graph for the next ones).
_STALE_POLICY = frozenset({
    FailureCode.AMOUNT_BELOW_MINIMUM,
    FailureCode.FEE_INSUFFICIENT,
    FailureCode.INCORRECT_CLTV_EXPIRY,
    FailureCode.EXPIRY_TOO_SOON,
})


@dataclass(frozen=True)
class FailureReport:
    """Where an attempt failed and why.

    ``erring_index`` names the node that reported: ``i`` is ``route.hops[i].pubkey``
    (the onion's hop index), ``-1`` the payer itself (its own first channel), ``None``
    a failure nobody can be blamed for (a corrupted return packet). A node reports
    about its outgoing channel, ``route.hops[i + 1]``.
    """

    erring_index: int | None
    code: int

    @classmethod
    def from_onion(cls, failure: AttributedFailure) -> FailureReport:
        return cls(failure.hop_index, failure.failure.code)


@dataclass(frozen=True)
class Attempt:
    attempt_id: int
    route: Route
    started_at: float


@dataclass(frozen=True)
class SendAttempt:
    """Action: send an HTLC along ``attempt.route``, then report its result."""

    attempt: Attempt


@dataclass(frozen=True)
class PaymentSucceeded:
    attempt: Attempt
    attempts: int

    @property
    def fee_msat(self) -> int:
        return self.attempt.route.total_fee_msat


@dataclass(frozen=True)
class PaymentFailed:
    reason: str
    attempts: int
    last_failure: FailureReport | None


Action = SendAttempt | PaymentSucceeded | PaymentFailed


@dataclass
class PaymentAttempts:
    """The retry loop of one payment of ``amount_msat`` from ``source`` to ``target``."""

    graph: ChannelGraph
    scorer: ProbabilisticScorer
    source: bytes
    target: bytes
    amount_msat: int
    started_at: float
    timeout_s: float = 60.0
    max_fee_msat: int | None = None
    max_cltv_expiry_delta: int | None = None
    max_hops: int = MAX_HOPS
    avoid_channels: set[int] = field(default_factory=set)
    avoid_nodes: set[bytes] = field(default_factory=set)
    _attempts: list[Attempt] = field(default_factory=list, repr=False)
    _in_flight: dict[int, Attempt] = field(default_factory=dict, repr=False)
    _outcome: PaymentSucceeded | PaymentFailed | None = field(default=None, repr=False)
    _last_failure: FailureReport | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.amount_msat <= 0:
            raise UsageError("amount_msat must be positive")
        if self.timeout_s <= 0:
            raise UsageError("timeout_s must be positive")
        if self.source == self.target:
            raise UsageError("source and target are the same node")

    @property
    def deadline(self) -> float:
        return self.started_at + self.timeout_s

    @property
    def in_flight_msat(self) -> int:
        """What the payee may receive from attempts not yet resolved (never above the amount)."""
        return sum(a.route.hops[-1].amount_msat for a in self._in_flight.values())

    @property
    def attempts(self) -> tuple[Attempt, ...]:
        return tuple(self._attempts)

    @property
    def outcome(self) -> PaymentSucceeded | PaymentFailed | None:
        return self._outcome

    def next_action(self, now: float) -> Action | None:
        """The next thing to do at ``now``; ``None`` while an attempt is in flight."""
        if self._outcome is not None:
            return self._outcome
        if self._in_flight:
            return None
        if now >= self.deadline:
            return self._fail(f"timed out after {len(self._attempts)} attempts")
        try:
            route = find_route(
                self.graph, self.source, self.target, self.amount_msat,
                max_hops=self.max_hops, max_fee_msat=self.max_fee_msat,
                max_cltv_expiry_delta=self.max_cltv_expiry_delta, score=self.scorer.view(now),
                avoid_channels=self.avoid_channels, avoid_nodes=self.avoid_nodes,
            )
        except NoRouteError as exc:
            tried = f" after {len(self._attempts)} attempts" if self._attempts else ""
            return self._fail(f"{exc}{tried}")
        if route.hops[-1].amount_msat != self.amount_msat:  # the router's contract, checked
            raise AssertionError("route does not deliver the payment amount")
        attempt = Attempt(len(self._attempts), route, now)
        self._attempts.append(attempt)
        self._in_flight[attempt.attempt_id] = attempt
        return SendAttempt(attempt)

    def attempt_succeeded(self, attempt_id: int, now: float) -> PaymentSucceeded:
        """The payee released the preimage: every hop carried its amount."""
        attempt = self._resolve(attempt_id)
        for channel, hop in zip(attempt.route.channels, attempt.route.hops, strict=True):
            self.scorer.channel_forwarded(channel, hop.amount_msat, now)
        outcome = PaymentSucceeded(attempt, len(self._attempts))
        if not isinstance(self._outcome, PaymentSucceeded):
            self._outcome = outcome
        return outcome

    def attempt_failed(self, attempt_id: int, report: FailureReport, now: float) -> None:
        """Learn from a failed attempt; :meth:`next_action` then tries another route or gives up."""
        attempt = self._resolve(attempt_id)
        self._last_failure = report
        if self._outcome is not None:
            return
        final = self._learn(attempt.route, report, now)
        if final is not None:
            self._fail(final)

    # -- internals -------------------------------------------------------------------

    def _resolve(self, attempt_id: int) -> Attempt:
        attempt = self._in_flight.pop(attempt_id, None)
        if attempt is None:
            raise UsageError(f"attempt {attempt_id} is not in flight")
        return attempt

    def _fail(self, reason: str) -> PaymentFailed:
        self._outcome = PaymentFailed(reason, len(self._attempts), self._last_failure)
        return self._outcome

    def _learn(self, route: Route, report: FailureReport, now: float) -> str | None:
        """Teach the scorer and the avoid lists; a reason when the payment must stop."""
        channels, hops = route.channels, route.hops
        index, code = report.erring_index, report.code
        if index is None:  # nobody to blame: do not reuse any of this route's channels
            self.avoid_channels.update(_keys(channels))
            return None
        if not -1 <= index < len(hops):
            raise UsageError(f"erring_index {index} is outside a route of {len(hops)} hops")
        for channel, hop in zip(channels[: index + 1], hops[: index + 1], strict=True):
            self.scorer.channel_forwarded(channel, hop.amount_msat, now)  # it reached the erring node
        if index == len(hops) - 1:
            if code == FailureCode.MPP_TIMEOUT:
                return None
            return f"the payee refused the payment (failure code {code:#06x})"
        node = self.source if index < 0 else hops[index].pubkey
        if code & BADONION:  # the next node could not read the onion (update_fail_malformed_htlc)
            if index + 1 == len(hops) - 1:
                return f"the payee could not read the onion (failure code {code:#06x})"
            self._node_failed(hops[index + 1].pubkey, now)
            return None
        outgoing, amount = channels[index + 1], hops[index + 1].amount_msat
        if code == FailureCode.TEMPORARY_CHANNEL_FAILURE:
            self.scorer.channel_failed(outgoing, amount, now)
            self.avoid_channels.add(_key(outgoing))
        elif code == FailureCode.CHANNEL_DISABLED:
            self.scorer.channel_failed(outgoing, 1, now)
            self.avoid_channels.add(_key(outgoing))
        elif code in _BAN_CHANNEL:
            self.scorer.channel_banned(outgoing, now)
            self.avoid_channels.add(_key(outgoing))
        elif code in _STALE_POLICY:
            self.avoid_channels.add(_key(outgoing))
        elif code & NODE or code in _PAYEE_ANSWERS or index < 0:
            if index < 0:  # our own node refused: nothing another route through it can fix
                self.avoid_channels.add(_key(outgoing))
            else:
                self._node_failed(node, now)
        elif code & PERM:
            self.scorer.channel_banned(outgoing, now)
            self.avoid_channels.add(_key(outgoing))
        else:  # an unknown temporary (UPDATE or not) failure about the outgoing channel
            if not code & UPDATE:
                self.scorer.channel_failed(outgoing, amount, now)
            self.avoid_channels.add(_key(outgoing))
        return None

    def _node_failed(self, node: bytes, now: float) -> None:
        self.scorer.node_failed(node, now)
        self.avoid_nodes.add(node)


def _key(channel: DirectedChannel) -> int:
    return directed_key(channel.short_channel_id, channel.source, channel.target)


def _keys(channels: Iterable[DirectedChannel]) -> list[int]:
    return [_key(c) for c in channels]
