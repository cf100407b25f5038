"""Onion-message round trips over real TCP (1 and 3 hops) beside their cryptographic floor.

A line of four nodes A-B-C-D (one process, loopback TCP, the functional-test network) answers
pings: ``A.onion_messages.request(X, ping)`` sends the ping with a reply path through one of
A's peers and returns when the pong is back. One hop is A -> B and back; three hops is
A -> B -> C -> D and D -> C -> B -> A. The floor is the cryptography the same round trip
cannot avoid, measured in the same run: building both onions (ping and pong) and peeling each
hop (an ECDH for the Sphinx layer, one for the blinded hop, ChaCha20 over the 1366-byte packet,
the HMAC, ChaCha20-Poly1305 on the hop's instructions). Round trips run in several windows; the
table gives each window's median and the spread between windows.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from tests.support.network import Network, create_network

from benchmarks._util import median_us, report
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.gossip.store import NodeRecord
from lightspeed.node.onion_messenger import PING_TYPE, PONG_TYPE
from lightspeed.node.onion_ratelimit import OnionMessageLimits, PeerRateLimiter
from lightspeed.onion.blinding import EncryptedDataTlv, create_blinded_path
from lightspeed.onion.message import (
    OnionMessage,
    OnionMessagePayload,
    build_onion_message,
    create_reply_path,
    peel_onion_message,
)
from lightspeed.onion.sphinx import ecdh

WINDOWS = 5
PER_WINDOW = 40


def _announce(net: Network) -> None:
    for node in net.nodes:
        for other in net.nodes:
            node.gossip.gossiper.view.store.put_node(NodeRecord(
                other.node_id, 1, other.features.for_context("N").to_bytes(), b"", b"\0\0\0", (), True, b""))


def floor_us(hops: int) -> tuple[float, float, float]:
    """(build one onion for ``hops`` hops, peel one hop, the round trip's total) in microseconds."""
    keys = [os.urandom(32) for _ in range(hops + 1)]  # the hops, then the sender (the reply's destination)
    ids = [pubkey_from_privkey(k) for k in keys]
    tlvs = [EncryptedDataTlv(next_node_id=n) for n in ids[1:hops]] + [EncryptedDataTlv()]
    reply = create_reply_path(os.urandom(32), [ids[0], ids[-1]], os.urandom(32), padding_to=64)
    payload = OnionMessagePayload(records=((PING_TYPE, b"bench"),), reply_path=reply)

    def build() -> OnionMessage:
        path = create_blinded_path(os.urandom(32), ids[:hops], tlvs)
        return build_onion_message(os.urandom(32), path, payload)[1]

    message = build()
    build_us = median_us(build, 200)
    peel_us = median_us(lambda: peel_onion_message(keys[0], message), 500, warmup=20)
    # Ping: one build, ``hops`` peels; pong: one build and ``hops`` peels back (the reply path's
    # introduction node opens its own hop too, which the peel count covers).
    return build_us, peel_us, 2 * build_us + 2 * hops * peel_us


async def round_trips(net: Network, target: int) -> list[float]:
    """Window medians of round-trip times (ms) from A to node ``target``."""
    a, destination = net.nodes[0], net.nodes[target].node_id
    for _ in range(5):  # warm up: connections, caches
        await a.onion_messages.request(destination, [(PING_TYPE, b"warm")], timeout=10, attempts=1)
    medians = []
    for _ in range(WINDOWS):
        samples = []
        for i in range(PER_WINDOW):
            value = i.to_bytes(4, "big")
            began = time.perf_counter()
            reply = await a.onion_messages.request(destination, [(PING_TYPE, value)], timeout=10, attempts=1)
            samples.append((time.perf_counter() - began) * 1000)
            assert reply.records == ((PONG_TYPE, value),)
        medians.append(statistics.median(samples))
    return medians


async def measure() -> dict[int, list[float]]:
    net = await create_network(4, [(0, 1, 1_000_000, 0), (1, 2, 1_000_000, 0), (2, 3, 1_000_000, 0)])
    _announce(net)
    for node in net.nodes:  # latency, not the flood limits (50 a second per peer by default), is measured
        node.onion_messages.limiter = PeerRateLimiter(OnionMessageLimits(burst=10_000, per_second=10_000))
    try:
        return {hops: await round_trips(net, hops) for hops in (1, 3)}
    finally:
        await net.stop()


def main() -> None:
    ecdh_us = median_us(lambda: ecdh(b"\x11" * 32, pubkey_from_privkey(b"\x22" * 32)), 1000, warmup=50)
    measured = asyncio.run(measure())
    rows: list[list[object]] = []
    summary: dict[str, object] = {"benchmark": "onion_messages", "windows": WINDOWS, "per_window": PER_WINDOW,
                                  "ecdh_us": round(ecdh_us, 1)}
    for hops, medians in measured.items():
        build_us, peel_us, total_us = floor_us(hops)
        median_ms = statistics.median(medians)
        spread = (max(medians) - min(medians)) / median_ms * 100
        rows.append([f"round trip, {hops} hop{'s' if hops > 1 else ''}", median_ms, min(medians), max(medians),
                     f"{spread:.0f}%", total_us / 1000, f"{median_ms * 1000 / total_us:.1f}x"])
        summary[f"round_trip_{hops}_hops"] = {
            "median_ms": round(median_ms, 3), "window_medians_ms": [round(m, 3) for m in medians],
            "spread_pct": round(spread, 1), "floor_ms": round(total_us / 1000, 3),
            "build_us": round(build_us, 1), "peel_one_hop_us": round(peel_us, 1),
            "ratio_over_floor": round(median_ms * 1000 / total_us, 2)}
    report("onion messages: round trips over loopback TCP vs the cryptographic floor",
           ["what", "median ms", "best window", "worst window", "spread", "floor ms", "over floor"],
           rows, summary)


if __name__ == "__main__":
    main()
