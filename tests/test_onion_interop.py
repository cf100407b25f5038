"""Interop with pyln-proto's Sphinx (Core Lightning's Python library), in both directions.

pyln-proto builds correct packets only when every hop payload has the same
size (its filler is sized and placed from the wrong hops, see INTEROP.md), so
packets it builds use equal sizes; the deviation itself is pinned down by a test.
"""

from __future__ import annotations

import random

import pyln.proto.onion
import pytest
from pyln.proto.onion import RoutingOnion, SphinxHop, SphinxPath
from pyln.proto.primitives import PrivateKey as PylnPrivateKey
from pyln.proto.primitives import PublicKey as PylnPublicKey
from pyln.proto.primitives import Secret

from lightspeed.codec.bigsize import encode_bigsize
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import OnionError
from lightspeed.onion import HopPayload, OnionPacket, build_onion, peel_onion
from tests.support.pyln_compat import chacha20_stream_out_of_place

ASSOC = bytes(range(32))


@pytest.fixture(autouse=True)
def _pyln_works_on_current_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    """See tests/support/pyln_compat.py."""
    monkeypatch.setattr(pyln.proto.onion, "chacha20_stream", chacha20_stream_out_of_place)


def route(rng: random.Random, hops: int) -> tuple[list[bytes], list[bytes]]:
    privs = [rng.randbytes(31) + b"\x01" for _ in range(hops)]
    return privs, [pubkey_from_privkey(p) for p in privs]


def payload_of_size(rng: random.Random, index: int, size: int) -> bytes:
    """A valid hop payload of exactly ``size`` bytes (size >= 28), padded with odd custom records."""
    base = HopPayload(amt_to_forward_msat=1000 + index, outgoing_cltv_value=700000 + index,
                      short_channel_id=index + 1).to_bytes()
    pad = size - len(base)
    records: list[tuple[int, bytes]] = []
    if 6 + 253 <= pad < 8 + 253:  # no single record fits: the length would need 1 byte and 3 bytes
        records.append((65539, rng.randbytes(100)))
        pad -= 106
    # type 65537 takes 5 bytes as a bigsize; the length 1 byte below 253, else 3
    records.append((65537, rng.randbytes(pad - 6 if pad - 6 < 253 else pad - 8)))
    out = base + HopPayload(custom_records=tuple(records)).to_bytes()
    assert len(out) == size, (len(out), size)
    return out


def pyln_build(session_key: bytes, pubkeys: list[bytes], payloads: list[bytes]) -> bytes:
    hops = [SphinxHop(PylnPublicKey(pk), encode_bigsize(len(p)) + p) for pk, p in zip(pubkeys, payloads, strict=True)]
    return bytes(SphinxPath(hops, assocdata=ASSOC, session_key=Secret(session_key)).compile().to_bin())


def pyln_peel_all(packet: bytes, privs: list[bytes]) -> list[bytes]:
    onion: RoutingOnion | None = RoutingOnion.from_bin(packet)
    out = []
    for priv in privs:
        assert onion is not None
        payload, onion = onion.unwrap(PylnPrivateKey(priv), ASSOC)
        out.append(payload.to_bytes(include_prefix=False))
    assert onion is None
    return out


@pytest.mark.parametrize("seed", range(12))
def test_pyln_builds_ours_peels_equal_sizes(seed: int) -> None:
    rng = random.Random(seed)
    hops = (1, 2, 5, 20)[seed] if seed < 4 else rng.randint(1, 20)
    size = rng.randint(28, 1300 // hops - 32 - 3)
    privs, pubkeys = route(rng, hops)
    payloads = [payload_of_size(rng, i, size) for i in range(hops)]
    session = rng.randbytes(31) + b"\x02"
    packet = pyln_build(session, pubkeys, payloads)
    # with equal sizes pyln-proto's bytes are exactly ours
    assert packet == build_onion(session, pubkeys, payloads, ASSOC).packet.to_bytes()
    onion: OnionPacket | None = OnionPacket.from_bytes(packet)
    for i, priv in enumerate(privs):
        assert onion is not None
        peeled = peel_onion(onion, priv, ASSOC)
        assert peeled.payload == payloads[i]
        assert HopPayload.from_bytes(peeled.payload).short_channel_id == i + 1
        onion = peeled.next_packet
    assert onion is None


@pytest.mark.parametrize("seed", range(12))
def test_ours_builds_pyln_peels_any_sizes(seed: int) -> None:
    rng = random.Random(1000 + seed)
    hops = (1, 2, 5, 20)[seed] if seed < 4 else rng.randint(1, 20)
    privs, pubkeys = route(rng, hops)
    budget = 1300 - hops * (32 + 3)
    sizes = [rng.randint(28, max(28, budget // hops)) for _ in range(hops)]
    payloads = [payload_of_size(rng, i, s) for i, s in enumerate(sizes)]
    packet = build_onion(rng.randbytes(31) + b"\x03", pubkeys, payloads, ASSOC).packet.to_bytes()
    assert pyln_peel_all(packet, privs) == payloads


def test_pyln_filler_deviation_with_unequal_sizes() -> None:
    """Documents pyln-proto's bug: with unequal payload sizes its packet fails the HMAC at a later hop.

    pyln-proto sizes the filler as the sum of hops[1:] instead of hops[:-1] and
    so the last hop's tail no longer matches what the sender authenticated.
    Our builder, given the same inputs, produces a packet every hop accepts.
    """
    rng = random.Random(7)
    privs, pubkeys = route(rng, 3)
    payloads = [payload_of_size(rng, 0, 40), payload_of_size(rng, 1, 300), payload_of_size(rng, 2, 60)]
    session = b"\x41" * 32
    theirs = pyln_build(session, pubkeys, payloads)
    ours = build_onion(session, pubkeys, payloads, ASSOC).packet.to_bytes()
    assert theirs != ours
    onion: OnionPacket | None = OnionPacket.from_bytes(theirs)
    with pytest.raises(OnionError, match="hmac"):
        for priv in privs:
            assert onion is not None
            onion = peel_onion(onion, priv, ASSOC).next_packet
    # pyln-proto cannot read its own packet either
    with pytest.raises(ValueError, match="HMAC"):
        pyln_peel_all(theirs, privs)
    # ours is read by both
    assert pyln_peel_all(ours, privs) == payloads
