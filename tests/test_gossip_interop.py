"""Gossip against independent implementations.

* pyln-proto with pyln-bolt7's CSVs (Core Lightning's Python message codec) reads our
  signed messages field for field, and writes messages that our view accepts.
* Signatures are cross-checked with a second ECDSA implementation (OpenSSL through
  ``cryptography``): ours verify there over BOLT 7's double-SHA256, and OpenSSL's (random
  nonces, sometimes high S) verify in ours. pyln-proto has no gossip signing helpers.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pyln.spec.bolt7 as pyln_bolt7
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from pyln.proto.message import Message as PylnMessage
from pyln.proto.primitives import ShortChannelId

from lightspeed.crypto.secp256k1 import HALF_ORDER, verify_compact
from lightspeed.gossip import IPV4, Address, NetworkView, Status
from lightspeed.gossip.addresses import decode_addresses
from lightspeed.invoice.fields import format_short_channel_id
from tests.gossip_network import (
    CHAIN,
    Utxos,
    announcement,
    funding_key,
    node_announcement,
    node_id,
    node_key,
    scid,
    update,
)

pytestmark = pytest.mark.interop
NS = pyln_bolt7.namespace
NOW = 1_700_000_000


def pyln_read(raw: bytes) -> dict[str, Any]:
    message = PylnMessage.read(NS, io.BytesIO(raw))
    assert message is not None
    return dict(message.fields)


def pyln_write(name: str, **fields: Any) -> bytes:
    out = io.BytesIO()
    PylnMessage(NS.get_msgtype(name), **fields).write(out)
    return out.getvalue()


def openssl_key(privkey: bytes) -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(int.from_bytes(privkey, "big"), ec.SECP256K1())


def openssl_verifies(pubkey: bytes, signature: bytes, signed: bytes) -> bool:
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), pubkey)
    h = hashlib.sha256(hashlib.sha256(signed).digest()).digest()
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    try:
        key.verify(der, h, ec.ECDSA(Prehashed(hashes.SHA256())))
    except InvalidSignature:
        return False
    return True


def openssl_sign(privkey: bytes, signed: bytes) -> bytes:
    h = hashlib.sha256(hashlib.sha256(signed).digest()).digest()
    r, s = decode_dss_signature(openssl_key(privkey).sign(h, ec.ECDSA(Prehashed(hashes.SHA256()))))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def test_pyln_reads_our_signed_messages_and_openssl_checks_the_signatures() -> None:
    short_id = scid(812_345, 678, 1)
    ann = announcement(short_id, 1, 2)
    fields = pyln_read(ann)
    assert ShortChannelId.from_int(fields["short_channel_id"]).to_int() == short_id
    assert str(ShortChannelId.from_int(fields["short_channel_id"])) == format_short_channel_id(
        short_id
    )
    assert sorted((fields["node_id_1"], fields["node_id_2"])) == [
        fields["node_id_1"],
        fields["node_id_2"],
    ]
    signed = ann[2 + 256 :]
    for sig, key in (
        ("node_signature_1", "node_id_1"),
        ("node_signature_2", "node_id_2"),
        ("bitcoin_signature_1", "bitcoin_key_1"),
        ("bitcoin_signature_2", "bitcoin_key_2"),
    ):
        assert openssl_verifies(fields[key], fields[sig], signed), sig
    assert not openssl_verifies(fields["node_id_1"], fields["node_signature_2"], signed)

    upd = update(short_id, 2, 1, NOW, fee_base_msat=321, htlc_maximum_msat=7_000_000)
    fields = pyln_read(upd)
    assert (fields["fee_base_msat"], fields["htlc_maximum_msat"], fields["timestamp"]) == (
        321,
        7_000_000,
        NOW,
    )
    assert fields["message_flags"] == 1 and fields["channel_flags"] == (
        0 if node_id(2) < node_id(1) else 1
    )
    assert openssl_verifies(node_id(2), fields["signature"], upd[66:])

    node = node_announcement(
        3,
        NOW,
        alias="carol",
        rgb_color=b"\x10\x20\x30",
        addresses=[Address(IPV4, "192.0.2.1", 9735)],
    )
    fields = pyln_read(node)
    assert bytes(fields["alias"]).rstrip(b"\0") == b"carol" and fields["rgb_color"] == [
        0x10,
        0x20,
        0x30,
    ]
    assert decode_addresses(bytes(fields["addresses"])).addresses == (
        Address(IPV4, "192.0.2.1", 9735),
    )
    assert openssl_verifies(node_id(3), fields["signature"], node[66:])


def _pyln_announcement(short_id: int, a: int, b: int) -> bytes:
    """A channel_announcement written by pyln and signed by OpenSSL."""
    (n1, k1), (n2, k2) = sorted([(node_id(a), a), (node_id(b), b)])
    fields = {
        "features": [],
        "chain_hash": CHAIN,
        "short_channel_id": short_id,
        "node_id_1": n1,
        "node_id_2": n2,
        "bitcoin_key_1": openssl_pub(funding_key(k1)),
        "bitcoin_key_2": openssl_pub(funding_key(k2)),
    }
    zero = bytes(64)
    unsigned = pyln_write(
        "channel_announcement",
        node_signature_1=zero,
        node_signature_2=zero,
        bitcoin_signature_1=zero,
        bitcoin_signature_2=zero,
        **fields,
    )
    signed = unsigned[2 + 256 :]
    return pyln_write(
        "channel_announcement",
        node_signature_1=openssl_sign(node_key(k1), signed),
        node_signature_2=openssl_sign(node_key(k2), signed),
        bitcoin_signature_1=openssl_sign(funding_key(k1), signed),
        bitcoin_signature_2=openssl_sign(funding_key(k2), signed),
        **fields,
    )


def openssl_pub(privkey: bytes) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return (
        openssl_key(privkey).public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    )


def _pyln_update(short_id: int, a: int, b: int, timestamp: int, fee_base_msat: int) -> bytes:
    fields = {
        "chain_hash": CHAIN,
        "short_channel_id": short_id,
        "timestamp": timestamp,
        "message_flags": 1,
        "channel_flags": 0 if node_id(a) < node_id(b) else 1,
        "cltv_expiry_delta": 34,
        "htlc_minimum_msat": 1,
        "fee_base_msat": fee_base_msat,
        "fee_proportional_millionths": 7,
        "htlc_maximum_msat": 99_000_000,
    }
    unsigned = pyln_write("channel_update", signature=bytes(64), **fields)
    return pyln_write(
        "channel_update", signature=openssl_sign(node_key(a), unsigned[66:]), **fields
    )


@settings(max_examples=15, deadline=None)
@given(fees=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
def test_our_view_accepts_pyln_written_openssl_signed_gossip(fees: list[int]) -> None:
    """OpenSSL picks random nonces and does not normalise S: high-S signatures get through too."""
    utxos = Utxos()
    short_id = scid(650_000, 9, 0)
    utxos.fund(short_id, 4, 5)
    view = NetworkView(CHAIN, utxos)
    assert view.receive(_pyln_announcement(short_id, 4, 5), NOW).status is Status.ACCEPTED
    for i, fee in enumerate(fees):
        assert view.receive(_pyln_update(short_id, 4, 5, NOW + i, fee), NOW).accepted
    policy = next(iter(view.channel_graph().channels_into(node_id(5)))).policy
    assert (policy.fee_base_msat, policy.cltv_expiry_delta, policy.htlc_maximum_msat) == (
        fees[-1],
        34,
        99_000_000,
    )
    # Node 5's own update with its direction bit flipped claims node 4's direction.
    signed_by_5 = _pyln_update(short_id, 5, 4, NOW + 50, 1)
    flags_at = 66 + 32 + 8 + 4 + 1  # channel_flags
    forged = (
        signed_by_5[:flags_at] + bytes([signed_by_5[flags_at] ^ 1]) + signed_by_5[flags_at + 1 :]
    )
    assert view.receive(forged, NOW).status is Status.INVALID


def test_high_s_signature_from_openssl_is_accepted() -> None:
    """libsecp256k1 alone refuses high S; the view normalises S first (BOLT 7 malleability note)."""
    utxos = Utxos()
    short_id = scid(650_001, 1, 0)
    utxos.fund(short_id, 4, 5)
    view = NetworkView(CHAIN, utxos)
    assert view.receive(_pyln_announcement(short_id, 4, 5), NOW).accepted
    for attempt in range(200):
        raw = _pyln_update(short_id, 4, 5, NOW + attempt, attempt)
        if int.from_bytes(raw[34:66], "big") > HALF_ORDER:
            break
    else:
        pytest.fail("OpenSSL gave 200 low-S signatures in a row")
    assert not verify_compact(
        node_id(4), raw[2:66], hashlib.sha256(hashlib.sha256(raw[66:]).digest()).digest()
    )
    assert view.receive(raw, NOW).accepted
