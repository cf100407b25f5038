"""A test DSL for networks of in-process nodes, in the style of LDK's functional tests.

``create_network(n, channels=[(a, b, sat, push)])`` starts ``n`` nodes on loopback TCP over one
in-memory regtest chain, opens the channels (a miner task runs only while they open, so the
height stays put during payments) and gives every node the graph of the public channels.
``send_payment`` pays along an explicit path, ``route_along`` builds that route (and lets a
test tamper with it to provoke a failure), ``claim_payment`` settles a hold invoice,
``take_offline`` / ``bring_online`` stop and restart a node from its own store.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.invoice import Invoice
from lightspeed.invoice.fields import RouteHintHop
from lightspeed.node.forwarding import DEFAULT_POLICY
from lightspeed.node.node import Node, NodeEvent
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.routing import ChannelGraph, Policy, Route, RouteHop
from lightspeed.store import SqliteStore, Store, open_store

ChannelSpec = tuple[int, int, int, int]  # (funder, peer, funding_sat, push_msat)


def node_key(i: int) -> bytes:
    return hashlib.sha256(b"network node %d" % i).digest()


@dataclass
class Network:
    chain: RegtestChain
    nodes: list[Node]
    ports: list[int]
    channels: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (a, b) -> channel id
    private: set[tuple[int, int]] = field(default_factory=set)
    datadir: Path | None = None

    def channel(self, a: int, b: int) -> bytes:
        return self.channels[(a, b)] if (a, b) in self.channels else self.channels[(b, a)]

    def scid(self, a: int, b: int) -> int:
        scid = self.nodes[a].short_channel_id(self.channel(a, b))
        assert scid is not None
        return scid

    def index(self, node_id: bytes) -> int:
        return next(i for i, n in enumerate(self.nodes) if n.node_id == node_id)

    def graph(self) -> ChannelGraph:
        """The public channels with each end's forwarding policy (what gossip would tell)."""
        graph = ChannelGraph()
        for (a, b), cid in self.channels.items():
            if (a, b) in self.private:
                continue
            capacity = self.nodes[a].channels[cid].config.funding_sat
            graph.add_channel(self.scid(a, b), self.nodes[a].node_id, self.nodes[b].node_id, capacity,
                              _policy(self.nodes[a].forwarding_policy), _policy(self.nodes[b].forwarding_policy))
        return graph

    def hint(self, via: int, payee: int) -> list[RouteHintHop]:
        """A route hint for ``payee``'s (private) channel from ``via``."""
        p = self.nodes[via].forwarding_policy
        return [RouteHintHop(self.nodes[via].node_id, self.scid(via, payee), p.fee_base_msat,
                             p.fee_proportional_millionths, p.cltv_expiry_delta)]

    def balance_msat(self, i: int) -> int:
        """What node ``i`` owns in its channels (its side of its latest commitments, HTLCs it offered included)."""
        total = 0
        for channel in self.nodes[i].channels.values():
            view = channel.log.commitment(Side.LOCAL)
            total += view.to_local_msat + sum(h.amount_msat for h in view.htlcs if h.offerer is Side.LOCAL)
        return total

    async def stop(self) -> None:
        for node in self.nodes:
            await node.stop()


def _policy(p: ForwardingPolicy) -> Policy:
    return Policy(p.fee_base_msat, p.fee_proportional_millionths, p.cltv_expiry_delta, p.htlc_minimum_msat,
                  None, not p.enabled)


def _store(datadir: Path | None, i: int) -> Store:
    return SqliteStore(":memory:") if datadir is None else open_store(datadir / f"node{i}", fsync=False)


def _make_node(chain: RegtestChain, i: int, store: Store, mpp_timeout: float,
               policy: ForwardingPolicy) -> Node:
    return Node(node_key(i), chain, b"network wallet seed %d" % i, store=store, mpp_timeout=mpp_timeout,
                forwarding_policy=policy)


async def create_network(n: int, channels: Iterable[ChannelSpec], *, private: Iterable[tuple[int, int]] = (),
                         policies: dict[int, ForwardingPolicy] | None = None, mpp_timeout: float = 60.0,
                         datadir: Path | None = None) -> Network:
    chain = RegtestChain(":memory:")
    policies = policies or {}
    nodes = [_make_node(chain, i, _store(datadir, i), mpp_timeout, policies.get(i, DEFAULT_POLICY))
             for i in range(n)]
    specs = list(channels)
    for funder, _, sat, _ in specs:  # one coin per channel, with room for the funding fee
        chain.fund(nodes[funder].wallet.new_key().script_pubkey, sat + 1_000_000)
    ports = [await node.start() for node in nodes]
    net = Network(chain, nodes, ports, private=set(private), datadir=datadir)
    connected: set[frozenset[int]] = set()
    for a, b, _, _ in specs:
        if frozenset((a, b)) not in connected:
            await nodes[a].connect("127.0.0.1", ports[b], nodes[b].node_id)
            connected.add(frozenset((a, b)))

    async def open_all() -> None:
        for a, b, sat, push in specs:
            net.channels[(a, b)] = await nodes[a].open_channel(nodes[b].node_id, sat, push)

    await with_miner(chain, open_all)
    for (a, b), cid in net.channels.items():  # both ends ready before any payment
        await until(lambda a=a, b=b, cid=cid: nodes[a].channel_is_ready(cid) and nodes[b].channel_is_ready(cid))
    graph = net.graph()
    for node in nodes:
        node.graph = graph
    return net


def no_htlcs(net: Network) -> bool:
    """No HTLC left in any commitment of any channel (every payment settled or failed)."""
    return all(not c.log.commitment(Side.LOCAL).htlcs and not c.log.commitment(Side.REMOTE).htlcs
               for n in net.nodes for c in n.channels.values())


async def with_miner(chain: RegtestChain, work: Callable[[], Awaitable[None]]) -> None:
    async def miner() -> None:
        while True:
            await asyncio.sleep(0.02)
            chain.mine(1)

    mining = asyncio.create_task(miner())
    try:
        await asyncio.wait_for(work(), 60)
    finally:
        mining.cancel()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def route_along(net: Network, path: list[int], amount_msat: int, *,
                fee_cut_msat: int = 0, cltv_cut: int = 0, scid_override: dict[int, int] | None = None) -> Route:
    """The route ``path[0] -> ... -> path[-1]`` delivering ``amount_msat``, fees and deltas by each
    forwarder's policy. ``fee_cut_msat``/``cltv_cut`` pay the first forwarder that much less fee
    or delta; ``scid_override`` {hop index: scid} names a wrong channel."""
    hops: list[RouteHop] = []
    amount = amount_msat
    for i in range(len(path) - 1, 0, -1):
        node, prev = path[i], path[i - 1]
        scid = (scid_override or {}).get(i - 1, net.scid(prev, node))
        if i == len(path) - 1:
            fee, delta = 0, 0
        else:
            policy = net.nodes[node].forwarding_policy
            fee, delta = policy.fee_msat(amount), policy.cltv_expiry_delta
            if i == 1:
                fee, delta = fee - fee_cut_msat, delta - cltv_cut
        hops.append(RouteHop(scid, net.nodes[node].node_id, amount + fee, fee, delta))
        amount += fee
    return Route(tuple(reversed(hops)))


async def send_payment(net: Network, path: list[int], amount_msat: int, **tamper: object) -> tuple[bytes, Invoice]:
    """Pay an invoice of ``path[-1]`` along exactly ``path``; returns (preimage, invoice)."""
    invoice = net.nodes[path[-1]].create_invoice(amount_msat, "functional test")
    route = route_along(net, path, amount_msat, **tamper)  # type: ignore[arg-type]
    preimage = await asyncio.wait_for(
        net.nodes[path[0]].send_to_route(route, invoice.payment_hash, invoice.payment_secret), 20)
    return preimage, invoice


async def claim_payment(net: Network, payee: int, preimage: bytes) -> None:
    """The payee's application releases a held payment."""
    await net.nodes[payee].settle_hold(preimage)


async def next_event(node: Node, kind: type, timeout: float = 10.0) -> NodeEvent:
    """The next event of ``kind`` (earlier events of other kinds are dropped)."""
    async def wait() -> NodeEvent:
        while True:
            event = await node.events.get()
            if isinstance(event, kind):
                return event

    return await asyncio.wait_for(wait(), timeout)


async def take_offline(net: Network, i: int) -> None:
    await net.nodes[i].stop()


async def bring_online(net: Network, i: int) -> Node:
    """Restart node ``i`` from its store on its old port (its peers redial it)."""
    old = net.nodes[i]
    node = _make_node(net.chain, i, old.store, old.mpp_timeout, old.forwarding_policy)
    node.graph = old.graph
    await node.start(port=net.ports[i])
    net.nodes[i] = node
    return node


async def restart_from_disk(net: Network, i: int) -> Node:
    """A crash: the node object is dropped and a new one loads what its store committed."""
    assert net.datadir is not None
    old = net.nodes[i]
    await old.stop()
    old.store.close()
    node = _make_node(net.chain, i, _store(net.datadir, i), old.mpp_timeout, old.forwarding_policy)
    node.graph = old.graph
    await node.start(port=net.ports[i])
    net.nodes[i] = node
    return node
