"""BOLT 12's reader and writer rules, one by one, at their boundaries (N accepted, N+1 refused)."""

from __future__ import annotations

import pytest

from lightspeed.bitcoin.network import BITCOIN, TESTNET
from lightspeed.codec.tlv import encode_tu
from lightspeed.errors import DecodeError, UsageError
from lightspeed.offers import (
    BlindedPayInfo,
    FallbackAddress,
    InvoiceError,
    build_offer,
    build_refund,
    check_invoice_for_request,
    check_invoice_request_for_offer,
    check_offer_usable,
    decode_bolt12,
    decode_invoice,
    decode_invoice_request,
    decode_offer,
    request_invoice,
    respond_to_invoice_request,
)
from lightspeed.offers.sign import public_key_of
from lightspeed.onion.blinding import BlindedHop, BlindedPath
from tests.test_offers_support import (
    ALICE,
    ALICE_ID,
    BOB,
    BOB_ID,
    CAROL_ID,
    CHAINS,
    NOW,
    PAYINFO,
    payment_path,
    raw_string,
    sample_invoice,
    sample_offer,
    signed_string,
)

ISSUER = (22, ALICE_ID)
DESC = (10, b"coffee")


def refused(text: str, field: str) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode_bolt12(text)
    assert excinfo.value.field == field, str(excinfo.value)


# ---- offers -----------------------------------------------------------------------------

def _path_bytes(first: bytes = ALICE_ID, key: bytes = BOB_ID, hops: tuple[bytes, ...] = (CAROL_ID,)) -> bytes:
    out = first + key + bytes([len(hops)])
    for hop in hops:
        out += hop + b"\x00\x02\xab\xcd"
    return out


@pytest.mark.parametrize("tlv_type,ok", [(79, True), (81, False), (999_999_999, False), (1_000_000_001, True),
                                         (1_999_999_999, True), (2_000_000_001, False)])
def test_offer_tlv_ranges(tlv_type: int, ok: bool) -> None:
    """BOLT #12: outside 1-79 and 1000000000-1999999999: MUST NOT respond to the offer."""
    text = raw_string("lno", [DESC, ISSUER, (tlv_type, b"x")])
    if ok:
        assert decode_offer(text).unknown_records == ((tlv_type, b"x"),)
    else:
        refused(text, f"type {tlv_type}")


def test_offer_type_zero_is_outside_the_offer_range() -> None:
    refused(raw_string("lno", [(0, b"m"), DESC, ISSUER]), "invreq_metadata")


@pytest.mark.parametrize("tlv_type", [24, 78, 1_000_000_002])
def test_offer_unknown_even_type(tlv_type: int) -> None:
    refused(raw_string("lno", [DESC, ISSUER, (tlv_type, b"")]), f"type {tlv_type}")


@pytest.mark.parametrize("path,reason", [
    (_path_bytes(hops=()), "num_hops"),
    (_path_bytes(first=b"\x05" + bytes(32)), "not a 33-byte compressed point"),
    (_path_bytes(key=b"\x02" + bytes(32)), "first_path_key"),
    (_path_bytes(hops=(b"\x03" + bytes(32),)), "blinded_node_id"),
    (_path_bytes() + b"\x00", "truncated"),
])
def test_offer_bad_blinded_paths(path: bytes, reason: str) -> None:
    """The intent of the spec's 'Malformed: ... blinded_path' vectors, which are malformed earlier."""
    with pytest.raises(DecodeError) as excinfo:
        decode_offer(raw_string("lno", [DESC, (16, path)]))
    assert excinfo.value.field == "offer_paths" and reason in excinfo.value.reason
    assert decode_offer(raw_string("lno", [DESC, (16, _path_bytes())])).paths  # the well-formed path is fine


def test_offer_with_sciddir_path_and_no_issuer_id() -> None:
    sciddir = b"\x01" + (42 << 40 | 7 << 16 | 1).to_bytes(8, "big")
    offer = decode_offer(raw_string("lno", [DESC, (16, _path_bytes(first=sciddir))]))
    assert offer.paths is not None and offer.paths[0].first_node_id == sciddir
    assert decode_bolt12(offer.encode()) == offer


@pytest.mark.parametrize("bits,ok", [({1}, True), ({99}, True), ({0}, False), ({98}, False)])
def test_offer_features(bits: set[int], ok: bool) -> None:
    """BOLT #12: unknown even bits: MUST NOT respond; unknown odd bits: MUST ignore the bit."""
    field = sum(1 << b for b in bits).to_bytes(13, "big")
    text = raw_string("lno", [DESC, (12, field), ISSUER])
    if ok:
        assert decode_offer(text).feature_bits == frozenset(bits)
    else:
        refused(text, "offer_features")


def test_offer_amount_currency_description_rules() -> None:
    assert decode_offer(raw_string("lno", [(8, encode_tu(1)), DESC, ISSUER])).amount_msat == 1
    refused(raw_string("lno", [(8, encode_tu(1)), ISSUER]), "offer_description")
    refused(raw_string("lno", [(8, b""), DESC, ISSUER]), "offer_amount")
    refused(raw_string("lno", [(6, b"USD"), DESC, ISSUER]), "offer_currency")
    refused(raw_string("lno", [(8, b"\x00\x01"), DESC, ISSUER]), "offer_amount")  # non-minimal tu64
    refused(raw_string("lno", [(8, bytes(9)), DESC, ISSUER]), "offer_amount")
    usd = decode_offer(raw_string("lno", [(6, b"USD"), (8, encode_tu(500)), DESC, ISSUER]))
    assert (usd.currency, usd.amount, usd.amount_msat) == ("USD", 500, None)
    # An empty description is still a description, and a description without an amount is fine.
    assert decode_offer(raw_string("lno", [(8, encode_tu(5)), (10, b""), ISSUER])).description == ""
    assert decode_offer(raw_string("lno", [ISSUER])).description is None


def test_offer_needs_issuer_id_or_paths() -> None:
    refused(raw_string("lno", [DESC]), "offer_issuer_id")
    refused(raw_string("lno", [DESC, (16, b"")]), "offer_paths")
    assert decode_offer(raw_string("lno", [DESC, (16, b""), ISSUER])).paths == ()


def test_offer_chains() -> None:
    refused(raw_string("lno", [(2, b""), ISSUER]), "offer_chains")
    refused(raw_string("lno", [(2, bytes(33)), ISSUER]), "offer_chains")
    both = decode_offer(raw_string("lno", [(2, TESTNET.chain_hash + BITCOIN.chain_hash), ISSUER]))
    assert both.chain_hashes == (TESTNET.chain_hash, BITCOIN.chain_hash)
    assert decode_offer(raw_string("lno", [ISSUER])).chain_hashes == (BITCOIN.chain_hash,)


def test_offer_expiry_and_chain_are_the_readers_checks() -> None:
    offer = sample_offer(absolute_expiry=NOW)
    check_offer_usable(offer, now=NOW, accepted_chains=CHAINS)
    with pytest.raises(DecodeError) as excinfo:
        check_offer_usable(offer, now=NOW + 1, accepted_chains=CHAINS)
    assert excinfo.value.field == "offer_absolute_expiry"
    with pytest.raises(DecodeError) as excinfo:
        check_offer_usable(offer, now=NOW, accepted_chains={TESTNET.chain_hash})
    assert excinfo.value.field == "offer_chains"
    check_offer_usable(sample_offer(chains=[TESTNET.chain_hash]), now=NOW, accepted_chains={TESTNET.chain_hash})


def test_offer_writer_rules() -> None:
    for bad in ({"amount_msat": 0}, {"description": None}, {"amount_msat": None, "currency": "USD"},
                {"amount_msat": None, "currency": "usd", "amount": 5}, {"amount_msat": None, "currency": "US", "amount": 5},
                {"issuer_id": None}, {"chains": []}, {"quantity_max": -1}, {"paths": []},
                {"unknown_records": [(80, b"")]}, {"unknown_records": [(10, b"")]},
                {"issuer_id": b"\x02" + bytes(32)}):
        with pytest.raises(UsageError):
            sample_offer(**bad)
    assert sample_offer(chains=[BITCOIN.chain_hash]).chains is None  # SHOULD omit offer_chains
    assert sample_offer(amount_msat=None, currency="EUR", amount=250).currency == "EUR"
    assert sample_offer(amount_msat=None, description=None).amount is None  # "any amount", no description
    assert build_offer(paths=[payment_path()]).issuer_id is None


# ---- invoice requests ---------------------------------------------------------------------

def _invreq(*extra: tuple[int, bytes], offer: tuple[tuple[int, bytes], ...] = ((8, encode_tu(10_000)), DESC, ISSUER),
            drop: tuple[int, ...] = (), key: bytes = BOB) -> str:
    records = [(0, b"\x07" * 8), *offer, (88, BOB_ID), *extra]
    return signed_string("lnr", [r for r in records if r[0] not in drop], key)


def test_invoice_request_baseline_is_valid() -> None:
    invreq = decode_invoice_request(_invreq())
    assert (invreq.payer_id, invreq.metadata, invreq.offer.issuer_id) == (BOB_ID, b"\x07" * 8, ALICE_ID)
    assert invreq.signature_valid() and not invreq.is_refund


def test_invoice_request_required_fields_and_signature() -> None:
    refused(_invreq(drop=(88,)), "invreq_payer_id")
    refused(_invreq(drop=(0,)), "invreq_metadata")
    refused(_invreq(key=ALICE), "signature")
    unsigned = raw_string("lnr", [(0, b"m"), (8, encode_tu(10_000)), DESC, ISSUER, (88, BOB_ID)])
    refused(unsigned, "signature")
    # The signature commits to every non-signature field: change one and it fails.
    good = decode_invoice_request(_invreq((89, b"note")))
    tampered = raw_string("lnr", [(t, v) for t, v in good.records() if t != 89] + [(89, b"nope")])
    refused(tampered, "signature")


@pytest.mark.parametrize("tlv_type,ok", [(159, True), (161, False), (241, True), (999, True), (1001, False),
                                         (2_999_999_999, True), (3_000_000_001, False)])
def test_invoice_request_tlv_ranges(tlv_type: int, ok: bool) -> None:
    """BOLT #12: reject non-signature fields outside 0-159 and 1000000000-2999999999."""
    text = _invreq((tlv_type, b"x"))
    if ok:
        assert (tlv_type, b"x") in decode_invoice_request(text).unknown_records
    else:
        refused(text, f"type {tlv_type}")


def test_invoice_request_features_and_unknown_even() -> None:
    refused(_invreq((84, b"\x01")), "invreq_features")
    assert decode_invoice_request(_invreq((84, b"\x02"))).feature_bits == {1}
    refused(_invreq((92, b"")), "type 92")


def test_invoice_request_quantity_boundaries() -> None:
    offer = ((8, encode_tu(100)), DESC, (20, encode_tu(5)), ISSUER)
    assert decode_invoice_request(_invreq((86, encode_tu(5)), offer=offer)).quantity == 5
    refused(_invreq((86, encode_tu(6)), offer=offer), "invreq_quantity")
    refused(_invreq((86, b""), offer=offer), "invreq_quantity")
    refused(_invreq(offer=offer), "invreq_quantity")
    refused(_invreq((86, encode_tu(1))), "invreq_quantity")  # offer without offer_quantity_max
    unlimited = ((8, encode_tu(100)), DESC, (20, b""), ISSUER)
    assert decode_invoice_request(_invreq((86, encode_tu(10**9)), offer=unlimited)).quantity == 10**9


def test_invoice_request_amount_boundaries() -> None:
    offer = ((8, encode_tu(100)), DESC, (20, encode_tu(5)), ISSUER)
    assert decode_invoice_request(_invreq((82, encode_tu(300)), (86, encode_tu(3)), offer=offer)).amount_msat == 300
    refused(_invreq((82, encode_tu(299)), (86, encode_tu(3)), offer=offer), "invreq_amount")
    refused(_invreq(offer=(DESC, ISSUER)), "invreq_amount")  # no offer_amount: invreq_amount required
    # In a currency the expected amount needs an exchange rate: decode accepts, the issuer checks.
    usd = ((6, b"USD"), (8, encode_tu(100)), DESC, ISSUER)
    invreq = decode_invoice_request(_invreq((82, encode_tu(999)), offer=usd))
    offer = decode_offer(raw_string("lno", list(usd)))
    check_invoice_request_for_offer(invreq, offer, now=NOW, accepted_chains=CHAINS, convert=lambda c, a: a * 9 + 99)
    with pytest.raises(DecodeError):
        check_invoice_request_for_offer(invreq, offer, now=NOW, accepted_chains=CHAINS, convert=lambda c, a: a * 10)
    with pytest.raises(UsageError):
        check_invoice_request_for_offer(invreq, offer, now=NOW, accepted_chains=CHAINS)


def test_invoice_request_offer_fields_must_form_a_valid_offer() -> None:
    refused(_invreq(offer=((8, b""), DESC, ISSUER)), "offer_amount")


def test_refund_rules() -> None:
    refund = [(0, b"m"), DESC, (82, encode_tu(5000)), (88, BOB_ID)]
    invreq = decode_invoice_request(raw_string("lnr", refund))
    assert invreq.is_refund and invreq.signature is None
    for field, record in (("offer_chains", (2, BITCOIN.chain_hash)), ("offer_features", (12, b"\x02")),
                          ("offer_quantity_max", (20, b""))):
        refused(raw_string("lnr", [*refund, record]), field)
    refused(raw_string("lnr", [r for r in refund if r[0] != 82]), "invreq_amount")
    # A signature a refund carries anyway (Core Lightning writes one) must verify.
    assert decode_invoice_request(signed_string("lnr", refund, BOB)).signature_valid()
    refused(signed_string("lnr", refund, ALICE), "signature")


def test_invoice_request_bip353_name() -> None:
    name = b"\x05alice\x0bexample.com"
    assert decode_invoice_request(_invreq((91, name))).bip_353_name is not None
    refused(_invreq((91, b"\x05al@ce\x0bexample.com")), "invreq_bip_353_name")
    refused(_invreq((91, b"\x05alice\x0bexample.co")), "invreq_bip_353_name")


def test_invoice_request_paths_zero_hops() -> None:
    refused(_invreq((90, _path_bytes(hops=()))), "invreq_paths")


def test_invoice_request_writer_rules() -> None:
    quantity_offer = sample_offer(quantity_max=5)
    for offer, kwargs in ((quantity_offer, {}), (quantity_offer, {"quantity": 0}), (quantity_offer, {"quantity": 6}),
                          (sample_offer(), {"quantity": 1}), (sample_offer(), {"amount_msat": 9_999}),
                          (sample_offer(amount_msat=None, description=None), {}),
                          (sample_offer(), {"chain": TESTNET.chain_hash}),
                          (sample_offer(chains=[TESTNET.chain_hash]), {"chain": BITCOIN.chain_hash}),
                          (sample_offer(), {"metadata": b""}), (sample_offer(), {"unknown_records": [(4, b"")]})):
        args = {"payer_key": BOB, "metadata": b"m" * 16, **kwargs}
        with pytest.raises(UsageError):
            request_invoice(offer, **args)  # type: ignore[arg-type]
    ok = request_invoice(quantity_offer, payer_key=BOB, metadata=b"m", quantity=5, amount_msat=50_000)
    assert ok.signature_valid() and ok.payer_id == BOB_ID and ok.offer == quantity_offer
    # offer_chains = [bitcoin, testnet]: bitcoin is omitted, testnet is written.
    multi = sample_offer(chains=[BITCOIN.chain_hash, TESTNET.chain_hash])
    assert request_invoice(multi, payer_key=BOB, metadata=b"m").chain is None
    assert request_invoice(multi, payer_key=BOB, metadata=b"m", chain=TESTNET.chain_hash).chain == TESTNET.chain_hash


def test_refund_writer_rules() -> None:
    refund = build_refund(payer_id=BOB_ID, metadata=b"m", description="refund", amount_msat=5000,
                          chain=BITCOIN.chain_hash, issuer="shop")
    assert refund.signature is None and refund.chain is None and refund.is_refund
    assert decode_invoice_request(refund.encode()) == refund
    for bad in ({"amount_msat": 0}, {"metadata": b""}, {"paths": []}, {"payer_id": b"\x02" + bytes(32)}):
        args: dict[str, object] = {"payer_id": BOB_ID, "metadata": b"m", "description": "r", "amount_msat": 1, **bad}
        with pytest.raises(UsageError):
            build_refund(**args)  # type: ignore[arg-type]


def test_issuer_checks_the_request_against_its_offer() -> None:
    offer = sample_offer(absolute_expiry=NOW)
    invreq = request_invoice(offer, payer_key=BOB, metadata=b"m")
    check_invoice_request_for_offer(invreq, offer, now=NOW, accepted_chains=CHAINS)
    for kwargs, field in (({"now": NOW + 1}, "offer_absolute_expiry"),
                          ({"accepted_chains": {TESTNET.chain_hash}}, "invreq_chain")):
        args: dict[str, object] = {"now": NOW, "accepted_chains": CHAINS, **kwargs}
        with pytest.raises(DecodeError) as excinfo:
            check_invoice_request_for_offer(invreq, offer, **args)  # type: ignore[arg-type]
        assert excinfo.value.field == field
    with pytest.raises(DecodeError) as excinfo:
        check_invoice_request_for_offer(invreq, sample_offer(absolute_expiry=NOW, issuer="x"), now=NOW,
                                        accepted_chains=CHAINS)
    assert excinfo.value.field == "offer"


# ---- invoices -------------------------------------------------------------------------------

def _invoice_records(drop: tuple[int, ...] = (), **replace: bytes) -> list[tuple[int, bytes]]:
    _, invoice = sample_invoice()
    records = [(t, v) for t, v in invoice.records() if t != 240 and t not in drop]
    names = {"paths": 160, "payinfo": 162, "amount": 170, "features": 174, "node_id": 176, "expiry": 166}
    for name, value in replace.items():
        records = [r for r in records if r[0] != names[name]] + [(names[name], value)]
    return records


def test_invoice_baseline_and_round_trip() -> None:
    invreq, invoice = sample_invoice()
    assert decode_invoice(invoice.encode()) == invoice
    assert invoice.signature_valid() and invoice.amount_msat == 10_000 and invoice.node_id == ALICE_ID
    check_invoice_for_request(invoice, invreq, now=NOW, accepted_chains=CHAINS)


@pytest.mark.parametrize("tlv_type,field", [(170, "invoice_amount"), (164, "invoice_created_at"),
                                            (168, "invoice_payment_hash"), (176, "invoice_node_id"),
                                            (160, "invoice_paths"), (162, "invoice_blindedpay")])
def test_invoice_required_fields(tlv_type: int, field: str) -> None:
    refused(signed_string("lni", _invoice_records(drop=(tlv_type,)), ALICE), field)


def test_invoice_paths_and_payinfo() -> None:
    refused(signed_string("lni", _invoice_records(paths=b""), ALICE), "invoice_paths")
    refused(signed_string("lni", _invoice_records(payinfo=PAYINFO.to_bytes() * 2), ALICE), "invoice_blindedpay")
    unusable = BlindedPayInfo(1, 1, 1, 1, 1, features=b"\x01").to_bytes()  # bit 0: unknown even
    refused(signed_string("lni", _invoice_records(payinfo=unusable), ALICE), "invoice_blindedpay")
    two_paths = payment_path().to_bytes() + payment_path(session=9).to_bytes()
    invoice = decode_invoice(signed_string("lni", _invoice_records(paths=two_paths, payinfo=unusable
                                                                   + PAYINFO.to_bytes()), ALICE))
    assert len(invoice.paths) == 2 and [i for _, i in invoice.usable_paths] == [PAYINFO]


@pytest.mark.parametrize("bit,ok", [(16, True), (17, True), (19, True), (18, False), (0, False)])
def test_invoice_features(bit: int, ok: bool) -> None:
    text = signed_string("lni", _invoice_records(features=(1 << bit).to_bytes(3, "big")), ALICE)
    if ok:
        assert decode_invoice(text).feature_bits == {bit}
    else:
        refused(text, "invoice_features")


def test_invoice_node_id_amount_and_signature() -> None:
    refused(signed_string("lni", _invoice_records(node_id=BOB_ID), BOB), "invoice_node_id")
    _, with_amount = sample_invoice(amount_msat=12_000)
    records = [(t, v) for t, v in with_amount.records() if t not in (170, 240)] + [(170, encode_tu(12_001))]
    refused(signed_string("lni", records, ALICE), "invoice_amount")
    refused(signed_string("lni", _invoice_records(), BOB), "signature")
    refused(raw_string("lni", _invoice_records()), "signature")
    # Without the signature check (the CLI's mode) the same invoice reads, reported invalid.
    unsigned = decode_invoice(raw_string("lni", _invoice_records()), check_signature=False)
    assert not unsigned.signature_valid()


def test_invoice_expiry_boundary() -> None:
    _, invoice = sample_invoice()
    assert invoice.expires_at == NOW + 7200
    assert not invoice.is_expired(NOW + 7200) and invoice.is_expired(NOW + 7201)
    short = decode_invoice(signed_string("lni", _invoice_records(expiry=encode_tu(60)), ALICE))
    assert not short.is_expired(NOW + 60) and short.is_expired(NOW + 61)
    refused(signed_string("lni", _invoice_records(expiry=bytes([1, 0, 0, 0, 0])), ALICE), "invoice_relative_expiry")


def test_payer_checks_the_invoice_against_its_request() -> None:
    invreq, invoice = sample_invoice()
    with pytest.raises(DecodeError) as excinfo:
        check_invoice_for_request(invoice, invreq, now=NOW + 7201, accepted_chains=CHAINS)
    assert excinfo.value.field == "invoice_relative_expiry"
    other = request_invoice(sample_offer(), payer_key=BOB, metadata=b"\x08" * 16)
    with pytest.raises(DecodeError) as excinfo:
        check_invoice_for_request(invoice, other, now=NOW, accepted_chains=CHAINS)
    assert excinfo.value.field == "invoice_request"
    with pytest.raises(DecodeError) as excinfo:
        check_invoice_for_request(invoice, invreq, now=NOW, accepted_chains={TESTNET.chain_hash})
    assert excinfo.value.field == "invreq_chain"


def test_offer_with_paths_only_invoice_node_is_the_final_blinded_node() -> None:
    final_key = bytes([0x44]) * 32
    path = BlindedPath(CAROL_ID, BOB_ID, (BlindedHop(CAROL_ID, b"a"), BlindedHop(public_key_of(final_key), b"b")))
    offer = build_offer(paths=[path], description="tea", amount_msat=5)
    invreq = request_invoice(offer, payer_key=BOB, metadata=b"m")
    invoice = respond_to_invoice_request(invreq, node_key=final_key, payment_hash=bytes(32), created_at=NOW,
                                         paths=[payment_path()], blindedpay=[PAYINFO])
    check_invoice_for_request(invoice, invreq, now=NOW, accepted_chains=CHAINS,
                              final_blinded_node_ids=[path.hops[-1].blinded_node_id])
    with pytest.raises(DecodeError) as excinfo:
        check_invoice_for_request(invoice, invreq, now=NOW, accepted_chains=CHAINS, final_blinded_node_ids=[CAROL_ID])
    assert excinfo.value.field == "invoice_node_id"


def test_invoice_writer_rules() -> None:
    invreq = request_invoice(sample_offer(), payer_key=BOB, metadata=b"m")
    base: dict[str, object] = {"node_key": ALICE, "payment_hash": bytes(32), "created_at": NOW,
                               "paths": [payment_path()], "blindedpay": [PAYINFO]}
    for bad in ({"node_key": BOB}, {"amount_msat": 10_001}, {"paths": []}, {"blindedpay": [PAYINFO, PAYINFO]},
                {"payment_hash": bytes(31)}, {"fallbacks": [FallbackAddress(17, bytes(20))]},
                {"fallbacks": [FallbackAddress(0, bytes(21))]}, {"unknown_records": [(241, b"")]}):
        with pytest.raises(UsageError):
            respond_to_invoice_request(invreq, **{**base, **bad})  # type: ignore[arg-type]
    usd = request_invoice(sample_offer(amount_msat=None, currency="USD", amount=100), payer_key=BOB, metadata=b"m")
    with pytest.raises(UsageError):
        respond_to_invoice_request(usd, **base)  # type: ignore[arg-type]
    converted = respond_to_invoice_request(usd, convert=lambda c, a: a * 1000, **base)  # type: ignore[arg-type]
    assert converted.amount_msat == 100_000
    # A refund: the refund's payee signs with its own key; every non-signature field is copied.
    refund = build_refund(payer_id=BOB_ID, metadata=b"m", description="back", amount_msat=777)
    invoice = respond_to_invoice_request(refund, **{**base, "node_key": bytes([0x45]) * 32})  # type: ignore[arg-type]
    assert invoice.request == refund and invoice.amount_msat == 777
    assert decode_invoice(invoice.encode()) == invoice


def test_invoice_copies_unknown_request_fields_but_not_signature_range_ones() -> None:
    invreq = request_invoice(sample_offer(unknown_records=[(33, b"o")]), payer_key=BOB, metadata=b"m",
                             unknown_records=[(101, b"r"), (2_000_000_001, b"x")])
    signed_extra = decode_invoice_request(signed_string(
        "lnr", [(t, v) for t, v in invreq.records() if t != 240] + [(241, b"sig-range")], BOB))
    invoice = respond_to_invoice_request(signed_extra, node_key=ALICE, payment_hash=bytes(32), created_at=NOW,
                                         paths=[payment_path()], blindedpay=[PAYINFO])
    types = [t for t, _ in invoice.records()]
    assert 33 in types and 101 in types and 2_000_000_001 in types and 241 not in types
    check_invoice_for_request(invoice, signed_extra, now=NOW, accepted_chains=CHAINS)


def test_fallback_usability_boundaries() -> None:
    assert FallbackAddress(16, bytes(2)).usable and not FallbackAddress(17, bytes(2)).usable
    assert FallbackAddress(1, bytes(40)).usable and not FallbackAddress(1, bytes(41)).usable
    assert not FallbackAddress(1, bytes(1)).usable
    assert FallbackAddress(0, bytes(20)).usable and FallbackAddress(0, bytes(32)).usable
    assert not FallbackAddress(0, bytes(21)).usable


# ---- invoice_error ----------------------------------------------------------------------------

def test_invoice_error() -> None:
    err = InvoiceError("amount too low", erroneous_field=82, suggested_value=encode_tu(20_000),
                       unknown_records=((7, b"x"),))
    assert InvoiceError.from_tlv(err.to_tlv()) == err
    with pytest.raises(UsageError):
        InvoiceError("x", suggested_value=b"1").to_tlv()
    for bad, field in ((bytes([3, 1, 0x31, 5, 1, 0x78]), "suggested_value"), (bytes([1, 1, 82]), "error"),
                       (bytes([5, 1, 0xFF]), "error"), (bytes([2, 0, 5, 1, 0x78]), "type 2")):
        with pytest.raises(DecodeError) as excinfo:
            InvoiceError.from_tlv(bad)
        assert excinfo.value.field == field
