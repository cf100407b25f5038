"""Payments per second through two Channel state machines (in memory, real signatures), beside the signing limit.

This measures the protocol core alone: add, commitment_signed/revoke_and_ack
both ways, fulfill, and both ways again (4 commitment signatures, 4 revocations
and their verifications per payment), messages encoded and decoded on the
wire format. Two node processes over TCP with a durable store come with the
node runtime (issue 5); this is the ceiling they can approach.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from coincurve import PrivateKey

from benchmarks._util import median_us, report
from lightspeed.channel import Channel
from lightspeed.channel.pair import channel_pair
from lightspeed.codec.message_base import WireMessage
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256


def _pair(anchors: bool) -> tuple[Channel, Channel]:
    return channel_pair(10_000_000, 9_000_000_000, anchors=anchors, max_accepted_htlcs=483)


def _wire(message: WireMessage) -> WireMessage:
    decoded = decode_message(encode_message(message))
    assert isinstance(decoded, WireMessage)
    return decoded


def _commit(signer: Channel, other: Channel) -> None:
    replies, _ = other.receive(_wire(signer.sign()))
    for reply in replies:
        signer.receive(_wire(reply))


def payments_per_second(anchors: bool, count: int = 200) -> float:
    alice, bob = _pair(anchors)
    start = time.perf_counter()
    for _ in range(count):
        preimage = os.urandom(32)
        add = alice.add_htlc(10_000, sha256(preimage), 800)
        bob.receive(_wire(add))
        _commit(alice, bob)
        _commit(bob, alice)
        alice.receive(_wire(bob.fulfill_htlc(add.id, preimage)))
        _commit(bob, alice)
        _commit(alice, bob)
    return count / (time.perf_counter() - start)


def main() -> None:
    key = PrivateKey(os.urandom(32))
    digest = sha256(b"x")
    der = key.sign(digest, hasher=None)
    sign_us = median_us(lambda: key.sign(digest, hasher=None), 1000)
    verify_us = median_us(lambda: key.public_key.verify(der, digest, hasher=None), 1000)
    # Per payment: 4 commitment_signed (sign + verify each) + 2 HTLC signatures while the HTLC
    # is in the commitments (sign + verify), + 4 per-commitment point derivations (not counted).
    limit_us = 6 * (sign_us + verify_us)
    rows = []
    summary: dict[str, object] = {"benchmark": "channel", "sign_us": round(sign_us, 1), "verify_us": round(verify_us, 1),
                                  "signature_limit_payments_per_s": round(1e6 / limit_us)}
    for anchors in (True, False):
        rate = payments_per_second(anchors)
        name = "anchors" if anchors else "static_remotekey"
        rows.append([name, round(rate), round(1e6 / limit_us), f"{(1e6 / limit_us) / rate:.1f}x", f"{1e6 / rate / 1000:.2f}"])
        summary[f"{name}_payments_per_s"] = round(rate)
    report("One channel, both state machines in one process: payments/s (real signatures, wire format)",
           ["commitment type", "payments/s", "signature limit/s", "limit/ours", "ms per payment"], rows, summary)


if __name__ == "__main__":
    main()
