"""Fee bumping of our own stuck transactions by CPFP: funding, mutual close, and our commitment.

Why CPFP and not RBF for these three:

* **Funding** (BOLT 2 v1 opens): the peer signed the first commitment over the funding txid.
  A replacement changes the txid, so the channel's funding outpoint, and the signed commitment
  would spend an output that never exists: funds stuck until the peer signs again, which v1
  has no message for (only dual funding's ``tx_init_rbf`` does). A child spending our change
  output leaves the txid as it is and brings the package (funding + child) to the feerate.
* **Mutual close**: both sides sign the closing transaction (``closing_signed``); one side alone
  cannot sign a replacement, and BOLT 2 has no renegotiation once the channel is closed. Our
  output of it pays a wallet key, so the same child does it, from our side alone.
* **Commitment** (option_anchors): our anchor's child is the CPFP (:mod:`.anchor_cpfp`); when
  the commitment still waits, the child is replaced (RBF) by one paying a higher feerate.

Each child is replaceable (BIP 125) and replaced while its parent stays unconfirmed, at a feerate
that climbs to :data:`~lightspeed.node.htlc_bump.MAX_DEADLINE_FACTOR` times the estimate as the
deadline nears (an HTLC's expiry for a commitment; :data:`FUNDING_TARGET_BLOCKS` after the first
broadcast for a funding or closing transaction). Every child is capped: at most
:data:`MAX_FEERATE_PER_KW`, and its own fee at most ``1 / MAX_FEE_SHARE_DIVISOR`` of the value it
protects (money spent on fees must never exceed what the bump can save).

A replacement keeps the inputs of the child it replaces (BIP 125 rule 2 forbids new
unconfirmed inputs; the same coins cannot be spent twice anyway) and pays their fee plus its own
size (rules 3 and 4). Nothing here is persisted: after a restart the child in the mempool is found
again by what spends the parent's output, and replaced from there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain.source import ChainSource, Utxo
from lightspeed.chain.wallet import (
    P2WPKH_DUST_SAT,
    P2WPKH_INPUT_WEIGHT,
    TX_OVERHEAD_WEIGHT,
    Wallet,
    output_weight,
)
from lightspeed.channel.anchor_sweep import ANCHOR_INPUT_WEIGHT
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.scripts import ANCHOR_OUTPUT_SAT, anchor_script
from lightspeed.channel.state import Channel
from lightspeed.errors import ChainBusy, ChainUnavailable, PaymentError, RejectedTransaction
from lightspeed.node.anchor_cpfp import commitment_fee_sat
from lightspeed.node.htlc_bump import TIMEOUT_DEADLINE_BLOCKS
from lightspeed.node.htlc_bump import deadline_feerate as _deadline_curve

log = logging.getLogger("lightspeed.node")

FUNDING_TARGET_BLOCKS = 6  # a funding or closing transaction should confirm within this many blocks
MAX_FEERATE_PER_KW = 125_000  # 500 sat/vbyte: never more, whatever the estimate says
MAX_FEE_SHARE_DIVISOR = 2  # a child's fee is at most half the value its parent carries for us
REPLACE_AFTER_BLOCKS = 2  # a child unconfirmed this many blocks later is replaced, if the feerate rose
_SEQUENCE_RBF = 0xFFFFFFFD
_SIGNATURE_SLACK_WEIGHT = 4  # a signature may come out a byte longer than the estimate
_SHORTER_SIGNATURE_WEIGHT = 3  # or up to 3 bytes (witness: 1 weight unit each) shorter


@dataclass(frozen=True)
class Child:
    """A CPFP child we broadcast: the transaction, the package feerate it aims at, its fee, when."""

    tx: Transaction
    feerate_per_kw: int
    fee_sat: int
    height: int


def capped_feerate(feerate_per_kw: int) -> int:
    return min(feerate_per_kw, MAX_FEERATE_PER_KW)


def child_fee(parent_weight: int, parent_fee_sat: int, child_weight: int, feerate_per_kw: int,
              previous: Child | None) -> int:
    """What the child pays so that the package pays ``feerate_per_kw``; as a replacement of
    ``previous``, at least its fee plus 1 sat/vbyte of its own size (BIP 125 rules 3 and 4)."""
    package = -(-feerate_per_kw * (parent_weight + child_weight + _SIGNATURE_SLACK_WEIGHT) // 1000)
    fee = max(package - parent_fee_sat, 0)
    if previous is not None:
        fee = max(fee, previous.fee_sat + -(-(child_weight + _SIGNATURE_SLACK_WEIGHT) // 4) + 1)
    return fee


# An extra input the wallet does not sign (our anchor): its outpoint, value, weight, and how to sign it.
ExtraInput = tuple[OutPoint, int, int, Callable[[Transaction, int], Transaction]]


def build_child(wallet: Wallet, parent: Transaction, parent_fee_sat: int, feerate_per_kw: int,
                own_inputs: list[Utxo], previous: Child | None, max_fee_sat: int, tip: int,
                extra: ExtraInput | None = None) -> Child:
    """A signed child spending ``own_inputs`` (wallet outputs of ``parent``, or the wallet coins the
    previous child spent), ``extra`` last if given, and as many confirmed wallet coins as the fee
    needs; one change output.

    PaymentError when the fee would pass ``max_fee_sat`` or the wallet lacks the coins.
    """
    change_script = (previous.tx.outputs[0].script_pubkey if previous is not None
                     else wallet.new_key(change=True).script_pubkey)
    selected = list(own_inputs)
    taken = {c.outpoint for c in selected}
    pool = [c for c in sorted(wallet.utxos(min_confirmations=1), key=lambda u: -u.output.value_sat)
            if c.outpoint not in taken and c.outpoint.txid != parent.txid]
    base = TX_OVERHEAD_WEIGHT + output_weight(change_script) + (0 if extra is None else extra[2])
    extra_value = 0 if extra is None else extra[1]
    while True:
        weight = base + P2WPKH_INPUT_WEIGHT * len(selected)
        fee = child_fee(parent.weight, parent_fee_sat, weight, feerate_per_kw, None)
        # never above MAX_FEERATE_PER_KW, even if every signature comes out shorter than estimated
        n_inputs = len(selected) + (extra is not None)
        fee = min(fee, MAX_FEERATE_PER_KW * (parent.weight + weight - _SHORTER_SIGNATURE_WEIGHT * n_inputs) // 1000
                  - parent_fee_sat)
        if previous is not None and fee < child_fee(0, 0, weight, 0, previous):
            raise PaymentError(f"CPFP of {parent.txid_hex}: a replacement at {feerate_per_kw} sat/kw would pass "
                               f"the cap of {MAX_FEERATE_PER_KW} sat/kw")
        if fee > max_fee_sat:
            raise PaymentError(f"CPFP of {parent.txid_hex} at {feerate_per_kw} sat/kw: a fee of {fee} sat is "
                               f"above the cap of {max_fee_sat} sat")
        change = sum(c.output.value_sat for c in selected) + extra_value - fee
        if (selected or extra) and change >= P2WPKH_DUST_SAT:
            break
        if not pool:
            raise PaymentError(f"CPFP of {parent.txid_hex}: the wallet has no confirmed coins for {fee} sat "
                               f"at {feerate_per_kw} sat/kw")
        selected.append(pool.pop(0))
    inputs = [TxIn(c.outpoint, sequence=_SEQUENCE_RBF) for c in selected]
    if extra is not None:
        inputs.append(TxIn(extra[0], sequence=_SEQUENCE_RBF))
    tx = wallet.sign(Transaction(2, tuple(inputs), (TxOut(change, change_script),), 0), selected)
    if extra is not None:
        tx = extra[3](tx, len(selected))
    return Child(tx, feerate_per_kw, fee, tip)


def deadline_feerate(estimate_per_kw: int, blocks_left: int) -> int:
    """The package feerate ``blocks_left`` blocks before a deadline (the HTLC claims' curve), capped."""
    return capped_feerate(_deadline_curve(estimate_per_kw, blocks_left))


class ParentBumper:
    """CPFP of our funding and mutual-close transactions while they wait unconfirmed.

    :meth:`watch` a transaction when it is broadcast; :meth:`poll` at every block. A parent
    waits :data:`REPLACE_AFTER_BLOCKS` before its first child; the deadline is
    :data:`FUNDING_TARGET_BLOCKS` after it was first seen unconfirmed.
    """

    def __init__(self, chain: ChainSource, wallet: Wallet) -> None:
        self.chain, self.wallet = chain, wallet
        self.watched: dict[bytes, tuple[Transaction, int, str]] = {}  # txid -> (tx, first height, what)
        self.children: dict[bytes, Child] = {}  # parent txid -> the child we broadcast last
        self.confirmed: set[bytes] = set()  # parents seen confirmed: nothing more to do for them

    def watch(self, tx: Transaction, what: str) -> None:
        if tx.txid not in self.watched:
            self.watched[tx.txid] = (tx, self.chain.tip()[0], what)

    def poll(self) -> list[Transaction]:
        """Broadcast a first child, or a replacement, for each watched parent still waiting; the
        children broadcast. A confirmed (or vanished) parent is forgotten."""
        tip = self.chain.tip()[0]
        sent = []
        for txid, (parent, first, what) in list(self.watched.items()):
            found = self.chain.get_transaction(txid)
            if found is None or found[1] >= 1:
                self.watched.pop(txid, None)
                self.children.pop(txid, None)
                if found is not None:
                    self.confirmed.add(txid)
                continue
            try:
                child = self._next_child(parent, first, tip)
            except PaymentError as exc:
                log.warning("%s (%s): no fee bump: %s", what, parent.txid_hex, exc)
                continue
            if child is None:
                continue
            try:
                self.chain.broadcast(child.tx)
            except (RejectedTransaction, ChainBusy, ChainUnavailable) as exc:  # tried again at the next block
                log.warning("%s (%s): bump not accepted: %s", what, parent.txid_hex, exc)
                continue
            self.children[txid] = child
            sent.append(child.tx)
        return sent

    def _next_child(self, parent: Transaction, first: int, tip: int) -> Child | None:
        ours = [Utxo(parent.outpoint(n), out, None) for n, out in enumerate(parent.outputs)
                if self.wallet.owns(out.script_pubkey) is not None]
        if not ours:
            return None  # no output of ours to spend: nothing we can do from our side
        previous = self.children.get(parent.txid) or self._child_in_mempool(parent, ours)
        since = tip - (first if previous is None else previous.height)
        if since < REPLACE_AFTER_BLOCKS:
            return None
        parent_fee = self._fee(parent)
        feerate = deadline_feerate(self.chain.estimate_feerate_per_kw(), first + FUNDING_TARGET_BLOCKS - tip)
        current = previous.feerate_per_kw if previous is not None else parent_fee * 1000 // parent.weight
        if feerate <= current:
            return None
        own = ours if previous is None else [self._coin(txin.prevout) for txin in previous.tx.inputs]
        value = sum(o.output.value_sat for o in ours)
        return build_child(self.wallet, parent, parent_fee, feerate, own, previous,
                           max(value // MAX_FEE_SHARE_DIVISOR, 0), tip)

    def _child_in_mempool(self, parent: Transaction, ours: list[Utxo]) -> Child | None:
        """A child of ours spending ``parent`` already waiting (broadcast before a restart)."""
        for coin in ours:
            spender = self.chain.spending_tx(coin.outpoint)
            if spender is not None and all(self.wallet.owns(o.script_pubkey) for o in spender.outputs):
                fee = self._fee(spender)
                package = (self._fee(parent) + fee) * 1000 // (parent.weight + spender.weight)
                return Child(spender, package, fee, self.chain.tip()[0] - REPLACE_AFTER_BLOCKS)
        return None

    def _fee(self, tx: Transaction) -> int:
        return fee_paid(self.chain, tx)

    def _coin(self, outpoint: OutPoint) -> Utxo:
        return coin_at(self.chain, outpoint)


def fee_paid(chain: ChainSource, tx: Transaction) -> int:
    """The fee ``tx`` pays (the chain knows what it spends)."""
    spent = 0
    for txin in tx.inputs:
        found = chain.get_transaction(txin.prevout.txid)
        if found is None:
            raise PaymentError(f"the output {txin.prevout} that {tx.txid_hex} spends is unknown")
        spent += found[0].outputs[txin.prevout.index].value_sat
    return spent - sum(o.value_sat for o in tx.outputs)


def coin_at(chain: ChainSource, outpoint: OutPoint) -> Utxo:
    """The output at ``outpoint`` as a coin to spend again (an input of a child being replaced)."""
    found = chain.get_transaction(outpoint.txid)
    if found is None:
        raise PaymentError(f"the input {outpoint} of a CPFP child is unknown")
    height = None if found[1] == 0 else chain.tip()[0] - found[1] + 1
    return Utxo(outpoint, found[0].outputs[outpoint.index], height)


def commitment_deadline(channel: Channel, owner: Side = Side.LOCAL) -> int | None:
    """The height by which ``owner``'s commitment must confirm: a block before the first HTLC
    claim's deadline (an HTLC offered to us: its ``cltv_expiry``; one we offered:
    :data:`~lightspeed.node.htlc_bump.TIMEOUT_DEADLINE_BLOCKS` after it); None without HTLCs."""
    deadlines = [h.cltv_expiry if h.offerer is Side.REMOTE else h.cltv_expiry + TIMEOUT_DEADLINE_BLOCKS
                 for h in channel.log.commitment(owner).htlcs]
    return min(deadlines) - 1 if deadlines else None


def value_at_stake_sat(channel: Channel, owner: Side = Side.LOCAL) -> int:
    """What ``owner``'s commitment carries for us: our balance and every HTLC on it (ours to claim
    or to lose)."""
    view = channel.log.commitment(owner)
    ours = view.to_local_msat if owner is Side.LOCAL else view.to_remote_msat
    return ours // 1000 + sum(h.amount_msat for h in view.htlcs) // 1000


class CommitmentBumper:
    """CPFP through our anchor of a commitment that waits unconfirmed, ours or the peer's (BOLT 3
    gives each side an anchor on both commitments, keyed by its funding pubkey), the child
    replaced (RBF) at a higher feerate while it still waits."""

    def __init__(self, chain: ChainSource, wallet: Wallet) -> None:
        self.chain, self.wallet = chain, wallet

    def next_child(self, channel: Channel, commitment: Transaction, previous: Child | None, tip: int,
                   owner: Side = Side.LOCAL) -> Child | None:
        """A (replacement) child to broadcast for ``owner``'s ``commitment``, or None: it pays
        enough, the last child is too recent, or the feerate did not rise. PaymentError when
        capped or out of coins."""
        if not channel.config.anchors:
            return None
        if previous is not None and tip - previous.height < REPLACE_AFTER_BLOCKS:
            return None
        deadline = commitment_deadline(channel, owner)
        estimate = self.chain.estimate_feerate_per_kw()
        feerate = capped_feerate(estimate) if deadline is None else deadline_feerate(estimate, deadline - tip)
        # the agreed feerate (BOLT 3 rounds the fee down: fee / weight is a hair below it), or what
        # it pays if more (an older commitment of the peer's may have had another feerate)
        paid = commitment_fee_sat(channel, commitment) * 1000 // commitment.weight
        current = (previous.feerate_per_kw if previous is not None
                   else max(paid, channel.log.commitment(owner).feerate_per_kw))
        if feerate <= current:
            return None
        script = anchor_script(channel.secrets.basepoints().funding_pubkey)
        index = next((i for i, o in enumerate(commitment.outputs) if o.script_pubkey == p2wsh_script(script)), None)
        if index is None:
            return None

        def sign_anchor(tx: Transaction, n: int) -> Transaction:
            sighash = bip143_sighash(tx, n, script, ANCHOR_OUTPUT_SAT, SIGHASH_ALL)
            # BOLT #3: an anchor is spent with <sig> of its funding key by its owner, at once
            return tx.with_witness(n, (sign_input(channel.secrets.funding, sighash, SIGHASH_ALL), script))

        anchor = commitment.outpoint(index)
        if previous is None:  # one broadcast before a restart, or with the commitment: replace it
            spender = self.chain.spending_tx(anchor)
            if spender is not None and spender.txid != commitment.txid:
                fee = fee_paid(self.chain, spender)
                rate = (commitment_fee_sat(channel, commitment) + fee) * 1000 // (commitment.weight + spender.weight)
                previous = Child(spender, rate, fee, tip - REPLACE_AFTER_BLOCKS)
                if feerate <= rate:
                    return None
        own = [] if previous is None else [coin_at(self.chain, t.prevout) for t in previous.tx.inputs
                                           if t.prevout != anchor]
        cap = value_at_stake_sat(channel, owner) // MAX_FEE_SHARE_DIVISOR
        return build_child(self.wallet, commitment, commitment_fee_sat(channel, commitment), feerate, own,
                           previous, cap, tip,
                           (anchor, ANCHOR_OUTPUT_SAT, ANCHOR_INPUT_WEIGHT, sign_anchor))

