"""The node's on-chain wallet: deterministic keys, coin selection, change, signing.

Two key schemes, chosen by the seed given:

* :class:`HdSeed` (a BIP 39 seed; every datadir made since BIP 39 support): BIP 84 P2WPKH keys
  ``m/84'/coin'/0'/{0,1}/i`` (receive, change) and BIP 86 P2TR keys ``m/86'/coin'/0'/{0,1}/i``
  (see :mod:`lightspeed.chain.hd`), so Electrum, Sparrow or any BIP 84 wallet restores the words.
  Both kinds are spent: P2WPKH inputs sign BIP 143 ECDSA, P2TR inputs sign the BIP 341 key path
  (BIP 340 Schnorr with the tweaked key). A BIP 341 signature commits to every input's spent
  output, so P2TR coins go only into transactions whose inputs are all the wallet's
  (:meth:`Wallet.spendable`); fee bumps that add wallet coins to a foreign input (an anchor, an
  HTLC transaction) take P2WPKH coins (:meth:`Wallet.utxos`).
* raw bytes (datadirs made before): ``HMAC-SHA256(seed, "lightspeed/wallet/p2wpkh/" || i)``,
  P2WPKH only, receive and change on one chain; kept so those wallets still find their coins.

The wallet keeps no UTXO database of its own: it asks the chain which of
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
from lightspeed.bitcoin.sighash import (
    SIGHASH_ALL,
    SIGHASH_DEFAULT,
    bip143_sighash,
    bip341_sighash,
    sign_input,
)
from lightspeed.bitcoin.taproot import key_path_witness_signature
from lightspeed.bitcoin.tx import SEQUENCE_FINAL, Transaction, TxIn, TxOut
from lightspeed.chain.hd import ExtendedKey, coin_type, p2tr_script, taproot_output_key
from lightspeed.chain.source import ChainSource, HistorySource, Utxo
from lightspeed.crypto.hashes import hash160
from lightspeed.crypto.secp256k1 import CURVE_ORDER, pubkey_from_privkey
from lightspeed.errors import PaymentError, UsageError

P2WPKH_DUST_SAT = 294
# BIP 141 weights: version+locktime+counts+marker (4*10+2), a P2WPKH input (4*41 + 108 witness),
# a P2WPKH output (4*31), any output (4 * (9 + script length)).
TX_OVERHEAD_WEIGHT = 42
P2WPKH_INPUT_WEIGHT = 272
# A P2TR key path input: 4*41 + witness (item count 1, length 1, a 64-byte SIGHASH_DEFAULT
# signature) = 230, i.e. 57.5 vbytes.
P2TR_INPUT_WEIGHT = 230


def input_weight(script_pubkey: bytes) -> int:
    """The weight of spending one of the wallet's outputs (P2TR key path or P2WPKH)."""
    return P2TR_INPUT_WEIGHT if script_pubkey[:2] == b"\x51\x20" else P2WPKH_INPUT_WEIGHT


def output_weight(script_pubkey: bytes) -> int:
    return 4 * (9 + len(script_pubkey))


ADDRESS_TYPES = ("p2wpkh", "p2tr")


@dataclass(frozen=True)
class WalletTx:
    """One on-chain transaction as the wallet sees it: what it brought in and took out."""

    tx: Transaction
    height: int | None  # None: in the mempool
    received_sat: int  # paid to our scripts
    sent_sat: int  # our coins it spent
    fee_sat: int | None  # known when every input was ours

    @property
    def net_sat(self) -> int:
        return self.received_sat - self.sent_sat


@dataclass(frozen=True)
class HdSeed:
    """A BIP 39 seed (64 bytes): the wallet derives BIP 84 and BIP 86 keys from it."""

    seed: bytes


@dataclass(frozen=True)
class WalletKey:
    index: int  # -1 for an imported key
    privkey: bytes
    pubkey: bytes
    script_pubkey: bytes
    kind: str = "p2wpkh"  # "p2wpkh" or "p2tr"
    change: bool = False
    path: str = ""  # BIP 32 path; "" for legacy and imported keys


Branch = tuple[str, bool]  # (address type, change)


_NOT_OURS = WalletKey(-1, b"", b"", b"", kind="none")


class Wallet:
    """Spends and receives P2WPKH and P2TR coins found on a :class:`ChainSource`."""

    def __init__(self, seed: bytes | HdSeed, chain: ChainSource, network: Network = REGTEST, gap: int = 20) -> None:
        self.chain, self.network, self.gap = chain, network, gap
        self._account: dict[str, ExtendedKey] = {}
        if isinstance(seed, HdSeed):
            root = ExtendedKey.from_seed(seed.seed)
            coin = coin_type(network)
            self._account = {"p2wpkh": root.derive(f"m/84'/{coin}'/0'"), "p2tr": root.derive(f"m/86'/{coin}'/0'")}
            self._legacy_seed = b""
            self._branches: list[Branch] = [(kind, change) for kind in ADDRESS_TYPES for change in (False, True)]
        else:
            if len(seed) < 16:
                raise UsageError("the wallet seed must be at least 16 bytes")
            self._legacy_seed = seed
            self._branches = [("p2wpkh", False)]
        self._keys: dict[Branch, list[WalletKey]] = {b: [] for b in self._branches}
        self._next: dict[Branch, int] = dict.fromkeys(self._branches, 0)
        self._by_script: dict[bytes, WalletKey] = {}
        self._unbroadcast: dict[bytes, Transaction] = {}  # txid -> signed, must reach the chain, not there yet
        for branch in self._branches:
            self._derive(branch, gap)
        self._rescan()

    @property
    def is_hd(self) -> bool:
        return bool(self._account)

    @property
    def next_index(self) -> int:
        """The index of the next fresh P2WPKH receive key."""
        return self._next[("p2wpkh", False)]

    def _key(self, branch: Branch, index: int) -> WalletKey:
        kind, change = branch
        if not self._account:
            counter = 0
            while True:
                data = b"lightspeed/wallet/p2wpkh/" + index.to_bytes(4, "big") + bytes([counter])
                privkey = hmac.digest(self._legacy_seed, data, hashlib.sha256)
                if 0 < int.from_bytes(privkey, "big") < CURVE_ORDER:
                    pubkey = pubkey_from_privkey(privkey)
                    return WalletKey(index, privkey, pubkey, p2wpkh_script(pubkey))
                counter += 1
        account = self._account[kind]
        child = account.child(int(change)).child(index)
        purpose = 84 if kind == "p2wpkh" else 86
        path = f"m/{purpose}'/{coin_type(self.network)}'/0'/{int(change)}/{index}"
        pubkey = child.pubkey
        script = p2wpkh_script(pubkey) if kind == "p2wpkh" else p2tr_script(taproot_output_key(pubkey))
        return WalletKey(index, child.privkey, pubkey, script, kind, change, path)

    def _derive(self, branch: Branch, count: int) -> None:
        keys = self._keys[branch]
        while len(keys) < count:
            key = self._key(branch, len(keys))
            keys.append(key)
            self._by_script[key.script_pubkey] = key

    def _branch_of(self, key: WalletKey) -> Branch:
        branch = (key.kind, key.change)
        return branch if branch in self._keys else self._branches[0]

    def _rescan(self) -> None:
        """Find the last used key of each chain (it holds or held coins) so new addresses are fresh."""
        for utxo in self.chain.unspent(list(self._by_script)):
            key = self._by_script[utxo.output.script_pubkey]
            if key.index >= 0:
                branch = self._branch_of(key)
                self._next[branch] = max(self._next[branch], key.index + 1)
        for branch in self._branches:
            self._derive(branch, self._next[branch] + self.gap)

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

    def new_key(self, kind: str = "p2wpkh", change: bool = False) -> WalletKey:
        """The next unused key of that chain (P2WPKH receive by default: closes and sweeps pay to it)."""
        if kind not in ADDRESS_TYPES:
            raise UsageError(f"type: {kind!r} is not an address type (p2wpkh or p2tr)")
        branch: Branch = (kind, change)
        if branch not in self._keys:
            if kind == "p2tr":
                raise UsageError("type: p2tr needs a BIP 39 wallet; this datadir's wallet predates it (p2wpkh only)")
            branch = self._branches[0]  # a legacy wallet's change shares the receive chain
        key = self._keys[branch][self._next[branch]]
        self._next[branch] += 1
        self._derive(branch, self._next[branch] + self.gap)
        return key

    def address(self, key: WalletKey) -> str:
        version = 1 if key.kind == "p2tr" else 0
        return segwit_address(version, key.script_pubkey[2:], self.network)

    def new_address(self, kind: str = "p2wpkh") -> str:
        return self.address(self.new_key(kind))

    def owns(self, script_pubkey: bytes) -> WalletKey | None:
        return self._by_script.get(script_pubkey)

    def all_utxos(self) -> list[Utxo]:
        """Every coin of the wallet, P2TR ones included (listfunds)."""
        return self.spendable()

    def scripts(self) -> list[bytes]:
        """Every script the wallet watches (derived up to the gap, imported keys too)."""
        return list(self._by_script)

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
        """P2WPKH coins, those of transactions held for broadcast included.

        What a transaction with inputs that are not the wallet's (a CPFP child of an anchor, a
        bumped HTLC transaction) can take: their signatures do not commit to the other inputs.
        """
        return self._coins(("p2wpkh",), min_confirmations)

    def spendable(self, min_confirmations: int = 0) -> list[Utxo]:
        """Every coin the wallet can spend in a transaction of its own (P2WPKH and P2TR)."""
        return self._coins(ADDRESS_TYPES, min_confirmations)

    def _coins(self, kinds: tuple[str, ...], min_confirmations: int) -> list[Utxo]:
        tip = self.chain.tip()[0]
        coins = self.chain.unspent([s for s, k in self._by_script.items() if k.kind in kinds])
        for txid in [t for t in self._unbroadcast if self.chain.get_transaction(t) is not None]:
            del self._unbroadcast[txid]
        if self._unbroadcast:
            held = {txin.prevout for tx in self._unbroadcast.values() for txin in tx.inputs}
            coins = [u for u in coins if u.outpoint not in held]
            coins += [Utxo(tx.outpoint(n), out, None) for tx in self._unbroadcast.values()
                      for n, out in enumerate(tx.outputs)
                      if self._by_script.get(out.script_pubkey, _NOT_OURS).kind in kinds
                      and tx.outpoint(n) not in held]
        return [u for u in coins
                if min_confirmations == 0 or (u.height is not None and tip - u.height + 1 >= min_confirmations)]

    def balance_sat(self, min_confirmations: int = 0) -> int:
        return sum(u.output.value_sat for u in self.spendable(min_confirmations))

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
        inputs_weight = 0
        spendable = [u for u in self.spendable(min_confirmations) if u.outpoint.txid not in self._unbroadcast]
        for coin in sorted(spendable, key=lambda u: -u.output.value_sat):
            selected.append(coin)
            total += coin.output.value_sat
            inputs_weight += input_weight(coin.output.script_pubkey)
            fee = (base_weight + inputs_weight) * feerate // 1000
            if total >= target + fee:
                break
        else:
            raise PaymentError(f"insufficient funds: need {target} sat plus fees, have {total} sat")
        change_branch: Branch = ("p2wpkh", True) if self.is_hd else self._branches[0]
        change_key = self._keys[change_branch][self._next[change_branch]]
        with_change = base_weight + inputs_weight + output_weight(change_key.script_pubkey)
        change = total - target - with_change * feerate // 1000
        final_outputs = list(outputs)
        if change >= P2WPKH_DUST_SAT:
            final_outputs.append(TxOut(change, self.new_key(change=True).script_pubkey))
        tx = Transaction(2, tuple(TxIn(c.outpoint, sequence=SEQUENCE_FINAL - 2) for c in selected),
                         tuple(final_outputs), self.chain.tip()[0])
        return self.sign(tx, selected)

    def sign(self, tx: Transaction, coins: list[Utxo], first: int = 0,
             spent_outputs: list[TxOut] | None = None) -> Transaction:
        """Sign inputs ``first``, ``first + 1``, ... spending ``coins`` (SIGHASH_ALL / SIGHASH_DEFAULT).

        A P2TR coin's signature commits to the outputs every input spends: ``spent_outputs``
        gives them, or, when ``coins`` are all the inputs, they are ``coins``' outputs.
        """
        if spent_outputs is None and first == 0 and len(coins) == len(tx.inputs):
            spent_outputs = [c.output for c in coins]
        for i, coin in enumerate(coins, start=first):
            key = self._by_script[coin.output.script_pubkey]
            if key.kind == "p2tr":
                if spent_outputs is None or len(spent_outputs) != len(tx.inputs):
                    raise UsageError(f"input {i}: a P2TR coin can only be signed knowing every input's spent output")
                sighash = bip341_sighash(tx, i, spent_outputs, SIGHASH_DEFAULT)
                tx = tx.with_witness(i, (key_path_witness_signature(key.privkey, sighash, SIGHASH_DEFAULT),))
                continue
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
        coins = [u for u in self.spendable() if u.outpoint.txid not in self._unbroadcast]
        if not coins:
            raise PaymentError("nothing to sweep")
        feerate = feerate_per_kw or self.chain.estimate_feerate_per_kw()
        total = sum(c.output.value_sat for c in coins)
        weight = TX_OVERHEAD_WEIGHT + output_weight(to_script) + sum(input_weight(c.output.script_pubkey) for c in coins)
        value = total - weight * feerate // 1000
        if value < P2WPKH_DUST_SAT:
            raise PaymentError("coins are worth less than the fee to sweep them")
        tx = Transaction(2, tuple(TxIn(c.outpoint, sequence=SEQUENCE_FINAL - 2) for c in coins),
                         (TxOut(value, to_script),), self.chain.tip()[0])
        tx = self.sign(tx, coins)
        self.chain.broadcast(tx)
        return tx

    def withdraw(self, to_script: bytes, amount_sat: int | None, feerate_per_kw: int | None = None) -> Transaction:
        """Pay ``amount_sat`` (None: every spendable coin, fee deducted) to ``to_script`` and broadcast."""
        if amount_sat is None:
            return self.sweep(to_script, feerate_per_kw)
        if amount_sat < P2WPKH_DUST_SAT:
            raise UsageError(f"amount_sat: {amount_sat} is below the dust limit ({P2WPKH_DUST_SAT} sat)")
        return self.send([TxOut(amount_sat, to_script)], feerate_per_kw)

    def history(self) -> list[WalletTx]:
        """Every transaction paying or spending our keys' outputs, oldest first (mempool last)."""
        if not isinstance(self.chain, HistorySource):
            raise UsageError("this chain backend cannot list a wallet's transactions")
        entries = self.chain.history(self.scripts())
        known = {tx.txid: tx for tx, _ in entries}
        out: list[WalletTx] = []
        for tx, height in entries:
            received = sum(o.value_sat for o in tx.outputs if o.script_pubkey in self._by_script)
            spent: list[int] = []
            foreign = False
            for txin in tx.inputs:
                parent = known.get(txin.prevout.txid)
                prev = parent.outputs[txin.prevout.index] if parent and txin.prevout.index < len(parent.outputs) else None
                if prev is not None and prev.script_pubkey in self._by_script:
                    spent.append(prev.value_sat)
                else:
                    foreign = True
            fee = None if foreign else sum(spent) - sum(o.value_sat for o in tx.outputs)
            out.append(WalletTx(tx, height, received, sum(spent), fee))
        return out
