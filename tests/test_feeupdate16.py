"""update_fee driven by the chain backend's estimates (node.fee_updates), on two real nodes over TCP.

Alice funds the channel (opened at the default 2500 sat/kw) and follows the embedded chain's
estimate and relay floor at every block and after every reestablish; Bob checks what she sends.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from lightspeed.bitcoin.tx import OutPoint
from lightspeed.chain.regtest import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.state import MAX_FEERATE_PER_KW
from lightspeed.codec.features import Features
from lightspeed.node.electrum_chain import ElectrumChainSource, ServerAddress
from lightspeed.node.fee_updates import (
    FEE_TARGET_BLOCKS,
    RelayFloorSource,
    incoming_fee_problem,
    least_feerate,
    wanted_feerate,
)
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES
from tests.onchain_support import FUNDING_SAT, mine, mine_until, open_paid_channel, settle, wait_for
from tests.support.electrum_servers import ServerLoop

WITHOUT_ANCHORS = Features(DEFAULT_FEATURES.bits - Features.of(optional=["option_anchors"]).bits)
OPENING_FEERATE = 2500  # ChannelSettings().feerate_per_kw
STATIC_REMOTEKEY_WEIGHT = 724  # BOLT 3: a commitment without HTLC outputs


def feerates(node: Node, cid: bytes) -> tuple[int, int]:
    """The feerates of the node's latest local and remote commitments."""
    log = node.channels[cid].log
    return log.commitment(Side.LOCAL).feerate_per_kw, log.commitment(Side.REMOTE).feerate_per_kw


async def both_at(alice: Node, bob: Node, cid: bytes, feerate: int) -> None:
    await wait_for(lambda: feerates(alice, cid) == feerates(bob, cid) == (feerate, feerate))
    await settle(alice, bob, cid)


async def following(tmp_path: Path, tag: int, anchors: bool, paid_msat: int = 250_000_000,
                    proxy: bool = False) -> tuple[RegtestChain, Node, Node, bytes]:
    chain, alice, bob, cid = await open_paid_channel(tmp_path, tag, paid_msat=paid_msat, proxy=proxy,
                                                     alice_features=DEFAULT_FEATURES if anchors else WITHOUT_ANCHORS)
    assert alice.channels[cid].config.anchors is anchors
    assert feerates(alice, cid) == (OPENING_FEERATE, OPENING_FEERATE)
    alice.fee_updates = bob.fee_updates = True  # regtest: off unless asked for
    return chain, alice, bob, cid


# -- the policy as functions ------------------------------------------------------------------


def test_the_policy_bands() -> None:
    assert least_feerate(0) == 317  # 253 sat/kw plus a quarter, rounded up
    assert least_feerate(1000) == 1250
    # non-anchor: +20% of hysteresis up, halving down, the floor plus margin under it all
    assert wanted_feerate(2500, 2900, 0, anchors=False) is None
    assert wanted_feerate(2500, 3100, 0, anchors=False) == 3100
    assert wanted_feerate(2500, 1300, 0, anchors=False) is None
    assert wanted_feerate(2500, 1200, 0, anchors=False) == 1200
    assert wanted_feerate(2500, 253, 3000, anchors=False) == 3750
    assert wanted_feerate(2500, 10_000_000, 0, anchors=False) == MAX_FEERATE_PER_KW
    # anchors: the relay floor plus margin, whatever the estimate
    assert wanted_feerate(1250, 50_000, 1000, anchors=True) is None
    assert wanted_feerate(999, 253, 1000, anchors=True) == 1250
    assert wanted_feerate(5001, 253, 1000, anchors=True) == 1250
    # the receiver
    assert incoming_fee_problem(3000, 4000, 5000, 0, anchors=False) is None
    assert "too low" in (incoming_fee_problem(2400, 4000, 5000, 0, anchors=False) or "")
    assert incoming_fee_problem(2400, 2000, 5000, 0, anchors=False) is None  # a raise, however short
    assert incoming_fee_problem(2400, 4000, 5000, 0, anchors=True) is None
    assert "relay floor" in (incoming_fee_problem(999, 1250, 253, 1000, anchors=True) or "")
    assert "unreasonably large" in (incoming_fee_problem(50_001, 4000, 5000, 0, anchors=False) or "")


# -- non-anchor channels ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_rise_is_followed_within_a_block_and_the_peers_commitment_confirms_at_it(tmp_path: Path) -> None:
    """A small wobble sends nothing; a rise does at the next block; the market then refuses the
    opening feerate, and Bob's commitment (force-closed by him) confirms at the new one."""
    async def scenario() -> None:
        chain, alice, bob, cid = await following(tmp_path, 0x61, anchors=False)
        chain.set_fee_estimate(2700)  # +8%: inside the band
        await mine(chain, 2)
        assert feerates(alice, cid) == (OPENING_FEERATE, OPENING_FEERATE) and alice.fee_follower.sent == 0
        assert alice.chain.estimate_feerate_per_kw(FEE_TARGET_BLOCKS) == 2700
        chain.set_fee_estimate(6000)
        await mine(chain, 1)
        await both_at(alice, bob, cid, 6000)
        assert alice.fee_follower.sent == 1 and bob.fee_follower.sent == 0  # not the funder: nothing
        # The fee market moves past the opening feerate: only a commitment at the new one gets in.
        chain.set_min_relay_feerate(5000)
        chain.congest(5000)
        funding = OutPoint(alice.channels[cid].config.funding_txid, alice.channels[cid].config.funding_output_index)
        closing = await bob.force_close_channel(cid, "the test closes")
        await mine_until(chain, lambda: (found := chain.get_transaction(closing.txid)) is not None and found[1] > 0)
        spend = chain.spending_tx(funding)
        assert spend is not None and spend.txid == closing.txid
        fee = FUNDING_SAT - sum(o.value_sat for o in spend.outputs)
        assert fee == 6000 * STATIC_REMOTEKEY_WEIGHT // 1000
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_the_floor_holds_and_an_unaffordable_estimate_is_capped(tmp_path: Path) -> None:
    """Below the relay floor the commitment goes to the floor plus margin; an estimate the funder
    cannot pay moves it to the most it can pay (its reserve kept), and no further."""
    async def scenario() -> None:
        chain, alice, bob, cid = await following(tmp_path, 0x63, anchors=False, paid_msat=950_000_000)
        chain.set_min_relay_feerate(3000)  # the estimate stays at 253
        await mine(chain, 1)
        await both_at(alice, bob, cid, 3750)
        chain.set_fee_estimate(10_000_000)
        await mine(chain, 1)
        channel = alice.channels[cid]
        await wait_for(lambda: alice.fee_follower.sent == 2)
        await settle(alice, bob, cid)
        capped = feerates(alice, cid)[0]
        assert 3750 < capped < MAX_FEERATE_PER_KW
        assert channel.update_fee_problem(capped) is None
        assert "reserve" in (channel.update_fee_problem(capped + 1) or "")
        assert feerates(bob, cid) == (capped, capped)
        await mine(chain, 2)  # capped, not retried at every block
        assert alice.fee_follower.sent == 2
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_rise_while_the_peer_is_away_is_sent_after_the_reconnection(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await following(tmp_path, 0x65, anchors=False, proxy=True)
        relay = alice.proxy  # type: ignore[attr-defined]
        port = relay._server.sockets[0].getsockname()[1]
        await relay.stop()  # the connection drops; Alice keeps dialing a port nobody listens on
        await wait_for(lambda: bob.node_id not in alice.peer_ids())
        chain.set_fee_estimate(8000)
        await mine(chain, 2)
        assert alice.fee_follower.sent == 0 and feerates(alice, cid) == (OPENING_FEERATE, OPENING_FEERATE)
        relay._server = await asyncio.start_server(relay._relay, "127.0.0.1", port)
        await both_at(alice, bob, cid, 8000)  # no block needed: the reestablish sends it
        assert alice.fee_follower.sent == 1
        await relay.stop()
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_peer_update_fee_far_below_our_estimate_gets_a_warning_not_a_force_close(tmp_path: Path) -> None:
    """Bob warns and hangs up (no force close); Alice retransmits her signed update_fee on every
    reconnection, and once the estimates agree again Bob takes it."""
    async def scenario() -> None:
        chain, alice, bob, cid = await following(tmp_path, 0x67, anchors=False)
        alice.fee_updates = False  # Alice lowers the feerate by hand; Bob's estimate says 6x more
        chain.set_fee_estimate(12_000)
        connected = alice.peer(bob.node_id)
        assert connected is not None
        await alice.update_fee(cid, 2000)
        await asyncio.wait_for(connected.closed(), 10)  # Bob warned and hung up
        await asyncio.sleep(0.5)  # a few reconnections, each refused the same way
        assert feerates(bob, cid) == (OPENING_FEERATE, OPENING_FEERATE)
        assert cid in bob.channels and cid not in bob.closed_channels and cid not in bob._closings
        assert chain.spending_tx(OutPoint(bob.channels[cid].config.funding_txid,
                                          bob.channels[cid].config.funding_output_index)) is None
        chain.set_fee_estimate(3000)
        await both_at(alice, bob, cid, 2000)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


# -- anchor channels --------------------------------------------------------------------------


@pytest.mark.slow
def test_anchor_commitments_stay_at_the_relay_floor(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await following(tmp_path, 0x69, anchors=True)
        chain.set_fee_estimate(20_000)  # CPFP through the anchor pays for that: not the commitment
        await mine(chain, 1)
        await both_at(alice, bob, cid, least_feerate(0))  # 2500 was far above the need: lowered
        chain.set_min_relay_feerate(1000)
        await mine(chain, 1)
        await both_at(alice, bob, cid, 1250)
        chain.set_min_relay_feerate(1100)  # still under the commitment's feerate: nothing
        await mine(chain, 2)
        assert alice.fee_follower.sent == 2 and feerates(alice, cid) == (1250, 1250)
        for node in (alice, bob):  # BOLT 3: the fee of an anchor commitment without HTLCs at 1250 sat/kw
            commitment = node.channels[cid].commitment(Side.LOCAL).tx
            assert FUNDING_SAT - sum(o.value_sat for o in commitment.outputs) == 1250 * 1124 // 1000
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


# -- the Electrum backend's relay floor -------------------------------------------------------


def test_the_electrum_backend_reports_the_servers_relay_fee_as_the_floor(tmp_path: Path) -> None:
    """ElectrumChainSource asks blockchain.relayfee with the estimates: the floor fee_updates uses."""
    def relay_fee(method: str, result: Any) -> Any:  # a server whose mempools ask 20 sat/vB
        return 0.0002 if method == "blockchain.relayfee" else result

    chain = RegtestChain(tmp_path / "chain.sqlite", clock=None)
    chain.mine(3)
    servers = ServerLoop()
    _server, port = servers.electrum(chain.path)
    front = servers.proxy(port, rewrite=relay_fee)
    source = ElectrumChainSource([ServerAddress("127.0.0.1", front, False)], "regtest", request_timeout_s=5)
    try:
        assert isinstance(source, RelayFloorSource) and source.min_relay_feerate_per_kw() == 253
        source.start(20)
        for _ in range(200):
            if source.min_relay_feerate_per_kw() == 5000:  # 20,000 sat/kvB: 5,000 sat per 1000 weight
                break
            time.sleep(0.05)
        assert source.min_relay_feerate_per_kw() == 5000
        assert least_feerate(source.min_relay_feerate_per_kw()) == 6250
    finally:
        source.close()
        servers.close()
        chain.close()
