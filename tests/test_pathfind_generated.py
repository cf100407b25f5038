"""The mainnet-shaped generator, and our router against networkx on generated graphs."""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from click.testing import CliRunner

from lightspeed.cli.main import cli
from lightspeed.errors import UsageError
from lightspeed.routing import (
    ChannelGraph,
    DirectedChannel,
    NoRouteError,
    Policy,
    ProbabilisticScorer,
    find_route,
    graph_from_describegraph,
)
from lightspeed.routing.generate import generate_describegraph, main
from tests.support.graphgen import (
    fee_digraph,
    payer_pays_no_fee,
    route_path,
    scored_cost,
    static_fee,
    true_fee,
)

NODES, CHANNELS = 2000, 6000


@pytest.fixture(scope="module")
def small_json() -> dict[str, Any]:
    return generate_describegraph(seed=3, nodes=NODES, channels=CHANNELS)


@pytest.fixture(scope="module")
def small(small_json: dict[str, Any]) -> ChannelGraph:
    return graph_from_describegraph(small_json)


def zero_rates(graph: ChannelGraph) -> ChannelGraph:
    """The same graph with proportional fees removed: fees no longer depend on the amount."""
    flat = ChannelGraph()
    flat.nodes.update(graph.nodes)
    for channels in graph.incoming.values():
        for c in channels:
            p = c.policy
            flat.add_direction(DirectedChannel(c.short_channel_id, c.source, c.target, c.capacity_sat, Policy(
                p.fee_base_msat, 0, p.cltv_expiry_delta, p.htlc_minimum_msat, p.htlc_maximum_msat, p.disabled)))
    return flat


def pairs(graph: ChannelGraph, count: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng, ids = random.Random(seed), sorted(graph.nodes)
    return [tuple(rng.sample(ids, 2)) for _ in range(count)]  # type: ignore[misc]


def test_same_total_fee_as_networkx_when_fees_do_not_depend_on_the_amount(small: ChannelGraph) -> None:
    graph, amount = zero_rates(small), 10_000  # every channel's limits hold for the amount plus fees
    digraph = fee_digraph(graph, amount)
    found = 0
    for source, target in pairs(graph, 60, seed=1):
        try:
            ours = find_route(graph, source, target, amount, max_hops=10_000).total_fee_msat
        except NoRouteError:
            ours = None
        try:
            theirs = nx.dijkstra_path_length(digraph, source, target, weight=payer_pays_no_fee(source))
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            theirs = None
        assert ours == theirs, (source.hex(), target.hex())
        found += ours is not None
    assert found >= 40  # most pairs are connected, as on mainnet


@pytest.mark.parametrize("amount", [10_000, 5_000_000, 200_000_000])
def test_fees_bracketed_by_networkx_with_proportional_fees(small: ChannelGraph, amount: int) -> None:
    """networkx weighs each fee on the delivered amount only: its optimum is a lower bound of ours,
    and the true cost of its path (fees on what is really forwarded) an upper bound."""
    digraph = fee_digraph(small, amount)
    checked = equal = 0
    for source, target in pairs(small, 40, seed=amount):
        try:
            route = find_route(small, source, target, amount, max_hops=10_000)
        except NoRouteError:
            continue
        path = nx.dijkstra_path(digraph, source, target, weight=payer_pays_no_fee(source))
        assert static_fee(digraph, path) <= route.total_fee_msat
        assert true_fee(small, route_path(source, route), amount) == route.total_fee_msat
        upper = true_fee(small, path, amount)
        if upper is not None:
            assert route.total_fee_msat <= upper
            checked += 1
            equal += route.total_fee_msat == upper
    assert checked >= 20 and equal >= checked * 0.8  # usually the very same optimum


def test_scored_routes_on_a_generated_graph_cost_more_fees_but_are_likelier(small: ChannelGraph) -> None:
    view = ProbabilisticScorer().view(0)
    amount = 100_000_000
    fee_ratio, probability_gain = [], []
    for source, target in pairs(small, 30, seed=9):
        try:
            cheap = find_route(small, source, target, amount)
            scored = find_route(small, source, target, amount, score=view)
        except NoRouteError:
            continue
        assert scored.total_fee_msat >= cheap.total_fee_msat
        fee_ratio.append(scored.total_fee_msat / max(cheap.total_fee_msat, 1))

        def success(route: Any) -> float:
            p = 1.0
            for channel, hop in zip(route.channels, route.hops, strict=True):
                p *= ProbabilisticScorer().probability(channel, hop.amount_msat, 0)
            return p

        probability_gain.append(success(scored) - success(cheap))
    assert len(probability_gain) >= 15
    assert min(probability_gain) >= -0.05 and statistics.mean(probability_gain) > 0.05


def test_the_forward_bound_keeps_the_optimum_on_a_generated_graph(small: ChannelGraph) -> None:
    """On a graph far larger than the forward search, A* and plain Dijkstra agree on the optimum."""
    rng = random.Random(11)
    scorer = ProbabilisticScorer()
    channels = small.compiled().channels
    for _ in range(300):  # some history, so learned bounds and failed nodes matter too
        channel = rng.choice(channels)
        amount = rng.randint(1, (channel.capacity_sat or 1) * 1000)
        (scorer.channel_failed if rng.random() < 0.5 else scorer.channel_forwarded)(channel, amount, 0)
    scorer.node_failed(rng.choice(channels).source, 0)
    view = scorer.view(60)
    compared = 0
    for source, target in pairs(small, 40, seed=12):
        amount = rng.choice([10_000, 1_000_000, 100_000_000])
        try:
            plain = find_route(small, source, target, amount, bound_nodes=0)
        except NoRouteError:
            with pytest.raises(NoRouteError):
                find_route(small, source, target, amount)
            continue
        bounded = find_route(small, source, target, amount)
        assert (bounded.total_fee_msat, bounded.total_cltv_expiry_delta, len(bounded.hops)) == (
            plain.total_fee_msat, plain.total_cltv_expiry_delta, len(plain.hops))
        scored_plain = find_route(small, source, target, amount, score=view, bound_nodes=0)
        scored = find_route(small, source, target, amount, score=view)
        assert scored_cost(scored, view) == scored_cost(scored_plain, view)
        compared += 1
    assert compared >= 25


@pytest.mark.slow
def test_mainnet_size_graph_is_shaped_like_mainnet() -> None:
    data = generate_describegraph(seed=1)
    assert len(data["nodes"]) == 17_000 and len(data["edges"]) == 50_000
    degrees = Counter[str]()
    for edge in data["edges"]:
        degrees[edge["node1_pub"]] += 1
        degrees[edge["node2_pub"]] += 1
        assert edge["node1_pub"] < edge["node2_pub"]
    ranked = sorted(degrees.values())
    assert len(ranked) == 17_000  # every node has a channel
    assert ranked[len(ranked) // 2] <= 3 and ranked[-1] >= 300  # heavy tail: hubs and leaves
    assert sum(d == 1 for d in ranked) > 0.2 * len(ranked)
    policies = [p for e in data["edges"] for p in (e["node1_policy"], e["node2_policy"]) if p is not None]
    bases = Counter(int(p["fee_base_msat"]) for p in policies)
    assert [b for b, _ in bases.most_common(2)] == [1000, 0] and max(bases) <= 1000
    assert all(1 <= int(p["fee_rate_milli_msat"]) <= 2000 for p in policies)
    assert {p["time_lock_delta"] for p in policies} == {40, 80, 144}
    assert 0.02 < sum(p["disabled"] for p in policies) / len(policies) < 0.1
    graph = graph_from_describegraph(data)
    assert graph.channel_count == 50_000 and len(graph.nodes) == 17_000


def test_generated_file_feeds_the_route_cli(tmp_path: Path, small: ChannelGraph) -> None:
    out = tmp_path / "graph.json"
    main(["--seed", "3", "--nodes", str(NODES), "--channels", str(CHANNELS), "--out", str(out)])
    chosen = pairs(small, 5, seed=4)
    pairs_file = tmp_path / "pairs.json"
    pairs_file.write_text(json.dumps([[s.hex(), t.hex(), 1_000_000] for s, t in chosen]))
    result = CliRunner().invoke(cli, ["route", "--graph", str(out), "--pairs", str(pairs_file)])
    assert result.exit_code == 0, result.output
    for line, (source, target) in zip(result.stdout.splitlines(), chosen, strict=True):
        answer = json.loads(line)
        try:
            expected = find_route(small, source, target, 1_000_000)
        except NoRouteError:
            assert answer["error"].startswith("no route")
            continue
        assert answer["total_fee_msat"] == expected.total_fee_msat
        assert len(answer["hops"]) == len(expected.hops)


def test_generator_is_deterministic_from_its_seed(small_json: dict[str, Any]) -> None:
    assert generate_describegraph(seed=3, nodes=NODES, channels=CHANNELS) == small_json
    assert generate_describegraph(seed=4, nodes=NODES, channels=CHANNELS)["edges"] != small_json["edges"]


def test_generator_refuses_impossible_sizes() -> None:
    with pytest.raises(UsageError):
        generate_describegraph(nodes=1)
    with pytest.raises(UsageError, match="cannot connect"):
        generate_describegraph(nodes=100, channels=50)
