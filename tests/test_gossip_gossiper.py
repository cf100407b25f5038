"""Gossipers joined through memory: sync on connect, live relay with staggered flushes, warnings."""

from __future__ import annotations

from collections import deque

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.codec.features import Features
from lightspeed.codec.generated import (
    GossipTimestampFilter,
    ReplyChannelRange,
    ReplyShortChannelIdsEnd,
)
from lightspeed.codec.messages import Init, decode_message, encode_message
from lightspeed.gossip.gossiper import Gossiper, GossipStep
from lightspeed.gossip.view import NetworkView
from tests.gossip_network import CHAIN, Utxos, announcement, node_announcement, scid, update

NOW = 1_700_000_000
QUERIES = Init(features=Features.of(optional=["gossip_queries", "gossip_queries_ex"]).to_bytes())
PLAIN = Init()


class Net:
    """Named gossipers and the messages in flight between them (delivered in order)."""

    def __init__(self, utxos: Utxos) -> None:
        self.utxos = utxos
        self.nodes: dict[str, Gossiper] = {}
        self.wire: deque[tuple[str, str, bytes]] = deque()
        self.warnings: list[tuple[str, str, str]] = []

    def add(self, name: str, **kw: object) -> Gossiper:
        self.nodes[name] = Gossiper(CHAIN, self.utxos, NOW, **kw)  # type: ignore[arg-type]
        return self.nodes[name]

    def apply(self, sender: str, step: GossipStep) -> None:
        for peer, raw in step.send:
            self.wire.append((sender, str(peer), raw))
        self.warnings.extend((sender, str(peer), text) for peer, text in step.warnings)

    def connect(self, a: str, b: str, init_a: Init = QUERIES, init_b: Init = QUERIES) -> None:
        self.apply(a, self.nodes[a].connected(b, init_b, NOW))
        self.apply(b, self.nodes[b].connected(a, init_a, NOW))

    def run(self, now: int = NOW) -> int:
        delivered = 0
        while self.wire:
            sender, receiver, raw = self.wire.popleft()
            self.apply(receiver, self.nodes[receiver].receive(sender, raw, now))
            delivered += 1
        return delivered

    def tick(self, now: int) -> None:
        for name, node in self.nodes.items():
            self.apply(name, node.handle_timer(now))
        self.run(now)


def graph_of(view: NetworkView) -> set[tuple[int, bytes, int]]:
    graph = view.channel_graph()
    return {
        (c.short_channel_id, c.source, c.policy.fee_base_msat)
        for n in graph.nodes
        for c in graph.channels_into(n)
    }


def seeded(net: Net, name: str) -> Gossiper:
    node = net.add(name)
    for i, (a, b) in enumerate([(1, 2), (2, 3), (3, 4), (4, 1), (2, 4)]):
        short_id = scid(300 + i)
        net.utxos.fund(short_id, a, b)
        assert node.publish(announcement(short_id, a, b), NOW).accepted
        assert node.publish(update(short_id, a, b, NOW - i), NOW).accepted
        assert node.publish(update(short_id, b, a, NOW - i), NOW).accepted
    for n in (1, 2, 3, 4):
        assert node.publish(node_announcement(n, NOW), NOW).accepted
    return node


def test_a_new_node_syncs_on_connect_and_then_gets_live_gossip() -> None:
    net = Net(Utxos())
    source = seeded(net, "source")
    fresh = net.add("fresh")
    net.connect("source", "fresh")
    assert fresh.syncing("source")
    assert net.run() > 10
    assert not fresh.syncing("source") and net.warnings == []
    assert graph_of(fresh.view) == graph_of(source.view)
    assert len(list(fresh.view.store.nodes())) == 4
    # Live: the source publishes a fee change; nothing moves before the flush time.
    source.publish(update(scid(301), 2, 3, NOW + 10, fee_base_msat=999), NOW + 10)
    net.tick(NOW + 59)
    assert graph_of(fresh.view) != graph_of(source.view)
    net.tick(NOW + 60)
    assert graph_of(fresh.view) == graph_of(source.view)


def test_relay_through_a_middle_node_to_a_peer_without_queries() -> None:
    net = Net(Utxos())
    seeded(net, "a")
    b = net.add("b", sync_on_connect=False)
    c = net.add("c", sync_on_connect=False)
    net.connect("a", "b")
    # c sees b's init without gossip_queries, so c asks b for no gossip at all.
    net.connect("b", "c", init_b=QUERIES, init_a=PLAIN)
    sent_to_a = [raw for s, r, raw in net.wire if s == "b" and r == "a"]
    assert [type(decode_message(raw)).__name__ for raw in sent_to_a] == ["GossipTimestampFilter"]
    net.run()
    # Without sync, b got a's stored gossip as the answer to its timestamp filter.
    assert graph_of(b.view) == graph_of(net.nodes["a"].view)
    assert graph_of(c.view) == set()
    # c changes its mind with a new filter: b answers with its backlog, then relays live gossip.
    net.apply(
        "c",
        GossipStep(
            send=[
                (
                    "b",
                    encode_message(
                        GossipTimestampFilter(
                            chain_hash=CHAIN, first_timestamp=0, timestamp_range=0xFFFFFFFF
                        )
                    ),
                )
            ]
        ),
    )
    net.run()
    assert graph_of(c.view) == graph_of(b.view)  # the backlog again
    net.nodes["a"].publish(update(scid(300), 1, 2, NOW + 5, fee_base_msat=5), NOW + 5)
    net.tick(NOW + 60)  # a flushes to b; b queues
    net.tick(NOW + 120)  # b flushes to c
    assert graph_of(c.view) == graph_of(net.nodes["a"].view)


def test_peers_that_break_the_rules_get_warnings() -> None:
    net = Net(Utxos())
    node = net.add("n")
    node.connected("x", PLAIN, NOW)
    bad = bytearray(announcement(scid(1), 1, 2))
    net.utxos.fund(scid(1), 1, 2)
    bad[5] ^= 1
    step = node.receive("x", bytes(bad), NOW)
    assert step.warnings and "invalid channel_announcement" in step.warnings[0][1]
    end = encode_message(ReplyShortChannelIdsEnd(chain_hash=CHAIN, full_information=b"\x01"))
    assert "no query_short_channel_ids" in node.receive("x", end, NOW).warnings[0][1]
    assert "not gossip" in node.receive("x", b"\x01\x03" + bytes(10), NOW).warnings[0][1]
    truncated = encode_message(
        GossipTimestampFilter(chain_hash=CHAIN, first_timestamp=0, timestamp_range=1)
    )[:-2]
    assert node.receive("x", truncated, NOW).warnings
    # Ignored gossip (an update for a channel nobody announced) is not a reason to warn.
    quiet = node.receive("x", update(scid(77), 1, 2, NOW), NOW)
    assert quiet.warnings == [] and quiet.outcomes[0].unknown_short_channel_id == scid(77)


def test_peer_on_another_chain_gets_nothing() -> None:
    net = Net(Utxos())
    seeded(net, "a")
    step = net.nodes["a"].connected("other", Init(networks=(BITCOIN.chain_hash,)), NOW)
    assert step.send == []
    assert net.nodes["a"].handle_timer(NOW + 60).send == []


def test_a_bad_range_reply_ends_the_sync_with_a_warning() -> None:
    net = Net(Utxos())
    node = net.add("n")
    step = node.connected("x", QUERIES, NOW)
    assert [type(decode_message(raw)).__name__ for _, raw in step.send] == [
        "GossipTimestampFilter",
        "QueryChannelRange",
    ]
    assert node.syncing("x")
    wrong = ReplyChannelRange(
        chain_hash=CHAIN,
        first_blocknum=5,  # the query started at block 0: this reply does not cover it
        number_of_blocks=10,
        sync_complete=b"\x01",
        encoded_short_ids=b"\x00",
    )
    warnings = node.receive("x", encode_message(wrong), NOW).warnings
    assert warnings and "does not overlap" in warnings[0][1]
    assert not node.syncing("x")
