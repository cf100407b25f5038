"""Two Channel machines through memory: real signatures both ways, then the result confirmed on regtest."""

from __future__ import annotations

import os

import pytest

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.chain import RegtestChain
from lightspeed.channel.commitment import funding_script
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.state import Channel, ChannelConfig, LocalSecrets
from lightspeed.codec.generated import CommitmentSigned
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PeerProtocolError

FUNDING_SAT = 1_000_000


def _secrets(tag: int) -> LocalSecrets:
    return LocalSecrets(*(bytes([tag + i]) * 32 for i in range(6)))


def open_pair(chain: RegtestChain | None = None, anchors: bool = True) -> tuple[Channel, Channel]:
    alice_s, bob_s = _secrets(1), _secrets(21)
    if chain is not None:
        fscript = funding_script(alice_s.basepoints().funding_pubkey, bob_s.basepoints().funding_pubkey)
        outpoint = chain.fund(p2wsh_script(fscript), FUNDING_SAT)
        txid, index = outpoint.txid, outpoint.index
    else:
        txid, index = os.urandom(32), 0
    return channel_pair(FUNDING_SAT, 800_000_000, anchors=anchors, funding_txid=txid, funding_output_index=index,
                        funder_secrets=alice_s, fundee_secrets=bob_s)


def wire(message: object) -> object:
    return decode_message(encode_message(message))  # type: ignore[arg-type]


def exchange_commitments(signer: Channel, other: Channel) -> None:
    """signer signs -> other revokes -> other signs -> signer revokes (over the wire format)."""
    replies, _ = other.receive(wire(signer.sign()))  # type: ignore[arg-type]
    for reply in replies:
        signer.receive(wire(reply))  # type: ignore[arg-type]
    replies, _ = signer.receive(wire(other.sign()))  # type: ignore[arg-type]
    for reply in replies:
        other.receive(wire(reply))  # type: ignore[arg-type]


def test_payment_round_trip_with_real_signatures() -> None:
    alice, bob = open_pair()
    preimage = b"\x55" * 32
    bob.receive(wire(alice.add_htlc(100_000_000, sha256(preimage), 700)))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    assert [h.amount_msat for h in bob.log.commitment(Side.LOCAL).htlcs] == [100_000_000]
    _, fulfilled = alice.receive(wire(bob.fulfill_htlc(0, preimage)))  # type: ignore[arg-type]
    assert fulfilled[0].preimage == preimage
    exchange_commitments(bob, alice)
    assert alice.log.commitment(Side.LOCAL).to_local_msat == 700_000_000
    assert bob.log.commitment(Side.LOCAL).to_local_msat == 300_000_000
    # Both sides hold the same view of each commitment, transaction for transaction.
    assert alice.commitment(Side.LOCAL).tx == bob.commitment(Side.REMOTE).tx
    assert bob.commitment(Side.LOCAL).tx == alice.commitment(Side.REMOTE).tx
    assert len(bob.remote_secrets) == 2 and len(alice.remote_secrets) == 2


@pytest.mark.parametrize("anchors", [True, False])
def test_force_close_transaction_is_accepted_by_the_chain(anchors: bool) -> None:
    chain = RegtestChain(":memory:")
    alice, bob = open_pair(chain, anchors)
    height = chain.tip()[0]
    for i in range(3):  # three HTLCs in flight, so HTLC signatures are exchanged and checked
        bob.receive(wire(alice.add_htlc(50_000_000 + i, sha256(bytes([i]) * 32), height + 100)))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    closing = bob.signed_local_commitment()
    chain.broadcast(closing)  # real 2-of-2 witness, executed by the interpreter
    chain.mine(1)
    assert chain.get_transaction(closing.txid) == (closing, 1)


def test_bad_signatures_and_bad_secrets_fail_the_channel() -> None:
    alice, bob = open_pair()
    bob.receive(wire(alice.add_htlc(10_000_000, sha256(b"x" * 32), 700)))  # type: ignore[arg-type]
    signed = alice.sign()
    forged = CommitmentSigned(channel_id=signed.channel_id, signature=signed.signature[:-1] + bytes([signed.signature[-1] ^ 1]),
                              htlc_signature=signed.htlc_signature)
    with pytest.raises(PeerProtocolError, match="does not verify"):
        bob.receive(forged)

    alice, bob = open_pair()
    bob.receive(wire(alice.add_htlc(10_000_000, sha256(b"x" * 32), 700)))  # type: ignore[arg-type]
    replies, _ = bob.receive(wire(alice.sign()))  # type: ignore[arg-type]
    revoke = replies[0]
    bad = type(revoke)(channel_id=revoke.channel_id, per_commitment_secret=b"\x01" * 32,  # type: ignore[call-arg]
                       next_per_commitment_point=revoke.next_per_commitment_point)  # type: ignore[attr-defined]
    with pytest.raises(PeerProtocolError, match="per_commitment_secret"):
        alice.receive(bad)


def test_htlc_limits_are_enforced_on_receipt() -> None:
    from lightspeed.codec.generated import UpdateAddHtlc

    alice, bob = open_pair()
    bob.receive(wire(alice.add_htlc(700_000_000, sha256(b"a" * 32), 700)))  # type: ignore[arg-type]

    def add(htlc_id: int, amount: int, cltv: int = 700, to: Channel = bob) -> UpdateAddHtlc:
        return UpdateAddHtlc(channel_id=to.config.channel_id, id=htlc_id, amount_msat=amount,
                             payment_hash=sha256(b"b" * 32), cltv_expiry=cltv, onion_routing_packet=bytes(1366))

    _, bob2 = open_pair()
    with pytest.raises(PeerProtocolError, match="exceeds the peer's balance"):
        bob2.receive(add(0, 800_000_001, to=bob2))
    with pytest.raises(PeerProtocolError, match="below our htlc_minimum_msat"):
        bob2.receive(add(0, 0, to=bob2))
    with pytest.raises(PeerProtocolError, match="not a block height"):
        bob2.receive(add(0, 1000, cltv=500_000_000, to=bob2))
    with pytest.raises(PeerProtocolError, match="expected 1"):
        bob.receive(add(5, 1000))
    for htlc_id in range(1, 30):
        bob.receive(add(htlc_id, 1000))
    with pytest.raises(PeerProtocolError, match="max_accepted_htlcs"):
        bob.receive(add(30, 1000))


def test_open_fund_confirm_pay_and_force_close_on_regtest() -> None:
    """BOLT 2 establishment end to end: open/accept checked, wallet funds, signatures exchanged
    before broadcast, channel_ready, a payment, and a force close the chain accepts."""
    from lightspeed.bitcoin.network import REGTEST
    from lightspeed.bitcoin.tx import TxOut
    from lightspeed.chain import Wallet
    from lightspeed.channel.establish import (
        ANCHORS,
        ChannelPolicy,
        check_accept_channel,
        check_open_channel,
    )
    from lightspeed.channel.state import channel_id_from_funding
    from lightspeed.codec.features import Features
    from lightspeed.codec.generated import AcceptChannel, FundingCreated, FundingSigned, OpenChannel
    from lightspeed.codec.messages import make_message

    chain = RegtestChain(":memory:")
    wallet = Wallet(b"alice wallet seed....", chain)
    chain.fund(wallet.new_key().script_pubkey, 2_000_000)
    alice_s, bob_s = _secrets(1), _secrets(21)
    a_b, b_b = alice_s.basepoints(), bob_s.basepoints()
    policy = ChannelPolicy(chain_hash=REGTEST.chain_hash)
    temp_id = b"\x09" * 32
    bob_first = Channel(ChannelConfig(temp_id, bytes(32), 0, 1, False, True, a_b, 546, 546, 144, 144), bob_s, 0, 0, 2500, {})
    alice_first = Channel(ChannelConfig(temp_id, bytes(32), 0, 1, True, True, b_b, 546, 546, 144, 144), alice_s, 0, 0, 2500, {})
    open_msg = make_message(
        "open_channel", tlvs={"upfront_shutdown_script": {"shutdown_scriptpubkey": b""},
                              "channel_type": {"type": ANCHORS.to_bytes()}},
        chain_hash=REGTEST.chain_hash, temporary_channel_id=temp_id, funding_satoshis=FUNDING_SAT, push_msat=0,
        dust_limit_satoshis=546, max_htlc_value_in_flight_msat=10**9, channel_reserve_satoshis=10_000,
        htlc_minimum_msat=1, feerate_per_kw=2500, to_self_delay=144, max_accepted_htlcs=30,
        funding_pubkey=a_b.funding_pubkey, revocation_basepoint=a_b.revocation_basepoint,
        payment_basepoint=a_b.payment_basepoint, delayed_payment_basepoint=a_b.delayed_payment_basepoint,
        htlc_basepoint=a_b.htlc_basepoint, first_per_commitment_point=alice_first.local_point(0), channel_flags=b"\x00")
    open_msg = wire(open_msg)
    assert isinstance(open_msg, OpenChannel)
    check_open_channel(open_msg, policy, Features())
    accept = wire(make_message(
        "accept_channel", tlvs={"channel_type": {"type": ANCHORS.to_bytes()}}, temporary_channel_id=temp_id,
        dust_limit_satoshis=546, max_htlc_value_in_flight_msat=10**9, channel_reserve_satoshis=10_000,
        htlc_minimum_msat=1, minimum_depth=3, to_self_delay=144, max_accepted_htlcs=30,
        funding_pubkey=b_b.funding_pubkey, revocation_basepoint=b_b.revocation_basepoint,
        payment_basepoint=b_b.payment_basepoint, delayed_payment_basepoint=b_b.delayed_payment_basepoint,
        htlc_basepoint=b_b.htlc_basepoint, first_per_commitment_point=bob_first.local_point(0)))
    assert isinstance(accept, AcceptChannel)
    check_accept_channel(accept, open_msg, policy)

    # Alice builds (but does not yet broadcast) the funding transaction.
    funding_tx = wallet.create_transaction([TxOut(FUNDING_SAT, p2wsh_script(funding_script(a_b.funding_pubkey, b_b.funding_pubkey)))])
    channel_id = channel_id_from_funding(funding_tx.txid, 0)

    def config(funder: bool, remote: LocalSecrets) -> ChannelConfig:
        return ChannelConfig(channel_id, funding_tx.txid, 0, FUNDING_SAT, funder, True, remote.basepoints(),
                             546, 546, 144, 144)

    alice = Channel(config(True, bob_s), alice_s, FUNDING_SAT * 1000, 0, 2500, {0: accept.first_per_commitment_point})
    bob = Channel(config(False, alice_s), bob_s, 0, FUNDING_SAT * 1000, 2500, {0: open_msg.first_per_commitment_point})
    created = wire(FundingCreated(temporary_channel_id=temp_id, funding_txid=funding_tx.txid, funding_output_index=0,
                                  signature=alice.initial_signature()))
    assert isinstance(created, FundingCreated)
    bob.receive_initial_signature(created.signature)
    signed = wire(FundingSigned(channel_id=channel_id, signature=bob.initial_signature()))
    assert isinstance(signed, FundingSigned)
    alice.receive_initial_signature(signed.signature)  # only now is broadcasting safe
    chain.broadcast(funding_tx)
    chain.mine(3)
    alice.receive_channel_ready(bob.channel_ready())
    bob.receive_channel_ready(alice.channel_ready())

    preimage = b"\x77" * 32
    bob.receive(wire(alice.add_htlc(250_000_000, sha256(preimage), chain.tip()[0] + 40)))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    alice.receive(wire(bob.fulfill_htlc(0, preimage)))  # type: ignore[arg-type]
    exchange_commitments(bob, alice)
    assert bob.log.commitment(Side.LOCAL).to_local_msat == 250_000_000
    closing = bob.signed_local_commitment()
    chain.broadcast(closing)
    chain.mine(1)
    assert chain.get_transaction(closing.txid) == (closing, 1)


def test_the_sender_respects_the_peers_max_accepted_htlcs() -> None:
    from lightspeed.errors import UsageError

    alice, _ = open_pair()
    for i in range(30):
        alice.add_htlc(1000, sha256(bytes([i]) * 32), 700)
    with pytest.raises(UsageError, match="at most 30"):
        alice.add_htlc(1000, sha256(b"x" * 32), 700)


@pytest.mark.parametrize("anchors", [True, False])
def test_a_cheater_broadcasting_a_revoked_commitment_loses_everything(anchors: bool) -> None:
    from lightspeed.bitcoin.script import p2wpkh_script
    from lightspeed.channel.penalty import build_penalty_tx, revoked_commitment_number
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey

    chain = RegtestChain(":memory:")
    alice, bob = open_pair(chain, anchors)
    height = chain.tip()[0]
    # Alice pays Bob 300k sat with an HTLC they both commit to, leaving an HTLC in flight too.
    preimage = b"\x66" * 32
    bob.receive(wire(alice.add_htlc(300_000_000, sha256(preimage), height + 80)))  # type: ignore[arg-type]
    bob.receive(wire(alice.add_htlc(50_000_000, sha256(b"z" * 32), height + 90)))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    old_bob_commitment = bob.signed_local_commitment()  # Bob keeps a copy...
    alice.receive(wire(bob.fulfill_htlc(0, preimage)))  # type: ignore[arg-type]
    exchange_commitments(bob, alice)  # ...which is now revoked: Alice holds its secret
    assert revoked_commitment_number(alice, old_bob_commitment) == 1

    chain.broadcast(old_bob_commitment)  # Bob cheats
    chain.mine(1)
    alice_wallet = p2wpkh_script(pubkey_from_privkey(b"\x44" * 32))
    penalty = build_penalty_tx(alice, old_bob_commitment, alice_wallet, 2500)
    chain.broadcast(penalty)  # at once: no CSV delay on the revocation branches
    chain.mine(1)
    assert chain.get_transaction(penalty.txid) == (penalty, 1)
    # Bob's to_local and both HTLC outputs went to Alice: only Alice's own to_remote (and anchors) remain.
    swept = {txin.prevout.index for txin in penalty.inputs}
    bob_keeps = [out.value_sat for i, out in enumerate(old_bob_commitment.outputs) if i not in swept and out.value_sat > 330]
    assert sum(bob_keeps) <= 450_000  # only Alice's own balance (800k - 350k in HTLCs - fees) is left
    assert penalty.outputs[0].value_sat > 540_000  # Bob's 200k + both HTLCs (350k) - the penalty fee


@pytest.mark.parametrize(("bob_range", "agreed_fee"), [((200, 800), 500), ((600, 900), 600)])
def test_mutual_close_negotiates_a_fee_and_confirms(bob_range: tuple[int, int], agreed_fee: int) -> None:
    from lightspeed.bitcoin.script import p2wpkh_script
    from lightspeed.channel.closing import ClosingNegotiation
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey

    chain = RegtestChain(":memory:")
    alice, bob = open_pair(chain)
    preimage = b"\x12" * 32
    bob.receive(wire(alice.add_htlc(250_000_000, sha256(preimage), chain.tip()[0] + 40)))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    alice.receive(wire(bob.fulfill_htlc(0, preimage)))  # type: ignore[arg-type]
    exchange_commitments(bob, alice)
    a_script, b_script = p2wpkh_script(pubkey_from_privkey(b"\x0a" * 32)), p2wpkh_script(pubkey_from_privkey(b"\x0b" * 32))
    a_close = ClosingNegotiation.start(alice, a_script, b_script, 300, 1000)
    b_close = ClosingNegotiation.start(bob, b_script, a_script, *bob_range)
    message = wire(a_close.propose(500))
    while a_close.agreed is None or b_close.agreed is None:
        reply = b_close.receive(message)  # type: ignore[arg-type]
        if reply is None:
            break
        answer = a_close.receive(wire(reply))  # type: ignore[arg-type]
        if answer is None:
            break
        message = wire(answer)
    assert a_close.agreed is not None and a_close.agreed == b_close.agreed
    closing = a_close.agreed
    chain.broadcast(closing)
    chain.mine(1)
    paid = {out.script_pubkey: out.value_sat for out in closing.outputs}
    assert paid[b_script] == 450_000  # Bob's 200k + the 250k payment; Alice (funder) pays the fee
    assert paid[a_script] == 550_000 - agreed_fee



def test_update_fee_is_committed_like_any_update() -> None:
    from lightspeed.codec.generated import UpdateFee
    from lightspeed.errors import UsageError

    alice, bob = open_pair()
    with pytest.raises(UsageError, match="only the funder"):
        bob.update_fee(5000)
    bob.receive(wire(alice.update_fee(5000)))  # type: ignore[arg-type]
    assert bob.log.commitment(Side.LOCAL).feerate_per_kw == 2500  # not committed yet
    exchange_commitments(alice, bob)
    for channel in (alice, bob):
        for owner in Side:
            assert channel.log.commitment(owner).feerate_per_kw == 5000
    assert alice.commitment(Side.LOCAL).tx == bob.commitment(Side.REMOTE).tx
    with pytest.raises(PeerProtocolError, match="does not pay the fee"):
        alice.receive(UpdateFee(channel_id=alice.config.channel_id, feerate_per_kw=3000))
    with pytest.raises(PeerProtocolError, match="out of bounds"):
        bob.receive(UpdateFee(channel_id=bob.config.channel_id, feerate_per_kw=10))


def _reconnect(a: Channel, b: Channel) -> tuple[list[object], list[object]]:
    """Both sides forget uncommitted updates, exchange channel_reestablish, return their retransmissions."""
    a.disconnected()
    b.disconnected()
    a_msg, b_msg = wire(a.reestablish_message()), wire(b.reestablish_message())
    return a.receive_reestablish(b_msg), b.receive_reestablish(a_msg)  # type: ignore[arg-type, return-value]


def test_reestablish_after_a_lost_commitment_signed_retransmits_it() -> None:
    alice, bob = open_pair()
    preimage = b"\x31" * 32
    add = alice.add_htlc(100_000_000, sha256(preimage), 700)
    bob.receive(wire(add))  # type: ignore[arg-type]
    alice.sign()  # ... lost on the way: the connection drops
    from_alice, from_bob = _reconnect(alice, bob)
    assert from_bob == []
    assert [type(m).__name__ for m in from_alice] == ["UpdateAddHtlc", "CommitmentSigned"]
    for m in from_alice:
        replies, _ = bob.receive(wire(m))  # type: ignore[arg-type]
        for reply in replies:
            alice.receive(wire(reply))  # type: ignore[arg-type]
    replies, _ = alice.receive(wire(bob.sign()))  # type: ignore[arg-type]
    bob.receive(wire(replies[0]))  # type: ignore[arg-type]
    assert alice.commitment(Side.LOCAL).tx == bob.commitment(Side.REMOTE).tx
    assert [h.amount_msat for h in bob.log.commitment(Side.LOCAL).htlcs] == [100_000_000]


def test_reestablish_after_a_lost_revoke_and_ack_retransmits_it() -> None:
    alice, bob = open_pair()
    bob.receive(wire(alice.add_htlc(100_000_000, sha256(b"q" * 32), 700)))  # type: ignore[arg-type]
    bob.receive(wire(alice.sign()))  # type: ignore[arg-type]  # bob's revoke_and_ack is lost
    from_alice, from_bob = _reconnect(alice, bob)
    assert [type(m).__name__ for m in from_bob] == ["RevokeAndAck"] and from_alice == []
    alice.receive(wire(from_bob[0]))  # type: ignore[arg-type]
    replies, _ = alice.receive(wire(bob.sign()))  # type: ignore[arg-type]
    bob.receive(wire(replies[0]))  # type: ignore[arg-type]
    assert alice.commitment(Side.LOCAL).tx == bob.commitment(Side.REMOTE).tx


def test_uncommitted_updates_are_forgotten_and_ids_reused() -> None:
    alice, bob = open_pair()
    bob.receive(wire(alice.add_htlc(5_000_000, sha256(b"r" * 32), 700)))  # type: ignore[arg-type]
    from_alice, from_bob = _reconnect(alice, bob)  # never signed: both forget it
    assert from_alice == from_bob == []
    again = alice.add_htlc(6_000_000, sha256(b"s" * 32), 700)
    assert again.id == 0
    bob.receive(wire(again))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    assert [h.amount_msat for h in bob.log.commitment(Side.LOCAL).htlcs] == [6_000_000]


def test_reestablish_detects_that_we_lost_data() -> None:
    from lightspeed.channel.state import DataLossError

    alice, bob = open_pair()
    bob.receive(wire(alice.add_htlc(5_000_000, sha256(b"t" * 32), 700)))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    stale_alice, _ = open_pair()  # alice restored from an old backup: knows nothing of that
    stale_alice.config = alice.config  # same channel
    with pytest.raises(DataLossError):
        stale_alice.receive_reestablish(wire(bob.reestablish_message()))  # type: ignore[arg-type]
    with pytest.raises(PeerProtocolError, match="next_commitment_number"):
        bob.receive_reestablish(wire(stale_alice.reestablish_message()))  # type: ignore[arg-type]


def test_reserve_in_flight_minimum_and_malformed_rules() -> None:
    import dataclasses

    from lightspeed.codec.generated import UpdateAddHtlc, UpdateFailMalformedHtlc
    from lightspeed.errors import UsageError

    alice, bob = open_pair()
    alice.config = dataclasses.replace(alice.config, reserve_for_local_sat=600_000, remote_htlc_minimum_msat=5000,
                                       remote_max_htlc_value_in_flight_msat=150_000_000)
    bob.config = dataclasses.replace(bob.config, reserve_from_remote_sat=600_000)
    with pytest.raises(UsageError, match="htlc_minimum_msat"):
        alice.add_htlc(4999, sha256(b"m" * 32), 700)
    with pytest.raises(UsageError, match="above our reserve"):
        alice.add_htlc(199_000_000, sha256(b"m" * 32), 700)  # 800k - fees - 199k < 600k reserve
    alice.add_htlc(100_000_000, sha256(b"m" * 32), 700)
    with pytest.raises(UsageError, match="max_htlc_value_in_flight_msat"):
        alice.add_htlc(60_000_000, sha256(b"n" * 32), 700)
    over_reserve = UpdateAddHtlc(channel_id=bob.config.channel_id, id=0, amount_msat=199_000_000,
                                 payment_hash=sha256(b"m" * 32), cltv_expiry=700, onion_routing_packet=bytes(1366))
    with pytest.raises(PeerProtocolError, match="above its reserve"):
        bob.receive(over_reserve)
    # A malformed-onion failure must carry the BADONION bit.
    carol, dave = open_pair()
    dave.receive(wire(carol.add_htlc(10_000_000, sha256(b"o" * 32), 700)))  # type: ignore[arg-type]
    exchange_commitments(carol, dave)
    with pytest.raises(UsageError, match="BADONION"):
        dave.fail_malformed_htlc(0, bytes(32), 0x4000 | 5)
    carol.receive(wire(dave.fail_malformed_htlc(0, bytes(32), 0x8000 | 0x4000 | 5)))  # type: ignore[arg-type]
    exchange_commitments(dave, carol)
    assert carol.log.commitment(Side.LOCAL).htlcs == ()
    bad = UpdateFailMalformedHtlc(channel_id=carol.config.channel_id, id=0, sha256_of_onion=bytes(32), failure_code=5)
    with pytest.raises(PeerProtocolError, match="BADONION"):
        carol.receive(bad)


@pytest.mark.parametrize("anchors", [True, False])
def test_unilateral_close_every_wait_enforced_by_the_chain(anchors: bool) -> None:
    from lightspeed.bitcoin.script import p2wpkh_script
    from lightspeed.channel.sweep import force_close, sweep_delayed
    from lightspeed.crypto.secp256k1 import pubkey_from_privkey
    from lightspeed.errors import RejectedTransaction

    chain = RegtestChain(":memory:")
    alice, bob = open_pair(chain, anchors)
    height = chain.tip()[0]
    mine = b"\x21" * 32  # Bob's HTLC to Alice: Alice knows the preimage
    bob.receive(wire(alice.add_htlc(60_000_000, sha256(b"never" * 6 + b"xx"), height + 20)))  # type: ignore[arg-type]
    exchange_commitments(alice, bob)
    alice.receive(wire(bob.add_htlc(40_000_000, sha256(mine), height + 30)))  # type: ignore[arg-type]
    exchange_commitments(bob, alice)
    close = force_close(alice, {sha256(mine): mine})
    chain.broadcast(close.commitment)
    chain.mine(1)
    wallet = p2wpkh_script(pubkey_from_privkey(b"\x5a" * 32))
    timeout_tx = next(tx for out, tx in close.htlc_txs if out.htlc.offered)
    success_tx = next(tx for out, tx in close.htlc_txs if not out.htlc.offered)
    assert timeout_tx is not None and success_tx is not None
    with pytest.raises(RejectedTransaction, match="locktime"):
        chain.broadcast(timeout_tx)  # the offered HTLC cannot be timed out before its cltv_expiry
    chain.broadcast(success_tx)  # the received one is claimed with the preimage at once
    assert close.to_local_index is not None
    early = sweep_delayed(alice, close, close.commitment, close.to_local_index, wallet, 2500)
    with pytest.raises(RejectedTransaction, match="relative locktime"):
        chain.broadcast(early)  # to_local waits to_self_delay (144) blocks
    chain.mine(20)
    chain.broadcast(timeout_tx)
    chain.mine(143)
    chain.broadcast(early)
    chain.mine(1)
    assert chain.get_transaction(early.txid)[1] == 1  # type: ignore[index]
    # The HTLC-success output is itself delayed: sweepable once it has 144 confirmations.
    sweep_success = sweep_delayed(alice, close, success_tx, 0, wallet, 2500)
    chain.broadcast(sweep_success)
