"""``lightspeed offer create|fetch-invoice|pay``: BOLT 12 through a running daemon (REST).

``offer decode`` (in :mod:`lightspeed.cli.offer`) works offline; these need the daemon on
``--datadir``: ``create`` makes an offer of its node, ``fetch-invoice`` asks an offer's issuer for
an invoice over onion messages and prints it once it is checked against the request, ``pay``
does that and pays the invoice over its blinded paths.
"""

from __future__ import annotations

from typing import Any

import click

from lightspeed.cli.common import Amount, datadir_option, parse_amount, with_example
from lightspeed.cli.node_cmd import _call, _errors_to_exit, _print
from lightspeed.errors import UsageError


@click.command("create")
@with_example('lightspeed offer create 250000msat "a coffee"', 'lightspeed offer create any "tips"',
              'lightspeed offer create 250000msat "a coffee" --static-via $LSP_ID')
@click.argument("amount", metavar="AMOUNT_MSAT|any")
@click.argument("description")
@click.option("--absolute-expiry", type=int, help="Unix time after which the offer is refused.")
@click.option("--quantity-max", type=int, help="Most items one invoice may be for (0: no limit).")
@click.option("--issuer", help="Who makes the offer (shown to payers).")
@click.option("--static-via", "static_via", metavar="LSP_ID",
              help="Async payments: this LSP (we are registered with it) answers with a static invoice of ours "
                   "while we are offline; payers' LSPs hold the payment until we are back.")
@datadir_option
@click.pass_context
@_errors_to_exit
def offer_create(ctx: click.Context, amount: str, description: str, absolute_expiry: int | None,
                 quantity_max: int | None, issuer: str | None, static_via: str | None) -> None:
    """Make an offer of AMOUNT_MSAT (or with a unit: 250sat; "any": the payer chooses) for DESCRIPTION; prints lno1..."""
    body: dict[str, Any] = {"description": description}
    if amount != "any":
        try:
            amount_msat = parse_amount(amount, "msat")
        except ValueError as exc:
            raise UsageError(f"AMOUNT_MSAT: {exc}, or 'any'") from None
        if amount_msat < 1:
            raise UsageError(f"AMOUNT_MSAT {amount!r}: must be at least 1 msat, or 'any'")
        body["amount_msat"] = amount_msat
    for key, value in (("absolute_expiry", absolute_expiry), ("quantity_max", quantity_max), ("issuer", issuer),
                       ("static_invoice_lsp", static_via)):
        if value is not None:
            body[key] = value
    _print(_call(ctx, "POST", "/v1/offers", body))


@click.command("fetch-invoice")
@with_example("lightspeed offer fetch-invoice $OFFER --payer-note 'thanks'")
@click.argument("offer")
@click.option("--amount-msat", type=Amount("msat", minimum=1),
              help="Required when the offer names no amount (msat, or with a sat suffix).")
@click.option("--quantity", type=click.IntRange(min=1), help="Items, for an offer with a quantity.")
@click.option("--payer-note", help="A note for the payee (copied into the invoice).")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 120), default=30, show_default=True,
              help="Seconds to wait for the invoice, all attempts together.")
@datadir_option
@click.pass_context
@_errors_to_exit
def offer_fetch_invoice(ctx: click.Context, offer: str, amount_msat: int | None, quantity: int | None,
                        payer_note: str | None, timeout_s: int) -> None:
    """Request an invoice for OFFER over onion messages; prints it once checked against the request."""
    body: dict[str, Any] = {"offer": offer.strip(), "timeout_s": timeout_s}
    for key, value in (("amount_msat", amount_msat), ("quantity", quantity), ("payer_note", payer_note)):
        if value is not None:
            body[key] = value
    _print(_call(ctx, "POST", "/v1/offers/fetch-invoice", body, wait_s=timeout_s))


@click.command("pay")
@with_example("lightspeed offer pay $OFFER", "lightspeed offer pay $OFFER --amount-msat 5000 --payer-note 'thanks'")
@click.argument("offer")
@click.option("--amount-msat", type=Amount("msat", minimum=1),
              help="Required when the offer names no amount (msat, or with a sat suffix).")
@click.option("--quantity", type=click.IntRange(min=1), help="Items, for an offer with a quantity.")
@click.option("--payer-note", help="A note for the payee (copied into the invoice).")
@click.option("--fetch-timeout", "fetch_timeout_s", type=click.IntRange(1, 60), default=30, show_default=True,
              help="Seconds to wait for the invoice, all attempts together.")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 60), default=60, show_default=True,
              help="Seconds to wait for the payment to settle (it may still settle later: trackpayment).")
@datadir_option
@click.pass_context
@_errors_to_exit
def offer_pay(ctx: click.Context, offer: str, amount_msat: int | None, quantity: int | None,
              payer_note: str | None, fetch_timeout_s: int, timeout_s: int) -> None:
    """Pay OFFER: fetch its invoice, check it, pay it over its blinded paths.

    Prints the payment with the proof of payment: the signed invoice
    ("invoice": lni1...), the "preimage", and the "fee_msat" paid. An expired
    offer, one for another chain, or an invoice that does not match the offer
    and the request is refused before anything is paid.

    An offline payee's LSP answers with its static invoice (async payments): our LSP
    holds the payment until the payee is back; past --timeout it stays pending
    (see payments), and once settled "invoice" is null and "static_invoice" is shown.
    """
    body: dict[str, Any] = {"offer": offer.strip(), "fetch_timeout_s": fetch_timeout_s, "timeout_s": timeout_s}
    for key, value in (("amount_msat", amount_msat), ("quantity", quantity), ("payer_note", payer_note)):
        if value is not None:
            body[key] = value
    _print(_call(ctx, "POST", "/v1/offers/pay", body, wait_s=fetch_timeout_s + timeout_s))
