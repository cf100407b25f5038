"""``lightspeed demo``: runs every capability built so far, end to end, and reports it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from lightspeed.cli.common import json_text
from lightspeed.cli.demo_async import async_payment_through_lsps
from lightspeed.cli.demo_chain import commitment_on_chain, onion_five_hops
from lightspeed.cli.demo_channel import channel_lifecycle, nodes_pay_over_tcp, three_nodes_multihop
from lightspeed.cli.demo_micro import paid_api_calls
from lightspeed.cli.demo_stream import stream_cut_and_refund


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


def two_nodes_over_tcp() -> dict[str, Any]:
    """Two nodes meet over loopback TCP: BOLT 8 handshake, init exchange, ping/pong, a message."""
    import asyncio
    import os

    from lightspeed.codec.messages import Ping, make_message
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey
    from lightspeed.node import Peer, PeerListener, connect

    async def scenario() -> dict[str, Any]:
        async def echo(peer: Peer) -> None:
            async for message in peer:
                await peer.send(message)

        alice_key, bob_key = os.urandom(32), os.urandom(32)
        bob = PeerListener(bob_key, echo)
        port = await bob.start()
        start = time.perf_counter()
        alice = await connect("127.0.0.1", port, alice_key, pubkey_from_privkey(bob_key))
        connected_ms = (time.perf_counter() - start) * 1000
        await alice.send(Ping(num_pong_bytes=16))
        message = make_message("update_fee", channel_id=os.urandom(32), feerate_per_kw=253)
        start = time.perf_counter()
        rounds = 200
        inbox = alice.__aiter__()
        for _ in range(rounds):
            await alice.send(message)
            if await inbox.__anext__() != message:
                raise AssertionError("echo differs")
        round_trip_us = (time.perf_counter() - start) / rounds * 1e6
        await alice.close()
        await bob.stop()
        return {"port": port, "handshake_and_init_ms": round(connected_ms, 2),
                "encrypted_round_trip_us": round(round_trip_us, 1), "round_trips": rounds}

    return asyncio.run(scenario())


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
    ("BOLT 8: two nodes over TCP (handshake, init, ping, echo)", two_nodes_over_tcp),
    ("BOLT 3: wallet funds a 2-of-2, signed commitment confirmed on regtest", commitment_on_chain),
    ("BOLT 4: 5-hop onion built and peeled hop by hop", onion_five_hops),
    ("BOLT 2: a channel funded, paid both ways and closed on regtest (in process)", channel_lifecycle),
    ("Two nodes over TCP: open a channel, pay both ways, close cooperatively", nodes_pay_over_tcp),
    ("Three nodes: channels announced by gossip, paid over two hops, keysend", three_nodes_multihop),
    ("Pay-per-call: 10,000 HTTP calls through one allowance, one Lightning payment", paid_api_calls),
    ("Streaming: charge, cut payment, delivery stops, unused credit refunded to an anonymous payer", stream_cut_and_refund),
    ("Asynchronous payment: A pays offline B through two LSPs", async_payment_through_lsps),
]

COMING: list[str] = []  # every capability the demo was waiting for is in it now


def run_scenarios(progress: Callable[[str], None] | None = None) -> list[ScenarioResult]:
    """Run every scenario; ``progress`` hears of each as it starts and ends (the demo takes a while).

    Ctrl-C is not a scenario's failure: KeyboardInterrupt (asyncio.run turns the cancelled main
    task into one) is not an ``Exception`` and stops the demo.
    """
    results = []
    for i, (name, scenario) in enumerate(SCENARIOS, 1):
        if progress:
            progress(f"[{i}/{len(SCENARIOS)}] {name} ...")
        start = time.perf_counter()
        try:
            details = scenario()
            ok = True
        except Exception as exc:  # a demo reports failures, it does not crash
            details, ok = {"error": f"{type(exc).__name__}: {exc}"}, False
        results.append(ScenarioResult(name, ok, (time.perf_counter() - start) * 1000, details))
        if progress:
            progress(f"[{i}/{len(SCENARIOS)}] {'ok' if ok else 'FAILED'} in {results[-1].elapsed_ms:,.0f} ms")
    return results


def _detail(value: Any) -> str:
    """A value for people: long hex shortened (the JSON has it whole), lists with spaces."""
    if isinstance(value, str) and len(value) > 16 and all(c in "0123456789abcdef" for c in value):
        return value[:10] + "…"
    if isinstance(value, list):
        return "[" + ", ".join(_detail(v) for v in value) + "]"
    return str(value)


def results_table(results: list[ScenarioResult]) -> Any:
    """The demo's table. A detail is "name: value" so that a narrow terminal wraps between
    the two, never inside a number (rich shortens or folds a word wider than its column)."""
    from rich.table import Table

    table = Table(title="Lightspeed demo")
    table.add_column("scenario")
    table.add_column("outcome", no_wrap=True)
    elapsed = [f"{r.elapsed_ms:,.1f}" for r in results]
    table.add_column("ms", justify="right", no_wrap=True, min_width=max(map(len, elapsed), default=2))
    table.add_column("what happened", overflow="fold")
    for r, ms in zip(results, elapsed, strict=True):
        outcome = "[green]ok[/]" if r.ok else "[red]failed[/]"
        details = ", ".join(f"{k}: {_detail(v)}" for k, v in r.details.items() if k != "invoice")
        table.add_row(r.name, outcome, ms, details)
    return table


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def demo(as_json: bool, quiet: bool) -> None:
    """Run the embedded network end to end and show what happened (progress on stderr as it runs).

    \b
    Example:
      lightspeed demo
      lightspeed demo --json -q | python3 -m json.tool
    """
    results = run_scenarios(None if quiet else lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json_text({
            "scenarios": [
                {"name": r.name, "ok": r.ok, "elapsed_ms": round(r.elapsed_ms, 3), **r.details}
                for r in results
            ],
            "coming": COMING,
        }))
    else:
        from rich.console import Console

        console = Console()
        console.print(results_table(results))
        for r in results:
            if "invoice" in r.details:
                console.print(f"[bold]{r.name}[/]: {r.details['invoice']}", soft_wrap=True)
        if COMING:
            console.print("Coming next: " + "; ".join(COMING))
    if not all(r.ok for r in results):
        raise SystemExit(1)
