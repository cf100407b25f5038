"""A preimage learned after the force close still claims the HTLC on chain (BOLT 5).

Found with Electrum: a hold invoice of Lightspeed's settled after the channel was force closed
gave the node the preimage, but the watcher had planned its claims when the close was seen and
never looked again, so the HTLC timed out back to the payer. The same happens to a forward
whose outgoing HTLC is fulfilled after the incoming channel closed. The watcher, real SQLite
store and validating regtest chain are the ones of :mod:`tests.test_onchain_htlcs`.
"""

from __future__ import annotations

from pathlib import Path

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT
from lightspeed.crypto.hashes import sha256
from lightspeed.node.onchain import HtlcResolvedOnChain, ResolutionFinished
from tests.test_onchain_htlcs import TO_SELF_DELAY, _fees_paid, _run, _setup, _Side


def _htlc_output(commitment: Transaction, value_sat: int) -> OutPoint:
    found = [i for i, o in enumerate(commitment.outputs) if o.value_sat == value_sat]
    assert len(found) == 1, value_sat
    return OutPoint(commitment.txid, found[0])


def test_preimage_learned_after_our_force_close_claims_through_htlc_success(tmp_path: Path) -> None:
    """Bob force closes not knowing the preimage of the 60k HTLC to him; he learns it two blocks
    later, 28 blocks before its expiry: his HTLC-success claims it, its output is swept after the delay."""
    chain, alice, bob, to_bob, _, height = _setup(tmp_path)
    a = _Side(tmp_path, "alice", alice, chain, {})
    b = _Side(tmp_path, "bob", bob, chain, {})  # the preimage is not known yet
    commitment = bob.signed_local_commitment()
    chain.broadcast(commitment)
    b.events.append(b.watcher.start(bob, commitment))
    _run(chain, [a, b], 2)
    htlc = _htlc_output(commitment, 60_000)
    assert chain.spending_tx(htlc) is None
    b.preimages[sha256(to_bob)] = to_bob  # e.g. the hold invoice is settled now
    _run(chain, [a, b], 2)
    claim = chain.spending_tx(htlc)
    assert claim is not None and chain.tip()[0] < height + 30, "claimed with the preimage before the expiry"
    assert to_bob in claim.inputs[0].witness  # HTLC-success: the preimage is in the witness
    _run(chain, [a, b], TO_SELF_DELAY + 45)
    assert any(isinstance(e, ResolutionFinished) for e in b.events)
    # Alice learns the preimage from the chain (her payment succeeded), and gets none of the 60k back
    assert any(isinstance(e, HtlcResolvedOnChain) and e.preimage == to_bob for e in a.events)
    bob_balance = bob.log.commitment(Side.LOCAL).to_local_msat // 1000
    assert b.swept_sat() == bob_balance + 60_000 + 40_000 + ANCHOR_OUTPUT_SAT - _fees_paid(chain, b.script)


def test_preimage_learned_after_the_peers_force_close_claims_from_its_commitment(tmp_path: Path) -> None:
    """Alice force closes; Bob learns the preimage afterwards and takes the 60k HTLC straight from
    her commitment, so Alice's HTLC-timeout (valid from block height + 30) never gets it."""
    chain, alice, bob, to_bob, _, height = _setup(tmp_path)
    a = _Side(tmp_path, "alice", alice, chain, {})
    b = _Side(tmp_path, "bob", bob, chain, {})
    commitment = alice.signed_local_commitment()
    chain.broadcast(commitment)
    a.events.append(a.watcher.start(alice, commitment))
    _run(chain, [a, b], 3)
    htlc = _htlc_output(commitment, 60_000)
    assert chain.spending_tx(htlc) is None
    b.preimages[sha256(to_bob)] = to_bob
    _run(chain, [a, b], 1)
    claim = chain.spending_tx(htlc)
    assert claim is not None and to_bob in claim.inputs[0].witness and chain.tip()[0] < height + 30
    _run(chain, [a, b], 40)
    assert [e.preimage for e in a.events if isinstance(e, HtlcResolvedOnChain) and e.payment_hash == sha256(to_bob)
            ] == [to_bob]
