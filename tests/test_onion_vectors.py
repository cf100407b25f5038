"""Every BOLT 4 test vector, built and peeled both ways where the vectors allow."""

from __future__ import annotations

from typing import Any

import pytest

from lightspeed.codec.bigsize import decode_bigsize
from lightspeed.onion import (
    Attribution,
    CorruptedFailure,
    EncryptedDataTlv,
    FailureCode,
    FailureMessage,
    ForwardHtlc,
    ForwardOnionMessage,
    HopPayload,
    OnionMessage,
    OnionMessagePayload,
    OnionPacket,
    PaymentConstraints,
    PaymentRelay,
    ReceivedOnionMessage,
    ReceiveHtlc,
    add_attribution,
    blind_hop,
    blinded_node_privkey,
    blinded_path_to,
    build_onion,
    build_onion_message,
    check_hop_payload,
    create_failure_packet,
    decode_failure_packet,
    derive_hop_keys,
    generate_key,
    generate_stream,
    next_path_key,
    peel_onion,
    peel_onion_message,
    process_htlc_onion,
    unblind_hop,
    verify_attribution,
    wrap_failure_packet,
)
from lightspeed.onion.blinding import BlindedHop, BlindedPath
from tests.support.vectors import load_vectors

ONION = load_vectors("bolt04_onion.json")
ERROR = load_vectors("bolt04_onion_error.json")
BLINDING = load_vectors("bolt04_route_blinding.json")
BLINDED_PAYMENT = load_vectors("bolt04_blinded_payment_onion.json")
ONION_MESSAGE = load_vectors("bolt04_blinded_onion_message.json")
RETURNING = load_vectors("bolt04_returning_errors.json")


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def strip_length(framed: bytes) -> bytes:
    length, offset = decode_bigsize(framed, 0, "length")
    assert offset + length == len(framed)
    return framed[offset:]


def scid(text: str) -> int:
    block, tx, out = (int(x) for x in text.split("x"))
    return block << 40 | tx << 16 | out


def features(bits: list[int]) -> bytes:
    value = sum(1 << b for b in bits)
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def encrypted_data_from_json(tlvs: dict[str, Any]) -> EncryptedDataTlv:
    relay = tlvs.get("payment_relay")
    constraints = tlvs.get("payment_constraints")
    unknown = tuple(sorted((int(k.split("_")[-1]), h(v)) for k, v in tlvs.items() if k.startswith("unknown_tag_")))
    return EncryptedDataTlv(
        padding=h(tlvs["padding"]) if "padding" in tlvs else None,
        short_channel_id=scid(tlvs["short_channel_id"]) if "short_channel_id" in tlvs else None,
        next_node_id=h(tlvs["next_node_id"]) if "next_node_id" in tlvs else None,
        path_id=h(tlvs["path_id"]) if "path_id" in tlvs else None,
        next_path_key_override=h(tlvs["next_path_key_override"]) if "next_path_key_override" in tlvs else None,
        payment_relay=PaymentRelay(relay["cltv_expiry_delta"], relay["fee_proportional_millionths"],
                                   relay.get("fee_base_msat", 0)) if relay else None,
        payment_constraints=PaymentConstraints(constraints["max_cltv_expiry"], constraints["htlc_minimum_msat"])
        if constraints else None,
        allowed_features=features(tlvs["allowed_features"]["features"]) if "allowed_features" in tlvs else None,
        unknown_records=unknown,
    )


# --- onion-test.json -------------------------------------------------------------------------

def test_onion_vector_build() -> None:
    gen = ONION["generate"]
    built = build_onion(h(gen["session_key"]), [h(x["pubkey"]) for x in gen["hops"]],
                        [strip_length(h(x["payload"])) for x in gen["hops"]], h(gen["associated_data"]))
    assert built.packet.to_bytes().hex() == ONION["onion"]


def test_onion_vector_peel_every_hop() -> None:
    gen = ONION["generate"]
    packet: OnionPacket | None = OnionPacket.from_bytes(h(ONION["onion"]))
    for index, privkey in enumerate(ONION["decode"]):
        assert packet is not None
        peeled = peel_onion(packet, h(privkey), h(gen["associated_data"]))
        assert peeled.payload == strip_length(h(gen["hops"][index]["payload"]))
        assert peeled.is_final == (index == len(ONION["decode"]) - 1)
        packet = peeled.next_packet
    assert packet is None


def test_onion_vector_wrong_associated_data_fails() -> None:
    from lightspeed.errors import OnionError

    with pytest.raises(OnionError, match="hmac"):
        peel_onion(OnionPacket.from_bytes(h(ONION["onion"])), h(ONION["decode"][0]), b"\x00" * 32)


# --- onion-error-test.json -------------------------------------------------------------------

def test_onion_error_vector_keys() -> None:
    gen = ERROR["generate"]
    keys = derive_hop_keys(h(gen["session_key"]), [h(x["pubkey"]) for x in gen["hops"]])
    for key, hop in zip(keys, gen["hops"], strict=True):
        assert key.shared_secret.hex() == hop["hop_shared_secret"]
        assert generate_key(b"ammag", key.shared_secret).hex() == hop["ammag_key"]
    last = gen["hops"][-1]
    assert generate_key(b"um", keys[-1].shared_secret).hex() == last["um_key"]


def test_onion_error_vector_build_wrap_and_attribute() -> None:
    gen = ERROR["generate"]
    secrets = [h(x["hop_shared_secret"]) for x in gen["hops"]]
    failure = h(gen["failure_message"])
    packet = create_failure_packet(secrets[-1], failure)
    # the erring hop's plaintext (minus the HMAC) is the vector's payload
    plain = wrap_failure_packet(secrets[-1], packet)
    assert plain[32:].hex() == gen["hops"][-1]["payload"]
    for secret in reversed(secrets[:-1]):
        packet = wrap_failure_packet(secret, packet)
    assert packet.hex() == ERROR["errorpacket"]
    attributed = decode_failure_packet(secrets, h(ERROR["errorpacket"]))
    assert attributed.hop_index == 4
    assert attributed.failure.code == FailureCode.TEMPORARY_NODE_FAILURE
    assert attributed.failure.is_node and not attributed.failure.is_permanent


# --- Returning Errors example (spec text) ----------------------------------------------------

def test_returning_errors_example_failure_message() -> None:
    spec = RETURNING["failure"]
    message = FailureMessage(FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, htlc_msat=spec["htlc_msat"],
                             height=spec["height"], tlvs=((spec["tlv_type"], h(spec["tlv_value"])),))
    encoded = message.to_bytes()
    payload = h(RETURNING["erring_node"]["payload"])
    assert payload[:2] == len(encoded).to_bytes(2, "big")
    assert payload[2: 2 + len(encoded)] == encoded
    assert RETURNING["encoded_failure_message"].startswith(encoded.hex())
    assert FailureMessage.from_bytes(encoded) == message


def test_returning_errors_example_trace() -> None:
    keys = derive_hop_keys(h(RETURNING["session_key"]), [h(p) for p in RETURNING["pubkeys"]])
    secrets = [k.shared_secret for k in keys]
    erring = RETURNING["erring_node"]
    assert secrets[4].hex() == erring["shared_secret"]
    assert generate_key(b"um", secrets[4]).hex() == erring["um_key"]
    payload = h(erring["payload"])
    failure = payload[2: 2 + int.from_bytes(payload[:2], "big")]
    # this example pads failure_len + pad_len to 1024 bytes
    packet = create_failure_packet(secrets[4], failure, padded_length=len(payload) - 4)
    assert wrap_failure_packet(secrets[4], packet).hex() == erring["raw_error_packet"]
    for step in RETURNING["forwarding"]:
        secret = secrets[step["node"]]
        assert secret.hex() == step["shared_secret"]
        ammag = generate_key(b"ammag", secret)
        assert ammag.hex() == step["ammag_key"]
        assert generate_stream(ammag, len(step["stream"]) // 2).hex() == step["stream"]
        if step["node"] != 4:
            packet = wrap_failure_packet(secret, packet)
        assert packet.hex() == step["error_packet"]
    attributed = decode_failure_packet(secrets, packet)
    assert attributed.hop_index == RETURNING["failure_source"]
    assert attributed.failure.code == FailureCode.INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
    assert attributed.failure.htlc_msat == 100 and attributed.failure.height == 800000
    assert attributed.failure.tlvs == ((34001, b"\x80" * 300),)


# --- route-blinding-test.json ----------------------------------------------------------------

@pytest.mark.parametrize("index", range(len(BLINDING["generate"]["hops"])))
def test_route_blinding_vector_encoding(index: int) -> None:
    hop = BLINDING["generate"]["hops"][index]
    data = encrypted_data_from_json(hop["tlvs"])
    assert data.to_bytes().hex() == hop["encoded_tlvs"]
    assert EncryptedDataTlv.from_bytes(h(hop["encoded_tlvs"])) == data


def test_route_blinding_vector_create() -> None:
    key = b""
    for hop in BLINDING["generate"]["hops"]:
        if "session_key" in hop:  # a second route concatenated with next_path_key_override
            key = h(hop["session_key"])
        assert key.hex() == hop["path_privkey"]
        secrets = blind_hop(key, h(hop["node_id"]), h(hop["encoded_tlvs"]))
        assert secrets.path_key.hex() == hop["path_key"]
        assert secrets.shared_secret.hex() == hop["shared_secret"]
        assert secrets.rho.hex() == hop["rho"]
        assert secrets.encrypted_recipient_data.hex() == hop["encrypted_data"]
        assert secrets.blinded_node_id.hex() == hop["blinded_node_id"]
        key = secrets.next_path_privkey
    route = BLINDING["route"]
    assert route["first_path_key"] == BLINDING["generate"]["hops"][0]["path_key"]
    assert [x["blinded_node_id"] for x in route["hops"]] == [x["blinded_node_id"] for x in BLINDING["generate"]["hops"]]


@pytest.mark.parametrize("index", range(len(BLINDING["unblind"]["hops"])))
def test_route_blinding_vector_unblind(index: int) -> None:
    hop = BLINDING["unblind"]["hops"][index]
    encrypted = h(BLINDING["route"]["hops"][index]["encrypted_data"])
    unblinded = unblind_hop(h(hop["node_privkey"]), h(hop["path_key"]), encrypted)
    assert unblinded.plaintext.hex() == hop["decrypted_data"]
    assert blinded_node_privkey(h(hop["node_privkey"]), h(hop["path_key"])).hex() == hop["blinded_privkey"]
    assert next_path_key(h(hop["path_key"]), unblinded.shared_secret).hex() == hop["next_path_key"]
    expected_next = hop.get("next_path_key_override", hop["next_path_key"])
    assert unblinded.next_path_key.hex() == expected_next


# --- blinded-payment-onion-test.json --------------------------------------------------------

def test_blinded_payment_vector_payloads() -> None:
    hops = BLINDED_PAYMENT["generate"]["full_route"]["hops"]
    blinded = BLINDED_PAYMENT["generate"]["blinded_route"]["hops"]
    alice = HopPayload.from_bytes(strip_length(h(hops[0]["payload"])))
    assert alice == HopPayload(amt_to_forward_msat=110125, outgoing_cltv_value=749150, short_channel_id=scid("0x0x10"))
    assert alice.to_bytes() == strip_length(h(hops[0]["payload"]))
    bob = HopPayload(encrypted_recipient_data=h(blinded[0]["encrypted_data"]),
                     current_path_key=h(hops[1]["tlvs"]["current_path_key"]))
    assert bob.to_bytes() == strip_length(h(hops[1]["payload"]))
    eve_tlvs = hops[4]["tlvs"]
    eve = HopPayload(amt_to_forward_msat=eve_tlvs["amt_to_forward"], outgoing_cltv_value=eve_tlvs["outgoing_cltv_value"],
                     total_amount_msat=eve_tlvs["total_amount_msat"], encrypted_recipient_data=h(blinded[3]["encrypted_data"]))
    assert eve.to_bytes() == strip_length(h(hops[4]["payload"]))


def test_blinded_payment_vector_build() -> None:
    gen = BLINDED_PAYMENT["generate"]
    hops = gen["full_route"]["hops"]
    built = build_onion(h(gen["session_key"]), [h(x["pubkey"]) for x in hops],
                        [strip_length(h(x["payload"])) for x in hops], h(gen["associated_data"]))
    assert built.packet.to_bytes().hex() == gen["onion"]


def test_blinded_payment_vector_decrypt() -> None:
    gen = BLINDED_PAYMENT["generate"]
    hops = BLINDED_PAYMENT["decrypt"]["hops"]
    path_key: bytes | None = None
    for index, hop in enumerate(hops):
        packet = OnionPacket.from_bytes(h(hop["onion"]))
        peeled = peel_onion(packet, h(hop["node_privkey"]), h(gen["associated_data"]), path_key)
        assert peeled.payload == strip_length(h(gen["full_route"]["hops"][index]["payload"]))
        payload = HopPayload.from_bytes(peeled.payload)
        is_final = index == len(hops) - 1
        check_hop_payload(payload, is_final=is_final, update_path_key=path_key is not None)
        if is_final:
            assert peeled.next_packet is None
        else:
            assert peeled.next_packet is not None and peeled.next_packet.to_bytes().hex() == hops[index + 1]["onion"]
        if payload.encrypted_recipient_data is not None:
            key = path_key or payload.current_path_key
            assert key is not None
            unblinded = unblind_hop(h(hop["node_privkey"]), key, payload.encrypted_recipient_data)
            assert unblinded.next_path_key.hex() == hop["next_path_key"]
            path_key = unblinded.next_path_key


# --- blinded-onion-message-onion-test.json --------------------------------------------------

def test_onion_message_vector_encrypted_data() -> None:
    for hop in ONION_MESSAGE["generate"]["hops"]:
        tlvs = {k: v for k, v in hop["tlvs"].items() if k != "path_key_override_secret"}
        assert encrypted_data_from_json(tlvs).to_bytes().hex() == hop["encrypted_data_tlv"]
        secrets = blind_hop(h(hop["path_key_secret"]), _node_for(hop), h(hop["encrypted_data_tlv"]))
        assert secrets.shared_secret.hex() == hop["ss"]
        assert secrets.blinded_node_id.hex() == hop["blinded_node_id"]
        assert secrets.path_key.hex() == hop["E"]
        # the vector prints next_e with a trailing 0x01 (a compressed-key marker): 33 bytes
        assert (secrets.next_path_privkey + b"\x01").hex() == hop["next_e"]
        assert secrets.rho.hex() == hop["rho"]
        assert secrets.encrypted_recipient_data.hex() == hop["encrypted_recipient_data"]


def _node_for(hop: dict[str, Any]) -> bytes:
    privkeys = {x["alias"]: x["privkey"] for x in ONION_MESSAGE["decrypt"]["hops"]}
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey

    return pubkey_from_privkey(h(privkeys[hop["alias"]]))


def _vector_route() -> BlindedPath:
    route = ONION_MESSAGE["route"]
    return BlindedPath(h(route["first_node_id"]), h(route["first_path_key"]),
                       tuple(BlindedHop(h(x["blinded_node_id"]), h(x["encrypted_recipient_data"])) for x in route["hops"]))


def test_onion_message_vector_prepend_hop() -> None:
    """The sender prepends Alice to Dave's path Bob->Dave, overriding the path key at Alice."""
    alice = ONION_MESSAGE["generate"]["hops"][0]
    full = _vector_route()
    daves = BlindedPath(h(alice["tlvs"]["next_node_id"]), h(alice["tlvs"]["next_path_key_override"]), full.hops[1:])
    prepended = blinded_path_to(h(alice["path_key_secret"]), [_node_for(alice)], daves)
    assert prepended == full


def test_onion_message_vector_build() -> None:
    final = OnionMessagePayload(records=((1, h(ONION_MESSAGE["onionmessage"]["unknown_tag_1"])),))
    first, message = build_onion_message(h(ONION_MESSAGE["generate"]["session_key"]), _vector_route(), final)
    assert first.hex() == ONION_MESSAGE["route"]["first_node_id"]
    assert message.onion_message_packet.hex() == ONION_MESSAGE["onionmessage"]["onion_message_packet"]
    assert message.to_bytes().hex() == ONION_MESSAGE["decrypt"]["hops"][0]["onion_message"]


def test_onion_message_vector_peel() -> None:
    hops = ONION_MESSAGE["decrypt"]["hops"]
    message = OnionMessage.from_bytes(h(hops[0]["onion_message"]))
    for index, hop in enumerate(hops):
        assert message.to_bytes().hex() == hop["onion_message"]
        result = peel_onion_message(h(hop["privkey"]), message)
        if index < len(hops) - 1:
            assert isinstance(result, ForwardOnionMessage)
            assert result.next_node_id is not None and result.next_node_id.hex() == hop["next_node_id"]
            message = result.message
        else:
            assert isinstance(result, ReceivedOnionMessage)
            assert result.payload.records == ((1, b"hello"),)
            assert result.payload.encrypted_recipient_data is not None
            assert result.payload.encrypted_recipient_data.hex() == hop["tlvs"]["encrypted_recipient_data"]
            assert result.path_id == h("deadbeefbadc0ffeedeadbeefbadc0ffeedeadbeefbadc0ffeedeadbeefbadc0")
            assert result.encrypted_data.unknown_records == ((65535, h("06c1")),)


def test_blinded_payment_vector_processed_hop_by_hop() -> None:
    """Each hop of the vector decides forward/receive with the values the sender intended."""
    gen = BLINDED_PAYMENT["generate"]
    hops = BLINDED_PAYMENT["decrypt"]["hops"]
    alice = gen["full_route"]["hops"][0]["tlvs"]
    amount, cltv = alice["amt_to_forward"] + 1000, alice["outgoing_cltv_value"] + 40
    path_key: bytes | None = None
    expected_scids = ["0x0x10", "0x0x1", "0x0x2", "0x0x3"]
    for index, hop in enumerate(hops):
        result = process_htlc_onion(h(hop["onion"]), h(hop["node_privkey"]), h(gen["associated_data"]),
                                    amount, cltv, path_key)
        if index < len(hops) - 1:
            assert isinstance(result, ForwardHtlc)
            assert result.short_channel_id == scid(expected_scids[index])
            assert result.next_packet.to_bytes().hex() == hops[index + 1]["onion"]
            if index > 0:
                assert result.next_path_key is not None and result.next_path_key.hex() == hop["next_path_key"]
            amount, cltv, path_key = result.amt_to_forward_msat, result.outgoing_cltv_value, result.next_path_key
        else:
            assert isinstance(result, ReceiveHtlc)
            assert (amount, cltv) == (gen["final_amount_msat"], gen["final_cltv"])
            assert result.total_msat == 150000
            assert result.path_id == h("c9cf92f45ade68345bc20ae672e2012f4af487ed4415")


def test_returning_errors_example_attribution_data() -> None:
    """Attribution data of the failure, hop by hop, then verified by the sender.

    The spec lists ``htlc_hold_time[i]`` beside ``pubkey[i]``, but its vectors only match
    when hold time ``k`` belongs to the k-th node counted from the erring end (the erring
    node 4 reports 1, node 0 reports 5): we follow the vectors.
    """
    keys = derive_hop_keys(h(RETURNING["session_key"]), [h(p) for p in RETURNING["pubkeys"]])
    secrets = [k.shared_secret for k in keys]
    holds = RETURNING["htlc_hold_times"]
    message = h(RETURNING["erring_node"]["raw_error_packet"])
    attribution: bytes | None = None
    for step in RETURNING["forwarding"]:
        node = step["node"]
        attribution = add_attribution(secrets[node], message, holds[len(holds) - 1 - node], attribution)
        assert attribution.hex() == step["attribution_data"]
        message = h(step["error_packet"])
    assert attribution is not None
    result = verify_attribution(secrets, message, attribution)
    assert result == Attribution(hold_times=(5, 4, 3, 2, 1), first_invalid_hop=None)
    # flipping a bit of hop 0's hmac_0_4 (slot 15, the one the sender checks) is caught at hop 0;
    # slots for positions beyond the route are not checked, so flipping those changes nothing
    offset = 80 + 15 * 4
    tampered = attribution[:offset] + bytes([attribution[offset] ^ 1]) + attribution[offset + 1:]
    assert verify_attribution(secrets, message, tampered).first_invalid_hop == 0
    unused = attribution[:500] + bytes([attribution[500] ^ 1]) + attribution[501:]
    assert verify_attribution(secrets, message, unused).first_invalid_hop is None


def test_returning_success_attribution_data() -> None:
    keys = derive_hop_keys(h(RETURNING["session_key"]), [h(p) for p in RETURNING["pubkeys"]])
    secrets = [k.shared_secret for k in keys]
    holds = RETURNING["htlc_hold_times"]
    attribution: bytes | None = None
    for step in RETURNING["success_attribution_data"]:
        node = step["node"]
        attribution = add_attribution(secrets[node], b"", holds[len(holds) - 1 - node], attribution)
        assert attribution.hex() == step["attribution_data"]
    assert attribution is not None
    assert verify_attribution(secrets, b"", attribution).hold_times == (5, 4, 3, 2, 1)


def test_returning_errors_attribution_reads_hold_times_and_blames_a_corrupting_hop() -> None:
    keys = derive_hop_keys(h(RETURNING["session_key"]), [h(p) for p in RETURNING["pubkeys"]])
    secrets = [k.shared_secret for k in keys]
    final = RETURNING["forwarding"][-1]
    attributed = decode_failure_packet(secrets, h(final["error_packet"]), h(final["attribution_data"]))
    assert attributed.hop_index == 4 and attributed.hold_times == (5, 4, 3, 2, 1)
    # node 2 forwards a corrupted packet; nodes 1 and 0 honestly add their layers over it
    after_node_2 = RETURNING["forwarding"][2]
    assert after_node_2["node"] == 2
    packet = bytearray(h(after_node_2["error_packet"]))
    packet[100] ^= 1
    attribution = h(after_node_2["attribution_data"])
    message = bytes(packet)
    for node in (1, 0):
        attribution = add_attribution(secrets[node], message, 4 - node + 1, attribution)
        message = wrap_failure_packet(secrets[node], message)
    with pytest.raises(CorruptedFailure) as info:
        decode_failure_packet(secrets, message, attribution)
    assert info.value.blamed_hop == 2
