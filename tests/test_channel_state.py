"""Two Channel machines through memory: real signatures both ways, then the result confirmed on regtest."""

from __future__ import annotations

import os

import pytest

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.chain import RegtestChain
from lightspeed.channel.commitment import funding_script
from lightspeed.channel.htlc_log import Side
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
    alice_b, bob_b = alice_s.basepoints(), bob_s.basepoints()
    fscript = funding_script(alice_b.funding_pubkey, bob_b.funding_pubkey)
    if chain is not None:
        outpoint = chain.fund(p2wsh_script(fscript), FUNDING_SAT)
        txid, index = outpoint.txid, outpoint.index
    else:
        txid, index = os.urandom(32), 0
    channel_id = bytes(a ^ b for a, b in zip(txid, index.to_bytes(32, "big"), strict=True))

    def config(local_is_funder: bool, remote: LocalSecrets) -> ChannelConfig:
        return ChannelConfig(channel_id=channel_id, funding_txid=txid, funding_output_index=index,
                             funding_sat=FUNDING_SAT, local_is_funder=local_is_funder, anchors=anchors,
                             remote_basepoints=remote.basepoints(), local_dust_limit_sat=546,
                             remote_dust_limit_sat=546, local_to_self_delay=144, remote_to_self_delay=144)

    alice_probe = Channel(config(True, bob_s), alice_s, 0, 0, 2500, {})
    bob_probe = Channel(config(False, alice_s), bob_s, 0, 0, 2500, {})
    alice = Channel(config(True, bob_s), alice_s, 800_000_000, 200_000_000, 2500,
                    {0: bob_probe.local_point(0), 1: bob_probe.local_point(1)})
    bob = Channel(config(False, alice_s), bob_s, 200_000_000, 800_000_000, 2500,
                  {0: alice_probe.local_point(0), 1: alice_probe.local_point(1)})
    return alice, bob


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
