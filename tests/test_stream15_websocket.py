"""The stream over a real WebSocket: the seller served by uvicorn (the ASGI binding) and by
:mod:`lightspeed.stream.wsserver` (every test through ``_start`` runs on both), the asyncio buyer,
real SQLite.

Payments go through the in-process ledger (real signed invoices; Lightning itself is covered by
the micro end-to-end tests), tokens through the real allowance server and store.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from lightspeed.cli.stream_example import serve_asgi, stream_seller
from lightspeed.errors import PaymentError
from lightspeed.invoice.decode import decode
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.stream import BuyerStream, Receipt, SellerStream, Tariff, recompute
from lightspeed.stream import client as client_module
from lightspeed.stream.asgi import StreamMiddleware
from lightspeed.stream.client import BuyPolicy, StreamBuyer
from lightspeed.stream.messages import encode, parse
from lightspeed.stream.wsclient import WebSocket
from lightspeed.stream.wsserver import serve_websockets
from tests.support.ledger import Ledger

TARIFF = Tariff("Wh", msat_per_unit=7, tick_units=2, max_units=2_000, window_ticks=8)


SERVE = [serve_asgi]  # the server _start uses: set by the fixture below


@pytest.fixture(autouse=True, params=["uvicorn", "wsserver"])
def _server_kind(request: pytest.FixtureRequest) -> None:
    SERVE[0] = serve_asgi if request.param == "uvicorn" else serve_websockets  # type: ignore[assignment]


async def _not_found(scope: object, receive: object, send: object) -> None:
    raise AssertionError("only the stream path is used")


def _fast_meter(units_per_report: int = 1):  # type: ignore[no-untyped-def]
    async def meter(stream: SellerStream, grant: int) -> int:
        await asyncio.sleep(0)
        return min(grant, units_per_report)
    return meter


async def _start(tmp_path: Path, meter=None):  # type: ignore[no-untyped-def]
    ledger = Ledger()
    store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
    seller = stream_seller(store, ledger, ledger.node_id, ledger.privkey, tariff=TARIFF,
                           meter=meter or _fast_meter())
    server = await SERVE[0](StreamMiddleware(_not_found, {"/charge": seller}))
    return ledger, store, seller, server


def test_a_buyer_streams_its_budget_and_the_statement_matches_the_links(tmp_path: Path) -> None:
    async def scenario() -> Receipt:
        ledger, store, _seller, server = await _start(tmp_path)
        updates: list[int] = []
        try:
            buyer = StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=50 * TARIFF.tick_msat),
                                on_update=lambda b: updates.append(b.delivered_units))
            receipt = await buyer.run()
            # the prepayment never exceeded one window: the ledger saw batches of at most 4 ticks
            assert ledger.payments and all(p <= TARIFF.window_ticks * TARIFF.tick_msat for p in ledger.payments)
            assert sum(ledger.payments) == 50 * TARIFF.tick_msat
            assert updates == sorted(updates) and updates[-1] == 100  # live progress, in order
            return receipt
        finally:
            await server.stop()
            await store.aclose()

    receipt = asyncio.run(scenario())
    checked = recompute(receipt)
    assert checked.consistent, checked.problems
    assert checked.paid_ticks == 50 and checked.paid_msat == 50 * TARIFF.tick_msat
    assert checked.delivered_units == 100 and checked.unserved_msat == 0
    # the receipt file round-trips and still checks
    again = Receipt.from_json(json.loads(json.dumps(receipt.to_json())))
    assert recompute(again).consistent


def test_when_the_buyer_stops_paying_delivery_stops_within_one_tick(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, store, seller, server = await _start(tmp_path, _fast_meter(1))
        try:
            buyer = StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=10**6))
            receipt = await buyer.run(stop_after_units=11)  # stops paying once 11 units are paid for
            s = receipt.signed.statement
            assert s.paid_units == 12  # ticks of 2: the sixth tick paid the 11th and 12th units
            assert s.delivered_units == 12
            live = seller.streams[s.stream_id]
            await asyncio.sleep(0.2)  # no payment: nothing more is delivered
            assert live.machine.delivered_units == 12 and live.machine.grant() == 0
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_dropped_connection_is_resumed_and_nothing_is_paid_twice(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, store, seller, server = await _start(tmp_path)
        try:
            dropped = False

            def cut(b: BuyerStream) -> None:
                nonlocal dropped
                if b.delivered_units >= 20 and not dropped and buyer.ws is not None:
                    dropped = True
                    buyer.ws.abort()  # no closing handshake: a cut cable

            buyer = StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=30 * TARIFF.tick_msat),
                                on_update=cut)
            receipt = await buyer.run()
            assert dropped and buyer.reconnected == 1
            checked = recompute(receipt)
            assert checked.consistent, checked.problems
            assert checked.paid_ticks == 30 and checked.delivered_units == 60
            status = await seller.allowances.status(receipt.signed.statement.allowance_id)
            assert status["spent"] == 30  # the store counted every link once
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_peer_gone_while_its_delivery_is_reported_pauses_the_stream_and_the_buyer_resumes(tmp_path: Path) -> None:
    """The report of a delivery fails because the buyer's connection is gone: the stream pauses
    (it is resumed and goes on), it does not end as if the meter had failed."""
    buyers: list[StreamBuyer] = []
    cut = [False]

    async def meter(stream: SellerStream, grant: int) -> int:
        if stream.delivered_units == 6 and not cut[0] and buyers[0].ws is not None:
            cut[0] = True
            await buyers[0].ws.close()  # the buyer closes (e.g. it timed out) while the seller meters this tick
            await asyncio.sleep(0.2)  # the server has the close before it reports the tick
        await asyncio.sleep(0)
        return min(grant, 1)

    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path, meter)
        try:
            buyers.append(StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=10 * TARIFF.tick_msat)))
            receipt = await buyers[0].run()
            assert cut[0] and buyers[0].reconnected == 1 and buyers[0].ended is None
            checked = recompute(receipt)
            assert checked.consistent, checked.problems
            assert checked.paid_ticks == 10 and checked.delivered_units == 20  # all of it, after the resume
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_bad_frames_get_errors_naming_the_field_and_the_stream_goes_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path)
        try:
            ws = await WebSocket.connect(server.url + "/charge")
            assert parse(await ws.recv(5))["type"] == "tariff"
            await ws.send("not json")
            assert parse(await ws.recv(5))["code"] == "bad_message"
            await ws.send(encode("buy", anchor="zz" * 32, ticks=1, batch_ticks=1))
            error = parse(await ws.recv(5))
            assert error["code"] == "bad_message" and "buy.anchor" in error["reason"]
            await ws.send(encode("pay", index=1, link=bytes(32)))
            assert parse(await ws.recv(5))["code"] == "not_open"
            await ws.send(encode("buy", anchor=bytes(32), ticks=1, batch_ticks=TARIFF.window_ticks + 1))
            assert "batch_ticks" in parse(await ws.recv(5))["reason"]
            await ws.close()
            # the server still serves a real buyer afterwards
            receipt = await StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=3 * TARIFF.tick_msat)).run()
            assert receipt.signed.statement.paid_ticks == 3
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_budget_below_one_tick_is_refused_before_paying(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path)
        try:
            with pytest.raises(PaymentError, match="does not buy one tick"):
                await StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=TARIFF.tick_msat - 1)).run()
            assert ledger.payments == []
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_meter_that_stops_ends_the_stream_with_a_statement(tmp_path: Path) -> None:
    from lightspeed.stream.asgi import MeterStopped

    async def tank_of_9(stream: SellerStream, grant: int) -> int:
        if stream.delivered_units >= 9:
            raise MeterStopped("the tank is full")
        return min(grant, 1)

    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path, tank_of_9)
        try:
            buyer = StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=40 * TARIFF.tick_msat))
            receipt = await buyer.run()
            assert buyer.ended == "ended: the tank is full"
            s = receipt.signed.statement
            assert s.delivered_units == 9 and s.paid_units == 10  # one unit of the last tick unserved
            checked = recompute(receipt)
            assert checked.consistent and checked.unserved_msat == TARIFF.msat_per_unit
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_meter_reporting_more_than_granted_ends_the_stream_without_billing_it(tmp_path: Path) -> None:
    async def greedy(stream: SellerStream, grant: int) -> int:
        return grant + 1 if stream.delivered_units >= 4 else min(grant, 1)

    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path, greedy)
        try:
            buyer = StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=40 * TARIFF.tick_msat))
            receipt = await buyer.run()
            assert buyer.ended is not None and buyer.ended.startswith("meter_failed: units: the meter reported")
            assert receipt.signed.statement.delivered_units == 4  # the over-report was never counted
            assert recompute(receipt).consistent
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_meter_that_delivers_nothing_at_times_still_delivers_every_paid_unit(tmp_path: Path) -> None:
    """The payment's own handler delivers one grant; what the meter left (nothing, every third
    call here) goes on in the delivery task, and the stream still ends with every unit delivered."""
    calls = [0]

    async def hesitant(stream: SellerStream, grant: int) -> int:
        calls[0] += 1
        await asyncio.sleep(0)
        return 0 if calls[0] % 3 == 0 else min(grant, 1)

    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path, hesitant)
        try:
            buyer = StreamBuyer(server.url + "/charge", ledger, BuyPolicy(max_msat=12 * TARIFF.tick_msat))
            receipt = await buyer.run()
            s = receipt.signed.statement
            assert s.paid_units == 24 and s.delivered_units == 24
            assert calls[0] == 35  # 24 units a unit at a time; calls 3, 6, ..., 33 delivered nothing
            assert recompute(receipt).consistent
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_the_buyer_pays_the_next_batch_while_the_ticks_it_funded_go_on_streaming(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch is offered when half the last one is spent; its payment (slow here, as a Lightning
    payment is) runs beside the stream, so ticks keep being delivered while it is under way, and
    every batch is still paid once and the budget holds. The buyer decodes each batch invoice
    once (it was six times: each decode checks the signature)."""
    during: list[tuple[int, int]] = []  # delivered units when each batch payment began and ended
    delivered = [0]
    decoded: list[str] = []

    def counting_decode(text: str) -> Any:
        decoded.append(text)
        return decode(text)

    monkeypatch.setattr(client_module, "decode", counting_decode)

    class SlowPayer:
        def __init__(self, ledger: Ledger) -> None:
            self.ledger = ledger

        async def pay(self, invoice: str) -> bytes:
            before = delivered[0]
            await asyncio.sleep(0.3)
            preimage = await self.ledger.pay(invoice)
            during.append((before, delivered[0]))
            return preimage

    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path, _fast_meter(2))
        try:
            def seen(b: BuyerStream) -> None:
                delivered[0] = b.delivered_units
            buyer = StreamBuyer(server.url + "/charge", SlowPayer(ledger),  # type: ignore[arg-type]
                                BuyPolicy(max_msat=24 * TARIFF.tick_msat, batch_ticks=4), on_update=seen)
            receipt = await buyer.run()
            checked = recompute(receipt)
            assert checked.consistent and checked.paid_ticks == 24 and checked.delivered_units == 48
            assert len(ledger.payments) == 6 and sum(ledger.payments) == 24 * TARIFF.tick_msat  # each batch once
            assert len(decoded) == len(set(decoded)) == 6, decoded  # the allowance's and five batches', once each
            later = during[1:]  # the first batch is paid before the stream opens
            assert later and all(end > begin for begin, end in later), during
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_open_before_paying_is_refused_with_the_invoice(tmp_path: Path) -> None:
    from lightspeed.micro.hashchain import anchor, lane_tip

    async def scenario() -> None:
        _ledger, store, _seller, server = await _start(tmp_path)
        try:
            ws = await WebSocket.connect(server.url + "/charge")
            await ws.recv(5)
            await ws.send(encode("buy", anchor=anchor(lane_tip(bytes(32), 0), 5), ticks=5, batch_ticks=2))
            offer = parse(await ws.recv(5))
            await ws.send(encode("open", allowance_id=offer["allowance_id"]))
            refused = parse(await ws.recv(5))
            assert refused["code"] == "unpaid" and refused["invoice"] == offer["invoice"]
            await ws.close()
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_a_buyer_without_an_allowance_pays_by_increments_and_the_receipt_proves_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, store, seller, server = await _start(tmp_path)
        try:
            buyer = StreamBuyer(server.url + "/charge", ledger,
                                BuyPolicy(max_msat=10 * TARIFF.tick_msat, ticks_per_increment=3))
            receipt = await buyer.run()
            # one Lightning payment per 3 ticks, the last one for the single tick the budget has left
            assert ledger.payments == [3 * TARIFF.tick_msat] * 3 + [TARIFF.tick_msat]
            s = receipt.signed.statement
            assert [t for _, t in s.increments] == [3, 3, 3, 1] and s.paid_ticks == 10 and not receipt.links
            assert s.delivered_units == 20
            checked = recompute(Receipt.from_json(json.loads(json.dumps(receipt.to_json()))))
            assert checked.consistent, checked.problems
            assert checked.paid_msat == 10 * TARIFF.tick_msat
            # a receipt without the invoices' preimages proves nothing
            bare = Receipt(receipt.signed, receipt.links, receipt.invoices[:-1])
            assert any("no invoice with its preimage" in p for p in recompute(bare).problems)
            assert not await store.unpaid_count()  # no allowance was created
            assert seller.streams[s.stream_id].machine.increment_ticks == 10
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_increments_survive_a_dropped_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        ledger, store, _seller, server = await _start(tmp_path)
        try:
            cut = False

            def drop(b: BuyerStream) -> None:
                nonlocal cut
                if b.delivered_units >= 7 and not cut and buyer.ws is not None:
                    cut = True
                    buyer.ws.abort()

            buyer = StreamBuyer(server.url + "/charge", ledger,
                                BuyPolicy(max_msat=12 * TARIFF.tick_msat, ticks_per_increment=4), drop)
            receipt = await buyer.run()
            assert cut and buyer.reconnected == 1
            assert ledger.payments == [4 * TARIFF.tick_msat] * 3  # nothing paid twice
            checked = recompute(receipt)
            assert checked.consistent and checked.paid_ticks == 12 and checked.delivered_units == 24
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())


def test_streams_by_increments_are_rate_limited_per_client_n_ok_n_plus_1_refused(tmp_path: Path) -> None:
    from lightspeed.stream.asgi import StreamSeller

    async def scenario() -> None:
        ledger = Ledger()
        store = SqliteAllowanceStore(tmp_path / "allowances.sqlite")
        allowances = stream_seller(store, ledger, ledger.node_id, ledger.privkey, tariff=TARIFF).allowances
        seller = StreamSeller(TARIFF, allowances, ledger.privkey, _fast_meter(), clock=lambda: 1000.0,
                              increment_streams_per_minute=2)
        server = await serve_asgi(seller)
        try:
            answers = []
            for _ in range(3):
                ws = await WebSocket.connect(server.url)
                await ws.recv(5)
                await ws.send(encode("buy_increments", ticks_per_payment=1, ticks=5))
                answers.append(parse(await ws.recv(5)))
                await ws.close()
            assert [a["type"] for a in answers[:2]] == ["position", "position"]
            assert answers[2]["type"] == "error" and answers[2]["code"] == "rate_limited"
            # a plain HTTP request to the stream's URL is told to use a WebSocket, not a 500
            import httpx
            async with httpx.AsyncClient() as http:
                response = await http.get(server.url.replace("ws://", "http://"))
            assert response.status_code == 426 and response.json()["code"] == "upgrade_required"
        finally:
            await server.stop()
            await store.aclose()

    asyncio.run(scenario())
