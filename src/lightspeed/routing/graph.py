"""The channel graph: nodes, channels and each direction's forwarding policy.

A channel has two directions; the policy of a direction is set by the node the
HTLC leaves from (BOLT 7 ``channel_update``: "the fee the node charges to forward
over this channel"). The graph is kept as adjacency lists of *incoming* directed
edges per node, because path finding walks backwards from the payee: fees depend
on the amount still to be delivered downstream.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lightspeed.errors import UsageError

if TYPE_CHECKING:
    from lightspeed.invoice.fields import RouteHintHop


@dataclass(frozen=True, slots=True)
class Policy:
    """One direction's forwarding terms (BOLT 7 ``channel_update`` fields)."""

    fee_base_msat: int
    fee_proportional_millionths: int
    cltv_expiry_delta: int
    htlc_minimum_msat: int = 0
    htlc_maximum_msat: int | None = None
    disabled: bool = False

    def fee_msat(self, amount_to_forward_msat: int) -> int:
        """BOLT 7: fee_base_msat + amount_to_forward * fee_proportional_millionths / 1000000."""
        return self.fee_base_msat + amount_to_forward_msat * self.fee_proportional_millionths // 1_000_000

    def carries(self, amount_msat: int) -> bool:
        if self.disabled or amount_msat < self.htlc_minimum_msat:
            return False
        return self.htlc_maximum_msat is None or amount_msat <= self.htlc_maximum_msat


@dataclass(frozen=True, slots=True)
class DirectedChannel:
    """A channel seen in one direction: from ``source`` to ``target`` under ``policy``."""

    short_channel_id: int
    source: bytes
    target: bytes
    capacity_sat: int | None
    policy: Policy

    def carries(self, amount_msat: int) -> bool:
        if self.capacity_sat is not None and amount_msat > self.capacity_sat * 1000:
            return False
        return self.policy.carries(amount_msat)


# A usable direction flattened for the search loop:
# (sender, min_msat, max_msat, fee_base_msat, fee_proportional_millionths, cltv_expiry_delta, channel)
SearchEdge = tuple[bytes, int, int, int, int, int, DirectedChannel]
_NO_LIMIT = 1 << 63

# An enabled direction as the compiled search loop reads it, every field an int:
# (sender index, min_msat, max_msat, fee_base_msat, fee_proportional_millionths,
#  cltv_expiry_delta, edge number, directed key, capacity_msat (else htlc_maximum_msat, else 0))
CompiledEdge = tuple[int, int, int, int, int, int, int, int, int]
# The same direction seen from its sender, for the forward bound search:
# (target index, max_msat, fee_base_msat, fee_proportional_millionths, cltv_expiry_delta,
#  directed key, capacity_msat)
OutgoingEdge = tuple[int, int, int, int, int, int, int]


@contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a graph is built.

    Building one allocates hundreds of thousands of objects, none of them garbage; each
    young-generation threshold crossed would make the collector walk them again (a third
    of a mainnet-size load). Reference counting still frees everything as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def directed_key(short_channel_id: int, source: bytes, target: bytes) -> int:
    """One int naming a channel direction: ``scid << 1 | direction``.

    BOLT 7: direction 0 is from the node whose id is lexicographically lesser.
    Scorers key what they learn by it, so it survives rebuilding the graph.
    """
    return short_channel_id << 1 | (0 if source < target else 1)


@dataclass
class SearchIndex:
    """The graph compiled for path finding: nodes as ints, edges as int tuples.

    Built once per graph (and extended, not rebuilt, for route hints). Searching
    with ints and preallocated tuples avoids creating objects in the inner loop.
    ``incoming`` serves the exact search from the payee, ``outgoing`` the short
    forward search from the payer that bounds it.
    """

    ids: list[bytes]
    position: dict[bytes, int]
    incoming: list[list[CompiledEdge]]
    channels: list[DirectedChannel]
    max_cltv_expiry_delta: int = 0
    outgoing: list[list[OutgoingEdge]] = field(default_factory=list)
    #: Per node, the most one of its enabled channels can carry out (0: none): a payer
    #: that cannot send the amount at all is answered at once, not after a whole search.
    max_sendable_msat: list[int] = field(default_factory=list)

    def node(self, node_id: bytes) -> int:
        """The index of ``node_id``, adding it (with no channels) when unknown."""
        index = self.position.get(node_id)
        if index is None:
            index = len(self.ids)
            self.position[node_id] = index
            self.ids.append(node_id)
            self.incoming.append([])
            self.outgoing.append([])
            self.max_sendable_msat.append(0)
        return index

    def add(self, channel: DirectedChannel) -> None:
        if channel.policy.disabled or channel.source == channel.target:
            return
        self.add_at(self.node(channel.source), self.node(channel.target), channel)

    def add_at(self, sender: int, target: int, channel: DirectedChannel) -> None:
        """:meth:`add` for an enabled direction whose two nodes are already at ``sender``, ``target``.

        Split out for loaders that know the node indexes (a graph snapshot): no lookups.
        """
        p = channel.policy
        limit = _NO_LIMIT if p.htlc_maximum_msat is None else p.htlc_maximum_msat
        capacity_msat = p.htlc_maximum_msat or 0  # what a scorer assumes when capacity is unknown
        if channel.capacity_sat is not None:
            capacity_msat = channel.capacity_sat * 1000
            limit = min(limit, capacity_msat)
        key = directed_key(channel.short_channel_id, channel.source, channel.target)
        self.incoming[target].append((
            sender, p.htlc_minimum_msat, limit, p.fee_base_msat, p.fee_proportional_millionths,
            p.cltv_expiry_delta, len(self.channels), key, capacity_msat,
        ))
        self.outgoing[sender].append((target, limit, p.fee_base_msat, p.fee_proportional_millionths,
                                      p.cltv_expiry_delta, key, capacity_msat))
        self.channels.append(channel)
        self.max_cltv_expiry_delta = max(self.max_cltv_expiry_delta, p.cltv_expiry_delta)
        self.max_sendable_msat[sender] = max(self.max_sendable_msat[sender], limit)

    def extended(self, channels: Iterable[DirectedChannel]) -> SearchIndex:
        """A copy with more channels; only the lists of their target nodes are copied."""
        copy = SearchIndex(list(self.ids), dict(self.position), list(self.incoming), list(self.channels),
                           self.max_cltv_expiry_delta, list(self.outgoing), list(self.max_sendable_msat))
        copied_in: set[int] = set()
        copied_out: set[int] = set()
        for channel in channels:
            target, sender = copy.node(channel.target), copy.node(channel.source)
            if target not in copied_in and target < len(self.ids):
                copy.incoming[target] = list(copy.incoming[target])
                copied_in.add(target)
            if sender not in copied_out and sender < len(self.ids):
                copy.outgoing[sender] = list(copy.outgoing[sender])
                copied_out.add(sender)
            copy.add(channel)
        return copy


@dataclass
class ChannelGraph:
    """Directed channels indexed by the node they lead to (for backward search)."""

    incoming: dict[bytes, list[DirectedChannel]] = field(default_factory=dict)
    nodes: set[bytes] = field(default_factory=set)
    channel_count: int = 0
    _search_index: dict[bytes, list[SearchEdge]] | None = field(default=None, repr=False)
    _compiled: SearchIndex | None = field(default=None, repr=False)

    def compiled(self) -> SearchIndex:
        """The :class:`SearchIndex` of the enabled directions (built once, dropped on any change)."""
        if self._compiled is None:
            index = SearchIndex([], {}, [], [])
            for node_id in sorted(self.nodes):
                index.node(node_id)
            for channels in self.incoming.values():
                for channel in channels:
                    index.add(channel)
            self._compiled = index
        return self._compiled

    def search_index(self) -> dict[bytes, list[SearchEdge]]:
        """Enabled directions as flat tuples (built once, dropped on any change).

        Path finding touches every edge many times; tuples of ints are several
        times faster to test than attribute lookups on dataclasses.
        """
        if self._search_index is None:
            index: dict[bytes, list[SearchEdge]] = {}
            for target, channels in self.incoming.items():
                flat = []
                for ch in channels:
                    p = ch.policy
                    if p.disabled or ch.source == target:
                        continue
                    limit = _NO_LIMIT if p.htlc_maximum_msat is None else p.htlc_maximum_msat
                    if ch.capacity_sat is not None:
                        limit = min(limit, ch.capacity_sat * 1000)
                    flat.append((ch.source, p.htlc_minimum_msat, limit, p.fee_base_msat,
                                 p.fee_proportional_millionths, p.cltv_expiry_delta, ch))
                index[target] = flat
            self._search_index = index
        return self._search_index

    def add_node(self, node_id: bytes) -> None:
        self.nodes.add(node_id)

    def add_direction(self, channel: DirectedChannel) -> None:
        self.nodes.add(channel.source)
        self.nodes.add(channel.target)
        self.incoming.setdefault(channel.target, []).append(channel)
        self._search_index = None
        self._compiled = None

    def add_channel(
        self,
        short_channel_id: int,
        node1: bytes,
        node2: bytes,
        capacity_sat: int | None,
        policy1: Policy | None,
        policy2: Policy | None,
    ) -> None:
        """A channel with the policy each end sets for HTLCs leaving it (None: unknown, unusable)."""
        self.channel_count += 1
        self.nodes.update((node1, node2))
        if policy1 is not None:
            self.add_direction(DirectedChannel(short_channel_id, node1, node2, capacity_sat, policy1))
        if policy2 is not None:
            self.add_direction(DirectedChannel(short_channel_id, node2, node1, capacity_sat, policy2))

    def with_route_hints(self, route_hints: Iterable[Iterable[RouteHintHop]], payee: bytes) -> ChannelGraph:
        """A copy that also knows the private channels of invoice route hints (BOLT 11 ``r``).

        Each hop names the node at the start of a channel and that node's policy for
        forwarding over it; the channel leads to the next hop's node, the last to the payee.
        Only the lists of the nodes the hints lead to are copied.
        """
        graph = ChannelGraph(dict(self.incoming), set(self.nodes), self.channel_count)
        added = []
        for route in route_hints:
            hops = list(route)
            for i, hop in enumerate(hops):
                target = hops[i + 1].pubkey if i + 1 < len(hops) else payee
                policy = Policy(hop.fee_base_msat, hop.fee_proportional_millionths, hop.cltv_expiry_delta)
                channel = DirectedChannel(hop.short_channel_id, hop.pubkey, target, None, policy)
                graph.incoming[target] = [*graph.incoming.get(target, ()), channel]
                graph.nodes.update((hop.pubkey, target))
                added.append(channel)
        if self._compiled is not None:  # reuse the compiled base: hints must not cost a rebuild
            graph._compiled = self._compiled.extended(added)
        return graph

    def with_own_channels(self, node_id: bytes, channels: Iterable[DirectedChannel]) -> ChannelGraph:
        """A copy in which ``node_id``'s enabled directions are ``channels`` instead of gossip's.

        A payer knows its own channels better than gossip does (which are usable now, what each
        can send). The copy reuses this graph's compiled index: only the lists of ``node_id``
        and its peers are copied, so a payment does not recompile the network (about 1 s of
        CPU per payment at mainnet size). Directions of ``node_id`` that gossip has disabled
        stay listed in ``incoming``; they are not searched, here or in the original.
        """
        base = self.compiled()
        graph = ChannelGraph(dict(self.incoming), set(self.nodes), self.channel_count)
        graph.nodes.add(node_id)
        index = SearchIndex(list(base.ids), dict(base.position), list(base.incoming), list(base.channels),
                            base.max_cltv_expiry_delta, list(base.outgoing), list(base.max_sendable_msat))
        me = index.node(node_id)
        if me < len(base.ids):
            for edge in base.outgoing[me]:
                target = edge[0]
                index.incoming[target] = [e for e in index.incoming[target] if e[0] != me]
                target_id = base.ids[target]
                graph.incoming[target_id] = [c for c in graph.incoming[target_id] if c.source != node_id]
            index.outgoing[me] = []
            index.max_sendable_msat[me] = 0
        for channel in channels:
            if channel.source != node_id:
                raise UsageError("with_own_channels: every channel must leave node_id")
            graph.nodes.add(channel.target)
            graph.incoming[channel.target] = [*graph.incoming.get(channel.target, ()), channel]
            at = index.position.get(channel.target)
            if at is not None and at < len(base.ids) and index.incoming[at] is base.incoming[at]:
                index.incoming[at] = list(index.incoming[at])  # still the base's list: copy, then add
            index.add(channel)
        graph._compiled = index
        return graph

    def channels_into(self, node_id: bytes) -> Iterable[DirectedChannel]:
        return self.incoming.get(node_id, ())
