"""Hypothesis: byte-exact round trips of every BOLT 12 message, and readers that only raise DecodeError."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightspeed.codec.tlv import encode_tlv_stream
from lightspeed.errors import DecodeError
from lightspeed.offers import (
    Invoice,
    InvoiceError,
    InvoiceRequest,
    Offer,
    bolt12_to_json,
    decode_bolt12,
    decode_offer,
    encode_string,
    invoice_from_tlv,
    invoice_request_from_tlv,
    merkle_root,
    offer_from_tlv,
    request_invoice,
    split_string,
)
from lightspeed.offers.invoice import parse_invoice
from lightspeed.offers.invoice_request import parse_invoice_request_fields
from lightspeed.offers.offer import parse_offer_fields
from lightspeed.offers.strings import decode_string
from lightspeed.offers.tlv_fields import BlindedPayInfo, read_records
from tests.test_offers_support import (
    ALICE,
    BOB,
    bip353_names,
    blinded_paths,
    fallbacks,
    keys,
    offers,
    sample_invoice,
    sample_offer,
    small_bytes,
    texts,
    u64,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(offers())
def test_offer_string_round_trip(offer: Offer) -> None:
    text = offer.encode()
    decoded = decode_offer(text)
    assert decoded == offer and decoded.encode() == text
    assert decode_offer(text.upper()) == offer


@given(offers(valid=False))
def test_offer_fields_codec_is_exact_whatever_the_rules(offer: Offer) -> None:
    stream = offer.to_tlv()
    parsed = parse_offer_fields(read_records(stream))
    assert parsed == offer and parsed.to_tlv() == stream


@given(offers(), st.integers(2, 90), st.sampled_from(["", " ", "\n", "\r\n  "]))
def test_split_strings_join_back(offer: Offer, width: int, space: str) -> None:
    split = split_string(offer.encode(), width)
    assert all(len(line) <= width for line in split.split("\n"))
    assert decode_offer(split.replace("+\n", "+" + space)) == offer


invreq_fields = st.builds(
    InvoiceRequest, offer=offers(valid=False), metadata=st.none() | small_bytes, chain=st.none() | st.binary(
        min_size=32, max_size=32), amount_msat=st.none() | u64, features=st.none() | small_bytes,
    quantity=st.none() | u64, payer_id=st.none() | keys, payer_note=st.none() | texts,
    paths=st.none() | st.lists(blinded_paths(), max_size=2).map(tuple), bip_353_name=st.none() | bip353_names,
    unknown_records=st.lists(st.tuples(st.sampled_from([1, 81, 159, 2_000_000_001]), small_bytes),
                             unique_by=lambda r: r[0], max_size=2).map(
        lambda rs: tuple((t, v) for t, v in rs if t != 1)),
    signature=st.none() | st.binary(min_size=64, max_size=64),
)


@given(invreq_fields)
def test_invoice_request_fields_codec_is_exact(invreq: InvoiceRequest) -> None:
    stream = invreq.to_tlv()
    parsed = parse_invoice_request_fields(read_records(stream))
    assert parsed == invreq and parsed.to_tlv() == stream


@settings(max_examples=50, deadline=None)
@given(offers(), small_bytes.filter(bool), st.none() | texts, st.none() | bip353_names)
def test_signed_invoice_request_round_trip(offer: Offer, metadata: bytes, note: str | None,
                                           name: object) -> None:
    quantity = 1 if offer.quantity_max is not None else None
    amount = None if offer.amount is not None else 1000
    chain = offer.chains[0] if offer.chains else None
    invreq = request_invoice(offer, payer_key=BOB, metadata=metadata, payer_note=note, quantity=quantity,
                             amount_msat=amount, chain=chain, bip_353_name=name)  # type: ignore[arg-type]
    text = invreq.encode()
    assert decode_bolt12(text) == invreq and decode_bolt12(text).encode() == text  # type: ignore[union-attr]
    assert bolt12_to_json(text)["signature_valid"] is True


payinfos = st.builds(BlindedPayInfo, st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**16 - 1),
                     u64, u64, st.sets(st.integers(0, 40).map(lambda b: 2 * b + 1), max_size=2).map(
                         lambda bits: sum(1 << b for b in bits).to_bytes(11, "big")))


@st.composite
def invoices(draw: st.DrawFn) -> Invoice:
    paths = tuple(draw(st.lists(blinded_paths(), min_size=1, max_size=2)))
    return Invoice(
        request=draw(invreq_fields).without_signatures(), paths=paths,
        blindedpay=tuple(draw(payinfos) for _ in paths), created_at=draw(u64),
        payment_hash=draw(st.binary(min_size=32, max_size=32)), amount_msat=draw(u64), node_id=draw(keys),
        relative_expiry=draw(st.none() | st.integers(0, 2**32 - 1)),
        fallbacks=draw(st.none() | st.lists(fallbacks, max_size=2).map(tuple)),
        features=draw(st.none() | small_bytes),
        unknown_records=tuple(draw(st.lists(st.tuples(st.sampled_from([161, 1001, 3_000_000_001]), small_bytes),
                                            unique_by=lambda r: r[0], max_size=2))),
        signature=draw(st.none() | st.binary(min_size=64, max_size=64)),
    )


@given(invoices())
def test_invoice_codec_is_exact(invoice: Invoice) -> None:
    stream = invoice.to_tlv()
    parsed = parse_invoice(read_records(stream))
    assert parsed == invoice and parsed.to_tlv() == stream


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 2**40), st.none() | u64.filter(lambda q: q > 0))
def test_signed_invoice_round_trip(amount: int, quantity_max: int | None) -> None:
    offer = sample_offer(amount_msat=amount, quantity_max=quantity_max)
    _, invoice = sample_invoice(offer, quantity=1 if quantity_max else None)
    text = invoice.encode()
    assert decode_bolt12(text) == invoice and invoice.signature_valid()
    assert bolt12_to_json(text)["invoice_amount"] == amount
    assert invoice.sign(ALICE) == invoice  # deterministic BIP-340 (no auxiliary randomness)


# ---- only DecodeError --------------------------------------------------------------------

READERS: list[Callable[[bytes], object]] = [
    read_records, offer_from_tlv, invoice_request_from_tlv, invoice_from_tlv, InvoiceError.from_tlv, merkle_root,
    lambda b: invoice_request_from_tlv(b, check_signature=False),
    lambda b: invoice_from_tlv(b, check_signature=False),
]


def _only_decode_error(fn: Callable[[], object]) -> None:
    try:
        fn()
    except DecodeError as exc:
        assert exc.field and exc.reason


@FUZZ
@given(st.binary(max_size=300))
def test_every_tlv_reader_raises_only_decode_error(data: bytes) -> None:
    for reader in READERS:
        _only_decode_error(lambda r=reader: r(data))  # type: ignore[misc]


def _tlv_soup() -> st.SearchStrategy[bytes]:
    """Well-framed TLV streams of plausible types with random values: reach the field readers."""
    types = st.sampled_from([0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 33, 80, 82, 84, 86, 88, 89, 90, 91, 160,
                             162, 164, 166, 168, 170, 172, 174, 176, 240, 241])
    values = st.one_of(st.binary(max_size=70), st.sampled_from([b"", bytes(33), b"\x02" * 33, bytes(64)]))
    return st.lists(st.tuples(types, values), unique_by=lambda r: r[0], max_size=10).map(encode_tlv_stream)


@FUZZ
@given(_tlv_soup())
def test_field_readers_raise_only_decode_error(stream: bytes) -> None:
    for reader in READERS:
        _only_decode_error(lambda r=reader: r(stream))  # type: ignore[misc]
    for hrp in ("lno", "lnr", "lni"):
        _only_decode_error(lambda h=hrp: bolt12_to_json(encode_string(h, stream)))  # type: ignore[misc]


@FUZZ
@given(st.text(max_size=200))
def test_string_readers_raise_only_decode_error(text: str) -> None:
    _only_decode_error(lambda: decode_string(text))
    _only_decode_error(lambda: decode_bolt12(text))
    _only_decode_error(lambda: bolt12_to_json(text))


@FUZZ
@given(st.data())
def test_mutated_valid_strings_raise_only_decode_error(data: st.DataObject) -> None:
    invreq, invoice = sample_invoice()
    text = data.draw(st.sampled_from([invoice.encode(), invreq.encode(), invreq.offer.encode()]))
    position = data.draw(st.integers(0, len(text) - 1))
    char = data.draw(st.sampled_from("qpzry9x8gf2tvdw0s3jn54khce6mua7l+ 1Ab"))
    mode = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    if mode == "replace":
        mutated = text[:position] + char + text[position + 1:]
    elif mode == "insert":
        mutated = text[:position] + char + text[position:]
    elif mode == "delete":
        mutated = text[:position] + text[position + 1:]
    else:
        mutated = text[:position]
    _only_decode_error(lambda: decode_bolt12(mutated))
    _only_decode_error(lambda: bolt12_to_json(mutated))


@FUZZ
@given(st.data())
def test_flipped_bytes_raise_only_decode_error_and_break_signatures(data: st.DataObject) -> None:
    _, invoice = sample_invoice()
    stream = bytearray(invoice.to_tlv())
    position = data.draw(st.integers(0, len(stream) - 1))
    stream[position] ^= data.draw(st.integers(1, 255))
    try:
        decoded = invoice_from_tlv(bytes(stream))
    except DecodeError:
        return
    # Whatever still decodes with a valid signature must be the same invoice (the flip hit a
    # byte a reader normalises away, which BOLT 12 streams do not have).
    assert decoded == invoice
