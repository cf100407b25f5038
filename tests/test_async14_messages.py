"""Async-payment codecs: round trips, the limits at their boundary, the pid carried to the payer's
LSP inside a real blinded reply path, static invoices, and decoders that only raise DecodeError."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.asyncpay import messages as m
from lightspeed.asyncpay.static_invoice import (
    HELD_HTLC_AVAILABLE_PATHS,
    StaticInvoice,
    sign_static_invoice,
)
from lightspeed.codec.tlv import encode_tlv_stream
from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers.sign import public_key_of
from lightspeed.offers.tlv_fields import INVOICE_AMOUNT, INVOICE_PAYMENT_HASH, SIGNATURE
from lightspeed.onion.blinding import EncryptedDataTlv, create_blinded_path
from lightspeed.onion.message import (
    ForwardOnionMessage,
    OnionMessagePayload,
    ReceivedOnionMessage,
    build_onion_message,
    create_reply_path,
    peel_onion_message,
)


def key(n: int) -> bytes:
    return hashlib.sha256(b"async14 key %d" % n).digest()


def h(n: int) -> bytes:
    return hashlib.sha256(b"hash %d" % n).digest()


PID = bytes(range(32))


CLIENT_KEY = key(40)
CLIENT_ID = public_key_of(CLIENT_KEY)


def test_hold_request_round_trip_and_hash_limit_at_boundary() -> None:
    ok = m.HoldHtlcsRequest.sign(tuple(h(i) for i in range(m.MAX_HASHES)), PID, 5000, CLIENT_KEY)
    assert ok.client_id == CLIENT_ID
    assert m.HoldHtlcsRequest.from_bytes(ok.to_bytes()) == ok
    assert m.decode_payload(m.HOLD_HTLCS, ok.to_bytes()) == ok
    with pytest.raises(UsageError):
        m.HoldHtlcsRequest.sign(tuple(h(i) for i in range(m.MAX_HASHES + 1)), PID, 5000, CLIENT_KEY)
    # A peer's message with 33 hashes is refused by the decoder, naming the field.
    too_many = encode_tlv_stream([(0, b"".join(h(i) for i in range(m.MAX_HASHES + 1))), (2, PID),
                                  (4, (5000).to_bytes(8, "big")), (6, CLIENT_ID), (8, bytes(64))])
    with pytest.raises(DecodeError, match="payment_hashes: 33 payment hashes, at most 32"):
        m.HoldHtlcsRequest.from_bytes(too_many)


def test_hold_request_signed_by_someone_else_is_refused() -> None:
    """Otherwise anyone knowing B's payment hash could have A's HTLC held under their own pid."""
    genuine = m.HoldHtlcsRequest.sign((h(1),), PID, 5000, CLIENT_KEY)
    forged = m.HoldHtlcsRequest.sign((h(1),), PID, 5000, key(41))
    claimed = encode_tlv_stream([(0, h(1)), (2, PID), (4, (5000).to_bytes(8, "big")), (6, CLIENT_ID),
                                 (8, forged.signature)])
    with pytest.raises(DecodeError, match="hold_htlcs signature: not client_id's signature"):
        m.HoldHtlcsRequest.from_bytes(claimed)
    tampered = encode_tlv_stream([(0, h(2)), (2, PID), (4, (5000).to_bytes(8, "big")), (6, CLIENT_ID),
                                  (8, genuine.signature)])
    with pytest.raises(DecodeError, match="hold_htlcs signature"):
        m.HoldHtlcsRequest.from_bytes(tampered)


@pytest.mark.parametrize(("records", "message"), [
    ([(2, PID), (4, bytes(8))], "payment_hashes: missing"),
    ([(0, h(1) + h(1)), (2, PID), (4, (1).to_bytes(8, "big"))], "repeated"),
    ([(0, h(1)[:31]), (2, PID), (4, (1).to_bytes(8, "big"))], "multiple of 32"),
    ([(0, h(1)), (2, PID[:31]), (4, (1).to_bytes(8, "big"))], "pid: 31 bytes"),
    ([(0, h(1)), (2, PID), (4, bytes(8))], "amount_msat: must be positive"),
    ([(0, h(1)), (2, PID), (4, (1).to_bytes(8, "big"))], "client_id: missing"),
    ([(0, h(1)), (2, PID), (4, (1).to_bytes(8, "big")), (6, b"\x02" + bytes(32))], "client_id: not a valid"),
    ([(0, h(1)), (2, PID), (4, (1).to_bytes(8, "big")), (6, CLIENT_ID)], "signature: missing"),
    ([(0, h(1)), (2, PID), (4, (1).to_bytes(8, "big")), (6, CLIENT_ID), (8, bytes(64)), (10, b"")],
     "unknown even type 10"),
])
def test_hold_request_bad_fields_are_named(records: list[tuple[int, bytes]], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        m.HoldHtlcsRequest.from_bytes(encode_tlv_stream(records))


def test_notice_and_empty_payloads() -> None:
    notice = m.AsyncPaymentNotice((h(1), h(2)), 42)
    assert m.decode_payload(m.ASYNC_PAYMENT_NOTICE, notice.to_bytes()) == notice
    for t in (m.HELD_HTLC_AVAILABLE, m.RELEASE_HELD_HTLC, m.PAYMENT_UNBLOCK_MESSAGE):
        assert m.decode_payload(t, b"") == m.EmptyPayload()
        assert m.decode_payload(t, encode_tlv_stream([(1, b"x")])) == m.EmptyPayload()  # odd: skipped
        with pytest.raises(DecodeError, match="unknown even type 0"):
            m.decode_payload(t, encode_tlv_stream([(0, b"x")]))
    with pytest.raises(DecodeError, match="not an async-payment payload"):
        m.decode_payload(64, b"")
    # The numbers LDK uses (onion_message/async_payments.rs, offers.rs, ln/msgs.rs).
    assert (m.HELD_HTLC_AVAILABLE, m.RELEASE_HELD_HTLC, m.STATIC_INVOICE, m.UPDATE_ADD_HOLD_HTLC) == (72, 74, 70, 75537)


def test_pid_reaches_the_payers_lsp_through_the_payees_reply() -> None:
    """Flow 1, steps 4-6 with real blinding: A builds a reply path B -> LSP_a whose last hop carries the pid;
    B (who cannot read it) replies along it; only LSP_a recovers the pid."""
    lsp_a, relay = key(1), key(2)
    path = create_blinded_path(key(10), [public_key_of(relay), public_key_of(lsp_a)], [
        EncryptedDataTlv(next_node_id=public_key_of(lsp_a)),
        EncryptedDataTlv(path_id=b"rod", unknown_records=(m.payment_unblock_record(PID),)),
    ])
    assert PID not in path.to_bytes()  # B sees only ciphertext
    first, message = build_onion_message(key(11), path, OnionMessagePayload(
        records=((m.PAYMENT_UNBLOCK_MESSAGE, b""),)))
    assert first == public_key_of(relay)
    hop = peel_onion_message(relay, message)
    assert isinstance(hop, ForwardOnionMessage)
    final = peel_onion_message(lsp_a, hop.message)
    assert isinstance(final, ReceivedOnionMessage)
    assert m.payment_unblock_from(final.encrypted_data.unknown_records) == PID
    assert final.payload.records == ((m.PAYMENT_UNBLOCK_MESSAGE, b""),)
    # A reply path without the record carries no pid; a wrong-sized one is refused by name.
    plain = create_reply_path(key(12), [public_key_of(lsp_a)], b"x")
    assert plain.hops
    assert m.payment_unblock_from(()) is None
    with pytest.raises(DecodeError, match="payment_unblock: 3 bytes"):
        m.payment_unblock_from(((m.PAYMENT_UNBLOCK, b"abc"),))


OFFER = ((10, b"coffee"), (22, public_key_of(key(5))))


def _static(**kw: object) -> StaticInvoice:
    held = create_reply_path(key(20), [public_key_of(key(21)), public_key_of(key(5))], b"held")
    pay = create_reply_path(key(22), [public_key_of(key(21)), public_key_of(key(5))], b"pay")
    return sign_static_invoice(OFFER, pay.to_bytes(), bytes(28), [held], 1_700_000_000, key(5),
                               **kw)  # type: ignore[arg-type]


def test_static_invoice_round_trip_signature_and_expiry() -> None:
    invoice = _static(relative_expiry=600)
    again = StaticInvoice.from_bytes(invoice.to_bytes())
    assert again == invoice
    assert again.node_id == public_key_of(key(5))
    assert len(again.held_htlc_available_paths) == 1
    assert not again.is_expired(1_700_000_600) and again.is_expired(1_700_000_601)
    assert _static().relative_expiry == 7200
    # A flipped byte in the description breaks the signature.
    raw = bytearray(invoice.to_bytes())
    raw[raw.index(b"coffee")] ^= 1
    with pytest.raises(DecodeError, match="signature"):
        StaticInvoice.from_bytes(bytes(raw))


@pytest.mark.parametrize(("extra", "message"), [
    ((INVOICE_PAYMENT_HASH, bytes(32)), "invoice_payment_hash: a static invoice has no payment hash"),
    ((INVOICE_AMOUNT, b"\x01"), "invoice_amount: a static invoice has no amount"),
    ((88, bytes(33)), "type 88 does not belong"),
])
def test_static_invoice_refuses_fields_it_must_not_have(extra: tuple[int, bytes], message: str) -> None:
    invoice = _static()
    with pytest.raises(DecodeError, match=message):
        StaticInvoice.from_bytes(encode_tlv_stream([*invoice.records, extra, (SIGNATURE, invoice.signature)]))


def test_static_invoice_requires_held_htlc_paths() -> None:
    invoice = _static()
    records = [r for r in invoice.records if r[0] != HELD_HTLC_AVAILABLE_PATHS]
    with pytest.raises(DecodeError, match="held_htlc_available_paths: missing"):
        StaticInvoice.from_bytes(encode_tlv_stream([*records, (SIGNATURE, invoice.signature)]))


_HOLD_BYTES = m.HoldHtlcsRequest.sign((h(1), h(2)), PID, 5000, key(40)).to_bytes()

DECODERS: list[Callable[[bytes], object]] = [
    m.HoldHtlcsRequest.from_bytes,
    m.AsyncPaymentNotice.from_bytes,
    lambda b: m.decode_payload(m.RELEASE_HELD_HTLC, b),
    StaticInvoice.from_bytes,
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(DECODERS))), st.binary(max_size=300))
def test_decoders_raise_only_decode_error(which: int, data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        DECODERS[which](data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=m.MAX_HASHES, unique=True),
       st.binary(min_size=32, max_size=32), st.integers(1, 2**64 - 1))
def test_hold_request_round_trips(hashes: list[bytes], pid: bytes, amount: int) -> None:
    request = m.HoldHtlcsRequest.sign(tuple(hashes), pid, amount, CLIENT_KEY)
    assert m.HoldHtlcsRequest.from_bytes(request.to_bytes()) == request


@settings(max_examples=200, deadline=None)
@given(st.booleans(), st.integers(0, 2000), st.integers(0, 255))
def test_mutated_signed_messages_raise_only_decode_error(static: bool, position: int, xor: int) -> None:
    raw = bytearray(_STATIC_BYTES if static else _HOLD_BYTES)
    raw[position % len(raw)] ^= xor
    decode: Callable[[bytes], object] = StaticInvoice.from_bytes if static else m.HoldHtlcsRequest.from_bytes
    with contextlib.suppress(DecodeError):
        decode(bytes(raw))


_STATIC_BYTES = _static().to_bytes()


@pytest.mark.parametrize("payload_type", [m.STATIC_INVOICE, m.HELD_HTLC_AVAILABLE, m.RELEASE_HELD_HTLC])
def test_draft_payloads_reach_the_recipient_instead_of_being_dropped_as_unknown_even(payload_type: int) -> None:
    """BOLT 4 drops an onion message with an unknown even type; 70/72/74 are even, so the onion layer
    must know them or a draft-spec payee never hears of its held HTLC."""
    payee = key(30)
    path = create_reply_path(key(31), [public_key_of(payee)], b"draft")
    _, message = build_onion_message(key(32), path, OnionMessagePayload(records=((payload_type, b""),)))
    received = peel_onion_message(payee, message)
    assert isinstance(received, ReceivedOnionMessage)
    assert received.payload.records == ((payload_type, b""),)
    assert received.path_id == b"draft"
