"""BOLT 11 decode (with signature check) and encode+sign: Lightspeed vs pyln-proto, bolt11 and Electrum.

Everyone decodes the same invoice (the BOLT's "1 cup coffee" example) and
writes the same fields; each peer's output is checked against ours before any
timing. The floor is the secp256k1 step a task cannot avoid (public-key
recovery, or signing) through coincurve. Electrum runs in Debian's interpreter
in a worker process (see ``_compare``).
"""

from __future__ import annotations

import sys
from decimal import Decimal
from pathlib import Path

# Run as a script, this file's folder would come first on sys.path and "import bolt11"
# would import this very file instead of the PyPI package: put the project root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import bolt11
from bolt11 import Bolt11, MilliSatoshi, TagChar, Tags
from coincurve import PrivateKey, PublicKey
from pyln.proto.invoice import Invoice as PylnInvoice

from benchmarks._compare import (
    Electrum,
    Operation,
    Side,
    count,
    done,
    local,
    machine,
    measure,
    parse_args,
    report,
)
from lightspeed.crypto.hashes import sha256
from lightspeed.invoice import build_invoice, decode

PRIVKEY = bytes.fromhex("e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734")
# BOLT 11 example: "1 cup coffee" (p, s, d, x, 9 fields, key recovery).
COFFEE = (
    "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5"
    "rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85fkpmdla2087ne0xh8"
    "nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh"
)
PAYMENT_HASH = bytes(range(32))
PAYMENT_SECRET = b"\x11" * 32
TIMESTAMP = 1496314658
FEATURES = (8, 14)  # var_onion_optin and payment_secret, required


def encode_ours() -> str:
    return build_invoice(
        payment_hash=PAYMENT_HASH, payment_secret=PAYMENT_SECRET, timestamp=TIMESTAMP,
        amount_msat=250_000_000, description="1 cup coffee", expiry=60, features=set(FEATURES),
    ).sign(PRIVKEY).encode()


def encode_pyln() -> str:
    # pyln-proto cannot write s or 9: its invoice is lighter than the others.
    invoice = PylnInvoice(paymenthash=PAYMENT_HASH, amount=Decimal("0.0025"), currency="bc",
                          tags=[("d", "1 cup coffee"), ("x", 60)], date=TIMESTAMP)
    return str(invoice.encode(PRIVKEY.hex()))


def encode_b11() -> str:
    tags = Tags()
    tags.add(TagChar.payment_hash, PAYMENT_HASH.hex())
    tags.add(TagChar.payment_secret, PAYMENT_SECRET.hex())
    tags.add(TagChar.description, "1 cup coffee")
    tags.add(TagChar.expire_time, 60)
    return str(bolt11.encode(Bolt11(currency="bc", date=TIMESTAMP, tags=tags,
                                    amount_msat=MilliSatoshi(250_000_000)), private_key=PRIVKEY.hex()))


ELECTRUM_ENCODE = {"payment_hash": PAYMENT_HASH.hex(), "payment_secret": PAYMENT_SECRET.hex(), "amount_btc": "0.0025",
                   "description": "1 cup coffee", "expiry": 60, "features": list(FEATURES), "timestamp": TIMESTAMP,
                   "privkey": PRIVKEY.hex()}


def check_outputs(electrum: Electrum | None) -> None:
    """Every side must produce what we do (same fields, valid signature) before it is timed."""
    ours = decode(COFFEE)
    assert PylnInvoice.decode(COFFEE).paymenthash == ours.payment_hash
    assert bytes.fromhex(bolt11.decode(COFFEE).payment_hash) == ours.payment_hash
    payee = PrivateKey(PRIVKEY).public_key.format()
    lighter = PylnInvoice.decode(encode_pyln())  # no s field: our reader rightly refuses it, pyln-proto reads it
    assert (lighter.paymenthash, lighter.pubkey.format()) == (PAYMENT_HASH, payee)
    for written in (encode_ours(), encode_b11()):
        invoice = decode(written)
        assert (invoice.payment_hash, invoice.amount_msat, invoice.description, invoice.payee) == \
            (PAYMENT_HASH, 250_000_000, "1 cup coffee", payee), written
    if electrum is not None and electrum.available:
        assert electrum.output("bolt11_decode", {"invoice": COFFEE}) == ours.payment_hash
        invoice = decode(electrum.output("bolt11_encode", ELECTRUM_ENCODE).decode())
        assert (invoice.payment_hash, invoice.amount_msat, invoice.description, invoice.payee,
                invoice.payment_secret) == (PAYMENT_HASH, 250_000_000, "1 cup coffee", payee, PAYMENT_SECRET)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    start = machine()
    electrum = None if args.no_electrum else Electrum()
    check_outputs(electrum)
    s = args.scale
    coffee = decode(COFFEE)
    signature = coffee.signature + bytes([coffee.recovery_id])
    msg_hash = sha256(b"x")
    key = PrivateKey(PRIVKEY)
    use_electrum = electrum is not None and electrum.available

    decode_sides = [Side("lightspeed", local(lambda: decode(COFFEE)), count(300, s)),
                    Side("pyln-proto", local(lambda: PylnInvoice.decode(COFFEE)), count(30, s)),
                    Side("bolt11", local(lambda: bolt11.decode(COFFEE)), count(30, s))]
    encode_sides = [Side("lightspeed", local(encode_ours), count(300, s)),
                    Side("pyln-proto", local(encode_pyln), count(30, s)),
                    Side("bolt11", local(encode_b11), count(30, s))]
    if use_electrum:
        assert electrum is not None
        decode_sides.append(electrum.side("bolt11_decode", {"invoice": COFFEE}, count(30, s)))
        encode_sides.append(electrum.side("bolt11_encode", ELECTRUM_ENCODE, count(30, s)))
    decode_sides.append(Side("floor: key recovery", local(
        lambda: PublicKey.from_signature_and_message(signature, msg_hash, hasher=None)), count(300, s)))
    encode_sides.append(Side("floor: signing", local(lambda: key.sign_recoverable(msg_hash, hasher=None)),
                             count(300, s)))
    ops = [Operation("decode + signature check", decode_sides),
           Operation("encode + sign", encode_sides,
                     "pyln-proto cannot write the s and 9 fields, so its invoice is lighter than the others")]
    results = measure(ops, args.windows)
    peers = {"pyln-proto": _version("pyln-proto"), "bolt11": _version("bolt11")}
    if electrum is not None:
        peers["electrum"] = electrum.version or f"left out: {electrum.unavailable}"
    report("bolt11", "BOLT 11: µs per invoice (floor = the secp256k1 step alone)", ops, results, start, args,
           peers=peers)
    done(electrum)


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


if __name__ == "__main__":
    main()
