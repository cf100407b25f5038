"""The pay-per-call server: selling, serving, and every attack the protocol must refuse."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.errors import DecodeError
from lightspeed.invoice.decode import decode
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.server import AllowanceServer, CallRefused, ServerPolicy
from lightspeed.micro.store import Status
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.terms import AllowanceTerms, Price
from lightspeed.micro.token import AllowanceRequest, Token
from tests.support.ledger import Ledger

T = TypeVar("T")
DEFAULT_PRICE = Price(2)


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


class Client:
    """The client side of one allowance, kept minimal: seed, lanes, walkers."""

    def __init__(self, lanes: int = 1, per_lane: int = 100, batch: int = 0) -> None:
        self.seed = os.urandom(32)
        self.tips = [lane_tip(self.seed, lane) for lane in range(lanes)]
        self.request = AllowanceRequest(per_lane, tuple(anchor(t, per_lane) for t in self.tips), batch)
        self.walkers = [ChainWalker.from_tip(t, per_lane) for t in self.tips]
        self.terms: AllowanceTerms | None = None

    def token(self, index: int, lane: int = 0) -> Token:
        assert self.terms is not None
        return Token(self.terms.allowance_id, lane, index, self.walkers[lane].link(index))


def make_server(store: MemoryAllowanceStore | None = None, ledger: Ledger | None = None,
                price: Price = DEFAULT_PRICE, clock: list[float] | None = None, **policy: Any) -> AllowanceServer:
    ledger = ledger or Ledger()
    now = clock if clock is not None else [time.time()]
    return AllowanceServer(store or MemoryAllowanceStore(), ledger, ledger.node_id,
                           ServerPolicy(price, **policy), payer=ledger, clock=lambda: now[0])


async def bought(server: AllowanceServer, client: Client, pay: bool = True) -> Client:
    client.terms = await server.create(client.request)
    if pay:
        assert isinstance(server.payee, Ledger)
        server.payee.pay_sync(client.terms.invoice)
    return client


def refused(code: str) -> pytest.RaisesContext[CallRefused]:
    return pytest.raises(CallRefused, match=f"^{code}:")


def test_an_allowance_invoice_pays_the_server_node_the_exact_price() -> None:
    async def go() -> None:
        server = make_server(price=Price(1, 3))
        client = await bought(server, Client(lanes=2, per_lane=30), pay=False)
        assert client.terms is not None
        invoice = decode(client.terms.invoice)
        assert invoice.payee == server.node_id and invoice.amount_msat == 20  # 60 calls at 1/3 msat
        with refused("unpaid") as caught:
            await server.spend(client.token(1))
        assert caught.value.invoice == client.terms.invoice  # the 402 says what to pay
        assert isinstance(server.payee, Ledger)
        server.payee.pay_sync(client.terms.invoice)
        receipt = await server.spend(client.token(2))
        assert receipt.remaining_calls == 58  # index 1 was revealed while unpaid: skipped, spent

    run(go())


def test_each_call_advances_the_lane_and_reuse_or_going_back_is_refused() -> None:
    async def go() -> None:
        server = make_server()
        client = await bought(server, Client(per_lane=10))
        tokens = [client.token(i) for i in range(1, 6)]
        for n, token in enumerate(tokens, 1):
            assert (await server.spend(token)).remaining_calls == 10 - n
        with refused("replayed"):
            await server.spend(tokens[-1])  # replay
        with refused("replayed"):
            await server.spend(tokens[1])  # an index going back

    run(go())


def test_skipping_ahead_spends_the_skipped_calls_and_costs_are_links() -> None:
    async def go() -> None:
        server = make_server()
        client = await bought(server, Client(per_lane=50))
        assert (await server.spend(client.token(10))).remaining_calls == 40
        with refused("underpaid"):
            await server.spend(client.token(12), cost=5)  # moves 2 links, the route costs 5
        assert (await server.spend(client.token(17), cost=5)).remaining_calls == 33

    run(go())


def test_forged_links_and_tokens_of_other_allowances_or_servers_are_refused() -> None:
    async def go() -> None:
        ledger = Ledger()
        server = make_server(ledger=ledger)
        alice = await bought(server, Client())
        bob = await bought(server, Client())
        assert alice.terms is not None and bob.terms is not None
        with refused("forged"):
            await server.spend(Token(alice.terms.allowance_id, 0, 1, os.urandom(32)))
        stolen = bob.token(1)  # Bob's link presented on Alice's allowance
        with refused("forged"):
            await server.spend(Token(alice.terms.allowance_id, 0, 1, stolen.link))
        other_server = make_server()  # another server never sold this allowance
        with refused("unknown_allowance"):
            await other_server.spend(alice.token(1))
        with refused("bad_token"):
            await server.spend(Token(alice.terms.allowance_id, 3, 1, stolen.link))  # no lane 3

    run(go())


def test_a_huge_index_jump_is_refused_without_hashing_it() -> None:
    # Building a 10^9-link lane costs 10^9 hashes; a fake anchor is enough to test the bound.
    async def fake_anchor() -> None:
        server = make_server(max_skip=1000)
        request = AllowanceRequest(10**9, (os.urandom(32),))
        terms = await server.create(request)
        assert isinstance(server.payee, Ledger)
        server.payee.pay_sync(terms.invoice)
        started = time.perf_counter()
        with refused("bad_token"):
            await server.spend(Token(terms.allowance_id, 0, 10**9 - 1, os.urandom(32)))
        assert time.perf_counter() - started < 10  # refused before hashing 10^9 times (minutes); room for a loaded machine
        with refused("exhausted"):
            await server.spend(Token(terms.allowance_id, 0, 10**9 + 1, os.urandom(32)))

    run(fake_anchor())


def test_a_lane_moved_far_by_another_server_on_the_same_store_is_reloaded_not_refused() -> None:
    """Workers share a store, each with its own cache: when another one spent more than
    ``max_skip`` links of a lane, our cached position is that far behind. The lane is read again
    before a jump is called too long; a real jump that long is still refused."""
    async def go() -> None:
        store, ledger = MemoryAllowanceStore(), Ledger()
        first, second = make_server(store, ledger, max_skip=5), make_server(store, ledger, max_skip=5)
        client = await bought(first, Client(per_lane=100))
        await second.spend(client.token(1))  # the second server caches the lane at index 1
        for index in range(2, 12):  # the first moves it on by 10 links, more than max_skip
            await first.spend(client.token(index))
        twelfth = client.token(12)
        receipt = await second.spend(twelfth)
        assert receipt.remaining_calls == 100 - 12
        with refused("replayed"):
            await first.spend(twelfth)
        with refused("bad_token"):  # a jump beyond max_skip from the lane's real position
            await second.spend(client.token(19))

    run(go())


def test_requests_that_would_let_a_link_pay_twice_or_cost_fractions_are_refused() -> None:
    async def go() -> None:
        server = make_server(price=Price(1, 3))
        same = os.urandom(32)
        with refused("bad_request"):
            await server.create(AllowanceRequest(30, (same, same)))
        with refused("bad_request"):
            await server.create(AllowanceRequest(10, (os.urandom(32),)))  # 10/3 msat
        with refused("bad_request"):
            await server.create(AllowanceRequest(30, (os.urandom(32),), batch_calls=31))

    run(go())


def test_close_refunds_exactly_the_unspent_calls_once() -> None:
    async def go() -> None:
        ledger = Ledger()
        server = make_server(ledger=ledger, price=Price(7))
        client = await bought(server, Client(lanes=2, per_lane=20))
        for i in range(1, 6):
            await server.spend(client.token(i, lane=0))
        await server.spend(client.token(3, lane=1))
        refund = await server.close(client.token(6, lane=0))
        assert refund == 7 * (40 - 5 - 3)
        with refused("closed"):
            await server.spend(client.token(7, lane=0))
        wrong = await ledger.create_client_invoice(refund + 1, "refund", 600)
        with refused("bad_request"):
            await server.refund(client.token(8, lane=0), wrong.encode())
        own = await ledger.create_invoice(refund, "refund", 600)  # payable to the server's own node
        with refused("bad_request"):
            await server.refund(client.token(9, lane=0), own.encode())
        right = await ledger.create_client_invoice(refund, "refund", 600)
        paid = await server.refund(client.token(10, lane=0), right.encode())
        assert (paid.status, paid.invoice) == ("paid", right.encode()) and paid.preimage is not None
        assert ledger.payments[-1] == refund
        payments = len(ledger.payments)
        again = await ledger.create_client_invoice(refund, "refund", 600)
        answer = await server.refund(client.token(11, lane=0), again.encode())  # the same answer, no payment
        assert (answer.status, answer.invoice) == ("paid", right.encode()) and len(ledger.payments) == payments
        assert client.terms is not None
        with refused("forged"):
            await server.close(Token(client.terms.allowance_id, 0, 12, os.urandom(32)))

    run(go())


def test_expiry_closes_and_keeps_the_refund_claimable() -> None:
    async def go() -> None:
        clock = [1_000_000.0]
        server = make_server(clock=clock, ttl_seconds=60)
        client = await bought(server, Client(per_lane=10))
        await server.spend(client.token(1))
        clock[0] += 61
        with refused("expired"):
            await server.spend(client.token(2))
        assert await server.expire_due() == 1
        assert client.terms is not None
        status = await server.status(client.terms.allowance_id)
        assert status["status"] == "closed" and status["refund_msat"] == 2 * 9

    run(go())


def test_an_allowance_paid_but_never_used_is_refunded_in_full_on_close() -> None:
    async def go() -> None:
        server = make_server()
        client = await bought(server, Client(per_lane=10))  # paid, still PENDING on the server
        assert await server.close(client.token(1)) == 20

    run(go())


def test_batches_are_paid_ahead_and_no_unpaid_call_is_served() -> None:
    async def go() -> None:
        ledger = Ledger()
        server = make_server(ledger=ledger, price=Price(3))
        client = await bought(server, Client(per_lane=100, batch=10))
        assert ledger.payments == [30]
        invoices = []
        for i in range(1, 11):
            receipt = await server.spend(client.token(i))
            if receipt.next_invoice:
                invoices.append(receipt.next_invoice)
        assert len(set(invoices)) == 1  # offered from half-way, one invoice per batch
        with refused("batch_due") as caught:
            await server.spend(client.token(11))
        assert caught.value.invoice == invoices[0]
        ledger.pay_sync(invoices[0])
        assert (await server.spend(client.token(12))).remaining_calls == 8
        assert client.terms is not None
        status = await server.status(client.terms.allowance_id)
        assert status["paid_calls"] == 20 and status["spent"] == 12

    run(go())


def test_two_server_instances_on_one_store_serve_a_token_once() -> None:
    async def go() -> None:
        store, ledger = MemoryAllowanceStore(), Ledger()
        first, second = make_server(store, ledger), make_server(store, ledger)
        client = await bought(first, Client(per_lane=50))
        for i in range(1, 30):
            token = client.token(i)
            results = await asyncio.gather(first.spend(token), second.spend(token), return_exceptions=True)
            assert sum(not isinstance(r, BaseException) for r in results) == 1
            assert all(isinstance(r, CallRefused) and r.code == "replayed"
                       for r in results if isinstance(r, BaseException))

    run(go())


def test_a_restarted_server_serves_no_call_twice() -> None:
    async def go() -> None:
        store, ledger = MemoryAllowanceStore(), Ledger()
        client = await bought(make_server(store, ledger), Client(per_lane=20))
        tokens = [client.token(i) for i in range(1, 11)]
        before = make_server(store, ledger)
        for token in tokens[:5]:
            await before.spend(token)
        after = make_server(store, ledger)  # a new process: empty cache, same store
        for token in tokens[:5]:
            with refused("replayed"):
                await after.spend(token)
        assert (await after.spend(tokens[5])).remaining_calls == 14
        stored = await store.load(tokens[0].allowance_id)
        assert stored is not None and stored.state.status is Status.ACTIVE and stored.state.spent == 6

    run(go())


@given(st.text(max_size=200))
@settings(max_examples=300, deadline=None)
def test_token_and_allowance_headers_raise_only_decode_errors(text: str) -> None:
    for parse in (Token.parse, AllowanceRequest.parse):
        with contextlib.suppress(DecodeError):
            parse(text)


@given(st.binary(min_size=16, max_size=16), st.integers(0, 255), st.integers(1, 2**40),
       st.binary(min_size=32, max_size=32))
def test_token_header_round_trips(allowance_id: bytes, lane: int, index: int, link: bytes) -> None:
    token = Token(allowance_id, lane, index, link)
    assert Token.parse(token.header_value()) == token


def test_malformed_tokens_name_the_field() -> None:
    with pytest.raises(DecodeError, match=r"token\.index"):
        Token.parse("00" * 16 + ".0.0." + "00" * 32)
    with pytest.raises(DecodeError, match=r"token\.link"):
        Token.parse("00" * 16 + ".0.1.zz")
    with pytest.raises(DecodeError, match=r"token\.lane"):
        Token.parse("00" * 16 + ".-1.1." + "00" * 32)
    request = AllowanceRequest(5, (os.urandom(32), os.urandom(32)), 5)
    assert AllowanceRequest.parse(request.header_value()) == request
    assert AllowanceRequest.from_json(request.to_json()) == request


def test_prices_are_exact_fractions_of_a_millisatoshi() -> None:
    price = Price(1, 3)
    assert price.cost_msat(300) == 100 and price.granularity() == 3 and price.refund_msat(5) == 1
    with pytest.raises(Exception, match="not a whole number"):
        price.cost_msat(10)


def test_stores_are_named_by_url(tmp_path: Path) -> None:
    from lightspeed.errors import UsageError
    from lightspeed.micro.stores import open_allowance_store
    from lightspeed.micro.stores.sqlite import SqliteAllowanceStore

    assert isinstance(open_allowance_store("memory"), MemoryAllowanceStore)
    sqlite = open_allowance_store(f"sqlite:{tmp_path}/deep/er/allowances.sqlite")
    assert isinstance(sqlite, SqliteAllowanceStore) and (tmp_path / "deep/er/allowances.sqlite").exists()
    run(sqlite.aclose())
    with pytest.raises(UsageError, match="store"):
        open_allowance_store("mongodb://localhost")


def test_the_cache_is_bounded_and_an_evicted_allowance_reloads_from_the_store() -> None:
    async def go() -> None:
        server = dataclasses.replace(make_server(), max_cached=2)
        clients = [await bought(server, Client(per_lane=10)) for _ in range(3)]
        for client in clients:
            await server.spend(client.token(1))
        assert len(server._cache) == 2
        token = clients[0].token(2)
        assert (await server.spend(token)).remaining_calls == 8  # reloaded from the store
        with refused("replayed"):
            await server.spend(token)

    run(go())
