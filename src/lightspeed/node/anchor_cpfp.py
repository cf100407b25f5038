"""CPFP through our anchor: the child that brings our own commitment up to the chain's feerate.

Under option_anchors a commitment pays the feerate agreed when it was signed, which may be below
what the chain asks when we broadcast it (fees rose, or the peer set a low one). BOLT 3 gives each
side a 330-sat anchor output it can spend at once; a child spending ours plus wallet coins pays
for both transactions (child pays for parent). Its fee brings the package (commitment + child)
to the chain's estimate; its one output returns the rest to the wallet. Commitment and child go
to the chain together (``broadcast_package`` where the chain has it: a real mempool refuses a
commitment below its minimum on its own).
"""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import SEQUENCE_FINAL, Transaction, TxIn, TxOut
from lightspeed.chain.source import ChainSource
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
from lightspeed.errors import PaymentError

log = logging.getLogger("lightspeed.node")


@runtime_checkable
class PackageRelay(Protocol):
    """A chain that takes parents and child together (Electrum protocol 1.6, Bitcoin Core submitpackage)."""

    def broadcast_package(self, txs: list[Transaction]) -> list[bytes]: ...


def commitment_fee_sat(channel: Channel, commitment: Transaction) -> int:
    """What the commitment pays: the funding output less its outputs (anchors included)."""
    return channel.config.funding_sat - sum(o.value_sat for o in commitment.outputs)


def needs_cpfp(channel: Channel, feerate_per_kw: int) -> bool:
    """An anchor channel whose latest commitment of ours was signed at less than ``feerate_per_kw``.

    The agreed feerate, not fee / weight: BOLT 3 rounds the fee down and counts a fixed weight,
    so a commitment at exactly the chain's feerate computes a hair below it.
    """
    return channel.config.anchors and channel.log.commitment(Side.LOCAL).feerate_per_kw < feerate_per_kw


def anchor_child(channel: Channel, commitment: Transaction, wallet: Wallet, feerate_per_kw: int) -> Transaction | None:
    """The signed child spending our anchor of ``commitment`` (our latest, fully signed) so that
    the package pays ``feerate_per_kw``; None when the commitment pays enough on its own or has no
    anchor of ours (BOLT 3: it is left out when we have no output and no HTLC on it).

    PaymentError when the wallet has no confirmed coins to pay the child's fee.
    """
    if not needs_cpfp(channel, feerate_per_kw):
        return None
    script = anchor_script(channel.secrets.basepoints().funding_pubkey)
    anchor_spk = p2wsh_script(script)
    index = next((i for i, o in enumerate(commitment.outputs) if o.script_pubkey == anchor_spk), None)
    if index is None:
        return None
    parent_fee = commitment_fee_sat(channel, commitment)
    coins = sorted(wallet.utxos(min_confirmations=1), key=lambda u: -u.output.value_sat)
    change_script = wallet.new_key().script_pubkey
    base_weight = TX_OVERHEAD_WEIGHT + ANCHOR_INPUT_WEIGHT + output_weight(change_script)
    selected, total, change = [], ANCHOR_OUTPUT_SAT, 0
    for coin in coins:
        selected.append(coin)
        total += coin.output.value_sat
        child_weight = base_weight + P2WPKH_INPUT_WEIGHT * len(selected)
        package_fee = -(-feerate_per_kw * (commitment.weight + child_weight) // 1000)  # rounded up
        change = total - (package_fee - parent_fee)
        if change >= P2WPKH_DUST_SAT:
            break
    else:
        raise PaymentError(f"CPFP of commitment {commitment.txid_hex}: the wallet has no confirmed coins "
                           f"for the fee at {feerate_per_kw} sat/kw")
    inputs = [TxIn(c.outpoint, sequence=SEQUENCE_FINAL - 2) for c in selected]
    inputs.append(TxIn(commitment.outpoint(index), sequence=SEQUENCE_FINAL - 2))  # replaceable (BIP 125)
    child = wallet.sign(Transaction(2, tuple(inputs), (TxOut(change, change_script),), 0), selected)
    n = len(selected)
    sighash = bip143_sighash(child, n, script, ANCHOR_OUTPUT_SAT, SIGHASH_ALL)
    # BOLT #3: to_local_anchor is spent with <local_sig> by its owner, at once
    return child.with_witness(n, (sign_input(channel.secrets.funding, sighash, SIGHASH_ALL), script))


def broadcast_commitment(chain: ChainSource, wallet: Wallet, channel: Channel, commitment: Transaction,
                         feerate_per_kw: int) -> Transaction | None:
    """Broadcast our commitment, with a CPFP child when it pays less than ``feerate_per_kw``; the child.

    Without wallet coins for the child the commitment goes alone (it may still confirm).
    RejectedTransaction as ``chain.broadcast`` raises it.
    """
    try:
        child = anchor_child(channel, commitment, wallet, feerate_per_kw)
    except PaymentError as exc:
        log.warning("broadcasting the commitment without CPFP: %s", exc)
        child = None
    if child is None:
        chain.broadcast(commitment)
        return None
    if isinstance(chain, PackageRelay):
        chain.broadcast_package([commitment, child])
    else:
        chain.broadcast(commitment)
        chain.broadcast(child)
    return child
