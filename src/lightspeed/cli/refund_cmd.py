"""``lightspeed refund create|pay|list``: BOLT 12 refunds through a running daemon (REST).

The node that owes money runs ``refund create`` and hands the ``lnr1...`` string over; the node
that is owed runs ``refund pay LNR``: it sends its invoice over the refund's blinded path and
waits until the refund's creator paid it (once: a refund is never paid twice).
"""

from __future__ import annotations

from typing import Any

import click

from lightspeed.cli.common import Amount, datadir_option, with_example
from lightspeed.cli.node_cmd import _call, _errors_to_exit, _print


@click.group("refund")
def refund() -> None:
    """BOLT 12 refunds: money this node owes (create), or is owed (pay); send: refund a payment
    received with a private return path.

    \b
    Example:
      lightspeed refund create 25000 --description "a returned mug"
    """


@refund.command("create")
@with_example('lightspeed refund create 25000 --description "a returned mug"',
              'lightspeed refund create 25sat --datadir ~/.lightspeed/alice')
@click.argument("amount_msat", type=Amount("msat", minimum=1))
@click.option("--description", default="", help="What the refund is for (shown to whoever claims it).")
@click.option("--absolute-expiry", type=int, help="Unix time after which no invoice for it is paid "
                                                   "(default: a day from now).")
@datadir_option
@click.pass_context
@_errors_to_exit
def refund_create(ctx: click.Context, amount_msat: int, description: str, absolute_expiry: int | None) -> None:
    """Create a refund of AMOUNT_MSAT from this node; prints it (lnr1...) with its status.

    Whoever answers it with an invoice is paid, once.
    """
    body: dict[str, Any] = {"amount_msat": amount_msat, "description": description}
    if absolute_expiry is not None:
        body["absolute_expiry"] = absolute_expiry
    _print(_call(ctx, "POST", "/v1/refunds", body))


@refund.command("pay")
@with_example("lightspeed refund pay $REFUND")
@click.argument("lnr")
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 110), default=30, show_default=True,
              help="Seconds to wait for the refund's creator to pay our invoice.")
@datadir_option
@click.pass_context
@_errors_to_exit
def refund_pay(ctx: click.Context, lnr: str, timeout_s: int) -> None:
    """Claim the refund LNR (owed to this node): send our invoice for it and wait until it is paid."""
    _print(_call(ctx, "POST", "/v1/refunds/pay", {"refund": lnr.strip(), "timeout_s": timeout_s}, wait_s=timeout_s))


@refund.command("list")
@with_example("lightspeed refund list")
@datadir_option
@click.pass_context
@_errors_to_exit
def refund_list(ctx: click.Context) -> None:
    """The refunds this node created, with their status (open, paying, paid, failed)."""
    _print(_call(ctx, "GET", "/v1/refunds"))


@refund.command("send")
@with_example("lightspeed refund send $PAYMENT_HASH 25000",
              "lightspeed refund send $PAYMENT_HASH 25sat --datadir ~/.lightspeed/bob")
@click.argument("payment_hash")
@click.argument("amount_msat", type=Amount("msat", minimum=1))
@click.option("--timeout", "timeout_s", type=click.IntRange(1, 110), default=60, show_default=True,
              help="Seconds to wait for the refund to settle.")
@datadir_option
@click.pass_context
@_errors_to_exit
def refund_send(ctx: click.Context, payment_hash: str, amount_msat: int, timeout_s: int) -> None:
    """Refund AMOUNT_MSAT of the payment PAYMENT_HASH we received, through the return path its payer
    sent with it (`pay --return-path`): the payer stays anonymous. Once or in parts, never more in
    total than was received."""
    body = {"payment_hash": payment_hash.strip().lower(), "amount_msat": amount_msat, "timeout_s": timeout_s}
    _print(_call(ctx, "POST", "/v1/refunds/send", body, wait_s=timeout_s))
