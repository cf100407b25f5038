"""Regtest chain validation throughput beside the raw signature verifications it needs.

Each accepted transaction is parsed, checked against the UTXO set in SQLite,
its witness executed, and stored. The limit column is coincurve's ECDSA verify
alone for the same number of signatures (1 per P2WPKH spend, 2 per 2-of-2).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

from coincurve import PrivateKey

from benchmarks._util import median_us, report
from lightspeed.bitcoin.script import multisig_2of2, p2pkh_script_code, p2wpkh_script, p2wsh_script
from lightspeed.bitcoin.sighash import SIGHASH_ALL, bip143_sighash, sign_input
from lightspeed.bitcoin.tx import Transaction, TxIn, TxOut
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import hash160
from lightspeed.crypto.secp256k1 import pubkey_from_privkey

KEY, KEY2 = b"\x31" * 32, b"\x32" * 32
PUB, PUB2 = pubkey_from_privkey(KEY), pubkey_from_privkey(KEY2)
N = 300


def _p2wpkh_spends(chain: RegtestChain) -> list[Transaction]:
    spk = p2wpkh_script(PUB)
    coins = [chain.fund(spk, 50_000, confirm=False) for _ in range(N)]
    chain.mine(1)
    txs = []
    for coin in coins:
        tx = Transaction(2, (TxIn(coin),), (TxOut(49_000, spk),), 0)
        sighash = bip143_sighash(tx, 0, p2pkh_script_code(hash160(PUB)), 50_000, SIGHASH_ALL)
        txs.append(tx.with_witness(0, (sign_input(KEY, sighash, SIGHASH_ALL), PUB)))
    return txs


def _multisig_spends(chain: RegtestChain) -> list[Transaction]:
    funding = multisig_2of2(PUB, PUB2)
    keys = sorted([KEY, KEY2], key=pubkey_from_privkey)
    coins = [chain.fund(p2wsh_script(funding), 50_000, confirm=False) for _ in range(N)]
    chain.mine(1)
    txs = []
    for coin in coins:
        tx = Transaction(2, (TxIn(coin),), (TxOut(49_000, p2wpkh_script(PUB)),), 0)
        sighash = bip143_sighash(tx, 0, funding, 50_000, SIGHASH_ALL)
        txs.append(tx.with_witness(0, (b"", *(sign_input(k, sighash, SIGHASH_ALL) for k in keys), funding)))
    return txs


def _throughput(txs: list[Transaction], chain: RegtestChain) -> float:
    start = time.perf_counter()
    for tx in txs:
        chain.broadcast(tx)
    return len(txs) / (time.perf_counter() - start)


TITLE = "Regtest chain: transactions accepted per second (validation + SQLite) vs signature verification alone"
COLUMNS = ["transaction", "accepted/s", "verify-only limit/s", "limit/ours", "µs per tx"]


def measure() -> tuple[list[list[object]], dict[str, object]]:
    """Rows for the table and the JSON summary (also used by benchmarks/bolt3.py)."""
    key = PrivateKey(KEY)
    msg = b"\x01" * 32
    der = key.sign(msg, hasher=None)
    verify_us = median_us(lambda: key.public_key.verify(der, msg, hasher=None), 2000)
    rows: list[list[object]] = []
    summary: dict[str, object] = {"benchmark": "chain", "verify_us": round(verify_us, 1)}
    for name, build, sigs in (("P2WPKH spend", _p2wpkh_spends, 1), ("2-of-2 P2WSH spend", _multisig_spends, 2)):
        chain = RegtestChain(":memory:")
        txs = build(chain)
        tps = _throughput(txs, chain)
        limit = 1e6 / (verify_us * sigs)
        rows.append([name, round(tps), round(limit), f"{limit / tps:.1f}x", f"{1e6 / tps:.0f}"])
        summary[name.split()[0].lower().replace("-", "")] = {"tx_per_s": round(tps), "verify_limit_tx_per_s": round(limit)}
    return rows, summary


def main() -> None:
    rows, summary = measure()
    report(TITLE, COLUMNS, rows, summary)


if __name__ == "__main__":
    main()
