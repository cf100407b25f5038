"""The retry loop driven against a simulated network of hidden liquidities.

The network is a pure function: given a route, it walks the hops with the real
(hidden) liquidity of each channel direction, the nodes that are offline and the
policies nodes really apply, and answers success or ``(erring_index, code)`` as a
BOLT 4 failure would. Nothing of ours is mocked: the real router, scorer and
retry loop run against it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.errors import UsageError
from lightspeed.invoice import RouteHintHop
from lightspeed.onion.failure import AttributedFailure, FailureCode, FailureMessage
from lightspeed.payments import (
    FailureReport,
    PaymentAttempts,
    PaymentFailed,
    PaymentSucceeded,
    SendAttempt,
)
from lightspeed.routing import (
    ChannelGraph,
    Policy,
    ProbabilisticScorer,
    Route,
    directed_key,
    graph_from_describegraph,
)
from lightspeed.routing.generate import generate_describegraph


def nid(i: int) -> bytes:
    return b"\x02" + i.to_bytes(32, "big")


@dataclass
class Network:
    """The truth the sender cannot see."""

    liquidity_msat: dict[int, int] = field(default_factory=dict)  # by directed key; absent: plenty
    offline: set[bytes] = field(default_factory=set)
    raised_fees: set[int] = field(default_factory=set)  # directions whose node now charges more
    payee_refuses: bool = False

    def send(self, source: bytes, route: Route) -> FailureReport | None:
        """Walk the HTLC hop by hop; the first problem becomes the failure the sender gets back."""
        sender = source
        for i, (channel, hop) in enumerate(zip(route.channels, route.hops, strict=True)):
            key = directed_key(channel.short_channel_id, channel.source, channel.target)
            if key in self.raised_fees and i > 0:
                return FailureReport(i - 1, FailureCode.FEE_INSUFFICIENT)
            if hop.pubkey in self.offline:
                return FailureReport(i - 1, FailureCode.TEMPORARY_CHANNEL_FAILURE)
            if self.liquidity_msat.get(key, 1 << 62) < hop.amount_msat:
                return FailureReport(i - 1, FailureCode.TEMPORARY_CHANNEL_FAILURE)
            sender = hop.pubkey
        assert sender == route.hops[-1].pubkey
        if self.payee_refuses:
            return FailureReport(len(route.hops) - 1, FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS)
        return None


def pay(attempts: PaymentAttempts, network: Network, now: float = 0.0,
        step_s: float = 1.0) -> PaymentSucceeded | PaymentFailed:
    """Run the loop to its end, one simulated second per attempt; check the invariants."""
    while True:
        assert attempts.in_flight_msat <= attempts.amount_msat
        action = attempts.next_action(now)
        assert action is not None  # a single path: nothing in flight when we ask
        if not isinstance(action, SendAttempt):
            return action
        route = action.attempt.route
        assert route.hops[-1].amount_msat == attempts.amount_msat
        assert attempts.in_flight_msat == attempts.amount_msat
        assert attempts.next_action(now) is None  # waits for the attempt in flight
        if attempts.max_fee_msat is not None:
            assert route.total_fee_msat <= attempts.max_fee_msat
        failure = network.send(attempts.source, route)
        now += step_s
        if failure is None:
            attempts.attempt_succeeded(action.attempt.attempt_id, now)
        else:
            attempts.attempt_failed(action.attempt.attempt_id, failure, now)


def ladder() -> ChannelGraph:
    """0 pays 9 over three disjoint two-hop paths through 1, 2 and 3 (cheapest first)."""
    graph = ChannelGraph()
    for middle, base in ((1, 100), (2, 200), (3, 300)):
        graph.add_channel(middle * 10, nid(0), nid(middle), 1_000_000, Policy(0, 0, 40), Policy(0, 0, 40))
        graph.add_channel(middle * 10 + 1, nid(middle), nid(9), 1_000_000, Policy(base, 1, 40), Policy(0, 0, 40))
    return graph


def key(scid: int, a: int, b: int) -> int:
    return directed_key(scid, nid(a), nid(b))


def new_payment(graph: ChannelGraph, scorer: ProbabilisticScorer | None = None, amount: int = 500_000_000,
                **kwargs: object) -> PaymentAttempts:
    return PaymentAttempts(graph, scorer or ProbabilisticScorer(), nid(0), nid(9), amount, 0.0, **kwargs)  # type: ignore[arg-type]


def test_retries_around_a_channel_without_liquidity_and_the_scorer_remembers() -> None:
    graph, scorer = ladder(), ProbabilisticScorer()
    network = Network({key(11, 1, 9): 100_000_000})  # 1 -> 9 holds too little
    outcome = pay(new_payment(graph, scorer), network)
    assert isinstance(outcome, PaymentSucceeded) and outcome.attempts == 2
    assert [h.pubkey for h in outcome.attempt.route.hops] == [nid(2), nid(9)]
    # The next payment of that size skips 1 -> 9 at once; a small one could still use it,
    # but 2 -> 9 is now known to carry it for sure, which outweighs 100 msat of fees.
    again = pay(new_payment(graph, scorer), network)
    assert isinstance(again, PaymentSucceeded) and again.attempts == 1
    one_nine = next(c for c in graph.channels_into(nid(9)) if c.source == nid(1))
    assert scorer.probability(one_nine, 500_000_000, 3) < 1e-3  # the learned cap only starts to fade
    assert scorer.probability(one_nine, 50_000_000, 3) > 0.85
    small = pay(new_payment(graph, scorer, amount=50_000_000), network)
    assert isinstance(small, PaymentSucceeded) and small.attempt.route.hops[0].pubkey == nid(2)


def test_an_offline_node_is_routed_around() -> None:
    network = Network(offline={nid(1), nid(2)})
    outcome = pay(new_payment(ladder()), network)
    assert isinstance(outcome, PaymentSucceeded) and outcome.attempts == 3
    assert outcome.attempt.route.hops[0].pubkey == nid(3)


def test_a_node_failure_avoids_every_channel_of_that_node() -> None:
    graph = ladder()
    graph.add_channel(12, nid(1), nid(9), 1_000_000, Policy(150, 1, 40), Policy(0, 0, 40))  # 2nd channel 1 -> 9
    attempts = new_payment(graph)
    first = attempts.next_action(0)
    assert isinstance(first, SendAttempt) and first.attempt.route.hops[0].pubkey == nid(1)
    onion = AttributedFailure(0, FailureMessage(FailureCode.TEMPORARY_NODE_FAILURE), b"")
    attempts.attempt_failed(first.attempt.attempt_id, FailureReport.from_onion(onion), 1)
    second = attempts.next_action(1)
    assert isinstance(second, SendAttempt) and second.attempt.route.hops[0].pubkey == nid(2)
    assert attempts.scorer.view(1).node_probability[nid(1)] < 0.01


def test_stale_fees_skip_the_channel_for_this_payment() -> None:
    network = Network(raised_fees={key(11, 1, 9)})
    outcome = pay(new_payment(ladder()), network)
    assert isinstance(outcome, PaymentSucceeded) and outcome.attempt.route.hops[0].pubkey == nid(2)


def test_the_payee_refusing_ends_the_payment() -> None:
    outcome = pay(new_payment(ladder()), Network(payee_refuses=True))
    assert isinstance(outcome, PaymentFailed) and outcome.attempts == 1
    assert "payee refused" in outcome.reason
    assert outcome.last_failure is not None
    assert outcome.last_failure.code == FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS


def test_runs_out_of_routes() -> None:
    network = Network({key(s, m, 9): 1000 for s, m in ((11, 1), (21, 2), (31, 3))})
    outcome = pay(new_payment(ladder()), network)
    assert isinstance(outcome, PaymentFailed) and outcome.attempts == 3
    assert outcome.reason.startswith("no route") and "after 3 attempts" in outcome.reason


def test_the_fee_cap_limits_the_routes_tried() -> None:
    # 500,000,000 msat at 1 ppm: the routes through 1, 2 and 3 charge 600, 700 and 800 msat.
    network = Network({key(11, 1, 9): 1000})
    outcome = pay(new_payment(ladder(), max_fee_msat=750), network)
    assert isinstance(outcome, PaymentSucceeded) and outcome.attempt.route.hops[0].pubkey == nid(2)
    network.liquidity_msat[key(21, 2, 9)] = 1000
    failed = pay(new_payment(ladder(), max_fee_msat=750), network)
    assert isinstance(failed, PaymentFailed) and failed.attempts == 2  # 3 is never tried
    assert failed.reason.startswith("no route")


def test_timeout_stops_new_attempts_but_an_attempt_in_flight_may_still_succeed() -> None:
    attempts = new_payment(ladder(), timeout_s=10)
    first = attempts.next_action(0)
    assert isinstance(first, SendAttempt)
    assert attempts.next_action(11) is None  # in flight past the deadline: wait
    attempts.attempt_failed(first.attempt.attempt_id, FailureReport(0, FailureCode.TEMPORARY_CHANNEL_FAILURE), 11)
    timed_out = attempts.next_action(11)
    assert isinstance(timed_out, PaymentFailed) and timed_out.reason.startswith("timed out")
    assert attempts.next_action(12) is timed_out  # final answers repeat

    late = new_payment(ladder(), timeout_s=10)
    sent = late.next_action(9)
    assert isinstance(sent, SendAttempt)
    late.attempt_succeeded(sent.attempt.attempt_id, 30)
    assert isinstance(late.next_action(30), PaymentSucceeded)


def test_slow_network_times_out() -> None:
    network = Network(offline={nid(1), nid(2), nid(3)})
    outcome = pay(new_payment(ladder(), timeout_s=1.5), network, step_s=1.0)
    assert isinstance(outcome, PaymentFailed) and outcome.attempts == 2 and "timed out" in outcome.reason


def test_multinode_payee_fails_over_to_the_second_lsp() -> None:
    """An invoice whose hints go through two LSPs is paid through the second when the first is offline."""
    graph = ChannelGraph()
    for lsp, scid in ((5, 50), (6, 60)):
        graph.add_channel(scid, nid(0), nid(lsp), 10_000_000, Policy(0, 0, 40), Policy(0, 0, 40))
    payee = nid(9)
    hints = [[RouteHintHop(nid(5), 51, 100, 1, 40)], [RouteHintHop(nid(6), 61, 1000, 1, 40)]]
    hinted = graph.with_route_hints(hints, payee)
    attempts = PaymentAttempts(hinted, ProbabilisticScorer(), nid(0), payee, 1_000_000, 0.0)
    outcome = pay(attempts, Network(offline={nid(5)}))
    assert isinstance(outcome, PaymentSucceeded) and outcome.attempts == 2
    assert [h.short_channel_id for h in outcome.attempt.route.hops] == [60, 61]


def test_misuse_is_refused() -> None:
    attempts = new_payment(ladder())
    with pytest.raises(UsageError, match="not in flight"):
        attempts.attempt_succeeded(7, 0)
    action = attempts.next_action(0)
    assert isinstance(action, SendAttempt)
    with pytest.raises(UsageError, match="erring_index"):
        attempts.attempt_failed(action.attempt.attempt_id, FailureReport(5, FailureCode.TEMPORARY_CHANNEL_FAILURE), 0)
    with pytest.raises(UsageError, match="amount_msat"):
        new_payment(ladder(), amount=0)
    with pytest.raises(UsageError, match="same node"):
        PaymentAttempts(ladder(), ProbabilisticScorer(), nid(9), nid(9), 1000, 0.0)


@pytest.fixture(scope="module")
def generated() -> ChannelGraph:
    return graph_from_describegraph(generate_describegraph(seed=7, nodes=400, channels=1200))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([10_000_000, 100_000_000, 1_000_000_000]))
def test_on_a_generated_network_the_loop_ends_right(generated: ChannelGraph, seed: int, amount: int) -> None:
    """Random hidden liquidities: the loop succeeds exactly when some tried route is liquid,
    never sends more than the amount, and stops with a reason otherwise."""
    rng = random.Random(seed)
    index = generated.compiled()
    source, target = rng.sample(index.ids, 2)
    liquidity = {}
    for channel in index.channels:
        capacity = (channel.capacity_sat or 0) * 1000
        liquidity[directed_key(channel.short_channel_id, channel.source, channel.target)] = rng.randint(0, capacity)
    network = Network(liquidity)
    attempts = PaymentAttempts(generated, ProbabilisticScorer(), source, target, amount, 0.0, timeout_s=1000)
    outcome = pay(attempts, network)
    tried = attempts.attempts
    if isinstance(outcome, PaymentSucceeded):
        assert network.send(source, outcome.attempt.route) is None
        assert all(network.send(source, a.route) is not None for a in tried[:-1])
    else:
        assert all(network.send(source, a.route) is not None for a in tried)
        assert outcome.reason.startswith(("no route", "timed out"))
    keys = [tuple(h.short_channel_id for h in a.route.hops) for a in tried]
    assert len(set(keys)) == len(keys)  # never the same route twice


def three_hop_payment() -> tuple[PaymentAttempts, SendAttempt]:
    """0 pays 9 over 0 -> 1 -> 4 -> 9 (cheapest), with detours 0 -> 2 -> 4 and 1 -> 5 -> 9."""
    graph = ChannelGraph()
    free, dear = Policy(0, 0, 40), Policy(500, 0, 40)
    for scid, a, b, policy in ((1, 0, 1, free), (2, 1, 4, free), (3, 4, 9, free),
                               (4, 0, 2, free), (5, 2, 4, dear), (6, 1, 5, dear), (7, 5, 9, dear)):
        graph.add_channel(scid, nid(a), nid(b), 1_000_000, policy, policy)
    attempts = PaymentAttempts(graph, ProbabilisticScorer(), nid(0), nid(9), 1_000_000, 0.0)
    action = attempts.next_action(0)
    assert isinstance(action, SendAttempt)
    assert [h.short_channel_id for h in action.attempt.route.hops] == [1, 2, 3]
    return attempts, action


@pytest.mark.parametrize(("erring_index", "code", "avoided_scids", "avoided_nodes", "final"), [
    # the payer's own channel lacks liquidity
    (-1, FailureCode.TEMPORARY_CHANNEL_FAILURE, {1}, set(), False),
    # node 1 cannot forward over 1 -> 4: liquidity, disabled, gone, unknown feature, stale policy
    (0, FailureCode.TEMPORARY_CHANNEL_FAILURE, {2}, set(), False),
    (0, FailureCode.CHANNEL_DISABLED, {2}, set(), False),
    (0, FailureCode.PERMANENT_CHANNEL_FAILURE, {2}, set(), False),
    (0, FailureCode.UNKNOWN_NEXT_PEER, {2}, set(), False),
    (0, FailureCode.REQUIRED_CHANNEL_FEATURE_MISSING, {2}, set(), False),
    (0, FailureCode.FEE_INSUFFICIENT, {2}, set(), False),
    (0, FailureCode.INCORRECT_CLTV_EXPIRY, {2}, set(), False),
    (0, FailureCode.EXPIRY_TOO_SOON, {2}, set(), False),
    (0, FailureCode.AMOUNT_BELOW_MINIMUM, {2}, set(), False),
    (0, 0x1000 | 99, {2}, set(), False),  # unknown UPDATE code: about the channel
    (0, 0x4000 | 99, {2}, set(), False),  # unknown PERM code: the channel is gone
    # node 1 itself fails, or misbehaves with an answer only a payee may give
    (0, FailureCode.TEMPORARY_NODE_FAILURE, set(), {1}, False),
    (0, FailureCode.PERMANENT_NODE_FAILURE, set(), {1}, False),
    (0, FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, set(), {1}, False),
    (0, 0x2000 | 99, set(), {1}, False),  # unknown NODE code
    # node 1 says node 4 could not read the onion (update_fail_malformed_htlc)
    (0, FailureCode.INVALID_ONION_HMAC, set(), {4}, False),
    # the payee's answers end the payment
    (2, FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, set(), set(), True),
    (2, FailureCode.FINAL_INCORRECT_HTLC_AMOUNT, set(), set(), True),
    (2, FailureCode.PERMANENT_NODE_FAILURE, set(), set(), True),
    (1, FailureCode.INVALID_ONION_KEY, set(), set(), True),  # the payee cannot read the onion
    # a corrupted return packet: nobody to blame, so none of the route is reused
    (None, 0, {1, 2, 3}, set(), False),
])
def test_each_failure_teaches_the_right_lesson(erring_index: int | None, code: int, avoided_scids: set[int],
                                                avoided_nodes: set[int], final: bool) -> None:
    attempts, action = three_hop_payment()
    attempts.attempt_failed(action.attempt.attempt_id, FailureReport(erring_index, code), 1)
    route = action.attempt.route
    keys = {directed_key(c.short_channel_id, c.source, c.target): c.short_channel_id for c in route.channels}
    assert {keys[k] for k in attempts.avoid_channels} == avoided_scids
    assert attempts.avoid_nodes == {nid(i) for i in avoided_nodes}
    following = attempts.next_action(1)
    if final:
        assert isinstance(following, PaymentFailed) and following.attempts == 1
        assert following.last_failure == FailureReport(erring_index, code)
        return
    assert isinstance(following, SendAttempt)  # a detour exists for every lesson
    used = {directed_key(c.short_channel_id, c.source, c.target) for c in following.attempt.route.channels}
    assert not used & attempts.avoid_channels
    assert not {h.pubkey for h in following.attempt.route.hops[:-1]} & attempts.avoid_nodes
    # hops before the erring node forwarded the amount: the scorer now knows they can carry it
    if erring_index is not None:
        for channel, hop in list(zip(route.channels, route.hops, strict=True))[: erring_index + 1]:
            assert attempts.scorer.probability(channel, hop.amount_msat, 1) == 1.0
