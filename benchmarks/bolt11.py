"""BOLT 11 decode (with signature check) and encode+sign: Lightspeed vs pyln-proto vs bolt11.

All three run in this process on the same invoices; the table shows medians in
microseconds and each peer's time as a multiple of ours. The "limit" row is the
secp256k1 operation each task cannot avoid (public-key recovery, or signing).
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

from benchmarks._util import median_us, report
from lightspeed.crypto.hashes import sha256
from lightspeed.invoice import build_invoice, decode

PRIVKEY = bytes.fromhex("e126f68f7eafcc8b74f54d269fe206be715000f94dac067d1c04a8ca3b2db734")
# BOLT 11 example: "1 cup coffee" (p, s, d, x, 9 fields, key recovery), and the route-hint example.
COFFEE = (
    "lnbc2500u1pvjluezsp5zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zyg3zygspp5qqqsyqcyq5rqwzqfqqqsyqcyq5"
    "rqwzqfqqqsyqcyq5rqwzqfqypqdq5xysxxatsyp3k7enxv4jsxqzpu9qrsgquk0rl77nj30yxdy8j9vdx85fkpmdla2087ne0xh8"
    "nhedh8w27kyke0lp53ut353s06fv3qfegext0eh0ymjpf39tuven09sam30g4vgpfna3rh"
)


def main() -> None:
    repeat = 300
    decode_ours = median_us(lambda: decode(COFFEE), repeat)
    decode_pyln = median_us(lambda: PylnInvoice.decode(COFFEE), repeat // 3)
    decode_b11 = median_us(lambda: bolt11.decode(COFFEE), repeat // 3)

    signature = decode(COFFEE).signature + bytes([decode(COFFEE).recovery_id])
    msg_hash = sha256(b"x")
    recover = median_us(lambda: PublicKey.from_signature_and_message(signature, msg_hash, hasher=None), repeat)
    key = PrivateKey(PRIVKEY)
    sign = median_us(lambda: key.sign_recoverable(msg_hash, hasher=None), repeat)

    payment_hash = bytes(range(32))

    def encode_ours() -> str:
        return build_invoice(
            payment_hash=payment_hash, payment_secret=b"\x11" * 32, timestamp=1496314658,
            amount_msat=250_000_000, description="1 cup coffee", expiry=60, features={8, 14},
        ).sign(PRIVKEY).encode()

    def encode_pyln() -> str:
        # pyln-proto cannot write s or 9: its invoice is lighter than the other two.
        invoice = PylnInvoice(paymenthash=payment_hash, amount=Decimal("0.0025"), currency="bc",
                              tags=[("d", "1 cup coffee"), ("x", 60)], date=1496314658)
        return str(invoice.encode(PRIVKEY.hex()))

    def encode_b11() -> str:
        tags = Tags()
        tags.add(TagChar.payment_hash, payment_hash.hex())
        tags.add(TagChar.payment_secret, "11" * 32)
        tags.add(TagChar.description, "1 cup coffee")
        tags.add(TagChar.expire_time, 60)
        return str(bolt11.encode(Bolt11(currency="bc", date=1496314658, tags=tags,
                                        amount_msat=MilliSatoshi(250_000_000)), private_key=PRIVKEY.hex()))

    encode_ours_us = median_us(encode_ours, repeat)
    encode_pyln_us = median_us(encode_pyln, repeat // 3)
    encode_b11_us = median_us(encode_b11, repeat // 3)

    rows = [
        ["decode + signature check", decode_ours, decode_pyln, decode_b11, recover,
         f"{decode_pyln / decode_ours:.1f}x", f"{decode_b11 / decode_ours:.1f}x"],
        ["encode + sign", encode_ours_us, encode_pyln_us, encode_b11_us, sign,
         f"{encode_pyln_us / encode_ours_us:.1f}x", f"{encode_b11_us / encode_ours_us:.1f}x"],
    ]
    report(
        "BOLT 11, median µs per invoice (limit = the secp256k1 step alone)",
        ["operation", "lightspeed", "pyln-proto", "bolt11", "limit", "pyln/ours", "bolt11/ours"],
        rows,
        {
            "benchmark": "bolt11",
            "decode_us": {"lightspeed": round(decode_ours, 1), "pyln_proto": round(decode_pyln, 1),
                          "bolt11": round(decode_b11, 1), "recover_limit": round(recover, 1)},
            "encode_us": {"lightspeed": round(encode_ours_us, 1), "pyln_proto": round(encode_pyln_us, 1),
                          "bolt11": round(encode_b11_us, 1), "sign_limit": round(sign, 1)},
            "decode_speedup": {"vs_pyln_proto": round(decode_pyln / decode_ours, 2),
                               "vs_bolt11": round(decode_b11 / decode_ours, 2)},
            "encode_speedup": {"vs_pyln_proto": round(encode_pyln_us / encode_ours_us, 2),
                               "vs_bolt11": round(encode_b11_us / encode_ours_us, 2)},
        },
    )


if __name__ == "__main__":
    main()
