"""``lightspeed multihash create|status|verify|pay|declare|settle``: multi-hash requests and refund
declarations (issue 15 part 4).

The documents are JSON files: ``create`` prints the payee's signed request, which travels to the
payer; ``declare`` prints the payer's signed refund declaration, which travels back. ``verify``
checks either one offline (no daemon); the other commands ask the running daemon (REST). A FILE
argument of ``-`` reads standard input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lightspeed.cli.common import Amount, datadir_option, with_example
from lightspeed.cli.node_cmd import _call, _errors_to_exit, _print
from lightspeed.errors import DecodeError, UsageError

MAX_DOCUMENT_BYTES = 64 * 1024  # what the REST API takes in one body


def _read(path: str) -> Any:
    """The JSON document in ``path`` (``-``: stdin); UsageError/DecodeError say what is wrong."""
    # Imported here, not at the top: `lightspeed --help` stays fast (no coincurve, no invoice codec).
    from lightspeed.multihash._json import loads

    try:
        raw = sys.stdin.buffer.read(MAX_DOCUMENT_BYTES + 1) if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"FILE: cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise UsageError(f"FILE: larger than {MAX_DOCUMENT_BYTES} bytes: not a multi-hash document")
    return loads(raw, "document")


@click.group("multihash")
def multihash() -> None:
    """Multi-hash requests: several payment hashes for one purchase, delivered only when all are paid;
    when only some are, the payer declares which and is refunded through a private return path.

    \b
    Example:
      lightspeed multihash create 600000 600000 --delivers "80 kWh of charging" > request.json
    """


@multihash.command("create")
@with_example('lightspeed multihash create 600000 600000 --delivers "80 kWh of charging" > request.json',
              "lightspeed multihash create 1000sat 2000sat --expiry 600 --datadir ~/.lightspeed/carol")
@click.argument("amounts_msat", nargs=-1, required=True, type=Amount("msat", minimum=1))
@click.option("--delivers", default="", help="What is delivered once every part is paid.")
@click.option("--expiry", "expiry_s", type=click.IntRange(60, 30 * 86_400), default=3600, show_default=True,
              help="Seconds the request and its invoices stay payable.")
@datadir_option
@click.pass_context
@_errors_to_exit
def multihash_create(ctx: click.Context, amounts_msat: tuple[int, ...], delivers: str, expiry_s: int) -> None:
    """Create a request of one part per AMOUNT_MSAT (an invoice each), signed by this node's key;
    prints it (JSON) to hand to the payer."""
    _print(_call(ctx, "POST", "/v1/multihash", {"amounts_msat": list(amounts_msat), "delivers": delivers,
                                                "expiry_s": expiry_s}))


@multihash.command("verify")
@with_example("lightspeed multihash verify request.json", "lightspeed multihash verify declaration.json")
@click.argument("file")
@_errors_to_exit
def multihash_verify(file: str) -> None:
    """Check a request or a declaration in FILE offline: signatures, invoices, preimages, sums.
    Prints a summary; an invalid one is `error: <field>: <reason>`, exit 1."""
    from lightspeed.multihash import SignedRequest, decode_document, verify_declaration

    document = decode_document(_read(file))
    if isinstance(document, SignedRequest):
        if not document.valid():
            raise DecodeError("signature", "not the payee node's signature over the request")
        r = document.request
        _print({"kind": "request", "valid": True, "request_id": document.request_id.hex(),
                "payee_node_id": r.payee_node_id.hex(), "total_msat": r.total_msat, "parts": len(r.parts),
                "delivers": r.delivers, "expires_at": r.expires_at})
        return
    verify_declaration(document)
    d = document.declaration
    _print({"kind": "declaration", "valid": True, "request_id": d.request.request_id.hex(),
            "payee_node_id": d.request.request.payee_node_id.hex(), "payer_key": d.payer_key.hex(),
            "refund_msat": d.refund_msat, "succeeded": sum(o.succeeded for o in d.parts),
            "failed": sum(not o.succeeded for o in d.parts)})


def _count_parts(document: Any) -> int:
    """Parts in a (not yet checked) document, for how long to wait: at least 1."""
    request = document.get("request") if isinstance(document, dict) else None
    parts = request.get("parts") if isinstance(request, dict) else None
    if isinstance(parts, list):
        return max(1, len(parts))
    return _count_parts(request) if isinstance(request, dict) and "request" in request else 1


@multihash.command("status")
@with_example("lightspeed multihash status request.json")
@click.argument("file")
@datadir_option
@click.pass_context
@_errors_to_exit
def multihash_status(ctx: click.Context, file: str) -> None:
    """Where the request in FILE (ours) stands: open, complete (deliver now), expired, refunding, refunded."""
    _print(_call(ctx, "POST", "/v1/multihash/status", {"request": _read(file)}))


@multihash.command("pay")
@with_example("lightspeed multihash pay request.json", "lightspeed multihash pay request.json --max-parts 4")
@click.argument("file")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 110), default=30, show_default=True,
              help="Seconds to wait for each part.")
@click.option("--max-parts", type=click.IntRange(1, 16), default=1, show_default=True,
              help="MPP shards per part.")
@datadir_option
@click.pass_context
@_errors_to_exit
def multihash_pay(ctx: click.Context, file: str, timeout_s: int, max_parts: int) -> None:
    """Pay the parts of the request in FILE not paid yet, each with our private return path.
    Run it again to retry the failed parts, or `multihash declare` to be refunded."""
    request = _read(file)
    body = {"request": request, "timeout_s": timeout_s, "max_parts": max_parts}
    # The daemon pays the parts one after the other: wait for all of them.
    _print(_call(ctx, "POST", "/v1/multihash/pay", body, wait_s=timeout_s * _count_parts(request)))


@multihash.command("declare")
@with_example("lightspeed multihash declare request.json > declaration.json")
@click.argument("file")
@datadir_option
@click.pass_context
@_errors_to_exit
def multihash_declare(ctx: click.Context, file: str) -> None:
    """Sign a refund declaration for the request in FILE, which we paid in part: which parts
    succeeded (with their preimages) and which failed; prints it to hand to the payee."""
    _print(_call(ctx, "POST", "/v1/multihash/declare", {"request": _read(file)}))


@multihash.command("settle")
@with_example("lightspeed multihash settle declaration.json")
@click.argument("file")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 110), default=60, show_default=True,
              help="Seconds to wait for each refund part.")
@datadir_option
@click.pass_context
@_errors_to_exit
def multihash_settle(ctx: click.Context, file: str, timeout_s: int) -> None:
    """Check the refund declaration in FILE for a request of ours and refund the parts it received
    through the declared return path (once: settling it again pays nothing more)."""
    declaration = _read(file)
    inner = declaration.get("declaration") if isinstance(declaration, dict) else None
    _print(_call(ctx, "POST", "/v1/multihash/settle", {"declaration": declaration, "timeout_s": timeout_s},
                 wait_s=timeout_s * _count_parts(inner)))
