"""HTLCs in flight at a force close, resolved on the regtest chain by the watcher.

Two Channel machines through memory (real signatures), a real SQLite store and the
validating regtest chain: every lock (CSV, CLTV) is the chain's to enforce. The watcher
is the node's (``OnchainWatcher``); the node around it is replaced by plain callables.
"""

from __future__ import annotations

from pathlib import Path

from lightspeed.bitcoin.script import p2wpkh_script, p2wsh_script
from lightspeed.chain import RegtestChain
from lightspeed.channel.anchor_sweep import alone_anchor_fee
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.pair import channel_pair
from lightspeed.channel.resolve import SpendKind
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT, funding_script
from lightspeed.channel.serialize import (
    channel_from_record,
    channel_to_record,
    remote_commitment_record,
)
from lightspeed.channel.state import Channel, LocalSecrets
from lightspeed.codec.messages import decode_message, encode_message
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.node.onchain import (
    ChannelClosedOnChain,
    HtlcResolvedOnChain,
    OnchainEvent,
    OnchainWatcher,
    ResolutionFinished,
)
from lightspeed.store import SqliteStore, StoredChannel

FUNDING_SAT = 1_000_000
TO_SELF_DELAY = 144


def _secrets(tag: int) -> LocalSecrets:
    return LocalSecrets(*(bytes([tag + i]) * 32 for i in range(6)))


def _wire(message: object) -> object:
    return decode_message(encode_message(message))  # type: ignore[arg-type]


def _exchange(signer: Channel, other: Channel) -> None:
    replies, _ = other.receive(_wire(signer.sign()))  # type: ignore[arg-type]
    for reply in replies:
        signer.receive(_wire(reply))  # type: ignore[arg-type]
    replies, _ = signer.receive(_wire(other.sign()))  # type: ignore[arg-type]
    for reply in replies:
        other.receive(_wire(reply))  # type: ignore[arg-type]


def _open(chain: RegtestChain) -> tuple[Channel, Channel]:
    alice_s, bob_s = _secrets(1), _secrets(21)
    fscript = funding_script(alice_s.basepoints().funding_pubkey, bob_s.basepoints().funding_pubkey)
    outpoint = chain.fund(p2wsh_script(fscript), FUNDING_SAT)
    return channel_pair(FUNDING_SAT, 800_000_000, funding_txid=outpoint.txid, funding_output_index=outpoint.index,
                        funder_secrets=alice_s, fundee_secrets=bob_s)


class _Side:
    """One party's watcher over its own store, sweeping to its own script."""

    def __init__(self, tmp_path: Path, name: str, channel: Channel, chain: RegtestChain,
                 preimages: dict[bytes, bytes]) -> None:
        self.path = tmp_path / f"{name}.sqlite"
        self.store = SqliteStore(self.path)
        self.channel, self.chain, self.preimages = channel, chain, preimages
        self.script = p2wpkh_script(pubkey_from_privkey(sha256(name.encode())))
        cid = channel.config.channel_id
        with self.store.transaction():
            for ctn in channel.signed_remote:
                self.store.add_remote_commitment(cid, ctn, remote_commitment_record(channel, ctn))
            self.store.put_channel(cid, b"\x02" * 33, channel_to_record(channel), True)
        self.watcher = self._watcher()
        self.events: list[OnchainEvent] = []

    def _watcher(self) -> OnchainWatcher:
        def load(stored: StoredChannel) -> Channel:
            return channel_from_record(stored.state, stored.remote_commitments)

        return OnchainWatcher(self.chain, self.store, lambda: self.script, self.preimages.get, load)

    def restart(self) -> None:
        self.store.close()
        self.store = SqliteStore(self.path)
        self.watcher = self._watcher()

    def poll(self) -> None:
        cid = self.channel.config.channel_id
        open_channels = {} if cid in self.watcher.active() else {cid: self.channel}
        self.events += self.watcher.poll(open_channels)

    def swept_sat(self) -> int:
        return sum(u.output.value_sat for u in self.chain.unspent([self.script]))


def _run(chain: RegtestChain, sides: list[_Side], blocks: int) -> None:
    for _ in range(blocks):
        for side in sides:
            side.poll()
        chain.mine(1)
    for side in sides:
        side.poll()


def _setup(tmp_path: Path) -> tuple[RegtestChain, Channel, Channel, bytes, bytes, int]:
    """Alice offers Bob 60k sat (Bob knows the preimage); Bob offers Alice 40k sat (nobody does)."""
    chain = RegtestChain(":memory:")
    alice, bob = _open(chain)
    height = chain.tip()[0]
    to_bob = b"\x21" * 32
    bob.receive(_wire(alice.add_htlc(60_000_000, sha256(to_bob), height + 30)))  # type: ignore[arg-type]
    _exchange(alice, bob)
    never = b"\x22" * 32
    alice.receive(_wire(bob.add_htlc(40_000_000, sha256(never), height + 40)))  # type: ignore[arg-type]
    _exchange(bob, alice)
    return chain, alice, bob, to_bob, never, height


def test_our_commitment_htlcs_are_claimed_and_timed_out_through_htlc_transactions(tmp_path: Path) -> None:
    """Bob force closes. His received HTLC (60k) is claimed at once with HTLC-success, his offered
    one (40k) comes back through HTLC-timeout after its cltv_expiry; both outputs, and his to_local,
    wait to_self_delay. Alice, the peer, sweeps her to_remote after one confirmation."""
    chain, alice, bob, to_bob, never, _ = _setup(tmp_path)
    a = _Side(tmp_path, "alice", alice, chain, {})
    b = _Side(tmp_path, "bob", bob, chain, {sha256(to_bob): to_bob})
    commitment = bob.signed_local_commitment()
    chain.broadcast(commitment)  # what Node.force_close_channel does
    b.events.append(b.watcher.start(bob, commitment))
    _run(chain, [a, b], 3)
    assert ChannelClosedOnChain(bob.config.channel_id, SpendKind.LOCAL, commitment.txid) in b.events
    assert any(isinstance(e, ChannelClosedOnChain) and e.kind is SpendKind.REMOTE for e in a.events)
    # Bob still waits for his delays; his anchor is swept alone at once (1 sat/vbyte leaves 217 of 330)
    assert a.swept_sat() > 0 and b.swept_sat() == ANCHOR_OUTPUT_SAT - alone_anchor_fee(253, b.script) == 217
    b.restart()  # the resolution resumes from the store: same claims, same txids
    _run(chain, [a, b], TO_SELF_DELAY + 45)
    assert any(isinstance(e, ResolutionFinished) for e in b.events)
    assert any(isinstance(e, ResolutionFinished) for e in a.events)
    # Bob: his balance, the HTLC he had the preimage for, his own timed-out HTLC and his anchor, minus his
    # claim fees.
    bob_balance = bob.log.commitment(Side.LOCAL).to_local_msat // 1000
    assert b.swept_sat() == bob_balance + 60_000 + 40_000 + ANCHOR_OUTPUT_SAT - _fees_paid(chain, b.script)
    resolved = {(e.payment_hash, e.offered, e.preimage) for e in b.events if isinstance(e, HtlcResolvedOnChain)}
    assert resolved == {(sha256(to_bob), False, None), (sha256(never), True, None)}
    # Alice funded: her balance minus the commitment fee and both anchors (2 x 330), plus hers swept back
    # with her to_remote, minus her sweep fee.
    alice_balance = alice.log.commitment(Side.REMOTE).to_remote_msat // 1000
    commitment_fee = FUNDING_SAT - sum(o.value_sat for o in commitment.outputs)
    assert a.swept_sat() == alice_balance - commitment_fee - 660 + ANCHOR_OUTPUT_SAT - _fees_paid(chain, a.script)


def test_htlcs_on_the_peers_commitment_are_claimed_directly_and_the_preimage_reaches_the_payer(
        tmp_path: Path) -> None:
    """Alice force closes. Bob takes the 60k HTLC straight from her commitment with the preimage,
    before Alice's HTLC-timeout is valid: Alice's watcher learns the preimage from Bob's witness
    (her payment succeeded). Bob's own 40k HTLC comes back to him after its cltv_expiry."""
    chain, alice, bob, to_bob, never, height = _setup(tmp_path)
    a = _Side(tmp_path, "alice", alice, chain, {})
    b = _Side(tmp_path, "bob", bob, chain, {sha256(to_bob): to_bob})
    commitment = alice.signed_local_commitment()
    chain.broadcast(commitment)
    a.events.append(a.watcher.start(alice, commitment))
    _run(chain, [a, b], 3)
    won = [e for e in a.events if isinstance(e, HtlcResolvedOnChain)]
    assert won == [HtlcResolvedOnChain(alice.config.channel_id, sha256(to_bob), True, to_bob, htlc_id=0)]
    _run(chain, [a, b], 40)
    assert chain.tip()[0] > height + 40
    assert any(isinstance(e, HtlcResolvedOnChain) and e.payment_hash == sha256(never) and e.offered
               for e in b.events)
    _run(chain, [a, b], TO_SELF_DELAY)
    assert any(isinstance(e, ResolutionFinished) for e in a.events)
    bob_balance = bob.log.commitment(Side.REMOTE).to_remote_msat // 1000
    assert b.swept_sat() == bob_balance + 60_000 + 40_000 + ANCHOR_OUTPUT_SAT - _fees_paid(chain, b.script)
    alice_balance = alice.log.commitment(Side.LOCAL).to_local_msat // 1000
    commitment_fee = FUNDING_SAT - sum(o.value_sat for o in commitment.outputs)
    assert a.swept_sat() == alice_balance - commitment_fee - 660 + ANCHOR_OUTPUT_SAT - _fees_paid(chain, a.script)


def test_a_revoked_commitment_is_punished_at_once_and_the_cheater_keeps_nothing(tmp_path: Path) -> None:
    chain, alice, bob, to_bob, _, _ = _setup(tmp_path)
    cheat = bob.signed_local_commitment()  # Bob keeps a copy, then settles the HTLC: it is revoked
    alice.receive(_wire(bob.fulfill_htlc(0, to_bob)))  # type: ignore[arg-type]
    _exchange(bob, alice)
    a = _Side(tmp_path, "alice", alice, chain, {})
    b = _Side(tmp_path, "bob", bob, chain, {sha256(to_bob): to_bob})
    chain.broadcast(cheat)
    _run(chain, [a, b], 2)
    assert any(isinstance(e, ChannelClosedOnChain) and e.kind is SpendKind.REVOKED for e in a.events)
    _run(chain, [a, b], 3)
    assert any(isinstance(e, ResolutionFinished) for e in a.events)
    # Everything but the commitment fee, the anchors and Alice's two claim fees is Alice's.
    commitment_fee = FUNDING_SAT - sum(o.value_sat for o in cheat.outputs)
    assert a.swept_sat() == FUNDING_SAT - commitment_fee - 660 - _fees_paid(chain, a.script)
    _run(chain, [a, b], TO_SELF_DELAY)
    assert b.swept_sat() == ANCHOR_OUTPUT_SAT - alone_anchor_fee(253, b.script)  # his own anchor, nothing else


def _fees_paid(chain: RegtestChain, script: bytes) -> int:
    """The fees of every transaction that paid ``script`` (what our claims cost us)."""
    total = 0
    for utxo in chain.unspent([script]):
        found = chain.get_transaction(utxo.outpoint.txid)
        assert found is not None
        tx = found[0]
        spent = 0
        for txin in tx.inputs:
            parent = chain.get_transaction(txin.prevout.txid)
            assert parent is not None
            spent += parent[0].outputs[txin.prevout.index].value_sat
        total += spent - sum(o.value_sat for o in tx.outputs)
    return total


def test_a_cheater_racing_the_penalty_with_its_htlc_transaction_loses_that_output_too(tmp_path: Path) -> None:
    """Bob broadcasts a revoked commitment and, before Alice reacts, his HTLC-success for it.
    That input is gone from Alice's penalty, so she punishes the rest and then the revocable
    output of Bob's HTLC-success (BOLT 5): she still ends with the whole channel."""
    from lightspeed.channel.sweep import force_close

    chain, alice, bob, to_bob, _, _ = _setup(tmp_path)
    stale = force_close(bob, {sha256(to_bob): to_bob})  # Bob keeps his signed transactions...
    alice.receive(_wire(bob.fulfill_htlc(0, to_bob)))  # type: ignore[arg-type]
    _exchange(bob, alice)  # ...which are now revoked
    chain.broadcast(stale.commitment)
    chain.mine(1)
    success = next(tx for out, tx in stale.htlc_txs if tx is not None and not out.htlc.offered)
    chain.broadcast(success)  # the race: in before Alice's penalty
    a = _Side(tmp_path, "alice", alice, chain, {})
    _run(chain, [a], 3)
    assert any(isinstance(e, ChannelClosedOnChain) and e.kind is SpendKind.REVOKED for e in a.events)
    assert any(isinstance(e, ResolutionFinished) for e in a.events)
    commitment_fee = FUNDING_SAT - sum(o.value_sat for o in stale.commitment.outputs)
    assert sum(o.value_sat for o in success.outputs) == 60_000  # option_anchors: a zero-fee HTLC tx
    assert a.swept_sat() == FUNDING_SAT - commitment_fee - 660 - _fees_paid(chain, a.script)
    a.restart()  # a restarted watcher rebuilds the same claims from the chain: nothing left to do
    _run(chain, [a], 1)
    assert a.watcher.resolutions[alice.config.channel_id].finished


def test_htlc_deadlines_follow_bolt2() -> None:
    """The offerer fails the channel G blocks after cltv_expiry; a node that can fulfil an HTLC,
    FULFILL_DEADLINE_BLOCKS before it; an HTLC we cannot fulfil never forces a close."""
    from lightspeed.channel.resolve import (
        FULFILL_DEADLINE_BLOCKS,
        OFFERED_GRACE_BLOCKS,
        htlc_deadline_passed,
    )

    alice, bob = channel_pair(FUNDING_SAT, 800_000_000)
    preimage = b"\x31" * 32
    bob.receive(_wire(alice.add_htlc(60_000_000, sha256(preimage), 500)))  # type: ignore[arg-type]
    _exchange(alice, bob)

    def knows(payment_hash: bytes) -> bool:
        return payment_hash == sha256(preimage)

    assert htlc_deadline_passed(alice, 500 + OFFERED_GRACE_BLOCKS - 1, knows) is None
    assert "timed out" in (htlc_deadline_passed(alice, 500 + OFFERED_GRACE_BLOCKS, knows) or "")
    assert htlc_deadline_passed(bob, 500 - FULFILL_DEADLINE_BLOCKS - 1, knows) is None
    assert "on chain" in (htlc_deadline_passed(bob, 500 - FULFILL_DEADLINE_BLOCKS, knows) or "")
    assert htlc_deadline_passed(bob, 10_000, lambda _: False) is None



def test_a_mutual_close_under_negotiation_is_left_to_it_until_it_confirms(tmp_path: Path) -> None:
    """The negotiation owns a mutual close; if its last message was lost, the confirmed
    closing transaction still closes the channel."""
    from lightspeed.channel.closing import ClosingNegotiation

    chain = RegtestChain(":memory:")
    alice, bob = _open(chain)
    a = _Side(tmp_path, "alice", alice, chain, {})
    a_script, b_script = a.script, p2wpkh_script(pubkey_from_privkey(b"\x0b" * 32))
    a_close = ClosingNegotiation.start(alice, a_script, b_script, 300, 1000)
    b_close = ClosingNegotiation.start(bob, b_script, a_script, 300, 1000)
    b_close.receive(_wire(a_close.propose(500)))  # type: ignore[arg-type]
    assert b_close.agreed is not None and a_close.agreed is None  # Bob's reply never reaches Alice
    chain.broadcast(b_close.agreed)
    cid = alice.config.channel_id
    assert a.watcher.poll({cid: alice}, closing={cid}) == []  # unconfirmed: the negotiation's business
    chain.mine(1)
    events = a.watcher.poll({cid: alice}, closing={cid})
    assert ChannelClosedOnChain(cid, SpendKind.MUTUAL, b_close.agreed.txid) in events
    assert a.store.channels() == []
