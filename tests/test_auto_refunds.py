"""Unused allowance credit refunded automatically through the payer's return path (issue 15, part 3).

Real nodes on loopback TCP in a line A - B - C with SQLite stores: A buys an allowance from the
seller C (its payment carries a blinded return path introduced by B), spends part of it, and the
allowance closes (by A, by expiry); C's :class:`AutoRefunds` pays the unused calls back through
that path, once, even across a restart of C, and C never learns A's node id.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from lightspeed.micro.auto_refund import VIA_RETURN_PATH, AutoRefunds, AutoRefundView
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.lightning import NodePayee, NodePayer, NodeReturnPaths
from lightspeed.micro.server import AllowanceServer, CallRefused, ServerPolicy
from lightspeed.micro.store import RefundStatus
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import AllowanceTerms, Price
from lightspeed.micro.token import AllowanceRequest, Token
from lightspeed.node.node import Node
from tests.support.network import Network, create_network, restart_from_disk, until
from tests.test_onionmsg_node import _announce

SAT = 1_000_000
PUSH = 500_000_000
PRICE = Price(100, 1)  # 100 msat a call


async def _line(datadir: Path) -> Network:
    net = await create_network(3, [(0, 1, 2 * SAT, PUSH), (1, 2, 2 * SAT, PUSH)], datadir=datadir)
    _announce(net)
    return net


def _server(seller: Node, store: SqliteAllowanceStore, clock: list[float] | None = None,
            ttl: int = 3600) -> AllowanceServer:
    policy = ServerPolicy(PRICE, ttl_seconds=ttl)
    extra = {"clock": lambda: clock[0]} if clock is not None else {}
    return AllowanceServer(store, NodePayee(seller), seller.node_id, policy, payer=NodePayer(seller),
                           auto_refunds=AutoRefunds(store, NodeReturnPaths(seller)), **extra)


@dataclass
class _Bought:
    terms: AllowanceTerms
    walkers: list[ChainWalker]

    def token(self, lane: int, index: int) -> Token:
        return Token(self.terms.allowance_id, lane, index, self.walkers[lane].link(index))


async def _buy(server: AllowanceServer, payer: NodePayer, lanes: int = 2, per_lane: int = 100) -> _Bought:
    tips = [lane_tip(os.urandom(32), lane) for lane in range(lanes)]
    terms = await server.create(AllowanceRequest(per_lane, tuple(anchor(t, per_lane) for t in tips)))
    await payer.pay(terms.invoice)
    return _Bought(terms, [ChainWalker.from_tip(t, per_lane) for t in tips])


def _received(node: Node) -> int:
    return sum(i.received_msat for i in node.store.invoices() if i.status == "paid")


def _no_payer_id(payer: Node, seller_dir: Path, store_file: Path, log_lines: list[str]) -> None:
    """The seller's node files, its allowance store and its log never hold the payer's node id."""
    secret = (payer.node_id, payer.node_id.hex().encode())
    files = [f.read_bytes() for f in seller_dir.rglob("*") if f.is_file()]
    files += [f.read_bytes() for f in store_file.parent.glob(store_file.name + "*")]
    assert files and not any(s in blob for blob in files for s in secret)
    assert not any(payer.node_id.hex() in line for line in log_lines)


def test_an_allowance_closed_early_refunds_its_unused_calls_to_an_anonymous_payer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        net = await _line(tmp_path)
        a, c = net.nodes[0], net.nodes[2]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server = _server(c, store)
        try:
            bought = await _buy(server, NodePayer(a, return_path=True))
            assert c.store.return_path(bought.terms.payment_hash) is not None  # carried with the payment
            await server.spend(bought.token(0, 30))  # 30 of the 200 calls
            before = _received(a)

            due = await server.close(bought.token(1, 1))
            assert due == 170 * 100
            started = await store.refund(bought.terms.allowance_id)  # the close started the refund itself
            assert started is not None and started.invoice == VIA_RETURN_PATH and started.amount_msat == 17_000
            view = await server.auto_refund(bought.terms.allowance_id, wait=30)
            assert view is not None and view.status == "paid", view
            assert view.refunded_msat == 17_000
            await until(lambda: _received(a) == before + 17_000)
            status = await server.status(bought.terms.allowance_id)
            assert (status["refund"], status["refund_via"], status["refunded_msat"]) == ("paid", "return_path", 17_000)

            # Closing again, the sweeper, a claim with an invoice: nothing is paid twice.
            await server.resolve_refunds()
            again = await server.auto_refund(bought.terms.allowance_id, wait=5)
            assert again is not None and again.status == "paid"
            claim_invoice = a.create_invoice(17_000, "refund me again").encode()
            answer = await server.refund(bought.token(1, 2), claim_invoice)
            assert answer.status == "paid" and answer.invoice == VIA_RETURN_PATH
            await asyncio.sleep(0.5)
            assert _received(a) == before + 17_000
            paid_by_c = [p.amount_msat for p in c.store.payments() if p.status == "succeeded"]
            assert paid_by_c == [17_000]
        finally:
            await server.auto_refunds.aclose()  # type: ignore[union-attr]
            await store.aclose()
            await net.stop()
        lines = [r.getMessage() for r in caplog.records]
        _no_payer_id(a, tmp_path / "node2", tmp_path / "allowances.sqlite", lines)

    asyncio.run(scenario())


def test_an_expired_allowance_refunds_its_unused_calls(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        a, c = net.nodes[0], net.nodes[2]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        import time

        clock = [time.time()]
        server = _server(c, store, clock, ttl=60)
        try:
            bought = await _buy(server, NodePayer(a, return_path=True), lanes=1, per_lane=50)
            await server.spend(bought.token(0, 20))
            before = _received(a)
            assert await server.expire_due() == 0  # not yet
            clock[0] += 61
            with pytest.raises(CallRefused, match="expired"):
                await server.spend(bought.token(0, 21))
            assert await server.expire_due() == 1
            started = await store.refund(bought.terms.allowance_id)  # the sweep started the refund itself
            assert started is not None and started.invoice == VIA_RETURN_PATH
            view = await server.auto_refund(bought.terms.allowance_id, wait=30)
            assert view is not None and (view.status, view.refunded_msat) == ("paid", 30 * 100)
            await until(lambda: _received(a) == before + 3_000)
        finally:
            await server.auto_refunds.aclose()  # type: ignore[union-attr]
            await store.aclose()
            await net.stop()

    asyncio.run(scenario())


def test_a_seller_restart_between_close_and_refund_refunds_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        a, c = net.nodes[0], net.nodes[2]
        store_path = tmp_path / "allowances.sqlite"
        store = SqliteAllowanceStore(store_path)
        server = _server(c, store)
        payer = NodePayer(a, return_path=True)
        try:
            # 1. Stopped right after the close: the refund is recorded in flight, nothing was paid.
            first = await _buy(server, payer, lanes=1, per_lane=50)
            await server.spend(first.token(0, 10))
            auto = server.auto_refunds
            assert auto is not None
            server.auto_refunds = None  # the close commits, the process stops before the refund starts
            await server.close(first.token(0, 11))
            server.auto_refunds = auto
            claimed = await auto.start(first.terms.allowance_id, 40 * 100, [first.terms.payment_hash])
            await auto.aclose()  # killed before the payment started
            assert claimed.status == "in_flight"
            record = await store.refund(first.terms.allowance_id)
            assert record is not None and record.status is RefundStatus.IN_FLIGHT

            # 2. Stopped after the refund was paid, before its record said so.
            second = await _buy(server, payer, lanes=1, per_lane=50)
            await server.spend(second.token(0, 45))
            server.auto_refunds = None
            await server.close(second.token(0, 46))
            server.auto_refunds = auto
            before = _received(a)
            assert await store.set_refund(second.terms.allowance_id, None, replace(
                record, amount_msat=500, payment_hash=second.terms.payment_hash))
            await NodeReturnPaths(c).refund(second.terms.payment_hash, 500)  # paid; the record never moved
            await until(lambda: _received(a) == before + 500)
            await store.aclose()

            c = await restart_from_disk(net, 2)
            a = net.nodes[0]
            await until(lambda: all(n.channel_is_ready(ch) for n in (a, c) for ch in n.channels), 20)
            store = SqliteAllowanceStore(store_path)
            server = _server(c, store)
            assert await server.resume_auto_refunds() == 2
            for bought, amount in ((first, 4_000), (second, 500)):
                view = await server.auto_refund(bought.terms.allowance_id, wait=30)
                assert view is not None and (view.status, view.refunded_msat) == ("paid", amount), view
            await until(lambda: _received(a) == before + 500 + 4_000)
            assert await server.resume_auto_refunds() == 0
            await asyncio.sleep(0.5)
            assert _received(a) == before + 4_500  # the 500 once, the 4,000 once
            assert sorted(p.amount_msat for p in c.store.payments() if p.status == "succeeded") == [500, 4_000]
        finally:
            if server.auto_refunds is not None:
                await server.auto_refunds.aclose()
            await store.aclose()
            await net.stop()

    asyncio.run(scenario())


def test_a_payer_without_a_return_path_is_reported_not_refundable(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        a, c = net.nodes[0], net.nodes[2]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server = _server(c, store)
        try:
            bought = await _buy(server, NodePayer(a), lanes=1, per_lane=50)  # no return path
            await server.spend(bought.token(0, 5))
            assert await server.close(bought.token(0, 6)) == 4_500
            view = await server.auto_refund(bought.terms.allowance_id, wait=5)
            assert view is not None and view.status == "not_refundable" and view.amount_msat == 4_500
            assert "no return path" in view.reason
            assert await store.refund(bought.terms.allowance_id) is None  # still claimable with an invoice
            assert (await server.status(bought.terms.allowance_id))["refund"] == "due"
            claimed = await server.refund(bought.token(0, 7), a.create_invoice(4_500, "refund").encode())
            assert claimed.status == "paid"
        finally:
            await server.auto_refunds.aclose()  # type: ignore[union-attr]
            await store.aclose()
            await net.stop()

    asyncio.run(scenario())


async def _closed_and_refunded(server: AllowanceServer, allowance_id: bytes) -> AutoRefundView | None:
    """The stream's close hook runs as a task after the statement: wait for its close, then the refund."""
    for _ in range(200):
        if (await server.status(allowance_id))["status"] == "closed":
            return await server.auto_refund(allowance_id, wait=30)
        await asyncio.sleep(0.05)
    raise AssertionError("the stream's allowance was never closed")


def test_a_stream_cut_mid_way_refunds_the_credit_it_did_not_deliver(tmp_path: Path) -> None:
    """Two streams to an anonymous buyer: one the buyer cuts (stops paying), one whose meter stops
    with a paid tick half delivered. Each one's unused prepayment, and the paid units never
    delivered, come back through the return path its prepayment carried."""
    from lightspeed.cli.stream_example import serve_asgi, stream_seller
    from lightspeed.stream.asgi import MeterStopped, StreamMiddleware
    from lightspeed.stream.client import BuyPolicy, StreamBuyer
    from lightspeed.stream.machine import SellerStream
    from lightspeed.stream.tariff import Tariff

    tariff = Tariff("Wh", msat_per_unit=100, tick_units=2, max_units=1_000, window_ticks=20)  # 200 msat a tick
    stop_at: list[int] = [10**9]

    async def meter(stream: SellerStream, grant: int) -> int:
        if stream.delivered_units >= stop_at[0]:
            raise MeterStopped("the tank is full")
        await asyncio.sleep(0.005)
        return min(grant, 1)

    async def not_found(scope: object, receive: object, send: object) -> None:
        raise AssertionError("only the stream path is used")

    async def scenario() -> None:
        net = await _line(tmp_path)
        a, c = net.nodes[0], net.nodes[2]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        auto = AutoRefunds(store, NodeReturnPaths(c))
        # every next batch offered at half a batch left (no spread): the cuts below come before it
        seller = stream_seller(store, NodePayee(c), c.node_id, c.privkey, tariff=tariff, meter=meter,
                               payer=NodePayer(c), auto_refunds=auto, batch_offer_spread=0.0)
        server = await serve_asgi(StreamMiddleware(not_found, {"/charge": seller}))
        payer = NodePayer(a, return_path=True)
        try:
            # The buyer cuts payment after 6 units (3 ticks); it prepaid 10 ticks (half a window).
            before = _received(a)
            buyer = StreamBuyer(server.url + "/charge", payer, BuyPolicy(max_msat=20_000))
            receipt = await buyer.run(stop_after_units=6)
            statement = receipt.signed.statement
            assert statement.delivered_units == 6 and statement.last_index == 3
            allowance_id = statement.allowance_id
            view = await _closed_and_refunded(seller.allowances, allowance_id)
            assert view is not None and (view.status, view.refunded_msat) == ("paid", 7 * 200), view
            await until(lambda: _received(a) == before + 1_400)

            # The meter stops with 5 of the 6 units paid for delivered: the 6th unit is refunded too.
            stop_at[0] = 5
            before = _received(a)
            cut = StreamBuyer(server.url + "/charge", payer, BuyPolicy(max_msat=20_000))
            receipt = await cut.run()
            statement = receipt.signed.statement
            assert cut.ended is not None and statement.delivered_units == 5 and statement.last_index == 3
            view = await _closed_and_refunded(seller.allowances, statement.allowance_id)
            assert view is not None and (view.status, view.refunded_msat) == ("paid", 7 * 200 + 100), view
            await until(lambda: _received(a) == before + 1_500)
            status = await seller.allowances.status(statement.allowance_id)
            assert (status["status"], status["refund"], status["refund_msat"]) == ("closed", "paid", 1_500)
        finally:
            await server.stop()
            await auto.aclose()
            await store.aclose()
            await net.stop()

    asyncio.run(scenario())


def test_a_batched_allowance_is_refunded_across_the_return_paths_of_its_batches(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        a, c = net.nodes[0], net.nodes[2]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server = _server(c, store)
        payer = NodePayer(a, return_path=True)
        try:
            tip = lane_tip(os.urandom(32), 0)
            terms = await server.create(AllowanceRequest(100, (anchor(tip, 100),), batch_calls=50))
            await payer.pay(terms.invoice)  # the first 50 calls: 5,000 msat
            bought = _Bought(terms, [ChainWalker.from_tip(tip, 100)])
            receipt = await server.spend(bought.token(0, 30))
            assert receipt.next_invoice is not None  # the next batch, offered early
            await payer.pay(receipt.next_invoice)  # 50 more: 5,000 msat, with a return path of its own
            before = _received(a)
            # the close counts the batch paid and not yet seen: 100 calls paid, 30 spent
            assert await server.close(bought.token(0, 31)) == 70 * 100
            view = await server.auto_refund(terms.allowance_id, wait=30)
            assert view is not None and (view.status, view.refunded_msat) == ("paid", 7_000), view
            await until(lambda: _received(a) == before + 7_000)
            # no payment refunded beyond what it brought in: the later batch's 5,000, then 2,000 of the first
            assert sorted(p.amount_msat for p in c.store.payments() if p.status == "succeeded") == [2_000, 5_000]
        finally:
            await server.auto_refunds.aclose()  # type: ignore[union-attr]
            await store.aclose()
            await net.stop()

    asyncio.run(scenario())


def test_a_batch_paid_after_the_close_is_refunded_too_once_the_sweep_sees_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        net = await _line(tmp_path)
        a, c = net.nodes[0], net.nodes[2]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server = _server(c, store)
        payer = NodePayer(a, return_path=True)
        try:
            tip = lane_tip(os.urandom(32), 0)
            terms = await server.create(AllowanceRequest(100, (anchor(tip, 100),), batch_calls=50))
            await payer.pay(terms.invoice)
            bought = _Bought(terms, [ChainWalker.from_tip(tip, 100)])
            offered = (await server.spend(bought.token(0, 30))).next_invoice
            assert offered is not None
            assert await server.close(bought.token(0, 31)) == 20 * 100  # the offered batch is not paid (yet)
            assert await server.auto_refund(terms.allowance_id) is None  # it could still be: wait
            assert await store.refund(terms.allowance_id) is None
            before = _received(a)
            await payer.pay(offered)  # paid after the close: its 50 calls are the client's too
            await server.resolve_refunds()  # the sweep starts the refund, the late batch counted
            started = await store.refund(terms.allowance_id)
            assert started is not None and started.amount_msat == 7_000
            view = await server.auto_refund(terms.allowance_id, wait=30)
            assert view is not None and (view.status, view.amount_msat, view.refunded_msat) == ("paid", 7_000, 7_000)
            await until(lambda: _received(a) == before + 7_000)
        finally:
            await server.auto_refunds.aclose()  # type: ignore[union-attr]
            await store.aclose()
            await net.stop()

    asyncio.run(scenario())


def test_a_superseded_batch_seen_paid_after_the_refund_is_paid_back_once_by_its_own_node(tmp_path: Path) -> None:
    """Two seller processes share the allowance store, each with its own node (C, D), the buyer A
    behind the hub B. A pays C's second batch; C goes away before seeing it; D supersedes it,
    invoices the batch itself (A pays that too), serves, closes and refunds what it sees through
    its own batch's return path. C comes back: the refund is recorded already, so C's payment is
    owed apart and C pays it back through that payment's return path, once."""
    async def scenario() -> None:
        net = await create_network(4, [(0, 1, 2 * SAT, PUSH), (1, 2, 2 * SAT, PUSH), (1, 3, 2 * SAT, PUSH)],
                                   datadir=tmp_path)
        _announce(net)
        a, c, d = net.nodes[0], net.nodes[2], net.nodes[3]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server_c, server_d = _server(c, store), _server(d, store)
        payer = NodePayer(a, return_path=True)
        back = None
        try:
            tip = lane_tip(os.urandom(32), 0)
            terms = await server_c.create(AllowanceRequest(100, (anchor(tip, 100),), batch_calls=50))
            await payer.pay(terms.invoice)  # calls 1-50 to C: 5,000 msat
            bought = _Bought(terms, [ChainWalker.from_tip(tip, 100)])
            offered_by_c = (await server_c.spend(bought.token(0, 30))).next_invoice
            assert offered_by_c is not None
            await payer.pay(offered_by_c)  # calls 51-100 to C, which goes away before it sees it
            await server_d.take_over_batch(terms.allowance_id)  # D cannot see it paid: superseded
            offered_by_d = (await server_d.spend(bought.token(0, 31))).next_invoice
            assert offered_by_d is not None and offered_by_d != offered_by_c
            await payer.pay(offered_by_d)  # the same calls again, to D: 5,000 msat
            await server_d.spend(bought.token(0, 60))
            before = _received(a)
            assert await server_d.close(bought.token(0, 61)) == 40 * 100  # what D sees: 100 paid, 60 spent
            view = await server_d.auto_refund(terms.allowance_id, wait=30)
            assert view is not None and (view.status, view.refunded_msat) == ("paid", 4_000), view
            await until(lambda: _received(a) == before + 4_000)

            back = _server(c, store)  # C's process is back, with its node: it sees its payment
            status = await back.status(terms.allowance_id)
            assert (status["refund"], status["refund_msat"], status["late_refund_msat"]) == ("paid", 4_000, 5_000)
            await until(lambda: _received(a) == before + 9_000, timeout=30)  # through C's batch's return path
            await until(lambda: not back._owed_tasks)
            for server in (back, server_d):  # touched again, anywhere: nothing more is paid
                status = await server.status(terms.allowance_id)
                assert (status["late_refund_msat"], status["late_refunded_msat"]) == (5_000, 5_000)
                assert await server.refund_owed(terms.allowance_id) == 0
            await back.resolve_refunds()
            await asyncio.sleep(0.5)
            assert _received(a) == before + 9_000  # 15,000 paid = 6,000 spent + 4,000 + 5,000 back
            assert [p.amount_msat for p in c.store.payments() if p.status == "succeeded"] == [5_000]
            assert [p.amount_msat for p in d.store.payments() if p.status == "succeeded"] == [4_000]
        finally:
            for server in (server_c, server_d, back):
                if server is not None:
                    await server.auto_refunds.aclose()  # type: ignore[union-attr]
            await store.aclose()
            await net.stop()

    asyncio.run(scenario())
