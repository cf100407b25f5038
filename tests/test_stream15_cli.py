"""``lightspeed stream``: the dispute tool on receipt files, and a real buyer process paying a real
``serve-example`` seller over a Lightning channel, tick by tick."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lightspeed.cli.main import cli
from lightspeed.stream import Tariff, sign_statement
from tests.test_stream15_machine import SELLER_ID, SELLER_KEY, pair, run_honestly

TARIFF = Tariff("Wh", msat_per_unit=300, tick_units=1, max_units=1000, window_ticks=10)


def receipt_file(tmp_path: Path, ticks: int = 12) -> Path:
    buyer, seller = pair(TARIFF, max_msat=ticks * TARIFF.tick_msat)
    run_honestly(buyer, seller)
    receipt = buyer.accept_statement(sign_statement(seller.close(now=1_700_000_000), SELLER_KEY))
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(receipt.to_json(), indent=2))
    return path


def verify(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["stream", "verify", *args])
    return result.exit_code, result.stdout, result.stderr


def test_verify_recomputes_a_good_receipt(tmp_path: Path) -> None:
    code, out, err = verify(str(receipt_file(tmp_path)), "--node-id", SELLER_ID.hex())
    assert code == 0, err
    report = json.loads(out)
    assert report["consistent"] and report["signature_valid"] and report["links_chain"]
    assert report["paid_ticks"] == 12 and report["paid_msat"] == 3600 and report["delivered_units"] == 12


def test_verify_finds_a_missing_link_and_a_forged_statement(tmp_path: Path) -> None:
    path = receipt_file(tmp_path)
    data = json.loads(path.read_text())
    data["links"].pop()  # the buyer claims one tick fewer than the seller signed
    path.write_text(json.dumps(data))
    code, out, err = verify(str(path))
    assert code == 1 and "paid_ticks: the links and invoices pay 11 ticks, the statement says 12" in err
    assert json.loads(out)["consistent"] is False

    data = json.loads(receipt_file(tmp_path).read_text())
    data["statement"]["delivered_units"] = 5  # edited after signing
    path.write_text(json.dumps(data))
    code, out, err = verify(str(path))
    assert code == 1 and "signature: not the seller node's signature" in err
    assert "unserved: 2100 msat paid but not delivered, more than one tick" in err


def test_verify_names_the_field_of_a_malformed_receipt(tmp_path: Path) -> None:
    path = receipt_file(tmp_path)
    data = json.loads(path.read_text())
    data["links"][3] = "zz" * 32
    path.write_text(json.dumps(data))
    code, _, err = verify(str(path))
    assert code == 1 and err.startswith("error: links[3]: expected 32 bytes") and "Traceback" not in err
    code, _, err = verify(str(path), "--node-id", "02" + "11" * 32)
    assert code == 1
    code, _, err = verify(str(tmp_path / "absent.json"))
    assert code == 1 and "No such file" in err


def test_stream_url_is_buy() -> None:
    result = CliRunner().invoke(cli, ["stream", "ws://127.0.0.1:1/charge", "--help"])
    assert result.exit_code == 0 and "--max-msat" in result.output and "Example:" in result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_buyer_process_charges_from_serve_example_and_the_receipt_verifies(tmp_path: Path) -> None:
    port = free_port()
    chain = tmp_path / "chain.sqlite"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "serve-example", "--listen", f"127.0.0.1:{port}", "--chain",
         str(chain), "--store", f"sqlite:{tmp_path / 'allowances.sqlite'}"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        receipt = tmp_path / "charge.json"
        result = subprocess.run(
            [sys.executable, "-m", "lightspeed", "stream", f"ws://127.0.0.1:{port}/charge", "--max-msat", "30000",
             "--units", "8", "--chain", str(chain), "--receipt", str(receipt), "--json"],
            env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["unit"] == "Wh" and report["delivered_units"] == 8 and report["paid_msat"] == 8 * 300
        assert report["lightning_payments"] == 1  # the first batch (half a window) covers 8 ticks
        code, out, err = verify(str(receipt))
        assert code == 0, err
        assert json.loads(out)["paid_ticks"] == 8
        # a wallet without an allowance: one invoice per 4 ticks, each proven by its preimage
        result = subprocess.run(
            [sys.executable, "-m", "lightspeed", "stream", f"ws://127.0.0.1:{port}/charge", "--max-msat", "2400",
             "--increments", "4", "--chain", str(chain), "--receipt", str(receipt), "--json"],
            env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["delivered_units"] == 8 and report["lightning_payments"] == 2
        code, out, err = verify(str(receipt))
        assert code == 0, err
        assert json.loads(out)["paid_msat"] == 2400
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
