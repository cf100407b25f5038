"""Hypothesis properties for BOLT 4: round trips, attribution, and "bad bytes raise only DecodeError"."""

from __future__ import annotations

import contextlib
import hashlib
import hmac

from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.crypto.secp256k1 import CURVE_ORDER, pubkey_from_privkey
from lightspeed.errors import DecodeError, OnionError
from lightspeed.onion import (
    BlindedPath,
    EncryptedDataTlv,
    FailureCode,
    FailureMessage,
    ForwardOnionMessage,
    HopPayload,
    HtlcOnionFailure,
    OnionMessage,
    OnionMessagePayload,
    OnionPacket,
    PaymentConstraints,
    PaymentRelay,
    ReceivedOnionMessage,
    add_attribution,
    build_onion,
    build_onion_message,
    create_blinded_path,
    create_failure_packet,
    decode_failure_packet,
    generate_key,
    peel_onion,
    peel_onion_message,
    process_htlc_onion,
    unblind_hop,
    verify_attribution,
    wrap_failure_packet,
)
from lightspeed.onion.failure import FAILURE_FIELDS
from lightspeed.onion.sphinx import ecdh

privkeys = st.integers(min_value=1, max_value=CURVE_ORDER - 1).map(lambda k: k.to_bytes(32, "big"))
u64 = st.integers(min_value=0, max_value=2**64 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
points = privkeys.map(pubkey_from_privkey)


@st.composite
def hop_payloads(draw: st.DrawFn) -> HopPayload:
    has_data = draw(st.booleans())
    custom = draw(st.dictionaries(st.integers(min_value=65537, max_value=2**32).map(lambda t: t | 1),
                                  st.binary(max_size=40), max_size=3))
    return HopPayload(
        amt_to_forward_msat=draw(st.none() | u64),
        outgoing_cltv_value=draw(st.none() | u32),
        short_channel_id=draw(st.none() | u64),
        payment_secret=draw(st.binary(min_size=32, max_size=32)) if has_data else None,
        total_msat=draw(u64) if has_data else None,
        payment_metadata=draw(st.none() | st.binary(max_size=40)),
        encrypted_recipient_data=draw(st.none() | st.binary(max_size=60)),
        current_path_key=draw(st.none() | points),
        total_amount_msat=draw(st.none() | u64),
        custom_records=tuple(sorted(custom.items())),
    )


@given(hop_payloads())
def test_hop_payload_round_trip(payload: HopPayload) -> None:
    assert HopPayload.from_bytes(payload.to_bytes()) == payload


@given(st.binary(max_size=300))
def test_hop_payload_decoder_raises_only_decode_error(data: bytes) -> None:
    try:
        payload = HopPayload.from_bytes(data)
    except DecodeError:
        return
    # anything accepted is canonical: it re-encodes to the same bytes
    assert payload.to_bytes() == data


@given(st.binary(max_size=1400))
def test_packet_parser_raises_only_onion_error(data: bytes) -> None:
    for size in (1300, None):
        try:
            packet = OnionPacket.from_bytes(data, size)
        except OnionError:
            continue
        assert packet.to_bytes() == data


@settings(max_examples=60, deadline=None)
@given(privkeys, privkeys, st.binary(min_size=1300, max_size=1300), st.binary(max_size=32))
def test_peel_with_valid_hmac_over_garbage_raises_only_onion_error(
    node: bytes, ephemeral: bytes, routing: bytes, assoc: bytes
) -> None:
    """Authentic but arbitrary routing info: the length checks must hold, never an IndexError."""
    public_key = pubkey_from_privkey(ephemeral)
    mu = generate_key(b"mu", ecdh(node, public_key))
    mac = hmac.new(mu, routing + assoc, hashlib.sha256).digest()
    try:
        peeled = peel_onion(OnionPacket(0, public_key, routing, mac), node, assoc)
    except OnionError:
        return
    assert len(peeled.payload) >= 2
    if peeled.next_packet is not None:
        assert len(peeled.next_packet.to_bytes()) == 1366


@st.composite
def routes(draw: st.DrawFn) -> tuple[list[bytes], list[bytes]]:
    hops = draw(st.integers(min_value=1, max_value=20))
    budget = 1300 // hops - 32 - 3
    keys = draw(st.lists(privkeys, min_size=hops, max_size=hops))
    payloads = [draw(st.binary(min_size=2, max_size=min(budget, 400))) for _ in range(hops)]
    return keys, payloads


@settings(max_examples=40, deadline=None)
@given(routes(), privkeys, st.binary(max_size=32))
def test_build_then_peel_every_hop(route: tuple[list[bytes], list[bytes]], session: bytes, assoc: bytes) -> None:
    keys, payloads = route
    built = build_onion(session, [pubkey_from_privkey(k) for k in keys], payloads, assoc)
    packet: OnionPacket | None = OnionPacket.from_bytes(built.packet.to_bytes())
    for index, key in enumerate(keys):
        assert packet is not None
        peeled = peel_onion(packet, key, assoc)
        assert peeled.payload == payloads[index]
        assert peeled.shared_secret == built.shared_secrets[index]
        packet = peeled.next_packet
    assert packet is None


@settings(max_examples=40, deadline=None)
@given(routes(), privkeys, st.integers(min_value=0, max_value=1365), st.integers(min_value=1, max_value=255))
def test_any_flipped_byte_fails_the_first_hop(
    route: tuple[list[bytes], list[bytes]], session: bytes, position: int, flip: int
) -> None:
    keys, payloads = route
    raw = bytearray(build_onion(session, [pubkey_from_privkey(k) for k in keys], payloads, b"").packet.to_bytes())
    raw[position] ^= flip
    try:
        peel_onion(OnionPacket.from_bytes(bytes(raw)), keys[0], b"")
    except OnionError:
        return
    raise AssertionError("a corrupted packet was accepted")


@st.composite
def failures(draw: st.DrawFn) -> FailureMessage:
    code = draw(st.sampled_from(list(FailureCode)))
    values: dict[str, object] = {}
    for name, kind in FAILURE_FIELDS.get(code, ()):
        if kind == "sha256":
            values[name] = draw(st.binary(min_size=32, max_size=32))
        elif kind == "update":
            values[name] = draw(st.binary(max_size=140))
        elif kind == "u16":
            values[name] = draw(st.integers(min_value=0, max_value=0xFFFF))
        elif kind == "u32":
            values[name] = draw(u32)
        elif kind == "u64":
            values[name] = draw(u64)
        else:
            values[name] = draw(u64)
    tlvs = draw(st.dictionaries(st.integers(min_value=1, max_value=2**20).map(lambda t: t | 1),
                                st.binary(max_size=20), max_size=2))
    return FailureMessage(code, tlvs=tuple(sorted(tlvs.items())), **values)  # type: ignore[arg-type]


@given(failures())
def test_failure_message_round_trip(failure: FailureMessage) -> None:
    assert FailureMessage.from_bytes(failure.to_bytes()) == failure


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20, unique=True), st.data())
def test_failure_attributed_to_the_failing_hop(secrets: list[bytes], data: st.DataObject) -> None:
    failing = data.draw(st.integers(min_value=0, max_value=len(secrets) - 1))
    failure = data.draw(failures())
    packet = create_failure_packet(secrets[failing], failure.to_bytes(), padded_length=max(256, len(failure.to_bytes())))
    for secret in reversed(secrets[:failing]):
        packet = wrap_failure_packet(secret, packet)
    attributed = decode_failure_packet(secrets, packet)
    assert attributed.hop_index == failing
    assert attributed.failure == failure


@given(st.binary(max_size=300))
def test_failure_message_decoder_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        FailureMessage.from_bytes(data)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=5), st.binary(max_size=400))
def test_failure_packet_decoder_raises_only_onion_error(secrets: list[bytes], packet: bytes) -> None:
    with contextlib.suppress(OnionError):
        decode_failure_packet(secrets, packet)


@given(st.binary(max_size=300))
def test_blinding_and_message_decoders_raise_only_decode_error(data: bytes) -> None:
    for decoder in (EncryptedDataTlv.from_bytes, BlindedPath.from_bytes, OnionMessage.from_bytes,
                    OnionMessagePayload.from_bytes):
        with contextlib.suppress(DecodeError):
            decoder(data)


@st.composite
def encrypted_data(draw: st.DrawFn) -> EncryptedDataTlv:
    return EncryptedDataTlv(
        padding=draw(st.none() | st.binary(max_size=20)),
        short_channel_id=draw(st.none() | u64),
        next_node_id=draw(st.none() | points),
        path_id=draw(st.none() | st.binary(max_size=32)),
        next_path_key_override=draw(st.none() | points),
        payment_relay=draw(st.none() | st.builds(PaymentRelay, st.integers(0, 0xFFFF), u32, u32)),
        payment_constraints=draw(st.none() | st.builds(PaymentConstraints, u32, u64)),
        allowed_features=draw(st.none() | st.binary(max_size=4)),
    )


@given(encrypted_data())
def test_encrypted_data_round_trip(data: EncryptedDataTlv) -> None:
    assert EncryptedDataTlv.from_bytes(data.to_bytes()) == data


@settings(max_examples=30, deadline=None)
@given(st.lists(privkeys, min_size=1, max_size=6, unique=True), privkeys, st.data())
def test_blinded_path_unblinds_hop_by_hop(keys: list[bytes], session: bytes, data: st.DataObject) -> None:
    tlvs = [data.draw(encrypted_data()) for _ in keys]
    tlvs = [EncryptedDataTlv(path_id=t.path_id, padding=t.padding, payment_relay=t.payment_relay) for t in tlvs]
    path = create_blinded_path(session, [pubkey_from_privkey(k) for k in keys], tlvs)
    assert BlindedPath.from_bytes(path.to_bytes()) == path
    path_key = path.first_path_key
    for key, tlv, hop in zip(keys, tlvs, path.hops, strict=True):
        unblinded = unblind_hop(key, path_key, hop.encrypted_recipient_data)
        assert unblinded.data == tlv
        path_key = unblinded.next_path_key


@settings(max_examples=25, deadline=None)
@given(st.lists(privkeys, min_size=1, max_size=8, unique=True), privkeys, privkeys, st.binary(max_size=2000))
def test_onion_message_delivered_along_any_path(keys: list[bytes], path_session: bytes, session: bytes,
                                                body: bytes) -> None:
    nodes = [pubkey_from_privkey(k) for k in keys]
    tlvs = [EncryptedDataTlv(next_node_id=n) for n in nodes[1:]] + [EncryptedDataTlv(path_id=b"me")]
    path = create_blinded_path(path_session, nodes, tlvs)
    first, message = build_onion_message(session, path, OnionMessagePayload(records=((65, body),)))
    assert first == nodes[0]
    for index, key in enumerate(keys):
        result = peel_onion_message(key, OnionMessage.from_bytes(message.to_bytes()))
        if index < len(keys) - 1:
            assert isinstance(result, ForwardOnionMessage) and result.next_node_id == nodes[index + 1]
            message = result.message
        else:
            assert isinstance(result, ReceivedOnionMessage)
            assert result.path_id == b"me" and result.payload.records == ((65, body),)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=1500), privkeys, st.none() | points)
def test_processing_arbitrary_htlc_onions_raises_only_onion_error(onion: bytes, node: bytes,
                                                                  path_key: bytes | None) -> None:
    try:
        process_htlc_onion(onion, node, b"h" * 32, 1000, 800_000, path_key)
    except HtlcOnionFailure as exc:
        assert exc.failure.is_badonion or exc.failure.code in (FailureCode.INVALID_ONION_PAYLOAD,)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), privkeys)
def test_arbitrary_onion_messages_raise_only_onion_error(data: bytes, node: bytes) -> None:
    raw = b"\x02\x01" + pubkey_from_privkey(node) + len(data).to_bytes(2, "big") + data
    for candidate in (data, raw):
        with contextlib.suppress(DecodeError):
            peel_onion_message(node, OnionMessage.from_bytes(candidate))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=20, unique=True), st.data())
def test_attribution_names_the_hop_that_tampered(secrets: list[bytes], data: st.DataObject) -> None:
    """Hold times come back in route order; a hop corrupting the data is blamed (or its neighbour)."""
    failing = data.draw(st.integers(min_value=0, max_value=len(secrets) - 1))
    holds = data.draw(st.lists(u32, min_size=len(secrets), max_size=len(secrets)))
    packet = create_failure_packet(secrets[failing], FailureMessage(FailureCode.TEMPORARY_NODE_FAILURE).to_bytes())
    message = wrap_failure_packet(secrets[failing], packet)  # the erring hop's plaintext
    attribution = add_attribution(secrets[failing], message, holds[failing])
    tamperer = data.draw(st.none() | st.integers(min_value=0, max_value=failing))

    def tamper(blob: bytes) -> bytes:  # flips a bit of the tamperer's own (obfuscated) hold time
        return bytes([blob[0] ^ 0x80]) + blob[1:]

    if tamperer == failing:
        attribution = tamper(attribution)
    for index in range(failing - 1, -1, -1):
        attribution = add_attribution(secrets[index], packet, holds[index], attribution)
        packet = wrap_failure_packet(secrets[index], packet)
        if tamperer == index:
            attribution = tamper(attribution)
    result = verify_attribution(secrets, packet, attribution, final_hop=failing)
    assert decode_failure_packet(secrets, packet).hop_index == failing
    if tamperer is None:
        assert result.hold_times == tuple(holds[: failing + 1]) and result.first_invalid_hop is None
    else:
        assert result.first_invalid_hop is not None and result.first_invalid_hop <= tamperer
