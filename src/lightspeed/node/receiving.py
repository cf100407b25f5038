"""Receiving: our invoices (plain, AMP, hold, blinded) and the decision on every incoming HTLC.

A part of :class:`~lightspeed.node.node.Node` (its methods, bound onto the class there). An
incoming HTLC, once locked in on both commitments, is forwarded, handed to the
:class:`~lightspeed.payments.receiver.Receiver`, or refused; every decision is recorded
(:func:`_record`) before the message it causes is sent, and re-applied after a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from lightspeed.channel.htlc_log import LoggedHtlc, Side
from lightspeed.channel.state import Channel
from lightspeed.codec.message_base import WireMessage
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import UsageError
from lightspeed.invoice import Invoice, build_invoice
from lightspeed.invoice.encode import DEFAULT_FEATURES as DEFAULT_INVOICE_FEATURES
from lightspeed.invoice.fields import RouteHintHop
from lightspeed.node.blinded import BlindedInvoice, parse_malformed
from lightspeed.node.blinded_incoming import (
    BlindedFailure,
    BlindedFinal,
    BlindedForward,
    unpack_onion,
)
from lightspeed.node.forwarding import (
    Final,
    Forward,
    Malformed,
    Refuse,
    read_onion,
)
from lightspeed.node.outcomes import HtlcHeld, NodeEvent, PaymentReceived
from lightspeed.onion.failure import (
    FailureCode,
    FailureMessage,
    create_failure_packet,
)
from lightspeed.payments.amp import AMP_FEATURE_BITS, AMP_RECORD_TYPE
from lightspeed.payments.receiver import (
    Decision,
    Fail,
    Held,
    IncomingPart,
    Receivable,
    Received,
    Settle,
)
from lightspeed.store import (
    IncomingHtlcRecord,
    InvoiceRecord,
)

if TYPE_CHECKING:
    from lightspeed.node.node import Node


def create_invoice(self: Node, amount_msat: int | None, description: str, expiry: int = 3600,
                   route_hints: Sequence[Sequence[RouteHintHop]] = (), preimage: bytes | None = None,
                   description_hash: bytes | None = None) -> Invoice:
    """An invoice we will settle at once; ``route_hints`` reach us over private channels.

    ``amount_msat`` None: the payer chooses (any amount settles it). ``description_hash``
    (32 bytes) replaces the description (BOLT 11 ``h``: for descriptions too long for a QR code).
    ``preimage``: the payment preimage to use (a fresh random one by default), for a caller
    that must know it in advance (a conformance test); 32 bytes.
    """
    if preimage is None:
        preimage = os.urandom(32)
    elif len(preimage) != 32:
        raise UsageError(f"preimage: must be 32 bytes, not {len(preimage)}")
    return self._new_invoice(sha256(preimage), preimage, amount_msat, description, expiry, route_hints,
                             description_hash)


def private_route_hints(self: Node) -> list[list[RouteHintHop]]:
    """``route_hints`` for an invoice: our ready channels not announced, each with its peer's fees."""
    return self.gossip.route_hints()


def create_amp_invoice(self: Node, amount_msat: int, description: str, expiry: int = 3600,
                       route_hints: Sequence[Sequence[RouteHintHop]] = ()) -> Invoice:
    """An AMP invoice (feature 30, as LND): paid once by AMP shards, each with its own hash.

    Its payment_hash is a random placeholder nobody has a preimage for; the shards are
    matched to it by its payment_secret.
    """
    secret = os.urandom(32)
    invoice = build_invoice(network=self.network, amount_msat=amount_msat, description=description,
                            payment_hash=os.urandom(32), payment_secret=secret, timestamp=int(time.time()),
                            expiry=expiry, payee=None, route_hints=route_hints,
                            features=DEFAULT_INVOICE_FEATURES | {AMP_FEATURE_BITS[0]}).sign(self.privkey)
    record = InvoiceRecord(invoice.payment_hash, invoice.encode(), b"", secret, amount_msat,
                           expires_at=invoice.expires_at)
    with self.store.transaction():
        self.store.put_invoice(record)
    self.invoices.added(Receivable(invoice.payment_hash, secret, amount_msat, invoice.min_final_cltv_expiry,
                                   invoice.expires_at, None, amp=True))
    return invoice


def _new_invoice(self: Node, payment_hash: bytes, preimage: bytes, amount_msat: int | None, description: str,
                 expiry: int, route_hints: Sequence[Sequence[RouteHintHop]],
                 description_hash: bytes | None = None) -> Invoice:
    secret = os.urandom(32)
    invoice = build_invoice(network=self.network, amount_msat=amount_msat,
                            description=None if description_hash is not None else description,
                            description_hash=description_hash, payment_hash=payment_hash, payment_secret=secret, timestamp=int(time.time()),
                            expiry=expiry, payee=None, route_hints=route_hints).sign(self.privkey)
    record = InvoiceRecord(invoice.payment_hash, invoice.encode(), preimage, secret, amount_msat,
                           expires_at=invoice.expires_at)
    with self.store.transaction():
        self.store.put_invoice(record)
    self.invoices.added(Receivable(payment_hash, secret, amount_msat, invoice.min_final_cltv_expiry,
                                   invoice.expires_at, preimage or None, hold=not preimage))
    return invoice


def blinded_payment_paths(self: Node, amount_msat: int | None, description: str = "", expiry: int = 3600,
                          via: Sequence[Sequence[bytes]] | None = None, dummy_hops: int = 1,
                          preimage: bytes | None = None, max_paths: int = 3) -> BlindedInvoice:
    """A payment to us, payable only over the returned blinded paths (BOLT 4 route blinding).

    ``via``: node lists (introduction node first, ending at one of our peers); by default one
    path per peer we have a ready channel with. Each path gets ``dummy_hops`` dummy hops. The
    result's ``paths`` are (BlindedPath, BlindedPayInfo) pairs, as a BOLT 12 invoice carries them.
    """
    return self.blinded.payment_paths(amount_msat, description, expiry, via, dummy_hops, preimage, max_paths)


def _locked_incoming(channel: Channel) -> list[LoggedHtlc]:
    """HTLCs the peer offered that are irrevocably committed (BOLT 2: only then act on them)."""
    log = channel.log
    local = set(log.commitment(Side.LOCAL, log.revoked[Side.LOCAL] + 1).htlcs)
    remote = set(log.commitment(Side.REMOTE, log.revoked[Side.REMOTE] + 1).htlcs)
    return sorted((h for h in local & remote if h.offerer is Side.REMOTE), key=lambda h: h.htlc_id)


def _process_incoming(self: Node, channel: Channel, received: list[NodeEvent]) -> None:
    """Decide each newly locked-in incoming HTLC; apply decisions recorded earlier (in a transaction)."""
    cid = channel.config.channel_id
    live = {h.htlc_id for h in self._unresolved_htlcs(channel) if h.offerer is Side.REMOTE}
    for key in [k for k in self._incoming if k[0] == cid and k[1] not in live]:
        record = self._incoming.pop(key)  # gone from every commitment: forget it
        self.blinded.forget(key)
        self.asyncpay.resolved(key)
        self.store.delete_incoming_htlc(*key)
        self.store.delete_onion(*key)
        if record.out_channel_id is not None and record.out_htlc_id is not None:
            self._by_out.pop((record.out_channel_id, record.out_htlc_id), None)
    for key in [k for k in self._handled if k[0] == cid and k[1] not in live]:
        self._handled.discard(key)
        self._part_secrets.pop(key, None)
        self.store.delete_onion(*key)
    if cid not in self._reestablished:
        return
    removing = {h.htlc_id for h, _ in channel.log.settled() if h.offerer is Side.REMOTE}
    height = self.chain.tip()[0]
    for htlc in self._locked_incoming(channel):
        key = (cid, htlc.htlc_id)
        if htlc.htlc_id in removing:
            continue
        decided = self._incoming.get(key)
        if decided is not None:
            self._apply_record(decided)
            continue
        if key in self._handled:
            continue
        self._decide_incoming(channel, htlc, height, received)


def _decide_incoming(self: Node, channel: Channel, htlc: LoggedHtlc, height: int, received: list[NodeEvent]) -> None:
    cid = channel.config.channel_id
    key = (cid, htlc.htlc_id)
    onion = self.store.onion(cid, htlc.htlc_id)
    if onion is None:  # never stored (cannot happen after an add): nothing to decrypt a failure with
        self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, b"",
                                        failure=create_failure_packet(bytes(32), FailureMessage(
                                            FailureCode.TEMPORARY_NODE_FAILURE).to_bytes())))
        return
    onion, path_key = unpack_onion(onion)
    read = read_onion(onion, self.privkey, htlc.payment_hash, path_key, htlc.amount_msat, htlc.cltv_expiry,
                      self.node_id)
    if cid in self._funding_watch.suspended and isinstance(read, (Forward, Final)):
        # node.funding_watch: the channel's funding was reorganised out; what it carries may not exist
        self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, read.shared_secret,
                                        failure=create_failure_packet(read.shared_secret, FailureMessage(
                                            FailureCode.TEMPORARY_NODE_FAILURE).to_bytes())))
    elif isinstance(read, (BlindedFailure, BlindedForward, BlindedFinal)):
        self.blinded.decide(channel, htlc, read, height, received)
    elif isinstance(read, Malformed):
        self._handled.add(key)
        self._dirty.setdefault(cid, []).append(
            channel.fail_malformed_htlc(htlc.htlc_id, read.sha256_of_onion, read.code))
    elif isinstance(read, Refuse):
        self._record(IncomingHtlcRecord(cid, htlc.htlc_id, htlc.payment_hash, read.shared_secret,
                                        failure=read.reason()))
    elif isinstance(read, Forward):
        self._forward(channel, htlc, read, height, received)
    else:
        assert isinstance(read, Final)
        self._handled.add(key)
        self._part_secrets[key] = read.shared_secret
        part = IncomingPart(cid, htlc.htlc_id, htlc.amount_msat, htlc.cltv_expiry, htlc.payment_hash,
                            read.payload)
        amp = any(t == AMP_RECORD_TYPE for t, _ in read.payload.custom_records)
        self.return_paths.on_final_payload(htlc.payment_hash, read.payload.custom_records)
        self.invoices.load_for(htlc.payment_hash, read.payload.payment_secret, amp)
        self._apply_decisions(self.receiver.receive(part, height, time.time()), received)


def _apply_decisions(self: Node, decisions: list[Decision], received: list[NodeEvent]) -> None:
    """The receiver's answers: record each fulfil or fail (then applied), report the events."""
    for decision in decisions:
        if isinstance(decision, Settle):
            part = decision.part
            secret = self._part_secrets.get((part.channel_id, part.htlc_id), b"")
            self._record(IncomingHtlcRecord(part.channel_id, part.htlc_id, part.payment_hash, secret,
                                            preimage=decision.preimage))
        elif isinstance(decision, Fail):
            part = decision.part
            secret = self._part_secrets.get((part.channel_id, part.htlc_id), bytes(32))
            blinded = self.blinded.failure_record((part.channel_id, part.htlc_id), part.payment_hash,
                                                  decision.failure) if part.blinded else None
            self._record(IncomingHtlcRecord(part.channel_id, part.htlc_id, part.payment_hash, secret,
                                            failure=blinded or create_failure_packet(
                                                secret, decision.failure.to_bytes())))
        elif isinstance(decision, Received):
            self._mark_invoice_paid(decision)
            received.append(PaymentReceived(decision.key, decision.amount_msat))
        elif isinstance(decision, Held):
            received.append(HtlcHeld(decision.payment_hash, decision.amount_msat))


def _mark_invoice_paid(self: Node, done: Received) -> None:
    if done.kind == "amp" and done.invoice_hash is not None:  # an AMP invoice paid by this set
        amp_record = self.store.invoice(done.invoice_hash)
        if amp_record is not None and amp_record.status != "paid":
            self.store.put_invoice(dataclasses.replace(amp_record, status="paid", received_msat=done.amount_msat))
            self.settled_invoices.add(done.invoice_hash)
    record = self.store.invoice(done.key)
    if done.kind == "invoice" and record is not None and record.status != "paid":
        preimage = record.preimage
        claim = next((r for r in self._incoming.values() if r.payment_hash == done.key and r.preimage), None)
        if claim is not None and claim.preimage is not None:
            preimage = claim.preimage  # a hold invoice learns its preimage now
        self.store.put_invoice(InvoiceRecord(record.payment_hash, record.invoice, preimage,
                                             record.payment_secret, record.amount_msat, "paid",
                                             done.amount_msat, claim.channel_id if claim else None,
                                             claim.htlc_id if claim else None))
    self.settled_invoices.add(done.key)


def _record(self: Node, record: IncomingHtlcRecord) -> None:
    """Commit a decision about an incoming HTLC, then apply it if its channel can take updates now."""
    key = (record.channel_id, record.htlc_id)
    self._incoming[key] = record
    self.store.put_incoming_htlc(record)
    if record.out_channel_id is not None and record.out_htlc_id is not None:
        self._by_out[(record.out_channel_id, record.out_htlc_id)] = key
    self._apply_record(record)


def _apply_record(self: Node, record: IncomingHtlcRecord) -> None:
    """Fulfil or fail the incoming HTLC as recorded (a no-op while it waits or is being removed)."""
    channel = self.channels.get(record.channel_id)
    if channel is None or record.channel_id not in self._reestablished:
        return  # applied after the reestablish
    message: WireMessage
    try:
        malformed = parse_malformed(record.failure) if record.failure is not None else None
        if record.preimage is not None:
            message = channel.fulfill_htlc(record.htlc_id, record.preimage)
        elif malformed is not None:  # inside a blinded path (node.blinded)
            message = channel.fail_malformed_htlc(record.htlc_id, malformed[1], malformed[0])
        elif record.failure is not None:
            message = channel.fail_htlc(record.htlc_id, record.failure)
        else:
            return
    except UsageError:  # already being removed, or not yet committed: a later step applies it
        return
    self._dirty.setdefault(record.channel_id, []).append(message)


async def _receiver_timer(self: Node, interval: float) -> None:
    while not self._stopping:
        await asyncio.sleep(interval)
        height = self.chain.tip()[0]
        self.invoices.maybe_prune(time.time(), self._invoice_hashes_in_channels)
        decisions = self.receiver.tick(time.time(), height)
        if decisions:
            await self._run_step(lambda received, d=decisions: self._apply_decisions(d, received))  # type: ignore[misc]


def create_hold_invoice(self: Node, payment_hash: bytes, amount_msat: int, description: str = "",
                        expiry: int = 3600) -> Invoice:
    """An invoice for a hash whose preimage we do not know yet: a payment is held (``HtlcHeld``)
    until :meth:`settle_hold` gives the preimage or :meth:`cancel_hold` refuses it."""
    if len(payment_hash) != 32:
        raise UsageError("payment_hash: must be 32 bytes")
    if self.store.invoice(payment_hash) is not None:
        raise UsageError("payment_hash: an invoice for it exists already")
    return self._new_invoice(payment_hash, b"", amount_msat, description, expiry, ())


async def settle_hold(self: Node, preimage: bytes) -> None:
    """Release a held payment: every part is fulfilled with ``preimage``."""
    payment_hash = sha256(preimage)
    try:
        decisions = self.receiver.settle_held(payment_hash, preimage)
    except KeyError:
        raise UsageError(f"payment_hash: no held payment for {payment_hash.hex()}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    await self._run_step(lambda received: self._apply_decisions(decisions, received))
    if self._onchain.active():
        # BOLT #5: "if it receives (or already possesses) a payment preimage for an unresolved HTLC
        # output that it has been offered [...]: MUST *resolve* the output by spending it". A held
        # HTLC on a channel already on chain is claimed now, not at the next block (by then the
        # payer's HTLC-timeout may be valid too).
        await self._on_onchain_events(self._onchain.poll(self.channels, self._closings))


async def cancel_hold(self: Node, payment_hash: bytes) -> None:
    """Refuse a held payment: every part fails (incorrect_or_unknown_payment_details)."""
    try:
        decisions = self.receiver.cancel_held(payment_hash, self.chain.tip()[0])
    except KeyError:
        raise UsageError(f"payment_hash: no held payment for {payment_hash.hex()}") from None
    await self._run_step(lambda received: self._apply_decisions(decisions, received))
