"""The metered stream's two state machines: :class:`SellerStream` and :class:`BuyerStream`.

Theory of operation. A stream pays a hash-chain lane of an allowance (``micro``) one link
per tick, *before* the tick is delivered, and only once the tick paid before it has been
delivered in full. So at every moment, on both sides::

    delivered_units  <=  paid_units  <=  delivered_units + tick_units

The left inequality is the seller's safety (it never delivers unpaid: its exposure is 0);
the right one is the buyer's (it never pays more than one tick ahead of what it got). The
seller enforces the left one by granting the application's meter only ``paid - delivered``
units; the buyer enforces the right one by revealing the next link only when
``delivered >= paid``, and the seller refuses an early link too. When the buyer stops
paying, the seller delivers what the last link paid for (at most one tick) and its grant
falls to zero: delivery stops within one tick.

The Lightning money behind the links is the allowance's prepayment: the buyer funds at most
``tariff.window_ticks`` ticks ahead (:meth:`BuyerStream.may_fund`), the unspent rest being
refundable with the allowance.

Buyers without an allowance (a plain Lightning wallet) pay *increments* instead: one invoice
of the seller's node per ``k`` ticks (``k <= window_ticks``, chosen by the buyer), paid only once
everything paid before has been delivered; the seller credits it once its node has the payment.
The same inequality holds with ``k`` ticks in place of one: the buyer trades exposure for fewer
Lightning payments. The invoices and their preimages are the receipts of those ticks.

A disconnect pauses both sides (no grant, no payment); on reconnect the seller tells its
position (:meth:`SellerStream.position`) and the buyer reconciles (:meth:`BuyerStream.resume`):
it resends its last link if the seller never got it, and takes the seller's count of units
delivered when reports were lost in flight (at most the one tick it has paid ahead).

Errors, as in h11: :class:`RemoteProtocolError` is the other side sending something wrong
(the binding answers with an ``error`` message); a caller's misuse raises
:class:`~lightspeed.errors.UsageError`. Either way the machine's state is unchanged. Time is
an input (``now`` of :meth:`SellerStream.close`); nothing here does I/O.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from dataclasses import dataclass, field

from lightspeed.errors import LightspeedError, UsageError
from lightspeed.micro.hashchain import ChainWalker
from lightspeed.stream.receipt import Receipt, SignedStatement, Statement, check_statement
from lightspeed.stream.tariff import Tariff


class StreamStatus(enum.StrEnum):
    OPEN = "open"  # connected: delivery and payment go on
    PAUSED = "paused"  # disconnected: nothing is delivered or paid until resumed
    CLOSED = "closed"  # ended: the statement is (being) signed


class RemoteProtocolError(LightspeedError):
    """The other side sent something the protocol does not allow; ``code`` is machine-readable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


@dataclass
class SellerStream:
    """The seller's view of one stream over ``lane`` of allowance ``allowance_id``."""

    tariff: Tariff
    stream_id: bytes
    seller_node_id: bytes
    allowance_id: bytes
    lane: int
    start_index: int
    start_link: bytes
    delivered_units: int = 0
    status: StreamStatus = StreamStatus.OPEN
    last_index: int = field(init=False)
    last_link: bytes = field(init=False)
    increments: list[tuple[bytes, int]] = field(default_factory=list)  # (payment hash, ticks) paid by invoice
    increment_ticks: int = 0

    def __post_init__(self) -> None:
        self.last_index, self.last_link = self.start_index, self.start_link

    @property
    def paid_ticks(self) -> int:
        return self.last_index - self.start_index + self.increment_ticks

    @property
    def paid_units(self) -> int:
        return self.paid_ticks * self.tariff.tick_units

    def grant(self) -> int:
        """Units the application may deliver now: what is paid and not yet delivered."""
        if self.status is not StreamStatus.OPEN:
            return 0
        return ((self.last_index - self.start_index + self.increment_ticks) * self.tariff.tick_units
                - self.delivered_units)  # paid_units inline: three calls a tick; the properties cost ~2% of it

    def check_payment(self, index: int, link: bytes, verify_link: bool = True) -> None:
        """Raise :class:`RemoteProtocolError` unless ``link`` at ``index`` pays the next tick now.

        ``verify_link=False``: the hash was checked against ``last_link`` by an earlier call for
        this same ``index``; ``last_index`` and ``last_link`` only move together, so while
        ``index`` is still the next one the link still hashes to ``last_link``."""
        if self.status is StreamStatus.CLOSED:
            raise RemoteProtocolError("closed", "the stream is closed")
        if self.status is StreamStatus.PAUSED:
            raise RemoteProtocolError("paused", "the stream is paused: resume it first")
        if index <= self.last_index:
            raise RemoteProtocolError("replayed", f"index: {index} is already paid (last paid {self.last_index})")
        if index != self.last_index + 1:
            raise RemoteProtocolError("out_of_order", f"index: expected {self.last_index + 1}, one tick per link")
        tariff = self.tariff
        paid_ticks = self.last_index - self.start_index + self.increment_ticks  # self.paid_ticks, once
        if paid_ticks >= tariff.max_ticks:
            raise RemoteProtocolError("max_units", f"the stream has bought its {tariff.max_units} "
                                      f"{tariff.unit} already")
        outstanding = paid_ticks * tariff.tick_units - self.delivered_units
        if outstanding > 0:
            raise RemoteProtocolError("early", f"{outstanding} paid units are not "
                                      "delivered yet: pay the next tick once they are")
        if verify_link and not hmac.compare_digest(hashlib.sha256(link).digest(), self.last_link):
            raise RemoteProtocolError("forged", "link: does not hash to the last paid link")

    def check_increment(self, payment_hash: bytes, ticks: int) -> None:
        """Raise :class:`RemoteProtocolError` unless an invoice of ``ticks`` ticks may be credited now."""
        if self.status is not StreamStatus.OPEN:
            raise RemoteProtocolError(self.status.value, f"the stream is {self.status.value}")
        if any(h == payment_hash for h, _ in self.increments):
            raise RemoteProtocolError("replayed", "payment_hash: this increment is credited already")
        if ticks < 1 or ticks > self.tariff.window_ticks:
            raise RemoteProtocolError("bad_request", f"ticks: an increment is 1 to {self.tariff.window_ticks} ticks")
        if self.paid_ticks + ticks > self.tariff.max_ticks:
            raise RemoteProtocolError("max_units", f"the stream would buy more than {self.tariff.max_units} "
                                      f"{self.tariff.unit}")
        if self.delivered_units < self.paid_units:
            raise RemoteProtocolError("early", f"{self.paid_units - self.delivered_units} paid units are not "
                                      "delivered yet: pay the next increment once they are")

    def receive_increment(self, payment_hash: bytes, ticks: int) -> int:
        """Credit a paid invoice of ``ticks`` ticks (the caller checked its node has the payment)."""
        self.check_increment(payment_hash, ticks)
        self.increments.append((payment_hash, ticks))
        self.increment_ticks += ticks
        return self.grant()

    def receive_payment(self, index: int, link: bytes, verified: bool = False) -> int:
        """Take the link for the next tick; returns the units now granted. ``verified``: this
        link's hash was checked for this ``index`` already, by :meth:`check_payment` or by the
        allowance server against the lane it stores (the hash is not computed again; everything
        else is checked again)."""
        self.check_payment(index, link, verify_link=not verified)
        self.last_index, self.last_link = index, link
        return self.grant()

    def delivered(self, units: int) -> None:
        """The meter's report: ``units`` more were delivered, at most what is paid and not yet
        delivered (a grant given before a disconnect may still be reported after it)."""
        outstanding = self.paid_units - self.delivered_units
        if units < 0 or units > outstanding:
            raise UsageError(f"units: the meter reported {units} {self.tariff.unit}, "
                             f"but only {outstanding} are paid and not delivered")
        self.delivered_units += units

    def disconnect(self) -> None:
        if self.status is StreamStatus.OPEN:
            self.status = StreamStatus.PAUSED

    def position(self) -> tuple[int, int, int]:
        """``(last paid index, units delivered, increments credited)``: what a reconnecting buyer
        reconciles with."""
        return self.last_index, self.delivered_units, len(self.increments)

    def resume(self) -> tuple[int, int, int]:
        if self.status is StreamStatus.CLOSED:
            raise RemoteProtocolError("closed", "the stream is closed")
        self.status = StreamStatus.OPEN
        return self.position()

    def close(self, now: int) -> Statement:
        """End the stream (idempotent in effect: the statement only depends on the final counts)."""
        self.status = StreamStatus.CLOSED
        return Statement(self.stream_id, self.seller_node_id, self.tariff, self.allowance_id, self.lane,
                         self.start_index, self.start_link, self.last_index, self.last_link,
                         self.delivered_units, now, tuple(self.increments))


@dataclass
class BuyerStream:
    """The buyer's view: it holds the lane's walker and decides when to reveal the next link."""

    tariff: Tariff
    stream_id: bytes
    seller_node_id: bytes
    walker: ChainWalker | None  # None: no allowance, the stream is paid by increments
    start_index: int
    start_link: bytes
    max_msat: int  # the buyer's budget for this stream
    funded_ticks: int = 0  # ticks of the lane paid for over Lightning (cumulative, from start_index)
    delivered_units: int = 0
    stopped: bool = False  # the buyer chose to stop paying
    status: StreamStatus = StreamStatus.OPEN
    paid_links: list[bytes] = field(default_factory=list)
    ticks_per_increment: int = 0  # without an allowance: ticks each invoice pays for
    increments: list[tuple[bytes, int]] = field(default_factory=list)  # (payment hash, ticks)
    increment_ticks: int = 0
    #: Node ids of the seller's other processes (announced by its greeting): one of them may serve
    #: the stream after a failover, and sign its statement.
    other_sellers: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        if self.walker is None and not 1 <= self.ticks_per_increment <= self.tariff.window_ticks:
            raise UsageError(f"ticks_per_increment: without an allowance, 1 to {self.tariff.window_ticks} "
                             "(the window)")

    @property
    def paid_ticks(self) -> int:
        return len(self.paid_links) + self.increment_ticks

    @property
    def paid_units(self) -> int:
        return self.paid_ticks * self.tariff.tick_units

    @property
    def paid_msat(self) -> int:
        return self.paid_ticks * self.tariff.tick_msat

    @property
    def last_index(self) -> int:
        """The lane index of the last link paid."""
        return self.start_index + len(self.paid_links)

    @property
    def budget_ticks(self) -> int:
        """Ticks this stream may ever pay: the tariff's maximum, the budget, the lane's length."""
        lane = self.walker.length - self.start_index if self.walker is not None else self.tariff.max_ticks
        return min(self.tariff.max_ticks, self.max_msat // self.tariff.tick_msat, lane)

    @property
    def prepaid_ticks(self) -> int:
        """Funded over Lightning and not yet spent by a link: what the seller holds for us (0 for a
        stream paid by increments: each is spent as it is paid)."""
        return self.funded_ticks - len(self.paid_links)

    def may_fund(self, ticks: int) -> bool:
        """True if funding ``ticks`` more keeps the prepayment within one window and the budget."""
        return (ticks > 0 and self.prepaid_ticks + ticks <= self.tariff.window_ticks
                and self.funded_ticks + ticks <= self.budget_ticks)

    def funded(self, ticks: int) -> None:
        """``ticks`` more of the lane were paid for over Lightning."""
        if not self.may_fund(ticks):
            raise UsageError(f"ticks: funding {ticks} more would prepay more than one window "
                             f"({self.tariff.window_ticks} ticks) or exceed the budget")
        self.funded_ticks += ticks

    def next_payment(self) -> tuple[int, bytes] | None:
        """The next tick's ``(index, link)`` if it is time to pay, else ``None``; the link counts as
        paid from here on (it is sent next; a lost one is resent by :meth:`resume`)."""
        if (self.walker is None or self.status is not StreamStatus.OPEN or self.stopped
                or self.delivered_units < self.paid_units
                or self.paid_ticks >= min(self.funded_ticks, self.budget_ticks)):
            return None
        index = self.last_index + 1
        link = self.walker.link(index)
        self.paid_links.append(link)
        return index, link

    def increment_due(self) -> int:
        """Without an allowance: the ticks the next invoice may pay for now (0: not now)."""
        if (self.walker is not None or self.status is not StreamStatus.OPEN or self.stopped
                or self.delivered_units < self.paid_units):
            return 0
        return min(self.ticks_per_increment, self.budget_ticks - self.paid_ticks)

    def paid_increment(self, payment_hash: bytes, ticks: int) -> None:
        """An invoice of ``ticks`` ticks was paid (the caller paid it only if ``ticks <= increment_due()``)."""
        if not 1 <= ticks <= self.increment_due():
            raise UsageError(f"ticks: {ticks} is not due now (due: {self.increment_due()})")
        self.increments.append((payment_hash, ticks))
        self.increment_ticks += ticks

    def receive_delivery(self, units: int) -> None:
        """The seller reports ``units`` more delivered; more than paid is refused."""
        if self.status is StreamStatus.CLOSED:
            raise RemoteProtocolError("closed", "delivery reported after the stream closed")
        if units < 1 or self.delivered_units + units > self.paid_units:
            raise RemoteProtocolError("over_delivery", f"units: {units} more would make "
                                      f"{self.delivered_units + units} delivered, {self.paid_units} are paid")
        self.delivered_units += units

    def stop(self) -> None:
        """Stop paying: the seller delivers what is paid (at most one tick) and stops."""
        self.stopped = True

    def disconnect(self) -> None:
        if self.status is StreamStatus.OPEN:
            self.status = StreamStatus.PAUSED

    def resume(self, seller_last_index: int, seller_delivered: int,
               seller_increments: int = 0) -> tuple[int, bytes] | bytes | None:
        """Reconcile with the seller's position after a reconnect; returns what to resend, if any:
        a link ``(index, link)``, or the payment hash of an increment the seller has not credited."""
        if self.status is StreamStatus.CLOSED:
            raise UsageError("the stream is closed")
        resend: tuple[int, bytes] | bytes | None = None
        if self.increments and seller_increments == len(self.increments) - 1:
            resend = self.increments[-1][0]  # our "paid" was lost in flight: the invoice is paid
        elif seller_increments != len(self.increments):
            raise RemoteProtocolError("bad_position", f"increments: the seller credited {seller_increments}, "
                                      f"the buyer paid {len(self.increments)}")
        elif seller_last_index == self.last_index - 1 and self.paid_links:
            resend = (self.last_index, self.paid_links[-1])  # it was lost in flight
        if not isinstance(resend, tuple) and seller_last_index != self.last_index:
            raise RemoteProtocolError("bad_position", f"last_index: the seller says {seller_last_index}, the "
                                      f"buyer paid up to {self.last_index}")
        credited = sum(t for _, t in self.increments[:seller_increments])
        seller_paid_units = (seller_last_index - self.start_index + credited) * self.tariff.tick_units
        if not self.delivered_units <= seller_delivered <= seller_paid_units:
            raise RemoteProtocolError("bad_position", f"delivered_units: the seller says {seller_delivered}, "
                                      f"the buyer counted {self.delivered_units} of {seller_paid_units} paid")
        self.delivered_units = seller_delivered  # reports lost in flight: within the tick paid ahead
        self.status = StreamStatus.OPEN
        return resend

    def close(self) -> None:
        self.status = StreamStatus.CLOSED

    def accept_statement(self, signed: SignedStatement, invoices: tuple[tuple[str, bytes], ...] = ()) -> Receipt:
        """Check the seller's closing statement against our own count; the receipt to keep (with the
        ``(invoice, preimage)`` of every increment paid without an allowance)."""
        signer = signed.statement.seller_node_id
        check_statement(signed, seller_node_id=signer if signer in self.other_sellers else self.seller_node_id,
                        stream_id=self.stream_id,
                        paid_links=tuple(self.paid_links), start_link=self.start_link,
                        delivered_units=self.delivered_units, increments=tuple(self.increments))
        self.status = StreamStatus.CLOSED
        return Receipt(signed, tuple(self.paid_links), invoices)
