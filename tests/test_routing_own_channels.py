"""The payer's view of its own channels on top of the gossip graph, without recompiling the network.

``routing_graph`` (node/paying.py) used to copy every direction into a new graph and compile
it for each payment: about 1 s of CPU at mainnet size, on the event loop. It now reuses the
gossip graph's compiled index; the routes must be those of the full rebuild.
"""

from __future__ import annotations

import random

import pytest

from lightspeed.errors import UsageError
from lightspeed.node.paying import LocalChannel, routing_graph
from lightspeed.routing import (
    ChannelGraph,
    DirectedChannel,
    NoRouteError,
    Policy,
    find_route,
    graph_from_describegraph,
)
from lightspeed.routing.generate import generate_describegraph


@pytest.fixture(scope="module")
def gossip() -> ChannelGraph:
    return graph_from_describegraph(generate_describegraph(seed=11, nodes=1200, channels=3600))


def _rebuilt(base: ChannelGraph, node_id: bytes, own: list[LocalChannel]) -> ChannelGraph:
    """The reference: every direction but ours copied into a fresh graph, then ours (the old way)."""
    graph = ChannelGraph()
    graph.nodes.update(base.nodes)
    for directions in base.incoming.values():
        for direction in directions:
            if direction.source != node_id:
                graph.add_direction(direction)
    for channel in own:
        if channel.sendable_msat > 0:
            graph.add_direction(DirectedChannel(channel.short_channel_id, node_id, channel.peer_id, None,
                                                Policy(0, 0, 0, 1, channel.sendable_msat)))
    graph.add_node(node_id)
    return graph


def _label(graph: ChannelGraph, source: bytes, target: bytes, amount: int) -> tuple[int, int, int] | None:
    try:
        route = find_route(graph, source, target, amount)
    except NoRouteError:
        return None
    return route.total_fee_msat, route.total_cltv_expiry_delta, len(route.hops)


def _payers(gossip: ChannelGraph) -> list[tuple[bytes, list[LocalChannel]]]:
    index = gossip.compiled()
    hub = max(range(len(index.ids)), key=lambda i: len(index.outgoing[i]))
    leaf = next(i for i in range(len(index.ids)) if len(index.outgoing[i]) == 1)
    out = []
    for payer in (hub, leaf):
        node_id = index.ids[payer]
        # Our balances, not gossip's: some channels nearly empty, one gone, one private channel gossip never saw.
        peers = [ch for ch in index.channels if ch.source == node_id]
        own = [LocalChannel(ch.short_channel_id, ch.target, 10**9 if i % 3 else 20_000)
               for i, ch in enumerate(peers[1:] if len(peers) > 1 else peers)]
        own.append(LocalChannel(999 << 40, index.ids[(payer + 7) % len(index.ids)], 5 * 10**8))
        out.append((node_id, own))
    newcomer = b"\x02" + b"\x7f" * 32  # a node gossip does not know, with private channels only
    out.append((newcomer, [LocalChannel(998 << 40, index.ids[hub], 10**9)]))
    return out


def test_routes_match_the_full_rebuild(gossip: ChannelGraph) -> None:
    rng = random.Random(3)
    before = gossip.compiled()
    snapshot = ([list(x) for x in before.incoming], [list(x) for x in before.outgoing], list(before.channels))
    compared = 0
    for node_id, own in _payers(gossip):
        fast, reference = routing_graph(gossip, node_id, own), _rebuilt(gossip, node_id, own)
        assert fast.nodes == reference.nodes
        # Not recompiled: the lists of nodes away from the payer are the gossip graph's own.
        peers = {channel.peer_id for channel in own}
        untouched = [i for i in range(len(before.ids)) if before.ids[i] != node_id and before.ids[i] not in peers
                     and all(edge[0] != before.position.get(node_id) for edge in before.incoming[i])]
        assert len(untouched) > len(before.ids) // 2
        assert all(fast.compiled().incoming[i] is before.incoming[i] for i in untouched)
        for target in rng.sample(sorted(gossip.nodes), 25):
            if target == node_id:
                continue
            for amount in (30_000, 5_000_000, 400_000_000):
                label = _label(fast, node_id, target, amount)
                assert label == _label(reference, node_id, target, amount)
                compared += label is not None
    assert compared > 60
    # The gossip graph itself is untouched (its lists are shared, never appended to).
    after = gossip.compiled()
    assert after is before
    assert ([list(x) for x in after.incoming], [list(x) for x in after.outgoing], list(after.channels)) == snapshot


def test_our_balance_not_gossips_capacity_limits_the_first_hop(gossip: ChannelGraph) -> None:
    index = gossip.compiled()
    payer = next(i for i in range(len(index.ids)) if len(index.outgoing[i]) == 1)
    node_id, peer = index.ids[payer], index.ids[index.outgoing[payer][0][0]]
    scid = next(ch.short_channel_id for ch in index.channels if ch.source == node_id)
    graph = routing_graph(gossip, node_id, [LocalChannel(scid, peer, 40_000)])
    assert find_route(graph, node_id, peer, 40_000).total_amount_msat == 40_000
    with pytest.raises(NoRouteError):
        find_route(graph, node_id, peer, 40_001)
    assert not list(routing_graph(gossip, node_id, [LocalChannel(scid, peer, 0)]).compiled().outgoing[payer])


def test_hints_on_top_still_work_and_foreign_channels_are_refused(gossip: ChannelGraph) -> None:
    node_id, own = _payers(gossip)[0]
    graph = routing_graph(gossip, node_id, own)
    assert graph.with_route_hints([], node_id).compiled() is not None
    stranger = DirectedChannel(1, b"\x03" * 33, node_id, None, Policy(0, 0, 40))
    with pytest.raises(UsageError):
        gossip.with_own_channels(node_id, [stranger])
