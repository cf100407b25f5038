"""Seller failover when the prepayment is bought in several batches (issue 15 part 2).

Each seller process has its own node: a batch invoice is payable to (and seen paid by) one node
only. After a take-over the serving process replaces the dead one's pending batch invoice by its
own (the buyer pays that one); the superseded invoice, if the buyer paid it, is credited by its
node when its process is back, so the payment ends up in the refund instead of being lost.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lightspeed.cli.stream_example import serve_asgi, stream_seller
from lightspeed.errors import PaymentError
from lightspeed.invoice.decode import decode
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.stream import SellerStream, recompute
from lightspeed.stream.client import BuyPolicy, StreamBuyer
from lightspeed.stream.state import MemoryStreamStore
from lightspeed.stream.tariff import Tariff
from tests.support.ledger import Ledger

TARIFF = Tariff("Wh", msat_per_unit=7, tick_units=2, max_units=2_000, window_ticks=64)
BATCH = 10  # ticks per Lightning prepayment: the stream needs several


async def _meter(stream: SellerStream, grant: int) -> int:
    await asyncio.sleep(0.002)
    return min(grant, 2)


class _Nodes:
    """The buyer's payer, with a route to every seller node; paying a dead node fails."""

    def __init__(self, *ledgers: Ledger) -> None:
        self.ledgers = {ledger.node_id: ledger for ledger in ledgers}
        self.dead: set[bytes] = set()
        self.calls = 0
        self.before: Callable[[int], None] = lambda n: None  # runs before the n-th payment
        self.after: Callable[[int], None] = lambda n: None  # runs after it succeeded
        self.after_async: Callable[[int, str], Awaitable[None]] | None = None  # awaited after that

    async def pay(self, invoice: str) -> bytes:
        self.calls += 1
        self.before(self.calls)
        payee = decode(invoice).payee
        if payee in self.dead:
            raise PaymentError("no route: the payee's node is offline")
        preimage = await self.ledgers[payee].pay(invoice)
        self.after(self.calls)
        if self.after_async is not None:
            await self.after_async(self.calls, invoice)
        return preimage


def _paid_msat(*ledgers: Ledger) -> int:
    return sum(sum(ledger.paid.values()) for ledger in ledgers)


@pytest.mark.parametrize("paid_before_death", [True, False])
def test_a_batch_falling_due_after_a_take_over_is_invoiced_and_paid_at_the_new_process(
        tmp_path: Path, paid_before_death: bool) -> None:
    """Process a offers the second batch and dies either just after the buyer paid it (a's node
    has the money, nobody else can see it) or just before (the payment cannot reach a). Process
    b replaces a's invoice by its own, the buyer pays it and the stream goes on to the end; when
    a is back, a payment it received is credited to the allowance: refunded, not lost."""
    async def scenario() -> None:
        allowances, streams = SqliteAllowanceStore(tmp_path / "allowances.sqlite"), MemoryStreamStore()
        ledger_a, ledger_b = Ledger(), Ledger()
        a = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF, meter=_meter,
                          stream_store=streams)
        b = stream_seller(allowances, ledger_b, ledger_b.node_id, ledger_b.privkey, tariff=TARIFF, meter=_meter,
                          stream_store=streams)
        server_a, server_b = await serve_asgi(a), await serve_asgi(b)
        await a.announce(server_a.url)
        await b.announce(server_b.url)
        nodes = _Nodes(ledger_a, ledger_b)

        def kill_a() -> None:  # a's process is gone: its streams, its connections, its node
            nodes.dead.add(ledger_a.node_id)
            a.streams.clear()
            assert buyer.ws is not None
            buyer.ws.abort()

        if paid_before_death:
            nodes.after = lambda n: kill_a() if n == 2 else None
        else:
            nodes.before = lambda n: kill_a() if n == 2 else None
        try:
            buyer = StreamBuyer(server_a.url, nodes, BuyPolicy(max_msat=40 * TARIFF.tick_msat, batch_ticks=BATCH))
            receipt = await buyer.run(stop_after_units=30 * TARIFF.tick_units)
            assert nodes.dead and buyer.reconnected == 1
            statement = receipt.signed.statement
            assert statement.seller_node_id == ledger_b.node_id
            checked = recompute(receipt)
            assert checked.consistent and checked.signature_valid, checked.problems
            # no unit unpaid, none paid twice: 30 links, 60 Wh, each link spent once in the shared store
            assert checked.paid_ticks == 30 and checked.delivered_units == 60 and checked.unserved_msat == 0
            stored = await allowances.load(statement.allowance_id)
            assert stored is not None and stored.state.spent == 30 and stored.lanes[0].index == 30
            record = await streams.load(statement.stream_id)
            assert record is not None and record.delivered_units == 60 and record.epoch == 1
            assert ledger_b.paid  # b invoiced the batches after the take-over, and was paid
            assert (len(ledger_a.paid), buyer.unpayable != []) == ((2, False) if paid_before_death else (1, True))

            refund = await b.allowances.close_by_seller(statement.allowance_id)  # the unused credit
            delivered_msat = 30 * TARIFF.tick_msat
            unseen = BATCH * TARIFF.tick_msat if paid_before_death else 0  # at a's node, which is gone
            assert _paid_msat(ledger_a, ledger_b) == delivered_msat + refund + unseen

            # a comes back (a new process, the same node): its node has the payment, it credits it
            back = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF,
                                 meter=_meter, stream_store=streams)
            credited = await back.allowances.credit_superseded(statement.allowance_id)
            assert credited == (BATCH if paid_before_death else 0)
            status = await b.allowances.status(statement.allowance_id)
            assert status["status"] == "closed"  # closed before a came back: the refund grows
            assert _paid_msat(ledger_a, ledger_b) == delivered_msat + int(str(status["refund_msat"]))
            assert await back.allowances.credit_superseded(statement.allowance_id) == 0  # once
        finally:
            await server_a.stop()
            await server_b.stop()
            await allowances.aclose()

    asyncio.run(scenario())


def test_a_batch_paid_twice_across_a_failover_counts_once_in_the_buyers_budget(tmp_path: Path) -> None:
    """The buyer's budget is exactly the stream's price (30 ticks). It pays a's second batch, a
    dies, b invoices that batch again (calls 11-20) and the buyer pays it too: the lane is funded
    by it once, so the stream still reaches its 30 ticks instead of stopping one batch short, and
    what the buyer paid twice is one batch, no more."""
    async def scenario() -> None:
        allowances, streams = SqliteAllowanceStore(tmp_path / "allowances.sqlite"), MemoryStreamStore()
        ledger_a, ledger_b = Ledger(), Ledger()
        a = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF, meter=_meter,
                          stream_store=streams)
        b = stream_seller(allowances, ledger_b, ledger_b.node_id, ledger_b.privkey, tariff=TARIFF, meter=_meter,
                          stream_store=streams)
        server_a, server_b = await serve_asgi(a), await serve_asgi(b)
        await a.announce(server_a.url)
        await b.announce(server_b.url)
        nodes = _Nodes(ledger_a, ledger_b)

        def kill_a(n: int) -> None:
            if n == 2:  # just after the buyer paid a's second batch: only a's node knows
                nodes.dead.add(ledger_a.node_id)
                a.streams.clear()
                assert buyer.ws is not None
                buyer.ws.abort()

        nodes.after = kill_a
        try:
            buyer = StreamBuyer(server_a.url, nodes, BuyPolicy(max_msat=30 * TARIFF.tick_msat, batch_ticks=BATCH))
            receipt = await buyer.run()  # to the end of the budget
            assert nodes.dead and buyer.reconnected == 1
            checked = recompute(receipt)
            assert checked.consistent and checked.signature_valid, checked.problems
            assert checked.paid_ticks == 30 and checked.delivered_units == 60  # the whole budget's ticks
            batches = sorted(decode(i).description or "" for i in buyer.paid_invoices)
            assert [d.split(": ")[1] for d in batches] == ["10 calls", "calls 11-20", "calls 11-20", "calls 21-30"]
            assert buyer.paid_twice_msat == BATCH * TARIFF.tick_msat  # a's, which b could not see
            assert buyer.batches_msat == _paid_msat(ledger_a, ledger_b) == 40 * TARIFF.tick_msat
            assert buyer.stream is not None and buyer.stream.funded_ticks == 30
        finally:
            await server_a.stop()
            await server_b.stop()
            await allowances.aclose()

    asyncio.run(scenario())


def test_a_batch_paid_twice_and_credited_mid_stream_is_streamed_not_waited_for(tmp_path: Path) -> None:
    """As above, and a's node comes back while the stream goes on at b: a credits the batch it was
    paid, so the seller holds 10 ticks more than the buyer counted funded and offers no invoice
    for them. The buyer pays on into that credit (a link the seller did not have credit for would
    be answered with the next batch's invoice) and reaches its 30 ticks without waiting."""
    async def scenario() -> None:
        allowances, streams = SqliteAllowanceStore(tmp_path / "allowances.sqlite"), MemoryStreamStore()
        ledger_a, ledger_b = Ledger(), Ledger()
        a = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF, meter=_meter,
                          stream_store=streams)
        b = stream_seller(allowances, ledger_b, ledger_b.node_id, ledger_b.privkey, tariff=TARIFF, meter=_meter,
                          stream_store=streams)
        server_a, server_b = await serve_asgi(a), await serve_asgi(b)
        await a.announce(server_a.url)
        await b.announce(server_b.url)
        nodes = _Nodes(ledger_a, ledger_b)
        allowance: list[bytes] = []

        def kill_a(n: int) -> None:
            if n == 2:
                nodes.dead.add(ledger_a.node_id)
                a.streams.clear()
                assert buyer.ws is not None
                buyer.ws.abort()

        async def a_comes_back(n: int, invoice: str) -> None:
            if n == 1:
                allowance.append(bytes.fromhex((decode(invoice).description or "").split()[2].rstrip(":")))
            if n == 3:  # the buyer paid b's invoice for the same batch: a's node is back and credits its own
                back = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF)
                assert await back.allowances.credit_superseded(allowance[0]) == BATCH

        nodes.after, nodes.after_async = kill_a, a_comes_back
        try:
            buyer = StreamBuyer(server_a.url, nodes, BuyPolicy(max_msat=30 * TARIFF.tick_msat, batch_ticks=BATCH,
                                                               idle_timeout=5))
            receipt = await asyncio.wait_for(buyer.run(), 4)  # well within the idle timeout: no stall
            checked = recompute(receipt)
            assert checked.consistent and checked.paid_ticks == 30 and checked.delivered_units == 60
            assert buyer.reconnected == 1 and nodes.calls == 3  # no more batch was needed: a's credit paid 21-30
            stored = await allowances.load(allowance[0])
            assert stored is not None and (stored.state.paid_calls, stored.state.spent) == (30, 30)
        finally:
            await server_a.stop()
            await server_b.stop()
            await allowances.aclose()

    asyncio.run(scenario())


def test_the_buyer_pays_an_invoice_once_and_ticks_paid_twice_at_most_one_batch_over_its_budget() -> None:
    """Against a seller invoicing ticks it was paid for again and again, from its other nodes: each
    invoice is paid once (also offered again in another spelling), the budget counts the lane's
    ticks once, and all the batches paid stay within the budget plus one batch."""
    from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
    from lightspeed.stream import BuyerStream

    async def scenario() -> None:
        ledgers = Ledger(), Ledger(), Ledger()
        nodes, tick = _Nodes(*ledgers), TARIFF.tick_msat
        buyer = StreamBuyer("ws://127.0.0.1:1/charge", nodes, BuyPolicy(max_msat=30 * tick, batch_ticks=BATCH))
        tip = lane_tip(b"\x03" * 32, 0)
        stream = BuyerStream(TARIFF, b"s" * 16, ledgers[0].node_id, ChainWalker.from_tip(tip, 30), 0,
                             anchor(tip, 30), 30 * tick, other_sellers=frozenset(x.node_id for x in ledgers[1:]))

        async def batch(ledger: Ledger, calls: str) -> str:
            return (await ledger.create_invoice(BATCH * tick, f"Lightspeed allowance {'ab' * 16}: {calls}", 600)).encode()

        first = await batch(ledgers[0], "10 calls")
        await buyer._fund(stream, first, BATCH)
        await buyer._fund(stream, first.upper(), BATCH)  # the same invoice (bech32 in capitals): paid once
        second = await batch(ledgers[0], "calls 11-20")
        await buyer._fund(stream, second, BATCH)
        assert (nodes.calls, stream.funded_ticks) == (2, 20)
        await buyer._fund(stream, await batch(ledgers[1], "calls 11-20"), BATCH)  # b could not see a's
        assert (nodes.calls, stream.funded_ticks, buyer.paid_twice_msat) == (3, 20, BATCH * tick)
        await buyer._fund(stream, await batch(ledgers[1], "calls 21-30"), BATCH)
        assert (stream.funded_ticks, buyer.batches_msat) == (30, 40 * tick)  # the budget plus one batch
        with pytest.raises(PaymentError, match="exceed the budget"):  # c asks for 11-20 a third time
            await buyer._fund(stream, await batch(ledgers[2], "calls 11-20"), BATCH)
        assert (nodes.calls, buyer.batches_msat) == (4, 40 * tick)

    asyncio.run(scenario())


def test_any_process_touching_the_allowance_with_the_paying_node_credits_it(tmp_path: Path) -> None:
    """The credit is not only an explicit call: a's status (what a REST status query or a close
    runs) counts a superseded invoice its node was paid, once."""
    from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
    from lightspeed.micro.server import CallRefused
    from lightspeed.micro.token import AllowanceRequest, Token

    async def scenario() -> None:
        allowances = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        ledger_a, ledger_b = Ledger(), Ledger()
        a = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF).allowances
        b = stream_seller(allowances, ledger_b, ledger_b.node_id, ledger_b.privkey, tariff=TARIFF).allowances
        try:
            tip = lane_tip(b"\x01" * 32, 0)
            walker = ChainWalker.from_tip(tip, 30)
            terms = await a.create(AllowanceRequest(30, (anchor(tip, 30),), BATCH))
            await ledger_a.pay(terms.invoice)
            receipt = None
            for index in range(1, 6):
                receipt = await a.spend(Token(terms.allowance_id, 0, index, walker.link(index)))
            assert receipt is not None and receipt.next_invoice is not None
            await ledger_a.pay(receipt.next_invoice)  # paid to a, which dies before it sees it
            for index in range(6, 11):  # a's invoice is not b's to offer, nor replaced before it is due
                assert (await b.spend(Token(terms.allowance_id, 0, index, walker.link(index)))).next_invoice is None
            eleventh = Token(terms.allowance_id, 0, 11, walker.link(11))
            with pytest.raises(CallRefused) as refused:
                await b.spend(eleventh)
            assert refused.value.code == "batch_due" and refused.value.invoice is not None
            assert decode(refused.value.invoice).payee == ledger_b.node_id  # b's own, not a's
            assert (await b.status(terms.allowance_id))["paid_calls"] == 10  # b cannot see a's payment
            assert (await a.status(terms.allowance_id))["paid_calls"] == 20  # a can: credited
            assert (await a.status(terms.allowance_id))["paid_calls"] == 20  # once
            await b.spend(eleventh)  # the credit is spendable at b as well
            status = await b.status(terms.allowance_id)
            assert (status["paid_calls"], status["spent"]) == (20, 11)
        finally:
            await allowances.aclose()

    asyncio.run(scenario())


# -- real processes, real PostgreSQL -------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_at_a_batch_boundary_the_other_process_invoices_the_next_batch(tmp_path: Path) -> None:
    """Two `serve-example` processes on one real PostgreSQL, each its own node; the buyer has a
    channel to each. Batches of 10 ticks; a is killed at 9 Wh, after it offered (and the buyer
    paid) the second batch, before any link of it was spent. b takes over, invoices that batch again
    itself, the buyer pays b and the stream goes on to 40 Wh: each link spent once, units delivered
    == paid, and a's unseen invoice is recorded in the shared store for a's node to credit."""
    import os
    import signal
    import subprocess

    import psycopg

    from lightspeed.chain.regtest import RegtestChain
    from lightspeed.cli.paid_example import open_channel_to_api
    from lightspeed.micro.lightning import NodePayer
    from lightspeed.micro.stores import open_allowance_store
    from lightspeed.node.node import Node
    from lightspeed.stream import BuyerStream, Receipt
    from lightspeed.stream.state import open_stream_store
    from tests.support.servers import postgres_server
    from tests.test_stream15_failover import _serve

    ticks, tick_msat = 40, 300  # serve-example's charger: 300 msat per Wh, one Wh per tick
    with postgres_server() as server:
        dsn = psycopg.conninfo.conninfo_to_dict(server.dsn)
        store = f"postgresql://{dsn['user']}@{dsn['host']}:{dsn['port']}/{dsn['dbname']}"
        chain_path = tmp_path / "chain.sqlite"
        a, ready_a = _serve(tmp_path, "a", chain_path, store)
        b, ready_b = _serve(tmp_path, "b", chain_path, store)

        async def scenario() -> tuple[Receipt, StreamBuyer]:
            chain = RegtestChain(chain_path)
            node = Node(os.urandom(32), chain, os.urandom(32))
            await node.start()
            try:
                await open_channel_to_api(node, chain, ready_a["url"], 200_000)
                await open_channel_to_api(node, chain, ready_b["url"], 200_000)  # a route to each seller

                def on_update(s: BuyerStream) -> None:
                    if s.delivered_units >= BATCH - 1 and a.poll() is None:
                        a.send_signal(signal.SIGKILL)  # one tick before the boundary: batch 2 is a's

                # the budget is the stream's price: a batch paid to a and again to b counts once
                buyer = StreamBuyer(ready_a["metered"], NodePayer(node, timeout=10),
                                    BuyPolicy(max_msat=ticks * tick_msat, batch_ticks=BATCH),
                                    on_update=on_update)
                return await buyer.run(stop_after_units=ticks), buyer
            finally:
                await node.stop()

        try:
            receipt, buyer = asyncio.run(scenario())
        finally:
            for process in (a, b):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
        assert a.returncode == -signal.SIGKILL and buyer.reconnected == 1
        statement = receipt.signed.statement
        assert statement.seller_node_id.hex() == ready_b["node_id"]
        checked = recompute(receipt)
        assert checked.consistent and checked.signature_valid, checked.problems
        assert checked.paid_ticks == ticks and statement.delivered_units == ticks and checked.unserved_msat == 0
        paid_to: dict[str, list[int]] = {ready_a["node_id"]: [], ready_b["node_id"]: []}
        for invoice in buyer.paid_invoices:
            decoded = decode(invoice)
            paid_to[decoded.payee.hex()].append(decoded.amount_msat or 0)
        assert paid_to[ready_b["node_id"]], "b invoiced no batch after the take-over"

        async def stored() -> tuple[int, int, int, int, int, dict[str, object]]:
            allowances, streams = open_allowance_store(store), open_stream_store(store)
            try:
                allowance = await allowances.load(statement.allowance_id)
                record = await streams.load(statement.stream_id)
                assert allowance is not None and record is not None
                return (allowance.state.spent, allowance.lanes[0].index, record.delivered_units, record.epoch,
                        allowance.state.paid_calls, json.loads(allowance.state.extra or "{}"))
            finally:
                await allowances.aclose()
                await streams.aclose()

        spent, index, delivered, epoch, paid_calls, extra = asyncio.run(stored())
        assert (spent, index, delivered, epoch) == (ticks, ticks, ticks, 1)  # each link once, delivered == paid
        # every msat the buyer paid is counted: in the paid calls, or recorded for a's node to credit
        superseded = extra.get("superseded", [])
        assert isinstance(superseded, list)
        unseen = sum(int(s["calls"]) for s in superseded if s["payee"] == ready_a["node_id"]) * tick_msat
        assert sum(map(sum, paid_to.values())) == paid_calls * tick_msat + unseen
        print(f"paid to a {paid_to[ready_a['node_id']]}, to b {paid_to[ready_b['node_id']]}, unseen at a {unseen}")


def test_a_superseded_payment_the_refund_already_left_out_is_owed_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """b closes the allowance while a's batch invoice (paid to a) is pending: it is recorded as
    superseded, and b refunds what it sees. When a comes back, the refund is already recorded
    (its amount fixed, paid by b): a records the payment as owed, once, and status reports it
    (a seller with automatic refunds pays it back: tests/test_auto_refunds.py)."""
    from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
    from lightspeed.micro.token import AllowanceRequest, Token

    async def scenario() -> None:
        allowances = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        ledger_a, ledger_b = Ledger(), Ledger()
        a = stream_seller(allowances, ledger_a, ledger_a.node_id, ledger_a.privkey, tariff=TARIFF).allowances
        b = stream_seller(allowances, ledger_b, ledger_b.node_id, ledger_b.privkey, tariff=TARIFF,
                          payer=ledger_b).allowances
        try:
            tip = lane_tip(b"\x02" * 32, 0)
            walker = ChainWalker.from_tip(tip, 30)
            terms = await a.create(AllowanceRequest(30, (anchor(tip, 30),), BATCH))
            await ledger_a.pay(terms.invoice)
            receipt = None
            for index in range(1, 6):
                receipt = await a.spend(Token(terms.allowance_id, 0, index, walker.link(index)))
            assert receipt is not None and receipt.next_invoice is not None
            await ledger_a.pay(receipt.next_invoice)
            for index in range(6, 9):
                await b.spend(Token(terms.allowance_id, 0, index, walker.link(index)))
            assert await b.close_by_seller(terms.allowance_id) == 2 * TARIFF.tick_msat  # what b sees
            claim = await ledger_b.create_client_invoice(2 * TARIFF.tick_msat, "refund", 600)
            view = await b.refund(Token(terms.allowance_id, 0, 9, walker.link(9)), claim.encode())
            assert view.status == "paid"
            with caplog.at_level("WARNING", logger="lightspeed.micro"):
                status = await a.status(terms.allowance_id)
            assert status["paid_calls"] == 10 and status["refund_msat"] == 2 * TARIFF.tick_msat  # b's, as paid
            assert (status["late_refund_msat"], status["late_refunded_msat"]) == (BATCH * TARIFF.tick_msat, 0)
            assert f"allowance {terms.allowance_id.hex()}: {BATCH * TARIFF.tick_msat} msat paid to this node" \
                in caplog.text
            for server in (a, b):  # touched again, anywhere: owed once
                again = await server.status(terms.allowance_id)
                assert (again["late_refund_msat"], again["refund_msat"]) == (BATCH * TARIFF.tick_msat,
                                                                             2 * TARIFF.tick_msat)
            stored = await allowances.load(terms.allowance_id)
            assert stored is not None
            extra = json.loads(stored.state.extra or "{}")
            assert "superseded" not in extra
            assert extra["owed"] == [{"hash": decode(receipt.next_invoice).payment_hash.hex(),
                                      "payee": ledger_a.node_id.hex(), "msat": BATCH * TARIFF.tick_msat}]
        finally:
            await allowances.aclose()

    asyncio.run(scenario())
