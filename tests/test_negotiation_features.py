"""BOLT 9 / BOLT 1 negotiation against the feature sets real wallets and nodes send in init.

Our default init must be accepted by Electrum (4.3.4 and 4.8.1), LND and Core Lightning, and
theirs by us; the channel type follows from both sides' features; a peer that requires
something unknown, or follows another chain, is told why and disconnected.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from typing import Any

import pytest

from lightspeed.bitcoin.network import BITCOIN, REGTEST
from lightspeed.channel.establish import (
    ANCHORS,
    STATIC_REMOTEKEY,
    ChannelPolicy,
    ChannelType,
    check_accept_channel,
    check_open_channel,
    choose_channel_type,
    implied_channel_type,
)
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.state import Channel
from lightspeed.codec.features import ASSUMED, Features, negotiate
from lightspeed.codec.messages import Warning, decode_message, encode_message, make_message
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import PeerProtocolError
from lightspeed.invoice import build_invoice
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.transport import Connected, Disconnected, Handshake, MessageReceived, PeerSession

# Electrum 4.3.4 (Debian's python3-electrum), lnworker.LNWALLET_FEATURES: checked against the
# installed library below.
ELECTRUM_4_3_4 = frozenset({0, 1, 5, 6, 9, 12, 13, 15, 17, 27, 45, 151})
# Electrum 4.8.1 (tag 4.8.1, lnworker.py): requires var_onion, payment_secret, anchors and
# channel_type too; gossip_queries is no longer set, large channels and scid_alias are offered.
ELECTRUM_4_8_1 = frozenset({0, 1, 5, 8, 9, 12, 13, 14, 15, 17, 19, 22, 23, 27, 44, 45, 47, 151})
# LND 0.18 defaults (feature/default_sets.go, SetInit): AMP (31) and script-enforced leases
# (2023) are bits BOLT 9 does not define: odd, so ignored.
LND = frozenset({0, 5, 7, 8, 12, 14, 17, 19, 23, 25, 27, 31, 35, 45, 47, 51, 2023})
# Core Lightning 24.x (tests/utils.py expected_peer_features, anchors included).
CLN = frozenset({0, 5, 7, 8, 11, 12, 14, 17, 19, 23, 25, 27, 35, 39, 45, 47, 51})

PEERS = [
    pytest.param(ELECTRUM_4_3_4, STATIC_REMOTEKEY, id="electrum-4.3.4"),
    pytest.param(ELECTRUM_4_8_1, ANCHORS, id="electrum-4.8.1"),
    pytest.param(LND, ANCHORS, id="lnd"),
    pytest.param(CLN, ANCHORS, id="cln"),
]
OUR_KEY, THEIR_KEY = b"\x11" * 32, b"\x12" * 32


def connect_sessions(ours: Features, theirs: Features, *, our_networks: tuple[bytes, ...] | None = None,
                     their_networks: tuple[bytes, ...] | None = None) -> tuple[list[Any], list[Any]]:
    """Handshake and init between two in-memory sessions; the events each side saw."""
    us = PeerSession(Handshake.responder(OUR_KEY), ours, 0.0, networks=our_networks)
    them = PeerSession(Handshake.initiator(THEIR_KEY, pubkey_from_privkey(OUR_KEY)), theirs, 0.0,
                       networks=their_networks)
    our_events: list[Any] = []
    their_events: list[Any] = []
    for _ in range(5):
        our_events += us.receive_data(them.data_to_send(), 0.0)
        their_events += them.receive_data(us.data_to_send(), 0.0)
    return our_events, their_events


@pytest.mark.parametrize(("bits", "expected_type"), PEERS)
def test_each_real_implementations_init_is_accepted_and_gives_the_right_channel_type(
        bits: frozenset[int], expected_type: ChannelType) -> None:
    theirs = Features(bits)
    common = negotiate(DEFAULT_FEATURES, theirs)
    for name in ("option_data_loss_protect", "var_onion_optin", "option_static_remotekey", "payment_secret",
                 "option_channel_type", "basic_mpp"):
        assert common.supports(name), name
    assert common.supports("option_anchors") == (expected_type == ANCHORS)
    assert choose_channel_type(DEFAULT_FEATURES, theirs) == expected_type
    assert implied_channel_type(DEFAULT_FEATURES, theirs) is None  # they all offer option_channel_type
    # Over real sessions, both directions: each side reaches Connected, nobody warns.
    ours_seen, theirs_seen = connect_sessions(DEFAULT_FEATURES, theirs, our_networks=(REGTEST.chain_hash,),
                                              their_networks=(REGTEST.chain_hash,))
    assert [type(e) for e in ours_seen] == [Connected] and [type(e) for e in theirs_seen] == [Connected]
    assert ours_seen[0].remote_init.networks is not None and theirs_seen[0].remote_init.networks == (
        REGTEST.chain_hash,)
    # A Lightspeed node configured with their feature set accepts ours as well.
    negotiate(theirs, DEFAULT_FEATURES)


ELECTRUM_CHECK = """
import sys
from electrum.lnutil import ln_compare_features, validate_features
from electrum.lnworker import LNWALLET_FEATURES
ours = int(sys.argv[1], 16)
validate_features(ours)  # raises on an even bit Electrum does not implement, or a missing dependency
ln_compare_features(LNWALLET_FEATURES, ours)  # raises if either side lacks what the other requires
print(int(LNWALLET_FEATURES))
from electrum import constants
constants.set_regtest()
print(constants.net.rev_genesis_bytes().hex())  # the chain its init's networks TLV names
"""


def test_electrum_4_3_4_itself_accepts_our_init_features() -> None:
    """Run Debian's python3-electrum: its own checks on our init, and its real feature set."""
    done = subprocess.run(["/usr/bin/python3", "-c", ELECTRUM_CHECK, DEFAULT_FEATURES.to_bytes().hex()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    bits_line, regtest_chain = done.stdout.split()
    assert bytes.fromhex(regtest_chain) == REGTEST.chain_hash  # our networks check lets Electrum in
    electrum_bits = int(bits_line)
    assert Features(frozenset(i for i in range(electrum_bits.bit_length()) if electrum_bits >> i & 1)) == Features(
        ELECTRUM_4_3_4)


def test_our_init_advertises_what_we_implement_with_the_right_parity() -> None:
    assert DEFAULT_FEATURES.bits == {0, 8, 12, 14, 7, 11, 17, 23, 25, 39, 45}  # 25: route blinding, 39: onion messages
    # Required only what we cannot work without, every ASSUMED feature among them or offered.
    assert {b & ~1 for b in DEFAULT_FEATURES.bits} >= ASSUMED
    DEFAULT_FEATURES.check("I")  # contexts, one bit per pair, dependencies


@pytest.mark.parametrize(("required", "named"), [(100, b"100 (unknown)"), (28, b"28 (option_dual_fund)")])
def test_a_peer_requiring_what_we_lack_gets_a_warning_naming_the_bits_and_is_disconnected(
        required: int, named: bytes) -> None:
    ours_seen, theirs_seen = connect_sessions(DEFAULT_FEATURES, Features(ELECTRUM_4_3_4 | {required}))
    assert isinstance(ours_seen[-1], Disconnected) and named.decode() in ours_seen[-1].reason
    warnings = [e.message for e in theirs_seen if isinstance(e, MessageReceived)]
    assert len(warnings) == 1 and isinstance(warnings[0], Warning) and named in warnings[0].data
    # An unknown odd bit is fine ("it's OK to be odd").
    ours_seen, _ = connect_sessions(DEFAULT_FEATURES, Features(ELECTRUM_4_3_4 | {required + 1}))
    assert [type(e) for e in ours_seen] == [Connected]


def test_a_peer_that_sets_no_assumed_bit_still_has_those_features() -> None:
    bare = Features(frozenset({7, 17}))  # gossip_queries, basic_mpp: not even payment_secret (its dependency)
    common = negotiate(DEFAULT_FEATURES, bare)
    assert all(common.supports(name) for name in ("option_data_loss_protect", "var_onion_optin",
                                                  "option_static_remotekey", "payment_secret",
                                                  "option_channel_type"))
    assert not common.supports("option_anchors")
    # It never offered option_channel_type: an open without the TLV means static_remotekey.
    assert implied_channel_type(DEFAULT_FEATURES, bare) == STATIC_REMOTEKEY
    assert implied_channel_type(DEFAULT_FEATURES, Features(frozenset({23}))) == ANCHORS
    with pytest.raises(PeerProtocolError, match="dependency option_scid_alias"):
        negotiate(DEFAULT_FEATURES, Features(frozenset({51})))  # a dependency that is not ASSUMED


@pytest.mark.parametrize(("bits", "expected_type"), PEERS)
def test_a_node_that_does_not_list_the_assumed_features_still_accepts_peers_requiring_them(
        bits: frozenset[int], expected_type: ChannelType) -> None:
    """Issue 12: "peer requires feature bits we do not support: 0 (option_data_loss_protect)"."""
    minimal = Features.of(optional=["var_onion_optin", "gossip_queries", "option_anchors"])  # 4.8.1 requires anchors
    common = negotiate(minimal, Features(bits))
    assert common.supports("var_onion_optin")


@pytest.mark.parametrize(("their_networks", "connected"), [
    ((BITCOIN.chain_hash,), False),
    ((), False),
    ((BITCOIN.chain_hash, REGTEST.chain_hash), True),
    (None, True),
])
def test_a_peer_whose_networks_exclude_our_chain_is_warned_and_disconnected(
        their_networks: tuple[bytes, ...] | None, connected: bool) -> None:
    ours_seen, theirs_seen = connect_sessions(DEFAULT_FEATURES, Features(ELECTRUM_4_3_4),
                                              our_networks=(REGTEST.chain_hash,), their_networks=their_networks)
    if connected:
        assert [type(e) for e in ours_seen] == [Connected]
        return
    assert isinstance(ours_seen[-1], Disconnected) and "no common chain" in ours_seen[-1].reason
    assert isinstance(theirs_seen[-1], Disconnected)  # (a Lightspeed peer refuses us for the same reason)


POLICY = ChannelPolicy(chain_hash=REGTEST.chain_hash)
STATIC_ONLY = dataclasses.replace(POLICY, channel_types=(STATIC_REMOTEKEY,))
POINTS = {name: pubkey_from_privkey(bytes([i + 1]) * 32) for i, name in enumerate(
    ("funding_pubkey", "revocation_basepoint", "payment_basepoint", "delayed_payment_basepoint",
     "htlc_basepoint", "first_per_commitment_point"))}


def open_channel(channel_type: ChannelType | None) -> Any:
    tlvs: dict[str | int, Any] = {"upfront_shutdown_script": {"shutdown_scriptpubkey": b""}}
    if channel_type is not None:
        tlvs["channel_type"] = {"type": channel_type.to_bytes()}
    message = make_message(
        "open_channel", tlvs=tlvs, chain_hash=REGTEST.chain_hash, temporary_channel_id=b"\x07" * 32,
        funding_satoshis=1_000_000, push_msat=0, dust_limit_satoshis=546, max_htlc_value_in_flight_msat=10**9,
        channel_reserve_satoshis=10_000, htlc_minimum_msat=1000, feerate_per_kw=2500, to_self_delay=144,
        max_accepted_htlcs=30, channel_flags=b"\x00", **POINTS)
    return decode_message(encode_message(message))


def accept_channel(channel_type: ChannelType | None) -> Any:
    tlvs: dict[str | int, Any] = {}
    if channel_type is not None:
        tlvs["channel_type"] = {"type": channel_type.to_bytes()}
    return decode_message(encode_message(make_message(
        "accept_channel", tlvs=tlvs, temporary_channel_id=b"\x07" * 32, dust_limit_satoshis=546,
        max_htlc_value_in_flight_msat=10**9, channel_reserve_satoshis=10_000, htlc_minimum_msat=1000,
        minimum_depth=3, to_self_delay=144, max_accepted_htlcs=30, **POINTS)))


def test_an_open_without_channel_type_follows_the_negotiated_features() -> None:
    old_peer = Features(frozenset({1, 7, 9, 13, 15}))  # never heard of option_channel_type
    implied = implied_channel_type(DEFAULT_FEATURES, old_peer)
    assert check_open_channel(open_channel(None), POLICY, DEFAULT_FEATURES, implied) == STATIC_REMOTEKEY
    with_anchors = implied_channel_type(DEFAULT_FEATURES, old_peer | Features(frozenset({23})))
    assert check_open_channel(open_channel(None), POLICY, DEFAULT_FEATURES, with_anchors) == ANCHORS
    # A peer that offered option_channel_type must send it (BOLT 2: MUST fail the channel).
    required = implied_channel_type(DEFAULT_FEATURES, Features(ELECTRUM_4_3_4))
    with pytest.raises(PeerProtocolError, match="no channel_type"):
        check_open_channel(open_channel(None), POLICY, DEFAULT_FEATURES, required)
    # A node without option_anchors finds an anchors type unsuitable.
    with pytest.raises(PeerProtocolError, match="not one we support"):
        check_open_channel(open_channel(ANCHORS), STATIC_ONLY, Features(ELECTRUM_4_3_4))
    # The funder's side: an accept without the TLV from such a peer means the type we proposed.
    sent = open_channel(STATIC_REMOTEKEY)
    assert check_accept_channel(accept_channel(None), sent, POLICY, implied) == STATIC_REMOTEKEY
    with pytest.raises(PeerProtocolError, match="no channel_type"):
        check_accept_channel(accept_channel(None), sent, POLICY, None)
    with pytest.raises(PeerProtocolError, match="differs"):
        check_accept_channel(accept_channel(None), open_channel(ANCHORS), POLICY, implied)


def _dance(payer: Channel, payee: Channel, amount_msat: int, preimage: bytes) -> None:
    """One payment payer -> payee, both commitments signed and revoked each way."""
    def sign_round(signer: Channel, other: Channel) -> None:
        replies, _ = other.receive(signer.sign())
        for reply in replies:
            signer.receive(reply)
        replies, _ = signer.receive(other.sign())
        for reply in replies:
            other.receive(reply)

    add = payer.add_htlc(amount_msat, sha256(preimage), 700)
    payee.receive(add)
    sign_round(payer, payee)
    payer.receive(payee.fulfill_htlc(add.id, preimage))
    sign_round(payee, payer)


@pytest.mark.parametrize("anchors", [True, False])
def test_channel_reestablish_carries_the_data_loss_protect_fields_electrum_checks(anchors: bool) -> None:
    alice, bob = channel_pair(1_000_000, anchors=anchors)
    message = alice.reestablish_message()
    # BOLT 2: if next_revocation_number equals 0: MUST set your_last_per_commitment_secret to all zeroes.
    assert message.next_revocation_number == 0 and message.your_last_per_commitment_secret == bytes(32)
    for n in range(3):
        _dance(alice, bob, 10_000_000, bytes([n + 1]) * 32)
        for sender, receiver in ((alice, bob), (bob, alice)):
            message = sender.reestablish_message()
            # Electrum's check (lnpeer.on_channel_reestablish): the secret of the receiver's
            # commitment next_revocation_number - 1, i.e. the last per_commitment_secret received.
            assert message.next_revocation_number > 0
            assert message.your_last_per_commitment_secret == receiver.local_secret(
                message.next_revocation_number - 1)
            assert message.your_last_per_commitment_secret == sender.remote_secrets.get(
                2**48 - 1 - (message.next_revocation_number - 1))
            # The point of the sender's commitment it would close with (its latest, signed by the peer).
            assert message.my_current_per_commitment_point == sender.local_point(message.next_commitment_number - 1)
            assert receiver.receive_reestablish(message) == []  # and our own checks accept it


def test_for_context_keeps_the_bits_a_field_may_carry() -> None:
    node_ann = DEFAULT_FEATURES.for_context("N")
    assert node_ann.bits == {0, 8, 12, 14, 11, 17, 23, 25, 39, 45}  # gossip_queries (7) has no N context
    assert DEFAULT_FEATURES.for_context("9").bits == {0, 8, 12, 14, 17, 25, 45}
    assert Features(frozenset({101, 23})).for_context("N").bits == {23}  # unknown bits are not ours to set


INVOICE_CHECK = """
import sys
from electrum import constants
constants.set_regtest()
from electrum.lnaddr import lndecode
from electrum.lnutil import validate_features
features = lndecode(sys.argv[1]).get_features()
validate_features(features)
print(sorted(features.get_names()))
"""


def test_our_invoices_features_pass_electrums_checks() -> None:
    """invoice.encode's DEFAULT_FEATURES: var_onion_optin and payment_secret required, basic_mpp optional."""
    invoice = build_invoice(network=REGTEST, amount_msat=10_000, description="electrum", payment_hash=os.urandom(32),
                            payment_secret=os.urandom(32), timestamp=1_700_000_000, expiry=3600, payee=None,
                            route_hints=()).sign(b"\x01" * 32)
    done = subprocess.run(["/usr/bin/python3", "-c", INVOICE_CHECK, invoice.encode()],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['BASIC_MPP_OPT', 'PAYMENT_SECRET_REQ', 'VAR_ONION_REQ']"
