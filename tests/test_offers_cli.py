"""The `lightspeed offer decode` contract (DESIGN.md), on the spec's vectors and others' strings."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from lightspeed.cli.main import cli
from lightspeed.offers import decode_invoice_request
from lightspeed.offers.strings import encode_string
from tests.support.vectors import load_vectors
from tests.test_offers_support import sample_invoice

OFFERS = load_vectors("bolt12_offers.json")["vectors"]
FORMAT = load_vectors("bolt12_format_string.json")["vectors"]
SIGNATURE = load_vectors("bolt12_signature.json")["vectors"]
CLN = load_vectors("bolt12_interop_cln.json")["vectors"]
OFFER_KEYS = {"offer_chains", "offer_metadata", "offer_currency", "offer_amount", "offer_description",
              "offer_features", "offer_absolute_expiry", "offer_paths", "offer_issuer", "offer_quantity_max",
              "offer_issuer_id"}
INVREQ_KEYS = {"invreq_metadata", "invreq_chain", "invreq_amount", "invreq_features", "invreq_quantity",
               "invreq_payer_id", "invreq_payer_note", "invreq_paths", "invreq_bip_353_name"}
INVOICE_KEYS = {"invoice_paths", "invoice_blindedpay", "invoice_created_at", "invoice_relative_expiry",
                "invoice_payment_hash", "invoice_amount", "invoice_fallbacks", "invoice_features", "invoice_node_id"}
SIGNED_KEYS = {"merkle_root", "signature", "signature_valid"}


def decode(text: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["offer", "decode", text], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def decoded(text: str) -> dict[str, Any]:
    code, out, err = decode(text)
    assert code == 0, err
    obj: dict[str, Any] = json.loads(out)
    return obj


def _by(description: str) -> str:
    return next(v["bolt12"] for v in OFFERS if v["description"] == description)


@pytest.mark.parametrize("vector", [v for v in OFFERS if v["valid"]], ids=lambda v: v["description"])
def test_valid_offer_vectors(vector: dict[str, Any]) -> None:
    obj = decoded(vector["bolt12"])
    assert set(obj) == {"type", "tlv_fields"} | OFFER_KEYS
    assert obj["type"] == "offer"
    assert obj["tlv_fields"] == vector["fields"]


def test_interpreted_offer_fields() -> None:
    issuer = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619"
    minimal = decoded(_by("Minimal bolt12 offer"))
    assert minimal["offer_issuer_id"] == issuer
    assert minimal["offer_features"] == [] and minimal["offer_amount"] is None and minimal["offer_chains"] is None
    assert decoded(_by("with description (but no amount)"))["offer_description"] == "Test vectors"
    assert decoded(_by("for testnet"))["offer_chains"] == [
        "43497fd7f826957108f4a30fd9cec3aeba79972084e90ead01ea330900000000"]
    assert decoded(_by("with metadata"))["offer_metadata"] == "00" * 16
    assert decoded(_by("with amount"))["offer_amount"] == 10000
    currency = decoded(_by("with currency"))
    assert (currency["offer_currency"], currency["offer_amount"]) == ("USD", 10000)
    assert decoded(_by("with expiry"))["offer_absolute_expiry"] == 2051184600
    assert decoded(_by("with issuer"))["offer_issuer"] == "https://bolt12.org BOLT12 industries"
    assert decoded(_by("with quantity"))["offer_quantity_max"] == 5
    assert decoded(_by("with unlimited (or unknown) quantity"))["offer_quantity_max"] == 0
    assert decoded(_by("with feature"))["offer_features"] == [99]
    path = decoded(_by("with blinded path via Bob (0x424242...), path_key 020202..."))["offer_paths"][0]
    assert path["first_node_id"] == "0324653eac434488002cc06bbfb7f10fe18991e35f9fe4302dbea6d2353dc0ab1c"
    assert path["first_path_key"] == "02" * 33
    assert path["hops"] == [{"blinded_node_id": "02" * 33, "encrypted_recipient_data": "00" * 16},
                            {"blinded_node_id": "02" * 33, "encrypted_recipient_data": "11" * 8}]
    sciddir = decoded(_by("same, with blinded path first_node_id using sciddir"))["offer_paths"][0]
    assert (sciddir["short_channel_id"], sciddir["direction"]) == ("0x0x42", 0)
    assert sciddir["first_node_id"] == "00000000000000002a"
    no_id = decoded(_by("with no issuer_id and blinded path via Bob (0x424242...), path_key 020202..."))
    assert no_id["offer_issuer_id"] is None and len(no_id["offer_paths"]) == 1
    odd = decoded(_by("unknown odd field"))
    assert odd["tlv_fields"][-1] == {"type": 33, "length": 10, "hex": "68656c6c6f776f726c64"}


@pytest.mark.parametrize("vector", [v for v in OFFERS if not v["valid"]], ids=lambda v: v["description"])
def test_invalid_offer_vectors(vector: dict[str, Any]) -> None:
    code, out, err = decode(vector["bolt12"])
    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count(":") >= 2 and "Traceback" not in err


@pytest.mark.parametrize("vector", FORMAT, ids=lambda v: v["comment"])
def test_format_string_vectors(vector: dict[str, Any]) -> None:
    code, out, err = decode(vector["string"])
    if vector["valid"]:
        assert code == 0 and json.loads(out)["offer_issuer_id"]
        # "-" reads the string from stdin, continuation lines included.
        assert decode("-", stdin=vector["string"] + "\n")[1] == out
    else:
        assert code == 1 and err.startswith("error: bolt12: ")


def test_signed_invoice_request_vector() -> None:
    vector = SIGNATURE[3]
    obj = decoded(vector["bolt12"])
    assert set(obj) == {"type", "tlv_fields"} | OFFER_KEYS | INVREQ_KEYS | SIGNED_KEYS
    assert obj["type"] == "invoice_request"
    assert (obj["merkle_root"], obj["signature"], obj["signature_valid"]) == (vector["merkle"], vector["signature"],
                                                                               True)
    assert obj["invreq_payer_id"] == "0324653eac434488002cc06bbfb7f10fe18991e35f9fe4302dbea6d2353dc0ab1c"
    assert (obj["offer_currency"], obj["offer_amount"], obj["invreq_amount"]) == ("USD", 100, None)
    # A broken signature is reported, not raised: the rest of the request still reads.
    invreq = decode_invoice_request(vector["bolt12"])
    records = [(t, v) for t, v in invreq.records() if t != 240] + [(240, bytes(64))]
    from lightspeed.codec.tlv import encode_tlv_stream

    bad = decoded(encode_string("lnr", encode_tlv_stream(records)))
    assert (bad["signature_valid"], bad["merkle_root"]) == (False, vector["merkle"])


def test_invoice_fields() -> None:
    vector = next(v for v in CLN if v["expected"]["type"] == "invoice" and "offer" in v)
    obj = decoded(vector["string"])
    assert set(obj) == {"type", "tlv_fields"} | OFFER_KEYS | INVREQ_KEYS | INVOICE_KEYS | SIGNED_KEYS
    assert obj["type"] == "invoice" and obj["signature_valid"] is True
    for key, value in vector["expected"].items():
        assert obj[key] == value
    _, invoice = sample_invoice()
    ours = decoded(invoice.encode())
    assert ours["invoice_blindedpay"] == [{"fee_base_msat": 1000, "fee_proportional_millionths": 100,
                                          "cltv_expiry_delta": 144, "htlc_minimum_msat": 1,
                                          "htlc_maximum_msat": 10**10, "features": []}]
    assert ours["invoice_relative_expiry"] is None and ours["invoice_fallbacks"] is None
    assert ours["invoice_node_id"] == invoice.node_id.hex() and ours["invoice_amount"] == 10_000


def test_refund_has_no_signature_to_check() -> None:
    from lightspeed.offers import build_refund
    from tests.test_offers_support import BOB_ID

    refund = build_refund(payer_id=BOB_ID, metadata=b"m", description="back", amount_msat=5)
    obj = decoded(refund.encode())
    assert (obj["signature"], obj["signature_valid"]) == (None, None) and obj["merkle_root"]


@pytest.mark.parametrize("text,field", [("lnbc1xyz", "bolt12"), ("", "bolt12"), ("lno1", "offer_issuer_id"),
                                        ("lni1qqqqqqq", "tlv_stream"), ("lni1qqqq", "invoice_amount"), ("lno1zz", "bolt12")])
def test_garbage_is_an_error_line(text: str, field: str) -> None:
    code, _, err = decode(text)
    assert code == 1 and err.startswith(f"error: {field}: ") and err.endswith("\n") and err.count("\n") == 1


def test_real_process_exit_codes() -> None:
    """The installed entry point, as a separate process: JSON on stdout, or one error line and 1."""
    ok = subprocess.run([sys.executable, "-m", "lightspeed", "offer", "decode", SIGNATURE[3]["bolt12"]],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and json.loads(ok.stdout)["signature_valid"] is True
    bad = subprocess.run([sys.executable, "-m", "lightspeed", "offer", "decode", _by("Contains unknown feature 122")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == "error: offer_features: unknown even feature bit 122\n"
