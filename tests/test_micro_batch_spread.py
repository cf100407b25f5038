"""Batched allowances renew at a point of their own: the offer spread and the early take of a paid batch.

A thousand streams opened together used to renew together (each renewal ~1 ms of the server's
CPU: the invoice made and signed, its payment, the batch taken); the offer point now varies per
allowance within ``ServerPolicy.batch_offer_spread`` of a batch, and a batch paid on receipt is
taken at half that point, not at the call that finds the paid calls spent.
"""

from __future__ import annotations

import os

import pytest

from lightspeed.errors import UsageError
from lightspeed.invoice.decode import decode
from lightspeed.micro.allowance_cache import batch_offer_point
from lightspeed.micro.server import ServerPolicy
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.terms import Price
from tests.support.ledger import Ledger
from tests.test_micro_server import Client, bought, make_server, refused, run

BATCH = 100


def test_the_offer_point_is_half_a_batch_plus_a_share_fixed_by_the_allowance_id() -> None:
    ids = [os.urandom(16) for _ in range(2_000)]
    points = [batch_offer_point(BATCH, i, 0.25) for i in ids]
    assert all(BATCH // 2 <= p <= BATCH // 2 + BATCH // 4 for p in points)
    assert points == [batch_offer_point(BATCH, i, 0.25) for i in ids]  # every process agrees
    # spread evenly: each quarter of the 25 calls gets about a quarter of the allowances
    quarters = [sum(BATCH // 2 + q * 25 // 4 <= p < BATCH // 2 + (q + 1) * 25 // 4 for p in points) for q in range(4)]
    assert all(350 <= n <= 650 for n in quarters), quarters
    assert {batch_offer_point(BATCH, i, 0.0) for i in ids} == {BATCH // 2}  # no spread: half a batch
    assert batch_offer_point(BATCH, b"\xff" * 16, 0.5) == BATCH - 1  # never a whole batch ahead
    assert batch_offer_point(1, b"\xff" * 16, 0.5) == 0


@pytest.mark.parametrize("spread", [-0.01, 0.51, 1.0])
def test_a_spread_outside_half_a_batch_is_refused(spread: float) -> None:
    with pytest.raises(UsageError, match=r"^batch_offer_spread: "):
        ServerPolicy(Price(1), batch_offer_spread=spread)


@pytest.mark.parametrize("spread", [0.0, 0.25, 0.5])
def test_the_next_batch_is_offered_first_at_the_allowances_own_point(spread: float) -> None:
    async def go() -> None:
        ledger = Ledger()
        server = make_server(ledger=ledger, batch_offer_spread=spread)
        client = await bought(server, Client(per_lane=1_000, batch=BATCH))
        assert client.terms is not None
        point = batch_offer_point(BATCH, client.terms.allowance_id, spread)
        for index in range(1, BATCH + 1):
            receipt = await server.spend(client.token(index))
            if receipt.next_invoice is not None:
                break
        assert receipt.remaining_calls == point, (index, point)
        assert receipt.next_invoice is not None and decode(receipt.next_invoice).amount_msat == BATCH * 2

    run(go())


def test_a_batch_paid_on_receipt_is_taken_at_half_the_offer_point_and_never_falls_due() -> None:
    async def go() -> None:
        store, ledger = MemoryAllowanceStore(), Ledger()
        server = make_server(store, ledger)
        client = await bought(server, Client(per_lane=1_000, batch=BATCH))
        assert client.terms is not None
        allowance_id = client.terms.allowance_id
        offer_at = batch_offer_point(BATCH, allowance_id, server.policy.batch_offer_spread)
        taken_at = None
        most_ahead = 0
        paid: set[str] = set()
        for index in range(1, 4 * BATCH + 1):  # four batches' calls, every batch paid on receipt
            receipt = await server.spend(client.token(index))
            most_ahead = max(most_ahead, receipt.remaining_calls)
            if receipt.next_invoice is not None and receipt.next_invoice not in paid:
                ledger.pay_sync(receipt.next_invoice)  # on receipt, once (it is offered call after call)
                paid.add(receipt.next_invoice)
            status = await server.status(allowance_id)
            if taken_at is None and status["paid_calls"] == 2 * BATCH:
                taken_at = index
        # the second batch counted at the first call with half the offer point or fewer left
        assert taken_at is not None and BATCH - taken_at == offer_at // 2, (taken_at, offer_at)
        assert (await server.status(allowance_id))["paid_calls"] == 5 * BATCH
        # paid ahead: at most the batch in use plus the next, never more than 1.5 + spread batches
        assert most_ahead <= BATCH + offer_at <= 1.75 * BATCH
        # another process on the same store sees the batch counted (it is in the store)
        other = make_server(store, ledger)
        assert (await other.status(allowance_id))["paid_calls"] == 5 * BATCH

    run(go())


def test_a_batch_not_yet_paid_at_the_look_is_taken_when_it_falls_due() -> None:
    async def go() -> None:
        ledger = Ledger()
        server = make_server(ledger=ledger)
        client = await bought(server, Client(per_lane=1_000, batch=BATCH))
        offered = None
        for index in range(1, BATCH + 1):  # the whole batch spent, the offer left unpaid
            receipt = await server.spend(client.token(index))
            offered = offered or receipt.next_invoice
        assert offered is not None
        due = client.token(BATCH + 1)
        with refused("batch_due") as caught:
            await server.spend(due)
        assert caught.value.invoice == offered
        ledger.pay_sync(offered)  # paid late: counted at the next call, as before
        assert (await server.spend(due)).remaining_calls == BATCH - 1

    run(go())
