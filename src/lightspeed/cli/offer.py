"""``lightspeed offer``: BOLT 12 strings offline (the ``offer decode`` contract in DESIGN.md)."""

from __future__ import annotations

import sys

import click

from lightspeed.cli.common import fail, print_json
from lightspeed.errors import LightspeedError


@click.group()
def offer() -> None:
    """BOLT 12 offers, invoice requests and invoices.

    \b
    Example:
      lightspeed offer decode lno1pqps7sjqpgtyzm3qv4uxzmtsd3jjqer9wd3hy6tsw35k7msjzfpy7nz5yqcnygrfdej82um5wf5k2...
    """


@offer.command("decode")
@click.argument("text", metavar="STRING")
def decode_command(text: str) -> None:
    """Decode any BOLT 12 STRING (lno, lnr, lni; "-" reads stdin) and print one JSON object.

    Every reader rule of BOLT 12 that needs no clock or node applies; a bad
    signature is reported as "signature_valid": false. Invalid input prints
    "error: <field>: <reason>" on stderr and exits 1.

    \b
    Example:
      lightspeed offer decode lno1pqps7sjqpgtyzm3qv4uxzmtsd3jjqer9wd3hy6tsw35k7msjzfpy7nz5yqcnygrfdej82um5wf5k2uckyypwa3eyt44h6txtxquqh7lz5djge4afgfjn7k4rgrkuag0jsd5xvxg
    """
    from lightspeed.offers.jsonfmt import bolt12_to_json

    if text == "-":
        text = sys.stdin.read().strip()
    try:
        decoded = bolt12_to_json(text)
    except LightspeedError as exc:
        fail(str(exc))
    print_json(decoded)
