"""BOLT 4: build a 5-hop and a 20-hop onion and peel one hop, Lightspeed vs pyln-proto vs Electrum.

Every hop payload has the same size, because pyln-proto only builds valid
packets then (its filler is wrong for unequal sizes). All builders produce
byte-identical packets here and all peelers the same next packet, which the
benchmark checks before timing. Electrum runs in Debian's interpreter in a
worker process (see ``_compare``); it encodes its hop payloads from dicts inside
the timed call, as its payment code does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from pyln.proto.onion import RoutingOnion, SphinxHop, SphinxPath
from pyln.proto.primitives import PrivateKey as PylnPrivateKey
from pyln.proto.primitives import PublicKey as PylnPublicKey
from pyln.proto.primitives import Secret
from tests.support import pyln_compat

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
from lightspeed.codec.bigsize import encode_bigsize
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.onion import HopPayload, OnionPacket, build_onion, peel_onion

pyln_compat.install()  # pyln-proto on cryptography >= 51 (see the module)

SESSION = b"\x41" * 32
ASSOC = b"\x42" * 32


def route(hops: int) -> tuple[list[bytes], list[bytes], list[bytes], list[dict[str, int]]]:
    privs = [bytes([i + 1]) * 32 for i in range(hops)]
    # a realistic intermediate payload: amount, expiry, channel (about 21 bytes each)
    fields = [{"amt_to_forward_msat": 1_000_000 + i, "outgoing_cltv_value": 800_000 + i,
               "short_channel_id": (700_000 << 40) | (i << 16)} for i in range(hops)]
    payloads = [HopPayload(**f).to_bytes() for f in fields]
    assert len({len(p) for p in payloads}) == 1
    return privs, [pubkey_from_privkey(p) for p in privs], payloads, fields


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
    args = parse_args(__doc__.splitlines()[0])
    start = machine()
    electrum = None if args.no_electrum else Electrum()
    use_electrum = electrum is not None and electrum.available
    s = args.scale
    ops: list[Operation] = []
    for hops in (5, 20):
        _, pubkeys, payloads, fields = route(hops)
        ours, theirs = ours_build(pubkeys, payloads), pyln_build(pubkeys, payloads)
        packet = ours()
        assert theirs() == packet, "pyln-proto's packet differs from ours"
        sides = [Side("lightspeed", local(ours), count(100, s)),
                 Side("pyln-proto", local(theirs), count(20 if hops == 20 else 40, s))]
        if use_electrum:
            assert electrum is not None
            params: dict[str, Any] = {"pubkeys": [k.hex() for k in pubkeys], "session_key": SESSION.hex(),
                                      "associated_data": ASSOC.hex(), "hops": fields}
            assert electrum.output("onion_build", params) == packet, "Electrum's packet differs from ours"
            sides.append(electrum.side("onion_build", params, count(20 if hops == 20 else 40, s)))
        ops.append(Operation(f"build, {hops} hops", sides))
    privs, pubkeys, payloads, _ = route(5)
    raw = build_onion(SESSION, pubkeys, payloads, ASSOC).packet.to_bytes()
    pyln_packet, pyln_key = RoutingOnion.from_bin(raw), PylnPrivateKey(privs[0])
    peeled = peel_onion(OnionPacket.from_bytes(raw), privs[0], ASSOC)
    assert peeled.payload == payloads[0] and peeled.next_packet is not None
    next_packet = peeled.next_packet.to_bytes()
    sides = [Side("lightspeed", local(lambda: peel_onion(OnionPacket.from_bytes(raw), privs[0], ASSOC)), count(1000, s)),
             Side("pyln-proto", local(lambda: pyln_packet.unwrap(pyln_key, ASSOC)), count(1000, s))]
    if use_electrum:
        assert electrum is not None
        params = {"packet": raw.hex(), "privkey": privs[0].hex(), "associated_data": ASSOC.hex()}
        assert electrum.output("onion_peel", params) == next_packet, "Electrum's next packet differs from ours"
        sides.append(electrum.side("onion_peel", params, count(300, s)))
    ops.append(Operation("peel one hop (parse + unwrap)", sides,
                         "pyln-proto's unwrap takes a packet parsed before the loop; the others parse in it"))
    results = measure(ops, args.windows)
    peers = {"pyln-proto": _version("pyln-proto")}
    if electrum is not None:
        peers["electrum"] = electrum.version or f"left out: {electrum.unavailable}"
    report("onion", "BOLT 4 onion: µs per packet (equal-size payloads so pyln-proto's packet is valid)",
           ops, results, start, args, peers=peers)
    done(electrum)


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


if __name__ == "__main__":
    main()
