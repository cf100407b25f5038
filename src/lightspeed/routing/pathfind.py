"""Cheapest route through the channel graph, searched backwards from the payee.

Walking from the payee towards the payer lets every step know the exact amount
the next channel must carry, so each forwarding fee is computed on the amount it
really applies to (BOLT 7: a node charges on the amount it forwards). The label
of a node is ``(fees, cltv_expiry_delta, hops)`` compared in that order; since
the amount a node must receive is the payment plus the fees downstream, fewer
fees also mean a smaller amount, and Dijkstra's greedy order stays correct.

The payer does not charge itself: its own channel adds no fee and no CLTV
delta, but its policy still has to allow the amount (not disabled, within the
HTLC limits and the capacity).

With a :class:`~lightspeed.routing.scorer.ScoreView` the label is one cost in msat
instead: fees, plus a CLTV risk term (``amount * delta * risk_factor / 1e9``, as
LND), plus the scorer's penalty for the hop's failure probability. Hops the scorer
knows cannot carry the amount are skipped.

Making it fast (A* with a bounded forward search): before the exact search, a short
Dijkstra *from the payer* settles its :data:`BOUND_NODES` nearest nodes, weighing
every hop as if it carried just the payment amount (the least any hop carries, so
no weight exceeds the real one). A settled node's distance, and for every other
node the radius reached, is a lower bound of the cost still to come from the payer;
``min(distance, radius)`` is a consistent A* potential, so the exact backward
search returns the same optimum while exploring a small fraction of the graph. For
the fee-only order the potential is the pair (fees, CLTV), compared as the labels
are. When the forward search runs out of nodes, the ones it never reached cannot
be reached from the payer at all and are skipped.

The loops run over the graph's :class:`~lightspeed.routing.graph.SearchIndex`: nodes
are ints, labels live in flat lists, edges are tuples of ints made once per graph,
and heap entries are single ints with the label packed in bit fields.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection
from dataclasses import dataclass, field

from lightspeed.errors import PaymentError, UsageError
from lightspeed.routing.graph import ChannelGraph, DirectedChannel, SearchIndex
from lightspeed.routing.scorer import Prior, ScoreView, success_probability

MAX_HOPS = 20  # BOLT 4: a 1300-byte onion holds at most 20 minimal hop payloads
#: Nodes the forward search from the payer settles to bound the exact search (tuned on
#: the generated mainnet-size graph: 30-100 all do well; more costs more than it saves).
BOUND_NODES = 64


class NoRouteError(PaymentError):
    """No path satisfies the amount, the policies and the limits."""


@dataclass(frozen=True)
class RouteHop:
    """One channel of a route, as the payer's onion will describe it."""

    short_channel_id: int
    pubkey: bytes  # the node this channel reaches
    amount_msat: int  # the HTLC amount carried over this channel
    fee_msat: int  # what ``pubkey`` charges to forward onward (0 at the payee)
    cltv_expiry_delta: int  # ``pubkey``'s delta for forwarding onward (0 at the payee)


@dataclass(frozen=True)
class Route:
    hops: tuple[RouteHop, ...]
    #: The channel direction of each hop (what a scorer learns about); empty when built by hand.
    channels: tuple[DirectedChannel, ...] = field(default=(), compare=False)

    @property
    def total_amount_msat(self) -> int:
        return self.hops[0].amount_msat

    @property
    def total_fee_msat(self) -> int:
        return sum(hop.fee_msat for hop in self.hops)

    @property
    def total_cltv_expiry_delta(self) -> int:
        return sum(hop.cltv_expiry_delta for hop in self.hops)


_INF = 1 << 80
_NEVER = 1 << 63


def find_route(
    graph: ChannelGraph,
    source: bytes,
    target: bytes,
    amount_msat: int,
    *,
    max_hops: int = MAX_HOPS,
    max_fee_msat: int | None = None,
    max_cltv_expiry_delta: int | None = None,
    score: ScoreView | None = None,
    avoid_channels: Collection[int] = (),
    avoid_nodes: Collection[bytes] = (),
    bound_nodes: int = BOUND_NODES,
) -> Route:
    """The cheapest route delivering ``amount_msat`` to ``target``; raises NoRouteError.

    Without ``score``: cheapest by fees, then total CLTV delta, then hops (the
    ``lightspeed route`` contract). With ``score`` (``scorer.view(now)``): cheapest by
    fees plus CLTV risk plus failure-probability penalty. ``avoid_channels`` holds
    directed keys (:func:`~lightspeed.routing.graph.directed_key`) and ``avoid_nodes``
    node ids that must not forward this payment. ``bound_nodes`` tunes the forward
    search that bounds the exact one (0: plain Dijkstra); it never changes the result's cost.
    """
    if amount_msat <= 0:
        raise UsageError("amount_msat must be positive")
    if source == target:
        raise UsageError("source and target are the same node")
    if max_hops < 1:
        raise UsageError("max_hops must be at least 1")
    index = graph.compiled()
    src, dst = index.position.get(source), index.position.get(target)
    if src is not None and dst is not None and index.max_sendable_msat[src] >= amount_msat:
        avoid_idx = {index.position[n] for n in avoid_nodes if n in index.position and n != source}
        caps = (_NEVER if max_fee_msat is None else max_fee_msat,
                _NEVER if max_cltv_expiry_delta is None else max_cltv_expiry_delta)
        avoid = frozenset(avoid_channels)
        if score is None:
            fee_bound = _fee_bounds(index, src, amount_msat, bound_nodes)
            found = _search_fees(index, src, dst, amount_msat, max_hops, caps, avoid, avoid_idx, fee_bound)
        else:
            bound = _cost_bounds(index, src, amount_msat, score, bound_nodes)
            found = _search_scored(index, src, dst, amount_msat, max_hops, caps, avoid, avoid_idx, score,
                                   bound)
        if found is not None:
            return _assemble(index, src, dst, *found)
    raise NoRouteError(
        f"no route from {source.hex()} to {target.hex()} for {amount_msat} msat"
    )


_Found = tuple[list[int], list[int]]  # (edge number each node sends over, amount it must receive)
_Bound = tuple[list[int], int]  # (distance from the payer per node, radius of the settled ball)
# (fee and CLTV distances from the payer per node, the radius as (fee, cltv), hops a bound spans)
_FeeBound = tuple[list[int], list[int], tuple[int, int], int]


def _fee_bounds(index: SearchIndex, src: int, amount: int, limit: int) -> _FeeBound:
    """A* potentials for the fee-only search: forward lexicographic (fee, cltv) distances.

    The exact search orders by (fees, cltv, hops), so its potential is a pair too:
    fees on ``amount`` (a lower bound, as in :func:`_cost_bounds`) and the CLTV deltas
    (exact). Without the CLTV part, payments so small that most fees round to
    zero would spread over every zero-fee node before reaching the payer.
    """
    n = len(index.ids)
    fees, cltvs = [_INF] * n, [0] * n
    fees[src] = 0
    heap = [(0, 0, src)]
    outgoing = index.outgoing
    pop, push = heapq.heappop, heapq.heappush
    settled = 0
    while heap:
        fee, cltv, node = pop(heap)
        if fee != fees[node] or cltv != cltvs[node]:
            continue
        settled += 1
        if settled > limit:
            return fees, cltvs, (fee, cltv), limit + 1  # every node not settled is at least this far
        payer = node == src
        for target, high, base, rate, delta, _key, _cap in outgoing[node]:
            if high < amount:
                continue
            if payer:
                nfee, ncltv = fee, cltv
            else:
                nfee, ncltv = fee + base + amount * rate // 1_000_000, cltv + delta
            old = fees[target]
            if nfee < old or (nfee == old and ncltv < cltvs[target]):
                fees[target], cltvs[target] = nfee, ncltv
                push(heap, (nfee, ncltv, target))
    return fees, cltvs, (_INF, 0), settled


def _cost_bounds(index: SearchIndex, src: int, amount: int, score: ScoreView, limit: int) -> _Bound:
    """A* potentials from a forward search of the payer's ``limit`` nearest nodes.

    Each hop weighs what the exact search would charge it if it carried just
    ``amount`` (fee, CLTV risk and scorer penalty, none for the payer's own fee):
    every term grows with the amount, and a hop carries at least ``amount``, so no
    weight exceeds the real one. Returns the distances and the radius at which the
    search stopped (``_INF`` when it reached every node it could).
    """
    dist = [_INF] * len(index.ids)
    dist[src] = 0
    heap = [(0, src)]
    outgoing = index.outgoing
    pop, push = heapq.heappop, heapq.heappush
    params = score.params
    prior, uniform = params.prior, params.prior is Prior.UNIFORM
    risk_factor = params.cltv_risk_factor_billionths
    per_hop = params.base_penalty_msat + (amount * params.base_penalty_amount_multiplier_msat >> 30)
    liq_weight = params.liquidity_penalty_multiplier_msat + (
        amount * params.liquidity_penalty_amount_multiplier_msat >> 20)
    bounds, trust, unknown_capacity = score.bounds, score.node_probability, params.unknown_capacity_msat
    log10 = math.log10
    settled = 0
    while heap:
        d, node = pop(heap)
        if d != dist[node]:
            continue
        settled += 1
        if settled > limit:
            return dist, d  # every node not settled yet is at least this far
        payer = node == src
        node_trust = 1.0 if payer or not trust else trust.get(index.ids[node], 1.0)
        for target, high, base, rate, delta, key, cap in outgoing[node]:
            if high < amount:
                continue
            nd = d + per_hop
            if not payer:
                nd += base + amount * rate // 1_000_000 + amount * delta * risk_factor // 1_000_000_000
            capacity = cap or unknown_capacity
            known = bounds.get(key) if bounds else None
            if known is None and uniform:
                p = (capacity - amount + 1) / (capacity + 1)
            else:
                lo, max_offset = known or (0, 0)
                p = success_probability(amount, lo, capacity - max_offset, capacity, prior)
            p *= node_trust
            if p <= 0.0:
                continue  # the exact search skips it too: a larger amount is no likelier
            if p < 1.0:
                nd += int(liq_weight * -log10(p))
            if nd < dist[target]:
                dist[target] = nd
                push(heap, (nd, target))
    return dist, _INF


def _search_fees(index: SearchIndex, src: int, dst: int, amount: int, max_hops: int,
                 caps: tuple[int, int], avoid: frozenset[int], avoid_nodes: set[int],
                 bound: _FeeBound) -> _Found | None:
    """A* backwards on (fees, cltv, hops); labels in flat lists indexed by node.

    A heap entry is one int, ``fees, cltv`` (each plus its potential), ``hops, node``
    packed in bit fields, so the heap compares ints instead of tuples; the lists
    hold the label itself.
    """
    n = len(index.ids)
    fee_cap, cltv_cap = caps
    bound_fees, bound_cltvs, (radius_fee, radius_cltv), bound_hops = bound
    node_bits = max(n - 1, 1).bit_length()
    hop_bits = (max_hops + 1).bit_length()
    max_delta = index.max_cltv_expiry_delta
    cltv_bits = (min(cltv_cap, max_hops * max_delta) + bound_hops * max_delta).bit_length() + 1
    hop_shift, cltv_shift = node_bits, node_bits + hop_bits
    fee_shift = cltv_shift + cltv_bits
    node_mask = (1 << node_bits) - 1
    pfee, pcltv = bound_fees[dst], bound_cltvs[dst]
    if pfee > radius_fee or (pfee == radius_fee and pcltv > radius_cltv):
        pfee, pcltv = radius_fee, radius_cltv
    if pfee >= _INF:
        return None  # the payer cannot reach the payee at all
    fees, cltvs, hopss, carried, via = [_INF] * n, [0] * n, [0] * n, [0] * n, [-1] * n
    keys = [-1] * n
    fees[dst], carried[dst] = 0, amount
    keys[dst] = pfee << fee_shift | pcltv << cltv_shift | dst
    incoming = index.incoming
    heap = [keys[dst]]
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        entry = pop(heap)
        node = entry & node_mask
        if entry != keys[node]:
            continue  # a better label replaced this one
        if node == src:
            return via, carried
        fee, cltv, hops = fees[node], cltvs[node], hopss[node]
        if hops >= max_hops:
            continue
        amt = carried[node]
        nhops = hops + 1
        for sender, low, high, base, rate, delta, edge, key, _cap in incoming[node]:
            if fees[sender] < fee or amt < low or amt > high:
                continue  # fees never fall along a path: a sender already cheaper stays so
            if avoid and key in avoid:
                continue
            if sender == src:
                nfee, ncltv, namt = fee, cltv, amt
            else:
                if avoid_nodes and sender in avoid_nodes:
                    continue
                hop_fee = base + amt * rate // 1_000_000
                nfee, ncltv, namt = fee + hop_fee, cltv + delta, amt + hop_fee
                if nfee > fee_cap or ncltv > cltv_cap:
                    continue
            old = fees[sender]
            if nfee < old or (nfee == old and (ncltv < cltvs[sender] or (
                    ncltv == cltvs[sender] and nhops < hopss[sender]))):
                pfee, pcltv = bound_fees[sender], bound_cltvs[sender]
                if pfee > radius_fee or (pfee == radius_fee and pcltv > radius_cltv):
                    pfee, pcltv = radius_fee, radius_cltv
                if pfee >= _INF:
                    continue  # unreachable from the payer
                fees[sender], cltvs[sender], hopss[sender] = nfee, ncltv, nhops
                carried[sender], via[sender] = namt, edge
                entry = ((nfee + pfee) << fee_shift | (ncltv + pcltv) << cltv_shift
                         | nhops << hop_shift | sender)
                keys[sender] = entry
                push(heap, entry)
                if sender == src:  # a route exists: nothing dearer than it is worth exploring
                    fee_cap = nfee
    return None


def _search_scored(index: SearchIndex, src: int, dst: int, amount: int, max_hops: int,
                   caps: tuple[int, int], avoid: frozenset[int], avoid_nodes: set[int],
                   score: ScoreView, bound: _Bound) -> _Found | None:
    """A* backwards on fees + CLTV risk + probability penalty (one int cost per node)."""
    n = len(index.ids)
    fee_cap, cltv_cap = caps
    dist, radius = bound
    potential = min(dist[dst], radius)
    if potential >= _INF:
        return None
    params = score.params
    avoid = avoid | score.banned
    bounds = score.bounds
    node_trust = {index.position[k]: v for k, v in score.node_probability.items() if k in index.position}
    node_trust.pop(src, None)
    uniform = params.prior is Prior.UNIFORM
    unknown_capacity = params.unknown_capacity_msat
    base_penalty, base_mult = params.base_penalty_msat, params.base_penalty_amount_multiplier_msat
    liq_mult, liq_amount_mult = params.liquidity_penalty_multiplier_msat, params.liquidity_penalty_amount_multiplier_msat
    risk_factor = params.cltv_risk_factor_billionths
    log10 = math.log10
    costs, fees, cltvs, hopss = [_INF] * n, [0] * n, [0] * n, [0] * n
    carried, via = [0] * n, [-1] * n
    node_bits = max(n - 1, 1).bit_length()
    cost_shift = node_bits + (max_hops + 1).bit_length()
    node_mask = (1 << node_bits) - 1
    keys = [-1] * n
    costs[dst], carried[dst], keys[dst] = 0, amount, potential << cost_shift | dst
    incoming = index.incoming
    heap = [keys[dst]]  # packed ints: cost + potential, hops, node (see _search_fees)
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        entry = pop(heap)
        node = entry & node_mask
        if entry != keys[node]:
            continue
        cost, hops = costs[node], hopss[node]
        if node == src:
            return via, carried
        if hops >= max_hops:
            continue
        amt, fee, cltv = carried[node], fees[node], cltvs[node]
        nhops = hops + 1
        hop_base = base_penalty + (amt * base_mult >> 30)
        liq_weight = liq_mult + (amt * liq_amount_mult >> 20)
        for sender, low, high, base, rate, delta, edge, key, cap in incoming[node]:
            if costs[sender] < cost or amt < low or amt > high:
                continue  # costs never fall along a path: a sender already cheaper stays so
            if avoid and key in avoid:
                continue
            capacity = cap or unknown_capacity
            known = bounds.get(key) if bounds else None
            if known is None and uniform:
                p = (capacity - amt + 1) / (capacity + 1)
            else:
                lo, max_offset = known or (0, 0)
                p = success_probability(amt, lo, capacity - max_offset, capacity, params.prior)
            if node_trust and sender in node_trust:
                p *= node_trust[sender]
            if p <= 0.0:
                continue
            ncost = cost + hop_base + (int(liq_weight * -log10(p)) if p < 1.0 else 0)
            if sender == src:
                nfee, ncltv, namt = fee, cltv, amt
            else:
                if sender in avoid_nodes:
                    continue
                hop_fee = base + amt * rate // 1_000_000
                nfee, ncltv, namt = fee + hop_fee, cltv + delta, amt + hop_fee
                if nfee > fee_cap or ncltv > cltv_cap:
                    continue
                ncost += hop_fee + amt * delta * risk_factor // 1_000_000_000
            old = costs[sender]
            if ncost < old or (ncost == old and nhops < hopss[sender]):
                potential = dist[sender]
                if potential > radius:
                    potential = radius
                if potential >= _INF:
                    continue
                costs[sender], fees[sender], cltvs[sender], hopss[sender] = ncost, nfee, ncltv, nhops
                carried[sender], via[sender] = namt, edge
                entry = (ncost + potential) << cost_shift | nhops << node_bits | sender
                keys[sender] = entry
                push(heap, entry)
    return None


def _assemble(index: SearchIndex, src: int, dst: int, via: list[int], carried: list[int]) -> Route:
    channels: list[DirectedChannel] = []
    node = src
    while node != dst:
        channel = index.channels[via[node]]
        channels.append(channel)
        node = index.position[channel.target]
    hops = []
    for i, channel in enumerate(channels):
        amount = carried[index.position[channel.target]]
        downstream = channels[i + 1] if i + 1 < len(channels) else None
        hops.append(RouteHop(
            short_channel_id=channel.short_channel_id,
            pubkey=channel.target,
            amount_msat=amount,
            fee_msat=0 if downstream is None else amount - carried[index.position[downstream.target]],
            cltv_expiry_delta=0 if downstream is None else downstream.policy.cltv_expiry_delta,
        ))
    return Route(tuple(hops), tuple(channels))
