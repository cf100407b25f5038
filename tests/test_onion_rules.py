"""BOLT 4 reader requirements, one test per rule: hop payload presence, packet checks,
failure codes and flags, blinded pay info, onion-message forwarding rules and reply paths."""

from __future__ import annotations

import hashlib

import pytest

from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import DecodeError, OnionError, UsageError
from lightspeed.onion import (
    BADONION,
    NODE,
    PERM,
    UPDATE,
    EncryptedDataTlv,
    FailureCode,
    FailureMessage,
    ForwardOnionMessage,
    HopPayload,
    HtlcOnionFailure,
    InvalidHopPayload,
    OnionMessage,
    OnionMessagePayload,
    OnionPacket,
    PaymentConstraints,
    PaymentRelay,
    ReceivedOnionMessage,
    ReceiveHtlc,
    aggregate_payment_relay,
    build_onion,
    build_onion_message,
    check_hop_payload,
    create_blinded_path,
    create_failure_packet,
    create_reply_path,
    decode_failure_packet,
    final_total_msat,
    peel_onion,
    peel_onion_message,
    process_htlc_onion,
    wrap_failure_packet,
)
from lightspeed.onion.failure import FAILURE_FIELDS
from tests.support.vectors import load_vectors

KEYS = [bytes([i + 1]) * 32 for i in range(4)]
NODES = [pubkey_from_privkey(k) for k in KEYS]
PATH_KEY = NODES[3]
FORWARD = HopPayload(amt_to_forward_msat=1000, outgoing_cltv_value=800_000, short_channel_id=42)
FINAL = HopPayload(amt_to_forward_msat=1000, outgoing_cltv_value=800_000, payment_secret=b"s" * 32, total_msat=3000)


# --- hop payload presence rules -------------------------------------------------------------

def test_plain_forward_and_final_payloads_pass() -> None:
    check_hop_payload(FORWARD, is_final=False, update_path_key=False)
    check_hop_payload(FINAL, is_final=True, update_path_key=False)
    assert final_total_msat(FINAL) == 3000
    assert final_total_msat(HopPayload(amt_to_forward_msat=7, outgoing_cltv_value=1)) == 7


@pytest.mark.parametrize(
    ("payload", "is_final", "tlv_type"),
    [
        (HopPayload(outgoing_cltv_value=1, short_channel_id=1), False, 2),
        (HopPayload(amt_to_forward_msat=1, short_channel_id=1), False, 4),
        (HopPayload(amt_to_forward_msat=1, outgoing_cltv_value=1), False, 6),
        (HopPayload(outgoing_cltv_value=1), True, 2),
        (HopPayload(amt_to_forward_msat=1, outgoing_cltv_value=1, current_path_key=PATH_KEY), True, 12),
    ],
)
def test_unblinded_payload_missing_or_extra_field(payload: HopPayload, is_final: bool, tlv_type: int) -> None:
    with pytest.raises(InvalidHopPayload) as info:
        check_hop_payload(payload, is_final=is_final, update_path_key=False)
    assert info.value.tlv_type == tlv_type


def test_unblinded_payload_with_update_path_key_fails() -> None:
    with pytest.raises(InvalidHopPayload):
        check_hop_payload(FORWARD, is_final=False, update_path_key=True)


def test_blinded_introduction_point_needs_current_path_key() -> None:
    intro = HopPayload(encrypted_recipient_data=b"x" * 20, current_path_key=PATH_KEY)
    check_hop_payload(intro, is_final=False, update_path_key=False)
    with pytest.raises(InvalidHopPayload, match="missing at the introduction point"):
        check_hop_payload(HopPayload(encrypted_recipient_data=b"x"), is_final=False, update_path_key=False)
    # BOLT #4: with a path_key in update_add_htlc, current_path_key MUST NOT be present
    with pytest.raises(InvalidHopPayload, match="carries a path_key"):
        check_hop_payload(intro, is_final=False, update_path_key=True)


def test_blinded_forward_allows_only_its_two_fields() -> None:
    check_hop_payload(HopPayload(encrypted_recipient_data=b"x"), is_final=False, update_path_key=True)
    with pytest.raises(InvalidHopPayload) as info:
        check_hop_payload(HopPayload(encrypted_recipient_data=b"x", amt_to_forward_msat=5), is_final=False,
                          update_path_key=True)
    assert info.value.tlv_type == 2


def test_blinded_final_needs_amount_expiry_and_total() -> None:
    good = HopPayload(encrypted_recipient_data=b"x", amt_to_forward_msat=5, outgoing_cltv_value=9, total_amount_msat=5)
    check_hop_payload(good, is_final=True, update_path_key=True)
    with pytest.raises(InvalidHopPayload) as info:
        check_hop_payload(HopPayload(encrypted_recipient_data=b"x", amt_to_forward_msat=5, outgoing_cltv_value=9),
                          is_final=True, update_path_key=True)
    assert info.value.tlv_type == 18
    with pytest.raises(InvalidHopPayload) as info:
        check_hop_payload(HopPayload(encrypted_recipient_data=b"x", amt_to_forward_msat=5, outgoing_cltv_value=9,
                                     total_amount_msat=5, short_channel_id=1), is_final=True, update_path_key=True)
    assert info.value.tlv_type == 6


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (bytes.fromhex("0202007b"), "amt_to_forward"),  # tu64 with a leading zero
        (bytes.fromhex("0603010203"), "short_channel_id"),  # not 8 bytes
        (bytes.fromhex("0802aabb"), "payment_data"),  # shorter than the secret
        (bytes.fromhex("0c0102"), "current_path_key"),  # not a point
        (bytes.fromhex("140100"), "payload"),  # unknown even type 20
        (bytes.fromhex("04020001"), "outgoing_cltv_value"),
        (bytes.fromhex("0401010201"), "payload"),  # types not increasing
    ],
)
def test_malformed_hop_payload_names_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(InvalidHopPayload) as info:
        HopPayload.from_bytes(raw)
    assert info.value.field.startswith(field)


def test_hop_payload_writer_refuses_half_payment_data() -> None:
    with pytest.raises(UsageError):
        HopPayload(payment_secret=b"s" * 32).to_bytes()


# --- packet checks -------------------------------------------------------------------------

def _packet() -> bytes:
    return build_onion(b"\x41" * 32, NODES[:2], [FORWARD.to_bytes(), FINAL.to_bytes()], b"h" * 32).packet.to_bytes()


def test_packet_version_and_key_and_size_checks() -> None:
    raw = _packet()
    with pytest.raises(OnionError, match="version"):
        OnionPacket.from_bytes(b"\x01" + raw[1:])
    with pytest.raises(OnionError, match="public_key"):
        OnionPacket.from_bytes(raw[:1] + b"\x04" + raw[2:])
    with pytest.raises(OnionError, match="public_key"):
        OnionPacket.from_bytes(raw[:1] + b"\x02" + b"\xff" * 32 + raw[34:])
    with pytest.raises(OnionError, match="onion_packet"):
        OnionPacket.from_bytes(raw[:-1])


def test_peel_rejects_wrong_key_and_wrong_payment_hash() -> None:
    packet = OnionPacket.from_bytes(_packet())
    with pytest.raises(OnionError, match="hmac"):
        peel_onion(packet, KEYS[1], b"h" * 32)
    with pytest.raises(OnionError, match="hmac"):
        peel_onion(packet, KEYS[0], b"x" * 32)
    first = peel_onion(packet, KEYS[0], b"h" * 32)
    assert HopPayload.from_bytes(first.payload) == FORWARD
    assert first.next_packet is not None
    assert HopPayload.from_bytes(peel_onion(first.next_packet, KEYS[1], b"h" * 32).payload) == FINAL


def test_builder_enforces_the_size_bound_not_the_hop_count() -> None:
    build_onion(b"\x41" * 32, NODES[:1], [b"\x01\x00" * 632], b"")  # 1264 + 3 + 32 = 1299 bytes fits
    with pytest.raises(UsageError):
        build_onion(b"\x41" * 32, NODES[:1], [b"\x01\x00" * 633], b"")
    with pytest.raises(UsageError):
        build_onion(b"\x41" * 32, NODES[:2], [FORWARD.to_bytes()], b"")


# --- failures -------------------------------------------------------------------------------

def test_every_failure_code_has_bolt_flags() -> None:
    assert FailureCode.INVALID_ONION_HMAC == BADONION | PERM | 5
    assert FailureCode.TEMPORARY_CHANNEL_FAILURE == UPDATE | 7
    assert FailureCode.PERMANENT_NODE_FAILURE == PERM | NODE | 2
    assert len(FailureCode) == 22
    message = FailureMessage(FailureCode.FEE_INSUFFICIENT, htlc_msat=5, channel_update=b"u" * 10)
    assert message.has_update and not message.is_permanent and not message.is_badonion


@pytest.mark.parametrize("code", list(FailureCode))
def test_each_failure_code_round_trips_with_its_fields(code: FailureCode) -> None:
    values = {name: (b"\x07" * 32 if kind == "sha256" else b"upd" if kind == "update" else 300)
              for name, kind in FAILURE_FIELDS.get(code, ())}
    message = FailureMessage(code, **values)  # type: ignore[arg-type]
    raw = message.to_bytes()
    assert raw[:2] == code.to_bytes(2, "big")
    assert FailureMessage.from_bytes(raw) == message
    if values:
        with pytest.raises(DecodeError):
            FailureMessage.from_bytes(raw[:-1])


def test_unknown_failure_code_keeps_its_data_and_flags() -> None:
    message = FailureMessage.from_bytes(bytes.fromhex("c0ff") + b"abc")
    assert message.code == 0xC0FF and message.data == b"abc" and message.is_badonion and message.is_permanent


def test_failure_packet_is_padded_and_a_corrupted_packet_is_not_attributed() -> None:
    secrets = [bytes([i]) * 32 for i in range(1, 4)]
    packet = create_failure_packet(secrets[1], FailureMessage(FailureCode.TEMPORARY_NODE_FAILURE).to_bytes())
    assert len(packet) == 32 + 2 + 256 + 2
    packet = wrap_failure_packet(secrets[0], packet)
    assert decode_failure_packet(secrets, packet).hop_index == 1
    corrupted = packet[:40] + bytes([packet[40] ^ 1]) + packet[41:]
    with pytest.raises(OnionError, match="no hop"):
        decode_failure_packet(secrets, corrupted)
    with pytest.raises(UsageError):
        create_failure_packet(secrets[0], b"\x20\x02", padded_length=100)


# --- route blinding: aggregate pay info (blinded-payment-onion-test.json) ------------------

def test_blinded_payinfo_matches_the_vector() -> None:
    vector = load_vectors("bolt04_blinded_payment_onion.json")["generate"]
    relays = [PaymentRelay(r["cltv_expiry_delta"], r["fee_proportional_millionths"], r.get("fee_base_msat", 0))
              for r in (h["tlvs"]["encrypted_recipient_data"]["payment_relay"]
                        for h in vector["full_route"]["hops"][1:4])]
    info = aggregate_payment_relay(relays, 0)
    expected = vector["blinded_payinfo"]
    assert (info.fee_base_msat, info.fee_proportional_millionths, info.cltv_expiry_delta) == (
        expected["fee_base_msat"], expected["fee_proportional_millionths"], expected["cltv_expiry_delta"])
    alice = vector["full_route"]["hops"][0]["tlvs"]
    assert vector["final_amount_msat"] + info.fee_msat(vector["final_amount_msat"]) == alice["amt_to_forward"]
    assert vector["final_cltv"] + info.cltv_expiry_delta == alice["outgoing_cltv_value"]
    amount = alice["amt_to_forward"]
    for relay in relays:
        amount = relay.amount_to_forward_msat(amount)
    assert amount == vector["final_amount_msat"]


# --- onion messages: forwarding rules and reply paths --------------------------------------

def _message_through(tlvs: list[EncryptedDataTlv], final: OnionMessagePayload | None = None) -> bytes:
    path = create_blinded_path(b"\x09" * 32, NODES[: len(tlvs)], tlvs)
    _, message = build_onion_message(b"\x0a" * 32, path, final or OnionMessagePayload())
    return message.to_bytes()


def test_forwarding_hop_with_path_id_is_ignored() -> None:
    raw = _message_through([EncryptedDataTlv(next_node_id=NODES[1], path_id=b"p"), EncryptedDataTlv()])
    with pytest.raises(OnionError, match="path_id"):
        peel_onion_message(KEYS[0], OnionMessage.from_bytes(raw))


def test_forwarding_hop_without_next_hop_is_ignored() -> None:
    raw = _message_through([EncryptedDataTlv(padding=b""), EncryptedDataTlv()])
    with pytest.raises(OnionError, match="neither"):
        peel_onion_message(KEYS[0], OnionMessage.from_bytes(raw))


def test_forward_by_short_channel_id() -> None:
    raw = _message_through([EncryptedDataTlv(short_channel_id=77), EncryptedDataTlv()])
    result = peel_onion_message(KEYS[0], OnionMessage.from_bytes(raw))
    assert isinstance(result, ForwardOnionMessage) and result.short_channel_id == 77 and result.next_node_id is None


def test_large_onion_message_uses_the_32768_byte_packet() -> None:
    raw = _message_through([EncryptedDataTlv()], OnionMessagePayload(records=((65, b"z" * 5000),)))
    message = OnionMessage.from_bytes(raw)
    assert len(message.onion_message_packet) == 32834
    result = peel_onion_message(KEYS[0], message)
    assert isinstance(result, ReceivedOnionMessage) and result.payload.records == ((65, b"z" * 5000),)


def test_request_and_reply_over_a_reply_path() -> None:
    """Node 0 asks node 2 (via node 1) and gets the answer back along node 0's reply path."""
    reply_path = create_reply_path(b"\x0b" * 32, [NODES[1], NODES[0]], path_id=b"secret-ctx", padding_to=60)
    assert len({len(h.encrypted_recipient_data) for h in reply_path.hops}) == 1
    request_path = create_blinded_path(b"\x0c" * 32, NODES[1:3],
                                       [EncryptedDataTlv(next_node_id=NODES[2]), EncryptedDataTlv()])
    first, message = build_onion_message(b"\x0d" * 32, request_path,
                                         OnionMessagePayload(reply_path=reply_path, records=((64, b"req"),)))
    assert first == NODES[1]
    hop = peel_onion_message(KEYS[1], message)
    assert isinstance(hop, ForwardOnionMessage) and hop.next_node_id == NODES[2]
    received = peel_onion_message(KEYS[2], OnionMessage.from_bytes(hop.message.to_bytes()))
    assert isinstance(received, ReceivedOnionMessage) and received.payload.reply_path == reply_path
    # the recipient answers along the reply path it was handed
    first, answer = build_onion_message(b"\x0e" * 32, reply_path, OnionMessagePayload(records=((66, b"inv"),)))
    assert first == NODES[1]
    hop = peel_onion_message(KEYS[1], answer)
    assert isinstance(hop, ForwardOnionMessage) and hop.next_node_id == NODES[0]
    back = peel_onion_message(KEYS[0], hop.message)
    assert isinstance(back, ReceivedOnionMessage)
    assert back.path_id == b"secret-ctx" and back.payload.records == ((66, b"inv"),)


# --- processing an HTLC onion: which failure goes back -------------------------------------

def test_process_maps_each_problem_to_its_failure() -> None:
    raw = _packet()
    with pytest.raises(HtlcOnionFailure) as info:
        process_htlc_onion(raw, KEYS[1], b"h" * 32, 1000, 800_000)
    assert info.value.failure.code == FailureCode.INVALID_ONION_HMAC
    assert info.value.failure.sha256_of_onion == hashlib.sha256(raw).digest()
    with pytest.raises(HtlcOnionFailure) as info:
        process_htlc_onion(b"\x01" + raw[1:], KEYS[0], b"h" * 32, 1000, 800_000)
    assert info.value.failure.code == FailureCode.INVALID_ONION_VERSION
    with pytest.raises(HtlcOnionFailure) as info:
        process_htlc_onion(raw, KEYS[1], b"h" * 32, 1000, 800_000, path_key=PATH_KEY)
    assert info.value.failure.code == FailureCode.INVALID_ONION_BLINDING
    # a final payload without amt_to_forward: invalid_onion_payload naming type 2
    bad = build_onion(b"\x41" * 32, NODES[:1], [HopPayload(outgoing_cltv_value=5).to_bytes()], b"h" * 32)
    with pytest.raises(HtlcOnionFailure) as info:
        process_htlc_onion(bad.packet.to_bytes(), KEYS[0], b"h" * 32, 1000, 800_000)
    assert info.value.failure == FailureMessage(FailureCode.INVALID_ONION_PAYLOAD, tlv_type=2, offset=0)
    final = build_onion(b"\x41" * 32, NODES[:1], [FINAL.to_bytes()], b"h" * 32).packet.to_bytes()
    with pytest.raises(HtlcOnionFailure) as info:
        process_htlc_onion(final, KEYS[0], b"h" * 32, 999, 800_000)
    assert info.value.failure == FailureMessage(FailureCode.FINAL_INCORRECT_HTLC_AMOUNT, htlc_msat=999)
    with pytest.raises(HtlcOnionFailure) as info:
        process_htlc_onion(final, KEYS[0], b"h" * 32, 1000, 799_999)
    assert info.value.failure == FailureMessage(FailureCode.FINAL_INCORRECT_CLTV_EXPIRY, cltv_expiry=799_999)
    received = process_htlc_onion(final, KEYS[0], b"h" * 32, 1000, 800_000)
    assert isinstance(received, ReceiveHtlc) and received.total_msat == 3000 and received.payment_secret == b"s" * 32


def test_blinded_constraints_are_enforced() -> None:
    data = EncryptedDataTlv(short_channel_id=9, payment_relay=PaymentRelay(40, 1000, 5),
                            payment_constraints=PaymentConstraints(max_cltv_expiry=800_000, htlc_minimum_msat=500))
    path = create_blinded_path(b"\x05" * 32, NODES[:2], [data, EncryptedDataTlv(path_id=b"p")])
    payloads = [HopPayload(encrypted_recipient_data=path.hops[0].encrypted_recipient_data,
                           current_path_key=path.first_path_key).to_bytes(),
                HopPayload(encrypted_recipient_data=path.hops[1].encrypted_recipient_data, amt_to_forward_msat=1,
                           outgoing_cltv_value=1, total_amount_msat=1).to_bytes()]
    onion = build_onion(b"\x06" * 32, [NODES[0], path.hops[1].blinded_node_id], payloads, b"h" * 32)
    raw = onion.packet.to_bytes()
    forward = process_htlc_onion(raw, KEYS[0], b"h" * 32, 10_000, 799_000)
    assert not isinstance(forward, Exception)
    assert forward.amt_to_forward_msat == PaymentRelay(40, 1000, 5).amount_to_forward_msat(10_000)
    for amount, cltv in ((10_000, 800_001), (499, 799_000)):
        with pytest.raises(HtlcOnionFailure) as info:
            process_htlc_onion(raw, KEYS[0], b"h" * 32, amount, cltv)
        assert info.value.failure.code == FailureCode.INVALID_ONION_BLINDING


def test_introduction_point_errors_are_invalid_onion_blinding() -> None:
    """An intermediate payload with current_path_key but no encrypted data is still a blinding error."""
    bad = HopPayload(current_path_key=PATH_KEY, amt_to_forward_msat=1, outgoing_cltv_value=1, short_channel_id=1)
    onion = build_onion(b"\x41" * 32, NODES[:2], [bad.to_bytes(), FINAL.to_bytes()], b"h" * 32)
    with pytest.raises(HtlcOnionFailure) as info:
        process_htlc_onion(onion.packet.to_bytes(), KEYS[0], b"h" * 32, 1000, 800_000)
    assert info.value.failure.code == FailureCode.INVALID_ONION_BLINDING


def test_final_onion_message_with_two_payload_fields_is_ignored() -> None:
    raw = _message_through([EncryptedDataTlv()], OnionMessagePayload(records=((64, b"a"), (66, b"b"))))
    with pytest.raises(OnionError, match="more than one payload"):
        peel_onion_message(KEYS[0], OnionMessage.from_bytes(raw))
    one = _message_through([EncryptedDataTlv()], OnionMessagePayload(records=((1, b"x"), (64, b"a"))))
    assert isinstance(peel_onion_message(KEYS[0], OnionMessage.from_bytes(one)), ReceivedOnionMessage)
