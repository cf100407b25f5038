"""A channel opening that ends unfunded says so at once, with the reason (a sibling of issue 11,
items 4 and 6: the caller waited the whole 30 s timeout, then got "timed out", and REST a 504
"the peer did not sign the funding in time", whatever had really happened).

BOLT 2: before funding_signed nothing is funded and a failed opening is simply forgotten; the
peer's error (BOLT 1) names the temporary channel id and says why.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.chain import RegtestChain
from lightspeed.errors import ChannelOpenFailed
from lightspeed.node.node import Node
from lightspeed.node.settings import ChannelSettings
from tests.support.network import node_key

TOKEN = "r" * 32
TOO_FEW = ChannelSettings(max_accepted_htlcs=4)  # a peer needs at least 5 (establish.py's policy)


async def _pair(alice_settings: ChannelSettings, bob_settings: ChannelSettings) -> tuple[Node, Node, int]:
    chain = RegtestChain(":memory:")
    alice = Node(node_key(120), chain, b"audit11 refused alice", channel_settings=alice_settings)
    bob = Node(node_key(121), chain, b"audit11 refused bob!!", channel_settings=bob_settings)
    chain.fund(alice.wallet.new_key().script_pubkey, 2_000_000)
    port = await bob.start()
    await alice.connect("127.0.0.1", port, bob.node_id)
    return alice, bob, port


@pytest.mark.parametrize("who", ["the peer refuses our open_channel", "we refuse the peer's accept_channel"])
def test_an_opening_refused_by_either_side_fails_at_once_with_the_reason(who: str) -> None:
    async def scenario() -> None:
        ours, theirs = (TOO_FEW, ChannelSettings()) if who.startswith("the peer") else (ChannelSettings(), TOO_FEW)
        alice, bob, _ = await _pair(ours, theirs)
        try:
            before = alice.wallet.balance_sat()
            began = time.monotonic()
            with pytest.raises(ChannelOpenFailed) as refused:
                await asyncio.wait_for(alice.open_channel(bob.node_id, 1_000_000), 25)
            assert time.monotonic() - began < 5  # not the 30 s opening timeout
            reason = str(refused.value)
            assert "max_accepted_htlcs 4 is too small" in reason, reason
            assert ("the peer refused it" if who.startswith("the peer") else "we refused the peer's terms") in reason
            assert alice.channels == {} and alice.wallet.balance_sat() == before  # nothing funded
        finally:
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())


def test_rest_open_channel_refused_by_the_peer_is_a_409_naming_the_reason_at_once() -> None:
    async def scenario() -> None:
        alice, bob, _ = await _pair(TOO_FEW, ChannelSettings())
        try:
            transport = httpx.ASGITransport(app=create_app(ApiContext(alice, listen="127.0.0.1:0"), TOKEN))
            async with httpx.AsyncClient(transport=transport, base_url="http://node", timeout=40,
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                began = time.monotonic()
                answer = await client.post("/v1/channels", json={"node_id": bob.node_id.hex(), "amount_sat": 1_000_000})
            assert time.monotonic() - began < 5
            assert answer.status_code == 409, answer.text
            error = answer.json()["error"]
            assert error["field"] == "node_id" and "max_accepted_htlcs 4 is too small" in error["reason"], error
        finally:
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())


def test_an_opening_whose_connection_drops_before_the_funding_is_signed_fails_at_once() -> None:
    async def scenario() -> None:
        alice, bob, _ = await _pair(ChannelSettings(), ChannelSettings())
        try:
            real_accept = alice._on_accept  # the connection drops as Bob's accept_channel arrives

            async def drop(message: object) -> None:
                peer = alice.peer(bob.node_id)
                assert peer is not None
                await peer.close()

            alice._on_accept = drop  # type: ignore[assignment,method-assign]
            began = time.monotonic()
            with pytest.raises(ChannelOpenFailed, match="connection closed before the peer signed"):
                await asyncio.wait_for(alice.open_channel(bob.node_id, 1_000_000), 25)
            assert time.monotonic() - began < 5 and alice.channels == {}
            alice._on_accept = real_accept  # type: ignore[method-assign]
        finally:
            await alice.stop()
            await bob.stop()

    asyncio.run(scenario())
