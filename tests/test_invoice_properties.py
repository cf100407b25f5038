"""Property tests: invoices round-trip, and no input makes the decoder raise anything but DecodeError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.crypto.secp256k1 import is_low_s, pubkey_from_privkey
from lightspeed.errors import DecodeError
from lightspeed.invoice import build_invoice, decode
from lightspeed.invoice.jsonfmt import invoice_to_json, unsigned_from_json
from tests.invoice_strategies import invoice_kwargs, privkeys
from tests.support.vectors import load_vectors

EXAMPLES = [v["invoice"] for v in load_vectors("bolt11.json")["valid"]]


def decode_or_error(fn: Callable[[Any], Any], arg: Any) -> Any:
    """Run a decoder; it may succeed or raise DecodeError naming a field and a reason, nothing else."""
    try:
        return fn(arg)
    except DecodeError as exc:
        assert exc.field and exc.reason
        return exc


@settings(max_examples=150, deadline=None)
@given(invoice_kwargs(), privkeys, st.booleans())
def test_build_sign_decode_round_trip(kwargs: dict[str, Any], privkey: bytes, with_payee: bool) -> None:
    payee = pubkey_from_privkey(privkey)
    signed = build_invoice(payee=payee if with_payee else None, **kwargs).sign(privkey)
    text = signed.encode()
    decoded = decode(text)
    assert decoded == signed
    assert decoded.payee == payee
    assert is_low_s(decoded.signature)  # BOLT 11 writers sign low-S (RFC 6979 via libsecp256k1)
    assert decoded.amount_msat == kwargs["amount_msat"]
    assert decoded.description == kwargs["description"]
    assert decoded.features == kwargs["features"]
    assert list(decoded.fallbacks) == kwargs["fallbacks"]
    assert [list(r) for r in decoded.route_hints] == kwargs["route_hints"]
    assert decoded.metadata == kwargs["metadata"]
    # The JSON contract is lossless too.
    assert unsigned_from_json(invoice_to_json(decoded)).sign(privkey).encode() == text
    # Upper case (QR codes) decodes to the same invoice.
    assert decode(text.upper()) == decoded


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_decode_error(text: str) -> None:
    decode_or_error(decode, text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="qpzry9x8gf2tvdw0s3jn54khce6mua7l", min_size=104, max_size=400), st.sampled_from(["lnbc", "lntb", "lnbcrt", "lntbs", "lnbc10u"]))
def test_well_formed_bech32_with_garbage_data_raises_only_decode_error(data: str, hrp: str) -> None:
    from lightspeed.codec.bech32 import bech32_encode_chars

    result = decode_or_error(decode, bech32_encode_chars(hrp, data))
    # Random data essentially never carries p, s and a valid signature together.
    assert isinstance(result, DecodeError)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(EXAMPLES), st.data())
def test_mutated_examples_raise_only_decode_error(example: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(0, len(example) - 1))
    mutation = data.draw(st.sampled_from(["replace", "delete", "truncate", "swapcase"]))
    if mutation == "replace":
        mutated = example[:position] + data.draw(st.characters()) + example[position + 1 :]
    elif mutation == "delete":
        mutated = example[:position] + example[position + 1 :]
    elif mutation == "truncate":
        mutated = example[:position]
    else:
        mutated = example[:position] + example[position].swapcase() + example[position + 1 :]
    try:
        decoded = decode(mutated)
    except DecodeError:
        return
    # Anything that still decodes must carry a verified signature for the same content.
    assert decoded.encode() == mutated.lower().strip().removeprefix("lightning:")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["network", "amount_msat", "timestamp", "payment_hash", "payment_secret", "description", "route_hints", "tagged_fields", "features"]),
                       st.one_of(st.none(), st.integers(), st.text(max_size=10), st.lists(st.integers(), max_size=3))))
def test_arbitrary_json_raises_only_decode_error(obj: dict[str, Any]) -> None:
    decode_or_error(unsigned_from_json, obj)


def test_signing_with_keys_in_turn_names_each_signer() -> None:
    """The invoice signer keeps the latest few keys' objects: keys taken in turn, more of them than
    it keeps, must each sign as themselves (a cache keyed wrongly would name another payee)."""
    keys = [bytes([i]) * 32 for i in range(1, 8)]  # 7 keys: more than the 4 kept
    for privkey in keys + keys[::-1] + keys:
        invoice = build_invoice(payment_hash=bytes(32), payment_secret=b"\x01" * 32, timestamp=1_700_000_000,
                                amount_msat=1000, description="turn").sign(privkey)
        assert invoice.payee == pubkey_from_privkey(privkey)
        assert decode(invoice.encode()).payee == pubkey_from_privkey(privkey)
