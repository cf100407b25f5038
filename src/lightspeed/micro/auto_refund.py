"""Automatic refunds of unused credit through the payer's return path, once and durably.

Why. A buyer prepays an allowance (pay-per-call) or a stream's window and rarely spends all of
it. When its payment carried a blinded return path (``node/return_paths.py``: an offer of the
payer's made for that one payment, in final-hop TLV 65539), the seller can pay the unused credit
back without asking for an invoice and without learning who the payer is. This module does that
when an allowance closes (the client closes it, it expires, or the stream it paid ends).

Theory of operation. The refund is the allowance's one :class:`~lightspeed.micro.store.Refund`
record (the same record a refund to a client's invoice uses), marked by
``invoice == VIA_RETURN_PATH`` and naming the allowance's first payment hash::

    (closed, no record) --claim (compare-and-set)--> IN_FLIGHT(amount due) --> PAID
                                                             \\--> FAILED (reason)

* Claiming is a compare-and-set on the store's record: of two requests or two server instances,
  one pays; nobody pays a refund recorded to a client's invoice too (the record is taken).
* The record names the node that pays it (``Refund.owner``, its node id), in that same
  compare-and-set. Seller processes sharing the store may each have their own node, and what
  was sent is known only to the paying node (below): another node resuming the refund would
  see nothing sent and pay it all again. So a node pays or resumes only the records it owns; a
  record without an owner (written before owners existed, when every process had to pay
  through one node) is taken by compare-and-set first, so exactly one node goes on with it. If
  the owner never comes back the refund stays in flight, and its status names that node.
* The amount due is fixed when the record is written. What was sent already is never kept here:
  it is the seller node's durable running total per payment hash
  (:meth:`ReturnPathPayer.refunded_msat`; each part is committed before its first HTLC and counts
  unless its payment failed). So a crash anywhere, or a resumption after a restart
  (:meth:`AutoRefunds.resume_all`), pays only ``due - refunded``: never twice, and never more than
  a payment received (the node refuses that per payment hash).
* Payments of the allowance that carried no return path are skipped; if none did, no record is
  written and the refund stays claimable with an invoice (status ``not_refundable`` here).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from lightspeed.micro.store import AllowanceStore, Refund, RefundStatus

log = logging.getLogger("lightspeed.auto_refund")

#: The ``invoice`` field of a refund record paid through return paths (there is no invoice to name).
VIA_RETURN_PATH = "return_path"


class ReturnPathPayer(Protocol):
    """The seller's node paying back through return paths (:class:`~lightspeed.micro.lightning.NodeReturnPaths`)."""

    def refundable_msat(self, payment_hash: bytes) -> int | None:
        """What is left to refund of the payment ``payment_hash``; ``None``: it carried no usable
        return path (none, or expired)."""
        ...

    def refunded_msat(self, payment_hash: bytes) -> int:
        """The durable running total refunded of ``payment_hash`` (parts paid or still pending)."""
        ...

    @property
    def node_id(self) -> bytes:
        """The paying node's id: it owns the refund records it pays (:attr:`Refund.owner`)."""
        ...

    async def refund(self, payment_hash: bytes, amount_msat: int) -> bytes:
        """Pay ``amount_msat`` of ``payment_hash`` back; the preimage. Raises when it did not go through."""
        ...


@dataclass(frozen=True)
class AutoRefundView:
    """What became of an allowance's automatic refund.

    ``status``: ``none`` (nothing unused), ``not_refundable`` (no payment carried a return path),
    ``in_flight``, ``paid``, ``failed``, or ``by_invoice`` (a refund to the client's invoice has
    the record). ``node``: the id (hex) of the node paying it, when known. ``refunded_msat``
    is that node's running total: another node's is not known here (0 unless it is paid).
    """

    status: str
    amount_msat: int
    refunded_msat: int = 0
    reason: str = ""
    node: str = ""

    def to_json(self) -> dict[str, object]:
        body: dict[str, object] = {"status": self.status, "amount_msat": self.amount_msat,
                                   "refunded_msat": self.refunded_msat, "via": VIA_RETURN_PATH}
        if self.reason:
            body["reason"] = self.reason
        if self.node:
            body["node"] = self.node
        return body


def is_return_path_record(record: Refund | None) -> bool:
    return record is not None and record.invoice == VIA_RETURN_PATH


@dataclass
class AutoRefunds:
    """Refunds closed allowances through their payments' return paths (see the module docstring)."""

    store: AllowanceStore
    paths: ReturnPathPayer
    #: A refund that did not go through is tried again this many times, ``retry_seconds`` apart
    #: (doubling): a route may appear (a channel confirms, liquidity comes back) before it is failed.
    retries: int = 2
    retry_seconds: float = 2.0
    #: Closed allowances whose refund waits for a batch invoice offered before the close (paid or
    #: expired: then its amount is known); looked at again by the server's sweep. In memory: after
    #: a restart, the client's next close request starts them.
    later: set[bytes] = field(default_factory=set)
    _running: dict[bytes, asyncio.Task[AutoRefundView]] = field(default_factory=dict)

    def sent_msat(self, hashes: Sequence[bytes]) -> int:
        """Refunded so far through the return paths of ``hashes`` (the node's durable totals)."""
        return sum(self.paths.refunded_msat(h) for h in hashes)

    @property
    def owner(self) -> str:
        """This node's id as refund records name their owner."""
        return self.paths.node_id.hex()

    def elsewhere(self, record: Refund) -> bool:
        """Whether another node owns ``record``: only its totals say what was sent."""
        return bool(record.owner) and record.owner != self.owner

    def refunded(self, record: Refund, hashes: Sequence[bytes]) -> int | None:
        """What was sent of ``record`` through return paths: this node's totals if it is this
        node's (or has no owner yet), the amount if another node paid it, else ``None`` (unknown)."""
        if not self.elsewhere(record):
            return self.sent_msat(hashes)
        return record.amount_msat if record.status is RefundStatus.PAID else None

    async def take(self, allowance_id: bytes, record: Refund) -> Refund | None:
        """``record`` (IN_FLIGHT) as this node's to pay, or ``None``: another node owns it.

        A record without an owner is taken by compare-and-set, so of several nodes resuming it
        exactly one goes on (``None`` for the others, or if the record moved meanwhile)."""
        if record.owner:
            return None if self.elsewhere(record) else record
        mine = replace(record, owner=self.owner)
        if await self.store.set_refund(allowance_id, record, mine):
            log.info("allowance %s: took the refund in flight without an owner", allowance_id.hex())
            return mine
        now = await self.store.refund(allowance_id)
        if now is not None and now.status is RefundStatus.IN_FLIGHT and now.owner == self.owner:
            return now
        return None

    async def start(self, allowance_id: bytes, due_msat: int, hashes: Sequence[bytes]) -> AutoRefundView:
        """Claim the refund of a CLOSED allowance (``hashes``: its payments, first one first) and
        start paying it in the background; the view at once (see :meth:`wait`)."""
        record = await self.store.refund(allowance_id)
        if record is None:
            if due_msat <= 0:
                return AutoRefundView("none", 0)
            if all(self.paths.refundable_msat(h) is None for h in hashes):
                return AutoRefundView("not_refundable", due_msat, 0, "the payment carried no return path: "
                                      "claim the refund with an invoice")
            new = Refund(RefundStatus.IN_FLIGHT, 1, due_msat, hashes[0], VIA_RETURN_PATH, owner=self.owner)
            if not await self.store.set_refund(allowance_id, None, new):
                record = await self.store.refund(allowance_id)  # another request or instance claimed it
            else:
                record = new
        assert record is not None
        if not is_return_path_record(record):
            return AutoRefundView("by_invoice", record.amount_msat, 0, f"refunded to the client's invoice "
                                  f"({record.status.value})")
        if record.status is RefundStatus.IN_FLIGHT and allowance_id not in self._running:
            mine = await self.take(allowance_id, record)
            if mine is not None:  # this node's (or taken now): only its totals say what is left
                self._spawn(allowance_id, mine, hashes)
                record = mine
            else:  # another node's: left to it
                record = await self.store.refund(allowance_id) or record
        return self.view(record, hashes)

    async def wait(self, allowance_id: bytes, timeout: float) -> AutoRefundView | None:
        """The refund's outcome once its payment ends, or ``None`` if it is still going after ``timeout``."""
        task = self._running.get(allowance_id)
        if task is None:
            return None
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(task), timeout)
        return None

    def view(self, record: Refund, hashes: Sequence[bytes]) -> AutoRefundView:
        reason = record.reason if record.status is RefundStatus.FAILED else ""
        if self.elsewhere(record) and record.status is RefundStatus.IN_FLIGHT:
            reason = f"being paid by node {record.owner} (only it can say what it sent)"
        return AutoRefundView(record.status.value, record.amount_msat, self.refunded(record, hashes) or 0,
                              reason, record.owner)

    async def resume_all(self, hashes_of: HashesOf, limit: int = 100) -> int:
        """After a start (and periodically): go on with this node's refunds left in flight (and
        those without an owner, taken first); how many were resumed. Another node's are left to
        it: this node's totals know nothing of what that node sent."""
        resumed = 0
        for allowance_id in await self.store.refunds_in_flight(limit):
            record = await self.store.refund(allowance_id)
            if not is_return_path_record(record) or allowance_id in self._running:
                continue
            assert record is not None
            if record.status is not RefundStatus.IN_FLIGHT or self.elsewhere(record):
                continue
            hashes = await hashes_of(allowance_id)
            if not hashes:
                continue
            mine = await self.take(allowance_id, record)
            if mine is not None:
                self._spawn(allowance_id, mine, hashes)
                resumed += 1
        return resumed

    async def aclose(self) -> None:
        """Stop the refunds in progress (they stay IN_FLIGHT and resume at the next start)."""
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _spawn(self, allowance_id: bytes, record: Refund, hashes: Sequence[bytes]) -> None:
        assert record.owner == self.owner, "a refund is paid only by the node that owns its record"
        if allowance_id in self._running:
            return  # one payer per allowance in this process: never two computing the same rest
        task = asyncio.get_running_loop().create_task(self._pay(allowance_id, record, tuple(hashes)))
        self._running[allowance_id] = task
        task.add_done_callback(lambda _t: self._running.pop(allowance_id, None))

    async def _pay(self, allowance_id: bytes, record: Refund, hashes: tuple[bytes, ...]) -> AutoRefundView:
        """Pay what is left of ``record.amount_msat`` (retrying), then record how it ended."""
        preimage, reason = b"", ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_seconds * 2 ** (attempt - 1))
            preimage, reason = await self._pay_rest(allowance_id, record, hashes)
            if not reason:
                break
        left = record.amount_msat - self.sent_msat(hashes)
        if left <= 0:
            new = replace(record, status=RefundStatus.PAID, preimage=preimage)
        else:
            new = replace(record, status=RefundStatus.FAILED,
                          reason=reason or f"{left} msat could not be refunded: no usable return path left")
        if not await self.store.set_refund(allowance_id, record, new):
            new = await self.store.refund(allowance_id) or record
        return self.view(new, hashes)

    async def _pay_rest(self, allowance_id: bytes, record: Refund, hashes: tuple[bytes, ...]) -> tuple[bytes, str]:
        """One try at what is left, latest payment first; the last preimage, and why it stopped short."""
        preimage, reason = b"", ""
        for payment_hash in reversed(hashes):
            left = record.amount_msat - self.sent_msat(hashes)
            if left <= 0:
                break
            room = self.paths.refundable_msat(payment_hash)
            if not room:
                continue
            try:
                preimage = await self.paths.refund(payment_hash, min(room, left))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a timeout may still settle: the node's running total says
                reason = str(exc) or type(exc).__name__
                log.info("allowance %s: refund through the return path failed: %s", allowance_id.hex(), reason)
                break
        return preimage, reason


class HashesOf(Protocol):
    """The payment hashes of an allowance, first payment first (from the allowance store)."""

    async def __call__(self, allowance_id: bytes) -> list[bytes]: ...
