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


@dataclass(frozen=True)
class _Label:
    fee_msat: int
    cltv: int
    hops: int
    amount_msat: int  # what this node must receive to deliver the payment onward
    via: DirectedChannel | None  # the channel this node sends over, towards the payee

    @property
    def key(self) -> tuple[int, int, int]:
        return (self.fee_msat, self.cltv, self.hops)


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
    labels: dict[bytes, _Label] = {target: _Label(0, 0, 0, amount_msat, None)}
    heap: list[tuple[int, int, int, bytes]] = [(0, 0, 0, target)]
    while heap:
        fee, cltv, hops, node = heapq.heappop(heap)
        label = labels[node]
        if label.key != (fee, cltv, hops):
            continue  # a better label replaced this one
        if node == source:
            return _assemble(labels, source, target)
        if hops >= max_hops:
            continue
        carried = label.amount_msat
        for channel in graph.channels_into(node):
            sender = channel.source
            if sender == node or not channel.carries(carried):
                continue
            if sender == source:
                new = _Label(fee, cltv, hops + 1, carried, channel)
            else:
                hop_fee = channel.policy.fee_msat(carried)
                new = _Label(fee + hop_fee, cltv + channel.policy.cltv_expiry_delta, hops + 1,
                             carried + hop_fee, channel)
            if max_fee_msat is not None and new.fee_msat > max_fee_msat:
                continue
            if max_cltv_expiry_delta is not None and new.cltv > max_cltv_expiry_delta:
                continue
            old = labels.get(sender)
            if old is None or new.key < old.key:
                labels[sender] = new
                heapq.heappush(heap, (new.fee_msat, new.cltv, new.hops, sender))
    raise NoRouteError(
        f"no route from {source.hex()} to {target.hex()} for {amount_msat} msat"
    )


def _assemble(labels: dict[bytes, _Label], source: bytes, target: bytes) -> Route:
    hops = []
    node = source
    while node != target:
        channel = labels[node].via
        assert channel is not None
        here = labels[channel.target]
        downstream = here.via
        hops.append(RouteHop(
            short_channel_id=channel.short_channel_id,
            pubkey=channel.target,
            amount_msat=here.amount_msat,
            fee_msat=0 if downstream is None else here.amount_msat - labels[downstream.target].amount_msat,
            cltv_expiry_delta=0 if downstream is None else downstream.policy.cltv_expiry_delta,
        ))
        node = channel.target
    return Route(tuple(hops))
