"""Electrum 4.3.4's side of the benchmarks, run by Debian's ``/usr/bin/python3`` (where ``electrum`` lives).

Driven by JSON lines on stdin, one reply line each on stdout:

* ``{"op": "run", "case": NAME, "params": {...}, "n": N}`` times N calls of the case
  with the same loop as ours (``_timing.time_loop``) and replies ``{"wall_ns", "cpu_ns"}``
  per call; the case is built once, untimed, on first use;
* ``{"op": "output", "case": NAME, "params": {...}}`` replies ``{"output": hex}``, what one
  call produced, so the parent checks Electrum computed the same thing as we did.

Only Electrum's own code runs in the timed calls. Its BOLT 8 transport is written
against asyncio streams; here it gets streams whose reads never block (an in-memory
pipe or a blocking socket pair), and its coroutines are stepped by hand, so no event
loop overhead is charged to it.
"""

from __future__ import annotations

import json
import socket
import sys
from decimal import Decimal
from typing import Any

from electrum import constants, ecc
from electrum.lnaddr import LnAddr, lndecode, lnencode
from electrum.lnonion import (
    OnionHopsDataSingle,
    OnionPacket,
    new_onion_packet,
    process_onion_packet,
)
from electrum.lntransport import LNResponderTransport, LNTransport
from electrum.lnutil import LnFeatures, LNPeerAddr

from _timing import time_loop

constants.set_mainnet()


# -- hand-stepped coroutines over non-blocking-in-practice streams --------------------------------

class _Suspend:
    def __await__(self):  # type: ignore[no-untyped-def]
        yield None


class _Pipe:
    def __init__(self) -> None:
        self.data = bytearray()


class _PipeReader:
    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    async def read(self, n: int) -> bytes:
        while not self.pipe.data:
            await _Suspend()
        out = bytes(self.pipe.data[:n])
        del self.pipe.data[:n]
        return out


class _PipeWriter:
    def __init__(self, pipe: _Pipe) -> None:
        self.pipe = pipe

    def write(self, data: bytes) -> None:
        self.pipe.data += data


class _SocketReader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    async def read(self, n: int) -> bytes:
        return self.sock.recv(n)


class _SocketWriter:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)


class _Connector:
    """Stands in for LNTransport's proxy: hands it our streams instead of dialling."""

    def __init__(self, reader: Any, writer: Any) -> None:
        self.reader, self.writer = reader, writer

    async def open_connection(self, host: str, port: int) -> tuple[Any, Any]:
        return self.reader, self.writer


def _step_all(*coroutines: Any) -> list[Any]:
    """Run coroutines to completion, stepping each in turn (they only wait on each other)."""
    results: list[Any] = [None] * len(coroutines)
    pending = dict(enumerate(coroutines))
    while pending:
        for i, coroutine in list(pending.items()):
            try:
                coroutine.send(None)
            except StopIteration as done:
                results[i] = done.value
                del pending[i]
    return results


def _next_now(agen: Any) -> Any:
    """The next item of an async generator whose awaits never suspend."""
    try:
        agen.__anext__().send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the reader would block")


# -- cases ------------------------------------------------------------------------------------------

KEY_I, KEY_R = b"\x11" * 32, b"\x21" * 32


def _transport_pair(reader_i: Any, writer_i: Any, reader_r: Any, writer_r: Any) -> tuple[Any, Any]:
    pub_r = ecc.ECPrivkey(KEY_R).get_public_key_bytes()
    initiator = LNTransport(KEY_I, LNPeerAddr("127.0.0.1", 9735, pub_r), proxy=None)
    initiator.proxy = _Connector(reader_i, writer_i)
    responder = LNResponderTransport(KEY_R, reader_r, writer_r)
    _step_all(initiator.handshake(), responder.handshake())
    return initiator, responder


def _in_memory_pair() -> tuple[Any, Any]:
    to_r, to_i = _Pipe(), _Pipe()
    return _transport_pair(_PipeReader(to_i), _PipeWriter(to_r), _PipeReader(to_r), _PipeWriter(to_i))


def bolt8_handshake(params: dict[str, Any]) -> Any:
    def run() -> bytes:
        initiator, _ = _in_memory_pair()
        return bytes(initiator.sk)
    return run


def bolt8_message(params: dict[str, Any]) -> Any:
    payload = bytes.fromhex(params["payload"])
    initiator, responder = _in_memory_pair()
    if params["over"] == "socket":  # the handshake needs both sides stepping; the messages do not
        a, b = socket.socketpair()
        initiator.reader, initiator.writer = _SocketReader(a), _SocketWriter(a)
        responder.reader, responder.writer = _SocketReader(b), _SocketWriter(b)
    messages = responder.read_messages()

    def run() -> bytes:
        initiator.send_bytes(payload)
        return bytes(_next_now(messages))
    return run


def bolt11_decode(params: dict[str, Any]) -> Any:
    invoice = params["invoice"]
    return lambda: lndecode(invoice).paymenthash


def bolt11_encode(params: dict[str, Any]) -> Any:
    privkey = bytes.fromhex(params["privkey"])
    features = LnFeatures(sum(1 << bit for bit in params["features"]))

    def run() -> bytes:
        addr = LnAddr(paymenthash=bytes.fromhex(params["payment_hash"]), amount=Decimal(params["amount_btc"]),
                      tags=[("d", params["description"]), ("x", params["expiry"]), ("9", features)],
                      date=params["timestamp"], payment_secret=bytes.fromhex(params["payment_secret"]))
        return lnencode(addr, privkey).encode()
    return run


def _hops(params: dict[str, Any]) -> list[Any]:
    return [OnionHopsDataSingle(is_tlv_payload=True, payload={
        "amt_to_forward": {"amt_to_forward": hop["amt_to_forward_msat"]},
        "outgoing_cltv_value": {"outgoing_cltv_value": hop["outgoing_cltv_value"]},
        "short_channel_id": {"short_channel_id": hop["short_channel_id"].to_bytes(8, "big")},
    }) for hop in params["hops"]]


def onion_build(params: dict[str, Any]) -> Any:
    pubkeys = [bytes.fromhex(k) for k in params["pubkeys"]]
    session, assoc = bytes.fromhex(params["session_key"]), bytes.fromhex(params["associated_data"])

    def run() -> bytes:
        return bytes(new_onion_packet(pubkeys, session, _hops(params), associated_data=assoc).to_bytes())
    return run


def onion_peel(params: dict[str, Any]) -> Any:
    raw, privkey = bytes.fromhex(params["packet"]), bytes.fromhex(params["privkey"])
    assoc = bytes.fromhex(params["associated_data"])

    def run() -> bytes:
        processed = process_onion_packet(OnionPacket.from_bytes(raw), assoc, privkey)
        return bytes(processed.next_packet.to_bytes())
    return run


CASES = {f.__name__: f for f in (bolt8_handshake, bolt8_message, bolt11_decode, bolt11_encode, onion_build, onion_peel)}


def main() -> None:
    built: dict[str, Any] = {}
    for line in sys.stdin:
        request = json.loads(line)
        key = json.dumps([request["case"], request.get("params", {})], sort_keys=True)
        if key not in built:
            built[key] = CASES[request["case"]](request.get("params", {}))
        fn = built[key]
        if request["op"] == "output":
            reply: dict[str, Any] = {"output": fn().hex()}
        else:
            wall, cpu = time_loop(fn, request["n"])
            reply = {"wall_ns": wall, "cpu_ns": cpu}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
