"""Force close through the REST API (and its OpenAPI entry): the operator's way out when the peer is gone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.channel.htlc_log import Side
from tests.onchain_support import (
    ANCHOR_SAT,
    ANCHORS_SAT,
    commitment_fee,
    fees_to,
    mine,
    mine_until,
    open_paid_channel,
)

TOKEN = "t" * 32


@pytest.mark.slow
def test_force_close_through_the_api_returns_the_commitment_and_lists_the_channel_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x71)
        alice_msat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        before = alice.wallet.balance_sat()
        ctx = ApiContext(alice, listen="127.0.0.1:0")
        transport = httpx.ASGITransport(app=create_app(ctx, TOKEN))
        async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                     headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            spec = (await client.get("/openapi.json")).json()
            assert "/v1/channels/{channel_id}/force-close" in spec["paths"]
            missing = await client.post(f"/v1/channels/{'ab' * 32}/force-close")
            assert missing.status_code == 404 and missing.json()["error"]["field"] == "channel_id"
            closed = await client.post(f"/v1/channels/{cid.hex()}/force-close")
            assert closed.status_code == 200, closed.text
            txid = bytes.fromhex(closed.json()["closing_txid"])[::-1]
            found = chain.get_transaction(txid)
            assert found is not None  # our commitment, in the mempool
            again = await client.post(f"/v1/channels/{cid.hex()}/force-close")
            assert again.status_code == 409
            listed = (await client.get("/v1/channels")).json()["channels"]
            assert [(c["channel_id"], c["state"]) for c in listed] == [(cid.hex(), "closed")]
        commitment = found[0]
        await mine(chain, 146)
        await mine_until(chain, lambda: alice.wallet.balance_sat() > before)
        assert alice.wallet.balance_sat() - before == (
            alice_msat // 1000 - commitment_fee(commitment) - ANCHORS_SAT + ANCHOR_SAT - fees_to(chain, alice, commitment))
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
