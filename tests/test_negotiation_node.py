"""A running node's side of negotiation, seen by a raw peer over TCP: its init, and open_channel."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lightspeed.bitcoin.network import BITCOIN, REGTEST
from lightspeed.chain import RegtestChain
from lightspeed.channel.establish import ANCHORS, STATIC_REMOTEKEY, ChannelType
from lightspeed.codec.features import Features
from lightspeed.codec.generated import AcceptChannel
from lightspeed.codec.messages import Error, Message, Warning, make_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import PeerProtocolError
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES, Peer, connect
from tests.support.network import until
from tests.test_gossip_node import line
from tests.test_negotiation_features import ELECTRUM_4_3_4

RAW_KEY = b"\x21" * 32
OLD_PEER = Features(frozenset({1, 7, 9, 13, 15}))  # before option_channel_type and anchors existed
POINTS = {name: pubkey_from_privkey(bytes([i + 1]) * 32) for i, name in enumerate(
    ("funding_pubkey", "revocation_basepoint", "payment_basepoint", "delayed_payment_basepoint",
     "htlc_basepoint", "first_per_commitment_point"))}


def open_channel(channel_type: ChannelType | None) -> Any:
    tlvs: dict[str | int, Any] = {"upfront_shutdown_script": {"shutdown_scriptpubkey": b""}}
    if channel_type is not None:
        tlvs["channel_type"] = {"type": channel_type.to_bytes()}
    return make_message(
        "open_channel", tlvs=tlvs, chain_hash=REGTEST.chain_hash, temporary_channel_id=b"\x07" * 32,
        funding_satoshis=1_000_000, push_msat=0, dust_limit_satoshis=546, max_htlc_value_in_flight_msat=10**9,
        channel_reserve_satoshis=10_000, htlc_minimum_msat=1000, feerate_per_kw=2500, to_self_delay=144,
        max_accepted_htlcs=30, channel_flags=b"\x00", **POINTS)


async def reply_to(node: Node, port: int, features: Features, message: Message) -> Message:
    peer: Peer = await connect("127.0.0.1", port, RAW_KEY, node.node_id, features)
    try:
        await peer.send(message)
        async for received in peer:
            if received.TYPE not in range(256, 266):  # skip gossip
                return received
        raise AssertionError(f"no reply: {peer.disconnect_reason}")
    finally:
        await peer.close()


def run_with_node(scenario: Any, features: Features = DEFAULT_FEATURES) -> None:
    async def main() -> None:
        node = Node(b"\x22" * 32, RegtestChain(":memory:"), b"negotiation node wallet seed", features=features)
        port = await node.start()
        try:
            await asyncio.wait_for(scenario(node, port), 20)
        finally:
            await node.stop()

    asyncio.run(main())


def test_the_nodes_init_names_its_chain_and_its_features() -> None:
    async def scenario(node: Node, port: int) -> None:
        peer = await connect("127.0.0.1", port, RAW_KEY, node.node_id, Features(ELECTRUM_4_3_4),
                             networks=(REGTEST.chain_hash,))
        init = (await peer.connected()).remote_init
        assert init.networks == (REGTEST.chain_hash,)  # BOLT 1: SHOULD set networks
        assert init.all_features == DEFAULT_FEATURES
        await peer.close()
        # A peer of another chain is refused by the node (and refuses it): no connection results.
        with pytest.raises(PeerProtocolError, match="no common chain"):
            await connect("127.0.0.1", port, RAW_KEY, node.node_id, Features(ELECTRUM_4_3_4),
                          networks=(BITCOIN.chain_hash,))

    run_with_node(scenario)


@pytest.mark.parametrize(("features", "sent", "expected"), [
    (OLD_PEER, None, STATIC_REMOTEKEY),
    (OLD_PEER | Features(frozenset({23})), None, ANCHORS),
    (Features(ELECTRUM_4_3_4), STATIC_REMOTEKEY, STATIC_REMOTEKEY),
], ids=["old-peer-no-anchors", "old-peer-anchors", "electrum-4.3.4"])
def test_the_node_accepts_an_open_of_the_type_the_features_imply(
        features: Features, sent: ChannelType | None, expected: ChannelType) -> None:
    async def scenario(node: Node, port: int) -> None:
        reply = await reply_to(node, port, features, open_channel(sent))
        assert isinstance(reply, AcceptChannel), reply
        # BOLT 2: the accepter sets channel_type to the one of open_channel (none if none was sent).
        assert ("channel_type" in reply.tlvs) == (sent is not None)
        assert node._openings[b"\x07" * 32].channel_type == expected  # what funding_created will build

    run_with_node(scenario)


def test_an_open_the_nodes_features_rule_out_is_refused() -> None:
    async def scenario(node: Node, port: int) -> None:
        # A node with Electrum 4.3.4's features (no option_anchors) refuses an anchors channel,
        reply = await reply_to(node, port, DEFAULT_FEATURES, open_channel(ANCHORS))
        assert isinstance(reply, (Warning, Error)) and b"not one we support" in reply.data
        # and a peer that offered option_channel_type must send one.
        reply = await reply_to(node, port, DEFAULT_FEATURES, open_channel(None))
        assert isinstance(reply, (Warning, Error)) and b"no channel_type" in reply.data

    run_with_node(scenario, Features(ELECTRUM_4_3_4))


def test_the_node_announcement_carries_our_node_context_features() -> None:
    async def scenario() -> None:
        _, (a, b, c), _, _ = await line()
        try:
            await until(lambda: a.gossip.gossiper.view.store.node(b.node_id) is not None, timeout=15)
            record = a.gossip.gossiper.view.store.node(b.node_id)
            assert record is not None
            announced = Features.from_bytes(record.features)
            # BOLT 9: the features whose Context has N, and the ASSUMED ones; gossip_queries has no context.
            assert announced == DEFAULT_FEATURES.for_context("N")
            assert announced.supports("option_anchors") and announced.supports("basic_mpp")
            assert announced.supports("option_data_loss_protect") and not announced.supports("gossip_queries")
        finally:
            for node in (a, b, c):
                await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 40))
