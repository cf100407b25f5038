"""BOLT 8: handshakes and encrypted messages, Lightspeed vs pyln-proto vs Electrum vs the AEAD floor.

Handshakes run both sides in memory (the socket work is the same for any
implementation). Messages are sealed by one side and opened by the other, in
memory and through a loopback socket pair; every implementation's own send and
receive code runs (pyln-proto writes length and body with two ``send`` calls,
Electrum reads 1 KB at a time: that is their cost). The floors are what no
implementation can avoid: cryptography's ChaCha20-Poly1305 doing the four AEAD
operations of a message (length and body, sealed and opened), and over the
socket, those plus one scatter-gather send and one receive of the frame. A handshake's floor
is its elliptic-curve work with coincurve: two ephemeral keys and six ECDHs.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from coincurve import PrivateKey as CoincurvePrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from pyln.proto.primitives import PrivateKey as PylnPrivateKey
from pyln.proto.wire import LightningConnection

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
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.transport import Handshake, NoiseTransport

KEY_I, KEY_R = b"\x11" * 32, b"\x21" * 32
PUB_R = pubkey_from_privkey(KEY_R)
# pyln-proto's key objects are built once, as our node key is: only the handshake is timed.
PYLN_I, PYLN_R = PylnPrivateKey(KEY_I), PylnPrivateKey(KEY_R)
PYLN_PUB_R = PYLN_R.public_key()
_FLOOR_I, _FLOOR_R = CoincurvePrivateKey(KEY_I), CoincurvePrivateKey(KEY_R)
_FLOOR_PUB_I, _FLOOR_PUB_R = _FLOOR_I.public_key, _FLOOR_R.public_key


def ours_handshake() -> None:
    initiator = Handshake.initiator(KEY_I, PUB_R)
    responder = Handshake.responder(KEY_R)
    responder.receive_data(initiator.receive_data(responder.receive_data(initiator.start())))
    assert responder.complete


def ec_floor_handshake() -> None:
    """The elliptic-curve work a BOLT 8 handshake cannot avoid, both sides, and nothing else: two
    ephemeral public keys and six ECDHs (es, ee, se on each side), on keys already parsed. What a
    handshake costs above it is hashing, AEAD and parsing; no implementation goes below it."""
    e_i, e_r = CoincurvePrivateKey(os.urandom(32)), CoincurvePrivateKey(os.urandom(32))
    pub_e_i, pub_e_r = e_i.public_key, e_r.public_key
    pub_e_i.format(), pub_e_r.format()
    _FLOOR_R.ecdh(pub_e_i.format())  # responder es
    e_i.ecdh(_FLOOR_PUB_R.format())  # initiator es
    e_r.ecdh(pub_e_i.format())  # responder ee
    e_i.ecdh(pub_e_r.format())  # initiator ee
    _FLOOR_I.ecdh(pub_e_r.format())  # initiator se
    e_r.ecdh(_FLOOR_PUB_I.format())  # responder se


def ours_pair() -> tuple[NoiseTransport, NoiseTransport]:
    initiator = Handshake.initiator(KEY_I, PUB_R)
    responder = Handshake.responder(KEY_R)
    responder.receive_data(initiator.receive_data(responder.receive_data(initiator.start())))
    return initiator.transport(), responder.transport()


def pyln_handshake(conn_i: object = None, conn_r: object = None) -> tuple[LightningConnection, LightningConnection]:
    initiator = LightningConnection(conn_i, remote_pubkey=PYLN_PUB_R, local_privkey=PYLN_I, is_initiator=True)
    responder = LightningConnection(conn_r, remote_pubkey=None, local_privkey=PYLN_R, is_initiator=False)
    responder.handshake_act_one_responder(initiator.handshake_act_one_initiator())
    initiator.handshake_act_two_initiator(responder.handshake_act_two_responder())
    responder.handshake_act_three_responder(initiator.handshake_act_three_initiator())
    for conn in (initiator, responder):
        conn.sck = conn.rck = conn.chaining_key  # pyln-proto leaves these unset after its handshake
    return initiator, responder


class _Pipe:
    """pyln-proto's connection object, in memory: ``send`` appends, ``recv`` takes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def recv(self, n: int) -> bytes:
        out = bytes(self.data[:n])
        del self.data[:n]
        return out


def ours_message(size: int, over: str) -> Callable[[], None]:
    sender, receiver = ours_pair()
    payload = os.urandom(size)
    if over == "memory":
        def run_memory() -> None:
            assert receiver.receive(sender.send(payload))
        return run_memory
    a, b = socket.socketpair()

    def run_socket() -> None:
        a.sendall(sender.send(payload))
        while not receiver.receive(b.recv(1 << 16)):
            pass
    return run_socket


def pyln_message(size: int, over: str) -> Callable[[], None]:
    if over == "memory":
        pipe = _Pipe()
        initiator, responder = pyln_handshake(pipe, pipe)
    else:
        a, b = socket.socketpair()
        initiator, responder = pyln_handshake(a, b)
    payload = os.urandom(size)

    def run() -> None:
        initiator.send_message(payload)
        assert responder.read_message() == payload
    return run


def floor_message(size: int, over: str) -> Callable[[], None]:
    aead = ChaCha20Poly1305(os.urandom(32))
    seal, open_ = aead.encrypt, aead.decrypt
    nonce, length, payload = bytes(12), size.to_bytes(2, "big"), os.urandom(size)
    if over == "memory":
        def run_memory() -> None:
            lc = seal(nonce, length, None)
            c = seal(nonce, payload, None)
            open_(nonce, lc, None)
            open_(nonce, c, None)
        return run_memory
    a, b = socket.socketpair()
    frame_size = size + 34

    def run_socket() -> None:
        lc = seal(nonce, length, None)
        c = seal(nonce, payload, None)
        a.sendmsg([lc, c])
        got = len(b.recv(1 << 16))
        while got < frame_size:
            got += len(b.recv(1 << 16))
        open_(nonce, lc, None)
        open_(nonce, c, None)
    return run_socket


_ELECTRUM_AEAD = ("Electrum seals and opens through Debian's python3-cryptography 38, whose AEAD binding "
                  "(cffi, a new OpenSSL context per call) costs ~10 µs per call: Electrum as Debian ships it")


def check_electrum_agrees(electrum: Electrum) -> None:
    """Electrum's transport must carry the message, and its handshake interoperate, before timing."""
    assert electrum.output("bolt8_message", {"payload": "00ff" * 10, "over": "memory"}) == bytes.fromhex("00ff" * 10)
    assert electrum.output("bolt8_message", {"payload": "00ff" * 10, "over": "socket"}) == bytes.fromhex("00ff" * 10)
    assert len(electrum.output("bolt8_handshake", {})) == 32  # its handshake completes (a 32-byte send key)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    start = machine()
    electrum = None if args.no_electrum else Electrum()
    s = args.scale
    ops: list[Operation] = []
    electrum_on = electrum is not None and electrum.available
    hs_sides = [Side("lightspeed", local(ours_handshake), count(60, s)),
                Side("pyln-proto", local(pyln_handshake), count(30, s))]
    if electrum is not None and electrum.available:
        check_electrum_agrees(electrum)
        hs_sides.append(electrum.side("bolt8_handshake", {}, count(20, s)))
    hs_sides.append(Side("EC floor", local(ec_floor_handshake), count(60, s)))
    ops.append(Operation("handshake, both sides", hs_sides))
    for over in ("memory", "socket"):
        for size in (64, 1024):
            payload_hex = os.urandom(size).hex()
            sides = [Side("lightspeed", local(ours_message(size, over)), count(3000, s)),
                     Side("pyln-proto", local(pyln_message(size, over)), count(1500, s))]
            if electrum is not None and electrum.available:
                sides.append(electrum.side("bolt8_message", {"payload": payload_hex, "over": over}, count(300, s)))
            sides.append(Side("AEAD floor", local(floor_message(size, over)), count(3000, s)))
            ops.append(Operation(f"{size} B message, {over}", sides, _ELECTRUM_AEAD if electrum_on else ""))
    results = measure(ops, args.windows)
    peers = {"pyln-proto": _version("pyln-proto")}
    if electrum is not None:
        peers["electrum"] = electrum.version or f"left out: {electrum.unavailable}"
    ours_over_floor = {}
    for r in results:
        if r.side in ("AEAD floor", "EC floor"):
            summary = r.summary()["over_lightspeed"]
            # the floor's time over ours, inverted: how many floors one of our messages costs
            ours_over_floor[r.operation] = {"wall": round(1 / summary["wall"]["median"], 3),
                                            "cpu": round(1 / summary["cpu"]["median"], 3)}
    report("transport", "BOLT 8 transport: µs per handshake (both sides) and per message (sealed + opened)",
           ops, results, start, args, {"lightspeed_over_floor": ours_over_floor}, peers)
    if not args.json:
        for name, r in ours_over_floor.items():
            floor = "EC floor" if name.startswith("handshake") else "AEAD floor"
            print(f"lightspeed ÷ {floor}, {name}: {r['cpu']:.2f}x by CPU time, {r['wall']:.2f}x by wall time")
    done(electrum)


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


if __name__ == "__main__":
    main()
