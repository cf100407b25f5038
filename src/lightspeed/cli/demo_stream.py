"""Demo: an EV charger sells energy by the tick; the buyer cuts payment, delivery stops within one
tick, and the unused prepaid credit goes back to the buyer through the return path its payment
carried, without the charger ever learning who the buyer is.

Three nodes over TCP in a line, buyer - hub - charger (the hub funds both channels, so each side
can pay the other): the buyer reaches the charger only through the hub, as a phone reaches a
merchant through its wallet's LSP.
"""

from __future__ import annotations

import os
import time
from typing import Any

HUB_CHANNEL_SAT = 1_000_000
PUSH_MSAT = 500_000_000  # half of each channel to the other side: money can flow both ways


def stream_cut_and_refund(stop_after_wh: int = 20, budget_msat: int = 30_000) -> dict[str, Any]:
    import asyncio

    from lightspeed.chain import RegtestChain
    from lightspeed.cli.stream_example import (
        CHARGER_PATH,
        CHARGER_TARIFF,
        charger_meter,
        serve_asgi,
        stream_seller,
    )
    from lightspeed.micro.auto_refund import AutoRefunds
    from lightspeed.micro.lightning import NodePayee, NodePayer, NodeReturnPaths
    from lightspeed.micro.stores.memory import MemoryAllowanceStore
    from lightspeed.node import Node
    from lightspeed.node.regtest import mine_forever
    from lightspeed.offers import decode_offer
    from lightspeed.stream.asgi import StreamMiddleware
    from lightspeed.stream.client import BuyPolicy, StreamBuyer

    async def not_found(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def received(node: Node) -> int:
        return sum(i.received_msat for i in node.store.invoices() if i.status == "paid")

    async def scenario() -> dict[str, Any]:
        chain = RegtestChain(":memory:")
        buyer, hub, charger = (Node(os.urandom(32), chain, os.urandom(32), announce_channels=True) for _ in range(3))
        for _ in range(2):  # one coin per channel
            chain.fund(hub.wallet.new_key().script_pubkey, HUB_CHANNEL_SAT + 1_000_000)
        await hub.connect("127.0.0.1", await buyer.start(), buyer.node_id)
        await hub.connect("127.0.0.1", await charger.start(), charger.node_id)
        await hub.start()
        mining = asyncio.create_task(mine_forever(chain, 0.02))
        store = MemoryAllowanceStore()
        auto = AutoRefunds(store, NodeReturnPaths(charger))
        seller = stream_seller(store, NodePayee(charger), charger.node_id, charger.privkey,
                               meter=charger_meter(interval=0.01), payer=NodePayer(charger), auto_refunds=auto)
        server = await serve_asgi(StreamMiddleware(not_found, {CHARGER_PATH: seller}))
        try:
            for peer in (buyer, charger):  # one after the other: each spends its own coin
                await hub.open_channel(peer.node_id, HUB_CHANNEL_SAT, PUSH_MSAT)
            while buyer.graph is None or not list(buyer.graph.channels_into(charger.node_id)):  # gossip
                await asyncio.sleep(0.05)
            before = received(buyer)
            started = time.perf_counter()
            # The buyer's prepayment carries a fresh blinded return path, introduced by the hub.
            stream = StreamBuyer(server.url + CHARGER_PATH, NodePayer(buyer, return_path=True),
                                 BuyPolicy(max_msat=budget_msat, batch_ticks=budget_msat // CHARGER_TARIFF.tick_msat))
            receipt = await stream.run(stop_after_units=stop_after_wh)  # the buyer cuts payment here
            stream_ms = (time.perf_counter() - started) * 1000
            statement = receipt.signed.statement
            view = None
            for _ in range(200):  # the charger closes the stream's allowance, then refunds
                view = await seller.allowances.auto_refund(statement.allowance_id, wait=20)
                if view is not None and view.status not in ("in_flight",):
                    break
                await asyncio.sleep(0.05)
            assert view is not None and view.status == "paid", view
            while received(buyer) < before + view.refunded_msat:
                await asyncio.sleep(0.02)
            paid_msat = stream.stream.paid_msat if stream.stream is not None else 0
            prepaid_msat = sum(int(p.amount_msat) for p in buyer.store.payments() if p.status == "succeeded")
            # The charger holds the return path with the payment; nothing in it names the buyer.
            paths = [decode_offer(t) for h in charger.settled_invoices if (t := charger.store.return_path(h))]
            anonymous = (bool(paths) and buyer.node_id not in charger._peers
                         and not any(buyer.node_id in offer.to_tlv() for offer in paths))
            return {"tariff": f"{CHARGER_TARIFF.msat_per_unit} msat/{CHARGER_TARIFF.unit}",
                    "prepaid_msat": prepaid_msat, "delivered_wh": statement.delivered_units,
                    "paid_by_links_msat": paid_msat,
                    "delivery_stopped_within_one_tick": statement.delivered_units * CHARGER_TARIFF.msat_per_unit
                    >= paid_msat - CHARGER_TARIFF.tick_msat,
                    "refunded_msat": view.refunded_msat, "refund_received_msat": received(buyer) - before,
                    "payer_anonymous_to_charger": anonymous, "stream_ms": round(stream_ms)}
        finally:
            await server.stop()
            await auto.aclose()
            mining.cancel()
            for node in (buyer, hub, charger):
                await node.stop()

    return asyncio.run(scenario())
