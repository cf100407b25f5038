"""A payer that introduces a blinded payment path itself takes its own hop out of the payinfo.

BOLT 4 aggregates the path's fees hop by hop from the recipient outwards, rounding up; the
payer that opens its own first hop recovers the payinfo of the rest exactly (no fee to itself,
no underpayment of the others).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

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
