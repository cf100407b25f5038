"""Blinded payment paths, sans-IO: the recipient's builder, the payer's onion, and each hop's reading.

The payer's onion is checked against the spec (bolt04_blinded_payment_onion.json: the same
bytes from the same keys) and every hop of the spec's route is read by the node's reader; the
builder and the failure rules are checked at their boundaries with paths built here.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from lightspeed.bitcoin.network import REGTEST
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError
from lightspeed.invoice import build_invoice, decode
from lightspeed.invoice.encode import DEFAULT_FEATURES
from lightspeed.invoice.jsonfmt import invoice_to_json
from lightspeed.node.blinded import malformed_record_failure, parse_malformed
from lightspeed.node.blinded_incoming import (
    BlindedFailure,
    BlindedFinal,
    BlindedForward,
    pack_onion,
    read_blinded,
    unpack_onion,
)
from lightspeed.node.forwarding import Forward, read_onion
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import BlindedHop, BlindedPath, EncryptedDataTlv, unblind_hop
from lightspeed.onion.failure import FailureCode
from lightspeed.payments.blinded import (
    PathTerms,
    RelayHop,
    amount_at_introduction,
    blinded_onion,
    build_payment_path,
)
from lightspeed.routing import Route, RouteHop
from tests.support.vectors import load_vectors

VECTOR = load_vectors("bolt04_blinded_payment_onion.json")
HASH = bytes.fromhex(VECTOR["generate"]["associated_data"])


def h(value: str) -> bytes:
    return bytes.fromhex(value)


def key(i: int) -> bytes:
    return hashlib.sha256(b"blindpay %d" % i).digest()


INTRO, MIDDLE, RECIPIENT = key(1), key(2), key(3)
INTRO_ID, MIDDLE_ID, RECIPIENT_ID = (pubkey_from_privkey(k) for k in (INTRO, MIDDLE, RECIPIENT))
SECRET = bytes(range(32))


def relays(minimum: int = 1) -> list[RelayHop]:
    return [RelayHop(INTRO_ID, 0x1_000001_0001, 1000, 100, 40, minimum, 10**9),
            RelayHop(MIDDLE_ID, 0x2_000002_0002, 500, 1000, 20, 1, 10**9)]


def path(dummy_hops: int = 1, minimum: int = 1, expiry_height: int = 1000) -> tuple[BlindedPath, BlindedPayInfo]:
    return build_payment_path(key(9), relays(minimum), PathTerms(RECIPIENT_ID, SECRET, expiry_height, 18),
                              dummy_hops)


# --- the payer's onion against the spec ------------------------------------------------------

def vector_path() -> tuple[BlindedPath, BlindedPayInfo]:
    gen = VECTOR["generate"]
    route = gen["blinded_route"]
    pay = gen["blinded_payinfo"]
    blinded = BlindedPath(h(route["first_node_id"]), h(route["first_path_key"]),
                          tuple(BlindedHop(h(x["blinded_node_id"]), h(x["encrypted_data"])) for x in route["hops"]))
    return blinded, BlindedPayInfo(pay["fee_base_msat"], pay["fee_proportional_millionths"], pay["cltv_expiry_delta"],
                                   1, 10**12)


def test_the_payers_onion_to_a_blinded_path_is_the_spec_vector_byte_for_byte() -> None:
    gen = VECTOR["generate"]
    blinded, info = vector_path()
    alice = h(gen["full_route"]["hops"][0]["pubkey"])
    at_intro = amount_at_introduction(info, gen["final_amount_msat"])
    assert at_intro == gen["full_route"]["hops"][0]["tlvs"]["amt_to_forward"]  # 110125: fees by the payinfo
    # Alice charges nothing: the route to the introduction node (Bob) carries the same amount.
    route = Route((RouteHop(1, alice, at_intro, 0, 0), RouteHop(10, blinded.first_node_id, at_intro, 0, 0)))
    built = blinded_onion(route, blinded, info, gen["final_amount_msat"], 150_000, gen["final_cltv"], HASH,
                          h(gen["session_key"]))
    assert built.onion.hex() == gen["onion"]
    assert built.first_cltv_expiry == gen["full_route"]["hops"][0]["tlvs"]["outgoing_cltv_value"]
    assert len(built.shared_secrets) == 5


def test_the_spec_route_is_read_hop_by_hop_as_forward_forward_forward_final() -> None:
    """Each hop of the vector, by the node's reader: Bob as introduction node, the rest inside."""
    hops = VECTOR["decrypt"]["hops"]
    alice = read_onion(h(hops[0]["onion"]), h(hops[0]["node_privkey"]), HASH)
    assert isinstance(alice, Forward)
    amount, cltv = alice.payload.amt_to_forward_msat, alice.payload.outgoing_cltv_value
    assert amount is not None and cltv is not None
    path_key: bytes | None = None
    roles = []
    for hop in hops[1:]:
        privkey = h(hop["node_privkey"])
        read = read_onion(h(hop["onion"]), privkey, HASH, path_key, amount, cltv, pubkey_from_privkey(privkey))
        roles.append(read.role if not isinstance(read, BlindedFailure) else "failed")
        if isinstance(read, BlindedFinal):
            break
        assert isinstance(read, BlindedForward), read
        assert read.next_onion.hex() == hops[hops.index(hop) + 1]["onion"]
        assert read.next_path_key.hex() == hop["next_path_key"]
        amount, cltv, path_key = read.amount_msat, read.cltv_expiry, read.next_path_key
    assert roles == ["intro", "inside", "inside", "inside"]
    assert isinstance(read, BlindedFinal)
    assert (read.amt_to_forward_msat, read.outgoing_cltv_value, read.total_amount_msat) == (100_000, 749_000, 150_000)
    assert amount >= 100_000 and cltv == 749_000  # what Eve is handed covers the payload


# --- the recipient's builder -----------------------------------------------------------------

def test_every_hop_reads_its_instructions_and_all_are_padded_to_one_length() -> None:
    blinded, info = path(dummy_hops=2)
    assert len(blinded.hops) == 5  # intro, middle, us, and two dummies of us
    assert len({len(hop.encrypted_recipient_data) for hop in blinded.hops}) == 1
    keys = [INTRO, MIDDLE, RECIPIENT, RECIPIENT, RECIPIENT]
    path_key = blinded.first_path_key
    datas: list[EncryptedDataTlv] = []
    for privkey, hop in zip(keys, blinded.hops, strict=True):
        opened = unblind_hop(privkey, path_key, hop.encrypted_recipient_data)
        datas.append(opened.data)
        path_key = opened.next_path_key
    assert datas[0].short_channel_id == 0x1_000001_0001 and datas[1].short_channel_id == 0x2_000002_0002
    assert datas[2].next_node_id == RECIPIENT_ID and datas[3].next_node_id == RECIPIENT_ID  # dummy hops
    assert datas[4].path_id == SECRET and datas[4].payment_relay is None
    # BOLT 4: max_cltv_expiry is the final node's (expiry + min_final) plus each later hop's delta.
    maxima = [d.payment_constraints.max_cltv_expiry for d in datas if d.payment_constraints]
    assert maxima == [1000 + 18 + 20 + 40, 1000 + 18 + 20, 1000 + 18, 1000 + 18, 1000 + 18]
    assert info.cltv_expiry_delta == 40 + 20 + 18
    # Aggregated fees: forwarding 10^6 msat through both relays costs what the payinfo says, or less.
    amount = 1_000_000
    after_middle = amount + 500 + amount * 1000 // 1_000_000
    at_intro = after_middle + 1000 + after_middle * 100 // 1_000_000
    assert amount_at_introduction(info, amount) >= at_intro


def test_a_path_holds_at_most_twenty_hops() -> None:
    build_payment_path(key(9), relays(), PathTerms(RECIPIENT_ID, SECRET, 1000, 18), dummy_hops=17)  # 20 hops
    with pytest.raises(UsageError, match="at most 20"):
        build_payment_path(key(9), relays(), PathTerms(RECIPIENT_ID, SECRET, 1000, 18), dummy_hops=18)


# --- reading at each hop, at the boundaries --------------------------------------------------

def onion_for(blinded: BlindedPath, info: BlindedPayInfo, amount: int, final_cltv: int) -> tuple[bytes, int, int]:
    at_intro = amount_at_introduction(info, amount)
    route = Route((RouteHop(7, INTRO_ID, at_intro, 0, 0),))
    built = blinded_onion(route, blinded, info, amount, amount, final_cltv, HASH, key(8))
    return built.onion, built.first_amount_msat, built.first_cltv_expiry


def walk(onion: bytes, amount: int, cltv: int, tamper_at: int | None = None) -> list[object]:
    """Read the onion at each node of the path in turn, as the network would; stop at the first failure."""
    reads: list[object] = []
    path_key: bytes | None = None
    for index, privkey in enumerate((INTRO, MIDDLE, RECIPIENT)):
        if index == tamper_at:
            onion = onion[:100] + bytes([onion[100] ^ 1]) + onion[101:]
        read = read_onion(onion, privkey, HASH, path_key, amount, cltv, pubkey_from_privkey(privkey))
        reads.append(read)
        if not isinstance(read, BlindedForward):
            break
        onion, amount, cltv, path_key = read.next_onion, read.amount_msat, read.cltv_expiry, read.next_path_key
    return reads


def test_a_payment_over_our_path_reaches_us_with_its_path_id_through_a_dummy_hop() -> None:
    blinded, info = path()
    onion, amount, cltv = onion_for(blinded, info, 1_000_000, 500)
    reads = walk(onion, amount, cltv)
    final = reads[-1]
    assert isinstance(final, BlindedFinal) and final.role == "inside"
    assert (final.amt_to_forward_msat, final.outgoing_cltv_value, final.path_id) == (1_000_000, 500, SECRET)


@pytest.mark.parametrize("extra", [0, 1])
def test_max_cltv_expiry_at_the_introduction_node(extra: int) -> None:
    """The intro's max is 1078 (path expiry 1000 + 18 + 20 + 40): 1078 forwards, 1079 fails as blinded."""
    blinded, info = path()
    onion, amount, _ = onion_for(blinded, info, 1_000_000, 500)
    read = read_onion(onion, INTRO, HASH, None, amount, 1078 + extra, INTRO_ID)
    if extra == 0:
        assert isinstance(read, BlindedForward)
    else:
        # BOLT 2: the introduction node fails with update_fail_htlc and invalid_onion_blinding.
        assert isinstance(read, BlindedFailure) and not read.malformed
        assert read.failure.code is FailureCode.INVALID_ONION_BLINDING


@pytest.mark.parametrize("amount,ok", [(5000, True), (4999, False)])
def test_htlc_minimum_msat_inside_the_path(amount: int, ok: bool) -> None:
    """The path's minimum is 5000: the recipient (inside the path) takes 5000 and fails 4999 as
    update_fail_malformed_htlc(invalid_onion_blinding, sha256 of the onion it received)."""
    blinded, info = path(minimum=5000)
    onion, first, cltv = onion_for(blinded, info, 4000, 500)
    reads = walk(onion, first + 10_000, cltv)  # forwarders leave the recipient what they do
    middle = reads[1]
    assert isinstance(middle, BlindedForward) and middle.amount_msat > 5000
    # The HTLC the recipient is offered carries exactly ``amount`` (its payload asks 4000).
    last = read_onion(middle.next_onion, RECIPIENT, HASH, middle.next_path_key, amount, middle.cltv_expiry,
                      RECIPIENT_ID)
    if ok:
        assert isinstance(last, BlindedFinal)
    else:
        assert isinstance(last, BlindedFailure) and last.malformed
        assert last.failure.code is FailureCode.INVALID_ONION_BLINDING
        assert last.failure.sha256_of_onion == hashlib.sha256(middle.next_onion).digest()


def test_a_tampered_onion_inside_the_path_is_malformed_blinding_never_an_hmac_error() -> None:
    blinded, info = path()
    onion, amount, cltv = onion_for(blinded, info, 1_000_000, 500)
    reads = walk(onion, amount, cltv, tamper_at=1)
    last = reads[-1]
    assert isinstance(last, BlindedFailure) and last.malformed
    assert last.failure.code is FailureCode.INVALID_ONION_BLINDING


def test_tampered_encrypted_recipient_data_fails_at_the_hop_it_was_for() -> None:
    blinded, info = path()
    hops = list(blinded.hops)
    data = hops[1].encrypted_recipient_data
    hops[1] = replace(hops[1], encrypted_recipient_data=data[:-1] + bytes([data[-1] ^ 1]))
    onion, amount, cltv = onion_for(replace(blinded, hops=tuple(hops)), info, 1_000_000, 500)
    reads = walk(onion, amount, cltv)
    assert len(reads) == 2 and isinstance(reads[1], BlindedFailure) and reads[1].malformed


def test_an_update_add_path_key_with_a_current_path_key_in_the_payload_is_refused() -> None:
    """BOLT 4: if `path_key` is set in the incoming update_add_htlc, MUST return an error if
    `current_path_key` is present (here: the intro's payload, replayed with a path_key)."""
    blinded, info = path()
    onion, amount, cltv = onion_for(blinded, info, 1_000_000, 500)
    read = read_blinded(onion, INTRO, INTRO_ID, HASH, amount, cltv, blinded.first_path_key)
    assert isinstance(read, BlindedFailure) and read.malformed


def test_the_stored_onion_keeps_the_path_key() -> None:
    onion = bytes(1366)
    assert unpack_onion(pack_onion(onion, None)) == (onion, None)
    assert unpack_onion(pack_onion(onion, INTRO_ID)) == (onion, INTRO_ID)


def test_a_malformed_failure_record_round_trips_and_an_encrypted_reason_is_never_one() -> None:
    from lightspeed.onion.failure import FailureMessage, create_failure_packet

    failure = FailureMessage(FailureCode.INVALID_ONION_BLINDING, sha256_of_onion=bytes(range(32)))
    assert parse_malformed(malformed_record_failure(failure)) == (FailureCode.INVALID_ONION_BLINDING, bytes(range(32)))
    assert parse_malformed(create_failure_packet(key(1), failure.to_bytes())) is None


# --- BOLT 11 invoices requiring route blinding -----------------------------------------------

def test_a_bolt11_invoice_requiring_route_blinding_decodes_and_shows_it() -> None:
    invoice = build_invoice(network=REGTEST, amount_msat=1000, description="blinded", payment_hash=bytes(32),
                            payment_secret=bytes(range(32)), timestamp=1_700_000_000, expiry=3600, payee=None,
                            features=DEFAULT_FEATURES | {24}).sign(key(1))
    decoded = invoice_to_json(decode(invoice.encode()))
    assert 24 in decoded["features"]
    assert "option_route_blinding" in decoded["required_features"]
    assert decoded["required_features"] == ["var_onion_optin", "payment_secret", "option_route_blinding"]
