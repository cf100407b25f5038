"""The metered stream's state machines: neither side is ever exposed to more than one tick.

A hypothesis state machine joins a buyer and a seller through two message queues and runs
arbitrary interleavings of funding, payment, metered delivery, lost messages (disconnects),
reconnects, the buyer stopping, forged/replayed/early links and a lying meter or seller. After
every step: the seller has never delivered unpaid units, the buyer has never paid more than one
tick beyond what it got, the Lightning prepayment stays within one window, and once the buyer
stops the seller delivers at most what was paid (at most one tick). Closing gives a statement
the buyer accepts and the dispute tool recomputes from the links.
"""

from __future__ import annotations

import copy
import hashlib
import os

import pytest
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from lightspeed.bitcoin.network import REGTEST
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError
from lightspeed.invoice import build_invoice
from lightspeed.micro.hashchain import ChainWalker, anchor
from lightspeed.stream import (
    BuyerStream,
    RemoteProtocolError,
    SellerStream,
    StatementError,
    StreamStatus,
    Tariff,
    recompute,
    sign_statement,
)

SELLER_KEY = hashlib.sha256(b"stream15 seller").digest()
SELLER_ID = pubkey_from_privkey(SELLER_KEY)
STREAM_ID = bytes(range(16))
ALLOWANCE_ID = bytes(16)


def pair(tariff: Tariff, max_msat: int, tip: bytes = b"\x07" * 32,
         increments: int = 0) -> tuple[BuyerStream, SellerStream]:
    """Both sides of a fresh stream; ``increments`` > 0: paid by invoices of that many ticks, no allowance."""
    length = tariff.max_ticks + 3
    start = anchor(tip, length) if not increments else bytes(32)
    walker = ChainWalker.from_tip(tip, length) if not increments else None
    buyer = BuyerStream(tariff, STREAM_ID, SELLER_ID, walker, 0, start, max_msat, ticks_per_increment=increments)
    seller = SellerStream(tariff, STREAM_ID, SELLER_ID, ALLOWANCE_ID, 0, 0, start)
    return buyer, seller


def seller_invoice(tariff: Tariff, ticks: int) -> tuple[str, bytes]:
    """A real invoice of the seller's node for ``ticks`` ticks, and its preimage."""
    preimage = os.urandom(32)
    invoice = build_invoice(network=REGTEST, amount_msat=ticks * tariff.tick_msat, description="ticks",
                            payment_hash=hashlib.sha256(preimage).digest(), payment_secret=bytes(32),
                            timestamp=1_700_000_000, expiry=3600, payee=None).sign(SELLER_KEY)
    return invoice.encode(), preimage


def snapshot(obj: BuyerStream | SellerStream) -> dict[str, object]:
    state = copy.deepcopy({k: v for k, v in vars(obj).items() if k != "walker"})
    if isinstance(obj, BuyerStream) and obj.walker is not None:
        state["walker"] = obj.walker.to_json()
    return state


class StreamInterleavings(RuleBasedStateMachine):
    @initialize(tick_units=st.integers(1, 5), msat_per_unit=st.integers(1, 10), max_ticks=st.integers(1, 25),
                window=st.integers(1, 6), budget_ticks=st.integers(0, 30), increments=st.integers(0, 6))
    def start(self, tick_units: int, msat_per_unit: int, max_ticks: int, window: int, budget_ticks: int,
              increments: int) -> None:
        self.tariff = Tariff("Wh", msat_per_unit, tick_units, tick_units * max_ticks, window)
        self.step = min(increments, window) or 1  # ticks paid at once: the exposure bound
        self.buyer, self.seller = pair(self.tariff, budget_ticks * self.tariff.tick_msat,
                                       increments=min(increments, window))
        self.invoices: dict[bytes, tuple[str, bytes, int]] = {}  # increments paid: hash -> invoice, preimage, ticks
        self.to_seller: list[tuple[int, bytes]] = []  # a link (index, link), or an increment (-ticks, hash)
        self.to_buyer: list[int] = []
        self.stop_bound: int | None = None  # units the seller may ever deliver once the buyer stopped
        self.receipt_checked = False

    def open(self) -> bool:
        return self.buyer.status is not StreamStatus.CLOSED

    # -- the honest protocol ----------------------------------------------------------------

    @precondition(open)
    @rule(ticks=st.integers(1, 8))
    def buyer_funds(self, ticks: int) -> None:
        if self.buyer.may_fund(ticks):
            self.buyer.funded(ticks)
        else:
            before = snapshot(self.buyer)
            with pytest.raises(UsageError):
                self.buyer.funded(ticks)
            assert snapshot(self.buyer) == before

    @precondition(open)
    @rule()
    def buyer_pays(self) -> None:
        payment = self.buyer.next_payment()
        if payment is not None:
            self.to_seller.append(payment)
        due = self.buyer.increment_due()
        if due:
            invoice, preimage = seller_invoice(self.tariff, due)
            payment_hash = hashlib.sha256(preimage).digest()
            self.buyer.paid_increment(payment_hash, due)
            self.invoices[payment_hash] = (invoice, preimage, due)
            self.to_seller.append((-due, payment_hash))

    def deliver_to_seller(self, index: int, value: bytes) -> None:
        if index < 0:
            self.seller.receive_increment(value, -index)
        else:
            self.seller.receive_payment(index, value)

    @precondition(lambda self: self.open() and self.to_seller and self.seller.status is StreamStatus.OPEN)
    @rule()
    def seller_receives(self) -> None:
        self.deliver_to_seller(*self.to_seller.pop(0))  # an honest buyer's payment is never refused

    @precondition(open)
    @rule(share=st.integers(0, 100))
    def seller_meters(self, share: int) -> None:
        units = self.seller.grant() * share // 100
        self.seller.delivered(units)
        if units:
            self.to_buyer.append(units)

    @precondition(lambda self: self.open() and self.to_buyer)
    @rule()
    def buyer_receives(self) -> None:
        self.buyer.receive_delivery(self.to_buyer.pop(0))  # an honest seller's report is never refused

    @precondition(open)
    @rule(lose_to_seller=st.booleans(), lose_to_buyer=st.booleans())
    def disconnect(self, lose_to_seller: bool, lose_to_buyer: bool) -> None:
        if lose_to_seller:
            self.to_seller.clear()
        if lose_to_buyer:
            self.to_buyer.clear()
        self.buyer.disconnect()
        self.seller.disconnect()

    @precondition(lambda self: self.open() and self.buyer.status is StreamStatus.PAUSED)
    @rule()
    def reconnect(self) -> None:
        # messages still queued were delivered before the other side noticed the disconnect
        for index, value in self.to_seller:
            self.seller.status = StreamStatus.OPEN
            self.deliver_to_seller(index, value)
        self.to_seller.clear()
        for units in self.to_buyer:
            self.buyer.receive_delivery(units)
        self.to_buyer.clear()
        last_index, delivered, increments = self.seller.resume()
        resend = self.buyer.resume(last_index, delivered, increments)
        if isinstance(resend, bytes):
            self.to_seller.append((-self.invoices[resend][2], resend))
        elif resend is not None:
            self.to_seller.append(resend)

    @precondition(lambda self: self.open() and not self.buyer.stopped)
    @rule()
    def buyer_stops(self) -> None:
        self.buyer.stop()
        self.stop_bound = self.buyer.paid_units
        assert self.stop_bound <= self.buyer.delivered_units + self.step * self.tariff.tick_units

    # -- misbehaviour: refused, state unchanged ------------------------------------------------

    @precondition(lambda self: self.open() and self.buyer.walker is None and self.seller.increments)
    @rule(early=st.booleans(), ticks=st.integers(1, 6))
    def buyer_cheats_with_increments(self, early: bool, ticks: int) -> None:
        s = self.seller
        if early:  # a new increment before the paid units were delivered
            assume(s.grant() > 0)
            payment_hash = os.urandom(32)
        else:  # the same paid invoice credited twice
            payment_hash = s.increments[-1][0]
        before = snapshot(s)
        with pytest.raises(RemoteProtocolError):
            s.receive_increment(payment_hash, ticks)
        assert snapshot(s) == before

    @precondition(lambda self: self.open() and self.buyer.walker is not None)
    @rule(kind=st.sampled_from(["forged", "replayed", "skipped", "early"]), junk=st.binary(min_size=32, max_size=32))
    def buyer_cheats(self, kind: str, junk: bytes) -> None:
        s = self.seller
        if kind == "forged":
            index, link = s.last_index + 1, junk
        elif kind == "replayed":
            assume(s.paid_ticks > 0)
            index, link = s.last_index, s.last_link
        elif kind == "skipped":
            index, link = s.last_index + 2, junk
        else:  # a genuine next link, sent before the paid units were delivered
            assume(s.grant() > 0 and not self.to_seller and self.buyer.last_index == s.last_index)
            walker = ChainWalker.from_tip(b"\x07" * 32, self.tariff.max_ticks + 3)
            index = s.last_index + 1
            assume(s.paid_ticks < self.tariff.max_ticks)
            link = walker.link(index)
        before = snapshot(s)
        with pytest.raises(RemoteProtocolError):
            s.receive_payment(index, link)
        assert snapshot(s) == before

    @precondition(open)
    @rule(extra=st.integers(1, 5))
    def meter_overreports(self, extra: int) -> None:
        before = snapshot(self.seller)
        with pytest.raises(UsageError):
            self.seller.delivered(self.seller.paid_units - self.seller.delivered_units + extra)
        assert snapshot(self.seller) == before

    @precondition(open)
    @rule(extra=st.integers(1, 5))
    def seller_claims_too_much(self, extra: int) -> None:
        before = snapshot(self.buyer)
        in_flight = sum(self.to_buyer)
        with pytest.raises(RemoteProtocolError):
            self.buyer.receive_delivery(self.buyer.paid_units - self.buyer.delivered_units - in_flight + extra
                                        + in_flight)
        assert snapshot(self.buyer) == before

    # -- the end -----------------------------------------------------------------------------

    @precondition(open)
    @rule()
    def close(self) -> None:
        if self.buyer.status is StreamStatus.PAUSED:
            self.reconnect()
        while self.to_seller:
            self.seller_receives()
        while self.to_buyer:
            self.buyer_receives()
        signed = sign_statement(self.seller.close(now=1_700_000_000), SELLER_KEY)
        self.buyer.close()
        receipt = self.buyer.accept_statement(signed, tuple((i, p) for i, p, _ in self.invoices.values()))
        checked = recompute(receipt)
        assert checked.consistent, checked.problems
        assert checked.paid_ticks == self.buyer.paid_ticks == self.seller.paid_ticks
        assert checked.unserved_msat <= self.step * self.tariff.tick_msat
        self.receipt_checked = True

    @precondition(lambda self: not self.open())
    @rule(junk=st.binary(min_size=32, max_size=32))
    def closed_stream_moves_no_more(self, junk: bytes) -> None:
        assert self.buyer.next_payment() is None
        assert self.seller.grant() == 0
        with pytest.raises(RemoteProtocolError, match="closed"):
            self.seller.receive_payment(self.seller.last_index + 1, junk)
        with pytest.raises(RemoteProtocolError, match="closed"):
            self.buyer.receive_delivery(1)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def seller_never_delivers_unpaid(self) -> None:
        assert self.seller.delivered_units <= self.seller.paid_units

    @invariant()
    def buyer_never_more_than_one_tick_ahead(self) -> None:
        tick = self.step * self.tariff.tick_units  # one increment without an allowance
        assert self.buyer.paid_units - self.buyer.delivered_units <= tick
        assert self.buyer.paid_units - self.seller.delivered_units <= tick  # what really was delivered

    @invariant()
    def prepayment_within_one_window(self) -> None:
        assert 0 <= self.buyer.prepaid_ticks <= self.tariff.window_ticks
        assert self.buyer.paid_msat <= self.buyer.max_msat

    @invariant()
    def seller_stops_within_one_tick_of_the_last_payment(self) -> None:
        if self.stop_bound is not None:
            assert self.seller.delivered_units <= self.stop_bound
            assert self.buyer.paid_units == self.stop_bound  # no link after stopping

    @invariant()
    def seller_counts_only_links_the_buyer_revealed(self) -> None:
        assert self.seller.paid_ticks <= self.buyer.paid_ticks <= self.seller.paid_ticks + self.step


StreamInterleavings.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None,
                                                 suppress_health_check=[HealthCheck.filter_too_much])
test_interleavings = StreamInterleavings.TestCase


def run_honestly(buyer: BuyerStream, seller: SellerStream) -> None:
    while True:
        if buyer.may_fund(1):
            buyer.funded(min(t for t in range(1, buyer.tariff.window_ticks + 1) if buyer.may_fund(t)))
        payment = buyer.next_payment()
        if payment is None:
            return
        seller.receive_payment(*payment)
        units = seller.grant()
        seller.delivered(units)
        buyer.receive_delivery(units)


def test_an_honest_stream_delivers_exactly_the_budget() -> None:
    tariff = Tariff("Wh", 3, 100, 10_000, window_ticks=4)
    buyer, seller = pair(tariff, max_msat=7 * tariff.tick_msat + 1)  # 7 ticks and a bit: the bit buys nothing
    run_honestly(buyer, seller)
    assert seller.delivered_units == buyer.delivered_units == 700
    assert buyer.paid_msat == 7 * 300 == 2100
    receipt = buyer.accept_statement(sign_statement(seller.close(now=1), SELLER_KEY, os.urandom(32)))
    assert recompute(receipt).to_json()["paid_msat"] == 2100


def test_the_tariff_maximum_is_a_boundary_n_ok_n_plus_1_refused() -> None:
    tariff = Tariff("litre", 5, 1, 3, window_ticks=10)
    buyer, seller = pair(tariff, max_msat=10**6)
    run_honestly(buyer, seller)
    assert seller.paid_ticks == 3 and seller.delivered_units == 3  # N ok
    walker = ChainWalker.from_tip(b"\x07" * 32, tariff.max_ticks + 3)
    with pytest.raises(RemoteProtocolError, match="max_units"):  # N+1 refused
        seller.receive_payment(4, walker.link(4))


def test_the_window_is_a_boundary() -> None:
    tariff = Tariff("s", 1, 1, 100, window_ticks=5)
    buyer, _ = pair(tariff, max_msat=100)
    assert buyer.may_fund(5) and not buyer.may_fund(6)
    buyer.funded(5)
    with pytest.raises(UsageError, match="one window"):
        buyer.funded(1)


def test_a_statement_that_understates_the_delivery_is_refused_by_the_buyer() -> None:
    tariff = Tariff("MB", 2, 10, 100, window_ticks=3)
    buyer, seller = pair(tariff, max_msat=10**6)
    run_honestly(buyer, seller)
    seller.delivered_units -= 1  # a seller that signs fewer units than it reported delivering
    with pytest.raises(StatementError, match="delivered_units"):
        buyer.accept_statement(sign_statement(seller.close(now=1), SELLER_KEY))
