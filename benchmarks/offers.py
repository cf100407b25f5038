"""BOLT 12 decode (+ signature check): Lightspeed beside the BIP-340 floor and LDK's parser.

Rows: an offer (no signature), the spec's signed invoice request, and an invoice
written by Core Lightning (one blinded path, signature checked). "floor" is the
libsecp256k1 work a checked decode cannot avoid, timed in this run: the x-only key
parse plus the BIP-340 verification (0 for the unsigned offer). "merkle" is our
TLV Merkle root alone. When node and the cached boltz-bolt12 package (LDK's offers
module in WebAssembly, fetched by tests/test_offers_interop.py) are present, the
same strings are parsed there too (LDK checks the invoice signature as well).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from coincurve import PublicKeyXOnly

from benchmarks._util import median_us, report
from lightspeed.offers import decode_invoice, decode_invoice_request, decode_offer
from lightspeed.offers.merkle import merkle_root_of_records
from lightspeed.offers.sign import signature_digest
from lightspeed.offers.strings import decode_string
from lightspeed.offers.tlv_fields import read_records

_VECTORS = _HERE.parent / "tests" / "vectors"
_BOLTZ = _HERE.parent / ".cache" / "npm" / "boltz-bolt12-0.2.0" / "package" / "boltz_bolt12.js"
_LDK_LOOP = """
import { Offer, Invoice } from %s;
const [kind, text, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];
const make = kind === 'offer' ? (s) => new Offer(s).free() : (s) => new Invoice(s).free();
for (let i = 0; i < 200; i++) make(text);
const samples = [];
for (let r = 0; r < 15; r++) {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) make(text);
  samples.push(Number(process.hrtime.bigint() - t0) / 1000 / n);
}
samples.sort((a, b) => a - b);
process.stdout.write(JSON.stringify(samples[7]));
"""


def _vector(name: str) -> list[dict[str, object]]:
    data: list[dict[str, object]] = json.loads((_VECTORS / name).read_text())["vectors"]
    return data


def _ldk_us(kind: str, text: str) -> float | None:
    """Median µs per parse in LDK's WASM build, or None when node or the package is missing."""
    if shutil.which("node") is None or not _BOLTZ.is_file():
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "loop.mjs"
        script.write_text(_LDK_LOOP % json.dumps(_BOLTZ.as_uri()))
        done = subprocess.run(["node", "--experimental-wasm-modules", str(script), kind, text, "200"],
                              capture_output=True, text=True, timeout=300)
    return float(done.stdout) if done.returncode == 0 else None


def _floor_us(message_name: str, text: str, key_field: int) -> float:
    """x-only key parse + BIP-340 verify of the string's own signature (digest precomputed)."""
    _, stream = decode_string(text)
    records = read_records(stream)
    values = {r.type: r.value for r in records}
    digest = signature_digest(message_name, merkle_root_of_records(records))
    key, signature = values[key_field][1:], values[240]
    assert PublicKeyXOnly(key).verify(signature, digest)
    return median_us(lambda: PublicKeyXOnly(key).verify(signature, digest), 2000)


def main() -> None:
    offer = str(_vector("bolt12_format_string.json")[0]["string"])
    invreq = str(_vector("bolt12_signature.json")[3]["bolt12"])
    invoice = next(str(v["string"]) for v in _vector("bolt12_interop_cln.json")
                   if dict(v["expected"])["type"] == "invoice")  # type: ignore[call-overload]
    cases = [("offer", offer, decode_offer, None), ("invoice_request", invreq, decode_invoice_request, 88),
             ("invoice", invoice, decode_invoice, 176)]
    rows = []
    summary: dict[str, dict[str, float | None]] = {}
    for name, text, decoder, key_field in cases:
        ours = median_us(lambda t=text, d=decoder: d(t), 1000)  # type: ignore[misc]
        _, stream = decode_string(text)
        merkle = median_us(lambda s=stream: merkle_root_of_records(read_records(s)), 1000)  # type: ignore[misc]
        floor = 0.0 if key_field is None else _floor_us(name, text, key_field)
        ldk = None if name == "invoice_request" else _ldk_us("offer" if name == "offer" else "invoice", text)
        rows.append([f"{name} ({len(text)} chars)", ours, merkle, floor, ldk if ldk is not None else "n/a",
                     f"{ours / floor:.1f}x" if floor else "-", f"{ldk / ours:.2f}" if ldk else "n/a"])
        summary[name] = {"lightspeed_us": round(ours, 1), "merkle_us": round(merkle, 1), "floor_us": round(floor, 1),
                         "ldk_wasm_us": None if ldk is None else round(ldk, 1)}
    report(
        "BOLT 12 decode incl. signature check, median µs (floor = BIP-340 verify alone; LDK = boltz-bolt12 WASM)",
        ["string", "lightspeed", "merkle root", "floor", "LDK (wasm)", "ours/floor", "LDK/ours"],
        rows,
        {"benchmark": "offers", "decode": summary},
    )


if __name__ == "__main__":
    main()
