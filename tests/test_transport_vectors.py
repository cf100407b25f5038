"""BOLT 8 Appendix A: every initiator, responder and message-encryption vector."""

from __future__ import annotations

from typing import Any

import pytest

from lightspeed.errors import HandshakeError
from lightspeed.transport import Handshake, NoiseTransport
from tests.support.vectors import load_vectors

VECTORS = load_vectors("bolt08.json")
# What each spec error code must say (the act is checked from the code itself).
REASONS = {"READ_FAILED": "short read", "BAD_VERSION": "version", "BAD_PUBKEY": "key",
           "BAD_TAG": "MAC", "BAD_CIPHERTEXT": "MAC"}


def _run(handshake: Handshake, vector: dict[str, Any], first_output: bytes | None) -> None:
    steps = list(vector["steps"])
    if first_output is not None:
        assert first_output.hex() == steps.pop(0)["output"]
    error = vector.get("error")
    while steps:
        step = steps.pop(0)
        data = bytes.fromhex(step["input"])
        if error and not steps:
            code = error.split()[0]
            act = "act " + code[3]
            with pytest.raises(HandshakeError) as excinfo:
                out = handshake.receive_data(data)
                assert out == b""  # a short act waits for more...
                handshake.receive_eof()  # ...until the peer hangs up
            assert excinfo.value.field == act
            assert REASONS[code.split("_", 1)[1]] in excinfo.value.reason
            return
        out = handshake.receive_data(data)
        if steps and "output" in steps[0]:
            assert out.hex() == steps.pop(0)["output"]
    assert error is None
    keys = vector["keys"]
    transport = handshake.transport()
    if "sk,rk" in keys:
        assert [transport.send_key.hex(), transport.receive_key.hex()] == keys["sk,rk"]
    else:
        assert [transport.receive_key.hex(), transport.send_key.hex()] == keys["rk,sk"]


@pytest.mark.parametrize("vector", VECTORS["initiator"], ids=[v["name"] for v in VECTORS["initiator"]])
def test_initiator(vector: dict[str, Any]) -> None:
    handshake = Handshake.initiator(bytes.fromhex(vector["ls_priv"]), bytes.fromhex(vector["rs_pub"]),
                                    ephemeral_privkey=bytes.fromhex(vector["e_priv"]))
    assert handshake.local_pubkey.hex() == vector["ls_pub"]
    _run(handshake, vector, handshake.start())


@pytest.mark.parametrize("vector", VECTORS["responder"], ids=[v["name"] for v in VECTORS["responder"]])
def test_responder(vector: dict[str, Any]) -> None:
    handshake = Handshake.responder(bytes.fromhex(vector["ls_priv"]), ephemeral_privkey=bytes.fromhex(vector["e_priv"]))
    assert handshake.local_pubkey.hex() == vector["ls_pub"]
    _run(handshake, vector, None)
    if "error" not in vector:
        assert handshake.remote_pubkey is not None
        assert handshake.remote_pubkey.hex() == VECTORS["initiator"][0]["ls_pub"]


def test_vector_counts() -> None:
    assert (len(VECTORS["initiator"]), len(VECTORS["responder"])) == (5, 10)


def test_message_encryption_with_key_rotation() -> None:
    m = VECTORS["message"]
    sender = NoiseTransport(bytes.fromhex(m["sk"]), bytes.fromhex(m["rk"]), bytes.fromhex(m["ck"]))
    receiver = NoiseTransport(bytes.fromhex(m["rk"]), bytes.fromhex(m["sk"]), bytes.fromhex(m["ck"]))
    plaintext = bytes.fromhex(m["plaintext"])
    expected = {int(k): v for k, v in m["outputs"].items()}
    for i in range(max(expected) + 1):
        frame = sender.send(plaintext)
        if i in expected:
            assert frame.hex() == expected[i], i
        receiver.receive_data(frame)
        assert receiver.next_message() == plaintext
    assert receiver.next_message() is None
