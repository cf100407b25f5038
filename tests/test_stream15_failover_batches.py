"""Seller failover when the prepayment is bought in several batches (issue 15 part 2).

Each seller process has its own node: a batch invoice is payable to (and seen paid by) one node
only. After a take-over the serving process replaces the dead one's pending batch invoice by its
own (the buyer pays that one); the superseded invoice, if the buyer paid it, is credited by its
node when its process is back, so the payment ends up in the refund instead of being lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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

    async def pay(self, invoice: str) -> bytes:
        self.calls += 1
        self.before(self.calls)
        payee = decode(invoice).payee
        if payee in self.dead:
            raise PaymentError("no route: the payee's node is offline")
        preimage = await self.ledgers[payee].pay(invoice)
        self.after(self.calls)
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
            for index in range(6, 11):
                await b.spend(Token(terms.allowance_id, 0, index, walker.link(index)))
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
