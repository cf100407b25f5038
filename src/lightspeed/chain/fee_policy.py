"""The regtest chain's fee market: a minimum relay feerate, replacement (BIP 125) and congestion.

A real mempool refuses a transaction paying less than its minimum relay feerate, lets a
transaction that pays more replace the ones it conflicts with, and when blocks are full mines
the best-paying packages first, leaving the rest waiting. The embedded chain plays the three so
that fee bumping (CPFP through an anchor, fee inputs on zero-fee HTLC transactions, RBF) is tested
against a chain that would otherwise leave a claim unconfirmed. Feerates are in sat per 1000
weight units (sat/kw), as the Lightning specs count them.
"""

from __future__ import annotations

from dataclasses import dataclass

# Bitcoin Core's -incrementalrelayfee (1 sat/vbyte): what a replacement must add per vbyte of its own.
INCREMENTAL_RELAY_SAT_PER_VBYTE = 1
# BIP 125 rule 5: a replacement may evict at most this many transactions (descendants included).
MAX_REPLACEMENT_EVICTIONS = 100


def feerate_per_kw(fee_sat: int, weight: int) -> int:
    """The feerate ``fee_sat`` pays for ``weight``, rounded down (never flatters a transaction)."""
    return fee_sat * 1000 // max(weight, 1)


def replacement_shortfall(new_fee_sat: int, new_vsize: int, replaced_fees_sat: int) -> int:
    """How many sat a replacement lacks (0 if it may replace), BIP 125 rules 3 and 4: it pays at
    least the fees of everything it evicts, plus the incremental relay fee for its own size."""
    return max(0, replaced_fees_sat + INCREMENTAL_RELAY_SAT_PER_VBYTE * new_vsize - new_fee_sat)


def replacement_error(new_fee_sat: int, new_weight: int, new_vsize: int,
                      conflicts: list[tuple[bytes, int, int]], evicted_fees_sat: int, evicted_count: int,
                      new_unconfirmed_inputs: list[int]) -> str | None:
    """Why a replacement is refused under BIP 125 (as Bitcoin Core applies it), or None if it may replace.

    ``conflicts``: (txid, fee, weight) of each mempool transaction it spends an input of;
    ``evicted_*``: those plus their descendants; ``new_unconfirmed_inputs``: indexes of its inputs
    spending unconfirmed outputs that none of the conflicts spent.
    """
    # Rule 2: no unconfirmed input that the replaced did not already have.
    if new_unconfirmed_inputs:
        return (f"input {new_unconfirmed_inputs[0]}: a replacement may not add an unconfirmed input "
                "(BIP 125 rule 2)")
    # Core's PaysMoreThanConflicts: a higher feerate than each transaction it directly replaces.
    new_rate = feerate_per_kw(new_fee_sat, new_weight)
    for txid, fee, weight in conflicts:
        if new_fee_sat * weight <= fee * new_weight:
            return (f"its feerate {new_rate} sat/kw is not above the {feerate_per_kw(fee, weight)} sat/kw "
                    f"of {txid[::-1].hex()}, which it would replace")
    # Rules 3 and 4.
    short = replacement_shortfall(new_fee_sat, new_vsize, evicted_fees_sat)
    if short:
        return (f"a replacement must pay {short} sat more (BIP 125: the replaced fees {evicted_fees_sat} sat "
                f"plus 1 sat/vbyte of its own)")
    # Rule 5.
    if evicted_count > MAX_REPLACEMENT_EVICTIONS:
        return (f"it would evict {evicted_count} transactions, more than the "
                f"{MAX_REPLACEMENT_EVICTIONS} BIP 125 allows")
    return None


@dataclass(frozen=True)
class MempoolEntry:
    """One unconfirmed transaction as the miner sees it: its fee, weight and unconfirmed parents."""

    txid: bytes
    fee_sat: int
    weight: int
    parents: frozenset[bytes]


def select_for_block(entries: list[MempoolEntry], below_per_kw: int) -> set[bytes]:
    """The txids a congested block takes: every package (a transaction with its unselected
    unconfirmed ancestors) paying at least ``below_per_kw`` as a whole, so a child pays for its
    parent (CPFP). Transactions in no such package wait. ``below_per_kw`` 0: everything."""
    by_txid = {e.txid: e for e in entries}
    if below_per_kw <= 0:
        return set(by_txid)
    selected: set[bytes] = set()

    def ancestors(txid: bytes) -> set[bytes]:
        found: set[bytes] = set()
        todo = [txid]
        while todo:
            for parent in by_txid[todo.pop()].parents:
                if parent in by_txid and parent not in selected and parent not in found:
                    found.add(parent)
                    todo.append(parent)
        return found

    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.txid in selected:
                continue
            package = ancestors(entry.txid) | {entry.txid}
            fee = sum(by_txid[t].fee_sat for t in package)
            weight = sum(by_txid[t].weight for t in package)
            if feerate_per_kw(fee, weight) >= below_per_kw:
                selected |= package
                changed = True
    return selected
