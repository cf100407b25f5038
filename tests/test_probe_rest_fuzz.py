"""REST fuzz generated from the OpenAPI document: no input makes the API answer 500.

For every operation the document lists, hypothesis builds requests from the
operation's own schemas: valid-shaped values (right types, lengths and ranges)
with one field or parameter made hostile (wrong type, huge, NUL and control
characters, lone surrogates, a trailing newline, deep nesting, not JSON at all),
plus unknown fields and query parameters. They go to the real app (httpx over
ASGI) on a real, listening node with a real peer to reach.

The invariant: never a 500, and every 4xx is the JSON error shape naming the
field that was wrong. The only 5xx allowed are 502 from ``POST /v1/peers`` when a
well-formed request really tried a peer that is not there, and 504 from ``POST /v1/lsp/register``
when it really asked a node that is not an LSP (the harness's peer), which never answers.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightspeed.api.app import ENDPOINTS, create_app
from lightspeed.api.credentials import Credentials
from lightspeed.api.guard import MAX_BODY_BYTES
from lightspeed.api.handlers import ApiContext
from lightspeed.api.openapi import openapi_document
from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.node.node import Node

TOKEN = "f" * 32
DOCUMENT = openapi_document(ENDPOINTS)
OPERATIONS = [(method.upper(), path, operation) for path, methods in DOCUMENT["paths"].items()
              for method, operation in methods.items()]
# GET /v1/events answers a stream that never ends (until the client goes): probed by
# tests/test_dashboard17_events.py over a real server instead.
STREAMS = {("GET", "/v1/events")}


@dataclass
class Harness:
    loop: asyncio.AbstractEventLoop
    client: httpx.AsyncClient
    peer_id: str
    peer_port: int
    closed_port: int
    invoices: list[str]

    def request(self, method: str, url: str, content: bytes | None) -> httpx.Response:
        headers = {"content-type": "application/json"} if content is not None else {}
        return self.loop.run_until_complete(self.client.request(method, url, content=content, headers=headers))


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    loop = asyncio.new_event_loop()
    chain = RegtestChain(":memory:")
    node = Node(sha256(b"fuzz node"), chain, sha256(b"fuzz wallet"))
    peer = Node(sha256(b"fuzz peer"), chain, sha256(b"fuzz peer wallet"))
    loop.run_until_complete(node.start())
    peer_port = loop.run_until_complete(peer.start())

    async def closed_port() -> int:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = int(server.sockets[0].getsockname()[1])
        server.close()
        await server.wait_closed()
        return port

    ctx = ApiContext(node, listen="127.0.0.1:0", open_timeout_s=2,
                     credentials=Credentials(tempfile.mkdtemp(prefix="fuzz-credentials-")))
    ctx.request_stop = lambda: None  # as in a daemon (POST /v1/stop); stopping one is test_ops17_cli's
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(ctx, TOKEN)),
                               base_url="http://node", headers={"Authorization": f"Bearer {TOKEN}"})
    invoices = [peer.create_invoice(1000, "fuzz").encode(), node.create_invoice(5000, "own").encode()]
    yield Harness(loop, client, peer.node_id.hex(), peer_port, loop.run_until_complete(closed_port()), invoices)
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(node.stop())
    loop.run_until_complete(peer.stop())
    loop.close()


# -- values ----------------------------------------------------------------------------------------

NASTY_TEXT = st.sampled_from(["", " ", "\x00", "a\x00b", "\n", "\ud800", "x\udfff", "\u202e", "\r\n",
                              "%00", "..", "\\", '"', "null", "𝕏" * 300, "a" * 64, ("a" * 63 + ".") * 5,
                              "-a", "a-", "a..b", "[::1]", "::1%\x01"])


def _json_text() -> st.SearchStrategy[str]:
    # Every code point, lone surrogates included (JSON's \\ud800 escapes produce them too).
    return st.text(st.characters(codec=None, exclude_categories=()), max_size=40)


def hostile_values() -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
        st.integers(), st.integers(min_value=-(2**300), max_value=2**300), st.sampled_from([2**64, -1, 0, 2**53 + 1]),
        _json_text(), NASTY_TEXT, st.text(min_size=600, max_size=5000),
    )
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(_json_text(), inner, max_size=4), max_leaves=12)


def _point_hex() -> st.SearchStrategy[str]:
    return st.binary(min_size=32, max_size=32).filter(lambda k: 0 < int.from_bytes(k, "big") < 2**255).map(
        lambda k: pubkey_from_privkey(k).hex())


def valid_value(schema: dict[str, Any], name: str, harness: Harness) -> st.SearchStrategy[Any]:
    """A value of the right shape for ``schema`` (the app may still refuse it for what it means)."""
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if schema.get("format") == "secp256k1-point":
        return st.one_of(st.just(harness.peer_id), _point_hex())
    if schema.get("format") == "host":
        return st.sampled_from(["127.0.0.1", "::1", "localhost"])
    if name == "port":
        return st.sampled_from([harness.peer_port, harness.closed_port])
    if name == "invoice":
        return st.one_of(st.sampled_from(harness.invoices), st.text(min_size=1, max_size=80))
    if name == "destination":  # an onion message's: node ids no path leads to, and bytes of any length
        return st.one_of(_point_hex(), st.binary(min_size=1, max_size=300).map(bytes.hex))
    if schema.get("type") == "boolean":
        return st.booleans()
    if "pattern" in schema and not re.search(r"\{(\d+)\}", schema["pattern"]):  # not hex of a fixed size
        return st.from_regex(schema["pattern"], fullmatch=True)
    if "pattern" in schema:
        size = int(re.search(r"\{(\d+)\}", schema["pattern"]).group(1)) // 2  # type: ignore[union-attr]
        return st.binary(min_size=size, max_size=size).map(bytes.hex)
    if schema.get("type") == "integer":
        return st.integers(schema.get("minimum", -(2**63)), schema.get("maximum", 2**63))
    if schema.get("type") == "string":
        return st.text(max_size=50)
    if schema.get("type") == "array":  # lists of anything (route blinding's paths, via): refused cleanly
        return st.lists(hostile_values(), max_size=3)
    if schema.get("type") == "object":  # a document (multi-hash): objects of anything, refused cleanly
        return st.dictionaries(st.sampled_from(["request", "declaration", "signature", "parts"]) | st.text(max_size=8),
                               hostile_values(), max_size=3)
    raise AssertionError(f"no strategy for {name}: {schema}")


def hostile_variant(value: Any) -> st.SearchStrategy[Any]:
    """``value`` spoiled the ways validators miss: whitespace around hex, a newline, a huge copy."""
    if isinstance(value, str):
        return st.sampled_from([value + "\n", " " + value, value + "\x00", value.upper() + "\u0660",
                                value * 40, value[:-1], value + "0"])
    return st.sampled_from([str(value), float(value) if isinstance(value, int) else 1.5, True, [value],
                            {"value": value}])


@st.composite
def requests(draw: st.DrawFn, method: str, path: str, operation: dict[str, Any],
             harness: Harness) -> tuple[str, str, bytes | None]:
    parameters = operation.get("parameters", [])
    url = path
    for parameter in (p for p in parameters if p["in"] == "path"):
        value = draw(valid_value(parameter["schema"], parameter["name"], harness))
        if draw(st.booleans()):
            value = draw(st.one_of(hostile_variant(value), _json_text(), NASTY_TEXT))
        raw = value if isinstance(value, str) else json.dumps(value)
        url = url.replace("{" + parameter["name"] + "}",
                          urllib.parse.quote(raw.encode("utf-8", "surrogatepass"), safe=""))
    query: list[tuple[str, str]] = []
    for parameter in (p for p in parameters if p["in"] == "query"):
        if draw(st.booleans()):
            query.append((parameter["name"], draw(st.one_of(valid_value(parameter["schema"], "", harness),
                                                            st.text(max_size=20)))))
    if draw(st.integers(0, 5)) == 0:
        query.append((draw(st.text(min_size=1, max_size=10)), draw(st.text(max_size=10))))
    if query:
        url += "?" + urllib.parse.urlencode(query)
    content: bytes | None = None
    body_schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body_schema is not None or draw(st.integers(0, 4)) == 0:
        content = draw(bodies(body_schema or {"properties": {}, "required": []}, harness))
    return method, url, content


@st.composite
def bodies(draw: st.DrawFn, schema: dict[str, Any], harness: Harness) -> bytes:
    properties: dict[str, Any] = schema["properties"]
    body: Any = {name: draw(valid_value(sub, name, harness)) for name, sub in properties.items()
                 if name in schema["required"] or draw(st.booleans())}
    how = draw(st.integers(0, 9))
    if how <= 3 and body:  # one field made hostile
        name = draw(st.sampled_from(sorted(body)))
        body[name] = draw(st.one_of(hostile_values(), hostile_variant(body[name])))
    elif how == 4:  # an unknown field, or a required one missing
        if body and draw(st.booleans()):
            del body[draw(st.sampled_from(sorted(body)))]
        else:
            body[draw(_json_text())] = draw(hostile_values())
    elif how == 5:  # not an object at all
        body = draw(hostile_values())
    elif how == 6:  # bytes that are not JSON, or not UTF-8
        return draw(st.one_of(st.binary(max_size=64), st.sampled_from([b"\xff\xfe{}", b"{\"a\":", b"1" * 5000,
                                                                       b"\"\\ud800\"", b"{} {}"])))
    elif how == 7:  # nesting: within the limit it is just the wrong shape; past it, refused before recursion
        depth = draw(st.sampled_from([2, 15, 16, 17, 100, 5000, MAX_BODY_BYTES // 2]))
        opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opening * depth + "1" + closing * depth).encode()
    elif how == 8:  # close to the size limit (and just past it)
        size = draw(st.sampled_from([MAX_BODY_BYTES - 40, MAX_BODY_BYTES + 1]))
        return json.dumps({"description": "x" * size}).encode()[: size + 40]
    return json.dumps(body, ensure_ascii=draw(st.booleans()), allow_nan=True).encode("utf-8", "surrogatepass")


# -- the property ----------------------------------------------------------------------------------

def check_answer(method: str, path: str, url: str, content: bytes | None, response: httpx.Response) -> None:
    what = f"{method} {url} {content[:200] if content else content!r} -> {response.status_code} {response.text[:300]}"
    assert response.status_code != 500, what
    if response.status_code >= 500:
        assert (method, path, response.status_code) in {("POST", "/v1/peers", 502),
                                                         ("POST", "/v1/lsp/register", 504)}, what
    if response.status_code < 400:
        return
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], dict), what
    error = body["error"]
    assert isinstance(error.get("reason"), str) and error["reason"], what
    if error["reason"] == "no such route":  # a path parameter with "/" in it no longer matches the route
        assert response.status_code == 404, what
        return
    if response.status_code < 500:
        assert isinstance(error.get("field"), str) and error["field"], what


@pytest.mark.parametrize(("method", "path", "operation"), [o for o in OPERATIONS if o[:2] not in STREAMS],
                         ids=[f"{m} {p}" for m, p, _ in OPERATIONS if (m, p) not in STREAMS])
def test_no_request_makes_the_api_fail(harness: Harness, method: str, path: str, operation: dict[str, Any]) -> None:
    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(data=st.data())
    def probe(data: st.DataObject) -> None:
        method_, url, content = data.draw(requests(method, path, operation, harness))
        check_answer(method, path, url, content, harness.request(method_, url, content))

    probe()


def test_every_operation_is_probed() -> None:
    """The fuzz covers what the document lists, and the document lists every route (test_api checks that)."""
    assert len(OPERATIONS) == len(ENDPOINTS) == 65  # the LSP list + multi-hash requests' 6 + return-path refunds + the channel backup + async payments' 3 + BOLT 12 decode + ops_routes' 38 + route blinding's 2 + offer pay and refunds' 4
    # + tokens' 3 + the dashboard's events and QR + the wallet's 3 new (api/wallet_routes.py)
