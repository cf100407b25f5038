"""Punishing a revoked commitment (BOLT 5): sweep every output of the cheater with revocation keys.

When the peer broadcasts a commitment it has revoked, we hold its
per-commitment secret, hence the revocation private key for that commitment:
``to_local`` (the cheater's balance) and every HTLC output can be spent at
once through their revocation branches, before any CSV delay ends. Our own
``to_remote`` output is ours anyway and is left to the wallet's normal sweep.
"""

from __future__ import annotations

from lightspeed.bitcoin.script import p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.channel.commitment import build_commitment_tx, commitment_number_from_tx
from lightspeed.channel.htlc_log import Side
from lightspeed.channel.scripts import to_local_script
from lightspeed.channel.state import Channel
from lightspeed.crypto.keys import MAX_INDEX, derive_revocation_privkey, point_from_secret
from lightspeed.errors import UsageError

# BIP 141 weights of a penalty transaction: overhead, one P2WSH output, and per input
# (41 bytes outside the witness, ~160 witness bytes for the revocation branch).
_OVERHEAD_WEIGHT = 42 + 4 * 43
_INPUT_WEIGHT = 4 * 41 + 160


def revoked_commitment_number(channel: Channel, tx: Transaction) -> int | None:
    """The commitment number if ``tx`` is one of the peer's commitments we hold the secret for."""
    ctn = commitment_number_from_tx(tx, channel.obscuring)
    if ctn is None or ctn >= channel.log.ctn[Side.REMOTE]:
        return None
    if channel.remote_secrets.get(MAX_INDEX - ctn) is None:
        return None
    return ctn


def build_penalty_tx(channel: Channel, revoked: Transaction, to_script: bytes, feerate_per_kw: int) -> Transaction:
    """Spend ``to_local`` and every HTLC output of a revoked remote commitment to ``to_script``."""
    ctn = revoked_commitment_number(channel, revoked)
    if ctn is None:
        raise UsageError("this transaction is not a revoked commitment of the peer")
    secret = channel.remote_secrets.get(MAX_INDEX - ctn)
    assert secret is not None
    params = channel.signed_remote.get(ctn)
    if params is None:
        raise UsageError(f"we never signed remote commitment {ctn}")
    rebuilt = build_commitment_tx(params)
    if rebuilt.tx.txid != revoked.txid:
        raise UsageError("the broadcast commitment differs from the one we signed")
    if point_from_secret(secret) != channel.remote_points[ctn]:
        raise UsageError("stored secret does not match the commitment's point")
    revocation_key = derive_revocation_privkey(channel.secrets.revocation, secret)
    keys = params.keys
    # (output index, witness script, how the revocation branch is selected)
    spends: list[tuple[int, bytes, bytes]] = []
    to_local = to_local_script(keys.revocation_pubkey, params.to_self_delay, keys.local_delayed_pubkey)
    for index, out in enumerate(revoked.outputs):
        if out.script_pubkey == p2wsh_script(to_local):
            spends.append((index, to_local, b"\x01"))  # BOLT 3: <revocation_sig> 1
    for htlc_out in rebuilt.htlc_outputs:
        spends.append((htlc_out.output_index, htlc_out.witness_script, keys.revocation_pubkey))
    if not spends:
        raise UsageError("nothing to punish: the revoked commitment has no to_local or HTLC outputs")
    total = sum(revoked.outputs[i].value_sat for i, _, _ in spends)
    fee = (_OVERHEAD_WEIGHT + _INPUT_WEIGHT * len(spends)) * feerate_per_kw // 1000
    tx = Transaction(2, tuple(TxIn(OutPoint(revoked.txid, i)) for i, _, _ in spends), (TxOut(total - fee, to_script),), 0)
    for n, (index, script, selector) in enumerate(spends):
        sighash = bip143_sighash(tx, n, script, revoked.outputs[index].value_sat, SIGHASH_ALL)
        signature = sign_input(revocation_key, sighash, SIGHASH_ALL)
        # BOLT 3: to_local: <revocation_sig> 1; HTLC outputs: <revocation_sig> <revocationpubkey>.
        tx = tx.with_witness(n, (signature, selector, script))
    return tx
