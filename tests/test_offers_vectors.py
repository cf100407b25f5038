"""Every BOLT 12 test vector (bolt12/*.json at the pinned spec commit) through the codec."""

from __future__ import annotations

import re
from typing import Any

import pytest

from lightspeed.errors import DecodeError
from lightspeed.offers import (
    bolt12_to_json,
    decode_bolt12,
    decode_invoice_request,
    decode_offer,
    merkle_root,
    sign_merkle_root,
    signature_tag,
    tagged_hash,
    verify_merkle_root,
)
from lightspeed.offers.merkle import branch_hash
from lightspeed.offers.sign import public_key_of
from lightspeed.offers.strings import decode_string
from tests.support.vectors import BOLTS_COMMIT, load_vectors

FORMAT = load_vectors("bolt12_format_string.json")
OFFERS = load_vectors("bolt12_offers.json")
SIGNATURE = load_vectors("bolt12_signature.json")
VALID: list[dict[str, Any]] = [v for v in OFFERS["vectors"] if v["valid"]]
INVALID: list[dict[str, Any]] = [v for v in OFFERS["vectors"] if not v["valid"]]


def test_vector_files_come_from_the_pinned_spec_commit() -> None:
    for data in (FORMAT, OFFERS, SIGNATURE):
        assert data["commit"] == BOLTS_COMMIT
    # 12 format strings, 53 offers (20 valid, 33 invalid), 4 Merkle/signature tests.
    assert len(FORMAT["vectors"]) == 12
    assert (len(OFFERS["vectors"]), len(VALID), len(INVALID)) == (53, 20, 33)
    assert len(SIGNATURE["vectors"]) == 4


@pytest.mark.parametrize("vector", FORMAT["vectors"], ids=[v["comment"] for v in FORMAT["vectors"]])
def test_format_strings(vector: dict[str, Any]) -> None:
    if vector["valid"]:
        offer = decode_offer(vector["string"])
        # Every valid form is the same offer: its lower-case, joined string.
        assert offer.encode() == FORMAT["vectors"][0]["string"]
    else:
        with pytest.raises(DecodeError) as excinfo:
            decode_offer(vector["string"])
        assert excinfo.value.field == "bolt12"


@pytest.mark.parametrize("vector", VALID, ids=[v["description"] for v in VALID])
def test_valid_offer_fields_and_byte_exact_reencoding(vector: dict[str, Any]) -> None:
    offer = decode_offer(vector["bolt12"])
    assert offer.encode() == vector["bolt12"]
    assert bolt12_to_json(vector["bolt12"])["tlv_fields"] == vector["fields"]
    assert bolt12_to_json(vector["bolt12"])["type"] == "offer"


@pytest.mark.parametrize("vector", INVALID, ids=[v["description"] for v in INVALID])
def test_invalid_offer_is_refused_with_a_named_field(vector: dict[str, Any]) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode_offer(vector["bolt12"])
    assert excinfo.value.field and excinfo.value.reason
    with pytest.raises(DecodeError):
        decode_bolt12(vector["bolt12"])


# The spec's descriptions name the field each invalid vector breaks. (Some vectors are
# themselves malformed earlier than the description says, so they fail on the TLV stream.)
EXPECTED_FIELD = {
    "Malformed: unknown even TLV type 78": "type 72",
    "Malformed: invalid offer_chains length": "offer_chains",
    "Malformed: truncated currency UTF-8": "offer_currency",
    "Malformed: invalid currency UTF-8": "offer_currency",
    "Malformed: truncated description UTF-8": "offer_description",
    "Malformed: invalid description UTF-8": "offer_description",
    "Malformed: truncated offer_paths": "offer_paths",
    "Malformed: truncated issuer UTF-8": "offer_issuer",
    "Malformed: invalid issuer UTF-8": "offer_issuer",
    "Malformed: invalid offer_issuer_id": "offer_issuer_id",
    "Contains type >= 80": "invreq_chain",
    "Contains unknown feature 122": "offer_features",
    "Missing offer_description, but has offer_amount": "offer_description",
    "Missing offer_amount with offer_currency": "offer_currency",
    "Invalid: zero offer_amount": "offer_amount",
    "Invalid: zero offer_amount with currency": "offer_amount",
    "Missing offer_issuer_id and no offer_path": "offer_issuer_id",
    "Second offer_path is empty": "offer_paths",
    "offer_chains with zero entries": "offer_chains",
    "Bech32 padding exceeds 4-bit limit": "bolt12",
}


@pytest.mark.parametrize("description", sorted(EXPECTED_FIELD))
def test_invalid_offer_names_the_field_the_vector_breaks(description: str) -> None:
    vector = next(v for v in INVALID if v["description"] == description)
    with pytest.raises(DecodeError) as excinfo:
        decode_offer(vector["bolt12"])
    assert excinfo.value.field == EXPECTED_FIELD[description]


def _hex_in(key: str) -> bytes:
    """The argument of a vector key such as ``H(`LnLeaf`,010203e8)``."""
    match = re.search(r",([0-9a-f]+)\)$", key)
    assert match, key
    return bytes.fromhex(match.group(1))


@pytest.mark.parametrize("vector", SIGNATURE["vectors"], ids=[v["comment"][:40] for v in SIGNATURE["vectors"]])
def test_merkle_leaves_branches_and_root(vector: dict[str, Any]) -> None:
    first_tlv = bytes.fromhex(vector["first-tlv"])
    stream = b""
    for leaf in vector["leaves"]:
        (leaf_key, leaf_hash), (_, nonce_hash), (_, pair_hash) = leaf.items()
        tlv = _hex_in(leaf_key)
        stream += tlv
        assert tagged_hash(b"LnLeaf", tlv).hex() == leaf_hash
        # The nonce tag is "LnNonce"||first-tlv, the message the record's type (one byte here).
        assert tagged_hash(b"LnNonce" + first_tlv, tlv[:1]).hex() == nonce_hash
        assert branch_hash(bytes.fromhex(leaf_hash), bytes.fromhex(nonce_hash)).hex() == pair_hash
    for branch in vector["branches"]:
        key, expected = next((k, v) for k, v in branch.items() if k != "desc")
        joined = _hex_in(key)
        assert branch_hash(joined[:32], joined[32:]).hex() == expected
    if "bolt12" in vector:
        _, stream = decode_string(vector["bolt12"])
    assert merkle_root(stream).hex() == vector["merkle"]


def test_invoice_request_signature_vector() -> None:
    vector = SIGNATURE["vectors"][3]
    root = bytes.fromhex(vector["merkle"])
    assert signature_tag("invoice_request") == vector["signature_tag"].encode()
    assert tagged_hash(signature_tag("invoice_request"), root).hex() == vector["H(signature_tag,merkle)"]
    bob = bytes([0x42]) * 32  # "invreq_payer_id = Bob (privkey 0x424242...)"
    assert sign_merkle_root("invoice_request", root, bob).hex() == vector["signature"]
    assert verify_merkle_root("invoice_request", root, bytes.fromhex(vector["signature"]), public_key_of(bob))
    assert not verify_merkle_root("invoice", root, bytes.fromhex(vector["signature"]), public_key_of(bob))
    invreq = decode_invoice_request(vector["bolt12"])
    assert invreq.payer_id == public_key_of(bob)
    assert invreq.offer.issuer_id == public_key_of(bytes([0x41]) * 32)
    assert (invreq.offer.description, invreq.offer.amount, invreq.offer.currency) == (
        "A Mathematical Treatise", 100, "USD")
    assert invreq.metadata == bytes(8)
    assert invreq.encode() == vector["bolt12"]
    assert invreq.merkle_root.hex() == vector["merkle"]
    decoded = bolt12_to_json(vector["bolt12"])
    assert (decoded["merkle_root"], decoded["signature"], decoded["signature_valid"]) == (
        vector["merkle"], vector["signature"], True)


def test_merkle_root_skips_signature_records_and_rejects_an_empty_stream() -> None:
    stream = bytes.fromhex("010203e8")
    with_sig = stream + bytes([0xF0, 2, 0xAB, 0xCD]) + bytes.fromhex("fd03e80100")  # types 240 and 1000
    assert merkle_root(with_sig) == merkle_root(stream)
    with_1001 = stream + bytes.fromhex("fd03e90100")  # type 1001 is outside the signature range
    assert merkle_root(with_1001) != merkle_root(stream)
    for bad in (b"", bytes([0xF0, 0])):
        with pytest.raises(DecodeError):
            merkle_root(bad)
