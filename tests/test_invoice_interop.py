"""Interop with independent BOLT 11 implementations: pyln-proto (Core Lightning) and PyPI's bolt11.

Ours decode in theirs and theirs in ours, field by field, for hypothesis-generated
invoices. Where a peer deviates from the spec, a test named ``test_peer_deviation_*``
pins what the peer does today (so a fix upstream is noticed) while our own tests
pin what the spec says.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import bolt11
import pytest
from bolt11 import Bolt11, Feature, FeatureState, MilliSatoshi, RouteHint, TagChar, Tags
from bolt11.models.features import FeatureExtra
from hypothesis import given, settings
from hypothesis import strategies as st
from pyln.proto.invoice import Invoice as PylnInvoice

from lightspeed.codec.bech32 import bech32_split
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey, recover_pubkey
from lightspeed.errors import DecodeError
from lightspeed.invoice import Invoice, build_invoice, decode, format_short_channel_id
from lightspeed.invoice.decode import SKIPPED, interpret_field, split_tagged_fields
from lightspeed.invoice.model import signing_message
from tests.invoice_strategies import hashes, invoice_kwargs, privkeys
from tests.support.vectors import load_vectors

pytestmark = pytest.mark.interop
INVALID = {v["title"]: v["invoice"] for v in load_vectors("bolt11.json")["invalid"]}
CURRENCY = {"bitcoin": "bc", "testnet": "tb", "signet": "tbs", "regtest": "bcrt"}


def _features_from_bolt11(features: Any) -> set[int]:
    if features is None:
        return set()
    bits = set()
    for feature, state in features.feature_list.items():
        bits.add(2 * feature.value + (0 if state == FeatureState.required else 1))
    return bits


def _no_empty_integer_fields(kwargs: dict[str, Any]) -> dict[str, Any]:
    """A zero x or c is written, as the spec says, with data_length 0; neither peer can read
    an empty field (see test_peer_deviation_empty_integer_field)."""
    kwargs = dict(kwargs)
    for key in ("expiry", "min_final_cltv_expiry"):
        if kwargs[key] == 0:
            kwargs[key] = 1
    return kwargs


def _bolt11_like(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Restrict generated invoices to what the bolt11 package can represent correctly."""
    kwargs = _no_empty_integer_fields(kwargs)
    # It mis-writes amounts that are whole multiples of 1000 BTC (see the deviation test).
    if kwargs["amount_msat"] is not None and kwargs["amount_msat"] % (1000 * 10**11) == 0:
        kwargs["amount_msat"] += 1
    # Its feature model holds one state per pair: required wins over optional.
    kwargs["features"] = frozenset(b for b in kwargs["features"] if not (b % 2 and b - 1 in kwargs["features"]))
    kwargs["fallbacks"] = kwargs["fallbacks"][:1]  # it exposes the first f field only
    # It reads route-hint fees and CLTV deltas as signed integers (see the deviation test).
    kwargs["route_hints"] = [
        [hop.__class__(hop.pubkey, hop.short_channel_id, hop.fee_base_msat % 2**31,
                       hop.fee_proportional_millionths % 2**31, hop.cltv_expiry_delta % 2**15) for hop in route]
        for route in kwargs["route_hints"]
    ]
    return kwargs


@settings(max_examples=40, deadline=None)
@given(invoice_kwargs(), privkeys)
def test_ours_decode_in_bolt11(kwargs: dict[str, Any], privkey: bytes) -> None:
    ours = build_invoice(**_bolt11_like(kwargs)).sign(privkey)
    theirs = bolt11.decode(ours.encode())
    assert theirs.currency == CURRENCY[ours.network.name]
    assert theirs.amount_msat == ours.amount_msat
    assert theirs.date == ours.timestamp
    assert theirs.payment_hash == ours.payment_hash.hex()
    assert theirs.payment_secret == ours.payment_secret.hex()  # type: ignore[union-attr]
    assert theirs.description == ours.description
    assert theirs.description_hash == (ours.description_hash.hex() if ours.description_hash else None)
    assert theirs.expiry == ours.expiry
    assert theirs.min_final_cltv_expiry == ours.min_final_cltv_expiry
    assert theirs.payee == ours.payee.hex()
    assert _features_from_bolt11(theirs.features) == set(ours.features)
    assert theirs.metadata == (ours.metadata.hex() if ours.metadata is not None else None)
    assert [
        [(r.public_key, r.short_channel_id, r.base_fee, r.ppm_fee, r.cltv_expiry_delta) for r in hint.routes]
        for hint in theirs.route_hints
    ] == [
        [(h.pubkey.hex(), format_short_channel_id(h.short_channel_id), h.fee_base_msat,
          h.fee_proportional_millionths, h.cltv_expiry_delta) for h in route]
        for route in ours.route_hints
    ]


def _pyln_fields(theirs: PylnInvoice) -> dict[str, Any]:
    tags: dict[str, list[Any]] = {}
    for key, value in theirs.tags + theirs.unknown_tags:
        tags.setdefault(key, []).append(value)
    return tags


@settings(max_examples=40, deadline=None)
@given(invoice_kwargs(), privkeys)
def test_ours_decode_in_pyln_proto(kwargs: dict[str, Any], privkey: bytes) -> None:
    # pyln-proto cannot decode invoices carrying an n field: build_invoice adds none by default.
    # It renders v1+ fallbacks with bech32 instead of bech32m (see the deviation test).
    # Its decoder keeps the hops of the last r field only, so give it at most one; and it
    # renders fallback addresses only for "bc" and "tb" (raw bytes on signet and regtest).
    plain_network = kwargs["network"].name in ("bitcoin", "testnet")
    kwargs = {**_no_empty_integer_fields(kwargs), "fallbacks": [f for f in kwargs["fallbacks"] if f.version in (0, 17, 18) and plain_network],
              "route_hints": kwargs["route_hints"][:1]}
    ours = build_invoice(**kwargs).sign(privkey)
    theirs = PylnInvoice.decode(ours.encode())
    tags = _pyln_fields(theirs)
    assert theirs.currency == CURRENCY[ours.network.name]
    expected_btc = None if ours.amount_msat is None else Decimal(ours.amount_msat) / 10**11
    assert (theirs.amount if theirs.amount else None) == expected_btc
    assert theirs.date == ours.timestamp
    assert theirs.paymenthash == ours.payment_hash
    assert theirs.pubkey.format() == ours.payee
    assert tags.get("d", [None])[0] == ours.description
    assert tags.get("h", [None])[0] == ours.description_hash
    assert tags.get("x", [3600])[0] == ours.expiry
    assert (theirs.min_final_cltv_expiry or 18) == ours.min_final_cltv_expiry
    assert [a.decode() if isinstance(a, bytes) else a for a in tags.get("f", [])] == ours.fallback_addresses
    featurebits = theirs.featurebits
    assert (featurebits if isinstance(featurebits, int) else featurebits.uint) == sum(1 << b for b in ours.features)
    pyln_hops = [] if theirs.route_hints is None else theirs.route_hints.route_hints
    our_hops = [h for route in ours.route_hints for h in route]
    assert [(h.pubkey, h.short_channel_id, h.fee_base_msat, h.fee_proportional_millionths, h.cltv_expiry_delta)
            for h in pyln_hops] == [
        (h.pubkey, h.short_channel_id, h.fee_base_msat, h.fee_proportional_millionths, h.cltv_expiry_delta)
        for h in our_hops]


@settings(max_examples=40, deadline=None)
@given(invoice_kwargs(), privkeys)
def test_bolt11_invoices_decode_in_ours(kwargs: dict[str, Any], privkey: bytes) -> None:
    kwargs = _bolt11_like(kwargs)
    tags = Tags()
    tags.add(TagChar.payment_hash, kwargs["payment_hash"].hex())
    tags.add(TagChar.payment_secret, kwargs["payment_secret"].hex())
    if kwargs["description"] is not None:
        tags.add(TagChar.description, kwargs["description"])
    else:
        tags.add(TagChar.description_hash, kwargs["description_hash"].hex())
    if kwargs["expiry"] is not None:
        tags.add(TagChar.expire_time, kwargs["expiry"])
    if kwargs["min_final_cltv_expiry"] is not None:
        tags.add(TagChar.min_final_cltv_expiry, kwargs["min_final_cltv_expiry"])
    if kwargs["metadata"] is not None:
        tags.add(TagChar.metadata, kwargs["metadata"].hex())
    for route in kwargs["route_hints"]:
        tags.add(TagChar.route_hint, RouteHint.from_list([
            {"public_key": h.pubkey.hex(), "short_channel_id": format_short_channel_id(h.short_channel_id),
             "base_fee": h.fee_base_msat, "ppm_fee": h.fee_proportional_millionths,
             "cltv_expiry_delta": h.cltv_expiry_delta} for h in route]))
    bits = sorted(kwargs["features"])
    if bits:
        feature_list = {(Feature(b // 2) if b // 2 < len(Feature) else FeatureExtra(b // 2)):
                        (FeatureState.required if b % 2 == 0 else FeatureState.supported) for b in bits
                        if not (b % 2 == 1 and b - 1 in kwargs["features"])}
        tags.add(TagChar.features, bolt11.Features.from_feature_list(feature_list))
    currency = CURRENCY[kwargs["network"].name]
    text = bolt11.encode(Bolt11(currency=currency, date=kwargs["timestamp"], tags=tags,
                                amount_msat=None if kwargs["amount_msat"] is None else MilliSatoshi(kwargs["amount_msat"])),
                         private_key=privkey.hex())
    ours = decode(text)
    assert ours.network is kwargs["network"]
    assert (ours.amount_msat, ours.timestamp) == (kwargs["amount_msat"], kwargs["timestamp"])
    assert (ours.payment_hash, ours.payment_secret) == (kwargs["payment_hash"], kwargs["payment_secret"])
    assert (ours.description, ours.description_hash) == (kwargs["description"], kwargs["description_hash"])
    assert ours.expiry == (3600 if kwargs["expiry"] is None else kwargs["expiry"])
    assert ours.metadata == kwargs["metadata"]
    assert [list(r) for r in ours.route_hints] == kwargs["route_hints"]
    assert ours.payee == pubkey_from_privkey(privkey)
    assert ours.encode() == text


def _read_fields_without_requirements(text: str) -> tuple[dict[str, list[Any]], bytes]:
    """Field values and recovered payee, skipping only the 'required field' checks."""
    hrp, words, digits, _ = bech32_split(text, max_length=None)
    fields = split_tagged_fields(words, digits)
    values: dict[str, list[Any]] = {}
    for f in fields:
        value = interpret_field(f)
        if value is not SKIPPED:
            values.setdefault(f.letter, []).append(value)
    raw = int(digits[-104:], 32).to_bytes(65, "big")
    data = "".join(c for c in digits[:-104])
    from lightspeed.codec.bech32 import CHARSET

    chars = data.translate(str.maketrans("0123456789abcdefghijklmnopqrstuv", CHARSET))
    payee = recover_pubkey(raw[:64], raw[64], sha256(signing_message(hrp, chars)))
    return values, payee


@settings(max_examples=40, deadline=None)
@given(hashes, privkeys, st.integers(1, 10**12), st.text(max_size=40), st.integers(0, 10**6))
def test_pyln_invoices_read_in_ours(payment_hash: bytes, privkey: bytes, amount_msat: int, description: str, expiry: int) -> None:
    """pyln-proto cannot write an `s` field, so ours must reject its invoices as a whole,
    while agreeing on every field it did write and on the signer."""
    theirs = PylnInvoice(paymenthash=payment_hash, amount=Decimal(amount_msat) / 10**11, currency="bc",
                         tags=[("d", description), ("x", expiry)], date=1_700_000_000)
    text = theirs.encode(privkey.hex())
    with pytest.raises(DecodeError) as excinfo:
        decode(text)
    assert excinfo.value.field == "s field"
    values, payee = _read_fields_without_requirements(text)
    assert values["p"] == [payment_hash]
    assert values["d"] == [description]
    assert values["x"] == [expiry]
    assert payee == pubkey_from_privkey(privkey)


def test_peer_deviation_unknown_even_feature_accepted() -> None:
    """BOLT 11: an unknown even feature bit MUST fail. Both peers accept feature 100."""
    text = INVALID["unknown required feature 100"]
    with pytest.raises(DecodeError):
        decode(text)
    assert bolt11.decode(text).payment_hash
    assert PylnInvoice.decode(text).paymenthash


def test_peer_deviation_sub_millisatoshi_amount() -> None:
    """BOLT 11: a p amount not ending in 0 MUST fail. bolt11 truncates it, pyln-proto keeps it."""
    text = INVALID["invalid sub-millisatoshi precision"]
    with pytest.raises(DecodeError):
        decode(text)
    assert bolt11.decode(text).amount_msat == 250000000  # 2500000001p truncated to whole msat
    assert PylnInvoice.decode(text).amount == Decimal("0.002500000001")


def test_peer_deviation_missing_payment_secret_accepted_by_pyln() -> None:
    """BOLT 11: a missing s field MUST fail; pyln-proto decodes it (bolt11 rejects it)."""
    text = INVALID["missing required s field"]
    with pytest.raises(DecodeError):
        decode(text)
    assert PylnInvoice.decode(text).paymenthash
    with pytest.raises(bolt11.Bolt11Exception):
        bolt11.decode(text)


def test_peer_deviation_bolt11_reads_large_route_hint_values_as_signed() -> None:
    hop_kwargs = {"fee_base_msat": 2**32 - 1, "fee_proportional_millionths": 2**31, "cltv_expiry_delta": 2**16 - 1}
    from lightspeed.invoice import RouteHintHop

    hop = RouteHintHop(b"\x02" + bytes(32), 1, **hop_kwargs)
    ours = build_invoice(payment_hash=bytes(32), payment_secret=bytes(32), timestamp=1, description="x",
                         route_hints=[[hop]]).sign(bytes(31) + b"\x01")
    assert decode(ours.encode()).route_hints[0][0] == hop
    route = bolt11.decode(ours.encode()).route_hints[0].routes[0]
    assert (route.base_fee, route.ppm_fee, route.cltv_expiry_delta) == (-1, -(2**31), -1)


def test_peer_deviation_empty_integer_field() -> None:
    """x = 0 has minimal data_length 0 (BOLT 11 writer rule); bolt11 cannot read an empty field."""
    ours = build_invoice(payment_hash=bytes(32), payment_secret=bytes(32), timestamp=1, description="x",
                         min_final_cltv_expiry=0).sign(bytes(31) + b"\x01")
    assert decode(ours.encode()).min_final_cltv_expiry == 0
    with pytest.raises(ValueError, match="zero length"):
        bolt11.decode(ours.encode())
    with pytest.raises(ValueError, match="zero length"):
        PylnInvoice.decode(ours.encode())


def test_peer_deviation_pyln_renders_taproot_fallback_with_bech32() -> None:
    """BIP 350: witness v1+ addresses use bech32m; pyln-proto writes them with bech32."""
    from lightspeed.invoice import Fallback

    program = bytes(range(32))
    ours = build_invoice(payment_hash=bytes(32), payment_secret=bytes(32), timestamp=1, description="x",
                         fallbacks=[Fallback(1, program)]).sign(bytes(31) + b"\x01")
    found = _pyln_fields(PylnInvoice.decode(ours.encode()))["f"][0]
    theirs = found.decode() if isinstance(found, bytes) else found
    assert ours.fallback_addresses[0].startswith("bc1p")
    assert theirs != ours.fallback_addresses[0]
    with pytest.raises(DecodeError):  # not a valid address by BIP 350
        from lightspeed.codec.bech32 import decode_segwit_address

        decode_segwit_address("bc", theirs)


def test_peer_deviation_bolt11_writes_multiples_of_1000_btc_wrongly() -> None:
    """bolt11's msat_to_amount divides once too often: 2000 BTC is written as "lnbc2"."""
    from bolt11.utils import msat_to_amount

    from lightspeed.invoice import format_amount, parse_amount

    two_thousand_btc = 2000 * 10**11
    assert parse_amount(format_amount(two_thousand_btc)) == two_thousand_btc
    assert msat_to_amount(two_thousand_btc) == "2"  # i.e. 2 BTC, 1000x too little
    assert parse_amount(msat_to_amount(two_thousand_btc)) == two_thousand_btc // 1000


def test_decoded_type_is_our_invoice() -> None:
    assert isinstance(decode(load_vectors("bolt11.json")["valid"][0]["invoice"]), Invoice)
