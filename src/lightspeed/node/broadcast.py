"""Transactions that must reach the chain: broadcast now, or retried until the chain takes them.

A funding transaction the peer has already signed for must be broadcast: the channel exists
from that moment, and a funding that never reaches the chain leaves the channel waiting
forever with its coins counted twice (in the channel and, unspent, in the wallet). So a
broadcast that fails for a transient reason (the chain file is locked by another process:
:class:`~lightspeed.errors.ChainBusy`; its disk is full or it is read-only:
:class:`~lightspeed.errors.ChainUnavailable`) is retried in the background with a growing pause,
never blocking the event loop for longer than the chain's bounded busy timeout per try; one
the chain rejects (a rule it breaks) is reported as a :class:`BroadcastRejected` event and
logged. Meanwhile the wallet holds the transaction (:meth:`Wallet.hold`): its inputs are
spent, its change is an unconfirmed coin.

With a store, every transaction is committed to it before the first try (:meth:`Broadcaster.keep`
lets the caller commit it in the same transaction as the state that depends on it, e.g. the
channel its funding opens) and deleted once the chain has it or refused it; :meth:`Broadcaster.resume`,
at start, submits again whatever a stopped or killed process left unbroadcast.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from lightspeed.bitcoin.tx import Transaction
from lightspeed.chain.source import ChainSource
from lightspeed.chain.wallet import Wallet
from lightspeed.errors import ChainBusy, ChainUnavailable, RejectedTransaction
from lightspeed.store.base import Store

log = logging.getLogger("lightspeed.node.broadcast")

FIRST_RETRY_S = 0.1
MAX_RETRY_S = 5.0


@dataclass(frozen=True)
class BroadcastRejected:
    """The chain refused ``txid`` (``what`` it was, e.g. "funding of channel ..."): ``reason`` says why."""

    txid: bytes
    what: str
    reason: str


class Broadcaster:
    """Broadcasts with retries; ``spawn`` runs the retry task, ``report`` publishes rejections."""

    def __init__(self, chain: ChainSource, wallet: Wallet,
                 spawn: Callable[[Coroutine[Any, Any, None]], None],
                 report: Callable[[BroadcastRejected], None], store: Store | None = None) -> None:
        self.chain, self.wallet, self._spawn, self._report = chain, wallet, spawn, report
        self.store = store
        self.pending: dict[bytes, Transaction] = {}  # txid -> still to broadcast (retrying)
        self.rejected: dict[bytes, BroadcastRejected] = {}
        self._kept: set[bytes] = set()  # txids in the store

    def keep(self, tx: Transaction, what: str) -> None:
        """Write ``tx`` to the store (inside the caller's store transaction): it survives a crash."""
        if self.store is not None:
            self.store.put_broadcast(tx.txid, tx.serialize(), what)
            self._kept.add(tx.txid)

    def resume(self) -> None:
        """Submit again every transaction the store holds (left by a process that stopped first)."""
        if self.store is None:
            return
        for txid, raw, what in self.store.broadcasts():
            self._kept.add(txid)
            self.submit(Transaction.parse(raw), what)

    def submit(self, tx: Transaction, what: str) -> bool:
        """Broadcast ``tx`` now if the chain allows, else keep retrying; True once it is broadcast.

        Committed to the store first (unless :meth:`keep` did), so a crash never loses it.
        """
        if self.store is not None and tx.txid not in self._kept:
            with self.store.transaction():
                self.keep(tx, what)
        self.wallet.hold(tx)
        if self._attempt(tx, what):
            return True
        if tx.txid in self.pending:
            return False
        self.pending[tx.txid] = tx
        self._spawn(self._retry(tx, what))
        return False

    def _attempt(self, tx: Transaction, what: str) -> bool:
        """One try: True when done (broadcast, already there, or rejected), False to retry."""
        try:
            self.chain.broadcast(tx)
        except (ChainBusy, ChainUnavailable) as exc:  # locked, full, read-only: it may pass later
            log.warning("%s (%s): chain busy, will retry: %s", what, tx.txid_hex, exc)
            return False
        except RejectedTransaction as exc:
            try:
                known = self.chain.get_transaction(tx.txid) is not None
            except (ChainBusy, ChainUnavailable):
                return False
            if known:  # already in the chain or the mempool (another process broadcast it too)
                self._forget(tx)
                return True
            self._forget(tx)
            rejected = BroadcastRejected(tx.txid, what, str(exc))
            self.rejected[tx.txid] = rejected
            log.error("%s (%s) rejected by the chain: %s", what, tx.txid_hex, exc)
            self._report(rejected)
            return True
        self._forget(tx)
        return True

    def _forget(self, tx: Transaction) -> None:
        """The chain has it or refused it: nothing to retry, now or after a restart."""
        self.pending.pop(tx.txid, None)
        self.wallet.release(tx.txid)
        if self.store is not None and tx.txid in self._kept:
            with self.store.transaction():
                self.store.delete_broadcast(tx.txid)
            self._kept.discard(tx.txid)

    async def _retry(self, tx: Transaction, what: str) -> None:
        pause = FIRST_RETRY_S
        while tx.txid in self.pending:
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_S)
            if self._attempt(tx, what):
                if tx.txid not in self.rejected:
                    log.info("%s (%s) broadcast after retrying", what, tx.txid_hex)
                return
