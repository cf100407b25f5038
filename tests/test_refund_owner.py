"""A refund through return paths is paid by one node only, when seller processes share a store.

Two seller processes, each with its own node (C and D), share one SQLite allowance store; the
buyer A pays behind the hub B. A's allowance is paid partly to C (its first payment) and partly
to D (a batch D invoiced after serving the stream's next calls), each payment carrying a
return path. What a node has refunded is known only from its own durable per-payment totals, so
a node resuming another node's refund would see nothing sent and pay it again (through its own
batch's return path): the refund record names its owner, and only the owner goes on with it.
Real nodes over loopback TCP, real SQLite.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from pathlib import Path

import pytest

from lightspeed.invoice.decode import decode
from lightspeed.micro.auto_refund import VIA_RETURN_PATH
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.lightning import NodePayer, NodeReturnPaths
from lightspeed.micro.server import AllowanceServer, CallRefused
from lightspeed.micro.store import Refund, RefundStatus
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.token import AllowanceRequest
from lightspeed.node.node import Node
from tests.support.network import Network, create_network, until
from tests.test_auto_refunds import PUSH, SAT, _Bought, _received, _server
from tests.test_onionmsg_node import _announce

DUE = 4_000  # 100 calls paid (50 to C, 50 to D), 60 spent: 40 calls at 100 msat


async def _two_sellers(tmp_path: Path) -> Network:
    net = await create_network(4, [(0, 1, 2 * SAT, PUSH), (1, 2, 2 * SAT, PUSH), (1, 3, 2 * SAT, PUSH)],
                               datadir=tmp_path)
    _announce(net)
    return net


async def _closed_across_two_nodes(server_c: AllowanceServer, server_d: AllowanceServer,
                                   payer: NodePayer) -> _Bought:
    """An allowance paid 50 calls to C, then 50 to D (D served the calls that made the batch
    due), 60 spent, closed without starting its refund (as if the process stopped there)."""
    tip = lane_tip(os.urandom(32), 0)
    terms = await server_c.create(AllowanceRequest(100, (anchor(tip, 100),), batch_calls=50))
    await payer.pay(terms.invoice)
    bought = _Bought(terms, [ChainWalker.from_tip(tip, 100)])
    # not offered yet at C: 40 of 50 left (offered at 25, or up to a quarter batch earlier: 37)
    assert (await server_c.spend(bought.token(0, 10))).next_invoice is None
    offered = (await server_d.spend(bought.token(0, 30))).next_invoice  # D serves now: due, D invoices
    assert offered is not None
    await payer.pay(offered)
    await server_d.spend(bought.token(0, 60))
    auto, server_c.auto_refunds = server_c.auto_refunds, None
    assert await server_c.close(bought.token(0, 61)) == DUE
    server_c.auto_refunds = auto
    return bought


def _paid_back(node: Node) -> list[int]:
    return [p.amount_msat for p in node.store.payments() if p.status == "succeeded"]


async def _stop(servers: list[AllowanceServer], store: SqliteAllowanceStore, net: Network) -> None:
    for server in servers:
        if server.auto_refunds is not None:
            await server.auto_refunds.aclose()
    await store.aclose()
    await net.stop()


def test_another_node_never_resumes_a_refund_the_first_node_is_paying(tmp_path: Path) -> None:
    """C recorded the refund in flight and paid it, then stopped before recording PAID. D's
    start-up resumption, D closing it again, D's invoice claim and D's status pay nothing (D's
    own totals say nothing was sent, and D holds a return path it could pay through); C, back,
    finds it paid and records it."""
    async def scenario() -> None:
        net = await _two_sellers(tmp_path)
        a, c, d = net.nodes[0], net.nodes[2], net.nodes[3]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server_c, server_d = _server(c, store), _server(d, store)
        servers = [server_c, server_d]
        try:
            bought = await _closed_across_two_nodes(server_c, server_d, NodePayer(a, return_path=True))
            aid, first_hash = bought.terms.allowance_id, bought.terms.payment_hash
            record = Refund(RefundStatus.IN_FLIGHT, 1, DUE, first_hash, VIA_RETURN_PATH, owner=c.node_id.hex())
            assert await store.set_refund(aid, None, record)
            before = _received(a)
            await NodeReturnPaths(c).refund(first_hash, DUE)  # C paid it; its record never moved
            await until(lambda: _received(a) == before + DUE)

            assert await server_d.resume_auto_refunds() == 0
            assert await server_d.resolve_refunds() == 0
            view = await server_d.auto_refund(aid, wait=2)
            assert view is not None and (view.status, view.node) == ("in_flight", c.node_id.hex()), view
            assert c.node_id.hex() in view.reason
            claim = await server_d.refund(bought.token(0, 62), a.create_invoice(DUE, "again").encode())
            assert (claim.status, claim.invoice) == ("in_flight", VIA_RETURN_PATH)
            status = await server_d.status(aid)
            assert (status["refund"], status["refund_node"]) == ("in_flight", c.node_id.hex())
            assert "refunded_msat" not in status  # D cannot know what C sent
            await asyncio.sleep(1.0)
            assert _paid_back(d) == [] and _received(a) == before + DUE
            assert await store.refund(aid) == record

            back = _server(c, store)  # C's process is back: its totals say the refund went out
            servers.append(back)
            assert await back.resume_auto_refunds() == 1
            done = await back.auto_refund(aid, wait=30)
            assert done is not None and (done.status, done.refunded_msat) == ("paid", DUE), done
            status = await server_d.status(aid)
            assert (status["refund"], status["refunded_msat"], status["refund_node"]) == (
                "paid", DUE, c.node_id.hex())
            await asyncio.sleep(0.5)
            assert _paid_back(c) == [DUE] and _paid_back(d) == [] and _received(a) == before + DUE
        finally:
            await _stop(servers, store, net)

    asyncio.run(scenario())


def test_a_refund_in_flight_without_an_owner_is_taken_and_paid_by_one_node(tmp_path: Path) -> None:
    """A record written by a version before owners (none named): C and D resume at once; one
    takes it by compare-and-set and pays it, once."""
    async def scenario() -> None:
        net = await _two_sellers(tmp_path)
        a, c, d = net.nodes[0], net.nodes[2], net.nodes[3]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server_c, server_d = _server(c, store), _server(d, store)
        try:
            bought = await _closed_across_two_nodes(server_c, server_d, NodePayer(a, return_path=True))
            aid = bought.terms.allowance_id
            old = Refund(RefundStatus.IN_FLIGHT, 1, DUE, bought.terms.payment_hash, VIA_RETURN_PATH)
            assert await store.set_refund(aid, None, old)
            before = _received(a)

            resumed = await asyncio.gather(server_c.resume_auto_refunds(), server_d.resume_auto_refunds())
            assert sorted(resumed) == [0, 1]
            owner = (c, d)[resumed.index(1)]
            await until(lambda: _received(a) == before + DUE, timeout=30)
            for server in (server_c, server_d):
                await server.auto_refund(aid, wait=30)
                assert await server.resume_auto_refunds() == 0
            await asyncio.sleep(1.0)
            assert _received(a) == before + DUE
            assert sorted(_paid_back(c) + _paid_back(d)) == [DUE] and _paid_back(owner) == [DUE]
            record = await store.refund(aid)
            assert record is not None and (record.status, record.owner) == (RefundStatus.PAID, owner.node_id.hex())
        finally:
            await _stop([server_c, server_d], store, net)

    asyncio.run(scenario())


def test_an_invoice_refund_in_flight_at_one_node_is_paid_by_that_node_only(tmp_path: Path) -> None:
    """C recorded a refund to A's invoice in flight and stopped before paying it. D's node never
    started that payment (its payer says unknown), which for C's own record means "pay it now":
    D leaves it to C, and C, back, pays it once."""
    async def scenario() -> None:
        net = await _two_sellers(tmp_path)
        a, c, d = net.nodes[0], net.nodes[2], net.nodes[3]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server_c, server_d = _server(c, store), _server(d, store)
        servers = [server_c, server_d]
        try:
            bought = await _closed_across_two_nodes(server_c, server_d, NodePayer(a, return_path=True))
            aid = bought.terms.allowance_id
            invoice = a.create_invoice(DUE, "refund").encode()
            record = Refund(RefundStatus.IN_FLIGHT, 1, DUE, decode(invoice).payment_hash, invoice,
                            owner=c.node_id.hex())
            assert await store.set_refund(aid, None, record)
            before = _received(a)

            assert await server_d.resolve_refunds() == 0
            claim = await server_d.refund(bought.token(0, 62), a.create_invoice(DUE, "mine").encode())
            assert (claim.status, claim.invoice) == ("in_flight", invoice)
            status = await server_d.status(aid)
            assert (status["refund"], status["refund_node"]) == ("in_flight", c.node_id.hex())
            await asyncio.sleep(0.5)
            assert _paid_back(d) == [] and _received(a) == before and await store.refund(aid) == record

            back = _server(c, store)
            servers.append(back)
            assert await back.resolve_refunds() == 1
            await until(lambda: _received(a) == before + DUE)
            done = await store.refund(aid)
            assert done is not None and (done.status, done.owner) == (RefundStatus.PAID, c.node_id.hex())
            assert await server_d.resolve_refunds() == 0 and await back.resolve_refunds() == 0
            await asyncio.sleep(0.5)
            assert _paid_back(c) == [DUE] and _paid_back(d) == [] and _received(a) == before + DUE
        finally:
            await _stop(servers, store, net)

    asyncio.run(scenario())


def test_an_invoice_refund_in_flight_without_an_owner_is_taken_and_paid_by_one_node(tmp_path: Path) -> None:
    """A record to A's invoice written before owners, never paid: C and D resolve at once; one
    takes it by compare-and-set and pays it, the other leaves it."""
    async def scenario() -> None:
        net = await _two_sellers(tmp_path)
        a, c, d = net.nodes[0], net.nodes[2], net.nodes[3]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server_c, server_d = _server(c, store), _server(d, store)
        try:
            bought = await _closed_across_two_nodes(server_c, server_d, NodePayer(a, return_path=True))
            aid = bought.terms.allowance_id
            invoice = a.create_invoice(DUE, "refund").encode()
            old = Refund(RefundStatus.IN_FLIGHT, 1, DUE, decode(invoice).payment_hash, invoice)
            assert await store.set_refund(aid, None, old)
            before = _received(a)

            assert sorted(await asyncio.gather(server_c.resolve_refunds(), server_d.resolve_refunds())) == [0, 1]
            await until(lambda: _received(a) == before + DUE)
            done = await store.refund(aid)
            assert done is not None and done.status is RefundStatus.PAID
            owner = c if done.owner == c.node_id.hex() else d
            assert done.owner == owner.node_id.hex()
            await asyncio.sleep(0.5)
            assert sorted(_paid_back(c) + _paid_back(d)) == [DUE] and _paid_back(owner) == [DUE]
            assert _received(a) == before + DUE
        finally:
            await _stop([server_c, server_d], store, net)

    asyncio.run(scenario())


def test_the_rest_of_a_failed_return_path_refund_is_claimed_only_where_its_node_is(tmp_path: Path) -> None:
    """C refunded 1,500 of the 4,000 through the return path, then failed the rest. D cannot know
    what C carried (its own totals say nothing), so its invoice claim is refused; at C the
    client claims exactly the 2,500 left."""
    async def scenario() -> None:
        net = await _two_sellers(tmp_path)
        a, c, d = net.nodes[0], net.nodes[2], net.nodes[3]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server_c, server_d = _server(c, store), _server(d, store)
        try:
            bought = await _closed_across_two_nodes(server_c, server_d, NodePayer(a, return_path=True))
            aid, first_hash = bought.terms.allowance_id, bought.terms.payment_hash
            in_flight = Refund(RefundStatus.IN_FLIGHT, 1, DUE, first_hash, VIA_RETURN_PATH, owner=c.node_id.hex())
            assert await store.set_refund(aid, None, in_flight)
            before = _received(a)
            await NodeReturnPaths(c).refund(first_hash, 1_500)
            await until(lambda: _received(a) == before + 1_500)
            assert await store.set_refund(aid, in_flight, replace(in_flight, status=RefundStatus.FAILED,
                                                                   reason="no route"))

            with pytest.raises(CallRefused) as refused:
                await server_d.refund(bought.token(0, 62), a.create_invoice(DUE, "all of it").encode())
            assert (refused.value.code, refused.value.http_status) == ("refund_elsewhere", 409)
            assert c.node_id.hex() in str(refused.value)
            with pytest.raises(CallRefused, match="2500 msat"):  # at C: what C did not carry, no more
                await server_c.refund(bought.token(0, 63), a.create_invoice(DUE, "all of it").encode())
            rest = await server_c.refund(bought.token(0, 64), a.create_invoice(2_500, "the rest").encode())
            assert rest.status == "paid", rest
            await until(lambda: _received(a) == before + DUE)
            await asyncio.sleep(0.5)
            assert _paid_back(d) == [] and _received(a) == before + DUE
        finally:
            await _stop([server_c, server_d], store, net)

    asyncio.run(scenario())


def test_while_the_first_node_pays_the_refund_the_second_one_resumes_nothing(tmp_path: Path) -> None:
    """C closes the allowance and starts paying its refund; D's periodic sweep runs meanwhile and
    again once it is paid: the refund goes out once, from C."""
    async def scenario() -> None:
        net = await _two_sellers(tmp_path)
        a, c, d = net.nodes[0], net.nodes[2], net.nodes[3]
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        server_c, server_d = _server(c, store), _server(d, store)
        try:
            bought = await _closed_across_two_nodes(server_c, server_d, NodePayer(a, return_path=True))
            aid = bought.terms.allowance_id
            before = _received(a)
            started = await server_c.auto_refund(aid)
            assert started is not None and (started.status, started.node) == ("in_flight", c.node_id.hex())
            assert await server_d.resume_auto_refunds() == 0  # C is paying it
            assert await server_d.resolve_refunds() == 0
            done = await server_c.auto_refund(aid, wait=30)
            assert done is not None and (done.status, done.refunded_msat) == ("paid", DUE), done
            assert await server_d.resolve_refunds() == 0
            seen_by_d = await server_d.auto_refund(aid, wait=1)
            assert seen_by_d is not None and (seen_by_d.status, seen_by_d.refunded_msat) == ("paid", DUE)
            await asyncio.sleep(1.0)
            assert _paid_back(c) == [DUE] and _paid_back(d) == [] and _received(a) == before + DUE
        finally:
            await _stop([server_c, server_d], store, net)

    asyncio.run(scenario())
