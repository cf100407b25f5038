"""Demo: an asynchronous payment (issue 14, LightningRod): A pays B while B is offline, through two LSPs.

Four in-process nodes over loopback TCP on one regtest chain, channels announced by gossip:
A - LSP_a - LSP_b - B. Both clients register with their LSP (signed onion messages). B goes away;
A pays B's invoice asynchronously (LSP_a holds the HTLC, LSP_b keeps A's notice in B's mailbox)
and goes away too. B comes back, collects the notice, unblocks: LSP_a releases, B is paid. A comes
back, its channel settles, and A has its proof (``AsyncPaymentSucceeded``). Each node reopens its
own store when it comes back, as a restarted phone would.
"""

from __future__ import annotations

import os
import time
from typing import Any

AMOUNT_MSAT = 25_000_000


def async_payment_through_lsps() -> dict[str, Any]:
    import asyncio

    from lightspeed.asyncpay.policy import HoldLimits
    from lightspeed.chain import RegtestChain
    from lightspeed.invoice import verify_payment_proof
    from lightspeed.node.async_lsp import AsyncLsp, release_key_for
    from lightspeed.node.node import (
        AsyncPaymentSucceeded,
        HtlcHeld,
        HtlcReleased,
        Node,
        NodeEvent,
        PaymentReceived,
    )
    from lightspeed.node.regtest import mine_forever
    from lightspeed.store import SqliteStore
    from lightspeed.store.asyncpay import AsyncPayStore

    async def wait_for(node: Node, kind: type, timeout: float = 20) -> tuple[NodeEvent, float]:
        """The node's next event of ``kind`` and when it came (perf_counter)."""
        async def first() -> tuple[NodeEvent, float]:
            while True:
                event = await node.events.get()
                if isinstance(event, kind):
                    return event, time.perf_counter()

        return await asyncio.wait_for(first(), timeout)

    async def scenario() -> dict[str, Any]:
        chain = RegtestChain(":memory:")
        keys = {name: (os.urandom(32), os.urandom(32)) for name in ("a", "lsp_a", "lsp_b", "b")}
        stores = {name: SqliteStore(":memory:") for name in keys}

        def make(name: str) -> Node:  # the same keys and store each time the node comes (back) online
            return Node(keys[name][0], chain, keys[name][1], store=stores[name], announce_channels=True)

        a, lsp_a, lsp_b, b = (make(name) for name in keys)
        for lsp in (lsp_a, lsp_b):
            lsp.async_lsp = AsyncLsp(AsyncPayStore(":memory:"), HoldLimits(), release_key_for(lsp.privkey))
        for funder in (a, lsp_a, lsp_b):
            chain.fund(funder.wallet.new_key().script_pubkey, 3_000_000)
        ports = {"lsp_a": await lsp_a.start(), "lsp_b": await lsp_b.start()}
        ports["a"], ports["b"] = await a.start(), await b.start()
        await a.connect("127.0.0.1", ports["lsp_a"], lsp_a.node_id)
        await lsp_a.connect("127.0.0.1", ports["lsp_b"], lsp_b.node_id)
        await b.connect("127.0.0.1", ports["lsp_b"], lsp_b.node_id)
        nodes = [a, lsp_a, lsp_b, b]
        mining = asyncio.create_task(mine_forever(chain, 0.02))
        try:
            await asyncio.gather(a.open_channel(lsp_a.node_id, 1_000_000),
                                 lsp_a.open_channel(lsp_b.node_id, 1_000_000),
                                 lsp_b.open_channel(b.node_id, 1_000_000))
            while a.graph is None or not list(a.graph.channels_into(b.node_id)):  # gossip
                await asyncio.sleep(0.05)
            mining.cancel()  # the chain stands still from here: a held HTLC's deadline is in blocks
            await b.asyncpay.register_with(lsp_b.node_id, None)
            await a.asyncpay.register_with(lsp_a.node_id, None)
            invoice = b.create_invoice(AMOUNT_MSAT, "paid while away")
            await b.stop()  # B goes offline
            b_offline = time.perf_counter()

            payment = await a.asyncpay.pay_async(invoice)  # through the LSP A registered with
            held, held_at = await wait_for(lsp_a, HtlcHeld)
            assert isinstance(held, HtlcHeld)
            pay_to_held_ms = (held_at - b_offline) * 1000
            released = asyncio.create_task(wait_for(lsp_a, HtlcReleased, 60))
            while not lsp_b.async_lsp or not lsp_b.async_lsp.pending_for(b.node_id, now=int(time.time())):
                await asyncio.sleep(0.02)  # A's notice waits in B's mailbox at LSP_b
            payment.task.cancel()
            await a.stop()  # A goes offline too; its HTLC stays held at LSP_a

            await asyncio.sleep(1.0)  # both away for a while
            b_back = time.perf_counter()
            b = nodes[3] = make("b")
            await b.start(port=ports["b"])
            _, b_paid = await wait_for(b, PaymentReceived)
            _, released_at = await released

            a_back = time.perf_counter()
            a = nodes[0] = make("a")
            await a.start(port=ports["a"])
            succeeded, a_done = await wait_for(a, AsyncPaymentSucceeded)
            assert isinstance(succeeded, AsyncPaymentSucceeded)
            if not verify_payment_proof(invoice, succeeded.preimage):
                raise AssertionError("the preimage A got does not prove the payment")
            return {
                "amount_msat": AMOUNT_MSAT,
                "held_at_lsp_a_ms": round(pay_to_held_ms, 1),
                "htlc_held_s": round(released_at - held_at, 2),
                "capital_locked_msat_s": round(held.amount_msat * (released_at - held_at)),
                "b_online_to_release_ms": round((released_at - b_back) * 1000, 1),
                "b_online_to_paid_ms": round((b_paid - b_back) * 1000, 1),
                "a_online_to_proof_ms": round((a_done - a_back) * 1000, 1),
                "proof_of_payment": "verified",
                "lsp_a_holds_now": len(lsp_a.async_lsp.book.held()) if lsp_a.async_lsp else None,
            }
        finally:
            mining.cancel()
            for node in nodes:
                await node.stop()

    return asyncio.run(scenario())
