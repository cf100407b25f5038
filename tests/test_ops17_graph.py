"""describegraph, getnodeinfo, getchaninfo, queryroutes, feereport and updatechanpolicy on a live
gossiping line A - B - C (real TCP, BOLT 7 announcements after 6 confirmations)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from lightspeed.api.app import create_app
from lightspeed.api.forwards import FORWARDS_FILE, ForwardLog
from lightspeed.api.handlers import ApiContext
from lightspeed.cli.main import cli
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.invoice import format_short_channel_id
from lightspeed.node.node import Node
from lightspeed.routing import find_route, graph_from_describegraph
from tests.support.network import until
from tests.test_gossip_node import direction_policy, line

TOKEN = "g" * 32


@contextlib.asynccontextmanager
async def api(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(ApiContext(node), TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_graph_queries_and_fee_policy_on_a_live_network(tmp_path: Path) -> None:
    async def scenario() -> None:
        _chain, (a, b, c), _ports, (ab, bc) = await line()
        try:
            await until(lambda: direction_policy(a, bc, c.node_id) is not None
                        and direction_policy(a, ab, b.node_id) is not None, timeout=15)
            async with api(a) as client, api(b) as client_b:
                graph = ok(await client.get("/v1/graph"))
                assert sorted(e["channel_id"] for e in graph["edges"]) == sorted([str(ab), str(bc)])
                await until(lambda: a.gossip.gossiper.view.store.node(c.node_id) is not None, timeout=10)
                graph = ok(await client.get("/v1/graph"))
                nodes = {n["pub_key"]: n for n in graph["nodes"]}
                assert nodes[c.node_id.hex()]["alias"] == c.gossip.alias  # from C's node_announcement
                # `lightspeed route --graph` reads the daemon's own graph.
                snapshot = tmp_path / "graph.json"
                snapshot.write_text(json.dumps(graph))
                offline = find_route(graph_from_describegraph(graph), a.node_id, c.node_id, 5_000_000)
                assert [h.short_channel_id for h in offline.hops] == [ab, bc]
                result = CliRunner().invoke(cli, ["route", "--graph", str(snapshot), "--source", a.node_id.hex(),
                                                  "--target", c.node_id.hex(), "--amount-msat", "5000sat"])
                assert result.exit_code == 0, result.output
                assert [h["short_channel_id"] for h in json.loads(result.output)["hops"]] == [
                    format_short_channel_id(ab), format_short_channel_id(bc)]

                edge = ok(await client.get(f"/v1/graph/channels/{format_short_channel_id(bc)}"))
                assert edge == ok(await client.get(f"/v1/graph/channels/{bc}"))  # LND's integer form too
                c_side = edge["node1_policy"] if edge["node1_pub"] == c.node_id.hex() else edge["node2_policy"]
                assert (c_side["fee_base_msat"], c_side["fee_rate_milli_msat"], c_side["time_lock_delta"]) == (
                    "2500", "300", 60)
                assert edge["capacity"] == "1000000"
                missing = await client.get("/v1/graph/channels/1x1x1")
                assert missing.status_code == 404 and missing.json()["error"]["field"] == "short_channel_id"
                out_of_range = await client.get(f"/v1/graph/channels/{2**24}x0x0")
                assert out_of_range.status_code == 400

                info = ok(await client.get(f"/v1/graph/nodes/{b.node_id.hex()}"))
                assert info["num_channels"] == 2 and info["total_capacity"] == "2000000"
                nobody = pubkey_from_privkey(sha256(b"nobody")).hex()
                unknown = await client.get(f"/v1/graph/nodes/{nobody}")
                assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "node_id"

                routes = ok(await client.post("/v1/graph/routes", json={"node_id": c.node_id.hex(),
                                                                         "amount_msat": 5_000_000}))
                (route,) = routes["routes"]
                assert [h["pubkey"] for h in route["hops"]] == [b.node_id.hex(), c.node_id.hex()]
                # B forwards: its default fee on 5,000 sat is what the route pays.
                assert route["total_fee_msat"] == b.forwarding_policy.fee_msat(5_000_000)
                too_cheap = await client.post("/v1/graph/routes", json={
                    "node_id": c.node_id.hex(), "amount_msat": 5_000_000,
                    "max_fee_msat": route["total_fee_msat"] - 1})
                assert too_cheap.status_code == 409 and too_cheap.json()["error"]["field"] == "node_id"

                report = ok(await client_b.get("/v1/fees"))
                assert len(report["channels"]) == 2 and report["policy"]["fee_base_msat"] == \
                    b.forwarding_policy.fee_base_msat
                updated = ok(await client_b.post("/v1/fees", json={"fee_base_msat": 7_777, "fee_ppm": 42,
                                                                     "cltv_delta": 90}))
                assert (updated["policy"]["fee_base_msat"], updated["policy"]["fee_ppm"],
                        updated["policy"]["cltv_delta"]) == (7_777, 42, 90)
                bad = await client_b.post("/v1/fees", json={"htlc_minimum_msat": 10, "htlc_maximum_msat": 9})
                assert bad.status_code == 400 and bad.json()["error"]["field"] == "htlc_minimum_msat"
                # B's new channel_update reaches A by gossip, and A's routes price it.
                await until(lambda: getattr(direction_policy(a, bc, b.node_id), "fee_base_msat", 0) == 7_777,
                            timeout=10)
                route = ok(await client.post("/v1/graph/routes", json={"node_id": c.node_id.hex(),
                                                                        "amount_msat": 5_000_000}))["routes"][0]
                assert route["total_fee_msat"] == 7_777 + 5_000_000 * 42 // 1_000_000
        finally:
            for node in (a, b, c):
                await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.slow
def test_pay_within_a_fee_budget_over_a_chosen_channel_reports_the_fee(tmp_path: Path) -> None:
    async def scenario() -> None:
        _chain, (a, b, c), _ports, (ab, bc) = await line()
        try:
            await until(lambda: direction_policy(a, bc, b.node_id) is not None, timeout=15)
            fee = b.forwarding_policy.fee_msat(20_000_000)  # B's fee to forward 20,000 sat to C
            assert fee > 0
            async with api(a) as client, api(c) as payee:
                async def invoice() -> str:
                    created = await payee.post("/v1/invoices", json={"amount_msat": 20_000_000})
                    assert created.status_code == 201
                    text: str = created.json()["invoice"]
                    return text

                first = await invoice()
                over = await client.post("/v1/payments", json={"invoice": first, "max_fee_msat": fee - 1})
                assert over.status_code == 409 and over.json()["error"]["field"] == "invoice"
                ppm = fee * 1_000_000 // 20_000_000  # the ppm budget just below the fee
                over = await client.post("/v1/payments", json={"invoice": first, "max_fee_ppm": ppm - 1})
                assert over.status_code == 409, over.text
                nowhere = await client.post("/v1/payments", json={"invoice": first, "outgoing_channel": "9x9x9"})
                assert nowhere.status_code == 409 and nowhere.json()["error"]["field"] == "outgoing_channel"
                paid = ok(await client.post("/v1/payments", json={
                    "invoice": first, "max_fee_msat": fee, "outgoing_channel": format_short_channel_id(ab),
                    "max_parts": 1}))
                assert paid["status"] == "succeeded" and paid["fee_msat"] == fee
                tracked = ok(await client.get(f"/v1/payments/{paid['payment_hash']}/track"))
                assert tracked["fee_msat"] == fee
        finally:
            for node in (a, b, c):
                await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.slow
def test_fwdinghistory_lists_what_the_middle_node_earned_and_keeps_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        _chain, (a, b, c), _ports, (ab, bc) = await line()
        try:
            await until(lambda: direction_policy(a, bc, b.node_id) is not None, timeout=15)
            log_file = tmp_path / FORWARDS_FILE
            ctx = ApiContext(b, forwards=ForwardLog(log_file), clock=lambda: 1_800_000_000)
            follower = ctx.spawn(ctx.follow_events(), "events")
            transport = httpx.ASGITransport(app=create_app(ctx, TOKEN))
            async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                assert ok(await client.get("/v1/forwards")) == {"forwarding_events": [], "total_fee_msat": 0}
                invoice = c.create_invoice(30_000_000, "through b")
                await a.pay(invoice, timeout=15)
                await until(lambda: len(ctx.forwards.entries) == 1, timeout=5)
                history = ok(await client.get("/v1/forwards"))
                (event,) = history["forwarding_events"]
                fee = b.forwarding_policy.fee_msat(30_000_000)
                assert (event["chan_id_in"], event["chan_id_out"]) == (format_short_channel_id(ab),
                                                                      format_short_channel_id(bc))
                assert (event["amt_in_msat"], event["amt_out_msat"], event["fee_msat"]) == (
                    30_000_000 + fee, 30_000_000, fee)
                assert event["payment_hash"] == invoice.payment_hash.hex() and history["total_fee_msat"] == fee
                # The time window: from its timestamp on it is listed, from one second later not.
                assert len(ok(await client.get("/v1/forwards", params={"start_time": "1800000000"}))[
                    "forwarding_events"]) == 1
                assert ok(await client.get("/v1/forwards", params={"start_time": "1800000001"}))[
                    "forwarding_events"] == []
                assert ok(await client.get("/v1/forwards", params={"end_time": "1800000000"}))[
                    "forwarding_events"] == []
                too_many = await client.get("/v1/forwards", params={"max_events": "10001"})
                assert too_many.status_code == 400 and too_many.json()["error"]["field"] == "max_events"
            follower.cancel()
            # What the daemon wrote is there after a restart.
            assert ForwardLog(log_file).entries == [event]
        finally:
            for node in (a, b, c):
                await node.stop()

    asyncio.run(asyncio.wait_for(scenario(), 60))
