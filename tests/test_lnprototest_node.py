"""Channel defects lnprototest found (test_bolt2-30 bad type, test_bolt2-01 wrong announcement
signatures), each seen by a real peer over TCP."""

from __future__ import annotations

import asyncio

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.chain import RegtestChain
from lightspeed.channel.establish import ANCHORS, ChannelType
from lightspeed.codec.features import Features
from lightspeed.codec.generated import AnnouncementSignatures
from lightspeed.codec.messages import Error, decode_message, encode_message
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES, Peer
from tests.support.network import node_key, until, with_miner
from tests.test_negotiation_features import ELECTRUM_4_3_4
from tests.test_negotiation_node import open_channel, reply_to, run_with_node


@pytest.mark.parametrize("channel_type", [ANCHORS, ChannelType(frozenset({100}))], ids=["not-offered", "unknown"])
def test_an_unsuitable_channel_type_fails_the_channel_with_an_error(channel_type: ChannelType) -> None:
    """BOLT 2: the receiving node MUST fail the channel if none of the channel_types are suitable:
    an ``error`` for the temporary channel id (it was a warning, which fails nothing)."""
    async def scenario(node: Node, port: int) -> None:
        reply = await reply_to(node, port, DEFAULT_FEATURES, open_channel(channel_type))
        assert isinstance(reply, Error), reply
        assert reply.channel_id == b"\x07" * 32 and b"not one we support" in reply.data
        assert b"\x07" * 32 not in node._openings

    run_with_node(scenario, Features(ELECTRUM_4_3_4))


@pytest.mark.slow
def test_wrong_announcement_signatures_fail_the_channel() -> None:
    """BOLT 7: if the node_signature OR the bitcoin_signature is NOT correct: MAY send a warning
    and close the connection, or send an error and fail the channel. Alice does the latter (she
    used to send a warning and keep the connection, which is neither)."""
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice = Node(node_key(0xA2), chain, b"alice wallet seed 4321", announce_channels=True)
        bob = Node(node_key(0xB2), chain, b"bob wallet seed 654321", announce_channels=True)
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        errors: list[Error] = []
        on_error = bob._on_error_message

        async def record_error(peer: Peer, message: Error) -> None:
            errors.append(message)
            await on_error(peer, message)

        bob._on_error_message = record_error  # type: ignore[method-assign]
        send_to = bob.gossip._send_to

        def corrupt(peer: Peer, messages: list[bytes]) -> None:  # Bob's signatures go out wrong
            out = []
            for raw in messages:
                message = decode_message(raw)
                if isinstance(message, AnnouncementSignatures):
                    bad = bytearray(message.node_signature)
                    bad[10] ^= 1
                    raw = encode_message(AnnouncementSignatures(
                        channel_id=message.channel_id, short_channel_id=message.short_channel_id,
                        node_signature=bytes(bad), bitcoin_signature=message.bitcoin_signature))
                out.append(raw)
            send_to(peer, out)

        bob.gossip._send_to = corrupt  # type: ignore[method-assign]
        cids: list[bytes] = []

        async def open_it() -> None:
            cids.append(await alice.open_channel(bob.node_id, 1_000_000))

        try:
            await with_miner(chain, open_it)
            funding = OutPoint(alice.channels[cids[0]].config.funding_txid, 0)
            chain.mine(6)
            await until(lambda: chain.spending_tx(funding) is not None, timeout=15)  # Alice force-closed
            await until(lambda: bool(errors), timeout=15)  # then told Bob (she broadcasts first)
            assert [e.channel_id for e in errors] == [cids[0]]
            assert b"announcement_signatures" in errors[0].data
        finally:
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())
