"""signmessage/verifymessage in the LND/Core Lightning format, checked against their published vectors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.chain import RegtestChain
from lightspeed.codec import zbase32
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.crypto.signed_message import recover_signer, sign_message
from lightspeed.errors import DecodeError
from lightspeed.node.node import Node

ONE_KEY = (1).to_bytes(32, "big")
# rust-lightning's lightning/src/util/message_signing.rs test_sign: ONE_KEY signs "test message".
LDK_SIGNATURE = ("d9tibmnic9t5y41hg7hkakdcra94akas9ku3rmmj4ag9mritc8ok4p5qzefs78c9pqfhpuftqqzhydbdwfg7u6w6wdxcqpqn4sj"
                 "4e73e")
# Core Lightning's tests/test_misc.py test_signmessage corpus: signatures LND users made with lncli.
LND_CORPUS = [
    ("is this compatible?",
     "rbgfioj114mh48d8egqx8o9qxqw4fmhe8jbeeabdioxnjk8z3t1ma1hu1fiswpakgucwwzwo6ofycffbsqusqdimugbh41n1g698hr9t",
     "02b80cabdf82638aac86948e4c06e82064f547768dcef977677b9ea931ea75bab5"),
    ("hi",
     "rnrphcjswusbacjnmmmrynh9pqip7sy5cx695h6mfu64iac6qmcmsd8xnsyczwmpqp9shqkth3h4jmkgyqu5z47jfn1q7gpxtaqpx4xg",
     "02de60d194e1ca5947b59fe8e2efd6aadeabfb67f2e89e13ae1a799c1e08e4a43b"),
    ("hi",
     "ry8bbsopmduhxy3dr5d9ekfeabdpimfx95kagdem7914wtca79jwamtbw4rxh69hg7n6x9ty8cqk33knbxaqftgxsfsaeprxkn1k48p3",
     "022b8ece90ee891cbcdac0c1cc6af46b73c47212d8defbce80265ac81a6b794931"),
]


def test_signing_matches_rust_lightning_byte_for_byte() -> None:
    assert sign_message(ONE_KEY, b"test message") == LDK_SIGNATURE
    assert recover_signer(b"test message", LDK_SIGNATURE) == pubkey_from_privkey(ONE_KEY)


@pytest.mark.parametrize(("message", "signature", "pubkey"), LND_CORPUS)
def test_lnd_signatures_recover_their_signer(message: str, signature: str, pubkey: str) -> None:
    assert recover_signer(message.encode(), signature).hex() == pubkey
    assert recover_signer((message + "!").encode(), signature).hex() != pubkey


def test_a_malformed_signature_is_a_decode_error_naming_the_field() -> None:
    with pytest.raises(DecodeError, match="signature: character 'l'"):
        recover_signer(b"hi", "l" + LDK_SIGNATURE[1:])
    with pytest.raises(DecodeError, match="must encode 65 bytes, not 64"):
        recover_signer(b"hi", zbase32.encode(bytes(64)))
    with pytest.raises(DecodeError, match="recovery byte 0, not 27-34"):
        recover_signer(b"hi", zbase32.encode(bytes(65)))


@given(st.binary(max_size=80))
def test_zbase32_round_trips(data: bytes) -> None:
    text = zbase32.encode(data)
    assert len(text) == (len(data) * 8 + 4) // 5 and zbase32.decode(text) == data


@given(st.text(alphabet="ybndrfg8ejkmcpqxot1uwisza345h769", max_size=120))
def test_zbase32_decodes_only_what_encode_writes(text: str) -> None:
    try:
        data = zbase32.decode(text)
    except DecodeError:
        return
    assert zbase32.encode(data) == text


def test_sign_and_verify_over_rest() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, bob = (Node(sha256(b"ops17m " + n), chain, sha256(b"wm " + n)) for n in (b"alice", b"bob"))
        token = "m" * 32
        headers = {"Authorization": f"Bearer {token}"}

        def client(node: Node) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ApiContext(node), token)),
                                     base_url="http://node", headers=headers)

        async with client(alice) as a, client(bob) as b:
            signed = (await a.post("/v1/messages/sign", json={"message": "I run this node"})).json()
            assert recover_signer(b"I run this node", signed["signature"]) == alice.node_id
            body = {"message": "I run this node", "signature": signed["signature"]}
            # Bob has never heard of Alice: the signature recovers her key but is not vouched for.
            assert (await b.post("/v1/messages/verify", json=body)).json() == {
                "valid": False, "pubkey": alice.node_id.hex()}
            checked = await b.post("/v1/messages/verify", json={**body, "pubkey": alice.node_id.hex()})
            assert checked.json() == {"valid": True, "pubkey": alice.node_id.hex()}
            other = await b.post("/v1/messages/verify", json={**body, "message": "I run that node",
                                                              "pubkey": alice.node_id.hex()})
            assert other.json()["valid"] is False
            bad = await b.post("/v1/messages/verify", json={**body, "signature": "0" * 104})
            assert bad.status_code == 400 and bad.json()["error"]["field"] == "signature"
            port = await bob.start()
            await alice.start()
            await alice.connect("127.0.0.1", port, bob.node_id)
            for _ in range(200):
                if alice.node_id in bob.peer_ids():
                    break
                await asyncio.sleep(0.02)
            # Now Alice is Bob's peer: a node he knows.
            assert (await b.post("/v1/messages/verify", json=body)).json()["valid"] is True
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
