"""Property tests for BOLT 8: any fragmentation works, and garbage raises only the protocol's errors."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, HandshakeError
from lightspeed.transport import Handshake, NoiseTransport

KEY_I, KEY_R = b"\x11" * 32, b"\x21" * 32


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in [*points, len(data)]:
        out.append(data[last:p])
        last = p
    return out


def _handshake(cuts: list[int]) -> tuple[Handshake, Handshake]:
    initiator = Handshake.initiator(KEY_I, pubkey_from_privkey(KEY_R))
    responder = Handshake.responder(KEY_R)
    act2 = b"".join(responder.receive_data(piece) for piece in _split(initiator.start(), cuts))
    act3 = b"".join(initiator.receive_data(piece) for piece in _split(act2, cuts))
    for piece in _split(act3, cuts):
        responder.receive_data(piece)
    return initiator, responder


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 100), max_size=6), st.lists(st.binary(max_size=3000), max_size=5),
       st.lists(st.integers(0, 10**6), max_size=8))
def test_any_fragmentation_gives_the_same_messages(cuts: list[int], messages: list[bytes], wire_cuts: list[int]) -> None:
    initiator, responder = _handshake(cuts)
    assert initiator.complete and responder.complete
    assert responder.remote_pubkey == initiator.local_pubkey
    sender, receiver = initiator.transport(), responder.transport()
    wire = b"".join(sender.send(m) for m in messages)
    received = []
    for piece in _split(wire, wire_cuts):
        receiver.receive_data(piece)
        received.extend(receiver.messages())
    assert received == messages
    # and back the other way
    back = b"".join(receiver.send(m) for m in messages)
    sender.receive_data(back)
    assert list(sender.messages()) == messages


def test_first_message_glued_to_act_three_is_kept() -> None:
    initiator = Handshake.initiator(KEY_I, pubkey_from_privkey(KEY_R))
    responder = Handshake.responder(KEY_R)
    act3 = initiator.receive_data(responder.receive_data(initiator.start()))
    responder.receive_data(act3 + initiator.transport().send(b"init"))
    assert list(responder.transport().messages()) == [b"init"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_into_the_responder_raises_only_handshake_error(data: bytes) -> None:
    responder = Handshake.responder(KEY_R)
    try:
        responder.receive_data(data)
        responder.receive_eof()
    except HandshakeError as exc:
        assert exc.field in ("act 1", "act 3")
        return
    assert responder.complete is False or len(data) >= 116  # garbage cannot complete a handshake
    raise AssertionError("garbage was accepted")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_act_two_raises_only_handshake_error(data: bytes) -> None:
    initiator = Handshake.initiator(KEY_I, pubkey_from_privkey(KEY_R))
    initiator.start()
    try:
        initiator.receive_data(data)
        initiator.receive_eof()
    except HandshakeError as exc:
        assert exc.field == "act 2"
        return
    raise AssertionError("garbage act two was accepted")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_frames_raise_only_decode_error(data: bytes) -> None:
    transport = NoiseTransport(os.urandom(32), os.urandom(32), os.urandom(32))
    transport.receive_data(data)
    try:
        messages = list(transport.messages())
    except DecodeError as exc:
        assert exc.field in ("message length", "message body")
        return
    assert messages == []  # too short to hold even a length frame


def test_tampered_frame_is_rejected() -> None:
    initiator, responder = _handshake([])
    frame = bytearray(initiator.transport().send(b"hello"))
    frame[-1] ^= 1
    responder.transport().receive_data(bytes(frame))
    try:
        responder.transport().next_message()
    except DecodeError as exc:
        assert exc.field == "message body"
    else:
        raise AssertionError("a tampered frame was accepted")
