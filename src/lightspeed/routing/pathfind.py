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
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from lightspeed.errors import PaymentError, UsageError
from lightspeed.routing.graph import ChannelGraph, DirectedChannel

MAX_HOPS = 20  # BOLT 4: a 1300-byte onion holds at most 20 minimal hop payloads


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

    @property
    def total_amount_msat(self) -> int:
        return self.hops[0].amount_msat

    @property
    def total_fee_msat(self) -> int:
        return sum(hop.fee_msat for hop in self.hops)

    @property
    def total_cltv_expiry_delta(self) -> int:
        return sum(hop.cltv_expiry_delta for hop in self.hops)


def find_route(
    graph: ChannelGraph,
    source: bytes,
    target: bytes,
    amount_msat: int,
    *,
    max_hops: int = MAX_HOPS,
    max_fee_msat: int | None = None,
    max_cltv_expiry_delta: int | None = None,
) -> Route:
    """The cheapest route delivering ``amount_msat`` to ``target``; raises NoRouteError."""
    if amount_msat <= 0:
        raise UsageError("amount_msat must be positive")
    if source == target:
        raise UsageError("source and target are the same node")
    fee_cap = (1 << 63) if max_fee_msat is None else max_fee_msat
    cltv_cap = (1 << 63) if max_cltv_expiry_delta is None else max_cltv_expiry_delta
    index = graph.search_index()
    # label: (fees, cltv, hops, amount the node must receive, channel it sends over)
    labels: dict[bytes, tuple[int, int, int, int, DirectedChannel | None]] = {
        target: (0, 0, 0, amount_msat, None)
    }
    heap: list[tuple[int, int, int, bytes]] = [(0, 0, 0, target)]
    pop, push = heapq.heappop, heapq.heappush
    while heap:
        fee, cltv, hops, node = pop(heap)
        label = labels[node]
        if label[0] != fee or label[1] != cltv or label[2] != hops:
            continue  # a better label replaced this one
        if node == source:
            return _assemble(labels, source, target)
        if hops >= max_hops:
            continue
        carried = label[3]
        next_hops = hops + 1
        for sender, low, high, base, rate, delta, channel in index.get(node, ()):
            if carried < low or carried > high:
                continue
            if sender == source:
                new = (fee, cltv, next_hops, carried, channel)
            else:
                hop_fee = base + carried * rate // 1_000_000
                new = (fee + hop_fee, cltv + delta, next_hops, carried + hop_fee, channel)
                if new[0] > fee_cap or new[1] > cltv_cap:
                    continue
            old = labels.get(sender)
            if old is None or new[:3] < old[:3]:
                labels[sender] = new
                push(heap, (new[0], new[1], next_hops, sender))
    raise NoRouteError(
        f"no route from {source.hex()} to {target.hex()} for {amount_msat} msat"
    )


def _assemble(
    labels: dict[bytes, tuple[int, int, int, int, DirectedChannel | None]], source: bytes, target: bytes
) -> Route:
    hops = []
    node = source
    while node != target:
        channel = labels[node][4]
        assert channel is not None
        here = labels[channel.target]
        downstream = here[4]
        hops.append(RouteHop(
            short_channel_id=channel.short_channel_id,
            pubkey=channel.target,
            amount_msat=here[3],
            fee_msat=0 if downstream is None else here[3] - labels[downstream.target][3],
            cltv_expiry_delta=0 if downstream is None else downstream.policy.cltv_expiry_delta,
        ))
        node = channel.target
    return Route(tuple(hops))
