"""BOLT 4: build a 5-hop and a 20-hop onion and peel one hop, Lightspeed vs pyln-proto in the same run.

Every hop payload has the same size, because pyln-proto only builds valid
packets then (its filler is wrong for unequal sizes). Both builders produce
byte-identical packets here, which the benchmark checks before timing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from pyln.proto.onion import RoutingOnion, SphinxHop, SphinxPath
from pyln.proto.primitives import PrivateKey as PylnPrivateKey
from pyln.proto.primitives import PublicKey as PylnPublicKey
from pyln.proto.primitives import Secret
from tests.support import pyln_compat

from benchmarks._util import median_us, report
from lightspeed.codec.bigsize import encode_bigsize
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.onion import HopPayload, OnionPacket, build_onion, peel_onion

pyln_compat.install()  # pyln-proto on cryptography >= 51 (see the module)

SESSION = b"\x41" * 32
ASSOC = b"\x42" * 32


def route(hops: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    privs = [bytes([i + 1]) * 32 for i in range(hops)]
    # a realistic intermediate payload: amount, expiry, channel (about 21 bytes each)
    payloads = [HopPayload(amt_to_forward_msat=1_000_000 + i, outgoing_cltv_value=800_000 + i,
                           short_channel_id=(700_000 << 40) | (i << 16)).to_bytes() for i in range(hops)]
    assert len({len(p) for p in payloads}) == 1
    return privs, [pubkey_from_privkey(p) for p in privs], payloads


def ours_build(pubkeys: list[bytes], payloads: list[bytes]) -> Callable[[], bytes]:
    return lambda: build_onion(SESSION, pubkeys, payloads, ASSOC).packet.to_bytes()


def pyln_build(pubkeys: list[bytes], payloads: list[bytes]) -> Callable[[], bytes]:
    keys = [PylnPublicKey(pk) for pk in pubkeys]
    framed = [encode_bigsize(len(p)) + p for p in payloads]

    def run() -> bytes:
        hops = [SphinxHop(k, f) for k, f in zip(keys, framed, strict=True)]
        return bytes(SphinxPath(hops, assocdata=ASSOC, session_key=Secret(SESSION)).compile().to_bin())

    return run


def main() -> None:
    rows: list[list[object]] = []
    summary: dict[str, object] = {"benchmark": "onion"}
    for hops in (5, 20):
        _, pubkeys, payloads = route(hops)
        ours, theirs = ours_build(pubkeys, payloads), pyln_build(pubkeys, payloads)
        assert ours() == theirs(), "builders disagree"
        t_ours = median_us(ours, 300)
        t_pyln = median_us(theirs, 100 if hops == 20 else 200)
        rows.append([f"build, {hops} hops", t_ours, t_pyln, f"{t_pyln / t_ours:.1f}x"])
        summary[f"build_{hops}_hops_us"] = {"lightspeed": round(t_ours, 1), "pyln_proto": round(t_pyln, 1),
                                            "ratio_pyln_over_ours": round(t_pyln / t_ours, 2)}
    privs, pubkeys, payloads = route(5)
    raw = build_onion(SESSION, pubkeys, payloads, ASSOC).packet.to_bytes()
    packet = OnionPacket.from_bytes(raw)
    pyln_packet, pyln_key = RoutingOnion.from_bin(raw), PylnPrivateKey(privs[0])
    assert peel_onion(packet, privs[0], ASSOC).payload == payloads[0]
    t_ours = median_us(lambda: peel_onion(OnionPacket.from_bytes(raw), privs[0], ASSOC), 2000, warmup=50)
    t_pyln = median_us(lambda: pyln_packet.unwrap(pyln_key, ASSOC), 2000, warmup=50)
    rows.append(["peel one hop (parse + unwrap)", t_ours, t_pyln, f"{t_pyln / t_ours:.1f}x"])
    summary["peel_one_hop_us"] = {"lightspeed": round(t_ours, 1), "pyln_proto": round(t_pyln, 1),
                                  "ratio_pyln_over_ours": round(t_pyln / t_ours, 2)}
    summary["cpu_count"] = os.cpu_count()
    report("BOLT 4 onion, median µs (equal-size payloads so pyln-proto's packet is valid)",
           ["operation", "lightspeed", "pyln-proto", "pyln/ours"], rows, summary)


if __name__ == "__main__":
    main()
