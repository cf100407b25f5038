"""Forwarding decisions: each BOLT 4 failure code where the spec says, and the fee we earn."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lightspeed.onion.failure import FailureCode, FailureMessage
from lightspeed.onion.payload import HopPayload
from lightspeed.payments.forward import ForwardingPolicy, ForwardTo, OutgoingChannel, decide_forward

HEIGHT = 800_000
SCID = (800_000 << 40) | (7 << 16) | 1
POLICY = ForwardingPolicy(fee_base_msat=1000, fee_proportional_millionths=100, cltv_expiry_delta=40,
                          htlc_minimum_msat=1000, htlc_maximum_msat=50_000_000)
UPDATE = b"\x01\x02" + bytes(130)


def channels(**changes: object) -> dict[int, OutgoingChannel]:
    base = {"short_channel_id": SCID, "policy": POLICY, "available_msat": 100_000_000, "free_slots": 10,
            "channel_update": UPDATE}
    return {SCID: OutgoingChannel(**{**base, **changes})}  # type: ignore[arg-type]


def forward(amount: int, cltv: int, out_amount: int = 10_000_000, out_cltv: int = HEIGHT + 100,
            scid: int = SCID, **changes: object) -> ForwardTo | FailureMessage:
    payload = HopPayload(amt_to_forward_msat=out_amount, outgoing_cltv_value=out_cltv, short_channel_id=scid)
    return decide_forward(amount, cltv, HopPayload.from_bytes(payload.to_bytes()), channels(**changes), HEIGHT)


def code(result: ForwardTo | FailureMessage) -> int:
    assert isinstance(result, FailureMessage)
    assert FailureMessage.from_bytes(result.to_bytes()) == result  # each failure encodes and decodes
    return result.code


def test_a_well_paid_htlc_is_forwarded_and_earns_the_fee() -> None:
    result = forward(10_002_000, HEIGHT + 140)
    assert result == ForwardTo(SCID, 10_000_000, HEIGHT + 100, 2000)


def test_each_refusal_gets_its_bolt4_code_and_data() -> None:
    assert code(forward(10_002_000, HEIGHT + 140, scid=SCID + 1)) == FailureCode.UNKNOWN_NEXT_PEER
    below = forward(2000, HEIGHT + 140, out_amount=999)
    assert code(below) == FailureCode.AMOUNT_BELOW_MINIMUM
    assert isinstance(below, FailureMessage) and below.htlc_msat == 999 and below.channel_update == UPDATE
    cheap = forward(10_001_999, HEIGHT + 140)
    assert code(cheap) == FailureCode.FEE_INSUFFICIENT and isinstance(cheap, FailureMessage)
    assert cheap.htlc_msat == 10_001_999
    short = forward(10_002_000, HEIGHT + 139)
    assert code(short) == FailureCode.INCORRECT_CLTV_EXPIRY and isinstance(short, FailureMessage)
    assert short.cltv_expiry == HEIGHT + 100
    assert code(forward(10_002_000, HEIGHT + 46, out_cltv=HEIGHT + 6)) == FailureCode.EXPIRY_TOO_SOON
    assert code(forward(10_002_000, HEIGHT + 2017, out_cltv=HEIGHT + 1900)) == FailureCode.EXPIRY_TOO_FAR
    disabled = ForwardingPolicy(**{**POLICY.__dict__, "enabled": False})
    assert code(forward(10_002_000, HEIGHT + 140, policy=disabled)) == FailureCode.CHANNEL_DISABLED
    assert code(forward(10_002_000, HEIGHT + 140, available_msat=9_999_999)) == FailureCode.TEMPORARY_CHANNEL_FAILURE
    assert code(forward(10_002_000, HEIGHT + 140, free_slots=0)) == FailureCode.TEMPORARY_CHANNEL_FAILURE
    assert code(forward(60_007_000, HEIGHT + 140, out_amount=60_000_000)) == FailureCode.TEMPORARY_CHANNEL_FAILURE


def test_a_payload_without_a_next_channel_is_invalid() -> None:
    payload = HopPayload(amt_to_forward_msat=1000, outgoing_cltv_value=HEIGHT + 100)
    result = decide_forward(5000, HEIGHT + 140, payload, channels(), HEIGHT)
    assert isinstance(result, FailureMessage) and result.code == FailureCode.INVALID_ONION_PAYLOAD
    assert result.tlv_type == 6


@given(st.integers(1000, 50_000_000), st.integers(0, 5000), st.integers(0, 200))
def test_forwarded_amounts_never_undercut_the_policy(out_amount: int, extra: int, spare_cltv: int) -> None:
    incoming = out_amount + POLICY.fee_msat(out_amount) + extra - 1000
    result = forward(incoming, HEIGHT + 100 + 40 + spare_cltv - 20, out_amount=out_amount)
    if isinstance(result, ForwardTo):
        assert incoming - result.amount_msat >= POLICY.fee_msat(out_amount)
        assert HEIGHT + 100 + 40 + spare_cltv - 20 - result.cltv_expiry >= POLICY.cltv_expiry_delta
    else:
        assert result.code in (FailureCode.FEE_INSUFFICIENT, FailureCode.INCORRECT_CLTV_EXPIRY)
