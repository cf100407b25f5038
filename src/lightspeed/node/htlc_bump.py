"""Fees for our zero-fee HTLC transactions under option_anchors: wallet inputs, deadlines, RBF.

BOLT 3 (option_anchors): HTLC-success and HTLC-timeout transactions pay no fee, and the peer
signs them with SIGHASH_SINGLE|SIGHASH_ANYONECANPAY, committing only to input 0 and output 0,
so the holder adds inputs (and a change output) that pay the fee. A real mempool refuses them
as they are (below its minimum relay feerate): an HTLC would not resolve on chain in time.

Here the HTLC transaction keeps its input and output at index 0, gains confirmed wallet coins
and one change output; our own HTLC signature is made again with SIGHASH_ALL over the whole
transaction. The feerate rises as the HTLC's deadline nears (:func:`deadline_feerate`): for an
HTLC-success the HTLC's ``cltv_expiry`` (after it the peer may time it out), for an
HTLC-timeout ``cltv_expiry`` + :data:`TIMEOUT_DEADLINE_BLOCKS` (the incoming HTLC of a forward
expires about a ``cltv_expiry_delta`` later). A bump still unconfirmed after
:data:`RBF_AFTER_BLOCKS` blocks is signed again at the higher feerate over the same inputs
(BIP 125 replacement), more coins added only if the change would fall below dust.

Every version changes the txid, so the sweep of its delayed output is signed again too
(:func:`rebase_sweep`). What the node broadcast is recorded (:class:`Bump`) before the
broadcast, so a restarted node resumes from the same inputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from lightspeed.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_ANYONECANPAY,
    SIGHASH_SINGLE,
    bip143_sighash,
    sign_input,
)
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain.source import ChainSource, Utxo
from lightspeed.chain.wallet import P2WPKH_DUST_SAT, P2WPKH_INPUT_WEIGHT, Wallet, output_weight
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.resolve import Claim
from lightspeed.channel.state import Channel
from lightspeed.crypto.keys import derive_privkey
from lightspeed.errors import PaymentError

log = logging.getLogger("lightspeed.node")

DEADLINE_WINDOW_BLOCKS = 12  # from this many blocks before the deadline, the feerate climbs
MAX_DEADLINE_FACTOR = 4  # at the deadline: 4x the chain's estimate
TIMEOUT_DEADLINE_BLOCKS = 12  # an HTLC-timeout should confirm this many blocks after cltv_expiry
RBF_AFTER_BLOCKS = 2  # a bump unconfirmed for this many blocks is replaced at the current deadline feerate
REPLACEMENT_STEP_PER_KW = 260  # 1 sat/vbyte is 250 sat/kw, plus rounding: what a replacement must add at least
SIGNATURE_SLACK_WEIGHT = 4  # a signature may come out a byte shorter than estimated: never underpay
_WALLET_SEQUENCE = 0xFFFFFFFD  # BIP 125: replaceable


@dataclass(frozen=True)
class Bump:
    """One fee-paying version of a zero-fee HTLC transaction: what was broadcast, when, at what feerate."""

    original_txid: bytes
    tx: Transaction
    feerate_per_kw: int
    height: int

    def to_json(self) -> dict[str, object]:
        return {"original": self.original_txid.hex(), "raw": self.tx.serialize().hex(),
                "feerate_per_kw": self.feerate_per_kw, "height": self.height}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Bump:
        return cls(bytes.fromhex(str(data["original"])), Transaction.parse(bytes.fromhex(str(data["raw"]))),
                   int(str(data["feerate_per_kw"])), int(str(data["height"])))


def is_zero_fee_htlc(claim: Claim) -> bool:
    """A second-stage HTLC transaction of ours the peer signed with SIGHASH_SINGLE|ANYONECANPAY.

    Its witness is ``0 <remotesig> <localsig> <preimage or empty> <script>``; a claim spending an
    HTLC output of the peer's commitment directly has three items and pays its own fee.
    """
    witness = claim.tx.inputs[0].witness
    return (claim.payment_hash is not None and len(witness) == 5 and len(witness[1]) > 0
            and witness[1][-1] == SIGHASH_SINGLE | SIGHASH_ANYONECANPAY)


def deadline_feerate(estimate_per_kw: int, blocks_left: int) -> int:
    """The feerate for a claim ``blocks_left`` blocks before its deadline: the estimate while far
    away, climbing linearly to :data:`MAX_DEADLINE_FACTOR` times it at (and past) the deadline."""
    urgency = DEADLINE_WINDOW_BLOCKS - max(0, min(blocks_left, DEADLINE_WINDOW_BLOCKS))
    return estimate_per_kw + estimate_per_kw * (MAX_DEADLINE_FACTOR - 1) * urgency // DEADLINE_WINDOW_BLOCKS


def htlc_deadline(channel: Channel, claim: Claim) -> int:
    """The height by which the HTLC transaction must confirm (see the module docstring)."""
    if claim.offered:  # HTLC-timeout: its locktime is the HTLC's cltv_expiry
        return claim.tx.locktime + TIMEOUT_DEADLINE_BLOCKS
    expiries = [h.cltv_expiry for h in channel.log.commitment(Side.LOCAL).htlcs
                if h.offerer is Side.REMOTE and h.payment_hash == claim.payment_hash]
    if not expiries:
        raise PaymentError(f"{claim.label}: no HTLC with its payment hash in our commitment")
    return min(expiries)


def _fee_for(weight: int, feerate_per_kw: int) -> int:
    return -(-feerate_per_kw * (weight + SIGNATURE_SLACK_WEIGHT) // 1000)


def bump_htlc_tx(channel: Channel, original: Transaction, htlc_value_sat: int, feerate_per_kw: int,
                 coins: list[Utxo], spare: list[Utxo], change_script: bytes, wallet: Wallet) -> Transaction:
    """``original`` (the signed zero-fee HTLC transaction) with wallet inputs and change paying
    ``feerate_per_kw`` for the whole transaction; ``coins`` are used first (a replacement keeps
    the inputs it replaces), then as many of ``spare`` as the fee needs.

    PaymentError when the coins cannot pay the fee and leave change above dust.
    """
    htlc_in = original.inputs[0]
    base = original.weight + output_weight(change_script)  # its signed input and output, plus the change
    selected = list(coins)
    pool = [c for c in spare if c.outpoint not in {s.outpoint for s in selected}]
    while True:
        weight = base + P2WPKH_INPUT_WEIGHT * len(selected)
        change = sum(c.output.value_sat for c in selected) - _fee_for(weight, feerate_per_kw)
        if selected and change >= P2WPKH_DUST_SAT:
            break
        if not pool:
            raise PaymentError(f"fee for HTLC transaction {original.txid_hex}: the wallet has no confirmed coins "
                               f"for {_fee_for(weight, feerate_per_kw)} sat at {feerate_per_kw} sat/kw")
        selected.append(pool.pop(0))
    inputs = (TxIn(htlc_in.prevout, sequence=htlc_in.sequence),
              *(TxIn(c.outpoint, sequence=_WALLET_SEQUENCE) for c in selected))
    tx = Transaction(original.version, inputs, (original.outputs[0], TxOut(change, change_script)), original.locktime)
    tx = wallet.sign(tx, selected, first=1)
    empty, remote_sig, _old_local, last, script = htlc_in.witness
    htlc_key = derive_privkey(channel.secrets.htlc, channel.local_point(channel.log.ctn[Side.LOCAL]))
    # BOLT #3: the peer's SIGHASH_SINGLE|SIGHASH_ANYONECANPAY signature covers only input 0 and
    # output 0; ours, SIGHASH_ALL, commits to the whole transaction with its fee inputs.
    local_sig = sign_input(htlc_key, bip143_sighash(tx, 0, script, htlc_value_sat, SIGHASH_ALL), SIGHASH_ALL)
    return tx.with_witness(0, (empty, remote_sig, local_sig, last, script))


def rebase_sweep(channel: Channel, sweep: Transaction, parent: Transaction) -> Transaction:
    """The sweep of an HTLC transaction's delayed output 0, signed again to spend ``parent``
    (another version of that HTLC transaction: same output, other txid). Same amount, same fee."""
    old = sweep.inputs[0]
    tx = Transaction(sweep.version, (TxIn(OutPoint(parent.txid, 0), sequence=old.sequence),), sweep.outputs,
                     sweep.locktime)
    script = old.witness[-1]
    delayed_key = derive_privkey(channel.secrets.delayed_payment, channel.local_point(channel.log.ctn[Side.LOCAL]))
    sighash = bip143_sighash(tx, 0, script, parent.outputs[0].value_sat, SIGHASH_ALL)
    # BOLT 3 to_local, delayed branch: <local_delayedsig> <>
    return tx.with_witness(0, (sign_input(delayed_key, sighash, SIGHASH_ALL), b"", script))


class HtlcFeeBumper:
    """Decides, at each block, the version of a zero-fee HTLC transaction to broadcast."""

    def __init__(self, chain: ChainSource, wallet: Wallet) -> None:
        self.chain, self.wallet = chain, wallet

    def next_version(self, channel: Channel, original: Claim, current: Bump | None, tip: int) -> Bump | None:
        """A new version to record and broadcast, or None (keep the current one; without a coin
        for the first one, a warning: the caller broadcasts the zero-fee original, as far as it goes)."""
        feerate = deadline_feerate(self.chain.estimate_feerate_per_kw(), htlc_deadline(channel, original) - tip)
        if current is not None:
            if tip - current.height < RBF_AFTER_BLOCKS or feerate <= current.feerate_per_kw:
                return None
            # BIP 125 rule 4: over the same inputs, the replacement adds at least 1 sat/vbyte
            feerate = max(feerate, current.feerate_per_kw + REPLACEMENT_STEP_PER_KW)
        value = self._value(original.tx.inputs[0].prevout)
        coins = [] if current is None else [self._coin(txin.prevout) for txin in current.tx.inputs[1:]]
        spare = sorted(self.wallet.utxos(min_confirmations=1), key=lambda u: -u.output.value_sat)
        change_script = (self.wallet.new_key(change=True).script_pubkey if current is None
                         else current.tx.outputs[1].script_pubkey)
        try:
            tx = bump_htlc_tx(channel, original.tx, value, feerate, coins, spare, change_script, self.wallet)
        except PaymentError as exc:
            log.warning("%s of channel %s: %s; broadcasting without it", original.label,
                        channel.config.channel_id.hex(), exc)
            return None
        return Bump(original.tx.txid, tx, feerate, tip)

    def _value(self, outpoint: OutPoint) -> int:
        found = self.chain.get_transaction(outpoint.txid)
        if found is None:
            raise PaymentError(f"the transaction {outpoint.txid[::-1].hex()} an HTLC transaction spends is unknown")
        return found[0].outputs[outpoint.index].value_sat

    def _coin(self, outpoint: OutPoint) -> Utxo:
        found = self.chain.get_transaction(outpoint.txid)
        if found is None:
            raise PaymentError(f"the fee input {outpoint} of an HTLC transaction is unknown")
        tip = self.chain.tip()[0]
        height = None if found[1] == 0 else tip - found[1] + 1
        return Utxo(outpoint, found[0].outputs[outpoint.index], height)
