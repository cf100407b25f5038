"""Transactions that must reach the chain: broadcast now, or retried until the chain takes them.

A funding transaction the peer has already signed for must be broadcast: the channel exists
from that moment, and a funding that never reaches the chain leaves the channel waiting
forever with its coins counted twice (in the channel and, unspent, in the wallet). So a
broadcast that fails for a transient reason (the chain file is locked by another process:
:class:`~lightspeed.errors.ChainBusy`) is retried in the background with a growing pause,
never blocking the event loop for longer than the chain's bounded busy timeout per try; one
the chain rejects (a rule it breaks) is reported as a :class:`BroadcastRejected` event and
logged. Meanwhile the wallet holds the transaction (:meth:`Wallet.hold`): its inputs are
spent, its change is an unconfirmed coin.
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
from lightspeed.errors import ChainBusy, RejectedTransaction

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
                 report: Callable[[BroadcastRejected], None]) -> None:
        self.chain, self.wallet, self._spawn, self._report = chain, wallet, spawn, report
        self.pending: dict[bytes, Transaction] = {}  # txid -> still to broadcast (retrying)
        self.rejected: dict[bytes, BroadcastRejected] = {}

    def submit(self, tx: Transaction, what: str) -> bool:
        """Broadcast ``tx`` now if the chain allows, else keep retrying; True once it is broadcast."""
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
        except ChainBusy as exc:
            log.warning("%s (%s): chain busy, will retry: %s", what, tx.txid_hex, exc)
            return False
        except RejectedTransaction as exc:
            try:
                known = self.chain.get_transaction(tx.txid) is not None
            except ChainBusy:
                return False
            if known:  # already in the chain or the mempool (another process broadcast it too)
                self._done(tx)
                return True
            self.wallet.release(tx.txid)
            self.pending.pop(tx.txid, None)
            rejected = BroadcastRejected(tx.txid, what, str(exc))
            self.rejected[tx.txid] = rejected
            log.error("%s (%s) rejected by the chain: %s", what, tx.txid_hex, exc)
            self._report(rejected)
            return True
        self._done(tx)
        return True

    def _done(self, tx: Transaction) -> None:
        self.pending.pop(tx.txid, None)
        self.wallet.release(tx.txid)

    async def _retry(self, tx: Transaction, what: str) -> None:
        pause = FIRST_RETRY_S
        while tx.txid in self.pending:
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_RETRY_S)
            if self._attempt(tx, what):
                if tx.txid not in self.rejected:
                    log.info("%s (%s) broadcast after retrying", what, tx.txid_hex)
                return
