"""``lightspeed invoice``: decode, encode and create BOLT 11 invoices (JSON at the edge).

The invoice code is imported when a subcommand runs, not when ``lightspeed`` starts.
"""

from __future__ import annotations

import os
import sys
import time

import click

from lightspeed.cli.common import Amount, datadir_option, fail, print_json, with_example
from lightspeed.errors import LightspeedError

NETWORK_NAMES = ("bitcoin", "testnet", "signet", "regtest")  # lightspeed.bitcoin.network.NETWORKS

__all__ = ["fail", "invoice"]


def _privkey(hex_text: str) -> bytes:
    try:
        key = bytes.fromhex(hex_text)
    except ValueError:
        fail("--privkey is not valid hex")
    if len(key) != 32:
        fail(f"--privkey must be 32 bytes, got {len(key)}")
    return key


def _hex_option(name: str, value: str | None, length: int) -> bytes | None:
    if value is None:
        return None
    try:
        data = bytes.fromhex(value)
    except ValueError:
        fail(f"{name} is not valid hex")
    if len(data) != length:
        fail(f"{name} must be {length} bytes, got {len(data)}")
    return data


@click.group()
@datadir_option
def invoice() -> None:
    """BOLT 11 invoices: decode, encode, create offline; new, list, settle, cancel on a daemon.

    \b
    Example:
      lightspeed invoice decode lnbcrt2500u1p...
      lightspeed --datadir ~/.lightspeed/bob invoice new 250000sat "a book"
    """


@invoice.command("decode")
@click.argument("text")
@with_example("lightspeed invoice decode lnbcrt2500u1p...",
              "lightspeed invoice decode - < invoice.txt")
def decode_command(text: str) -> None:
    """Decode INVOICE and print it as one JSON object ("-" reads it from stdin)."""
    from lightspeed.invoice import decode
    from lightspeed.invoice.jsonfmt import invoice_to_json

    if text == "-":
        text = sys.stdin.read()
    try:
        decoded = decode(text)
    except LightspeedError as exc:
        fail(str(exc))
    print_json(invoice_to_json(decoded))


@invoice.command("encode")
@click.option("--privkey", required=True, help="The payee's 32-byte private key, hex.")
@with_example("lightspeed invoice decode $INVOICE | lightspeed invoice encode --privkey $KEY")
def encode_command(privkey: str) -> None:
    """Read invoice JSON (as printed by decode) on stdin and print the signed invoice."""
    import json

    from lightspeed.invoice.jsonfmt import unsigned_from_json

    key = _privkey(privkey)
    try:
        obj = json.loads(sys.stdin.read())
    except json.JSONDecodeError as exc:
        fail(f"stdin is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    try:
        click.echo(unsigned_from_json(obj).sign(key).encode())
    except LightspeedError as exc:
        fail(str(exc))


@invoice.command("create")
@click.option("--privkey", required=True, help="The payee's 32-byte private key, hex.")
@click.option("--amount-msat", type=Amount("msat", minimum=1),
              help="Amount (msat, or with a sat suffix); omit for any amount.")
@click.option("--description", help="What the payment is for (the d field).")
@click.option("--description-hash", help="SHA256 of a long description, hex (the h field).")
@click.option("--hash-description", is_flag=True, help="Put SHA256(--description) in h instead of d.")
@click.option("--preimage", help="32-byte payment preimage, hex (random if neither it nor --payment-hash is given).")
@click.option("--payment-hash", help="32-byte payment hash, hex, when the preimage is kept elsewhere.")
@click.option("--payment-secret", help="32-byte payment secret, hex (random by default).")
@click.option("--expiry", type=click.IntRange(min=0), help="Seconds until expiry (default 3600).")
@click.option("--min-final-cltv-expiry", type=click.IntRange(min=0), help="Blocks (default 18).")
@click.option("--network", type=click.Choice(NETWORK_NAMES), default="regtest", show_default=True)
@click.option("--timestamp", type=click.IntRange(min=0, max=(1 << 35) - 1), help="Unix seconds (default now).")
@click.option("--metadata", help="Payment metadata, hex (the m field).")
@click.option("--feature", "features", type=int, multiple=True, help="Feature bit to set (repeatable); default 8, 14, 17.")
@click.option("--include-payee", is_flag=True, help="Add the n field (saves the payer a key recovery).")
def create_command(
    privkey: str, amount_msat: int | None, description: str | None, description_hash: str | None,
    hash_description: bool, preimage: str | None, payment_hash: str | None, payment_secret: str | None,
    expiry: int | None, min_final_cltv_expiry: int | None, network: str, timestamp: int | None,
    metadata: str | None, features: tuple[int, ...], include_payee: bool,
) -> None:
    """Create and sign a new invoice; prints JSON with the invoice, its preimage and secret.

    \b
    Example:
      lightspeed invoice create --privkey $KEY --amount-msat 250000 --description coffee
    """
    from lightspeed.bitcoin.network import network_by_name
    from lightspeed.crypto.hashes import sha256
    from lightspeed.invoice import build_invoice
    from lightspeed.invoice.encode import DEFAULT_FEATURES

    key = _privkey(privkey)
    if (description is None) == (description_hash is None):
        fail("give exactly one of --description and --description-hash")
    hashed = _hex_option("--description-hash", description_hash, 32)
    if hash_description:
        if description is None:
            fail("--hash-description needs --description")
        hashed, description = sha256(description.encode()), None
    if preimage is not None and payment_hash is not None:
        fail("give at most one of --preimage and --payment-hash")
    preimage_bytes = _hex_option("--preimage", preimage, 32)
    hash_bytes = _hex_option("--payment-hash", payment_hash, 32)
    if hash_bytes is None:
        preimage_bytes = preimage_bytes or os.urandom(32)
        hash_bytes = sha256(preimage_bytes)
    secret = _hex_option("--payment-secret", payment_secret, 32) or os.urandom(32)
    try:
        from lightspeed.crypto.secp256k1 import pubkey_from_privkey

        unsigned = build_invoice(
            network=network_by_name(network), amount_msat=amount_msat,
            timestamp=int(time.time()) if timestamp is None else timestamp,
            payment_hash=hash_bytes, payment_secret=secret, description=description,
            description_hash=hashed, expiry=expiry, min_final_cltv_expiry=min_final_cltv_expiry,
            features=features or DEFAULT_FEATURES, metadata=_hex_option("--metadata", metadata, len(metadata or "") // 2),
            payee=pubkey_from_privkey(key) if include_payee else None,
        )
        signed = unsigned.sign(key)
    except (LightspeedError, ValueError) as exc:
        fail(str(exc))
    print_json({
        "invoice": signed.encode(),
        "payment_hash": signed.payment_hash.hex(),
        "preimage": preimage_bytes.hex() if preimage_bytes else None,
        "payment_secret": secret.hex(),
        "payee": signed.payee.hex(),
    })
