"""Closing channels: mutual close (shutdown, closing_signed), force close, and the chain watch.

A part of :class:`~lightspeed.node.node.Node` (its methods, bound onto the class there). What a
closed channel's outputs need is decided by :mod:`lightspeed.node.onchain`; this module feeds it
the chain's blocks and turns its events into payment outcomes and sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightspeed.bitcoin.tx import OutPoint, Transaction
from lightspeed.channel.closing import ClosingNegotiation, shutdown
from lightspeed.channel.htlc_log import LoggedHtlc, Side
from lightspeed.channel.resolve import SpendKind, htlc_deadline_passed
from lightspeed.channel.serialize import channel_from_record
from lightspeed.channel.state import Channel
from lightspeed.codec.generated import (
    ClosingSigned,
    Shutdown,
)
from lightspeed.codec.messages import Error
from lightspeed.errors import (
    LightspeedError,
    PeerProtocolError,
    RejectedTransaction,
    UsageError,
)
from lightspeed.node.anchor_cpfp import broadcast_commitment
from lightspeed.node.fee_bumper import CommitmentBumper
from lightspeed.node.funding_watch import FUNDING_RECHECK_S, ready_channels
from lightspeed.node.htlc_bump import HtlcFeeBumper
from lightspeed.node.onchain import (
    ChannelClosedOnChain,
    HtlcResolvedOnChain,
    OnchainEvent,
    OnchainWatcher,
    ResolutionFinished,
    backfill_close_summaries,
    close_summary,
)
from lightspeed.node.outcomes import PaymentFailed
from lightspeed.node.paying import HtlcOutcome
from lightspeed.node.peer import Peer
from lightspeed.store import StoredChannel

if TYPE_CHECKING:
    from lightspeed.node.node import Node

log = logging.getLogger("lightspeed.node")


@dataclass
class _Closing:
    """A mutual close in progress: our shutdown script, then the fee negotiation."""

    local_script: bytes
    done: asyncio.Future[Transaction]
    shutdown_sent: bool = False
    fee_range: tuple[int, int] | None = None  # the operator's closing fee (close --feerate), else the chain's
    negotiation: ClosingNegotiation | None = None


CLOSING_WEIGHT = 700  # a closing transaction with two P2WPKH outputs weighs about 680


def _closing_fees(self: Node) -> tuple[int, int]:
    """Our acceptable closing fee range: the chain's feerate for the closing weight, up to 4x."""
    low = CLOSING_WEIGHT * self.chain.estimate_feerate_per_kw() // 1000 + 1
    return low, 4 * low


async def close_channel(self: Node, channel_id: bytes, timeout: float = 30, script_pubkey: bytes | None = None,
                        feerate_per_kw: int | None = None) -> Transaction:
    """Mutual close (BOLT 2 shutdown, closing_signed): returns the agreed closing transaction.

    It is committed, then broadcast through :class:`Broadcaster` (retried while the chain is
    busy, rebroadcast after a restart): it may still be on its way to the chain.

    The closing output pays a fresh wallet key, so the balance returns to the on-chain wallet,
    or ``script_pubkey`` (close --address). ``feerate_per_kw``: the closing fee we offer and
    accept (else the chain's estimate, up to 4x).
    """
    channel = self.channels.get(channel_id)
    if channel is None:
        raise UsageError(f"no open channel {channel_id.hex()}")
    log = channel.log
    if log.commitment(Side.LOCAL).htlcs or log.commitment(Side.REMOTE).htlcs or log.has_changes_to_sign():
        raise UsageError("HTLCs or updates are still pending on this channel; close once they settle")
    closing = self._closings.get(channel_id)
    if closing is None:
        done: asyncio.Future[Transaction] = asyncio.get_running_loop().create_future()
        fee_range = None
        if feerate_per_kw is not None:
            fee = CLOSING_WEIGHT * feerate_per_kw // 1000 + 1
            fee_range = (fee, fee)
        closing = self._closings[channel_id] = _Closing(script_pubkey or self.wallet.new_key().script_pubkey,
                                                        done, fee_range=fee_range)
    if not closing.shutdown_sent:
        closing.shutdown_sent = True
        self._save_shutdown(channel_id, closing.local_script)
        await self._channel_peer[channel_id].send(shutdown(channel, closing.local_script))
    return await asyncio.wait_for(asyncio.shield(closing.done), timeout)


def _save_shutdown(self: Node, channel_id: bytes, script_pubkey: bytes) -> None:
    """Committed before our shutdown goes out: after a restart it is resent, no HTLC added."""
    with self.store.transaction():
        self.store.put_shutdown(channel_id, script_pubkey)


async def _on_closing_message(self: Node, peer: Peer, message: Shutdown | ClosingSigned) -> None:
    channel = self.channels.get(message.channel_id)
    if channel is None or self._channel_peer.get(message.channel_id) is not peer:
        raise PeerProtocolError(f"{message.NAME} for an unknown channel")
    closing = self._closings.get(message.channel_id)
    if isinstance(message, Shutdown):
        if closing is None:
            done: asyncio.Future[Transaction] = asyncio.get_running_loop().create_future()
            closing = _Closing(self.wallet.new_key().script_pubkey, done)
            self._closings[message.channel_id] = closing
        if not closing.shutdown_sent:  # BOLT 2: answer a shutdown with our own
            closing.shutdown_sent = True
            self._save_shutdown(message.channel_id, closing.local_script)
            await peer.send(shutdown(channel, closing.local_script))
        low, high = closing.fee_range or self._closing_fees()
        closing.negotiation = ClosingNegotiation.start(channel, closing.local_script, message.scriptpubkey,
                                                       low, high)
        if channel.config.local_is_funder:  # BOLT 2: the funder sends the first closing_signed
            await peer.send(closing.negotiation.propose((low + high) // 2))
        return
    if closing is None or closing.negotiation is None:
        raise PeerProtocolError("closing_signed before shutdown", message.channel_id)
    reply = closing.negotiation.receive(message)
    if reply is not None:
        await peer.send(reply)
    agreed = closing.negotiation.agreed
    if agreed is not None and not closing.done.done():
        what = f"mutual close of channel {message.channel_id.hex()}"
        with self.store.transaction():  # the close and its transaction, committed before the broadcast
            self.store.close_channel(message.channel_id, agreed.txid, close_summary(channel, "mutual"))
            self.broadcaster.keep(agreed, what)
        # Retried while the chain is busy, rebroadcast after a restart; a refusal is a
        # BroadcastRejected event (the peer's broadcast of the same transaction is no refusal).
        self.broadcaster.submit(agreed, what)
        self.channels.pop(message.channel_id, None)
        self._channel_peer.pop(message.channel_id, None)
        self._backup_channel_closed(message.channel_id)
        self.closed_channels[message.channel_id] = agreed
        closing.done.set_result(agreed)


def _new_onchain_watcher(self: Node) -> OnchainWatcher:
    """The chain watcher; channels it is resolving are not open channels any more."""
    def load(stored: StoredChannel) -> Channel:
        return channel_from_record(stored.state, stored.remote_commitments, self._derive_secrets)

    watcher = OnchainWatcher(self.chain, self.store, lambda: self.wallet.new_key().script_pubkey,
                             self._known_preimage, load, HtlcFeeBumper(self.chain, self.wallet),
                             CommitmentBumper(self.chain, self.wallet))
    backfill_close_summaries(self.store, load)  # closed under an older version: listed like the others
    for cid in watcher.active():
        self.channels.pop(cid, None)
    return watcher


def _known_preimage(self: Node, payment_hash: bytes) -> bytes | None:
    """The preimage of an HTLC paid to us that we would fulfil: our invoice's, or a forward's."""
    invoice = self.store.invoice(payment_hash)
    if invoice is not None and invoice.preimage:
        return invoice.preimage
    return next((r.preimage for r in self.store.incoming_htlcs()
                 if r.payment_hash == payment_hash and r.preimage), None)


async def force_close_channel(self: Node, channel_id: bytes, reason: str = "channel force closed") -> Transaction:
    """Fail the channel (BOLT 2): broadcast our latest commitment; returns what spent the funding.

    If the funding output is already spent (the peer closed first), that spend is resolved
    instead. The watcher then sweeps our outputs as their delays expire.
    """
    self._require_store()
    channel = self.channels.get(channel_id)
    if channel is None:
        raise UsageError(f"no open channel {channel_id.hex()}")
    funding = OutPoint(channel.config.funding_txid, channel.config.funding_output_index)
    spend = self.chain.spending_tx(funding)
    if spend is None:
        commitment = channel.signed_local_commitment()
        try:  # with a CPFP child through our anchor if the commitment pays less than the chain asks
            broadcast_commitment(self.chain, self.wallet, channel, commitment,
                                 self.chain.estimate_feerate_per_kw())
            spend = commitment
        except RejectedTransaction:
            spend = self.chain.spending_tx(funding)
            if spend is None:
                raise
    await self._on_onchain_events([self._onchain.start(channel, spend)])
    peer = self._peers.get(self._channel_node.get(channel_id, b""))
    if peer is not None:  # BOLT 1: the error tells the peer the channel failed
        with contextlib.suppress(UsageError, ConnectionError, OSError):
            await peer.send(Error(channel_id, reason.encode()))
    return spend


async def _watch_chain(self: Node) -> None:
    """Poll the tip; on each new block let the watcher detect spends and broadcast claims."""
    seen: tuple[int, bytes] | None = None
    loop = asyncio.get_running_loop()
    funding_checked = loop.time()
    while not self._stopping:
        tip = self.chain.tip()
        new_tip = tip != seen
        if new_tip:
            await self._on_onchain_events(self._onchain.poll(self.channels, self._closings))
            self._bump_parents()
        if new_tip or loop.time() - funding_checked >= FUNDING_RECHECK_S:
            # node.funding_watch; also between blocks: a light client proves (or voids) confirmations
            # after it announced the tip that changed them
            funding_checked = loop.time()
            await self._on_funding_events(self._funding_watch.poll(ready_channels(self)))
        if new_tip:
            seen = tip
            await self.fee_follower.on_block()
            self.synced_tip = tip  # getinfo's synced flag: every block up to here is handled
            for cid, channel in list(self.channels.items()):  # BOLT 2 HTLC deadlines
                reason = htlc_deadline_passed(channel, tip[0], lambda h: self._known_preimage(h) is not None)
                if reason is not None:
                    with contextlib.suppress(LightspeedError):
                        await self.force_close_channel(cid, reason)
        await asyncio.sleep(0.05)


def _bump_parents(self: Node) -> None:
    """Our funding and closing transactions still unconfirmed are watched; the stuck ones get a
    CPFP child through our output of them (:class:`~lightspeed.node.fee_bumper.ParentBumper`).
    Found from the channels at every block, so a restarted node watches them again."""
    bumper = self.parent_bumper
    if bumper is None:
        return
    waiting = [(c.config.funding_txid, f"funding of channel {cid.hex()}") for cid, c in self.channels.items()
               if c.config.local_is_funder]
    waiting += [(tx.txid, f"close of channel {cid.hex()}") for cid, tx in self.closed_channels.items()]
    for txid, what in waiting:
        if txid in bumper.confirmed or txid in bumper.watched:
            continue
        try:
            found = self.chain.get_transaction(txid)
        except LightspeedError:
            continue
        if found is not None and found[1] == 0:
            bumper.watch(found[0], what)
        elif found is not None:
            bumper.confirmed.add(txid)  # never asked again
    for child in bumper.poll():
        log.info("CPFP child %s broadcast", child.txid_hex)


async def _on_onchain_events(self: Node, events: list[OnchainEvent]) -> None:
    for event in events:
        cid = event.channel_id
        if isinstance(event, ChannelClosedOnChain):
            self.channels.pop(cid, None)
            self._backup_channel_closed(cid)
            self._channel_peer.pop(cid, None)
            self._reestablished.discard(cid)
            closing = self._closings.get(cid)
            found = self.chain.get_transaction(event.spend_txid)
            if found is not None:
                self.closed_channels[cid] = found[0]  # listed as closed by what spent the funding
            if event.kind is SpendKind.MUTUAL and closing is not None and found is not None \
                    and not closing.done.done():
                closing.done.set_result(found[0])  # a close_channel() still waiting ends here
        elif isinstance(event, HtlcResolvedOnChain) and event.offered:
            await self._onchain_htlc_outcome(cid, event.htlc_id, event.payment_hash, event.preimage)
        elif isinstance(event, ResolutionFinished):  # what never made it on chain is lost
            for htlc_id, payment_hash in list(self._in_flight.get(cid, {}).items()):
                await self._onchain_htlc_outcome(cid, htlc_id, payment_hash, None)
            for out, incoming in list(self._by_out.items()):
                record = self._incoming.get(incoming)
                if out[0] == cid and record is not None:
                    await self._onchain_htlc_outcome(cid, out[1], record.payment_hash, None)


async def _onchain_htlc_outcome(self: Node, channel_id: bytes, htlc_id: int | None, payment_hash: bytes,
                                preimage: bytes | None) -> None:
    """An HTLC we offered ended on chain: claimed with its preimage, or timed out back to us.

    Settled like one the peer fulfilled or failed off chain: a forward passes the preimage
    (or a failure) to its incoming HTLC, a sender waiting on it learns the outcome, a payment
    left from before a restart is recorded. One store transaction, then the messages.
    """
    if htlc_id is None:  # not in the channel's log any more: find it by its payment hash
        flying = self._in_flight.get(channel_id, {})
        htlc_id = next((i for i, h in flying.items() if h == payment_hash), None)
        if htlc_id is None:
            return
    key = (channel_id, htlc_id)
    with self.store.transaction():
        if preimage is not None:
            self._succeed(channel_id, LoggedHtlc(Side.LOCAL, htlc_id, 0, payment_hash, 0), preimage)
        elif not self._forward_failed(key, payment_hash):
            self._in_flight.get(channel_id, {}).pop(htlc_id, None)
            self.store.delete_payment_part(channel_id, htlc_id)
            waiter = self._waiters.pop(key, None)
            payment = self.store.payment(payment_hash)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(HtlcOutcome())  # the sender decides: retry elsewhere or fail
            elif payment is not None and payment.status == "pending" and not self.store.payment_parts(payment_hash):
                reason = "the HTLC timed out on chain after a force close"
                self.store.put_payment(dataclasses.replace(payment, status="failed", reason=reason))
                self.events.put_nowait(PaymentFailed(payment_hash, reason))
        batches = self._step_batches()
    await self._send_all(batches)
