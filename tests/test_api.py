"""The REST API in process (httpx over ASGI) on real nodes: auth, OpenAPI, validation, refusals, a full flow.

The nodes are real (keys, a regtest chain in memory, BOLT 8 over loopback TCP
between them); only the HTTP hop is in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from lightspeed.api.app import create_app
from lightspeed.api.daemon import parse_hostport, require_loopback
from lightspeed.api.datadir import Datadir, default_chain_path
from lightspeed.api.handlers import ApiContext
from lightspeed.api.schema import hex_string, integer, obj, validate
from lightspeed.bitcoin.network import BITCOIN
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import DecodeError, UsageError
from lightspeed.invoice import build_invoice
from lightspeed.node.node import Node

TOKEN = "t" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_node(chain: RegtestChain, name: bytes) -> Node:
    return Node(sha256(b"key " + name), chain, sha256(b"wallet " + name))


@contextlib.asynccontextmanager
async def api(node: Node, clock: Callable[[], float] = time.time) -> AsyncIterator[httpx.AsyncClient]:
    ctx = ApiContext(node, listen="127.0.0.1:0", clock=clock)
    follower = ctx.spawn(ctx.follow_events(), "events")
    transport = httpx.ASGITransport(app=create_app(ctx, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://node", headers=AUTH) as client:
        yield client
    follower.cancel()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and "reason" in body["error"], body
    result: dict[str, Any] = body["error"]
    return result


# -- auth and routing ---------------------------------------------------------------------------

def test_every_request_needs_the_bearer_token() -> None:
    async def scenario() -> None:
        node = make_node(RegtestChain(":memory:"), b"a")
        async with api(node) as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                for method, path in (("GET", "/v1/getinfo"), ("GET", "/openapi.json"), ("POST", "/v1/addresses"),
                                     ("GET", "/nowhere")):
                    response = await client.request(method, path, headers={"Authorization": "", **headers})
                    assert response.status_code == 401, (method, path, headers)
                    assert "token" in error(response)["reason"]
                    assert response.headers["www-authenticate"] == "Bearer"
            info = (await client.get("/v1/getinfo")).json()
            assert info["node_id"] == node.node_id.hex() and info["block_height"] == 0
            assert (await client.get("/nowhere")).status_code == 404
            assert error(await client.get("/nowhere")) == {"reason": "no such route"}
            wrong_method = await client.delete("/v1/channels")
            assert wrong_method.status_code == 405 and "method" in error(wrong_method)["reason"]

    run(scenario)


def test_a_short_token_is_refused() -> None:
    with pytest.raises(UsageError, match="at least 16"):
        create_app(ApiContext(make_node(RegtestChain(":memory:"), b"a")), "short")


def test_the_openapi_document_describes_every_route() -> None:
    async def scenario() -> None:
        node = make_node(RegtestChain(":memory:"), b"a")
        app = create_app(ApiContext(node), TOKEN)
        async with api(node) as client:
            document = (await client.get("/openapi.json")).json()
        assert document["openapi"] == "3.1.0"
        assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
        served = {(method, route.path) for route in app.app.routes  # type: ignore[attr-defined]
                  if isinstance(route, Route) and route.path != "/openapi.json"
                  for method in (route.methods or ()) if method != "HEAD"}
        described = {(method.upper(), path) for path, operations in document["paths"].items()
                     for method in operations}
        assert served == described
        assert len(served) == 65  # the LSP list (api/async_routes.py) + multi-hash requests' 6 (api/multihash_routes.py) + return-path refunds (api/offer_pay.py) + the channel backup (api/backup_routes.py) + async payments' 3 (api/async_routes.py) + BOLT 12 decode (api/offer_handlers.py) + ops_routes' 38 + route blinding's 2 + offer pay and refunds' 4 (api/offer_pay.py) + tokens' 3 (api/token_handlers.py) + events and invoice QR (api/dashboard.py) + wallet's 3 new (api/wallet_routes.py)
        ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
        assert len(ids) == len(set(ids))
        for path, operations in document["paths"].items():
            for operation in operations.values():
                declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
                assert declared == set(re.findall(r"{(\w+)}", path)), path
                assert {"400", "401", "404", "409"} <= set(operation["responses"])
                success = [code for code in operation["responses"] if code.startswith("2")]
                assert len(success) == 1 and "schema" in operation["responses"][success[0]]["content"][
                    "application/json"]

    run(scenario)


# -- validation ---------------------------------------------------------------------------------

BAD_BODIES = [
    ("/v1/invoices", {"description": "x", "description_hash": "ab" * 32}, "description_hash", "give description or description_hash, not both"),
    ("/v1/invoices", {"amount_msat": "1000"}, "amount_msat", "must be an integer"),
    ("/v1/invoices", {"amount_msat": True}, "amount_msat", "must be an integer"),
    ("/v1/invoices", {"amount_msat": 0}, "amount_msat", "must be at least 1"),
    ("/v1/invoices", {"amount_msat": 5, "memo": "x"}, "memo", "is not a known field"),
    ("/v1/invoices", [1, 2], "body", "must be an object"),
    ("/v1/peers", {"node_id": "02" * 33, "host": "h", "port": 70000}, "port", "must be at most 65535"),
    ("/v1/peers", {"node_id": "zz", "host": "h", "port": 1}, "node_id", "a node id: 33-byte compressed"),
    ("/v1/channels", {"node_id": "02" * 33, "amount_sat": 10}, "amount_sat", "must be at least 20000"),
    ("/v1/payments", {"invoice": ""}, "invoice", "must have at least 1 characters"),
    ("/v1/payments", {"invoice": "lnbcrt1garbage"}, "invoice", "bech32: character 'b' is not in the bech32"),
    ("/v1/payments", {"invoice": "lnbcrt1x", "timeout_s": 0}, "timeout_s", "must be at least 1"),
]


@pytest.mark.parametrize(("path", "body", "field", "reason"), BAD_BODIES)
def test_a_bad_body_is_a_400_naming_the_field(path: str, body: Any, field: str, reason: str) -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            response = await client.post(path, json=body)
            assert response.status_code == 400
            got = error(response)
            assert got["field"] == field and got["reason"].startswith(reason), got

    run(scenario)


def test_a_body_that_is_not_json_is_a_400() -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            response = await client.post("/v1/invoices", content=b"{not json")
            assert response.status_code == 400
            assert error(response) == {"field": "body", "reason": "is not valid JSON"}

    run(scenario)


def test_the_schema_validator() -> None:
    schema = obj({"id": hex_string(2, "two bytes"), "n": integer("n", 0, 9)}, ["id"])
    validate({"id": "abcd", "n": 9}, schema)
    for value, field, reason in (({"id": "abc"}, "id", "two bytes"), ({"id": "abcd", "n": -1}, "n", "at least 0"),
                                 ({"id": "abcd", "n": 1.5}, "n", "must be an integer"), ({}, "id", "is required")):
        with pytest.raises(DecodeError) as caught:
            validate(value, schema)
        assert caught.value.field == field and reason in caught.value.reason
    with pytest.raises(AssertionError, match="unsupported"):
        validate(1, {"oneOf": []})


# -- refusals ------------------------------------------------------------------------------------

def test_the_node_says_why_it_cannot_do_something() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, bob = make_node(chain, b"a"), make_node(chain, b"b")
        now = [time.time()]
        bob_port = await bob.start()
        async with api(alice, clock=lambda: now[0]) as client:
            own = (await client.post("/v1/invoices", json={"amount_msat": 1000, "description": "x"})).json()
            response = await client.post("/v1/payments", json={"invoice": own["invoice"]})
            assert response.status_code == 409 and "own" in error(response)["reason"]

            foreign = build_invoice(network=BITCOIN, amount_msat=1000, payment_hash=os.urandom(32),
                                    payment_secret=os.urandom(32), timestamp=int(now[0]),
                                    description="x").sign(os.urandom(32)).encode()
            response = await client.post("/v1/payments", json={"invoice": foreign})
            assert response.status_code == 400 and error(response)["reason"] == (
                "is for bitcoin; this node runs on regtest")

            bobs = bob.create_invoice(1000, "tea").encode()
            response = await client.post("/v1/payments", json={"invoice": bobs})
            assert response.status_code == 409 and error(response)["reason"].startswith("no ready channel")
            now[0] += 7200
            response = await client.post("/v1/payments", json={"invoice": bobs})
            assert response.status_code == 409 and "expired" in error(response)["reason"]
            listed = (await client.get("/v1/invoices")).json()["invoices"]
            assert [i["status"] for i in listed] == ["expired"]
            assert (await client.get("/v1/payments")).json() == {"payments": []}  # refusals leave no record
            bad_direction = await client.get("/v1/payments", params={"direction": "up"})
            assert error(bad_direction)["field"] == "direction"

            body = {"node_id": bob.node_id.hex(), "amount_sat": 100_000}
            response = await client.post("/v1/channels", json=body)
            assert response.status_code == 409 and error(response)["reason"].startswith("not connected")
            refused = await client.post("/v1/peers", json={"node_id": bob.node_id.hex(), "host": "127.0.0.1",
                                                          "port": await _closed_port()})
            assert refused.status_code == 502 and error(refused)["reason"].startswith("cannot reach the peer")
            connected = await client.post("/v1/peers", json={"node_id": bob.node_id.hex(), "host": "127.0.0.1",
                                                            "port": bob_port})
            assert connected.json() == {"node_id": bob.node_id.hex(), "connected": True}
            response = await client.post("/v1/channels", json=body)
            assert response.status_code == 409 and error(response)["reason"].startswith("insufficient funds")
            assert error(response)["field"] == "amount_sat"

            response = await client.post(f"/v1/channels/{'ab' * 32}/close")
            assert response.status_code == 404 and error(response)["field"] == "channel_id"
            response = await client.post("/v1/channels/xyz/close")
            assert response.status_code == 400 and error(response) == {
                "field": "channel_id", "reason": "a channel id: 32 bytes in hex"}
        await alice.stop()
        await bob.stop()

    run(scenario)


async def _closed_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port


# -- the whole flow, in process ------------------------------------------------------------------

def test_open_pay_list_and_close_through_the_api() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, bob = make_node(chain, b"a"), make_node(chain, b"b")
        bob_port = await bob.start()
        async with api(alice) as a, api(bob) as b:
            address = (await a.post("/v1/addresses")).json()["address"]
            from lightspeed.bitcoin.address import address_to_script
            from lightspeed.bitcoin.network import REGTEST

            chain.fund(address_to_script(address, REGTEST), 1_500_000)
            assert (await a.get("/v1/balance")).json()["onchain_confirmed_sat"] == 1_500_000
            await a.post("/v1/peers", json={"node_id": bob.node_id.hex(), "host": "127.0.0.1", "port": bob_port})
            assert [p["node_id"] for p in (await b.get("/v1/peers")).json()["peers"]] == [alice.node_id.hex()]
            opened = await a.post("/v1/channels", json={"node_id": bob.node_id.hex(), "amount_sat": 500_000,
                                                        "push_msat": 10_000_000})
            assert opened.status_code == 201, opened.text
            channel = opened.json()
            assert (channel["state"], channel["local_balance_msat"]) == ("awaiting_confirmations", 490_000_000)
            not_yet = await a.post(f"/v1/channels/{channel['channel_id']}/close")
            assert not_yet.status_code == 409 and "not open yet" in error(not_yet)["reason"]
            chain.mine(3)
            for _ in range(200):
                states = [(await c.get("/v1/channels")).json()["channels"][0]["state"] for c in (a, b)]
                if states == ["normal", "normal"]:
                    break
                await asyncio.sleep(0.02)
            assert states == ["normal", "normal"]

            invoice = (await b.post("/v1/invoices", json={"amount_msat": 40_000_000, "description": "soup"})).json()
            assert invoice["status"] == "unpaid" and invoice["amount_msat"] == 40_000_000
            paid = (await a.post("/v1/payments", json={"invoice": invoice["invoice"]})).json()
            assert paid["status"] == "succeeded"
            assert sha256(bytes.fromhex(paid["preimage"])).hex() == invoice["payment_hash"]
            again = await a.post("/v1/payments", json={"invoice": invoice["invoice"]})
            assert again.status_code == 409 and "already paid" in error(again)["reason"]
            received = (await b.get("/v1/payments")).json()["payments"]
            assert [(p["direction"], p["amount_msat"]) for p in received] == [("received", 40_000_000)]
            assert (await b.get("/v1/invoices")).json()["invoices"][0]["status"] == "paid"
            for _ in range(200):  # the last revoke_and_ack may still be on its way when pay returns
                channels = [(await c.get("/v1/channels")).json()["channels"][0] for c in (a, b)]
                if all(c["pending_htlcs"] == 0 for c in channels) and channels[1]["local_balance_msat"] == 50_000_000:
                    break
                await asyncio.sleep(0.02)
            assert (await b.get("/v1/balance")).json()["channels_local_msat"] == 50_000_000
            assert isinstance((await b.get("/v1/payments")).json()["payments"][0]["settled_at"], int)

            closed = await a.post(f"/v1/channels/{channel['channel_id']}/close")
            assert closed.status_code == 200, closed.text
            closing_txid = closed.json()["closing_txid"]
            chain.mine(1)
            found = chain.get_transaction(bytes.fromhex(closing_txid)[::-1])
            assert found is not None and found[1] == 1
            assert sorted(o.value_sat for o in found[0].outputs)[0] == 50_000  # bob's side, no fee taken
            listed = (await b.get("/v1/channels")).json()["channels"]
            assert [(c["state"], c["closing_txid"]) for c in listed] == [("closed", closing_txid)]
            assert (await b.get("/v1/balance")).json()["onchain_confirmed_sat"] == 50_000
        await alice.stop()
        await bob.stop()

    run(scenario)


# -- the datadir and the daemon's options --------------------------------------------------------

def test_the_datadir_keeps_its_secret_private_and_stable(tmp_path: Path) -> None:
    first = Datadir(tmp_path / "n")
    first.create()
    key, seed, token = first.node_privkey(), first.wallet_seed(), first.ensure_token()
    assert key != seed and len(token) == 64
    for name in ("wallet_mnemonic", "api_token"):
        assert (tmp_path / "n" / name).stat().st_mode & 0o777 == 0o600
    again = Datadir(tmp_path / "n")
    assert (again.node_privkey(), again.wallet_seed(), again.ensure_token()) == (key, seed, token)
    assert default_chain_path(tmp_path / "n") == tmp_path.resolve() / "chain.sqlite"
    first.lock()
    with pytest.raises(UsageError, match="already running"):
        again.lock()
    first.unlock()
    again.lock()
    again.unlock()
    with pytest.raises(UsageError, match="no daemon is running"):
        again.api_address()
    (tmp_path / "n" / "node_secret").write_bytes(b"short")
    with pytest.raises(UsageError, match="must be 32 bytes"):
        Datadir(tmp_path / "n").node_privkey()


def test_addresses_on_the_command_line() -> None:
    assert parse_hostport("127.0.0.1:9735", "--listen") == ("127.0.0.1", 9735)
    assert parse_hostport("[::1]:0", "--api") == ("::1", 0)
    for bad in ("127.0.0.1", ":80", "host:http", "h:70000"):
        with pytest.raises(UsageError, match="--listen must be HOST:PORT"):
            parse_hostport(bad, "--listen")
    require_loopback("127.0.0.1", "--api")
    require_loopback("::1", "--api")
    require_loopback("localhost", "--api")
    for public in ("0.0.0.0", "192.168.1.2", "example.com"):
        with pytest.raises(UsageError, match="loopback"):
            require_loopback(public, "--api")


def test_a_bug_in_a_handler_is_a_500_without_a_traceback(monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    import dataclasses

    from lightspeed.api import app as app_module

    async def broken(ctx: ApiContext, request: Any, body: Any) -> tuple[int, Any]:
        raise RuntimeError("secret internals")

    endpoints = tuple(dataclasses.replace(e, handler=broken) if e.operation_id == "balance" else e
                      for e in app_module.ENDPOINTS)
    monkeypatch.setattr(app_module, "ENDPOINTS", endpoints)

    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            response = await client.get("/v1/balance")
            assert response.status_code == 500
            assert error(response) == {"reason": "internal error: RuntimeError"}
            assert "secret internals" not in response.text
            assert (await client.get("/v1/getinfo")).status_code == 200  # the API goes on serving

    run(scenario)
    assert "secret internals" in caplog.text  # the daemon's log has it, for the operator
