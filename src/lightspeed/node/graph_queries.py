"""The node's view of the network for operators: ``describegraph`` (LND JSON), node and channel
lookups, ``queryroutes``, and our own forwarding fees (``feereport``, ``updatechanpolicy``).

The graph is what gossip taught the node (``node.graph``); routes are searched as a payment
would search them: over our channels as they are now (usable, their real balance) plus the
network's. The describegraph JSON is what :func:`lightspeed.routing.graph_from_describegraph`
reads back, so ``lightspeed route --graph`` can route over the daemon's own graph.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from lightspeed.codec.features import Features
from lightspeed.errors import UsageError
from lightspeed.node import queries
from lightspeed.node.node import Node
from lightspeed.node.paying import LocalChannel, routing_graph
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.routing import ChannelGraph, Route, find_route
from lightspeed.routing.graph import DirectedChannel, Policy


def _policy_json(policy: Policy | None) -> dict[str, Any] | None:
    if policy is None:
        return None
    # lncli prints 64-bit numbers as strings; graph_from_describegraph reads both.
    return {"time_lock_delta": policy.cltv_expiry_delta, "min_htlc": str(policy.htlc_minimum_msat),
            "fee_base_msat": str(policy.fee_base_msat), "fee_rate_milli_msat": str(policy.fee_proportional_millionths),
            "disabled": policy.disabled,
            "max_htlc_msat": str(policy.htlc_maximum_msat or 0)}


def _edges(graph: ChannelGraph) -> dict[int, dict[str, Any]]:
    """LND edges by short channel id: node1 is the lesser id (BOLT 7), each side's policy or null."""
    by_scid: dict[int, list[DirectedChannel]] = {}
    for directions in graph.incoming.values():
        for direction in directions:
            by_scid.setdefault(direction.short_channel_id, []).append(direction)
    edges: dict[int, dict[str, Any]] = {}
    for scid, directions in sorted(by_scid.items()):
        first = directions[0]
        node1, node2 = sorted((first.source, first.target))
        policies = {d.source: d.policy for d in directions}
        capacity = next((d.capacity_sat for d in directions if d.capacity_sat is not None), None)
        edges[scid] = {"channel_id": str(scid), "scid": queries.format_scid(scid),
                       "node1_pub": node1.hex(), "node2_pub": node2.hex(),
                       "capacity": str(capacity or 0), "node1_policy": _policy_json(policies.get(node1)),
                       "node2_policy": _policy_json(policies.get(node2))}
    return edges


def describe_graph(node: Node) -> dict[str, Any]:
    graph = node.graph or ChannelGraph()
    nodes = set(graph.nodes) | {d.source for ds in graph.incoming.values() for d in ds} | set(graph.incoming)
    return {"nodes": [_node_json(node, n) for n in sorted(nodes)], "edges": list(_edges(graph).values())}


def _node_json(node: Node, node_id: bytes) -> dict[str, Any]:
    """A node as LND shows it, with what its latest node_announcement said (if one reached us)."""
    if node_id == node.node_id:
        return {"pub_key": node_id.hex(), "alias": node.gossip.alias, "color": "#" + node.gossip.rgb_color.hex(),
                "features": queries.features_json(node.features)}
    record = node.gossip.gossiper.view.store.node(node_id)
    if record is None:
        return {"pub_key": node_id.hex(), "alias": "", "color": None, "features": []}
    return {"pub_key": node_id.hex(), "alias": record.alias_text, "color": "#" + record.rgb_color.hex(),
            "addresses": [{"network": "tcp", "addr": str(a)} for a in record.addresses],
            "features": queries.features_json(Features.from_bytes(record.features))}


def node_info(node: Node, node_id: bytes) -> dict[str, Any] | None:
    graph = node.graph or ChannelGraph()
    edges = [e for e in _edges(graph).values() if node_id.hex() in (e["node1_pub"], e["node2_pub"])]
    if not edges and node_id not in graph.nodes:
        return None
    return {"node": _node_json(node, node_id), "num_channels": len(edges),
            "total_capacity": str(sum(int(e["capacity"]) for e in edges)), "channels": edges}


def channel_info(node: Node, scid: int) -> dict[str, Any] | None:
    return _edges(node.graph or ChannelGraph()).get(scid)


def query_route(node: Node, target: bytes, amount_msat: int, max_fee_msat: int | None = None) -> Route:
    """The route a payment of ``amount_msat`` to ``target`` would take first (NoRouteError if none)."""
    own = []
    for cid in node.channels:
        liquidity = queries.liquidity(node, cid)
        peer = node.channel_peer_id(cid)
        if liquidity.active and liquidity.short_channel_id is not None and peer is not None:
            own.append(LocalChannel(liquidity.short_channel_id, peer, liquidity.spendable_msat))
    return find_route(routing_graph(node.graph, node.node_id, own), node.node_id, target, amount_msat,
                      max_fee_msat=max_fee_msat)


def update_policy(node: Node, *, fee_base_msat: int | None = None, fee_ppm: int | None = None,
                  cltv_delta: int | None = None, htlc_minimum_msat: int | None = None,
                  htlc_maximum_msat: int | None = None,
                  save: Callable[[ForwardingPolicy], None] | None = None) -> ForwardingPolicy:
    """Change what we charge to forward over every channel; the gossip runtime sees the new terms
    and signs and sends a new channel_update for each channel (BOLT 7). ``save`` keeps the new
    terms first (so a restart announces what the network was told)."""
    old = node.forwarding_policy
    policy = dataclasses.replace(
        old, fee_base_msat=old.fee_base_msat if fee_base_msat is None else fee_base_msat,
        fee_proportional_millionths=old.fee_proportional_millionths if fee_ppm is None else fee_ppm,
        cltv_expiry_delta=old.cltv_expiry_delta if cltv_delta is None else cltv_delta,
        htlc_minimum_msat=old.htlc_minimum_msat if htlc_minimum_msat is None else htlc_minimum_msat,
        htlc_maximum_msat=old.htlc_maximum_msat if htlc_maximum_msat is None else htlc_maximum_msat)
    if policy.htlc_minimum_msat > policy.htlc_maximum_msat:
        raise UsageError(f"htlc_minimum_msat: {policy.htlc_minimum_msat} is above htlc_maximum_msat "
                         f"({policy.htlc_maximum_msat})")
    if save is not None:
        save(policy)
    node.forwarding_policy = policy
    return policy
