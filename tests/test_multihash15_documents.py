"""Multi-hash requests and refund declarations as documents (issue 15 part 4), offline.

Round trips through canonical JSON, every tampering and forged signature refused with a field
and a reason, and the decoders fuzzed: whatever JSON (or text) comes in, they decode or raise
DecodeError, never anything else.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
from typing import Any

import pytest
from coincurve import PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightspeed.bitcoin.network import REGTEST
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, UsageError
from lightspeed.invoice import build_invoice
from lightspeed.multihash import (
    DeclarationError,
    MultihashRequest,
    Outcome,
    Part,
    RefundDeclaration,
    SignedDeclaration,
    SignedRequest,
    decode_document,
    sign_declaration,
    sign_request,
    verify_declaration,
)
from lightspeed.offers import build_offer

PAYEE_KEY = bytes([7]) * 32
PAYER_KEY = bytes([9]) * 32  # the payer's return-path key (fresh per request)
NOW = 1_800_000_000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _request(amounts: tuple[int, ...] = (1_000, 2_000, 3_000)) -> tuple[SignedRequest, list[bytes]]:
    parts, preimages = [], []
    for i, amount in enumerate(amounts):
        preimage = bytes([i + 1]) * 32
        invoice = build_invoice(network=REGTEST, amount_msat=amount, description=f"part {i + 1}",
                                payment_hash=sha256(preimage), payment_secret=os.urandom(32), timestamp=NOW,
                                expiry=600, payee=None).sign(PAYEE_KEY)
        parts.append(Part(sha256(preimage), amount, invoice.encode()))
        preimages.append(preimage)
    request = MultihashRequest(pubkey_from_privkey(PAYEE_KEY), tuple(parts), "a bag of coffee, ☕", NOW, NOW + 600)
    return sign_request(request, PAYEE_KEY), preimages


SIGNED, PREIMAGES = _request()
RETURN_PATH = build_offer(issuer_id=pubkey_from_privkey(bytes([5]) * 32), description="refund").encode()


def _declaration(succeeded: tuple[bool, ...] = (True, True, False)) -> RefundDeclaration:
    outcomes = tuple(Outcome(p.payment_hash, pre if ok else None)
                     for p, pre, ok in zip(SIGNED.request.parts, PREIMAGES, succeeded, strict=True))
    return RefundDeclaration(SIGNED, pubkey_from_privkey(PAYER_KEY), outcomes, RETURN_PATH, NOW + 60)


DECLARED = sign_declaration(_declaration(), PAYER_KEY)


def test_a_request_round_trips_through_canonical_json_and_its_signature_holds() -> None:
    text = json.dumps(SIGNED.to_json())
    again = decode_document(text)
    assert again == SIGNED and isinstance(again, SignedRequest) and again.valid()
    assert again.request.canonical() == SIGNED.request.canonical()
    assert SIGNED.to_json()["request"]["total_msat"] == 6_000
    # Sorted keys, no spaces between tokens, UTF-8 as is: the bytes signed are the bytes shown.
    assert SIGNED.request.canonical() == json.dumps(SIGNED.request.to_json(), sort_keys=True, separators=(",", ":"),
                                                    ensure_ascii=False).encode()
    assert "☕".encode() in SIGNED.request.canonical()


def test_a_declaration_round_trips_and_verifies() -> None:
    again = decode_document(json.dumps(DECLARED.to_json()))
    assert again == DECLARED and isinstance(again, SignedDeclaration)
    verify_declaration(again)
    assert again.declaration.refund_msat == 3_000
    assert again.to_json()["declaration"]["parts"][2] == {"payment_hash": PREIMAGES[2] and sha256(PREIMAGES[2]).hex(),
                                                          "outcome": "failed"}


def test_forged_request_signatures_are_refused() -> None:
    other = bytes([8]) * 32
    with pytest.raises(UsageError, match="payee_node_id: is not the key"):
        sign_request(SIGNED.request, other)
    assert not dataclasses.replace(SIGNED, signature=bytes(64)).valid()
    # Another key's valid signature over the same request is not the payee's.
    forged = SignedRequest(SIGNED.request, sign_request(
        dataclasses.replace(SIGNED.request, payee_node_id=pubkey_from_privkey(other)), other).signature)
    assert not forged.valid()
    # The text changed after signing: the signature no longer holds.
    data = SIGNED.to_json()
    data["request"]["delivers"] = "two bags of coffee"
    with pytest.raises(DecodeError, match="request_id: is not the id"):
        SignedRequest.from_json(data)
    del data["request_id"]  # the id is optional (derived); the signature still catches the change
    assert not SignedRequest.from_json(data).valid()
    with pytest.raises(DeclarationError, match=r"request\.signature: not the payee node's signature"):
        verify_declaration(sign_declaration(dataclasses.replace(_declaration(), request=forged), PAYER_KEY))


def test_forged_or_inconsistent_declarations_are_refused() -> None:
    # The payee's own key signing the payer's declaration is not payer_key's signature.
    by_payee = bytes(PrivateKey(PAYEE_KEY).sign_schnorr(_declaration().digest(), bytes(32)))
    with pytest.raises(DeclarationError, match="signature: not payer_key's signature"):
        verify_declaration(dataclasses.replace(DECLARED, signature=by_payee))
    with pytest.raises(UsageError, match="payer_key: is not the key"):
        sign_declaration(_declaration(), PAYEE_KEY)
    wrong = dataclasses.replace(_declaration(), parts=(Outcome(SIGNED.request.parts[0].payment_hash, bytes(32)),
                                                       *_declaration().parts[1:]))
    with pytest.raises(DeclarationError, match=r"parts\[0\]\.preimage: does not hash"):
        verify_declaration(sign_declaration(wrong, PAYER_KEY))
    swapped = dataclasses.replace(_declaration(), parts=tuple(reversed(_declaration().parts)))
    with pytest.raises(DeclarationError, match=r"parts\[0\]\.payment_hash: not the request's part"):
        verify_declaration(sign_declaration(swapped, PAYER_KEY))
    with pytest.raises(DeclarationError, match="every part succeeded"):
        verify_declaration(sign_declaration(_declaration((True, True, True)), PAYER_KEY))
    with pytest.raises(DeclarationError, match="no part succeeded"):
        verify_declaration(sign_declaration(_declaration((False, False, False)), PAYER_KEY))
    short = dataclasses.replace(_declaration(), parts=_declaration().parts[:2])
    with pytest.raises(DeclarationError, match="2 outcomes for a request of 3 parts"):
        verify_declaration(sign_declaration(short, PAYER_KEY))


@pytest.mark.parametrize(("path", "value", "field"), [
    (("declaration", "refund_msat"), 6_000, "declaration.refund_msat"),
    (("declaration", "request_id"), "00" * 32, "declaration.request_id"),
    (("declaration", "request", "request_id"), "00" * 32, "declaration.request.request_id"),
    (("declaration", "return_path"), "lno1nope", "declaration.return_path"),
    (("declaration", "parts", 0, "outcome"), "maybe", "declaration.parts[0].outcome"),
    (("declaration", "parts", 0, "preimage"), "AB" * 32, "declaration.parts[0].preimage"),
    (("declaration", "request", "request", "total_msat"), 1, "declaration.request.request.total_msat"),
    (("declaration", "request", "request", "parts", 1, "amount_msat"), 2_001,
     "declaration.request.request.parts[1].invoice"),
    (("declaration", "request", "request", "parts", 1, "payment_hash"), "11" * 32,
     "declaration.request.request.parts[1].invoice"),
    (("declaration", "request", "request", "expires_at"), NOW, "declaration.request.request.expires_at"),
    (("declaration", "extra"), 1, "declaration.extra"),
    (("signature",), "zz" * 64, "signature"),
    (("",), 1, "''"),
    (("declaration", "\n"), 1, "declaration.'\\n'"),
])
def test_tampered_fields_are_named(path: tuple[Any, ...], value: object, field: str) -> None:
    data = copy.deepcopy(DECLARED.to_json())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(DecodeError) as info:
        decode_document(data)
    assert info.value.field == field, info.value


def test_a_request_part_signed_by_another_node_is_refused() -> None:
    data = SIGNED.to_json()
    stranger = build_invoice(network=REGTEST, amount_msat=1_000, description="x", payment_hash=sha256(PREIMAGES[0]),
                             payment_secret=bytes(32), timestamp=NOW, expiry=600, payee=None).sign(bytes([3]) * 32)
    data["request"]["parts"][0]["invoice"] = stranger.encode()
    with pytest.raises(DecodeError, match=r"parts\[0\]\.invoice: is not signed by the request's payee_node_id"):
        decode_document(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20)


def _decode_or_decode_error(value: object) -> None:
    try:
        document = decode_document(value)
    except DecodeError:
        return
    if isinstance(document, SignedDeclaration):
        with contextlib.suppress(DecodeError):
            verify_declaration(document)
    else:
        document.valid()


@FUZZ
@given(json_values)
def test_any_json_decodes_or_raises_decode_error(value: object) -> None:
    _decode_or_decode_error(value)
    _decode_or_decode_error({"declaration": value, "signature": "00" * 64})
    _decode_or_decode_error({"request": value, "signature": "00" * 64})


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_any_text_decodes_or_raises_decode_error(raw: bytes) -> None:
    _decode_or_decode_error(raw)


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, sub in value.items():
            found += _paths(sub, (*prefix, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            found += _paths(sub, (*prefix, i))
    return found


DECLARED_PATHS = _paths(DECLARED.to_json())


@FUZZ
@given(st.sampled_from(DECLARED_PATHS), json_values)
def test_a_valid_declaration_with_any_one_field_replaced_decodes_or_raises_decode_error(
        path: tuple[Any, ...], value: object) -> None:
    data = copy.deepcopy(DECLARED.to_json())
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    _decode_or_decode_error(data)
    _decode_or_decode_error(json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass"))
