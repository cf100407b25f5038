"""Malformed ``Lightspeed-Token`` / ``Lightspeed-Allowance`` headers: a 400 naming the header, never a 500.

Issue 11, item 16. Only RFC 9110 optional whitespace (spaces, tabs) may surround a header
value; anything else around or inside a token (other control or Latin-1 space characters,
spaces inside the hex, which ``bytes.fromhex`` would silently skip) is a 400 ``bad_token``
naming the header. Fuzzed through the real ASGI app (httpx's ASGITransport passes the raw
bytes to the application) and through a real uvicorn server over TCP (whose h11 parser
answers some values itself, before the application sees them): never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.micro.token import AllowanceRequest, Token
from tests.support.ledger import Ledger

PER_LANE = 100_000


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


class Paid:
    """A paid allowance of one long lane, and the app that sells it."""

    def __init__(self) -> None:
        ledger = Ledger()
        self.server = AllowanceServer(MemoryAllowanceStore(), ledger, ledger.node_id,
                                      ServerPolicy(Price(1), creates_per_minute=10**6), payer=ledger)
        self.app = LightspeedMiddleware(Starlette(routes=[Route("/api/x", ok)]), self.server, {"/api": 1})
        tip = lane_tip(os.urandom(32), 0)
        self.walker = ChainWalker.from_tip(tip, PER_LANE)
        terms = asyncio.run(self.server.create(AllowanceRequest(PER_LANE, (anchor(tip, PER_LANE),))))
        ledger.pay_sync(terms.invoice)
        self.allowance_id = terms.allowance_id

    def next_token(self) -> bytes:
        index = self.walker.next_index
        return Token(self.allowance_id, 0, index, self.walker.link(index)).header_value().encode()


def get(app: LightspeedMiddleware, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://api") as http:
            return await http.get("/api/x", headers=headers)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def paid() -> Paid:
    return Paid()


def test_spaces_and_tabs_around_a_token_are_optional_whitespace(paid: Paid) -> None:
    answer = get(paid.app, [(b"lightspeed-token", b" \t" + paid.next_token() + b" ")])
    assert answer.status_code == 200, answer.text


BAD_AROUND = [b"\xa0", b"\x85", b"\x0b", b"\x0c", b"\x1c", b"\x1f", b"\x00", b"\x7f", b"\xff"]


@pytest.mark.parametrize("extra", BAD_AROUND, ids=[e.hex() for e in BAD_AROUND])
def test_other_characters_around_a_token_are_a_400_naming_the_header(paid: Paid, extra: bytes) -> None:
    token = paid.next_token()
    for value in (extra + token, token + extra, b" " + extra + token + b"\t"):
        answer = get(paid.app, [(b"lightspeed-token", value)])
        assert answer.status_code == 400, (value, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["header"]) == ("bad_token", "Lightspeed-Token")
    assert get(paid.app, [(b"lightspeed-token", token)]).status_code == 200  # not spent by the above


def test_spaces_inside_the_hex_are_not_skipped(paid: Paid) -> None:
    """``bytes.fromhex`` skips spaces: 30 hex digits and two spaces would be a 15-byte id."""
    token = paid.next_token().decode()
    allowance_hex, lane, index, link = token.split(".")
    for value in (f"{allowance_hex[:30]}  .{lane}.{index}.{link}",
                  f"{allowance_hex}.{lane}.{index}.{link[:62]} 0",
                  f"{allowance_hex[:10]} {allowance_hex[11:]}.{lane}.{index}.{link}"):
        answer = get(paid.app, [(b"lightspeed-token", value.encode())])
        assert answer.status_code == 400, (value, answer.text)
        assert answer.json()["error"]["header"] == "Lightspeed-Token"
        assert answer.json()["error"]["field"] in ("token.allowance_id", "token.link")


def test_a_token_header_sent_twice_is_refused(paid: Paid) -> None:
    first, second = paid.next_token(), paid.next_token()
    answer = get(paid.app, [(b"lightspeed-token", first), (b"lightspeed-token", second)])
    assert answer.status_code == 400
    assert answer.json()["error"] == {"code": "bad_token", "header": "Lightspeed-Token",
                                      "field": "header", "reason": "sent more than once"}


def test_a_malformed_allowance_header_is_a_400_naming_it(paid: Paid) -> None:
    good = AllowanceRequest(10, (os.urandom(32),)).header_value()
    for value in (good.encode() + b"\xa0", f"{good}; calls=20".encode(), b"calls=10",
                  good.replace("anchors=", "anchors= 0").encode()):
        answer = get(paid.app, [(b"lightspeed-allowance", value)])
        assert answer.status_code == 400, (value, answer.text)
        error = answer.json()["error"]
        assert (error["code"], error["header"]) == ("bad_request", "Lightspeed-Allowance")
    assert get(paid.app, [(b"lightspeed-allowance", good.encode())]).status_code == 402  # sold


# ------------------------------------------------------------------------------ fuzz

NOISE = st.sampled_from([b" ", b"\t", b".", b"0", b"a", b"\x00", b"\x0b", b"\x7f", b"\x85",
                         b"\xa0", b"\xff", b"\r", b"\n", b"\"", b";", b",", b"=", b"-", b"9" * 20])


@st.composite
def header_values(draw: st.DrawFn, base: bytes) -> bytes:
    """A valid value with a few bytes inserted, deleted or replaced, or arbitrary bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    value = bytearray(base)
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, 250)) % (len(value) + 1)  # draws independent of the base's length
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(NOISE)
        if action == "insert":
            value[at:at] = piece
        elif action == "delete":
            del value[at:at + draw(st.integers(1, 5))]
        else:
            value[at:at + len(piece)] = piece
    return bytes(value)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data())
def test_fuzzed_token_headers_through_the_asgi_app_are_answered_never_raised(
        paid: Paid, data: st.DataObject) -> None:
    value = data.draw(header_values(paid.next_token()))
    answer = get(paid.app, [(b"lightspeed-token", value)])  # ASGITransport re-raises app errors
    assert answer.status_code in (200, 400, 401, 402), answer.text
    if answer.status_code == 400:
        error = answer.json()["error"]
        assert (error["code"], error["header"]) == ("bad_token", "Lightspeed-Token")


@FUZZ
@given(data=st.data())
def test_fuzzed_allowance_headers_through_the_asgi_app_are_answered_never_raised(
        paid: Paid, data: st.DataObject) -> None:
    base = AllowanceRequest(8, (os.urandom(32), os.urandom(32)), 4).header_value().encode()
    answer = get(paid.app, [(b"lightspeed-allowance", data.draw(header_values(base)))])
    assert answer.status_code in (400, 402), answer.text
    if answer.status_code == 400:
        assert answer.json()["error"]["header"] == "Lightspeed-Allowance"


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


@pytest.fixture(scope="module")
def live(paid: Paid) -> Iterator[tuple[int, Captured]]:
    """The app behind a real uvicorn (h11) on loopback, in a thread; its error log captured."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(paid.app, log_level="critical", lifespan="off",
                                           access_log=False, http="h11"))
    captured = Captured()
    logging.getLogger("uvicorn.error").addHandler(captured)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    yield sock.getsockname()[1], captured
    server.should_exit = True
    thread.join(10)
    logging.getLogger("uvicorn.error").removeHandler(captured)


def raw_request(port: int, name: bytes, value: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /api/x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n" + name + b": "
                     + value + b"\r\n\r\n")
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_headers_over_real_http_never_give_a_500(
        paid: Paid, live: tuple[int, Captured], data: st.DataObject) -> None:
    port, captured = live
    name = data.draw(st.sampled_from([b"Lightspeed-Token", b"Lightspeed-Allowance"]))
    base = paid.next_token() if name == b"Lightspeed-Token" else AllowanceRequest(
        8, (os.urandom(32),)).header_value().encode()
    response = raw_request(port, name, data.draw(header_values(base)))
    status = response.split(b" ", 2)[1]
    assert response.startswith(b"HTTP/1.1 ") and status in (b"200", b"400", b"401", b"402"), response[:300]
    if status == b"400" and b"application/json" in response.split(b"\r\n\r\n")[0]:
        assert b'"header": "' + name + b'"' in response  # ours; else h11 refused the request itself
    assert captured.records == []


def test_the_live_server_still_serves_after_the_fuzz(paid: Paid, live: tuple[int, Captured]) -> None:
    assert raw_request(live[0], b"Lightspeed-Token", paid.next_token()).startswith(b"HTTP/1.1 200")


def test_the_middleware_refuses_a_prefix_it_could_not_put_in_a_header(paid: Paid) -> None:
    for prefix in ("/light speed", 'x"', "/é", "/a\nb"):
        with pytest.raises(ValueError, match="prefix"):
            LightspeedMiddleware(paid.app, paid.server, {"/api": 1}, prefix=prefix)


# ------------------------------------------------- raw bytes over real HTTP, with spaces around

@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    ledger = Ledger()
    server = AllowanceServer(MemoryAllowanceStore(), ledger, ledger.node_id,
                             ServerPolicy(Price(1), creates_per_minute=10**6), payer=ledger)
    app = LightspeedMiddleware(Starlette(routes=[Route("/api/x", ok)]), server, {"/api": 1})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    http = uvicorn.Server(uvicorn.Config(app, log_level="critical", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(http.serve(sockets=[sock])), daemon=True)
    thread.start()
    while not http.started:
        time.sleep(0.01)
    yield sock.getsockname()[1]
    http.should_exit = True
    thread.join(5)


def raw_get(port: int, header: bytes, value: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"GET /api/x HTTP/1.1\r\nHost: api\r\nConnection: close\r\n" + header + b": " + value + b"\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


TOKENISH = st.builds(lambda a, lane, index, link: f"{a}.{lane}.{index}.{link}".encode(),
                     st.text("0123456789abcdef", min_size=0, max_size=34), st.integers(-1, 2**40).map(str),
                     st.integers(-1, 2**70).map(str), st.text("0123456789abcdefg", max_size=66))
SPACES = st.sampled_from([b"", b" ", b"  ", b"\t", b" \t "])
VALUES = st.one_of(TOKENISH, st.binary(max_size=300).filter(lambda b: b"\r" not in b and b"\n" not in b),
                   st.builds(lambda n: b"a" * n, st.integers(0, 20_000)))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=st.sampled_from([b"Lightspeed-Token", b"Lightspeed-Allowance"]), before=SPACES, value=VALUES,
       after=SPACES)
def test_any_header_value_gets_a_4xx_answer(port: int, header: bytes, before: bytes, value: bytes,
                                            after: bytes) -> None:
    answer = raw_get(port, header, before + value + after)
    status = int(answer.split(b" ", 2)[1])
    assert status in (400, 401, 402, 431), answer[:300]


def test_a_token_with_surrounding_spaces_is_read_as_the_token(port: int) -> None:
    answer = raw_get(port, b"Lightspeed-Token", b"  " + b"00" * 16 + b".0.1." + b"11" * 32 + b" \t")
    assert answer.startswith(b"HTTP/1.1 402"), answer[:300]  # a well-formed token of an unknown allowance
    assert b'"unknown_allowance"' in answer
