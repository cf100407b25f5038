"""Demo: a client calls a paid API 10,000 times through one allowance, paid with one Lightning payment."""

from __future__ import annotations

import os
import time
from typing import Any


def paid_api_calls(calls: int = 10_000, lanes: int = 8) -> dict[str, Any]:
    import asyncio

    import httpx

    from lightspeed.chain.regtest import RegtestChain
    from lightspeed.cli.paid_example import open_channel_to_api, start_paid_api
    from lightspeed.micro.client import ClientPolicy, LightspeedAuth
    from lightspeed.micro.lightning import NodePayer
    from lightspeed.micro.stores.memory import MemoryAllowanceStore
    from lightspeed.micro.terms import Price
    from lightspeed.node.node import Node

    async def scenario() -> dict[str, Any]:
        chain = RegtestChain(":memory:")
        api = await start_paid_api(chain, MemoryAllowanceStore(), Price(1, 10), mine_every=None)
        client = Node(os.urandom(32), chain, os.urandom(32))
        await client.start()
        try:
            await open_channel_to_api(client, chain, api.url, 200_000)
            auth = LightspeedAuth(NodePayer(client), ClientPolicy(calls_per_lane=calls // lanes, lanes=lanes,
                                                                      low_water=0))  # exactly one allowance
            ok = 0
            async with httpx.AsyncClient(base_url=api.url, auth=auth,
                                         limits=httpx.Limits(max_connections=lanes)) as http:
                async def worker(first: int) -> int:
                    served = 0
                    for n in range(first, calls, lanes):
                        served += (await http.get(f"/weather/city{n}")).status_code == 200
                    return served

                started = time.perf_counter()
                ok = sum(await asyncio.gather(*(worker(i) for i in range(lanes))))
                elapsed = time.perf_counter() - started
            return {"calls_served": ok, "lightning_payments": len(auth.paid_invoices),
                    "paid_msat": auth.spent_msat, "price": "1/10 msat per call",
                    "calls_per_s": round(calls / elapsed), "signatures_per_call": 0}
        finally:
            await client.stop()
            await api.stop()

    return asyncio.run(scenario())
