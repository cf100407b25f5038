"""Paying a closed allowance's refund exactly once, even when the payment hangs.

Theory of operation. A refund payment can stay pending for a long time: the client's node
may hold the HTLC (a hold invoice), a hop may sit on it, the server may restart. A pending
payment can still settle, so a timeout says nothing about the outcome. The refund therefore
has a record in the store (:class:`~lightspeed.micro.store.Refund`) that moves only by
compare-and-set::

    (no record: due) --claim--> IN_FLIGHT(invoice, payment hash) --> PAID(preimage)
                                        |                        \\--> FAILED --claim--> IN_FLIGHT
                                        +-- still pending: stays IN_FLIGHT (answered with its invoice)

* The record goes IN_FLIGHT, naming the one invoice to pay, *before* the payment starts.
  Whoever loses that compare-and-set pays nothing: it reports the record that won.
* It leaves IN_FLIGHT only on what the payer says about that payment hash: PAID when it has
  the preimage, FAILED when the payment is definitively failed (no HTLC of it can settle any
  more). Only then may a new invoice (a new attempt) be paid.
* After a restart the record is still IN_FLIGHT; :meth:`RefundDesk.resolve` asks the payer.
  If the payer never heard of the payment (the process stopped between recording and paying),
  it is paid now: the payer's :meth:`RefundPayer.pay_once` never pays one payment hash twice,
  so two instances resuming it at once, or a resumption racing the first call, pay it once.

* The record names the node paying it (``Refund.owner``). Instances sharing a store may each
  have their own node, and only the paying node can say whether it paid: another node's payer
  never heard of the payment and would pay it again. So a node resolves or resumes only the
  records it owns; one without an owner (written before owners existed, when all instances had
  to pay through one node) is asked about as before and, if this node never started it, taken
  by compare-and-set before it is paid. Another node's record stays in flight until that node
  resolves it; the allowance's status names the node.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from lightspeed.errors import DecodeError, LightspeedError
from lightspeed.invoice import Invoice
from lightspeed.invoice.decode import decode
from lightspeed.micro.auto_refund import VIA_RETURN_PATH
from lightspeed.micro.store import AllowanceStore, Refund, RefundStatus

REFUND_INVOICE_MIN_SECONDS = 60  # an invoice expiring sooner is refused: the payment may not arrive in time


class PaymentState(enum.StrEnum):
    UNKNOWN = "unknown"  # the payer never started a payment to this hash
    PENDING = "pending"  # started, and an HTLC of it may still settle
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # definitively: no HTLC of it can settle any more


@dataclass(frozen=True)
class PaymentStatus:
    state: PaymentState
    preimage: bytes = b""
    reason: str = ""


class RefundPayer(Protocol):
    """What pays refunds: the server's node (:class:`~lightspeed.micro.lightning.NodePayer`)."""

    async def pay_once(self, invoice: str) -> bytes:
        """Pay ``invoice``; returns the preimage. Raises instead of paying if a payment to its
        hash was ever started (whatever its outcome), so a payment hash is paid at most once."""
        ...

    async def payment_status(self, payment_hash: bytes) -> PaymentStatus:
        """What became of the payment to ``payment_hash`` (:class:`PaymentState`)."""
        ...


class RefundRefused(LightspeedError):
    """A refund claim that cannot start (bad invoice); ``field`` names what is wrong."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


@dataclass(frozen=True)
class RefundView:
    """A refund as the client sees it: ``status`` is none, due, in_flight, paid or failed."""

    status: str
    amount_msat: int
    invoice: str | None = None
    preimage: bytes | None = None
    reason: str = ""

    @classmethod
    def of(cls, record: Refund) -> RefundView:
        return cls(record.status.value, record.amount_msat, record.invoice,
                   record.preimage or None, record.reason)

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.status, "amount_msat": self.amount_msat}
        if self.invoice is not None:
            body["invoice"] = self.invoice
        if self.preimage is not None:
            body["preimage"] = self.preimage.hex()
        if self.reason:
            body["reason"] = self.reason
        return body


@dataclass
class RefundDesk:
    """The refund state machine over one store and one payer (see the module docstring)."""

    store: AllowanceStore
    payer: RefundPayer
    node_id: bytes  # the server's node: an invoice payable to it is refused
    clock: Callable[[], float] = time.time

    async def claim(self, allowance_id: bytes, due_msat: int, invoice_text: str) -> RefundView:
        """Pay ``due_msat`` to ``invoice_text``, unless a refund is already in flight or paid:
        then report that one (its own invoice), paying nothing."""
        for _ in range(4):  # each lost compare-and-set means another request moved the record
            record = await self.store.refund(allowance_id)
            if record is not None and record.status is RefundStatus.IN_FLIGHT:
                record = await self.resolve(allowance_id, record)
            if record is not None and record.status is not RefundStatus.FAILED:
                return RefundView.of(record)  # in flight or paid: never a second payment
            if due_msat == 0:
                return RefundView("none", 0)
            invoice = self._check_invoice(invoice_text, due_msat)
            attempt = 1 if record is None else record.attempt + 1
            new = Refund(RefundStatus.IN_FLIGHT, attempt, due_msat, invoice.payment_hash, invoice_text,
                         owner=self.node_id.hex())
            if await self.store.set_refund(allowance_id, record, new):  # recorded before paying
                return RefundView.of(await self._pay(allowance_id, new))
        record = await self.store.refund(allowance_id)
        return RefundView.of(record) if record is not None else RefundView("due", due_msat)

    async def resolve(self, allowance_id: bytes, record: Refund, resume: bool = True) -> Refund:
        """Move an IN_FLIGHT record to PAID or FAILED if the payer knows how it ended.

        ``resume``: a payment the payer never started (the process stopped between
        recording and paying) is started now (``pay_once`` makes that safe), after taking a
        record without an owner by compare-and-set. Another node's record is left as it is.
        """
        if record.invoice == VIA_RETURN_PATH:
            return record  # paid through return paths: :mod:`lightspeed.micro.auto_refund` ends it
        if record.owner and record.owner != self.node_id.hex():
            return record  # this node's payer cannot know how another node's payment ended
        status = await self.payer.payment_status(record.payment_hash)
        if status.state is PaymentState.UNKNOWN and not resume:
            return record
        if not record.owner:  # from before owners: this node's payer knows it, or pays it now
            mine = replace(record, owner=self.node_id.hex())
            if not await self.store.set_refund(allowance_id, record, mine):
                return await self.store.refund(allowance_id) or record  # another node took it
            record = mine
        if status.state is PaymentState.UNKNOWN:
            return await self._pay(allowance_id, record)
        return await self._record_outcome(allowance_id, record, status)

    async def resolve_all(self, limit: int = 100) -> int:
        """Resolve the in-flight refunds (after a restart, or periodically); how many ended."""
        ended = 0
        for allowance_id in await self.store.refunds_in_flight(limit):
            record = await self.store.refund(allowance_id)
            if record is None or record.status is not RefundStatus.IN_FLIGHT:
                continue
            if (await self.resolve(allowance_id, record)).status is not RefundStatus.IN_FLIGHT:
                ended += 1
        return ended

    async def _pay(self, allowance_id: bytes, record: Refund) -> Refund:
        try:
            preimage = await self.payer.pay_once(record.invoice)
        except Exception:  # a timeout is not a failure: ask the payer what happened
            return await self._record_outcome(
                allowance_id, record, await self.payer.payment_status(record.payment_hash))
        return await self._record_outcome(allowance_id, record,
                                          PaymentStatus(PaymentState.SUCCEEDED, preimage))

    async def _record_outcome(self, allowance_id: bytes, record: Refund, status: PaymentStatus) -> Refund:
        if status.state is PaymentState.SUCCEEDED:
            new = replace(record, status=RefundStatus.PAID, preimage=status.preimage)
        elif status.state is PaymentState.FAILED:
            new = replace(record, status=RefundStatus.FAILED, reason=status.reason or "the payment failed")
        else:
            return record  # pending, or never started: still in flight
        if await self.store.set_refund(allowance_id, record, new):
            return new
        return await self.store.refund(allowance_id) or record  # another request recorded it

    def _check_invoice(self, text: str, due_msat: int) -> Invoice:
        """Everything that would make the payer refuse the invoice, checked before recording it."""
        try:
            invoice = decode(text)
        except DecodeError as exc:
            raise RefundRefused("invoice", str(exc)) from None
        if invoice.amount_msat != due_msat:
            raise RefundRefused("invoice", f"amount must be exactly {due_msat} msat")
        if invoice.payment_secret is None:
            raise RefundRefused("invoice", "has no payment secret")
        if invoice.payee == self.node_id:
            raise RefundRefused("invoice", "is payable to this server's own node")
        if invoice.expires_at < self.clock() + REFUND_INVOICE_MIN_SECONDS:
            raise RefundRefused("invoice", f"expires in less than {REFUND_INVOICE_MIN_SECONDS} s")
        return invoice
