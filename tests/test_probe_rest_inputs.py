"""Hostile REST inputs, one by one: each is a 4xx naming its field, never a 500 (issue 11, items 10-12).

Every request goes to the real app (httpx over ASGI) on a real node; the ones
that would reach a peer have a real peer listening, so an input that slipped
through validation would really be used (a handshake, a lookup, an encoder).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from lightspeed.api.app import _status_of, create_app
from lightspeed.api.guard import MAX_BODY_BYTES, MAX_JSON_DEPTH, json_depth
from lightspeed.api.handlers import ApiContext
from lightspeed.api.schema import host, validate
from lightspeed.bitcoin.address import address_to_script
from lightspeed.bitcoin.network import REGTEST
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import PaymentError, UsageError
from lightspeed.node.node import Node

TOKEN = "p" * 32
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_node(chain: RegtestChain, name: bytes) -> Node:
    return Node(sha256(b"probe key " + name), chain, sha256(b"probe wallet " + name))


@contextlib.asynccontextmanager
async def api(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    ctx = ApiContext(node, listen="127.0.0.1:0")
    follower = ctx.spawn(ctx.follow_events(), "events")
    transport = httpx.ASGITransport(app=create_app(ctx, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://node", headers=AUTH) as client:
        yield client
    follower.cancel()


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def refusal(response: httpx.Response, status: int = 400) -> tuple[str, str]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]["field"], body["error"]["reason"]


async def with_peer(check: Callable[[httpx.AsyncClient, Node, int], Awaitable[None]]) -> None:
    chain = RegtestChain(":memory:")
    node, peer = make_node(chain, b"a"), make_node(chain, b"b")
    await node.start()
    peer_port = await peer.start()
    try:
        async with api(node) as client:
            await check(client, peer, peer_port)
    finally:
        await node.stop()
        await peer.stop()


# -- item 10: every input gets a 4xx naming the field ----------------------------------------------

NOT_ON_CURVE = "02" + "00" * 32  # x = 0: 0 + 7 is not a square mod p
BAD_PREFIX = "04" + "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"


def test_a_node_id_must_be_a_point_on_the_curve() -> None:
    async def check(client: httpx.AsyncClient, peer: Node, port: int) -> None:
        for node_id in (NOT_ON_CURVE, BAD_PREFIX):
            for path, body in (("/v1/peers", {"node_id": node_id, "host": "127.0.0.1", "port": port}),
                               ("/v1/channels", {"node_id": node_id, "amount_sat": 100_000})):
                field, reason = refusal(await client.post(path, json=body))
                assert (field, reason) == ("node_id", "is not a valid secp256k1 point (compressed)")
        connected = await client.post("/v1/peers", json={"node_id": peer.node_id.hex(), "host": "127.0.0.1",
                                                         "port": port})
        assert connected.json() == {"node_id": peer.node_id.hex(), "connected": True}

    run(lambda: with_peer(check))


@pytest.mark.parametrize(("host", "reason"), [
    ("a" * 254, "must have at most 253 characters"),
    ("a" * 64 + ".example", "must be an IP address or a DNS name"),  # a 64-character label
    ("local\x00host", "must not contain control characters"),
    ("localhost\n", "must not contain control characters"),
    ("\x7f", "must not contain control characters"),
    ("bücher.example", "must be an IP address or a DNS name"),
    ("[::1]", "must be an IP address or a DNS name"),
    ("-a.example", "must be an IP address or a DNS name"),
    ("a..example", "must be an IP address or a DNS name"),
    ("\ud800", "is not valid Unicode"),
])
def test_a_host_must_be_an_address_or_a_dns_name(host: str, reason: str) -> None:
    async def check(client: httpx.AsyncClient, peer: Node, port: int) -> None:
        body = json.dumps({"node_id": peer.node_id.hex(), "host": host, "port": port})
        field, got = refusal(await client.post("/v1/peers", content=body.encode()))
        assert field == "host" and got.startswith(reason), got

    run(lambda: with_peer(check))


def test_hosts_at_the_limits_are_used() -> None:
    """253 characters in 63-character labels is a name; IPv4, IPv6 and localhost reach the peer."""
    async def check(client: httpx.AsyncClient, peer: Node, port: int) -> None:
        longest = ".".join(["a" * 63] * 3 + ["a" * 61])
        assert len(longest) == 253
        for name in (longest, "a.", "a", "xn--bcher-kva.example", "_dmarc.example.com", "::1",
                     "fe80::1", "10.0.0.1"):  # accepted (not looked up here: no DNS in tests)
            validate(name, host("the peer's host"), "host")
        for host_ in ("127.0.0.1", "localhost"):
            ok = await client.post("/v1/peers", json={"node_id": peer.node_id.hex(), "host": host_, "port": port})
            assert ok.status_code == 200, ok.text

    run(lambda: with_peer(check))


def test_a_description_must_be_utf8_and_fit_a_bolt11_field() -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            for description in ("\ud800", "tea \udfff", "\ud83d"):  # lone surrogates: no UTF-8 for them
                field, reason = refusal(await client.post(
                    "/v1/invoices", content=json.dumps({"amount_msat": 1, "description": description}).encode()))
                assert (field, reason) == ("description", "is not valid Unicode (it contains a lone surrogate)")
            for fits in ("x" * 639, "€" * 213, "😀" * 159 + "abc"):  # 639 bytes in UTF-8
                created = await client.post("/v1/invoices", json={"amount_msat": 1, "description": fits})
                assert created.status_code == 201 and created.json()["description"] == fits
            for too_long in ("x" * 640, "€" * 214, "😀" * 160):
                field, reason = refusal(await client.post("/v1/invoices",
                                                          json={"amount_msat": 1, "description": too_long}))
                assert (field, reason) == ("description", "must be at most 639 bytes in UTF-8")

    run(scenario)


def test_json_nested_past_the_limit_is_refused_before_it_recurses() -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            at_limit = ("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH).encode()
            assert refusal(await client.post("/v1/invoices", content=at_limit)) == ("body", "must be an object")
            for depth in (MAX_JSON_DEPTH + 1, 5_000, 10_000):  # past the recursion limit (1,000)
                for open_, close in (("[", "]"), ('{"a":', "}")):
                    raw = (open_ * depth + "1" + close * depth).encode()
                    assert len(raw) <= MAX_BODY_BYTES
                    field, reason = refusal(await client.post("/v1/invoices", content=raw))
                    assert field == "body" and reason == f"nests arrays or objects deeper than {MAX_JSON_DEPTH} levels"

    run(scenario)


def test_json_depth_ignores_brackets_inside_strings() -> None:
    assert json_depth(b'{"a": "[[[[{{{{", "b": [1, {"c": "]]\\"[["}]}') == 3
    assert json_depth(b"1") == 0 and json_depth(b"") == 0
    assert json_depth(b"[" * 40) == 40


def test_hex_with_a_trailing_newline_or_spaces_is_refused() -> None:
    async def check(client: httpx.AsyncClient, peer: Node, port: int) -> None:
        good = peer.node_id.hex()
        for spoiled in (good + "\n", good + " ", " " + good, good[:2] + " " + good[2:], good + "\r\n"):
            field, reason = refusal(await client.post("/v1/peers", json={"node_id": spoiled, "host": "127.0.0.1",
                                                                         "port": port}))
            assert field == "node_id" and reason.startswith("a node id"), reason
        assert peer.peer_ids() == []  # none of them was used to connect
        channel_id = "ab" * 32
        for spoiled_path in (channel_id + "%0A", channel_id + "%20", "%20" + channel_id, channel_id + "%00"):
            for action in ("close", "force-close"):
                field, reason = refusal(await client.post(f"/v1/channels/{spoiled_path}/{action}"))
                assert (field, reason) == ("channel_id", "a channel id: 32 bytes in hex")
        assert refusal(await client.post(f"/v1/channels/{channel_id}/close"), 404)[0] == "channel_id"

    run(lambda: with_peer(check))


def test_amounts_are_integers_in_range() -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            for value, reason in ((1.0, "must be an integer"), (True, "must be an integer"), ("5", "must be an integer"),
                                  (None, "must be an integer"), (2**53 + 1, "must be at most 9007199254740992"),
                                  (-1, "must be at least 1"), (10**400, "must be at most")):
                field, got = refusal(await client.post("/v1/invoices", json={"amount_msat": value}))
                assert field == "amount_msat" and got.startswith(reason), (value, got)
            raw = b'{"amount_msat": 1' + b"0" * 5000 + b"}"  # past Python's int digit limit
            assert refusal(await client.post("/v1/invoices", content=raw)) == ("body", "is not valid JSON")
            field, got = refusal(await client.post("/v1/channels", json={
                "node_id": "02" + "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
                "amount_sat": 100_000, "push_msat": 16_777_215_001}))
            assert (field, got) == ("push_msat", "must be at most 16777215000")

    run(scenario)


def test_query_parameters_are_validated_too() -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            assert (await client.get("/v1/payments", params={"direction": "sent"})).status_code == 200
            assert refusal(await client.get("/v1/payments", params={"direction": "sent\n"})) == (
                "direction", "must be one of sent, received")
            assert refusal(await client.get("/v1/payments?direction=sent&direction=received")) == (
                "direction", "is given more than once")
            assert refusal(await client.get("/v1/payments", params={"directon": "sent"})) == (
                "directon", "is not a known query parameter")
            assert refusal(await client.get("/v1/getinfo?%00=1")) == ("'\\x00'", "is not a known query parameter")

    run(scenario)


def test_a_weird_field_name_is_named_safely() -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            for name, shown in (("\ud800", "'\\ud800'"), ("", "''"), ("x" * 1000, ascii("x" * 64))):
                raw = json.dumps({"amount_msat": 1, name: 1}).encode()
                assert refusal(await client.post("/v1/invoices", content=raw)) == (shown, "is not a known field")

    run(scenario)


# -- item 11: the body limit -----------------------------------------------------------------------

def test_the_body_limit_at_its_boundary_and_while_streaming() -> None:
    async def scenario() -> None:
        async with api(make_node(RegtestChain(":memory:"), b"a")) as client:
            def body_of(size: int) -> bytes:
                raw = json.dumps({"amount_msat": 1, "description": ""}).encode()
                return raw[:-2] + b'"' + b" " * (size - len(raw)) + b"}"  # padded with JSON whitespace

            exact = await client.post("/v1/invoices", content=body_of(MAX_BODY_BYTES))
            assert exact.status_code == 201, exact.text  # the whole limit is usable
            assert refusal(await client.post("/v1/invoices", content=body_of(MAX_BODY_BYTES + 1)), 413) == (
                "body", f"is larger than {MAX_BODY_BYTES} bytes")

            pulled = 0

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
                nonlocal pulled
                for _ in range(10 * 1024 * 1024 // 16384):  # 10 MB
                    pulled += 1
                    yield b" " * 16384

            response = await client.post("/v1/invoices", content=chunks())
            assert refusal(response, 413) == ("body", f"is larger than {MAX_BODY_BYTES} bytes")
            assert pulled <= MAX_BODY_BYTES // 16384 + 2  # refused as it passed the limit, not after 10 MB

            response = await client.post("/v1/invoices", content=b"{}",
                                         headers={"content-length": str(10 * 1024 * 1024)})
            assert refusal(response, 413)[0] == "body"  # by the announced length alone

    run(scenario)


# -- item 12: a payment still pending is 504 with its hash; a peer failure stays 502 ---------------

def test_timeout_is_504_and_a_peer_failure_502() -> None:
    assert _status_of(TimeoutError("slow")) == (504, None)
    assert _status_of(ConnectionRefusedError(111, "refused")) == (502, None)
    assert _status_of(OSError(113, "no route to host")) == (502, None)
    assert _status_of(PaymentError("refused")) == (409, None)


async def _open_channel(a: httpx.AsyncClient, b: httpx.AsyncClient, chain: RegtestChain, bob: Node,
                        bob_port: int) -> None:
    address = (await a.post("/v1/addresses")).json()["address"]
    chain.fund(address_to_script(address, REGTEST), 1_000_000)
    await a.post("/v1/peers", json={"node_id": bob.node_id.hex(), "host": "127.0.0.1", "port": bob_port})
    opened = await a.post("/v1/channels", json={"node_id": bob.node_id.hex(), "amount_sat": 500_000})
    assert opened.status_code == 201, opened.text
    chain.mine(3)
    for _ in range(500):
        states = [(await c.get("/v1/channels")).json()["channels"][0]["state"] for c in (a, b)]
        if states == ["normal", "normal"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"channel not ready: {states}")


def test_a_payment_still_pending_is_a_504_with_its_hash() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, bob = make_node(chain, b"alice"), make_node(chain, b"bob")
        await alice.start()
        bob_port = await bob.start()
        async with api(alice) as a, api(bob) as b:
            await _open_channel(a, b, chain, bob, bob_port)
            preimage = b"\x42" * 32
            held = bob.create_hold_invoice(sha256(preimage), 10_000_000, "held").encode()
            response = await a.post("/v1/payments", json={"invoice": held, "timeout_s": 1})
            assert response.status_code == 504, response.text
            error: dict[str, Any] = response.json()["error"]
            payment_hash = sha256(preimage).hex()
            assert error["payment_hash"] == payment_hash and payment_hash in error["reason"]
            assert "still pending" in error["reason"]
            listed = (await a.get("/v1/payments", params={"direction": "sent"})).json()["payments"]
            assert [(p["payment_hash"], p["status"]) for p in listed] == [(payment_hash, "pending")]
            await bob.settle_hold(preimage)
            for _ in range(200):
                listed = (await a.get("/v1/payments", params={"direction": "sent"})).json()["payments"]
                if listed[0]["status"] == "succeeded":
                    break
                await asyncio.sleep(0.02)
            assert listed[0]["status"] == "succeeded"  # it was pending, not failed

            refused_hash = sha256(b"\x43" * 32)
            refused = bob.create_hold_invoice(refused_hash, 10_000_000, "refused").encode()
            paying = asyncio.create_task(a.post("/v1/payments", json={"invoice": refused, "timeout_s": 20}))
            for _ in range(500):  # the payee refuses the payment once it is held
                try:
                    await bob.cancel_hold(refused_hash)
                    break
                except UsageError:
                    await asyncio.sleep(0.02)
            field, reason = refusal(await paying, 409)  # a failed payment: the node's refusal, about the invoice
            assert field == "invoice" and reason, reason

            server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            closed_port = int(server.sockets[0].getsockname()[1])
            server.close()
            await server.wait_closed()
            # A node we are not connected to (connecting to bob again returns the live connection).
            stranger = pubkey_from_privkey(b"\x55" * 32).hex()
            refused = await a.post("/v1/peers", json={"node_id": stranger, "host": "127.0.0.1",
                                                      "port": closed_port})
            assert refused.status_code == 502 and refused.json()["error"]["reason"].startswith("cannot reach")
        await alice.stop()
        await bob.stop()

    run(scenario)
