"""Refunds are paid exactly once: held payments, failures, crashes, racing instances, late payments.

The refund payer here behaves as a node does (``NodePayer`` over ``Node``; the real thing is
exercised in test_micro_safety_refund_e2e.py): a payment can be held by the payee past the
payer's timeout, released or failed later, and a payment hash is never paid twice. The stores
are the real ones (memory, SQLite, Redis, PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from lightspeed.errors import PaymentError
from lightspeed.invoice.decode import decode
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.refunds import PaymentState, PaymentStatus
from lightspeed.micro.server import AllowanceServer, CallRefused, ServerPolicy
from lightspeed.micro.store import AllowanceState, AllowanceStore, Refund, RefundStatus, Status
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.terms import AllowanceTerms, Price
from lightspeed.micro.token import AllowanceRequest, Token
from tests.support.ledger import Ledger
from tests.test_micro_stores import Factory, every_store, opened, postgres_dsn, redis_url

__all__ = ["every_store", "postgres_dsn", "redis_url"]  # fixtures shared with the store suite

PRICE = Price(7)


@dataclass
class HoldingPayer:
    """A payer node whose payee may hold a payment: ``pay_once`` returns only once released."""

    ledger: Ledger
    timeout: float = 0.05
    hold: bool = True
    states: dict[bytes, PaymentStatus] = field(default_factory=dict)
    calls: list[bytes] = field(default_factory=list)  # payment hashes pay_once was asked to pay
    issued: list[str] = field(default_factory=list)  # the client's refund invoices
    _done: dict[bytes, asyncio.Event] = field(default_factory=dict)

    async def pay_once(self, invoice: str) -> bytes:
        payment_hash = decode(invoice).payment_hash
        self.calls.append(payment_hash)
        if payment_hash in self.states:
            raise PaymentError("a payment to this hash was started before")
        self.states[payment_hash] = PaymentStatus(PaymentState.PENDING)
        if self.hold:
            done = self._done.setdefault(payment_hash, asyncio.Event())
            try:
                await asyncio.wait_for(done.wait(), self.timeout)
            except TimeoutError:
                raise PaymentError("the payment is still pending") from None
        else:
            self.release(payment_hash)
        state = self.states[payment_hash]
        if state.state is not PaymentState.SUCCEEDED:
            raise PaymentError(state.reason)
        return state.preimage

    async def payment_status(self, payment_hash: bytes) -> PaymentStatus:
        return self.states.get(payment_hash, PaymentStatus(PaymentState.UNKNOWN))

    def release(self, payment_hash: bytes) -> None:
        """The payee settles: the money has moved."""
        self.ledger.pay_sync(self._invoices()[payment_hash])
        self.states[payment_hash] = PaymentStatus(PaymentState.SUCCEEDED, self.ledger.preimages[payment_hash])
        self._done.setdefault(payment_hash, asyncio.Event()).set()

    def fail(self, payment_hash: bytes) -> None:
        """The payee refuses and every HTLC is gone: nothing can settle it any more."""
        self.states[payment_hash] = PaymentStatus(PaymentState.FAILED, reason="the payee refused")
        self._done.setdefault(payment_hash, asyncio.Event()).set()

    def _invoices(self) -> dict[bytes, str]:
        return {decode(text).payment_hash: text for text in self.issued}

    @property
    def paid_msat(self) -> int:
        return sum(self.ledger.paid.get(h, 0) for h in self.states
                   if self.states[h].state is PaymentState.SUCCEEDED)


class Scene:
    """One server node (ledger), one client node on the same settlement, instances on a store."""

    def __init__(self, clock: list[float] | None = None, hold: bool = True, price: Price = PRICE,
                 **policy: object) -> None:
        self.price = price
        self.ledger = Ledger()
        self.payer = HoldingPayer(self.ledger, hold=hold)
        self.clock = clock if clock is not None else [time.time()]
        self.policy = policy

    def server(self, store: AllowanceStore) -> AllowanceServer:
        return AllowanceServer(store, self.ledger, self.ledger.node_id,
                               ServerPolicy(self.price, **self.policy),  # type: ignore[arg-type]
                               payer=self.payer, clock=lambda: self.clock[0])

    async def invoice(self, amount_msat: int) -> str:
        text = (await self.ledger.create_client_invoice(amount_msat, "refund", 86_400)).encode()
        self.payer.issued.append(text)
        return text


class Buyer:
    def __init__(self, per_lane: int = 100, batch: int = 0) -> None:
        self.tip = lane_tip(os.urandom(32), 0)
        self.walker = ChainWalker.from_tip(self.tip, per_lane)
        self.request = AllowanceRequest(per_lane, (anchor(self.tip, per_lane),), batch)
        self.terms: AllowanceTerms | None = None
        self.next = 1
        self.tokens: dict[int, Token] = {}

    async def buy(self, server: AllowanceServer, pay: bool = True) -> Buyer:
        self.terms = await server.create(self.request)
        if pay:
            assert isinstance(server.payee, Ledger)
            server.payee.pay_sync(self.terms.invoice)
        return self

    @property
    def id(self) -> bytes:
        assert self.terms is not None
        return self.terms.allowance_id

    def token(self, index: int | None = None) -> Token:
        """The token of ``index`` (default: the next unused one); the walker gives a link once."""
        index = self.next if index is None else index
        self.next = max(self.next, index + 1)
        if index not in self.tokens:
            self.tokens[index] = Token(self.id, 0, index, self.walker.link(index))
        return self.tokens[index]


def run(factory: Factory, scenario: Callable[[AllowanceStore], Awaitable[None]]) -> None:
    async def main() -> None:
        async with opened(factory) as store:
            await scenario(store)

    asyncio.run(main())


def refused(code: str) -> pytest.RaisesContext[CallRefused]:
    return pytest.raises(CallRefused, match=f"^{code}:")


# ------------------------------------------------------------------ the attack


def test_a_refund_pending_at_the_timeout_stays_in_flight_and_no_second_invoice_is_paid(
        every_store: Factory) -> None:
    """The issue's attack: the payee holds the refund past the payer's timeout, then asks
    again (here through a second server instance) with a second invoice."""

    async def main() -> None:
        scene = Scene()
        async with opened(every_store) as store_a, opened(every_store) as store_b:
            server, other = scene.server(store_a), scene.server(store_b)
            buyer = await Buyer().buy(server)
            await server.spend(buyer.token(30))
            due = await server.close(buyer.token())
            assert due == 7 * 70
            first, second = await scene.invoice(due), await scene.invoice(due)

            held = await server.refund(buyer.token(), first)  # the payee holds it past the timeout
            assert (held.status, held.invoice) == ("in_flight", first)
            for instance in (server, other):
                again = await instance.refund(buyer.token(), second)
                assert (again.status, again.invoice) == ("in_flight", first)
            assert set(scene.payer.calls) == {decode(first).payment_hash}  # never the second
            status = await other.status(buyer.id)
            assert (status["refund"], status["refund_invoice"]) == ("in_flight", first)

            scene.payer.release(decode(first).payment_hash)
            done = await other.refund(buyer.token(), second)
            assert (done.status, done.invoice, done.amount_msat) == ("paid", first, due)
            assert done.preimage == scene.ledger.preimages[decode(first).payment_hash]
            assert scene.ledger.payments.count(due) == 1 and scene.payer.paid_msat == due
            assert (await server.refund(buyer.token(), second)).status == "paid"
            assert set(scene.payer.calls) == {decode(first).payment_hash}

    asyncio.run(main())


def test_a_definitively_failed_refund_lets_exactly_one_new_invoice_be_paid(
        every_store: Factory) -> None:
    async def scenario(store: AllowanceStore) -> None:
        scene = Scene()
        server = scene.server(store)
        buyer = await Buyer().buy(server)
        due = await server.close(buyer.token())
        first, second, third = [await scene.invoice(due) for _ in range(3)]
        assert (await server.refund(buyer.token(), first)).status == "in_flight"
        scene.payer.fail(decode(first).payment_hash)  # every HTLC of it is gone
        status = await server.status(buyer.id)
        assert (status["refund"], status["refund_reason"]) == ("failed", "the payee refused")
        retried = await server.refund(buyer.token(), second)  # a new attempt, to the new invoice
        assert (retried.status, retried.invoice) == ("in_flight", second)
        assert (await server.refund(buyer.token(), third)).invoice == second
        scene.payer.release(decode(second).payment_hash)
        paid = await server.refund(buyer.token(), third)
        assert (paid.status, paid.invoice) == ("paid", second)
        assert [decode(i).payment_hash for i in (first, second)] == scene.payer.calls
        record = await store.refund(buyer.id)
        assert record is not None and record.attempt == 2 and scene.payer.paid_msat == due

    run(every_store, scenario)


def test_refund_requests_racing_on_two_instances_pay_once(every_store: Factory) -> None:
    """Sibling: two instances (two store connections) get refund requests with different
    invoices at the same moment, for ten allowances: each refund is paid once."""

    async def main() -> None:
        scene = Scene(hold=False)
        async with opened(every_store) as store_a, opened(every_store) as store_b:
            first, second = scene.server(store_a), scene.server(store_b)
            for round_ in range(10):
                buyer = await Buyer().buy(first)
                await second.spend(buyer.token(5))
                due = await first.close(buyer.token())
                invoices = [await scene.invoice(due) for _ in range(4)]
                views = await asyncio.gather(*(
                    server.refund(buyer.token(), invoice)
                    for server, invoice in zip((first, second, first, second), invoices, strict=True)))
                paid_to = {view.invoice for view in views}
                assert len(paid_to) == 1 and all(view.status == "paid" for view in views)
                # Paid once. (An instance that found the refund in flight before the winner
                # called the payer may ask to pay the same hash too: the payer refuses it.)
                assert scene.ledger.payments.count(7 * 95) == round_ + 1
            assert len(set(scene.payer.calls)) == 10

    asyncio.run(main())


def test_an_in_flight_refund_left_by_a_crash_is_paid_once_when_resolved(every_store: Factory) -> None:
    """The process stopped after recording the refund in flight, before paying it: after the
    restart two instances resolve it at once; the payer never heard of it, so it is paid, once."""

    async def main() -> None:
        scene = Scene(hold=False)
        async with opened(every_store) as store_a, opened(every_store) as store_b:
            crashed = scene.server(store_a)
            buyer = await Buyer().buy(crashed)
            await crashed.spend(buyer.token(5))
            due = await crashed.close(buyer.token())
            invoice = await scene.invoice(due)
            record = Refund(RefundStatus.IN_FLIGHT, 1, due, decode(invoice).payment_hash, invoice)
            assert await store_a.set_refund(buyer.id, None, record)  # then the process died

            after = [scene.server(store_a), scene.server(store_b)]  # cold caches
            ended = await asyncio.gather(*(server.resolve_refunds() for server in after))
            assert sorted(ended) in ([0, 1], [1, 1])  # the loser may still see it end
            assert scene.payer.calls.count(record.payment_hash) >= 1
            assert scene.ledger.payments.count(due) == 1
            final = await store_b.refund(buyer.id)
            assert final is not None and final.status is RefundStatus.PAID
            assert await after[0].resolve_refunds() == 0

    asyncio.run(main())


# ------------------------------------------------------------------ closing and amounts


def test_close_racing_spends_on_another_instance_refunds_exactly_the_unserved_calls(
        every_store: Factory) -> None:
    """Sibling: calls served on one instance while another closes: every paid call is either
    served or refunded, never both, never neither."""

    async def main() -> None:
        scene = Scene(hold=False)
        async with opened(every_store) as store_a, opened(every_store) as store_b:
            serving, closing = scene.server(store_a), scene.server(store_b)
            buyer = await Buyer(per_lane=200).buy(serving)
            tokens = [buyer.token(i) for i in range(1, 121)]
            close_token = buyer.token(150)

            async def spend_all() -> int:
                served = 0
                for token in tokens:
                    try:
                        await serving.spend(token)
                    except CallRefused as exc:
                        assert exc.code == "closed"
                        break
                    served += 1
                return served

            async def close_soon() -> int:
                await asyncio.sleep(0)
                return await closing.close(close_token)

            served, refund_msat = await asyncio.gather(spend_all(), close_soon())
            assert served + refund_msat // 7 == 200
            stored = await store_a.load(buyer.id)
            assert stored is not None and stored.state.spent == served
            view = await serving.refund(buyer.token(151), await scene.invoice(refund_msat))
            assert (view.status, view.amount_msat) == ("paid", refund_msat)

    asyncio.run(main())


def test_the_refund_amount_comes_from_the_store_not_a_stale_cache(every_store: Factory) -> None:
    """Sibling: instance A cached the allowance, B served more calls; A's refund counts them."""

    async def main() -> None:
        scene = Scene(hold=False)
        async with opened(every_store) as store_a, opened(every_store) as store_b:
            a, b = scene.server(store_a), scene.server(store_b)
            buyer = await Buyer().buy(a)
            await a.spend(buyer.token(10))  # A's cache: 10 spent
            await b.spend(buyer.token(60))  # B: 60
            assert await a.close(buyer.token()) == 7 * 40
            with refused("bad_request"):  # an invoice for the amount A's cache says is refused
                await a.refund(buyer.token(), await scene.invoice(7 * 90))
            view = await a.refund(buyer.token(), await scene.invoice(7 * 40))
            assert (view.status, view.amount_msat) == ("paid", 7 * 40)

    asyncio.run(main())


def test_an_unpaid_allowance_cannot_be_closed_so_paying_it_later_loses_nothing() -> None:
    """Sibling: closing before paying used to record a refund of 0; the invoice could still be
    paid afterwards and the client lost it. Now the close is refused until it is paid."""

    async def go() -> None:
        scene = Scene(hold=False)
        server = scene.server(MemoryAllowanceStore())
        buyer = await Buyer().buy(server, pay=False)
        with refused("unpaid"):
            await server.close(buyer.token())
        assert buyer.terms is not None
        scene.ledger.pay_sync(buyer.terms.invoice)  # paid after the attempt to close
        assert await server.close(buyer.token()) == 7 * 100

    asyncio.run(go())


def test_a_batch_invoice_paid_after_the_close_is_refunded_not_lost(every_store: Factory) -> None:
    """Sibling: a batched allowance offers the next batch's invoice early; the client pays it
    while (or after) the allowance closes. The refund waits for that invoice to be paid or
    to expire, and counts it if paid."""

    async def scenario(store: AllowanceStore) -> None:
        scene = Scene(hold=False)
        server = scene.server(store)
        buyer = await Buyer(per_lane=100, batch=10).buy(server)
        offered = None
        for _ in range(6):
            offered = (await server.spend(buyer.token())).next_invoice or offered
        assert offered is not None
        assert await server.close(buyer.token()) == 7 * 4  # 10 paid, 6 spent
        with refused("refund_not_ready") as caught:  # the offered invoice can still be paid
            await server.refund(buyer.token(), await scene.invoice(7 * 4))
        assert caught.value.retry_after is not None and caught.value.retry_after > 3000
        scene.ledger.pay_sync(offered)  # the client pays it after the close
        status = await server.status(buyer.id)
        assert status["paid_calls"] == 20 and status["refund_msat"] == 7 * 14
        view = await server.refund(buyer.token(), await scene.invoice(7 * 14))
        assert (view.status, view.amount_msat) == ("paid", 7 * 14)

    run(every_store, scenario)


def test_a_batch_invoice_never_paid_stops_holding_the_refund_once_expired() -> None:
    async def go() -> None:
        clock = [time.time()]
        scene = Scene(clock=clock, hold=False)
        server = scene.server(MemoryAllowanceStore())
        buyer = await Buyer(per_lane=100, batch=10).buy(server)
        for _ in range(6):
            await server.spend(buyer.token())
        await server.close(buyer.token())
        stored = await server.store.load(buyer.id)
        assert stored is not None
        until = json.loads(stored.state.extra)["late_until"]
        clock[0] = until + server.policy.unpaid_grace - 1  # one second before it is surely unpayable
        with refused("refund_not_ready") as caught:
            await server.refund(buyer.token(), await scene.invoice(7 * 4))
        assert caught.value.retry_after == 1
        clock[0] += 1
        view = await server.refund(buyer.token(), await scene.invoice(7 * 4))
        assert (view.status, view.amount_msat) == ("paid", 7 * 4)

    asyncio.run(go())


def test_a_refund_invoice_that_the_payer_would_refuse_is_refused_before_recording() -> None:
    """Recording an invoice the payer can never pay would leave the refund in flight forever."""

    async def go() -> None:
        scene = Scene(hold=False)
        server = scene.server(MemoryAllowanceStore())
        buyer = await Buyer().buy(server)
        due = await server.close(buyer.token())
        own = (await scene.ledger.create_invoice(due, "to ourselves", 3600)).encode()
        short = (await scene.ledger.create_client_invoice(due, "expiring", 30)).encode()
        for invoice, reason in ((own, "own node"), (short, "expires in less than"),
                                ("lnbc1garbage", "invoice")):
            with pytest.raises(CallRefused, match=reason):
                await server.refund(buyer.token(), invoice)
        assert await server.store.refund(buyer.id) is None and scene.payer.calls == []
        assert (await server.status(buyer.id))["refund"] == "due"

    asyncio.run(go())


def test_an_allowance_closed_with_less_than_one_msat_left_pays_nothing() -> None:
    async def go() -> None:
        scene = Scene(hold=False, price=Price(1, 2))
        server = scene.server(MemoryAllowanceStore())
        buyer = await Buyer(per_lane=10).buy(server)
        await server.spend(buyer.token(9))
        assert await server.close(buyer.token()) == 0  # one call at 1/2 msat: rounds down to 0
        view = await server.refund(buyer.token(10), "not even an invoice")  # closing spent no link
        assert (view.status, view.amount_msat) == ("none", 0) and scene.payer.calls == []
        assert (await server.status(buyer.id))["refund"] == "none"

    asyncio.run(go())


def test_status_of_a_legacy_paying_refund_is_never_paid_again() -> None:
    """A refund an earlier version marked ``paying`` in the allowance (no refund record) is
    refused, not paid a second time."""

    async def go() -> None:
        scene = Scene(hold=False)
        store = MemoryAllowanceStore()
        server = scene.server(store)
        buyer = await Buyer().buy(server)
        due = await server.close(buyer.token())
        stored = await store.load(buyer.id)
        assert stored is not None and stored.state.status is Status.CLOSED
        legacy = json.dumps({"refund": "paying", "invoice": "lnbcrt..."})
        assert await store.update_state(buyer.id, stored.state,
                                        AllowanceState(Status.CLOSED, stored.state.paid_calls, 0, legacy))
        with refused("refund_done"):
            await server.refund(buyer.token(), await scene.invoice(due))
        assert scene.payer.calls == []

    asyncio.run(go())
