"""Onion messages between real nodes over loopback TCP (issue 13: onion messages in the node).

A line of four nodes A-B-C-D with channels (tests.support.network) that know each other's
node_announcement features: messages are routed over the graph to nodes that relay onion
messages, replies come back over the reply path, blinded paths are followed (with us as the
introduction node too), and hostile input and floods are dropped without touching anything else.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from lightspeed.codec.features import Features
from lightspeed.codec.generated import OnionMessage as WireOnionMessage
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError
from lightspeed.gossip.store import NodeRecord
from lightspeed.node.node import Node
from lightspeed.node.onion_messenger import PING_TYPE, PONG_TYPE
from lightspeed.node.onion_ratelimit import OnionMessageLimits, PeerRateLimiter
from lightspeed.node.peer import DEFAULT_FEATURES, Peer
from lightspeed.node.peer import connect as connect_peer
from lightspeed.onion.blinding import EncryptedDataTlv, create_blinded_path
from lightspeed.onion.message import OnionMessagePayload, build_onion_message, create_reply_path
from tests.support.network import Network, create_network, send_payment, until

SAT = 1_000_000


def _announce(net: Network, *, without: tuple[int, ...] = ()) -> None:
    """Give every node the node_announcement features of every other (what gossip would tell)."""
    for node in net.nodes:
        store = node.gossip.gossiper.view.store
        for i, other in enumerate(net.nodes):
            features = other.features if i not in without else Features(other.features.bits - {38, 39})
            store.put_node(NodeRecord(other.node_id, 1, features.for_context("N").to_bytes(), b"", b"\0\0\0",
                                      (), True, b""))


async def _line() -> Network:
    net = await create_network(4, [(0, 1, SAT, 0), (1, 2, SAT, 0), (2, 3, SAT, 0)])
    _announce(net)
    return net


def _ping_to(node: Node, value: bytes = b"ping") -> tuple[bytes, WireOnionMessage]:
    """A valid one-hop message for ``node`` (no reply path)."""
    path = create_blinded_path(os.urandom(32), [node.node_id], [EncryptedDataTlv()])
    first, message = build_onion_message(os.urandom(32), path, OnionMessagePayload(records=((PING_TYPE, value),)))
    return first, WireOnionMessage(message.path_key, message.onion_message_packet)


async def _raw_peer(net: Network, i: int, features: Features = DEFAULT_FEATURES) -> tuple[Peer, bytes]:
    """A bare connection to node ``i`` (a peer we script by hand) and its node id."""
    key = os.urandom(32)
    peer = await connect_peer("127.0.0.1", net.ports[i], key, net.nodes[i].node_id, features)
    return peer, pubkey_from_privkey(key)


def test_a_request_crosses_three_hops_and_the_reply_comes_back_over_the_reply_path() -> None:
    async def scenario() -> None:
        net = await _line()
        a, b, c, d = net.nodes
        try:
            began = time.monotonic()
            reply = await a.onion_messages.request(d.node_id, [(PING_TYPE, b"hello D")], timeout=10)
            assert reply.is_reply and reply.records == ((PONG_TYPE, b"hello D"),)
            assert time.monotonic() - began < 5
            # A -> B -> C -> D, and D's pong D -> C -> B (the reply path's introduction) -> A.
            assert b.onion_messages.counts["relayed"] == 2 and c.onion_messages.counts["relayed"] == 2
            assert d.onion_messages.stats()["received"] == 1 and a.onion_messages.stats()["replies"] == 1
            assert sum(n.onion_messages.stats()["dropped"] for n in net.nodes) == 0
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_path_avoids_nodes_that_do_not_relay_onion_messages() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, _, d = net.nodes
        try:
            _announce(net, without=(2,))  # C no longer announces option_onion_messages
            with pytest.raises(UsageError, match="no path of onion-message nodes"):
                await a.onion_messages.send(d.node_id, [(PING_TYPE, b"x")])
            _announce(net, without=(3,))  # C relays again, but D announces no onion messages
            with pytest.raises(UsageError, match="does not support onion messages"):
                await a.onion_messages.send(d.node_id, [(PING_TYPE, b"x")])
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_blinded_paths_through_a_peer_and_with_us_as_introduction_node() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, c, d = net.nodes
        try:
            path, path_id = d.onion_messages.blinded_path_to_us()  # D's peer C introduces it
            assert path.first_node_id == c.node_id
            got: asyncio.Queue[bytes | None] = asyncio.Queue()

            async def handler(message: object) -> None:
                await got.put(getattr(message, "path_id", None))

            d.onion_messages.register(77_777, handler)
            sent = await a.onion_messages.send(path, [(77_777, b"to a blinded path")])
            assert sent.first_hop == net.nodes[1].node_id and sent.hops == 3  # B (ours), then C and D (blinded by D)
            assert await asyncio.wait_for(got.get(), 5) == path_id  # the handler sees which path it came by
            # C is the introduction node of the same kind of path: it opens its own hop and sends on.
            sent = await c.onion_messages.send(d.onion_messages.blinded_path_to_us()[0], [(77_777, b"x")])
            assert sent.first_hop == d.node_id and not sent.delivered_locally
            assert (await asyncio.wait_for(got.get(), 5)) is not None
            # A blinded path that ends at the sender (it introduces itself) is delivered at once.
            own = create_reply_path(os.urandom(32), [a.node_id], b"own path")
            a.onion_messages.register(77_777, handler)
            assert (await a.onion_messages.send(own, [(77_777, b"")])).delivered_locally
            assert await asyncio.wait_for(got.get(), 5) == b"own path"
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_hostile_onion_messages_are_dropped_and_the_connection_stays_up() -> None:
    async def scenario() -> None:
        net = await _line()
        b = net.nodes[1]
        try:
            peer, _ = await _raw_peer(net, 1)
            _, good = _ping_to(b)
            packet = good.onion_message_packet
            garbage = WireOnionMessage(good.path_key, bytes([0]) + os.urandom(len(packet) - 1))
            wrong_hmac = WireOnionMessage(good.path_key, packet[:-1] + bytes([packet[-1] ^ 1]))
            oversized = WireOnionMessage(good.path_key, packet + bytes(40_000 - len(packet)))
            bad_version = WireOnionMessage(good.path_key, b"\x01" + packet[1:])
            for message in (garbage, wrong_hmac, oversized, bad_version):
                await peer.send(message)
            await peer.send(good)  # after all that, the same connection still delivers
            await until(lambda: b.onion_messages.counts["received"] == 1, 5)
            stats = b.onion_messages.stats()
            assert stats["dropped_by_reason"] == {"invalid": 3, "oversized": 1}
            assert stats["recent"][-1]["records"] == [{"type": PING_TYPE, "hex": b"ping".hex()}]
            assert not peer.session.closed and peer.remote_pubkey is not None
            assert net.nodes[0].node_id in b.peer_ids()
            await peer.close()
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_peer_that_did_not_offer_onion_messages_is_sent_none_and_heard_not() -> None:
    async def scenario() -> None:
        net = await _line()
        b = net.nodes[1]
        try:
            plain = Features(DEFAULT_FEATURES.bits - {38, 39})
            peer, peer_id = await _raw_peer(net, 1, plain)
            await until(lambda: peer_id in b.peer_ids(), 5)
            _, good = _ping_to(b)
            await peer.send(good)
            await until(lambda: b.onion_messages.dropped["not_negotiated"] == 1, 5)
            assert b.onion_messages.counts["received"] == 0 and not peer.session.closed
            # Nor does B route through it: it is no first hop for an onion message.
            with pytest.raises(UsageError, match="does not support onion messages"):
                await b.onion_messages.send(peer_id, [(PING_TYPE, b"x")])
            await peer.close()
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_flooding_peer_is_throttled_while_other_messages_and_payments_go_on() -> None:
    async def scenario() -> None:
        net = await _line()
        a, b, _, d = net.nodes
        burst = 20
        b.onion_messages.limiter = PeerRateLimiter(OnionMessageLimits(burst=burst, per_second=1))
        try:
            flooder, flooder_id = await _raw_peer(net, 1)
            _, message = _ping_to(b)
            began = time.monotonic()
            for _ in range(3 * burst):
                flooder.session.send(message)
            await flooder.flush()
            counts = b.onion_messages.counts
            await until(lambda: counts["received"] + b.onion_messages.dropped["rate_limited"] == 3 * burst, 10)
            refilled = int(time.monotonic() - began) + 1  # tokens that came back meanwhile (1 a second)
            assert burst <= counts["received"] <= burst + refilled
            assert b.onion_messages.stats()["rate_limited_by_peer"] == {
                flooder_id.hex(): 3 * burst - counts["received"]}
            # A's own bucket at B is untouched: its request crosses B both ways, and a payment too.
            reply = await a.onion_messages.request(d.node_id, [(PING_TYPE, b"still here")], timeout=10)
            assert reply.records == ((PONG_TYPE, b"still here"),)
            preimage, invoice = await send_payment(net, [0, 1, 2, 3], 10_000)
            assert invoice.payment_hash == sha256(preimage)
            assert not flooder.session.closed  # throttled, not disconnected
            await flooder.close()
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_request_times_out_after_its_attempts_and_a_late_reply_is_dropped() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, _, d = net.nodes
        d.onion_messages.answer_pings = False
        try:
            began = time.monotonic()
            with pytest.raises(TimeoutError, match="2 attempts"):
                await a.onion_messages.request(d.node_id, [(PING_TYPE, b"x")], timeout=0.6, attempts=2)
            assert 0.6 <= time.monotonic() - began < 3
            assert d.onion_messages.counts["received"] == 2  # one message per attempt
            # A reply through the reply path of an attempt that ended is dropped, not handed to handlers.
            late = d.onion_messages.recent[-1]
            await d.onion_messages.reply(late, [(PONG_TYPE, b"late")])
            await until(lambda: a.onion_messages.dropped["reply_path_not_awaited"] == 1, 5)
            assert a.onion_messages.counts["received"] == 0
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_a_next_peer_that_stops_reading_holds_up_no_one_else() -> None:
    async def scenario() -> None:
        net = await _line()
        a, b, _, d = net.nodes
        try:
            x_key = os.urandom(32)
            x_id = pubkey_from_privkey(x_key)
            stalled = await connect_peer("127.0.0.1", net.ports[1], x_key, b.node_id)
            await until(lambda: x_id in b.peer_ids(), 5)
            path = create_blinded_path(os.urandom(32), [b.node_id, x_id],
                                       [EncryptedDataTlv(next_node_id=x_id), EncryptedDataTlv()])
            stalled._writer.transport.pause_reading()  # type: ignore[attr-defined]  # X reads no more
            for _ in range(150):  # ~5 MB through B towards X: far more than the sockets buffer
                await a.onion_messages.send(path, [(77_777, bytes(20_000))])
            # B keeps serving A: a request through B to D and back, and a payment over B.
            reply = await a.onion_messages.request(d.node_id, [(PING_TYPE, b"not stuck")], timeout=5, attempts=1)
            assert reply.records == ((PONG_TYPE, b"not stuck"),)
            preimage, invoice = await send_payment(net, [0, 1, 2, 3], 10_000)
            assert invoice.payment_hash == sha256(preimage)
            await stalled.close()
        finally:
            await net.stop()

    asyncio.run(scenario())


def test_hops_named_by_short_channel_id_and_dummy_hops_at_the_recipient() -> None:
    async def scenario() -> None:
        net = await _line()
        a, _, c, d = net.nodes
        got: asyncio.Queue[bytes | None] = asyncio.Queue()

        async def handler(message: object) -> None:
            await got.put(getattr(message, "path_id", None))

        d.onion_messages.register(77_777, handler)
        try:
            # BOLT #4: if `short_channel_id` is present and corresponds to ... a channel: the next
            # peer is the peer at the other end of that channel.
            by_scid = create_blinded_path(os.urandom(32), [c.node_id, d.node_id], [
                EncryptedDataTlv(short_channel_id=net.scid(2, 3)), EncryptedDataTlv(path_id=b"scid")])
            await a.onion_messages.send(by_scid, [(77_777, b"")])
            assert await asyncio.wait_for(got.get(), 5) == b"scid"
            # A dummy hop: D's own hop names D again; D peels it too and reads the final payload.
            dummy = create_blinded_path(os.urandom(32), [c.node_id, d.node_id, d.node_id], [
                EncryptedDataTlv(next_node_id=d.node_id), EncryptedDataTlv(next_node_id=d.node_id),
                EncryptedDataTlv(path_id=b"dummy")])
            await a.onion_messages.send(dummy, [(77_777, b"")])
            assert await asyncio.wait_for(got.get(), 5) == b"dummy"
            # A channel C does not have: ignored there (BOLT #4: otherwise: MUST ignore the message).
            unknown = create_blinded_path(os.urandom(32), [c.node_id, d.node_id], [
                EncryptedDataTlv(short_channel_id=net.scid(0, 1)), EncryptedDataTlv()])
            await a.onion_messages.send(unknown, [(77_777, b"")])
            await until(lambda: c.onion_messages.dropped["unknown_next_channel"] == 1, 5)
            assert got.empty()
        finally:
            await net.stop()

    asyncio.run(scenario())
