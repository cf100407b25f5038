"""Blocks made elsewhere, and reorganisations, on the embedded regtest chain (the checks).

:func:`submit_block` takes a serialized block built by someone else (a conformance suite
brings its own block 1, whose coinbase pays keys it knows) and checks it as Bitcoin Core
checks a block before it extends the tip: it must build on the tip; its ``bits`` must be
regtest's and its hash meet that target (proof of work); its time must be after the median
of the last 11 blocks and at most two hours ahead of the chain's clock; its merkle root must
commit to its transactions, the first and only the first a coinbase, which carries the height
(BIP 34), claims no more than the subsidy plus the fees, and commits to the witnesses when
there are any (BIP 141); every other transaction is validated in order as
:meth:`~lightspeed.chain.regtest.RegtestChain.broadcast` validates one (inputs unspent, values,
maturity, locktimes, every witness executed).

:func:`trim_blocks` reorganises back to a height, as Bitcoin Core's ``invalidateblock`` of the
block above it: the blocks above go, their coinbases with them, and their other transactions
return to the mempool, each validated again against the shorter chain with the mempool after
them (one that no longer fits, a spend of a vanished coinbase say, is dropped with its children).

Each runs in one write transaction of the chain file: all or nothing. The table work is done
by :class:`~lightspeed.chain.regtest.RegtestChain`, which owns the schema.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING

from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.blocks import (
    HEADER_SIZE,
    REGTEST_BITS,
    WITNESS_COMMITMENT_HEADER,
    BlockHeader,
    merkle_root,
    script_num,
)
from lightspeed.crypto.hashes import sha256d
from lightspeed.errors import DecodeError, RejectedBlock, RejectedTransaction

if TYPE_CHECKING:
    from lightspeed.chain.regtest import RegtestChain

MEDIAN_TIME_SPAN = 11  # BIP 113: a block's time must be after the median of the previous 11
MAX_FUTURE_BLOCK_TIME_S = 2 * 60 * 60  # Bitcoin Core: "time-too-new" beyond two hours ahead
_COMMITMENT_PREFIX = b"\x6a\x24" + WITNESS_COMMITMENT_HEADER  # OP_RETURN, push 36, aa21a9ed


def parse_block(raw: bytes) -> tuple[BlockHeader, list[Transaction]]:
    """A serialized block's header and transactions; DecodeError naming what is wrong."""
    header = BlockHeader.parse(raw[:HEADER_SIZE])
    count, pos = _compact_size(raw, HEADER_SIZE)
    if count == 0:
        raise DecodeError("block", "no transactions")
    txs = []
    for i in range(count):
        try:
            tx, pos = Transaction.parse_prefix(raw, pos)
        except DecodeError as exc:
            raise DecodeError(f"block transaction {i}", exc.reason) from None
        txs.append(tx)
    if pos != len(raw):
        raise DecodeError("block", f"{len(raw) - pos} bytes after its {count} transactions")
    return header, txs


def _compact_size(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise DecodeError("block transaction count", "truncated")
    first = data[pos]
    if first < 0xFD:
        return first, pos + 1
    size = {0xFD: 2, 0xFE: 4, 0xFF: 8}[first]
    if pos + 1 + size > len(data):
        raise DecodeError("block transaction count", "truncated")
    return int.from_bytes(data[pos + 1:pos + 1 + size], "little"), pos + 1 + size


def submit_block(chain: RegtestChain, raw: bytes) -> bytes:
    """Check ``raw`` and make it the new tip; returns its hash, or raises RejectedBlock (nothing changed)."""
    from lightspeed.chain.regtest import SUBSIDY_SAT

    try:
        header, txs = parse_block(raw)
    except DecodeError as exc:
        raise RejectedBlock(f"malformed block: {exc}") from None
    with chain._write():
        tip_height, tip_hash = chain.tip()
        height = tip_height + 1
        if header.prev_hash != tip_hash:
            raise RejectedBlock(f"block {header.hash[::-1].hex()} builds on {header.prev_hash[::-1].hex()}, "
                                f"not on the tip {tip_hash[::-1].hex()}")
        if header.bits != REGTEST_BITS:
            raise RejectedBlock(f"bits {header.bits:#010x}: regtest blocks have {REGTEST_BITS:#010x}")
        if not header.meets_target():
            raise RejectedBlock(f"proof of work: the hash {header.hash[::-1].hex()} is above the target")
        times = [chain.block_time(h) for h in range(max(0, height - MEDIAN_TIME_SPAN), height)]
        if header.time <= statistics.median_low(times):
            raise RejectedBlock(f"time {header.time} is not after the median time of the last {len(times)} blocks")
        if chain.clock is not None and header.time > chain.clock() + MAX_FUTURE_BLOCK_TIME_S:
            raise RejectedBlock(f"time {header.time} is more than two hours in the future")
        _check_structure(header, txs, height)
        fees = 0
        for i, tx in enumerate(txs[1:], start=1):
            if chain._mempool_fee(tx.txid) is None:
                try:
                    chain._accept(tx, from_block=True)  # a broadcast's checks, against the chain and the block so far
                except RejectedTransaction as exc:
                    raise RejectedBlock(f"transaction {i} ({tx.txid_hex}): {exc}") from None
            fee = chain._mempool_fee(tx.txid)
            assert fee is not None
            fees += fee
        claimed = sum(o.value_sat for o in txs[0].outputs)
        if claimed > SUBSIDY_SAT + fees:
            raise RejectedBlock(f"the coinbase claims {claimed} sat; the subsidy and fees are {SUBSIDY_SAT + fees}")
        chain._connect_block(header, txs, height)
    return header.hash


def _check_structure(header: BlockHeader, txs: list[Transaction], height: int) -> None:
    """The checks that need no chain state: merkle root, coinbase, witness commitment."""
    if not txs[0].is_coinbase:
        raise RejectedBlock("the first transaction is not a coinbase")
    if any(tx.is_coinbase for tx in txs[1:]):
        raise RejectedBlock("more than one coinbase")
    txids = [tx.txid for tx in txs]
    if len(set(txids)) != len(txids):
        raise RejectedBlock("a transaction appears twice")
    if merkle_root(txids) != header.merkle_root:
        raise RejectedBlock("the merkle root does not commit to the block's transactions")
    coinbase = txs[0]
    # BIP 34: the coinbase's script starts with a push of the block height.
    if not coinbase.inputs[0].script_sig.startswith(script_num(height)):
        raise RejectedBlock(f"the coinbase script does not start with the height {height} (BIP 34)")
    # BIP 141: the last output starting with the commitment header is the commitment.
    commitments = [o.script_pubkey for o in coinbase.outputs
                   if len(o.script_pubkey) >= 38 and o.script_pubkey.startswith(_COMMITMENT_PREFIX)]
    has_witness = any(txin.witness for tx in txs[1:] for txin in tx.inputs)
    if not commitments:
        if has_witness or coinbase.inputs[0].witness:
            raise RejectedBlock("witness data without a witness commitment in the coinbase (BIP 141)")
        return
    reserved = coinbase.inputs[0].witness
    if len(reserved) != 1 or len(reserved[0]) != 32:
        raise RejectedBlock("the coinbase witness must be one 32-byte reserved value (BIP 141)")
    expected = sha256d(merkle_root([bytes(32), *(tx.wtxid for tx in txs[1:])]) + reserved[0])
    if commitments[-1][6:38] != expected:
        raise RejectedBlock("the witness commitment does not match the block's witnesses (BIP 141)")


def trim_blocks(chain: RegtestChain, height: int) -> list[bytes]:
    """Reorganise back to ``height`` (see the module docstring); the txids dropped from the mempool."""
    with chain._write():
        tip = chain.tip()[0]
        if not 0 <= height <= tip:
            raise RejectedBlock(f"height {height}: the chain has blocks 0 to {tip}, the genesis stays")
        return chain._disconnect_to(height)
