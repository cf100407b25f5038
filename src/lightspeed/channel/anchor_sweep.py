"""Sweeping our 330-sat anchor after a commitment confirmed (BOLT 3 ``to_local_anchor``), pure.

Our anchor is ``<local_funding_pubkey> OP_CHECKSIG OP_IFDUP OP_NOTIF OP_16 OP_CSV OP_ENDIF`` on
our commitment and on the peer's alike (there it is its ``to_remote_anchor``, still keyed to
our funding pubkey), so it is found by script on either. Our funding key spends it at once;
after 16 confirmations anyone may (empty signature), to clean the UTXO set.

An anchor is worth sweeping when what it brings, 330 sat less the fee its input costs, leaves at
least :data:`ANCHOR_MARGIN_SAT`, half the anchor: the sweep then gains at least as much as it
spends, which survives an estimate that moved a little before confirmation. (The wallet's dust
limit, 294 sat, would make a lone sweep never worth it, even at 1 sat/vbyte: the batched input
creates no output, so dust says nothing about it.) Batched into another sweep of ours its input
costs :data:`ANCHOR_INPUT_WEIGHT` (70 vbytes, worth it up to 589 sat/kw); alone, a whole
transaction (112 vbytes to a P2WPKH output, worth it up to 369 sat/kw).
"""

from __future__ import annotations

from dataclasses import dataclass

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import SEQUENCE_FINAL, OutPoint, Transaction, TxIn, TxOut
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT, anchor_script
from lightspeed.channel.state import Channel
from lightspeed.crypto.keys import point_from_secret

# The anchor input: outpoint, empty script and sequence (41 bytes, x4), then its witness: item
# count, the signature (at most 73 bytes with its length), the 40-byte anchor script with its length.
ANCHOR_INPUT_WEIGHT = 4 * 41 + 1 + 74 + 41
ANCHOR_MARGIN_SAT = ANCHOR_OUTPUT_SAT // 2  # what a sweep must leave of the anchor (module docstring)
FEERATE_FLOOR_PER_KW = 253  # 1 sat/vbyte: the minimum relay feerate, under which no estimate is taken
ANCHOR_PUBLIC_AFTER_BLOCKS = 16  # BOLT 3: after this many confirmations anyone may spend the anchor
# An anchor not worth sweeping is asked about again at every block for a day after the commitment
# confirmed (fees follow a daily cycle), then left: keeping the resolution open longer for 330 sat
# is not worth it, and third parties may take it from block 16 on anyway.
ANCHOR_GIVE_UP_BLOCKS = 144
ANCHOR_SEQUENCE = SEQUENCE_FINAL - 2  # replaceable (BIP 125), no relative lock of its own
_ALONE_OVERHEAD_WEIGHT = 42  # version, locktime, counts, segwit marker (the output is counted apart)


def our_anchor(channel: Channel, tx: Transaction) -> int | None:
    """The index of our anchor output on ``tx`` (a commitment, ours or the peer's), if it has one."""
    if not channel.config.anchors:
        return None
    spk = p2wsh_script(anchor_script(channel.secrets.basepoints().funding_pubkey))
    return next((i for i, o in enumerate(tx.outputs) if o.script_pubkey == spk and o.value_sat == ANCHOR_OUTPUT_SAT),
                None)


def batched_anchor_fee(feerate_per_kw: int) -> int:
    """What our anchor's input adds to the fee of another sweep at ``feerate_per_kw`` (rounded up:
    a fee rounded down would put a sweep at the minimum relay feerate just under it)."""
    return -(-ANCHOR_INPUT_WEIGHT * feerate_per_kw // 1000)


def alone_anchor_fee(feerate_per_kw: int, to_script: bytes) -> int:
    """The fee of a transaction sweeping our anchor alone to ``to_script``."""
    weight = _ALONE_OVERHEAD_WEIGHT + ANCHOR_INPUT_WEIGHT + 4 * (9 + len(to_script))
    return -(-weight * feerate_per_kw // 1000)


def worth_batching(feerate_per_kw: int) -> bool:
    return ANCHOR_OUTPUT_SAT - batched_anchor_fee(feerate_per_kw) >= ANCHOR_MARGIN_SAT


def worth_alone(feerate_per_kw: int, to_script: bytes) -> bool:
    return ANCHOR_OUTPUT_SAT - alone_anchor_fee(feerate_per_kw, to_script) >= ANCHOR_MARGIN_SAT


@dataclass(frozen=True)
class AnchorSpend:
    """Our anchor as an extra input of another sweep: where it is, and the key that spends it."""

    txin: TxIn
    funding_key: bytes

    @staticmethod
    def of(channel: Channel, commitment: Transaction, index: int) -> AnchorSpend:
        return AnchorSpend(TxIn(OutPoint(commitment.txid, index), sequence=ANCHOR_SEQUENCE), channel.secrets.funding)

    def sign(self, tx: Transaction, n: int) -> Transaction:
        """``tx`` with input ``n`` (this anchor) signed: ``<local_sig>`` by its owner (BOLT 3). Call
        it once every input and output is in place (SIGHASH_ALL)."""
        script = anchor_script(point_from_secret(self.funding_key))
        sighash = bip143_sighash(tx, n, script, ANCHOR_OUTPUT_SAT, SIGHASH_ALL)
        return tx.with_witness(n, (sign_input(self.funding_key, sighash, SIGHASH_ALL), script))


def sweep_anchor_alone(channel: Channel, commitment: Transaction, index: int, to_script: bytes,
                       feerate_per_kw: int) -> Transaction:
    """A transaction of its own taking our anchor (output ``index`` of ``commitment``) to ``to_script``."""
    anchor = AnchorSpend.of(channel, commitment, index)
    amount = ANCHOR_OUTPUT_SAT - alone_anchor_fee(feerate_per_kw, to_script)
    return anchor.sign(Transaction(2, (anchor.txin,), (TxOut(amount, to_script),), 0), 0)
