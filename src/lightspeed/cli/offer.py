"""``lightspeed offer``: BOLT 12 strings offline (the ``offer decode`` contract in DESIGN.md)."""

from __future__ import annotations

import json
import sys

import click

from lightspeed.cli.invoice import fail
from lightspeed.errors import LightspeedError
from lightspeed.offers.jsonfmt import bolt12_to_json


@click.group()
def offer() -> None:
    """BOLT 12 offers, invoice requests and invoices."""


@offer.command("decode")
@click.argument("text")
def decode_command(text: str) -> None:
    """Decode any BOLT 12 STRING (lno, lnr, lni; "-" reads stdin) and print one JSON object.

    Every reader rule of BOLT 12 that needs no clock or node applies; a bad
    signature is reported as "signature_valid": false. Invalid input prints
    "error: <field>: <reason>" on stderr and exits 1.
    """
    if text == "-":
        text = sys.stdin.read().strip()
    try:
        decoded = bolt12_to_json(text)
    except LightspeedError as exc:
        fail(str(exc))
    click.echo(json.dumps(decoded))
