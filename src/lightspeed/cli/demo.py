"""``lightspeed demo``: runs every capability built so far, end to end, and reports it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.table import Table


@dataclass
class ScenarioResult:
    name: str
    ok: bool
    elapsed_ms: float
    details: dict[str, Any] = field(default_factory=dict)


Scenario = Callable[[], dict[str, Any]]

def invoice_round_trip() -> dict[str, Any]:
    """A payee signs an invoice, a payer decodes and checks it, the preimage proves payment."""
    import os

    from lightspeed.bitcoin.network import REGTEST
    from lightspeed.crypto.hashes import sha256
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey
    from lightspeed.invoice import build_invoice, decode, verify_payment_proof

    payee_key, preimage = os.urandom(32), os.urandom(32)
    now = int(time.time())
    decode(ROUTE_HINT_EXAMPLE)  # warm up: the first bech32 checksum builds its lookup masks once
    start = time.perf_counter()
    text = build_invoice(
        network=REGTEST, amount_msat=150_000, description="1 API call bundle",
        payment_hash=sha256(preimage), payment_secret=os.urandom(32), timestamp=now, expiry=600,
    ).sign(payee_key).encode()
    signed_us = (time.perf_counter() - start) * 1e6
    start = time.perf_counter()
    invoice = decode(text)
    decoded_us = (time.perf_counter() - start) * 1e6
    if invoice.payee != pubkey_from_privkey(payee_key):
        raise AssertionError("recovered payee is not the signer")
    if invoice.is_expired(now) or not invoice.is_expired(now + 601):
        raise AssertionError("expiry is wrong")
    if not verify_payment_proof(invoice, preimage) or verify_payment_proof(invoice, os.urandom(32)):
        raise AssertionError("proof of payment check is wrong")
    return {
        "invoice": text,
        "amount_msat": invoice.amount_msat,
        "payee": invoice.payee.hex(),
        "sign_us": round(signed_us, 1),
        "decode_us": round(decoded_us, 1),
        "proof_of_payment": "verified",
    }


def spec_examples() -> dict[str, Any]:
    """Decode a BOLT 11 example invoice with a route hint and a fallback address."""
    from lightspeed.invoice import decode, format_short_channel_id

    invoice = decode(ROUTE_HINT_EXAMPLE)
    return {
        "amount_msat": invoice.amount_msat,
        "fallback_addresses": invoice.fallback_addresses,
        "route_hint": [format_short_channel_id(h.short_channel_id) for h in invoice.route_hints[0]],
        "payee": invoice.payee.hex(),
    }


ROUTE_HINT_EXAMPLE = (
    "lnbc20m1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqf"
    "qqqsyqcyq5rqwzqfqypqhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqsfpp3qjmp7lwpagxun9pygexvgpjdc4"
    "jdj85fr9yq20q82gphp2nflc7jtzrcazrra7wwgzxqc8u7754cdlpfrmccae92qgzqvzq2ps8pqqqqqqpqqqqq9qqqvpeuqafqxu92d8"
    "lr6fvg0r5gv0heeeqgcrqlnm6jhphu9y00rrhy4grqszsvpcgpy9qqqqqqgqqqqq7qqzq9qrsgqdfjcdk6w3ak5pca9hwfwfh63zrrz06"
    "wwfya0ydlzpgzxkn5xagsqz7x9j4jwe7yj7vaf2k9lqsdk45kts2fd0fkr28am0u4w95tt2nsq76cqw0"
)

# Filled in as capabilities land: (name, function returning details; raises on failure).
SCENARIOS: list[tuple[str, Scenario]] = [
    ("BOLT 11: sign, decode, prove payment", invoice_round_trip),
    ("BOLT 11: decode a spec example (route hint, fallback)", spec_examples),
]

COMING = [
    "BOLT 8 transport and BOLT 4 onions between nodes",
    "channels with real signatures on the embedded regtest chain",
    "multi-hop payments, MPP and AMP",
    "pay-per-call: 10,000 API calls through one allowance",
]


def run_scenarios() -> list[ScenarioResult]:
    results = []
    for name, scenario in SCENARIOS:
        start = time.perf_counter()
        try:
            details = scenario()
            ok = True
        except Exception as exc:  # a demo reports failures, it does not crash
            details, ok = {"error": f"{type(exc).__name__}: {exc}"}, False
        results.append(ScenarioResult(name, ok, (time.perf_counter() - start) * 1000, details))
    return results


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def demo(as_json: bool) -> None:
    """Run the embedded network end to end and show what happened."""
    results = run_scenarios()
    if as_json:
        click.echo(json.dumps({
            "scenarios": [
                {"name": r.name, "ok": r.ok, "elapsed_ms": round(r.elapsed_ms, 3), **r.details}
                for r in results
            ],
            "coming": COMING,
        }))
    else:
        console = Console()
        table = Table(title="Lightspeed demo")
        table.add_column("scenario")
        table.add_column("outcome")
        table.add_column("ms", justify="right")
        table.add_column("what happened")
        for r in results:
            outcome = "[green]ok[/]" if r.ok else "[red]failed[/]"
            details = ", ".join(f"{k}={v}" for k, v in r.details.items() if k != "invoice")
            table.add_row(r.name, outcome, f"{r.elapsed_ms:.1f}", details)
        console.print(table)
        for r in results:
            if "invoice" in r.details:
                console.print(f"[bold]{r.name}[/]: {r.details['invoice']}", soft_wrap=True)
        console.print("Coming next: " + "; ".join(COMING))
    if not all(r.ok for r in results):
        raise SystemExit(1)
