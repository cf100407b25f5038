"""What the node needs from a Bitcoin chain, as a narrow interface.

Changes are observed by polling (``tip``, ``confirmations``, ``spending_tx``),
never by callbacks into protocol code: the runtime asks, then feeds the answers
into the state machines as inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from lightspeed.bitcoin.tx import OutPoint, Transaction, TxOut


@dataclass(frozen=True)
class Utxo:
    outpoint: OutPoint
    output: TxOut
    height: int | None  # None while in the mempool


class ChainSource(Protocol):
    def tip(self) -> tuple[int, bytes]:
        """(height, block hash) of the best block."""
        ...

    def broadcast(self, tx: Transaction) -> bytes:
        """Submit ``tx``; returns its txid or raises RejectedTransaction with the rule it broke.

        ChainBusy (nothing done) when the chain cannot be written now: the same call may be retried.
        """
        ...

    def get_transaction(self, txid: bytes) -> tuple[Transaction, int] | None:
        """The transaction and its confirmations (0 in the mempool), or None if unknown."""
        ...

    def spending_tx(self, outpoint: OutPoint) -> Transaction | None:
        """The transaction (confirmed or in the mempool) that spends ``outpoint``, if any."""
        ...

    def unspent(self, script_pubkeys: list[bytes]) -> list[Utxo]:
        """Unspent outputs paying any of ``script_pubkeys`` (mempool included)."""
        ...

    def estimate_feerate_per_kw(self, target_blocks: int = 6) -> int:
        """Fee rate in satoshi per 1000 weight units."""
        ...


class NodeChain(ChainSource, Protocol):
    """What a node needs beyond :class:`ChainSource`: where a transaction sits (short channel ids)
    and what a short channel id names (BOLT 7 checks of announced channels)."""

    def tx_position(self, txid: bytes) -> tuple[int, int] | None:
        """(block height, index in the block) of a confirmed transaction; None otherwise."""
        ...

    def output_at(self, block_height: int, tx_index: int, output_index: int) -> tuple[TxOut, bool] | None:
        """The output at that position and whether it is spent; None if there is none."""
        ...


@runtime_checkable
class HistorySource(Protocol):
    """A chain that lists every transaction touching some scripts (a wallet's on-chain history)."""

    def history(self, script_pubkeys: list[bytes]) -> list[tuple[Transaction, int | None]]:
        """Transactions paying or spending any of ``script_pubkeys``, with their height (None: mempool)."""
        ...
