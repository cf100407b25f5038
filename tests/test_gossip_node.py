"""BOLT 7 gossip between running nodes: real TCP, one shared in-memory regtest chain.

A line A - B - C announces its channels once the fundings are 6 deep; A learns the
B - C channel with C's policy from gossip alone and pays C over it; a node that joins
later learns the graph by its initial sync; forged and stale updates are refused and
never reach other peers.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import pytest

from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.chain import RegtestChain
from lightspeed.codec.messages import Warning, encode_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.gossip import Status, create_channel_update, direction_of
from lightspeed.gossip.signing import SINGLE_SIGNATURE_SIGNED_FROM, sign, signed_hash
from lightspeed.node.forwarding import DEFAULT_POLICY
from lightspeed.node.node import Node
from lightspeed.node.peer import connect as connect_peer
from lightspeed.payments.forward import ForwardingPolicy
from lightspeed.routing import Policy
from tests.support.network import node_key, until, with_miner

SAT = 1_000_000
C_POLICY = ForwardingPolicy(fee_base_msat=2_500, fee_proportional_millionths=300, cltv_expiry_delta=60,
                            htlc_minimum_msat=1, htlc_maximum_msat=(1 << 63) - 1)


def run(scenario: object) -> None:
    asyncio.run(asyncio.wait_for(scenario, 40))  # type: ignore[arg-type]


async def line() -> tuple[RegtestChain, list[Node], list[int], list[int]]:
    """A - B - C with public channels, announced (6 confirmations); returns chain, nodes, ports, scids."""
    chain = RegtestChain(":memory:")
    policies = [DEFAULT_POLICY, DEFAULT_POLICY, C_POLICY]
    # C opens no channel and does not ask for public ones: it answers B's announcement_signatures.
    nodes = [Node(node_key(i), chain, b"gossip node wallet %d" % i, forwarding_policy=policies[i],
                  announce_channels=i < 2) for i in range(3)]
    for funder in (0, 1):
        chain.fund(nodes[funder].wallet.new_key().script_pubkey, 2 * SAT)
    ports = [await node.start() for node in nodes]
    await nodes[0].connect("127.0.0.1", ports[1], nodes[1].node_id)
    await nodes[1].connect("127.0.0.1", ports[2], nodes[2].node_id)
    cids: list[bytes] = []

    async def open_both() -> None:
        cids.append(await nodes[0].open_channel(nodes[1].node_id, SAT))
        cids.append(await nodes[1].open_channel(nodes[2].node_id, SAT))

    await with_miner(chain, open_both)
    chain.mine(6)
    scids = [nodes[0].short_channel_id(cids[0]), nodes[1].short_channel_id(cids[1])]
    assert None not in scids
    return chain, nodes, ports, [s for s in scids if s is not None]


def direction_policy(node: Node, scid: int, source: bytes) -> Policy | None:
    graph = node.graph
    if graph is None:
        return None
    for directions in graph.incoming.values():
        for direction in directions:
            if direction.short_channel_id == scid and direction.source == source:
                return direction.policy
    return None


@pytest.mark.slow
def test_line_announces_routes_and_follows_policy_changes() -> None:
    async def scenario() -> None:
        _, (a, b, c), _, (ab, bc) = await line()
        try:
            # Nobody hands A a graph (the constructor gets none): gossip alone fills it. (A check that
            # it is still None here raced B's private channel_update for their channel.)
            await until(lambda: direction_policy(a, bc, c.node_id) is not None, timeout=15)
            policy = direction_policy(a, bc, c.node_id)
            assert policy is not None
            assert (policy.fee_base_msat, policy.fee_proportional_millionths,
                    policy.cltv_expiry_delta) == (2_500, 300, 60)
            assert direction_policy(a, bc, b.node_id) is not None
            assert direction_policy(a, ab, b.node_id) is not None
            record = a.gossip.gossiper.view.store.node(c.node_id)
            assert record is not None and record.alias_text == c.gossip.alias

            invoice = c.create_invoice(50_000_000, "over gossip")
            preimage = await a.pay(invoice, timeout=15)
            assert invoice.payment_hash == hashlib.sha256(preimage).digest()

            # A new policy at C goes out as a newer channel_update and reaches A through B.
            c.forwarding_policy = ForwardingPolicy(fee_base_msat=9_000, fee_proportional_millionths=5,
                                                   cltv_expiry_delta=80, htlc_minimum_msat=1,
                                                   htlc_maximum_msat=(1 << 63) - 1)
            await until(lambda: getattr(direction_policy(a, bc, c.node_id), "fee_base_msat", 0) == 9_000,
                        timeout=10)
        finally:
            for node in (a, b, c):
                await node.stop()

    run(scenario())


@pytest.mark.slow
def test_late_joiner_syncs_and_forged_or_stale_updates_are_refused() -> None:
    async def scenario() -> None:
        chain, (a, b, c), ports, (ab, bc) = await line()
        late = Node(node_key(7), chain, b"gossip node wallet late")
        await late.start()
        try:
            await until(lambda: direction_policy(a, bc, c.node_id) is not None, timeout=15)
            # The late node has no channel: everything it knows comes from B's initial sync.
            await late.connect("127.0.0.1", ports[1], b.node_id)
            await until(lambda: direction_policy(late, bc, c.node_id) is not None
                        and direction_policy(late, ab, a.node_id) is not None, timeout=10)

            stored = b.gossip.gossiper.view.store.update(bc, direction_of(c.node_id, b.node_id))
            assert stored is not None
            seen_by_a = a.gossip.gossiper.view.store.update(bc, direction_of(c.node_id, b.node_id))
            assert seen_by_a is not None and seen_by_a.timestamp == stored.timestamp
            terms: dict[str, Any] = {"chain_hash": chain_hash(b), "short_channel_id": bc,
                     "direction": direction_of(c.node_id, b.node_id), "cltv_expiry_delta": 1,
                     "htlc_minimum_msat": 1, "htlc_maximum_msat": 1000, "fee_base_msat": 0,
                     "fee_proportional_millionths": 0}
            intruder_key = node_key(99)
            forged = encode_message(create_channel_update(intruder_key, timestamp=int(time.time()) + 5, **terms))
            stale = encode_message(create_channel_update(node_key(2), timestamp=stored.timestamp - 1, **terms))
            intruder = await connect_peer("127.0.0.1", ports[1], intruder_key, b.node_id)
            try:
                before = len(b.gossip.outcomes)
                intruder.session.send_raw(forged)
                intruder.session.send_raw(stale)
                await intruder.flush()
                await until(lambda: len(b.gossip.outcomes) >= before + 2)
                forged_fate, stale_fate = b.gossip.outcomes[before:before + 2]
                assert forged_fate.status is Status.INVALID and forged_fate.relay == ()
                assert stale_fate.status is not Status.ACCEPTED and stale_fate.relay == ()
                warned = await first_warning(intruder)
                assert b"signature" in warned.data or b"channel_update" in warned.data
            finally:
                await intruder.close()
            await asyncio.sleep(2.2)  # two broadcast intervals: nothing of it may reach A
            after = a.gossip.gossiper.view.store.update(bc, direction_of(c.node_id, b.node_id))
            assert after is not None and after.raw == seen_by_a.raw
            kept = b.gossip.gossiper.view.store.update(bc, direction_of(c.node_id, b.node_id))
            assert kept is not None and kept.raw == stored.raw

            # A valid update with a field this node does not know: verified and relayed as
            # received (a re-encoding would drop the field and break C's signature).
            extended = with_unknown_field(
                encode_message(create_channel_update(node_key(2), timestamp=stored.timestamp + 1, **terms)),
                node_key(2))
            relay = await connect_peer("127.0.0.1", ports[1], node_key(98), b.node_id)
            try:
                relay.session.send_raw(extended)
                await relay.flush()
                await until(lambda: getattr(a.gossip.gossiper.view.store.update(
                    bc, direction_of(c.node_id, b.node_id)), "raw", b"") == extended, timeout=10)
            finally:
                await relay.close()
        finally:
            for node in (a, b, c, late):
                await node.stop()

    run(scenario())


@pytest.mark.slow
def test_offline_peer_and_closed_channel_are_announced_disabled() -> None:
    async def scenario() -> None:
        chain, (a, b, c), _, (ab, bc) = await line()
        try:
            await until(lambda: direction_policy(a, bc, b.node_id) is not None, timeout=15)
            assert not getattr(direction_policy(a, bc, b.node_id), "disabled", True)
            b.gossip.disable_after_s = 0.3
            await c.stop()  # B's peer is gone for longer than disable_after_s: B disables its direction
            await until(lambda: getattr(direction_policy(a, bc, b.node_id), "disabled", False), timeout=10)

            await a.close_channel(next(iter(a.channels)))
            chain.mine(1)
            await until(lambda: getattr(direction_policy(a, ab, a.node_id), "disabled", False), timeout=10)
            # The spend reaches B's view too (B follows the chain on its own: not at the same moment as A).
            await until(lambda: getattr(b.gossip.gossiper.view.store.channel(ab), "spent_at", None) is not None,
                        timeout=10)
            chain.mine(72)
            await until(lambda: b.gossip.gossiper.view.store.channel(ab) is None, timeout=10)
        finally:
            for node in (a, b, c):
                await node.stop()

    run(scenario())


def with_unknown_field(raw_update: bytes, privkey: bytes) -> bytes:
    """``raw_update`` plus an unknown odd TLV at its end, signed again by ``privkey``."""
    extended = raw_update + bytes([101, 2]) + b"ok"
    signature = sign(privkey, signed_hash(extended, SINGLE_SIGNATURE_SIGNED_FROM))
    return extended[:2] + signature + extended[2 + len(signature):]


def chain_hash(node: Node) -> bytes:
    return node.network.chain_hash


async def first_warning(peer: object) -> Warning:
    async def scan() -> Warning:
        async for message in peer:  # type: ignore[attr-defined]
            if isinstance(message, Warning):
                return message
        raise AssertionError("connection ended without a warning")

    return await asyncio.wait_for(scan(), 5)


def test_regtest_output_at_names_the_funding_output_of_a_short_channel_id() -> None:
    chain = RegtestChain(":memory:")
    key = (5).to_bytes(32, "big")
    script = p2wpkh_script(pubkey_from_privkey(key))
    outpoint = chain.fund(script, 123_456)
    position = chain.tx_position(outpoint.txid)
    assert position is not None
    found = chain.output_at(position[0], position[1], outpoint.index)
    assert found is not None
    txout, spent = found
    assert (txout.value_sat, txout.script_pubkey, spent) == (123_456, script, False)
    assert chain.output_at(position[0], position[1], outpoint.index + 5) is None
    assert chain.output_at(position[0] + 50, 0, 0) is None
