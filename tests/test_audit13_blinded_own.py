"""A payer that introduces a blinded payment path itself takes its own hop out of the payinfo.

BOLT 4 aggregates the path's fees hop by hop from the recipient outwards, rounding up; the
payer that opens its own first hop recovers the payinfo of the rest exactly (no fee to itself,
no underpayment of the others).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.errors import PaymentError
from lightspeed.node.blinded_own import _without_hop
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import PaymentRelay, aggregate_payment_relay

RELAY = st.builds(PaymentRelay, st.integers(0, 2016), st.integers(0, 1_000_000), st.integers(0, 10_000_000))


@given(st.lists(RELAY, min_size=1, max_size=19), st.integers(0, 2016))
def test_the_rest_of_the_path_gets_exactly_the_payinfo_its_creator_would_have_given(
        relays: list[PaymentRelay], final_delta: int) -> None:
    whole = aggregate_payment_relay(relays, final_delta)
    rest = aggregate_payment_relay(relays[1:], final_delta)
    info = BlindedPayInfo(whole.fee_base_msat, whole.fee_proportional_millionths, whole.cltv_expiry_delta, 1, 10)
    got = _without_hop(info, relays[0])
    assert (got.fee_base_msat, got.fee_proportional_millionths, got.cltv_expiry_delta) == (
        rest.fee_base_msat, rest.fee_proportional_millionths, rest.cltv_expiry_delta)
    assert (got.htlc_minimum_msat, got.htlc_maximum_msat) == (1, 10)


def test_a_hop_of_ours_with_the_largest_fees_leaves_a_free_rest() -> None:
    mine = PaymentRelay(cltv_expiry_delta=40, fee_proportional_millionths=100, fee_base_msat=1_000)
    whole = aggregate_payment_relay([mine, PaymentRelay(0, 0, 0)], 18)
    got = _without_hop(BlindedPayInfo(whole.fee_base_msat, whole.fee_proportional_millionths,
                                      whole.cltv_expiry_delta, 1, 10), mine)
    assert (got.fee_base_msat, got.fee_proportional_millionths, got.cltv_expiry_delta) == (0, 0, 18)


def test_a_path_introduced_by_a_short_channel_id_is_paid_through_that_channels_end() -> None:
    """BOLT 12 `blinded_path`.`first_node_id` is a `sciddir_or_pubkey`: a payer that knows the
    channel pays through the node at that end (it was refused as unusable)."""
    from lightspeed.crypto.hashes import sha256
    from tests.support.network import create_network
    from tests.test_onionmsg_node import _announce

    async def scenario() -> None:
        sat = 1_000_000
        net = await create_network(3, [(0, 1, 2 * sat, 0), (1, 2, 2 * sat, 0)])
        _announce(net)
        a, b, c = net.nodes
        try:
            request = c.blinded_payment_paths(20_000, via=[[b.node_id]])
            [(path, info)] = request.paths
            assert path.first_node_id == b.node_id
            scid = a.short_channel_id(net.channels[(0, 1)])
            assert scid is not None
            direction = 0 if b.node_id < a.node_id else 1  # BOLT 7: 0 is node_id_1, the lesser id
            by_scid = dataclasses.replace(path, first_node_id=bytes([direction]) + scid.to_bytes(8, "big"))
            preimage = await a.pay_blinded([(by_scid, info)], 20_000, request.payment_hash, timeout=20)
            assert sha256(preimage) == request.payment_hash
            # Naming the channel's other end (A itself): A cannot open a hop made for B, so the
            # path is left out and nothing is sent.
            wrong_end = dataclasses.replace(by_scid, first_node_id=bytes([1 - direction]) + scid.to_bytes(8, "big"))
            other = c.blinded_payment_paths(20_000, via=[[b.node_id]])
            with pytest.raises(PaymentError, match="no usable blinded path"):
                await a.pay_blinded([(wrong_end, other.paths[0][1])], 20_000, other.payment_hash, timeout=5)
        finally:
            await net.stop()

    asyncio.run(scenario())
