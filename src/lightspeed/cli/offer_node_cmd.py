"""``lightspeed offer create|fetch-invoice``: BOLT 12 through a running daemon (REST).

``offer decode`` (in :mod:`lightspeed.cli.offer`) works offline; these two need the daemon on
``--datadir``: ``create`` makes an offer of its node, ``fetch-invoice`` asks an offer's issuer for
an invoice over onion messages and prints it once it is checked against the request.
"""

from __future__ import annotations

from typing import Any

import click

from lightspeed.cli.node_cmd import _call, _errors_to_exit, _print
from lightspeed.errors import UsageError


@click.command("create")
@click.argument("amount")
@click.argument("description")
@click.option("--absolute-expiry", type=int, help="Unix time after which the offer is refused.")
@click.option("--quantity-max", type=int, help="Most items one invoice may be for (0: no limit).")
@click.option("--issuer", help="Who makes the offer (shown to payers).")
@click.pass_context
@_errors_to_exit
def offer_create(ctx: click.Context, amount: str, description: str, absolute_expiry: int | None,
                 quantity_max: int | None, issuer: str | None) -> None:
    """Make an offer of AMOUNT msat (or "any": the payer chooses) for DESCRIPTION; prints lno1..."""
    body: dict[str, Any] = {"description": description}
    if amount != "any":
        if not amount.isdigit() or int(amount) < 1:
            raise UsageError(f"AMOUNT {amount!r}: a positive number of msat, or 'any'")
        body["amount_msat"] = int(amount)
    for key, value in (("absolute_expiry", absolute_expiry), ("quantity_max", quantity_max), ("issuer", issuer)):
        if value is not None:
            body[key] = value
    _print(_call(ctx, "POST", "/v1/offers", body))


@click.command("fetch-invoice")
@click.argument("offer")
@click.option("--amount-msat", type=click.IntRange(min=1), help="Required when the offer names no amount.")
@click.option("--quantity", type=click.IntRange(min=1), help="Items, for an offer with a quantity.")
@click.option("--payer-note", help="A note for the payee (copied into the invoice).")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 120), default=30, show_default=True,
              help="Seconds to wait for the invoice, all attempts together.")
@click.pass_context
@_errors_to_exit
def offer_fetch_invoice(ctx: click.Context, offer: str, amount_msat: int | None, quantity: int | None,
                        payer_note: str | None, timeout_s: int) -> None:
    """Request an invoice for OFFER over onion messages; prints it once checked against the request."""
    body: dict[str, Any] = {"offer": offer.strip(), "timeout_s": timeout_s}
    for key, value in (("amount_msat", amount_msat), ("quantity", quantity), ("payer_note", payer_note)):
        if value is not None:
            body[key] = value
    _print(_call(ctx, "POST", "/v1/offers/fetch-invoice", body))
