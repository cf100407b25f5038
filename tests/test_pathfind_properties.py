"""Every route find_route returns is one a payer can send: properties over random graphs.

Both cost models (fees only, and fees plus the scorer's risk) must honour the same
rules: each channel enabled and within its HTLC limits and capacity for the amount
it carries, each forwarder paid exactly its policy's fee on what it forwards,
caps on fees, CLTV and hops, and the channels and nodes the caller avoids.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.errors import UsageError
from lightspeed.invoice import RouteHintHop
from lightspeed.routing import (
    BOUND_NODES,
    ChannelGraph,
    NoRouteError,
    Policy,
    Prior,
    ProbabilisticScorer,
    Route,
    ScoreView,
    ScoringParameters,
    directed_key,
    find_route,
)
from tests.support.graphgen import scored_cost, scoring_capacity


def nid(i: int) -> bytes:
    return b"\x03" + i.to_bytes(32, "big")


@dataclass
class Case:
    graph: ChannelGraph
    nodes: int
    amount: int
    max_fee: int | None
    max_cltv: int | None
    max_hops: int
    avoid_channels: frozenset[int]
    avoid_nodes: frozenset[bytes]


policies = st.builds(
    Policy,
    fee_base_msat=st.integers(0, 2000),
    fee_proportional_millionths=st.integers(0, 5000),
    cltv_expiry_delta=st.sampled_from([6, 40, 80, 144]),
    htlc_minimum_msat=st.sampled_from([0, 1, 1000, 1000, 50_000, 2_000_000]),
    htlc_maximum_msat=st.one_of(st.none(), st.integers(1_000_000, 10**9)),
    disabled=st.sampled_from([False] * 7 + [True]),
)


@st.composite
def cases(draw: st.DrawFn, with_limits: bool = True) -> Case:
    n = draw(st.integers(3, 8))
    graph = ChannelGraph()
    # Topology from a seeded RNG: hypothesis' small-value bias would crowd every channel
    # between nodes 0 and 1. No direct channel between payer and payee: routes are multi-hop.
    rng = random.Random(draw(st.integers(0, 2**32)))
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n) if (a, b) != (0, n - 1)]
    for scid in range(1, draw(st.integers(n, 4 * n)) + 1):
        a, b = rng.choice(pairs)
        capacity = draw(st.one_of(st.none(), st.integers(1000, 2_000_000)))
        maybe_policy = st.one_of(*[policies] * 7, st.none())
        graph.add_channel(scid, nid(a), nid(b), capacity, draw(maybe_policy), draw(maybe_policy))
    keys = [directed_key(c.short_channel_id, c.source, c.target)
            for cs in graph.incoming.values() for c in cs]
    return Case(
        graph, n, draw(st.integers(1, 20_000_000) | st.integers(1, 500_000_000)),
        draw(st.one_of(st.none(), st.integers(0, 20_000))) if with_limits else None,
        draw(st.one_of(st.none(), st.integers(0, 600))) if with_limits else None,
        draw(st.integers(2, 8)) if with_limits else 20,
        frozenset(draw(st.lists(st.sampled_from(keys), max_size=2))) if with_limits and keys else frozenset(),
        frozenset(nid(i) for i in draw(st.lists(st.integers(1, n - 2), max_size=2))) if with_limits else frozenset(),
    )


@st.composite
def views(draw: st.DrawFn, case: Case) -> ScoreView:
    scorer = ProbabilisticScorer(ScoringParameters(prior=draw(st.sampled_from(list(Prior)))))
    channels = [c for cs in case.graph.incoming.values() for c in cs]
    for _ in range(draw(st.integers(0, 6)) if channels else 0):
        channel = draw(st.sampled_from(channels))
        kind = draw(st.sampled_from(["fail", "ok", "node"]))
        at = draw(st.floats(0, 7200))
        if kind == "fail":
            scorer.channel_failed(channel, draw(st.integers(1, 10**9)), at)
        elif kind == "ok":
            scorer.channel_forwarded(channel, draw(st.integers(1, 10**9)), at)
        else:
            scorer.node_failed(channel.source, at)
    return scorer.view(7200)


def check_route(route: Route, case: Case, source: bytes, target: bytes, view: ScoreView | None) -> None:
    hops, channels = route.hops, route.channels
    assert 1 <= len(hops) == len(channels) <= case.max_hops
    assert hops[-1].pubkey == target and hops[-1].amount_msat == case.amount and hops[-1].fee_msat == 0
    assert hops[-1].cltv_expiry_delta == 0
    sender = source
    for i, (hop, channel) in enumerate(zip(hops, channels, strict=True)):
        assert (channel.source, channel.target, channel.short_channel_id) == (sender, hop.pubkey, hop.short_channel_id)
        assert not channel.policy.disabled and channel.carries(hop.amount_msat)
        key = directed_key(channel.short_channel_id, channel.source, channel.target)
        assert key not in case.avoid_channels
        if i > 0:
            assert sender not in case.avoid_nodes
        if view is not None:
            assert view.probability(key, hop.amount_msat, scoring_capacity(channel), channel.source if i else None) > 0
        if i + 1 < len(hops):
            onward = channels[i + 1]
            assert hop.fee_msat == onward.policy.fee_msat(hops[i + 1].amount_msat)
            assert hop.amount_msat == hops[i + 1].amount_msat + hop.fee_msat
            assert hop.cltv_expiry_delta == onward.policy.cltv_expiry_delta
        sender = hop.pubkey
    assert route.total_amount_msat == case.amount + route.total_fee_msat
    if case.max_fee is not None:
        assert route.total_fee_msat <= case.max_fee
    if case.max_cltv is not None:
        assert route.total_cltv_expiry_delta <= case.max_cltv
    assert len({h.pubkey for h in hops}) == len(hops)  # no node visited twice


def route_or_none(case: Case, view: ScoreView | None, source: bytes, target: bytes,
                  bound_nodes: int = BOUND_NODES) -> Route | None:
    try:
        return find_route(case.graph, source, target, case.amount, max_fee_msat=case.max_fee,
                          max_cltv_expiry_delta=case.max_cltv, max_hops=case.max_hops, score=view,
                          avoid_channels=case.avoid_channels, avoid_nodes=case.avoid_nodes,
                          bound_nodes=bound_nodes)
    except NoRouteError:
        return None


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_the_forward_bound_never_changes_the_optimum(data: st.DataObject) -> None:
    """A* with a forward search of any size returns what plain Dijkstra (0 nodes) returns."""
    case = data.draw(cases())
    view = data.draw(st.one_of(st.none(), views(case)))
    source, target = nid(0), nid(case.nodes - 1)
    plain = route_or_none(case, view, source, target, bound_nodes=0)
    for bound_nodes in (1, 2, 4, BOUND_NODES):
        bounded = route_or_none(case, view, source, target, bound_nodes=bound_nodes)
        assert (plain is None) == (bounded is None)
        if plain is None or bounded is None:
            continue
        if view is None:
            label = (plain.total_fee_msat, plain.total_cltv_expiry_delta, len(plain.hops))
            assert (bounded.total_fee_msat, bounded.total_cltv_expiry_delta, len(bounded.hops)) == label
        else:
            assert scored_cost(bounded, view) == scored_cost(plain, view)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_every_route_is_sendable(data: st.DataObject) -> None:
    case = data.draw(cases())
    view = data.draw(st.one_of(st.none(), views(case)))
    source, target = nid(0), nid(case.nodes - 1)
    route = route_or_none(case, view, source, target, data.draw(st.sampled_from([0, 1, 3, BOUND_NODES])))
    if route is not None:
        check_route(route, case, source, target, view)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_the_fee_only_route_is_never_dearer_than_the_scored_one(data: st.DataObject) -> None:
    """Fees alone are minimised exactly (no caps, no hop limit, amounts above every minimum)."""
    case = data.draw(cases(with_limits=False))
    for channels in case.graph.incoming.values():  # lift minimums out of the way
        channels[:] = [c.__class__(c.short_channel_id, c.source, c.target, c.capacity_sat,
                                   Policy(c.policy.fee_base_msat, c.policy.fee_proportional_millionths,
                                          c.policy.cltv_expiry_delta, 0, c.policy.htlc_maximum_msat,
                                          c.policy.disabled)) for c in channels]
    case.graph._compiled = None
    view = data.draw(views(case))
    source, target = nid(0), nid(case.nodes - 1)
    cheapest, scored = route_or_none(case, None, source, target), route_or_none(case, view, source, target)
    if scored is not None:
        assert cheapest is not None and cheapest.total_fee_msat <= scored.total_fee_msat


def ladder(capacity_1: int = 1_000_000, capacity_2: int = 1_000_000) -> ChannelGraph:
    graph = ChannelGraph()
    for middle, base, capacity in ((1, 100, capacity_1), (2, 200, capacity_2)):
        graph.add_channel(middle * 10, nid(0), nid(middle), capacity, Policy(0, 0, 40), Policy(0, 0, 40))
        graph.add_channel(middle * 10 + 1, nid(middle), nid(9), capacity, Policy(base, 0, 40), Policy(0, 0, 40))
    return graph


def test_the_scorer_trades_fees_for_success_probability() -> None:
    # Through 1 is 100 msat cheaper but its channels are barely bigger than the payment.
    graph = ladder(capacity_1=600_000, capacity_2=50_000_000)
    fee_only = find_route(graph, nid(0), nid(9), 500_000_000)
    scored = find_route(graph, nid(0), nid(9), 500_000_000, score=ProbabilisticScorer().view(0))
    assert fee_only.hops[0].pubkey == nid(1) and scored.hops[0].pubkey == nid(2)
    # A small payment is likely to pass either way: the cheaper path wins again.
    small = find_route(graph, nid(0), nid(9), 1_000_000, score=ProbabilisticScorer().view(0))
    assert small.hops[0].pubkey == nid(1)


def test_what_the_scorer_learned_changes_the_route_and_fades() -> None:
    graph, scorer = ladder(), ProbabilisticScorer(ScoringParameters(half_life_s=3600))
    channel = next(c for c in graph.channels_into(nid(9)) if c.source == nid(1))
    scorer.channel_failed(channel, 100_000_000, now=0)
    assert find_route(graph, nid(0), nid(9), 100_000_000, score=scorer.view(0)).hops[0].pubkey == nid(2)
    assert find_route(graph, nid(0), nid(9), 100_000_000, score=scorer.view(10 * 3600)).hops[0].pubkey == nid(1)
    scorer.channel_banned(channel, now=0)
    with pytest.raises(NoRouteError):
        find_route(graph, nid(0), nid(9), 100_000_000, score=scorer.view(1),
                   avoid_nodes={nid(2)})


def test_route_hints_on_a_compiled_graph_match_a_fresh_one() -> None:
    graph = ladder()
    hints = [[RouteHintHop(nid(2), 99, 0, 0, 9), RouteHintHop(nid(7), 98, 0, 0, 9)]]
    fresh = graph.with_route_hints(hints, nid(8))
    graph.compiled()  # now hints extend the compiled index instead of rebuilding it
    extended = graph.with_route_hints(hints, nid(8))
    assert extended._compiled is not None
    for hinted in (fresh, extended):
        route = find_route(hinted, nid(0), nid(8), 1000)
        assert [h.short_channel_id for h in route.hops] == [20, 99, 98]
    assert nid(8) not in graph.compiled().position  # the base index is untouched
    assert find_route(graph, nid(0), nid(9), 1000).hops[0].pubkey == nid(1)
    scored = find_route(extended, nid(0), nid(8), 1000, score=ProbabilisticScorer().view(0))
    assert [h.short_channel_id for h in scored.hops] == [20, 99, 98]


def test_bad_arguments_are_refused() -> None:
    graph = ladder()
    with pytest.raises(UsageError, match="max_hops"):
        find_route(graph, nid(0), nid(9), 1000, max_hops=0)
    with pytest.raises(UsageError, match="positive"):
        find_route(graph, nid(0), nid(9), 0)
    with pytest.raises(NoRouteError):
        find_route(graph, nid(0), nid(42), 1000)  # unknown node
