"""The final node's decisions: MPP sets, hold invoices, keysend, AMP, and every failure code."""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError
from lightspeed.onion.failure import FailureCode, FailureMessage
from lightspeed.onion.payload import HopPayload, InvalidHopPayload
from lightspeed.payments.amp import AMP_RECORD_TYPE, AmpPayment, AmpRecord, combine, split
from lightspeed.payments.receiver import (
    KEYSEND_RECORD_TYPE,
    UNDERSTOOD_RECORDS,
    Decision,
    Fail,
    Held,
    IncomingPart,
    Receivable,
    Received,
    Receiver,
    Settle,
)

HEIGHT = 800_000
NOW = 1_700_000_000.0


def invoice(amount_msat: int | None = 100_000, hold: bool = False) -> tuple[Receivable, bytes]:
    preimage = os.urandom(32)
    receivable = Receivable(sha256(preimage), os.urandom(32), amount_msat, 18, int(NOW) + 3600,
                            None if hold else preimage, hold)
    return receivable, preimage


def part(payment_hash: bytes, amount: int, total: int, secret: bytes | None, *, cltv: int = HEIGHT + 40,
         records: tuple[tuple[int, bytes], ...] = (), htlc_id: int = 0, extra_msat: int = 0) -> IncomingPart:
    payload = HopPayload(amt_to_forward_msat=amount, outgoing_cltv_value=cltv, payment_secret=secret,
                         total_msat=total if secret is not None else None, custom_records=records)
    # Through the wire form, as the runtime decodes it.
    decoded = HopPayload.from_bytes(payload.to_bytes(), understood=UNDERSTOOD_RECORDS)
    return IncomingPart(os.urandom(32), htlc_id, amount + extra_msat, cltv, payment_hash, decoded)


def codes(decisions: list[Decision]) -> list[int]:
    return [d.failure.code for d in decisions if isinstance(d, Fail)]


def test_a_single_part_payment_settles_with_the_invoice_preimage() -> None:
    receiver = Receiver()
    receivable, preimage = invoice()
    receiver.add(receivable)
    decisions = receiver.receive(part(receivable.payment_hash, 100_000, 100_000, receivable.payment_secret), HEIGHT, NOW)
    assert isinstance(decisions[0], Settle) and decisions[0].preimage == preimage
    assert decisions[1] == Received(receivable.payment_hash, 100_000, 1, "invoice")
    again = receiver.receive(part(receivable.payment_hash, 100_000, 100_000, receivable.payment_secret), HEIGHT, NOW)
    assert codes(again) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]  # paid once only


def test_mpp_parts_are_held_until_the_total_arrives_then_all_settle() -> None:
    receiver = Receiver()
    receivable, preimage = invoice(300_000)
    receiver.add(receivable)
    h, s = receivable.payment_hash, receivable.payment_secret
    assert receiver.receive(part(h, 100_000, 300_000, s, htlc_id=1), HEIGHT, NOW) == []
    assert receiver.receive(part(h, 150_000, 300_000, s, htlc_id=2), HEIGHT, NOW + 5) == []
    final = receiver.receive(part(h, 50_000, 300_000, s, htlc_id=3), HEIGHT, NOW + 9)
    settles = [d for d in final if isinstance(d, Settle)]
    assert sorted(d.part.htlc_id for d in settles) == [1, 2, 3] and {d.preimage for d in settles} == {preimage}
    assert final[-1] == Received(h, 300_000, 3, "invoice")


def test_an_incomplete_set_fails_whole_with_mpp_timeout_after_60_seconds() -> None:
    receiver = Receiver()
    receivable, _ = invoice(300_000)
    receiver.add(receivable)
    h, s = receivable.payment_hash, receivable.payment_secret
    receiver.receive(part(h, 100_000, 300_000, s, htlc_id=1), HEIGHT, NOW)
    receiver.receive(part(h, 100_000, 300_000, s, htlc_id=2), HEIGHT, NOW + 30)
    assert receiver.tick(NOW + 59, HEIGHT) == []
    assert codes(receiver.tick(NOW + 60, HEIGHT)) == [FailureCode.MPP_TIMEOUT] * 2
    assert receiver.tick(NOW + 120, HEIGHT) == []


def test_parts_disagreeing_on_total_msat_fail_the_whole_set() -> None:
    receiver = Receiver()
    receivable, _ = invoice(300_000)
    receiver.add(receivable)
    h, s = receivable.payment_hash, receivable.payment_secret
    receiver.receive(part(h, 100_000, 300_000, s), HEIGHT, NOW)
    assert len(codes(receiver.receive(part(h, 100_000, 310_000, s), HEIGHT, NOW))) == 2


@pytest.mark.parametrize("case", ["unknown hash", "wrong secret", "no secret", "underpaid", "overpaid 2x",
                                  "expiry too near", "invoice expired"])
def test_bad_payments_fail_with_incorrect_or_unknown_payment_details(case: str) -> None:
    receiver = Receiver()
    receivable, _ = invoice(100_000)
    receiver.add(receivable)
    h, s, total, cltv, now = receivable.payment_hash, receivable.payment_secret, 100_000, HEIGHT + 40, NOW
    secret: bytes | None = s
    if case == "unknown hash":
        h = os.urandom(32)
    elif case == "wrong secret":
        secret = os.urandom(32)
    elif case == "no secret":
        secret = None
    elif case == "underpaid":
        total = 99_999
    elif case == "overpaid 2x":
        total = 200_001
    elif case == "expiry too near":
        cltv = HEIGHT + 17
    elif case == "invoice expired":
        now = NOW + 3601
    decisions = receiver.receive(part(h, total, total, secret, cltv=cltv), HEIGHT, now)
    [failure] = [d.failure for d in decisions if isinstance(d, Fail)]
    assert failure.code == FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
    assert failure.height == HEIGHT and failure.htlc_msat == total
    assert FailureMessage.from_bytes(failure.to_bytes()) == failure


def test_the_htlc_must_carry_what_the_onion_says() -> None:
    receiver = Receiver()
    receivable, _ = invoice(100_000)
    receiver.add(receivable)
    short = part(receivable.payment_hash, 100_000, 100_000, receivable.payment_secret, extra_msat=-1)
    assert codes(receiver.receive(short, HEIGHT, NOW)) == [FailureCode.FINAL_INCORRECT_HTLC_AMOUNT]
    early = part(receivable.payment_hash, 100_000, 100_000, receivable.payment_secret)
    early = IncomingPart(early.channel_id, 0, early.amount_msat, early.cltv_expiry - 1, early.payment_hash, early.payload)
    assert codes(receiver.receive(early, HEIGHT, NOW)) == [FailureCode.FINAL_INCORRECT_CLTV_EXPIRY]


def test_hold_invoices_wait_for_the_application() -> None:
    receiver = Receiver()
    receivable, preimage = invoice(100_000, hold=True)
    receiver.add(receivable)
    h, s = receivable.payment_hash, receivable.payment_secret
    assert receiver.receive(part(h, 100_000, 100_000, s), HEIGHT, NOW) == [Held(h, 100_000, 1)]
    assert receiver.tick(NOW + 3000, HEIGHT) == []  # held sets do not time out like MPP sets
    with pytest.raises(ValueError, match="preimage"):
        receiver.settle_held(h, os.urandom(32))
    settled = receiver.settle_held(h, preimage)
    assert isinstance(settled[0], Settle) and settled[-1] == Received(h, 100_000, 1, "invoice")

    other, _ = invoice(100_000, hold=True)
    receiver.add(other)
    receiver.receive(part(other.payment_hash, 100_000, 100_000, other.payment_secret), HEIGHT, NOW)
    assert codes(receiver.cancel_held(other.payment_hash, HEIGHT)) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]


def test_a_held_payment_is_cancelled_before_its_htlcs_near_expiry() -> None:
    receiver = Receiver()
    receivable, _ = invoice(100_000, hold=True)
    receiver.add(receivable)
    receiver.receive(part(receivable.payment_hash, 100_000, 100_000, receivable.payment_secret,
                          cltv=HEIGHT + 40), HEIGHT, NOW)
    assert receiver.tick(NOW, HEIGHT + 27) == []
    assert codes(receiver.tick(NOW, HEIGHT + 28)) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]


def test_keysend_carries_its_own_preimage() -> None:
    receiver = Receiver()
    preimage = os.urandom(32)
    decisions = receiver.receive(part(sha256(preimage), 5_000, 5_000, None,
                                      records=((KEYSEND_RECORD_TYPE, preimage),)), HEIGHT, NOW)
    assert decisions == [Settle(decisions[0].part, preimage), Received(sha256(preimage), 5_000, 1, "keysend")]  # type: ignore[union-attr]
    wrong = receiver.receive(part(os.urandom(32), 5_000, 5_000, None, records=((KEYSEND_RECORD_TYPE, preimage),)),
                             HEIGHT, NOW)
    assert codes(wrong) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]
    off = Receiver(accept_keysend=False)
    other = os.urandom(32)
    assert codes(off.receive(part(sha256(other), 5_000, 5_000, None, records=((KEYSEND_RECORD_TYPE, other),)),
                             HEIGHT, NOW)) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]


def amp_parts(payment: AmpPayment, amounts: list[int], secret: bytes) -> list[IncomingPart]:
    total = sum(amounts)
    shards = payment.shards(len(amounts))
    return [part(shard.payment_hash, amount, total, secret, records=((AMP_RECORD_TYPE, shard.record.to_bytes()),),
                 htlc_id=i) for i, (shard, amount) in enumerate(zip(shards, amounts, strict=True))]


def test_amp_settles_only_when_every_share_has_arrived_each_with_its_own_preimage() -> None:
    receiver = Receiver()
    payment = AmpPayment.new()
    parts = amp_parts(payment, [40_000, 30_000, 30_000], os.urandom(32))
    assert receiver.receive(parts[0], HEIGHT, NOW) == [] and receiver.receive(parts[1], HEIGHT, NOW) == []
    final = receiver.receive(parts[2], HEIGHT, NOW)
    settles = [d for d in final if isinstance(d, Settle)]
    assert len(settles) == 3 and all(sha256(d.preimage) == d.part.payment_hash for d in settles)
    assert final[-1] == Received(payment.set_id, 100_000, 3, "amp")


def test_a_failed_amp_shard_share_is_carried_by_its_retry() -> None:
    receiver = Receiver()
    payment = AmpPayment.new()
    secret = os.urandom(32)
    first, lost = payment.shards(2)
    receiver.receive(part(first.payment_hash, 60_000, 100_000, secret,
                          records=((AMP_RECORD_TYPE, first.record.to_bytes()),)), HEIGHT, NOW)
    # The second shard failed on its route: its share goes out again, split over two new shards.
    retries = payment.reshard(lost.record.root_share, 2)
    decisions: list[Decision] = []
    for i, shard in enumerate(retries):
        decisions += receiver.receive(part(shard.payment_hash, 20_000, 100_000, secret, htlc_id=10 + i,
                                           records=((AMP_RECORD_TYPE, shard.record.to_bytes()),)), HEIGHT, NOW)
    assert sum(isinstance(d, Settle) for d in decisions) == 3
    assert {r.record.child_index for r in retries} == {2, 3}


def test_amp_shares_that_do_not_add_up_fail_the_set() -> None:
    receiver = Receiver()
    payment = AmpPayment.new()
    secret = os.urandom(32)
    good = payment.shards(2)[0]
    forged = AmpRecord(os.urandom(32), payment.set_id, 7)
    parts = [part(good.payment_hash, 50_000, 100_000, secret, records=((AMP_RECORD_TYPE, good.record.to_bytes()),)),
             part(os.urandom(32), 50_000, 100_000, secret, records=((AMP_RECORD_TYPE, forged.to_bytes()),))]
    receiver.receive(parts[0], HEIGHT, NOW)
    assert len(codes(receiver.receive(parts[1], HEIGHT, NOW))) == 2


def test_even_amp_and_keysend_records_are_refused_by_a_node_that_does_not_understand_them() -> None:
    payload = HopPayload(amt_to_forward_msat=1, outgoing_cltv_value=1, custom_records=((AMP_RECORD_TYPE, bytes(64)),))
    with pytest.raises(InvalidHopPayload):
        HopPayload.from_bytes(payload.to_bytes())
    assert HopPayload.from_bytes(payload.to_bytes(), understood=UNDERSTOOD_RECORDS).custom_records == (
        (AMP_RECORD_TYPE, bytes(64)),)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1))
def test_amp_record_round_trips_with_a_minimal_child_index(share: bytes, set_id: bytes, index: int) -> None:
    record = AmpRecord(share, set_id, index)
    raw = record.to_bytes()
    assert AmpRecord.from_bytes(raw) == record and len(raw) == 64 + (index.bit_length() + 7) // 8


@given(st.binary(max_size=80))
def test_amp_record_decoder_raises_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        AmpRecord.from_bytes(data)


@given(st.integers(1, 20))
def test_shares_xor_to_the_secret(count: int) -> None:
    secret = os.urandom(32)
    assert combine(split(secret, count)) == secret


def test_an_amp_invoice_is_paid_once_and_only_by_amp_shards() -> None:
    receiver = Receiver()
    secret = os.urandom(32)
    placeholder = os.urandom(32)  # an AMP invoice's payment_hash: nobody knows a preimage
    receiver.add(Receivable(placeholder, secret, 90_000, 18, int(NOW) + 3600, None, amp=True))
    plain = part(placeholder, 90_000, 90_000, secret)
    assert codes(receiver.receive(plain, HEIGHT, NOW)) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]
    [underpaid] = amp_parts(AmpPayment.new(), [40_000], secret)  # the set promises less than 90,000
    assert codes(receiver.receive(underpaid, HEIGHT, NOW)) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]
    payment = AmpPayment.new()
    decisions: list[Decision] = []
    for p in amp_parts(payment, [50_000, 40_000], secret):
        decisions += receiver.receive(p, HEIGHT, NOW)
    assert sum(isinstance(d, Settle) for d in decisions) == 2
    assert decisions[-1] == Received(payment.set_id, 90_000, 2, "amp", placeholder)
    again = amp_parts(AmpPayment.new(), [90_000], secret)[0]
    assert codes(receiver.receive(again, HEIGHT, NOW)) == [FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS]
