"""The fast BOLT 8 paths stay exact: one-call ``receive``, key rotation, errors, bad keys, the outbox limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.codec.features import Features
from lightspeed.codec.messages import Ping, encode_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, HandshakeError, UsageError
from lightspeed.transport import Disconnected, Handshake, NoiseTransport, PeerSession, SessionLimits
from lightspeed.transport.cipher import FrameError
from tests.support.vectors import load_vectors

KEY_I, KEY_R = b"\x11" * 32, b"\x21" * 32
ORDER = bytes.fromhex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
MESSAGE = load_vectors("bolt08.json")["message"]


def _pair() -> tuple[NoiseTransport, NoiseTransport]:
    m = MESSAGE
    sender = NoiseTransport(bytes.fromhex(m["sk"]), bytes.fromhex(m["rk"]), bytes.fromhex(m["ck"]))
    receiver = NoiseTransport(bytes.fromhex(m["rk"]), bytes.fromhex(m["sk"]), bytes.fromhex(m["ck"]))
    return sender, receiver


def test_receive_across_key_rotations_matches_the_spec_vectors() -> None:
    """1002 messages through receive(), one frame per call: every vector frame and every plaintext exact."""
    sender, receiver = _pair()
    plaintext = bytes.fromhex(MESSAGE["plaintext"])
    expected = {int(k): v for k, v in MESSAGE["outputs"].items()}
    for i in range(1002):
        frame = sender.send(plaintext)
        if i in expected:
            assert frame.hex() == expected[i], i
        assert receiver.receive(frame) == [plaintext], i
    assert receiver.buffered == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=700), min_size=1, max_size=12), st.lists(st.integers(0, 10**6), max_size=10),
       st.integers(0, 996))
def test_receive_gives_every_message_once_in_any_fragmentation(messages: list[bytes], cuts: list[int],
                                                                skip: int) -> None:
    """Batched, split and glued frames, across a key rotation (the sender starts ``skip`` messages in)."""
    sender, receiver = _pair()
    for _ in range(skip // 2):  # move both sides towards the rotation at 500 messages
        assert receiver.receive(sender.send(b"x")) == [b"x"]
    wire = sender.send_all(messages)
    points = sorted({c % (len(wire) + 1) for c in cuts})
    received: list[bytes] = []
    last = 0
    for point in [*points, len(wire)]:
        received += receiver.receive(wire[last:point])
        last = point
    assert received == messages
    assert receiver.buffered == 0


def test_receive_accepts_bytearray_and_memoryview_without_keeping_a_mutable_reference() -> None:
    sender, receiver = _pair()
    frame = bytearray(sender.send(b"hello") + sender.send(b"world"))
    half = len(frame) - 5
    assert receiver.receive(memoryview(frame)[:half]) == [b"hello"]
    frame[:half] = bytes(half)  # the caller reuses its buffer: what we buffered must not change
    assert receiver.receive(bytes(frame[half:])) == [b"world"]


def test_bad_frame_after_good_ones_keeps_the_good_ones() -> None:
    """The messages before a bad MAC were authentic: FrameError carries them; the transport is dead."""
    sender, receiver = _pair()
    good = sender.send(b"one") + sender.send(b"two")
    bad = bytearray(sender.send(b"three"))
    bad[-1] ^= 1
    with pytest.raises(FrameError) as excinfo:
        receiver.receive(good + bytes(bad))
    assert excinfo.value.messages == [b"one", b"two"]
    assert excinfo.value.field == "message body"
    assert isinstance(excinfo.value, DecodeError)
    with pytest.raises(UsageError):
        receiver.receive(b"")


def test_length_limit_at_its_boundary() -> None:
    """max_message_size N is accepted, N+1 refused from the length prefix alone."""
    sender, receiver = _pair()
    receiver.max_message_size = 100
    assert receiver.receive(sender.send(bytes(100))) == [bytes(100)]
    frame = sender.send(bytes(101))
    with pytest.raises(FrameError, match="101 bytes exceeds our limit of 100"):
        receiver.receive(frame[:18])


def test_send_refuses_65536_bytes_and_accepts_65535() -> None:
    sender, receiver = _pair()
    assert receiver.receive(sender.send(bytes(65535))) == [bytes(65535)]
    with pytest.raises(UsageError, match="65536 bytes exceeds the 65535-byte limit"):
        sender.send(bytes(65536))


def test_session_delivers_messages_before_a_bad_frame_then_closes() -> None:
    features = Features()
    a = PeerSession(Handshake.initiator(KEY_I, pubkey_from_privkey(KEY_R)), features, 0.0)
    b = PeerSession(Handshake.responder(KEY_R), features, 0.0)
    for _ in range(4):
        b.receive_data(a.data_to_send(), 0.0)
        a.receive_data(b.data_to_send(), 0.0)
    assert a.ready and b.ready
    transport = a._transport
    assert transport is not None
    good = transport.send(encode_message(Ping(num_pong_bytes=3)))
    bad = bytearray(transport.send(encode_message(Ping(num_pong_bytes=4))))
    bad[5] ^= 1
    events = b.receive_data(good + bytes(bad), 1.0)
    assert [type(e) for e in events] == [Disconnected]
    assert "transport failure" in events[0].reason  # type: ignore[union-attr]
    assert b.closed


def test_outbox_limit_at_its_boundary() -> None:
    """Exactly max_outbox_bytes may wait; one byte more disconnects."""
    features = Features()
    a = PeerSession(Handshake.initiator(KEY_I, pubkey_from_privkey(KEY_R)), features, 0.0)
    b = PeerSession(Handshake.responder(KEY_R), features, 0.0)
    for _ in range(4):
        b.receive_data(a.data_to_send(), 0.0)
        a.receive_data(b.data_to_send(), 0.0)
    assert a.ready
    frame_size = len(encode_message(Ping(num_pong_bytes=65533))) + 34  # above 65531: no pong is owed
    a.limits = SessionLimits(max_outbox_bytes=2 * frame_size)
    a.send(Ping(num_pong_bytes=65533))
    a.send(Ping(num_pong_bytes=65533))
    assert not a.closed
    data = a.data_to_send()
    assert len(data) == 2 * frame_size
    a.limits = SessionLimits(max_outbox_bytes=2 * frame_size - 1)
    a.send(Ping(num_pong_bytes=65533))
    a.send(Ping(num_pong_bytes=65533))
    assert a.closed
    assert a.data_to_send() == b""


def test_initiator_with_an_invalid_responder_key_is_a_usage_error() -> None:
    """Not a point on the curve: refused when the handshake is made, naming the argument (no traceback later)."""
    not_on_curve = b"\x02" + b"\x00" * 31 + b"\x07"  # x = 7: x^3 + 7 = 350 has no square root mod p
    with pytest.raises(UsageError, match="remote_pubkey is not a point"):
        Handshake.initiator(KEY_I, not_on_curve)
    with pytest.raises(UsageError, match="remote_pubkey is not a compressed"):
        Handshake.initiator(KEY_I, b"\x04" + pubkey_from_privkey(KEY_R)[1:])


@pytest.mark.parametrize("key", [bytes(32), ORDER], ids=["zero", "curve-order"])
def test_invalid_private_keys_are_usage_errors(key: bytes) -> None:
    with pytest.raises(UsageError, match="private key is zero or not below the curve order"):
        Handshake.responder(key)
    with pytest.raises(UsageError, match="private key is zero or not below the curve order"):
        Handshake.responder(KEY_R, ephemeral_privkey=key)


def test_received_point_not_on_the_curve_fails_act_one() -> None:
    responder = Handshake.responder(KEY_R)
    act = b"\x00" + b"\x02" + b"\x00" * 31 + b"\x07" + bytes(16)
    with pytest.raises(HandshakeError, match="ephemeral key is not a point on secp256k1"):
        responder.receive_data(act)


def test_the_static_key_is_the_same_for_every_handshake() -> None:
    first, second = Handshake.responder(KEY_R), Handshake.responder(KEY_R)
    assert first.local_pubkey == second.local_pubkey == pubkey_from_privkey(KEY_R)
