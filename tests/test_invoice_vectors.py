"""Every BOLT 11 example, valid and invalid, through the library and the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from lightspeed.cli.main import cli
from lightspeed.errors import DecodeError
from lightspeed.invoice import decode
from lightspeed.invoice.jsonfmt import invoice_to_json, unsigned_from_json
from tests.support.vectors import load_vectors

VECTORS = load_vectors("bolt11.json")
PRIVKEY = bytes.fromhex(VECTORS["private_key"])
VALID: list[dict[str, Any]] = VECTORS["valid"]
INVALID: list[dict[str, Any]] = VECTORS["invalid"]


def test_vector_counts() -> None:
    # 16 valid and 10 invalid examples at the recorded spec commit.
    assert (len(VALID), len(INVALID)) == (16, 10)


@pytest.mark.parametrize("vector", VALID, ids=[v["title"] for v in VALID])
def test_valid_example_decodes_to_the_spec_values(vector: dict[str, Any]) -> None:
    decoded = invoice_to_json(decode(vector["invoice"]))
    for key, expected in vector["expected"].items():
        assert decoded[key] == expected, key


@pytest.mark.parametrize("vector", VALID, ids=[v["title"] for v in VALID])
def test_valid_example_reencodes_identically(vector: dict[str, Any]) -> None:
    invoice = decode(vector["invoice"])
    assert invoice.encode() == vector["invoice"].lower()
    resigned = unsigned_from_json(invoice_to_json(invoice)).sign(PRIVKEY).encode()
    if vector["reencodes_identically"]:
        assert resigned == vector["invoice"].lower()
    else:
        # Same content, but our signature is low-S and so differs from the high-S example.
        again = decode(resigned)
        assert again.tagged_fields == invoice.tagged_fields
        assert again.signature != invoice.signature


@pytest.mark.parametrize("vector", INVALID, ids=[v["title"] for v in INVALID])
def test_invalid_example_is_rejected_naming_the_field(vector: dict[str, Any]) -> None:
    with pytest.raises(DecodeError) as excinfo:
        decode(vector["invoice"])
    assert excinfo.value.field == vector["error_field"]
    assert excinfo.value.reason


def test_description_hash_and_payment_proof() -> None:
    from lightspeed.invoice import verify_payment_proof

    hashed = decode(VALID[3]["invoice"])
    assert hashed.verify_description(
        "One piece of chocolate cake, one icecream cone, one pickle, one slice of swiss cheese, "
        "one slice of salami, one lollypop, one piece of cherry pie, one sausage, one cupcake, "
        "and one slice of watermelon"
    )
    assert not hashed.verify_description("one slice of watermelon")
    assert not verify_payment_proof(hashed, bytes(32))
    assert not hashed.is_expired(now=hashed.timestamp + 3600)
    assert hashed.is_expired(now=hashed.timestamp + 3601)
    assert hashed.has_feature("payment_secret") and not hashed.has_feature("basic_mpp")


runner = CliRunner()


@pytest.mark.parametrize("vector", VALID, ids=[v["title"] for v in VALID])
def test_cli_decode_then_encode(vector: dict[str, Any]) -> None:
    result = runner.invoke(cli, ["invoice", "decode", vector["invoice"]])
    assert result.exit_code == 0, result.output
    decoded = json.loads(result.stdout)
    for key, expected in vector["expected"].items():
        assert decoded[key] == expected, key
    encoded = runner.invoke(cli, ["invoice", "encode", "--privkey", PRIVKEY.hex()], input=result.stdout)
    assert encoded.exit_code == 0, encoded.output
    if vector["reencodes_identically"]:
        assert encoded.stdout.strip() == vector["invoice"].lower()


@pytest.mark.parametrize("vector", INVALID, ids=[v["title"] for v in INVALID])
def test_cli_rejects_invalid_with_error_line(vector: dict[str, Any]) -> None:
    result = runner.invoke(cli, ["invoice", "decode", vector["invoice"]])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def _lightspeed(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lightspeed.cli", *args], input=stdin,
        capture_output=True, text=True, timeout=60,
    )


def test_real_process_contract() -> None:
    """The contract as an outside tool sees it: a real process, stdout JSON, exit codes."""
    ok = _lightspeed("invoice", "decode", VALID[5]["invoice"])
    assert ok.returncode == 0 and ok.stderr == ""
    assert json.loads(ok.stdout)["route_hints"] == VALID[5]["expected"]["route_hints"]
    again = _lightspeed("invoice", "encode", "--privkey", PRIVKEY.hex(), stdin=ok.stdout)
    assert again.returncode == 0 and again.stdout.strip() == VALID[5]["invoice"]
    bad = _lightspeed("invoice", "decode", INVALID[0]["invoice"])
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("error: 9 field:") and "Traceback" not in bad.stderr


def test_cli_encode_reports_bad_json_fields() -> None:
    result = runner.invoke(cli, ["invoice", "encode", "--privkey", PRIVKEY.hex()], input="{\"network\": \"moon\"}")
    assert result.exit_code == 1 and "network" in result.stderr
    result = runner.invoke(cli, ["invoice", "encode", "--privkey", "zz"], input="{}")
    assert result.exit_code == 1 and "--privkey" in result.stderr
    result = runner.invoke(cli, ["invoice", "encode", "--privkey", PRIVKEY.hex()], input="not json")
    assert result.exit_code == 1 and result.stderr.startswith("error: stdin is not valid JSON")


def test_cli_create_makes_a_payable_invoice() -> None:
    result = runner.invoke(cli, [
        "invoice", "create", "--privkey", PRIVKEY.hex(), "--amount-msat", "1234",
        "--description", "tea", "--network", "signet", "--expiry", "120", "--timestamp", "1700000000",
    ])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    invoice = decode(out["invoice"])
    assert out["invoice"].startswith("lntbs12340p1")
    assert (invoice.amount_msat, invoice.description, invoice.expiry) == (1234, "tea", 120)
    assert invoice.payee.hex() == out["payee"]
    from lightspeed.invoice import verify_payment_proof

    assert verify_payment_proof(invoice, bytes.fromhex(out["preimage"]))


@pytest.mark.parametrize(("hrp", "field"), [
    ("lnbcm", "amount"), ("lnbc2500x", "amount"), ("lnbc0100u", "amount"), ("lnxy", "prefix"), ("bc", "prefix"),
])
def test_hrp_errors_name_the_part(hrp: str, field: str) -> None:
    from lightspeed.invoice.decode import parse_hrp

    with pytest.raises(DecodeError) as excinfo:
        parse_hrp(hrp)
    assert excinfo.value.field == field


@pytest.mark.parametrize(("hrp", "network", "amount_msat"), [
    ("lnbc", "bitcoin", None), ("lntb1m", "testnet", 100_000_000), ("lntbs10n", "signet", 1000),
    ("lnbcrt25u", "regtest", 2_500_000), ("lnbc10p", "bitcoin", 1), ("lnbc21000000", "bitcoin", 21 * 10**6 * 10**11),
])
def test_hrp_networks_and_multipliers(hrp: str, network: str, amount_msat: int | None) -> None:
    from lightspeed.invoice.decode import parse_hrp

    found, amount = parse_hrp(hrp)
    assert (found.name, amount) == (network, amount_msat)
