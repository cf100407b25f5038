"""Asynchronous payments in the node (issue 14, docs/async-payments.md): both roles, LightningRod flow.

LSP role (``node.async_lsp`` set, ``node start --lsp``): hold requests and ``payment_unblock``
arrive as onion messages and go to :class:`~lightspeed.node.async_lsp.AsyncLsp`; the forwarding
path asks :meth:`AsyncPayRuntime.intercept` before forwarding an incoming HTLC, which holds it
(the HTLC stays undecided: no record, so a restart re-asks and finds it still held in the
reloaded book), forwards it (not ours, or released) or fails it back (refused, or its deadline
came). A release or a deadline re-runs the channel's incoming HTLCs, so the one decision path
(``_decide_incoming`` -> ``_forward``) forwards or fails them. Onion messages for a registered
client that is offline are kept in its mailbox and sent when it connects.

Client role (every node): :meth:`AsyncPayRuntime.pay_async` registers the hold with the payer's LSP,
pays, and sends the payee an ``async_payment_notice`` with a reply path to that LSP sealing the
pid; a payee answers a notice for an invoice of its own with ``payment_unblock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lightspeed.asyncpay import messages as m
from lightspeed.asyncpay import register as reg
from lightspeed.asyncpay.policy import HeldHtlc, HoldRefused, HoldState, ReleaseRefused
from lightspeed.channel.htlc_log import LoggedHtlc
from lightspeed.channel.state import Channel
from lightspeed.errors import DecodeError, LightspeedError, UsageError
from lightspeed.invoice import Invoice
from lightspeed.node.onion_messenger import InboundOnionMessage
from lightspeed.node.outcomes import (
    AsyncPaymentSucceeded,
    HtlcHeld,
    HtlcKey,
    HtlcReleased,
    NodeEvent,
)
from lightspeed.onion.blinding import BlindedPath, EncryptedDataTlv, create_blinded_path
from lightspeed.onion.failure import FailureCode, FailureMessage, create_failure_packet
from lightspeed.onion.message import OnionMessage
from lightspeed.store import AsyncPaymentRecord, IncomingHtlcRecord
from lightspeed.store.asyncpay import check_webhook_url

if TYPE_CHECKING:
    from lightspeed.node.node import Node
    from lightspeed.node.peer import Peer

log = logging.getLogger("lightspeed.asyncpay")

#: How often the LSP checks its held HTLCs' deadlines (seconds); blocks are seen at the same pace.
TICK_SECONDS = 1.0
#: A payee retries its payment_unblock this often (no path yet), this many times.
UNBLOCK_RETRY_S = 1.0
UNBLOCK_ATTEMPTS = 30
#: Then, while none of the payment has arrived, it says it again this often, this many times.
UNBLOCK_REPEAT_S = 1.0
UNBLOCK_REPEATS = 10


def htlc_key(key: HtlcKey) -> str:
    """The hold book's name for an incoming HTLC (channel id hex : HTLC id)."""
    return f"{key[0].hex()}:{key[1]}"


def _parse_key(name: str) -> HtlcKey:
    cid, htlc_id = name.split(":")
    return bytes.fromhex(cid), int(htlc_id)


@dataclass(frozen=True)
class AsyncPayment:
    """What ``pay_async`` started: the pid stays with the payer (it is the release secret)."""

    payment_hash: bytes
    amount_msat: int
    lsp_id: bytes
    pid: bytes  # the release secret: only the payee's unblock (through the LSP's sealed hop) shows it
    task: asyncio.Task[bytes]


class AsyncPayRuntime:
    def __init__(self, node: Node) -> None:
        self.node = node
        messenger = node.onion_messages
        messenger.register(m.HOLD_HTLCS, self._on_hold_request)
        messenger.register(m.PAYMENT_UNBLOCK_MESSAGE, self._on_payment_unblock)
        messenger.register(m.ASYNC_PAYMENT_NOTICE, self._on_notice)
        messenger.register(reg.LSP_REGISTER, self._on_register)
        self.refused_releases = 0  # forged, replayed, or for nothing held (each also logged)

    # -- LSP: onion messages ----------------------------------------------------------------

    async def _on_hold_request(self, inbound: InboundOnionMessage) -> None:
        lsp = self.node.async_lsp
        value = inbound.value(m.HOLD_HTLCS)
        if lsp is None or value is None:
            return
        try:
            registration = lsp.on_hold_request(value, now=int(time.time()))
        except (DecodeError, HoldRefused) as exc:  # onion messages have no errors: logged, dropped
            log.warning("hold request refused: %s", exc)
            return
        log.info("holding HTLCs from %s with hashes %s", registration.client_id.hex(),
                 [h.hex() for h in registration.payment_hashes])

    async def _on_payment_unblock(self, inbound: InboundOnionMessage) -> None:
        lsp = self.node.async_lsp
        if lsp is None:
            return
        try:
            released = lsp.on_payment_unblock(inbound.encrypted_data.unknown_records, now=int(time.time()),
                                              block_height=self.node.chain.tip()[0])
        except ReleaseRefused:  # AsyncLsp logged why
            self.refused_releases += 1
            return
        await self._rerun(released, [HtlcReleased(r.payment_hash, r.amount_msat, r.client_id) for r in released])

    async def _on_register(self, inbound: InboundOnionMessage) -> None:
        """A client registers (``lsp register``): keep its mailbox, wake it at its webhook."""
        lsp = self.node.async_lsp
        value = inbound.value(reg.LSP_REGISTER)
        if lsp is None or value is None:
            return
        now = int(time.time())
        try:
            request = reg.LspRegisterRequest.from_bytes(value, now=now)
            if request.webhook_url is not None:
                check_webhook_url(request.webhook_url)
        except (DecodeError, UsageError) as exc:
            log.warning("lsp_register refused: %s", exc)
            return
        lsp.store.register(request.client_id, request.webhook_url, now)
        log.info("client %s registered (webhook %s)", request.client_id.hex(), request.webhook_url)
        with contextlib.suppress(LightspeedError):
            await self.node.onion_messages.reply(
                inbound, [(reg.LSP_REGISTERED, reg.registered_reply(lsp.book.limits.announce()))])

    def held_json(self) -> list[dict[str, object]]:
        """``lsp held``: the HTLCs this LSP holds now."""
        lsp = self.node.async_lsp
        if lsp is None:
            raise UsageError("this node is not an LSP (start it with --lsp)")
        limits = lsp.book.limits
        return [{"htlc": h.htlc_key, "client_id": h.client_id.hex(), "payment_hash": h.payment_hash.hex(),
                 "amount_msat": h.amount_msat, "cltv_expiry": h.cltv_expiry, "held_at": h.held_at,
                 "fail_at": h.fail_time(limits), "fail_height": h.fail_height(limits)} for h in lsp.book.held()]

    # -- LSP: forwarding ----------------------------------------------------------------------

    def intercept(self, channel: Channel, htlc: LoggedHtlc, shared_secret: bytes, height: int,
                  received: list[NodeEvent]) -> bool:
        """Before forwarding: True when the HTLC is held or failed back here (the caller stops)."""
        lsp = self.node.async_lsp
        if lsp is None:
            return False
        cid = channel.config.channel_id
        key = (cid, htlc.htlc_id)
        record = lsp.book.record(htlc_key(key))
        if record is None:
            client = self.node.channel_peer_id(cid)
            if client is None:
                return False
            if self.node.async_draft.flagged(key):  # hold_htlc set: the draft flow (node/async_draft.py)
                return self.node.async_draft.intercept(key, client, htlc, shared_secret, height, received)
            registration = lsp.book.registration_for(client, htlc.payment_hash, now=int(time.time()))
            if registration is not None and lsp.book.released_under(registration.release_tag):
                return False  # an MPP part arriving after its payment was released: it follows the others
            try:
                record = lsp.on_incoming_htlc(htlc_key(key), client, htlc.payment_hash, htlc.amount_msat,
                                              htlc.cltv_expiry, now=int(time.time()), block_height=height)
            except HoldRefused as exc:
                log.warning("HTLC %s not held, failed back: %s", htlc_key(key), exc.reason)
                self._fail_back(key, htlc, shared_secret)
                return True
            if record is None:
                return False  # not registered for holding: forwarded as usual
            received.append(HtlcHeld(htlc.payment_hash, htlc.amount_msat, client))
        if record.state is HoldState.HELD:
            self.node._handled.add(key)  # undecided: re-run on release or deadline
            return True
        if record.state is HoldState.FAILED:
            self._fail_back(key, htlc, shared_secret)
            return True
        return False  # released: forward

    def _fail_back(self, key: HtlcKey, htlc: LoggedHtlc, shared_secret: bytes) -> None:
        # BOLT #4: temporary_node_failure, "general temporary failure of the processing node":
        # the payer's funds come back and it may retry (the hold is not a fault of the route).
        reason = create_failure_packet(shared_secret, FailureMessage(FailureCode.TEMPORARY_NODE_FAILURE).to_bytes())
        self.node._record(IncomingHtlcRecord(key[0], key[1], htlc.payment_hash, shared_secret, failure=reason))

    async def _rerun(self, records: list[HeldHtlc], events: list[NodeEvent]) -> None:
        """Decide the released or failed HTLCs again: ``intercept`` now forwards or fails them.

        Even while the payer is offline (its channel not reestablished): forwarding needs only the
        outgoing channel, and a failure is recorded now and sent once the payer is back."""
        node = self.node
        keys = [_parse_key(r.htlc_key) for r in records]
        for key in keys:
            node._handled.discard(key)

        def decide(received: list[NodeEvent]) -> None:
            received.extend(events)
            height = node.chain.tip()[0]
            for cid, htlc_id in keys:
                channel = node.channels.get(cid)
                htlc = None if channel is None else next(
                    (h for h in node._locked_incoming(channel) if h.htlc_id == htlc_id), None)
                if channel is not None and htlc is not None and (cid, htlc_id) not in node._incoming:
                    node._decide_incoming(channel, htlc, height, received)

        await node._run_step(decide)

    async def run(self) -> None:
        """Fail back held HTLCs at their deadline (hold time or CLTV margin), checked each second;
        start the LSP's webhook delivery (its outbox survives restarts) once it has one."""
        notifying = None
        while not self.node._stopping:
            lsp = self.node.async_lsp
            if lsp is not None and lsp.notifier is not None and lsp.notifier is not notifying:
                notifying = lsp.notifier
                self.node._spawn(notifying.run())
            if lsp is not None:
                due = lsp.tick(now=int(time.time()), block_height=self.node.chain.tip()[0])
                if due:
                    log.warning("failing back %d held HTLCs at their deadline", len(due))
                    await self._rerun(due, [])
            await asyncio.sleep(TICK_SECONDS)

    def resolved(self, key: HtlcKey) -> None:
        """The incoming HTLC is gone from the channel: forget its hold record."""
        lsp = self.node.async_lsp
        if lsp is not None and lsp.book.record(htlc_key(key)) is not None:
            lsp.resolved(htlc_key(key))

    def settled(self, key: HtlcKey) -> None:
        """A released HTLC's preimage came back: wake the payer (Flow 1 step 8)."""
        lsp = self.node.async_lsp
        record = None if lsp is None else lsp.book.record(htlc_key(key))
        if lsp is not None and record is not None:
            lsp.notify_payer_settled(record.client_id)

    # -- LSP: mailbox -------------------------------------------------------------------------

    def keep(self, next_id: bytes, message: OnionMessage) -> bool:
        """An onion message for a registered client that is offline: kept (True) or not."""
        lsp = self.node.async_lsp
        if lsp is None:
            return False
        return lsp.keep_for_offline_client(next_id, message.path_key + message.onion_message_packet,
                                           now=int(time.time()))

    async def deliver_mailbox(self, peer: Peer) -> None:
        """On a client's connection: send what its mailbox kept, then acknowledge it."""
        lsp = self.node.async_lsp
        if lsp is None or peer.remote_pubkey is None or lsp.store.registration(peer.remote_pubkey) is None:
            return
        # Only once its channels with us are reestablished: the payment its answer releases must
        # find the channel usable when it reaches us.
        client = peer.remote_pubkey
        for _ in range(200):
            channels = [cid for cid, n in self.node._channel_node.items() if n == client]
            if all(cid in self.node._reestablished for cid in channels):
                break
            await asyncio.sleep(0.05)
        pending = lsp.pending_for(peer.remote_pubkey, now=int(time.time()))
        sent = []
        for item in pending:
            message = OnionMessage(item.message[:33], item.message[33:])
            if not await self.node.onion_messages._send_to_peer(peer, message):
                break
            sent.append(item.id)
        if sent:
            lsp.store.mailbox_ack(sent)
            log.info("delivered %d mailbox messages to %s", len(sent), peer.remote_pubkey.hex())

    # -- client ---------------------------------------------------------------------------------

    async def register_with(self, lsp_id: bytes, webhook_url: str | None, timeout: float = 10.0) -> dict[str, object]:
        """``lsp register``: ask ``lsp_id`` to be our LSP; returns its announced limits.

        TimeoutError if it does not answer (not an LSP, or not reachable)."""
        if webhook_url is not None:
            check_webhook_url(webhook_url)
        now = int(time.time())
        request = reg.LspRegisterRequest.sign(self.node.privkey, now, webhook_url)
        reply = await self.node.onion_messages.request(lsp_id, [(reg.LSP_REGISTER, request.to_bytes())],
                                                       timeout=timeout)
        value = reply.value(reg.LSP_REGISTERED)
        if value is None:
            raise DecodeError("lsp_registered", "the reply is not lsp_registered")
        limits = reg.parse_registered_reply(value)
        with self.node.store.transaction():  # kept: `pay --async` without --lsp and automatic async use it
            self.node.store.put_lsp_registration(lsp_id, webhook_url, now)
        return limits

    def registered_lsps(self) -> list[bytes]:
        """The LSPs that accepted our ``lsp register`` (persisted), oldest first."""
        return [lsp_id for lsp_id, _, _ in self.node.store.lsp_registrations()]

    def choose_lsp(self, lsp_id: bytes | None) -> bytes:
        """The LSP to hold an async payment: the one given, else the only one we registered with.

        UsageError naming ``lsp_id`` when none is given and we have none or several (which one
        holds our money is the operator's choice, never a guess)."""
        if lsp_id is not None:
            return lsp_id
        lsps = self.registered_lsps()
        if not lsps:
            raise UsageError("lsp_id: no LSP given and none registered: `lightspeed lsp register LSP_ID` "
                             "first, or name one (--lsp NODE_ID)")
        if len(lsps) > 1:
            raise UsageError(f"lsp_id: registered with {len(lsps)} LSPs ({', '.join(x.hex() for x in lsps)}): "
                             "name the one to hold this payment (--lsp NODE_ID)")
        return lsps[0]

    def automatic_lsp(self, invoice: Invoice) -> bytes | None:
        """The LSP through which a plain ``pay`` of ``invoice`` goes asynchronously, or None.

        The rule (docs/async-payments.md, "Automatic async"): we registered with exactly one LSP
        and are connected to it, the invoice names its amount, the payee is not our peer, and the
        invoice's last-hop route hint enters the payee from that LSP: the payee is a client of an
        LSP that keeps mailboxes, so it may be offline at any moment, and an async payment costs
        nothing more when it is online (it unblocks at once). Lightning announces no "LSP" flag,
        so the only LSPs a payer knows are its own; a failed plain attempt is not the signal
        (it would teach our scorer that the payee's channel is empty, so the retry finds no route)."""
        lsps = self.registered_lsps()
        if invoice.amount_msat is None or len(lsps) != 1 or self.node.peer(lsps[0]) is None:
            return None
        if invoice.payee in self.node.peer_ids():
            return None
        if any(hint and hint[-1].pubkey == lsps[0] for hint in invoice.route_hints):
            return lsps[0]
        return None

    def notice_destination(self, invoice: Invoice) -> bytes | BlindedPath:
        """Where the payee's ``async_payment_notice`` goes: its node id if an onion-message path is
        known, else through the entry node of its last-hop route hint (a private payee behind its
        LSP, which keeps the notice in its mailbox). UsageError naming ``invoice`` if neither."""
        messenger = self.node.onion_messages
        try:
            messenger._route_to(invoice.payee)
            return invoice.payee
        except UsageError as exc:
            reason = str(exc)
        for hint in invoice.route_hints:
            if not hint:
                continue
            try:
                route = [*messenger._route_to(hint[-1].pubkey), invoice.payee]
            except UsageError:
                continue
            tlvs = [EncryptedDataTlv(next_node_id=n) for n in route[1:]] + [EncryptedDataTlv()]
            size = max(len(t.to_bytes()) for t in tlvs)
            # BOLT #4 (route blinding): SHOULD add padding to equalize the encrypted_data_tlv lengths.
            tlvs = [t if len(t.to_bytes()) == size else replace(t, padding=bytes(size - len(t.to_bytes()) - 2))
                    for t in tlvs]
            return create_blinded_path(os.urandom(32), route, tlvs)
        raise UsageError(f"invoice: the payee cannot be told how to unblock the payment: {reason}")

    async def pay_async(self, invoice: Invoice, lsp_id: bytes | None = None, timeout: float = 3600.0) -> AsyncPayment:
        """Flow 1 steps 1-4: register the hold with our LSP, pay, tell the payee how to unblock.

        ``lsp_id`` None: the LSP we registered with (:meth:`choose_lsp`). Returns once the HTLC
        is sent and the notice is on its way; ``task`` ends with the preimage when the payee
        settles (``AsyncPaymentSucceeded``), or raises PaymentError."""
        node = self.node
        amount = invoice.amount_msat
        if amount is None:
            raise UsageError("invoice: pay --async needs an invoice with an amount")
        lsp_id = self.choose_lsp(lsp_id)
        if node.peer(lsp_id) is None:
            raise UsageError(f"lsp_id: not connected to {lsp_id.hex()}")
        # Before anything is held: a payee we cannot tell how to unblock would leave the HTLC held
        # in vain until its deadline.
        destination = self.notice_destination(invoice)
        pid = os.urandom(m.PID_SIZE)
        request = m.HoldHtlcsRequest.sign((invoice.payment_hash,), pid, amount, node.privkey)
        await node.onion_messages.send(lsp_id, [(m.HOLD_HTLCS, request.to_bytes())])
        # Durable before the HTLC leaves (and only once the hold was asked for: a payment that never
        # started is not async): if we stop while the HTLC is held and the preimage comes back after
        # a restart, the node still knows to emit AsyncPaymentSucceeded (payment_succeeded).
        with node.store.transaction():
            node.store.put_async_payment(AsyncPaymentRecord(invoice.payment_hash, lsp_id, amount, int(time.time())))
        task = asyncio.ensure_future(self._pay(invoice, timeout))
        notice = m.AsyncPaymentNotice((invoice.payment_hash,), amount)
        await node.onion_messages.send(destination, [(m.ASYNC_PAYMENT_NOTICE, notice.to_bytes())],
                                       reply_path=unblock_path(lsp_id, pid))
        return AsyncPayment(invoice.payment_hash, amount, lsp_id, pid, task)

    async def _pay(self, invoice: Invoice, timeout: float) -> bytes:
        return await self.node.pay(invoice, timeout=timeout)  # the event comes from payment_succeeded

    def payment_succeeded(self, payment_hash: bytes, preimage: bytes) -> None:
        """Our payment was just recorded succeeded (inside that transaction): if it is async, emit
        ``AsyncPaymentSucceeded`` with its proof, once, whether ``pay_async``'s task is still alive
        or the preimage came back after a restart (the mark commits with the payment's success)."""
        if self.node.store.mark_async_payment_succeeded(payment_hash, int(time.time())):
            self.node.events.put_nowait(AsyncPaymentSucceeded(payment_hash, preimage))

    async def _on_notice(self, inbound: InboundOnionMessage) -> None:
        """Payee, Flow 1 step 6: unblock a payment for an invoice of ours that is still open."""
        value = inbound.value(m.ASYNC_PAYMENT_NOTICE)
        if value is None or inbound.reply_path is None:
            return
        try:
            notice = m.AsyncPaymentNotice.from_bytes(value)
        except DecodeError as exc:
            log.warning("async_payment_notice ignored: %s", exc)
            return
        for payment_hash in notice.payment_hashes:
            record = self.node.store.invoice(payment_hash)
            if record is None or record.status == "paid":
                log.warning("async_payment_notice for %s ignored: no open invoice of ours", payment_hash.hex())
                return
        # Just back online, we may not know a path to the payer's LSP yet (gossip still syncing):
        # try for a while; if it never works the LSP fails the HTLC back at its deadline.
        for _ in range(UNBLOCK_ATTEMPTS):
            try:
                await self.node.onion_messages.reply(inbound, [(m.PAYMENT_UNBLOCK_MESSAGE, b"")])
                break
            except LightspeedError as exc:
                log.info("payment_unblock not sent yet: %s", exc)
                await asyncio.sleep(UNBLOCK_RETRY_S)
        else:
            log.warning("payment_unblock for %s never sent: no path to the payer's LSP",
                        notice.payment_hashes[0].hex())
            return
        # Online when the notice came, we may have answered before the payer's HTLC reached its
        # LSP (the notice can overtake the HTLC's commitment exchange): that unblock released
        # nothing. Say it again while no part of the payment has arrived (bounded; a repeat after
        # the release is refused by the LSP as a replay and changes nothing).
        for _ in range(UNBLOCK_REPEATS):
            await asyncio.sleep(UNBLOCK_REPEAT_S)
            if any(self._arrived(h) for h in notice.payment_hashes):
                return
            with contextlib.suppress(LightspeedError):
                await self.node.onion_messages.reply(inbound, [(m.PAYMENT_UNBLOCK_MESSAGE, b"")])

    def _arrived(self, payment_hash: bytes) -> bool:
        """A part of the payment reached us (held for the rest of an MPP set, or paid)."""
        record = self.node.store.invoice(payment_hash)
        return record is None or record.status == "paid" or record.received_msat > 0 or any(
            h.payment_hash == payment_hash for c in self.node.channels.values() for h in self.node._locked_incoming(c))


def unblock_path(lsp_id: bytes, pid: bytes) -> BlindedPath:
    """The reply path A gives B: to A's LSP, whose own hop data seals the pid (B cannot read it)."""
    return create_blinded_path(os.urandom(32), [lsp_id],
                               [EncryptedDataTlv(unknown_records=(m.payment_unblock_record(pid),))])
