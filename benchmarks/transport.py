"""BOLT 8: handshakes/s and encrypted messages/s, Lightspeed vs pyln-proto vs the raw AEAD limit.

Handshakes run both sides in memory (the socket work is the same for any
implementation). Messages go through a real loopback socket pair: encrypt, send,
receive, decrypt. The limit is cryptography's ChaCha20-Poly1305 alone doing the
four AEAD operations a message needs (length and body, sealed and opened).
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pyln.proto.primitives import PrivateKey as PylnPrivateKey
from pyln.proto.wire import LightningConnection

from benchmarks._util import median_us, report
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.transport import Handshake

KEY_I, KEY_R = b"\x11" * 32, b"\x21" * 32
PUB_R = pubkey_from_privkey(KEY_R)


def ours_handshake() -> None:
    initiator = Handshake.initiator(KEY_I, PUB_R)
    responder = Handshake.responder(KEY_R)
    responder.receive_data(initiator.receive_data(responder.receive_data(initiator.start())))
    assert responder.complete


def pyln_handshake() -> None:
    initiator = LightningConnection(None, remote_pubkey=PylnPrivateKey(KEY_R).public_key(),
                                    local_privkey=PylnPrivateKey(KEY_I), is_initiator=True)
    responder = LightningConnection(None, remote_pubkey=None, local_privkey=PylnPrivateKey(KEY_R), is_initiator=False)
    responder.handshake_act_one_responder(initiator.handshake_act_one_initiator())
    initiator.handshake_act_two_initiator(responder.handshake_act_two_responder())
    responder.handshake_act_three_responder(initiator.handshake_act_three_initiator())


def _socketpair() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    return a, b


def ours_message_fn(size: int):  # type: ignore[no-untyped-def]
    initiator = Handshake.initiator(KEY_I, PUB_R)
    responder = Handshake.responder(KEY_R)
    responder.receive_data(initiator.receive_data(responder.receive_data(initiator.start())))
    sender, receiver = initiator.transport(), responder.transport()
    a, b = _socketpair()
    payload = os.urandom(size)
    frame_size = size + 34

    def run() -> None:
        a.sendall(sender.send(payload))
        got = b""
        while len(got) < frame_size:
            got += b.recv(frame_size - len(got))
        receiver.receive_data(got)
        assert receiver.next_message() is not None

    return run


def pyln_message_fn(size: int):  # type: ignore[no-untyped-def]
    a, b = _socketpair()
    initiator = LightningConnection(a, remote_pubkey=PylnPrivateKey(KEY_R).public_key(),
                                    local_privkey=PylnPrivateKey(KEY_I), is_initiator=True)
    responder = LightningConnection(b, remote_pubkey=None, local_privkey=PylnPrivateKey(KEY_R), is_initiator=False)
    responder.handshake_act_one_responder(initiator.handshake_act_one_initiator())
    initiator.handshake_act_two_initiator(responder.handshake_act_two_responder())
    responder.handshake_act_three_responder(initiator.handshake_act_three_initiator())
    for conn in (initiator, responder):
        conn.sck = conn.rck = conn.chaining_key
    payload = os.urandom(size)

    def run() -> None:
        initiator.send_message(payload)
        assert responder.read_message() == payload

    return run


def limit_fn(size: int):  # type: ignore[no-untyped-def]
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    payload = os.urandom(size)

    def run() -> None:
        lc = aead.encrypt(nonce, b"\x00\x40", None)
        c = aead.encrypt(nonce, payload, None)
        aead.decrypt(nonce, lc, None)
        aead.decrypt(nonce, c, None)

    return run


def main() -> None:
    hs_ours = median_us(ours_handshake, 300)
    hs_pyln = median_us(pyln_handshake, 150)
    rows = [["handshake, both sides", hs_ours, hs_pyln, "-", f"{hs_pyln / hs_ours:.1f}x", "-"]]
    summary: dict[str, object] = {"benchmark": "transport",
                                  "handshake_us": {"lightspeed": round(hs_ours, 1), "pyln_proto": round(hs_pyln, 1)},
                                  "handshakes_per_s": {"lightspeed": round(1e6 / hs_ours), "pyln_proto": round(1e6 / hs_pyln)}}
    for size in (64, 1024):
        ours = median_us(ours_message_fn(size), 3000, warmup=50)
        pyln = median_us(pyln_message_fn(size), 3000, warmup=50)
        limit = median_us(limit_fn(size), 3000, warmup=50)
        rows.append([f"{size} B message, send+receive", ours, pyln, limit, f"{pyln / ours:.1f}x", f"{ours / limit:.1f}x"])
        summary[f"message_{size}B_us"] = {"lightspeed": round(ours, 2), "pyln_proto": round(pyln, 2), "aead_limit": round(limit, 2)}
        summary[f"messages_{size}B_per_s"] = {"lightspeed": round(1e6 / ours), "pyln_proto": round(1e6 / pyln),
                                             "aead_limit": round(1e6 / limit)}
    report("BOLT 8 transport, median µs (messages over a loopback socket pair)",
           ["operation", "lightspeed", "pyln-proto", "AEAD limit", "pyln/ours", "ours/limit"], rows, summary)


if __name__ == "__main__":
    main()
