"""The network view: only valid, newer gossip is stored; the router uses what it holds."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.bitcoin.network import BITCOIN
from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.tx import OutPoint
from lightspeed.chain.regtest import RegtestChain
from lightspeed.channel.scripts import funding_script
from lightspeed.codec.generated import ChannelUpdate
from lightspeed.codec.messages import Ping, decode_message, encode_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError
from lightspeed.gossip import DNS, Address, FundingOutput, MemoryGossipStore, NetworkView, Status
from lightspeed.gossip.view import STALE_AFTER_S
from lightspeed.routing import find_route
from tests.gossip_network import (
    CHAIN,
    Utxos,
    announcement,
    funding_key,
    node_announcement,
    node_id,
    scid,
    update,
)

NOW = 1_700_000_000
S12 = scid(600_000, 1, 0)


def view_with(*channels: tuple[int, int, int]) -> tuple[NetworkView, Utxos]:
    utxos = Utxos()
    view = NetworkView(CHAIN, utxos)
    for short_id, a, b in channels:
        utxos.fund(short_id, a, b)
        assert view.receive(announcement(short_id, a, b), NOW).accepted
    return view, utxos


def test_announcement_waits_for_its_first_update_before_relay() -> None:
    utxos = Utxos()
    utxos.fund(S12, 1, 2)
    view = NetworkView(CHAIN, utxos)
    outcome = view.receive(announcement(S12, 1, 2), NOW, origin="peer-a")
    assert outcome.status is Status.ACCEPTED and outcome.relay == ()
    first = view.receive(update(S12, 1, 2, NOW - 10), NOW, origin="peer-a")
    assert [item.key for item in first.relay] == [
        ("channel", S12),
        ("update", S12, first.relay[1].key[2]),
    ]
    assert first.relay[0].timestamp == NOW - 10  # the announcement takes its update's timestamp
    assert all(item.origin == "peer-a" for item in first.relay)
    second = view.receive(update(S12, 2, 1, NOW - 5), NOW)
    assert [item.key[0] for item in second.relay] == ["update"]
    assert view.store.channel(S12) is not None and view.store.channel(S12).capacity_sat == 1_000_000  # type: ignore[union-attr]


def test_only_strictly_newer_updates_per_direction() -> None:
    view, _ = view_with((S12, 1, 2))
    assert view.receive(update(S12, 1, 2, NOW - 100, fee_base_msat=5), NOW).accepted
    older = view.receive(update(S12, 1, 2, NOW - 200), NOW)
    assert (older.status, older.reason) == (Status.IGNORED, "older than the stored update")
    same = view.receive(update(S12, 1, 2, NOW - 100, fee_base_msat=5), NOW)
    assert (same.status, same.reason) == (Status.IGNORED, "duplicate")
    changed = view.receive(update(S12, 1, 2, NOW - 100, fee_base_msat=6), NOW)
    assert changed.status is Status.IGNORED and "other parameters" in changed.reason
    # The other direction has its own clock.
    assert view.receive(update(S12, 2, 1, NOW - 300), NOW).accepted
    assert view.receive(update(S12, 1, 2, NOW - 99, fee_base_msat=7), NOW).accepted
    policy = next(iter(view.channel_graph().channels_into(node_id(2)))).policy
    assert policy.fee_base_msat == 7


def test_update_rejections() -> None:
    view, _ = view_with((S12, 1, 2))
    unknown = view.receive(update(scid(1, 1, 1), 1, 2, NOW), NOW)
    assert (unknown.status, unknown.unknown_short_channel_id) == (Status.IGNORED, scid(1, 1, 1))
    future = view.receive(update(S12, 1, 2, NOW + 2 * 86400), NOW)
    assert future.status is Status.IGNORED and "future" in future.reason
    wrong_chain = view.receive(update(S12, 1, 2, NOW, chain=BITCOIN.chain_hash), NOW)
    assert wrong_chain.status is Status.IGNORED and "unknown chain" in wrong_chain.reason
    # Node 3 signs an update claiming node 1's direction.
    forged = decode_message(update(S12, 1, 2, NOW))
    assert isinstance(forged, ChannelUpdate)
    other = decode_message(update(S12, 3, 2, NOW))
    assert isinstance(other, ChannelUpdate)
    bad = view.receive(encode_message(dataclasses.replace(forged, signature=other.signature)), NOW)
    assert (bad.status, bad.message_name) == (Status.INVALID, "channel_update")
    assert "signature" in bad.reason
    assert view.store.update(S12, 0) is None and view.store.update(S12, 1) is None


def test_announcement_rejections() -> None:
    view, utxos = view_with((S12, 1, 2))
    again = view.receive(announcement(S12, 1, 2), NOW)
    assert (again.status, again.reason) == (Status.IGNORED, "channel already announced")
    utxos.fund(S12, 3, 4)
    conflict = view.receive(announcement(S12, 3, 4), NOW)
    assert conflict.status is Status.IGNORED and "other nodes" in conflict.reason
    unfunded = view.receive(announcement(scid(7), 1, 3), NOW)
    assert unfunded.status is Status.IGNORED and "funding" in unfunded.reason
    utxos.fund(scid(8), 1, 3)
    raw = bytearray(announcement(scid(8), 1, 3))
    raw[10] ^= 1  # inside node_signature_1
    assert view.receive(bytes(raw), NOW).status is Status.INVALID
    utxos.fund(scid(9), 1, 3)
    other_chain = view.receive(announcement(scid(9), 1, 3, chain=BITCOIN.chain_hash), NOW)
    assert other_chain.status is Status.IGNORED
    assert view.store.channel(scid(8)) is None and view.store.channel(scid(9)) is None
    assert view.receive(b"\x01\x00garbage", NOW).status is Status.INVALID
    with pytest.raises(UsageError, match="not a gossip message"):
        view.receive(encode_message(Ping(0)), NOW)


def test_node_announcements_need_a_channel_and_a_newer_timestamp() -> None:
    view, _ = view_with((S12, 1, 2))
    assert view.receive(node_announcement(3, NOW), NOW).reason == "node has no announced channel"
    first = view.receive(node_announcement(1, NOW - 50, alias="alice"), NOW)
    assert first.accepted and [i.key for i in first.relay] == [("node", node_id(1))]
    assert view.store.node(node_id(1)).alias_text == "alice"  # type: ignore[union-attr]
    assert view.receive(node_announcement(1, NOW - 50), NOW).status is Status.IGNORED
    assert view.receive(node_announcement(1, NOW - 60), NOW).status is Status.IGNORED
    raw = bytearray(node_announcement(1, NOW - 40))
    raw[3] ^= 1
    assert view.receive(bytes(raw), NOW).status is Status.INVALID
    # Two hostnames: stored (the first one) but never relayed.
    two_dns = node_announcement(2, NOW, addresses=[])
    assert view.receive(two_dns, NOW).accepted
    hostnames = bytes([DNS, 1]) + b"a" + b"\x00\x01" + bytes([DNS, 1]) + b"b" + b"\x00\x01"
    crafted = _node_with_raw_addresses(2, NOW + 1, hostnames)
    outcome = view.receive(crafted, NOW)
    assert outcome.accepted and outcome.relay == ()
    assert view.store.node(node_id(2)).addresses == (Address(DNS, "a", 1),)  # type: ignore[union-attr]


def _node_with_raw_addresses(a: int, timestamp: int, addresses: bytes) -> bytes:
    from lightspeed.codec.generated import NodeAnnouncement
    from lightspeed.gossip.signing import SINGLE_SIGNATURE_SIGNED_FROM, sign, signed_hash
    from tests.gossip_network import node_key

    unsigned = NodeAnnouncement(
        signature=bytes(64),
        features=b"",
        timestamp=timestamp,
        node_id=node_id(a),
        rgb_color=b"\0\0\0",
        alias=bytes(32),
        addresses=addresses,
    )
    raw = encode_message(unsigned)
    signature = sign(node_key(a), signed_hash(raw, SINGLE_SIGNATURE_SIGNED_FROM))
    return raw[:2] + signature + raw[66:]


def test_own_private_channel_accepts_updates_without_relaying_until_announced() -> None:
    utxos = Utxos()
    view = NetworkView(CHAIN, utxos)
    view.add_local_channel(S12, node_id(2), node_id(1), 1_000_000)
    private = view.receive(update(S12, 2, 1, NOW - 5, dont_forward=True), NOW)
    assert private.accepted and private.relay == ()
    assert view.channel_graph().channel_count == 1
    # Node announcements still need a public channel.
    assert view.receive(node_announcement(2, NOW), NOW).status is Status.IGNORED
    utxos.fund(S12, 1, 2)
    public = view.receive(announcement(S12, 1, 2), NOW)
    assert public.accepted
    # Its only update so far says dont_forward: still nothing to relay.
    assert public.relay == ()
    forwardable = view.receive(update(S12, 1, 2, NOW - 4), NOW)
    assert [i.key[0] for i in forwardable.relay] == ["channel", "update"]


def test_dont_forward_update_on_public_channel_is_kept_but_not_relayed() -> None:
    view, _ = view_with((S12, 1, 2))
    outcome = view.receive(update(S12, 1, 2, NOW, dont_forward=True), NOW)
    assert outcome.accepted and outcome.relay == ()


def test_bolt7_routing_example_through_gossip() -> None:
    """BOLT 7 "Routing Example": A->C for 4,999,999 msat goes via B and A sends 5,010,198 msat."""
    a, b, c, d = 1, 2, 3, 4
    terms = {a: (10, 100, 1000), b: (20, 200, 2000), c: (30, 300, 3000), d: (40, 400, 4000)}
    links = [(scid(100, 1), a, b), (scid(100, 2), b, c), (scid(100, 3), a, d), (scid(100, 4), d, c)]
    view, _ = view_with(*links)
    for short_id, x, y in links:
        for src, dst in ((x, y), (y, x)):
            delta, base, rate = terms[src]
            raw = update(
                short_id,
                src,
                dst,
                NOW,
                cltv_expiry_delta=delta,
                fee_base_msat=base,
                fee_proportional_millionths=rate,
                htlc_minimum_msat=0,
                htlc_maximum_msat=10**9,
            )
            assert view.receive(raw, NOW).accepted
    route = find_route(view.channel_graph(), node_id(a), node_id(c), 4_999_999)
    assert [hop.pubkey for hop in route.hops] == [node_id(b), node_id(c)]
    assert route.total_amount_msat == 5_010_198
    assert route.total_fee_msat == 10_199
    assert route.total_cltv_expiry_delta == 20


def test_export_leaves_out_what_must_not_be_routed() -> None:
    s_feat, s_node, s_cap, s_ok = scid(10), scid(11), scid(12), scid(13)
    utxos = Utxos()
    view = NetworkView(CHAIN, utxos)
    for short_id, x, y, features in (
        (s_feat, 1, 2, (1 << 100).to_bytes(13, "big")),
        (s_node, 2, 5, b""),
        (s_cap, 2, 3, b""),
        (s_ok, 1, 3, b""),
    ):
        utxos.fund(short_id, x, y, 100_000)
        assert view.receive(announcement(short_id, x, y, features=features), NOW).accepted
        for src, dst in ((x, y), (y, x)):
            assert view.receive(
                update(short_id, src, dst, NOW, htlc_maximum_msat=50_000_000), NOW
            ).accepted
    # Node 5 requires an unknown even feature (bit 100).
    assert view.receive(
        node_announcement(5, NOW, features=(1 << 100).to_bytes(13, "big")), NOW
    ).accepted
    # Node 3's direction of s_cap promises more than the capacity; a disabled one stays, flagged.
    assert view.receive(update(s_cap, 3, 2, NOW + 1, htlc_maximum_msat=200_000_000), NOW).accepted
    assert view.receive(
        update(s_ok, 3, 1, NOW + 1, disabled=True, htlc_maximum_msat=50_000_000), NOW
    ).accepted
    graph = view.channel_graph()
    into = {n: list(graph.channels_into(node_id(n))) for n in (1, 2, 3, 5)}
    ids = {n: {ch.short_channel_id for ch in chans} for n, chans in into.items()}
    assert s_feat not in ids[1] | ids[2]  # unknown even channel feature bit 100
    assert s_node not in ids[2] | ids[5]
    assert s_cap in ids[3] and s_cap not in ids[2]  # only node 2's direction is usable
    disabled = [ch for ch in into[1] if ch.short_channel_id == s_ok]
    assert len(disabled) == 1 and disabled[0].policy.disabled


def test_forget_and_prune() -> None:
    view, _ = view_with((scid(1), 1, 2), (scid(2), 2, 3))
    for short_id, x, y, age in ((scid(1), 1, 2, 10), (scid(2), 2, 3, STALE_AFTER_S + 10)):
        view.receive(update(short_id, x, y, NOW - age), NOW)
        view.receive(update(short_id, y, x, NOW - 10), NOW)
    view.receive(node_announcement(3, NOW), NOW)
    assert view.prune_stale(NOW) == [scid(2)]
    assert view.store.channel(scid(2)) is None and view.store.update(scid(2), 0) is None
    assert view.store.node(node_id(3)) is None  # no channel left: its announcement goes too
    view.forget_channel(scid(1))
    assert view.channel_graph().channel_count == 0


@settings(max_examples=40, deadline=None)
@given(stamps=st.lists(st.tuples(st.integers(0, 1), st.integers(1, 50)), min_size=1, max_size=25))
def test_stored_update_is_always_the_newest_seen(stamps: list[tuple[int, int]]) -> None:
    view, _ = view_with((S12, 1, 2))
    accepted: dict[int, list[int]] = {0: [], 1: []}
    for side, stamp in stamps:
        a, b = (1, 2) if side == 0 else (2, 1)
        outcome = view.receive(update(S12, a, b, stamp, fee_base_msat=stamp), 100)
        if outcome.accepted:
            direction = outcome.relay[-1].key[2]
            assert isinstance(direction, int)
            accepted[direction].append(stamp)
    for direction, seen in accepted.items():
        assert seen == sorted(set(seen))  # strictly increasing acceptance
        stored = view.store.update(S12, direction)
        sides = [s for side, s in stamps if (node_id(1) < node_id(2)) == (side == direction)]
        assert (stored.timestamp if stored else None) == (max(sides) if sides else None)


def test_store_interface_is_swappable() -> None:
    store = MemoryGossipStore()
    utxos = Utxos()
    utxos.fund(S12, 1, 2)
    view = NetworkView(CHAIN, utxos, store)
    view.receive(announcement(S12, 1, 2), NOW)
    assert view.store is store and list(store.node_channels(node_id(1))) == [S12]


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from([256, 257, 258]), body=st.binary(max_size=500))
def test_no_input_crashes_the_view(kind: int, body: bytes) -> None:
    view, _ = view_with((S12, 1, 2))
    outcome = view.receive(kind.to_bytes(2, "big") + body, NOW)
    assert outcome.status in (Status.INVALID, Status.IGNORED)


def test_spent_funding_output() -> None:
    view, _ = view_with((S12, 1, 2), (scid(2), 2, 3))
    assert view.receive(update(S12, 1, 2, NOW - 10), NOW).accepted
    view.funding_spent(S12, block_height=800_000)
    normal = view.receive(update(S12, 1, 2, NOW - 5), NOW)
    assert (normal.status, normal.reason) == (Status.IGNORED, "funding output spent")
    disabling = view.receive(update(S12, 2, 1, NOW - 5, disabled=True), NOW)
    # Accepted and relayed, but without the announcement of a spent channel.
    assert disabling.accepted and [i.key[0] for i in disabling.relay] == ["update"]
    assert view.forget_spent(800_071) == []
    assert view.forget_spent(800_072) == [S12]
    assert view.store.channel(S12) is None and view.store.channel(scid(2)) is not None


class RegtestFunding:
    """A FundingLookup over the embedded regtest chain (as the runtime would build one).

    The chain has no index from block position to transaction, so the test keeps the
    short_channel_id -> outpoint map; depth and spentness come from the chain itself.
    """

    def __init__(self, chain: RegtestChain, min_depth: int = 6) -> None:
        self.chain, self.min_depth = chain, min_depth
        self.outpoints: dict[int, OutPoint] = {}

    def __call__(self, short_channel_id: int) -> FundingOutput | None:
        outpoint = self.outpoints.get(short_channel_id)
        found = None if outpoint is None else self.chain.get_transaction(outpoint.txid)
        if outpoint is None or found is None:
            return None
        tx, confirmations = found
        if confirmations < self.min_depth or self.chain.spending_tx(outpoint) is not None:
            return None
        output = tx.outputs[outpoint.index]
        return FundingOutput(output.script_pubkey, output.value_sat)


def test_funding_checked_on_the_regtest_chain() -> None:
    chain = RegtestChain(":memory:")
    try:
        funding = RegtestFunding(chain)
        keys = [pubkey_from_privkey(funding_key(n)) for n in (1, 2)]
        outpoint = chain.fund(p2wsh_script(funding_script(*keys)), 750_000)
        height = chain.tip()[0]
        short_id = scid(height, 1, outpoint.index)
        funding.outpoints[short_id] = outpoint
        view = NetworkView(CHAIN, funding)
        shallow = view.receive(announcement(short_id, 1, 2), NOW)
        assert shallow.status is Status.IGNORED and "funding" in shallow.reason
        chain.mine(5)  # six confirmations
        assert view.receive(announcement(short_id, 1, 2), NOW).accepted
        assert view.store.channel(short_id).capacity_sat == 750_000  # type: ignore[union-attr]
        # The same keys but another output (not the 2-of-2 of these keys) are refused.
        other = chain.fund(
            p2wsh_script(funding_script(keys[0], pubkey_from_privkey(funding_key(3)))), 1000
        )
        chain.mine(6)
        funding.outpoints[scid(height + 1, 1, other.index)] = other
        wrong = view.receive(announcement(scid(height + 1, 1, other.index), 1, 2), NOW)
        assert wrong.status is Status.IGNORED and "2-of-2" in wrong.reason
    finally:
        chain.close()
