"""The node's on-chain wallet: deterministic P2WPKH keys, coin selection, change, signing.

Keys are derived from the wallet seed as ``HMAC-SHA256(seed, "lightspeed/wallet/p2wpkh/" || i)``
(a documented, simple scheme, not BIP 32: this wallet only ever needs its own
keys). The wallet keeps no UTXO database of its own: it asks the chain which of
its scripts hold unspent outputs, so a restart or a restore from the seed
simply finds the coins again (it scans ``gap`` keys past the last one used).

On regtest a test can also give the wallet a key of its own (:meth:`Wallet.import_key`):
conformance suites fund the node from outputs whose keys they fixed in advance.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from lightspeed.bitcoin.address import segwit_address
from lightspeed.bitcoin.network import REGTEST, Network
from lightspeed.bitcoin.script import p2pkh_script_code, p2wpkh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import SEQUENCE_FINAL, Transaction, TxIn, TxOut
from lightspeed.chain.source import ChainSource, Utxo
from lightspeed.crypto.hashes import hash160
from lightspeed.crypto.secp256k1 import CURVE_ORDER, pubkey_from_privkey
from lightspeed.errors import PaymentError, UsageError

P2WPKH_DUST_SAT = 294
# BIP 141 weights: version+locktime+counts+marker (4*10+2), a P2WPKH input (4*41 + 108 witness),
# a P2WPKH output (4*31), any output (4 * (9 + script length)).
TX_OVERHEAD_WEIGHT = 42
P2WPKH_INPUT_WEIGHT = 272


def output_weight(script_pubkey: bytes) -> int:
    return 4 * (9 + len(script_pubkey))


@dataclass(frozen=True)
class WalletKey:
    index: int  # -1 for an imported key
    privkey: bytes
    pubkey: bytes
    script_pubkey: bytes


class Wallet:
    """Spends and receives P2WPKH coins found on a :class:`ChainSource`."""

    def __init__(self, seed: bytes, chain: ChainSource, network: Network = REGTEST, gap: int = 20) -> None:
        if len(seed) < 16:
            raise UsageError("the wallet seed must be at least 16 bytes")
        self._seed, self.chain, self.network, self.gap = seed, chain, network, gap
        self._keys: list[WalletKey] = []
        self._by_script: dict[bytes, WalletKey] = {}
        self.next_index = 0
        self._unbroadcast: dict[bytes, Transaction] = {}  # txid -> signed, must reach the chain, not there yet
        self._derive(gap)
        self._rescan()

    def _key(self, index: int) -> WalletKey:
        counter = 0
        while True:
            data = b"lightspeed/wallet/p2wpkh/" + index.to_bytes(4, "big") + bytes([counter])
            privkey = hmac.digest(self._seed, data, hashlib.sha256)
            if 0 < int.from_bytes(privkey, "big") < CURVE_ORDER:
                pubkey = pubkey_from_privkey(privkey)
                return WalletKey(index, privkey, pubkey, p2wpkh_script(pubkey))
            counter += 1

    def _derive(self, count: int) -> None:
        while len(self._keys) < count:
            key = self._key(len(self._keys))
            self._keys.append(key)
            self._by_script[key.script_pubkey] = key

    def _rescan(self) -> None:
        """Find the last used key (it holds or held coins) so new addresses are fresh."""
        used = [self._by_script[u.output.script_pubkey].index for u in self.chain.unspent(list(self._by_script))
                if self._by_script[u.output.script_pubkey].index >= 0]
        if used:
            self.next_index = max(self.next_index, max(used) + 1)
            self._derive(self.next_index + self.gap)

    def import_key(self, privkey: bytes) -> WalletKey:
        """Spend (and watch) the P2WPKH output of ``privkey`` too; regtest only.

        A key from outside the seed is not backed up by it: on a real network that is how
        coins get lost, so only test networks' wallets take one.
        """
        if self.network != REGTEST:
            raise UsageError(f"importing a key: only a regtest wallet takes one, not a {self.network.name} wallet")
        if len(privkey) != 32 or not 0 < int.from_bytes(privkey, "big") < CURVE_ORDER:
            raise UsageError("privkey: not a valid private key (32 bytes, 1 to n-1)")
        pubkey = pubkey_from_privkey(privkey)
        key = WalletKey(-1, privkey, pubkey, p2wpkh_script(pubkey))
        self._by_script.setdefault(key.script_pubkey, key)
        return self._by_script[key.script_pubkey]

    def new_key(self) -> WalletKey:
        key = self._keys[self.next_index]
        self.next_index += 1
        self._derive(self.next_index + self.gap)
        return key

    def new_address(self) -> str:
        key = self.new_key()
        return segwit_address(0, key.script_pubkey[2:], self.network)

    def hold(self, tx: Transaction) -> None:
        """``tx`` is signed and will be broadcast (retried until the chain takes it): count it as sent.

        Until the chain knows it, its inputs are not ours to spend or count, and its outputs to
        us count as unconfirmed coins (a channel's funding inputs must not be counted both in
        the wallet and in the channel).
        """
        self._unbroadcast[tx.txid] = tx

    def release(self, txid: bytes) -> None:
        """The held transaction is in the chain (or was rejected): the chain's view is the truth again."""
        self._unbroadcast.pop(txid, None)

    def utxos(self, min_confirmations: int = 0) -> list[Utxo]:
        tip = self.chain.tip()[0]
        coins = self.chain.unspent(list(self._by_script))
        for txid in [t for t in self._unbroadcast if self.chain.get_transaction(t) is not None]:
            del self._unbroadcast[txid]
        if self._unbroadcast:
            held = {txin.prevout for tx in self._unbroadcast.values() for txin in tx.inputs}
            coins = [u for u in coins if u.outpoint not in held]
            coins += [Utxo(tx.outpoint(n), out, None) for tx in self._unbroadcast.values()
                      for n, out in enumerate(tx.outputs)
                      if out.script_pubkey in self._by_script and tx.outpoint(n) not in held]
        return [u for u in coins
                if min_confirmations == 0 or (u.height is not None and tip - u.height + 1 >= min_confirmations)]

    def balance_sat(self, min_confirmations: int = 0) -> int:
        return sum(u.output.value_sat for u in self.utxos(min_confirmations))

    def create_transaction(self, outputs: list[TxOut], feerate_per_kw: int | None = None,
                           min_confirmations: int = 0) -> Transaction:
        """Select coins (largest first), add change above dust, sign every input."""
        if not outputs or any(o.value_sat <= 0 for o in outputs):
            raise UsageError("give at least one output with a positive value")
        feerate = feerate_per_kw or self.chain.estimate_feerate_per_kw()
        target = sum(o.value_sat for o in outputs)
        base_weight = TX_OVERHEAD_WEIGHT + sum(output_weight(o.script_pubkey) for o in outputs)
        selected: list[Utxo] = []
        total = 0
        spendable = [u for u in self.utxos(min_confirmations) if u.outpoint.txid not in self._unbroadcast]
        for coin in sorted(spendable, key=lambda u: -u.output.value_sat):
            selected.append(coin)
            total += coin.output.value_sat
            fee = (base_weight + P2WPKH_INPUT_WEIGHT * len(selected)) * feerate // 1000
            if total >= target + fee:
                break
        else:
            raise PaymentError(f"insufficient funds: need {target} sat plus fees, have {total} sat")
        change_key = self._keys[self.next_index]
        with_change = (base_weight + P2WPKH_INPUT_WEIGHT * len(selected) + output_weight(change_key.script_pubkey))
        change = total - target - with_change * feerate // 1000
        final_outputs = list(outputs)
        if change >= P2WPKH_DUST_SAT:
            final_outputs.append(TxOut(change, self.new_key().script_pubkey))
        tx = Transaction(2, tuple(TxIn(c.outpoint, sequence=SEQUENCE_FINAL - 2) for c in selected),
                         tuple(final_outputs), self.chain.tip()[0])
        return self.sign(tx, selected)

    def sign(self, tx: Transaction, coins: list[Utxo]) -> Transaction:
        for i, coin in enumerate(coins):
            key = self._by_script[coin.output.script_pubkey]
            script_code = p2pkh_script_code(hash160(key.pubkey))
            sighash = bip143_sighash(tx, i, script_code, coin.output.value_sat, SIGHASH_ALL)
            tx = tx.with_witness(i, (sign_input(key.privkey, sighash, SIGHASH_ALL), key.pubkey))
        return tx

    def send(self, outputs: list[TxOut], feerate_per_kw: int | None = None) -> Transaction:
        """Create, sign and broadcast; returns the broadcast transaction."""
        tx = self.create_transaction(outputs, feerate_per_kw)
        self.chain.broadcast(tx)
        return tx

    def sweep(self, to_script: bytes, feerate_per_kw: int | None = None) -> Transaction:
        """Send every coin to ``to_script`` (one output, fee deducted)."""
        coins = [u for u in self.utxos() if u.outpoint.txid not in self._unbroadcast]
        if not coins:
            raise PaymentError("nothing to sweep")
        feerate = feerate_per_kw or self.chain.estimate_feerate_per_kw()
        total = sum(c.output.value_sat for c in coins)
        weight = TX_OVERHEAD_WEIGHT + output_weight(to_script) + P2WPKH_INPUT_WEIGHT * len(coins)
        value = total - weight * feerate // 1000
        if value < P2WPKH_DUST_SAT:
            raise PaymentError("coins are worth less than the fee to sweep them")
        tx = Transaction(2, tuple(TxIn(c.outpoint, sequence=SEQUENCE_FINAL - 2) for c in coins),
                         (TxOut(value, to_script),), self.chain.tip()[0])
        tx = self.sign(tx, coins)
        self.chain.broadcast(tx)
        return tx
