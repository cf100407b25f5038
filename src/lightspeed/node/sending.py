"""Sending payments: pay an invoice, keysend, AMP, blinded paths, a given route; and their outcomes.

A part of :class:`~lightspeed.node.node.Node` (its methods, bound onto the class there). ``pay``
routes, retries with :class:`~lightspeed.payments.attempts.PaymentAttempts` and splits (MPP);
each HTLC is offered by :func:`_offer_htlc` (committed with its payment before the add is
sent) and its waiter is woken by :func:`_resolve_payments` once the HTLC is fulfilled or gone
from both commitments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lightspeed.channel.htlc_log import LoggedHtlc, Side
from lightspeed.channel.state import Channel
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import (
    PaymentError,
    UsageError,
)
from lightspeed.invoice import Invoice
from lightspeed.invoice.fields import RouteHintHop
from lightspeed.node.outcomes import PaymentFailed, PaymentSent
from lightspeed.node.paying import (
    NO_LIMITS,
    FinalPart,
    HtlcOutcome,
    LocalChannel,
    PayLimits,
    RouteFailed,
    decode_outcome,
    first_preimage,
    onion_for_route,
    routing_graph,
)
from lightspeed.node.return_paths import RETURN_PATH_TLV
from lightspeed.offers import Offer
from lightspeed.offers.tlv_fields import BlindedPayInfo
from lightspeed.onion.blinding import BlindedPath
from lightspeed.payments.amp import AMP_FEATURE_BITS, AMP_RECORD_TYPE, AmpPayment, AmpShard
from lightspeed.payments.attempts import PaymentAttempts, SendAttempt
from lightspeed.payments.attempts import PaymentFailed as AttemptsFailed
from lightspeed.payments.receiver import (
    KEYSEND_MIN_FINAL_CLTV,
    KEYSEND_RECORD_TYPE,
)
from lightspeed.routing import ChannelGraph, NoRouteError, Route, find_route
from lightspeed.store import (
    PaymentRecord,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from lightspeed.node.node import Node


ROUTE_BLINDING_REQUIRED = 24  # BOLT 9 option_route_blinding, even (required) bit
FINAL_CLTV_MARGIN = 12  # blocks added to the payee's min_final_cltv_expiry: the chain moves while we send


MAX_PARTS = 16  # MPP: the most parts one payment is split into
#: How long pay() waits for channels still reestablishing before it says how much it can send.
REESTABLISH_GRACE_S = 3.0


def _split(amount_msat: int, parts: int) -> list[int]:
    """``parts`` amounts adding up to ``amount_msat`` (the remainder on the first)."""
    share = amount_msat // parts
    return [amount_msat - share * (parts - 1)] + [share] * (parts - 1)


@dataclass
class _Shards:
    """The payment hash and final payload of each attempt of one part.

    For an invoice or keysend both stay the same; for AMP every attempt is a new shard,
    and a failed shard's share is carried by the next one (its retry).
    """

    payment_hash: bytes | None
    final: FinalPart
    amp: tuple[AmpPayment, AmpShard] | None

    def next(self) -> tuple[bytes, FinalPart]:
        if self.amp is None:
            assert self.payment_hash is not None
            return self.payment_hash, self.final
        shard = self.amp[1]
        final = dataclasses.replace(self.final, custom_records=((AMP_RECORD_TYPE, shard.record.to_bytes()),))
        return shard.payment_hash, final

    def failed(self) -> None:
        if self.amp is not None:
            payment, shard = self.amp
            self.amp = (payment, payment.reshard(shard.record.root_share, 1)[0])


def _guard(self: Node, payment_hash: bytes) -> None:
    """The double-pay guard: anyone on the first route could take a second payment to this hash."""
    previous = self.store.payment(payment_hash)
    if previous is not None and previous.status == "succeeded":
        raise PaymentError("this invoice is already paid")
    if (previous is not None and previous.status == "pending") or payment_hash in self._pending:
        raise PaymentError("this invoice is already being paid")


async def pay(self: Node, invoice: Invoice, timeout: float = 30, amount_msat: int | None = None,
              limits: PayLimits = NO_LIMITS, return_path: Offer | None = None) -> bytes:
    """Pay an invoice over the network; returns the preimage (the proof of payment).

    An AMP invoice (feature 30) is paid with AMP shards and returns the set id instead:
    each shard has its own preimage, and no single one proves the whole payment.

    Routes over our channels, the graph we were given and the invoice's route hints;
    retries around what fails and splits the amount (MPP) when no single route carries
    it. Raises :class:`PaymentError` if the payment failed, or is still pending after
    ``timeout`` (it then stays pending in the store and ends settled or failed later).
    ``limits``: the fee budget, the first channel, the most parts (``payment_fees`` has the fee paid).
    ``return_path``: a return path of ours (:meth:`ReturnPaths.create`) sent to the payee in the
    final payload, so it can refund us without learning who we are.
    """
    if invoice.payment_secret is None:
        raise PaymentError("the invoice has no payment secret")
    amount = invoice.amount_msat if invoice.amount_msat is not None else amount_msat
    if amount is None or amount <= 0:
        raise PaymentError("the invoice has no amount: give amount_msat")
    if invoice.amount_msat is not None and amount_msat not in (None, invoice.amount_msat):
        raise UsageError("amount_msat: the invoice names its own amount")
    if invoice.payee == self.node_id:
        raise PaymentError("the invoice is our own")
    if ROUTE_BLINDING_REQUIRED in invoice.features and not self.features.supports("option_route_blinding"):
        raise PaymentError("the invoice requires option_route_blinding (feature 24), which this node does not "
                           "support (its features setting leaves it out)")
    if AMP_FEATURE_BITS[0] in invoice.features:
        if return_path is not None:
            raise UsageError("return_path: not with an AMP invoice")
        return await self.pay_amp(invoice.payee, amount, timeout=timeout, invoice=invoice)
    self._guard(invoice.payment_hash)
    with self.store.transaction():
        self.store.put_payment(PaymentRecord(invoice.payment_hash, amount, "pending", invoice.encode()))
    extra = () if return_path is None else ((RETURN_PATH_TLV, return_path.to_tlv()),)
    final = FinalPart(invoice.payment_secret, amount, extra)
    hints = invoice.route_hints
    return await self._pay(invoice.payment_hash, invoice.payee, amount, timeout,
                           lambda part, total: _Shards(invoice.payment_hash, final, None),
                           invoice.min_final_cltv_expiry, hints, min(MAX_PARTS, limits.max_parts or MAX_PARTS),
                           limits=limits)


async def keysend(self: Node, node_id: bytes, amount_msat: int, timeout: float = 30) -> bytes:
    """A spontaneous payment: the preimage travels in the onion (record 5482373484)."""
    if amount_msat <= 0:
        raise UsageError("amount_msat: must be positive")
    preimage = os.urandom(32)
    payment_hash = sha256(preimage)
    with self.store.transaction():
        self.store.put_payment(PaymentRecord(payment_hash, amount_msat, "pending"))
    final = FinalPart(custom_records=((KEYSEND_RECORD_TYPE, preimage),))
    return await self._pay(payment_hash, node_id, amount_msat, timeout,
                           lambda part, total: _Shards(payment_hash, final, None), KEYSEND_MIN_FINAL_CLTV,
                           (), 1)


async def pay_amp(self: Node, node_id: bytes, amount_msat: int, parts: int = 2, timeout: float = 30,
                  invoice: Invoice | None = None) -> bytes:
    """An AMP payment in ``parts`` shards; returns its set id once the payee settled.

    Each shard carries an XOR share of a root secret (record 14); the payee can derive the
    preimages only once every share arrived. A failed shard's share goes into its retry.
    Spontaneous without ``invoice``; with an AMP invoice, the shards carry its payment
    secret, its final CLTV and its route hints, and the double-pay guard covers it.
    """
    if amount_msat <= 0 or not 1 <= parts <= MAX_PARTS:
        raise UsageError(f"amount_msat must be positive and parts between 1 and {MAX_PARTS}")
    amp = AmpPayment.new()
    secret = os.urandom(32)  # one payment_secret for the set (the payee groups parts by set id)
    payment_id, min_final = amp.set_id, KEYSEND_MIN_FINAL_CLTV
    hints: Sequence[Sequence[RouteHintHop]] = ()
    encoded = ""
    if invoice is not None:
        assert invoice.payment_secret is not None
        self._guard(invoice.payment_hash)
        secret, payment_id, min_final = invoice.payment_secret, invoice.payment_hash, invoice.min_final_cltv_expiry
        hints, encoded = invoice.route_hints, invoice.encode()
    shards = iter(amp.shards(parts))
    with self.store.transaction():
        self.store.put_payment(PaymentRecord(payment_id, amount_msat, "pending", encoded))
    await self._pay(payment_id, node_id, amount_msat, timeout,
                    lambda part, total: _Shards(None, FinalPart(secret, total), (amp, next(shards))),
                    min_final, hints, parts, exact_parts=True)
    return amp.set_id


async def _pay(self: Node, payment_id: bytes, target: bytes, amount_msat: int, timeout: float,
               shards_for: Callable[[int, int], _Shards] | None, min_final_cltv: int,
               hints: Sequence[Sequence[RouteHintHop]], max_parts: int, exact_parts: bool = False,
               limits: PayLimits = NO_LIMITS,
               runner: Callable[[list[int]], Awaitable[bytes]] | None = None) -> bytes:
    """Run the payment (a task that outlives ``timeout``), record its end, return the preimage.

    ``runner``: sends the parts instead of :meth:`_pay_parts` (blinded paths); it appends the
    fee of each part that settled to the list it is given.
    """
    future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    self._pending[payment_id] = future
    fees: list[int] = []  # the fee of each part that settled

    async def run() -> None:
        try:
            if runner is not None:
                preimage = await runner(fees)
            else:
                assert shards_for is not None
                preimage = await self._pay_parts(target, amount_msat, timeout, shards_for, min_final_cltv,
                                                 hints, max_parts, exact_parts, limits, fees)
            self.payment_fees[payment_id] = sum(fees)
        except StoreUnavailable as exc:  # the node stopped; the payment ends after the restart
            if not future.done():
                future.set_exception(exc)
            return
        except PaymentError as exc:
            with self.store.transaction():
                payment = self.store.payment(payment_id)
                if payment is not None and payment.status == "pending":
                    self.store.put_payment(dataclasses.replace(payment, status="failed", reason=str(exc)))
                    self.events.put_nowait(PaymentFailed(payment_id, str(exc)))
            if not future.done():
                future.set_exception(exc)
            return
        with self.store.transaction():
            payment = self.store.payment(payment_id)
            if payment is not None and payment.status != "succeeded":
                self.store.put_payment(dataclasses.replace(payment, status="succeeded", preimage=preimage))
                self.events.put_nowait(PaymentSent(payment_id, preimage, payment.amount_msat))
                self.asyncpay.payment_succeeded(payment_id, preimage)
        if not future.done():
            future.set_result(preimage)

    self._spawn(run())
    try:
        return await asyncio.wait_for(asyncio.shield(future), timeout + 0.25)  # its own errors first
    except TimeoutError:
        # Nobody awaits the future now: its later failure is in the store and the events, so mark
        # it retrieved (else "Future exception was never retrieved" when it is collected).
        future.add_done_callback(lambda done: done.cancelled() or done.exception())
        raise PaymentError("the payment is still pending (it will end settled or failed)") from None
    finally:
        if self._pending.get(payment_id) is future and future.done():
            del self._pending[payment_id]
        elif self._pending.get(payment_id) is future:
            future.add_done_callback(lambda _: self._pending.pop(payment_id, None))


def _can_send_msat(self: Node) -> int:
    return sum(self._sendable_msat(c) for cid, c in self.channels.items() if self._usable(cid))


def _reestablishing(self: Node) -> bool:
    """Some ready channel is not usable now, but its peer is connected or being redialed."""
    for cid in self.channels:
        node_id = self._channel_node.get(cid, b"")
        peer = self._peers.get(node_id)
        coming = (peer is not None and not peer.session.closed) or node_id in self._dialers
        if (coming and cid not in self._closings and self._ready_marks.get(cid) == {"sent", "received"}
                and not self._usable(cid)):
            return True
    return False


def _graph_for(self: Node, target: bytes, hints: Sequence[Sequence[RouteHintHop]],
               outgoing_scid: int | None = None) -> ChannelGraph:
    own = []
    for cid, channel in self.channels.items():
        scid = self.short_channel_id(cid)
        if scid is not None and self._usable(cid) and outgoing_scid in (None, scid):
            own.append(LocalChannel(scid, self._channel_node[cid], self._sendable_msat(channel)))
    graph = routing_graph(self.graph, self.node_id, own)
    return graph.with_route_hints(hints, target) if hints else graph


async def _wait_for_channels(self: Node, target: bytes, deadline: float) -> None:
    """After a start or a reconnection: wait until a channel (the one to the payee if any) is usable."""
    direct = [cid for cid, node in self._channel_node.items() if node == target and cid in self.channels]
    if direct and all(c in self._closings for c in direct):  # BOLT 2: no update_add_htlc after shutdown
        raise PaymentError("the channel to the payee is closing")
    if not any(c not in self._closings for c in self.channels):
        raise PaymentError("no open channel to pay through")
    if direct and all(c in self._funding_watch.suspended for c in direct):  # node.funding_watch
        raise PaymentError("the channel to the payee is suspended: its funding was reorganised out "
                           "and has not confirmed again")
    while time.monotonic() < deadline:
        if direct and any(self._usable(c) for c in direct):
            return
        if not direct and any(self._usable(c) for c in self.channels):
            return
        await asyncio.sleep(0.02)
    if direct:
        raise PaymentError("the channel to the payee is not ready (peer offline?)")


async def _pay_parts(self: Node, target: bytes, amount_msat: int, timeout: float,
                     shards_for: Callable[[int, int], _Shards], min_final_cltv: int,
                     hints: Sequence[Sequence[RouteHintHop]], max_parts: int, exact_parts: bool,
                     limits: PayLimits, fees: list[int]) -> bytes:
    deadline = time.monotonic() + timeout
    if target == self.node_id:
        raise PaymentError("paying ourselves")
    await self._wait_for_channels(target, deadline)
    # What every usable channel could add now, in total: more cannot leave us, whatever the split
    # (without this, parts that each fit one channel went out and the rest waited for the timeout).
    can_send = self._can_send_msat()
    grace = min(deadline, time.monotonic() + REESTABLISH_GRACE_S)
    while amount_msat > can_send and self._reestablishing() and time.monotonic() < grace:
        await asyncio.sleep(0.02)  # a channel coming back (reconnect, reestablish): a moment for it
        can_send = self._can_send_msat()
    if amount_msat > can_send:
        raise PaymentError(f"can send at most {can_send} msat")
    graph = self._graph_for(target, hints, limits.outgoing_scid)
    parts = max_parts if exact_parts else 1
    while True:  # MPP: the fewest parts for which every part finds a route now
        amounts = _split(amount_msat, parts)
        try:
            for amount in set(amounts):
                find_route(graph, self.node_id, target, amount, score=self.scorer.view(time.monotonic()),
                           max_fee_msat=limits.part_fee_msat(amount, amount_msat))
            break
        except NoRouteError as exc:
            if exact_parts or parts * 2 > max_parts or amount_msat // (parts * 2) < 1:
                raise PaymentError(str(exc)) from None
            parts *= 2
    runs = [self._pay_part(graph, target, amount, shards_for(i, amount_msat), min_final_cltv, deadline,
                           limits.part_fee_msat(amount, amount_msat), fees)
            for i, amount in enumerate(amounts)]
    return first_preimage(await asyncio.gather(*runs, return_exceptions=True))


async def _pay_part(self: Node, graph: ChannelGraph, target: bytes, amount_msat: int, shards: _Shards,
                    min_final_cltv: int, deadline: float, max_fee_msat: int | None = None,
                    fees: list[int] | None = None) -> bytes:
    """One part's retry loop: route, send, learn from the failure, until success or no route."""
    now = time.monotonic()
    attempts = PaymentAttempts(graph, self.scorer, self.node_id, target, amount_msat, now,
                               timeout_s=max(deadline - now, 0.001), max_fee_msat=max_fee_msat)
    while True:
        action = attempts.next_action(time.monotonic())
        if isinstance(action, AttemptsFailed):
            raise PaymentError(action.reason)
        assert isinstance(action, SendAttempt), action  # one attempt at a time: never None here
        payment_hash, final = shards.next()
        outcome, secrets = await self._send_htlc(action.attempt.route, payment_hash, final, min_final_cltv,
                                                 deadline)
        if outcome.preimage is not None:
            attempts.attempt_succeeded(action.attempt.attempt_id, time.monotonic())
            if fees is not None:
                fees.append(action.attempt.route.total_fee_msat)
            return outcome.preimage
        report, _ = decode_outcome(outcome, secrets)
        shards.failed()
        attempts.attempt_failed(action.attempt.attempt_id, report, time.monotonic())


async def pay_blinded(self: Node, paths: Sequence[tuple[BlindedPath, BlindedPayInfo]], amount_msat: int,
                      payment_hash: bytes, timeout: float = 30, max_parts: int = MAX_PARTS,
                      invoice: str = "", separate_paths: bool = False) -> bytes:
    """Pay over blinded paths; returns the preimage. Splits across paths (MPP) when one
    cannot carry the amount, and moves a failed part to another path. ``invoice`` (a BOLT 12
    ``lni1...``) is kept in the payment's record: with the preimage, the proof of payment.
    ``separate_paths``: at least two parts, over at least two different paths (BOLT 12 MPP/compulsory)."""
    if not self.features.supports("option_route_blinding"):
        raise PaymentError("paying to blinded paths needs option_route_blinding in our features")
    return await self.blinded.pay(paths, amount_msat, payment_hash, timeout, max_parts, invoice, separate_paths)


async def send_to_route(self: Node, route: Route, payment_hash: bytes, payment_secret: bytes | None,
                        total_msat: int | None = None, min_final_cltv: int = 18,
                        custom_records: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """One HTLC along ``route`` (no retry); the preimage, or :class:`RouteFailed` naming who failed and why."""
    total = route.hops[-1].amount_msat if total_msat is None else total_msat
    final = FinalPart(payment_secret, total if payment_secret is not None else None, custom_records)
    outcome, secrets = await self._send_htlc(route, payment_hash, final, min_final_cltv)
    if outcome.preimage is not None:
        return outcome.preimage
    report, failure = decode_outcome(outcome, secrets)
    raise RouteFailed(report, failure)


async def _next_revocation(self: Node, timeout: float) -> bool:
    """Wait for the next revoke_and_ack on any channel (it may free HTLC slots); False on timeout."""
    if timeout <= 0:
        return False
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    self._revoked_waiters.append(waiter)
    try:
        await asyncio.wait_for(waiter, timeout)
        return True
    except TimeoutError:
        return False


async def _send_htlc(self: Node, route: Route, payment_hash: bytes, final: FinalPart, min_final_cltv: int,
                     deadline: float | None = None) -> tuple[HtlcOutcome, tuple[bytes, ...]]:
    """Offer the first HTLC of ``route`` and wait until it is fulfilled or gone (see :meth:`_offer_htlc`)."""
    first = route.hops[0]
    height = self.chain.tip()[0]
    built = onion_for_route(route, payment_hash, height + min_final_cltv + FINAL_CLTV_MARGIN, final,
                            os.urandom(32))
    return await self._offer_htlc(first.short_channel_id, first.pubkey, first.amount_msat, payment_hash,
                                  built.first_cltv_expiry, built.onion, built.shared_secrets, deadline)


async def _offer_htlc(self: Node, scid: int, peer_id: bytes, amount_msat: int, payment_hash: bytes, cltv_expiry: int,
                      onion: bytes, shared_secrets: tuple[bytes, ...],
                      deadline: float | None = None) -> tuple[HtlcOutcome, tuple[bytes, ...]]:
    """Add our HTLC on channel ``scid`` (to ``peer_id``), commit, send, wait until fulfilled or gone;
    until ``deadline`` for a slot other payments' HTLCs hold on the channel."""
    cid = self._by_scid.get(scid)
    if cid is None or not self._usable(cid) or self._channel_node.get(cid) != peer_id:
        return HtlcOutcome(), ()
    channel = self.channels[cid]
    while True:
        try:
            add = channel.add_htlc(amount_msat, payment_hash, cltv_expiry, onion,
                                   hold_htlc=payment_hash in self.async_draft.holding)
            break
        except UsageError:
            # Other payments' HTLCs on this channel hold the slots or the balance it lacks: they
            # settle soon, so wait for one rather than fail a payment that fits the channel (seen
            # with 25 payments in flight over a channel taking 30 HTLCs, removed ones not yet
            # revoked). Never for this payment's own parts: the payee holds those until all arrive.
            others = [h for h in self._in_flight.get(cid, {}).values() if h != payment_hash]
            if (deadline is None or not others or not self._usable(cid)
                    or not await self._next_revocation(deadline - time.monotonic())):
                return HtlcOutcome(), shared_secrets
    key = (cid, add.id)
    waiter: asyncio.Future[HtlcOutcome] = asyncio.get_running_loop().create_future()
    self._waiters[key] = waiter
    self._in_flight.setdefault(cid, {})[add.id] = payment_hash
    with self.store.transaction():
        payment = self.store.payment(payment_hash)
        if payment is not None and payment.status == "pending":  # the HTLC to resolve after a restart
            self.store.put_payment(dataclasses.replace(payment, channel_id=cid, htlc_id=add.id))
            self.store.put_payment_part(payment_hash, cid, add.id)  # one of maybe several (MPP)
        self._dirty.setdefault(cid, []).append(add)
        batches = self._step_batches()
    await self._send_all(batches)
    return await waiter, shared_secrets


def payment_status(self: Node, payment_hash: bytes) -> PaymentRecord | None:
    return self.store.payment(payment_hash)


def _succeed(self: Node, channel_id: bytes, htlc: LoggedHtlc, preimage: bytes) -> None:
    """The peer fulfilled our HTLC (inside the step's transaction): a forward or a payment."""
    key = (channel_id, htlc.htlc_id)
    if self._forward_settled(key, preimage, htlc.amount_msat):
        return
    self._in_flight.get(channel_id, {}).pop(htlc.htlc_id, None)
    self.store.delete_payment_part(channel_id, htlc.htlc_id)
    payment = self.store.payment(htlc.payment_hash)
    if payment is not None and payment.status != "succeeded":
        self.store.put_payment(PaymentRecord(payment.payment_hash, payment.amount_msat, "succeeded",
                                             payment.invoice, preimage, channel_id, htlc.htlc_id))
        self.events.put_nowait(PaymentSent(payment.payment_hash, preimage, payment.amount_msat))
        self.asyncpay.payment_succeeded(payment.payment_hash, preimage)  # inside the same transaction
    waiter = self._waiters.pop(key, None)
    if waiter is not None and not waiter.done():
        waiter.set_result(HtlcOutcome(preimage=preimage))


def _resolve_payments(self: Node, channel: Channel) -> None:
    """Our HTLCs that left both commitments without a preimage (inside a transaction).

    A forwarded one fails its incoming HTLC; one a sender awaits is reported to it (it
    decides whether to retry); any other (after a restart) fails its payment.
    """
    cid = channel.config.channel_id
    live = {(h.htlc_id, h.payment_hash) for h in self._unresolved_htlcs(channel) if h.offerer is Side.LOCAL}
    for out, incoming in list(self._by_out.items()):
        if out[0] != cid:
            continue
        record = self._incoming.get(incoming)
        if record is not None and (out[1], record.payment_hash) not in live:
            self._forward_failed(out, record.payment_hash)
    flying = self._in_flight.get(cid)
    if not flying:
        return
    for htlc_id, payment_hash in list(flying.items()):
        if (htlc_id, payment_hash) in live:
            continue
        del flying[htlc_id]
        self.store.delete_payment_part(cid, htlc_id)
        outcome = self._failures.pop((cid, htlc_id), HtlcOutcome())
        waiter = self._waiters.pop((cid, htlc_id), None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(outcome)
            continue
        payment = self.store.payment(payment_hash)
        if payment is None or payment.status != "pending" or self.store.payment_parts(payment_hash):
            continue  # settled already, or other parts still in flight: the last one decides
        reason = "the payee refused the payment"
        self.store.put_payment(PaymentRecord(payment_hash, payment.amount_msat, "failed", payment.invoice,
                                             None, cid, htlc_id, reason))
        self.events.put_nowait(PaymentFailed(payment_hash, reason))
        future = self._pending.pop(payment_hash, None)
        if future is not None and not future.done():
            future.set_exception(PaymentError(reason))


def _unresolved_htlcs(channel: Channel) -> set[LoggedHtlc]:
    """HTLCs still in some commitment not yet revoked, or added and not yet signed.

    A failed HTLC is gone for good only once no unrevoked commitment holds it: until the
    peer revokes its last commitment with the HTLC, it could still claim it on chain.
    """
    return channel.log.unresolved()  # one pass over the log, not a view per unrevoked commitment
