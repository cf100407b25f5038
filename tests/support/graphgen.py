"""networkx views of a ChannelGraph, for checking our router against an independent Dijkstra."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import networkx as nx

from lightspeed.routing import ChannelGraph, DirectedChannel, Route, ScoreView, directed_key


def fee_digraph(graph: ChannelGraph, amount_msat: int) -> nx.DiGraph:
    """Node ids to node ids; ``fee`` is the sender's fee to forward ``amount_msat`` (cheapest
    usable parallel channel). The fee ignores the fees downstream (networkx weights are static),
    so on a path it is a lower bound of what that path really costs."""
    digraph: nx.DiGraph = nx.DiGraph()
    for target, channels in graph.incoming.items():
        for channel in channels:
            if channel.source == target or not channel.carries(amount_msat):
                continue
            fee = channel.policy.fee_msat(amount_msat)
            old = digraph.get_edge_data(channel.source, target)
            if old is None or fee < old["fee"]:
                digraph.add_edge(channel.source, target, fee=fee)
    return digraph


def payer_pays_no_fee(source: bytes) -> Callable[[Any, Any, dict[str, Any]], int]:
    """The weight function: the payer's own channel costs nothing."""
    return lambda u, _v, data: 0 if u == source else int(data["fee"])


def static_fee(digraph: nx.DiGraph, path: list[bytes]) -> int:
    return sum(digraph[u][v]["fee"] for u, v in itertools.pairwise(path[1:]))  # the payer pays none


def true_fee(graph: ChannelGraph, path: list[bytes], amount_msat: int) -> int | None:
    """What ``path`` costs with fees on the amounts really forwarded (None: not sendable)."""
    carried, fee = amount_msat, 0
    for i in range(len(path) - 1, 0, -1):
        options = [c for c in graph.channels_into(path[i]) if c.source == path[i - 1] and c.carries(carried)]
        if not options:
            return None
        if i > 1:
            hop_fee = min(c.policy.fee_msat(carried) for c in options)
            fee, carried = fee + hop_fee, carried + hop_fee
    return fee


def route_path(source: bytes, route: Route) -> list[bytes]:
    return [source, *(hop.pubkey for hop in route.hops)]


def scoring_capacity(channel: DirectedChannel) -> int:
    """The capacity a scorer assumes: the channel's, else its htlc_maximum_msat, else 0 (unknown)."""
    if channel.capacity_sat is not None:
        return channel.capacity_sat * 1000
    return channel.policy.htlc_maximum_msat or 0


def scored_cost(route: Route, view: ScoreView) -> int:
    """The cost the scored search minimises, recomputed hop by hop from its definition."""
    p = view.params
    cost = 0
    for i, (hop, channel) in enumerate(zip(route.hops, route.channels, strict=True)):
        amount = hop.amount_msat
        key = directed_key(channel.short_channel_id, channel.source, channel.target)
        probability = view.probability(key, amount, scoring_capacity(channel), channel.source if i else None)
        cost += view.penalty_msat(amount, probability)
        if i:  # forwarders charge fees and lock funds for their delta; the payer does not
            cost += channel.policy.fee_msat(amount)
            cost += amount * channel.policy.cltv_expiry_delta * p.cltv_risk_factor_billionths // 10**9
    return cost
