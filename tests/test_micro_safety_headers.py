"""Hostile Lightspeed headers over real HTTP (uvicorn + h11): always a 4xx answer, never a 500 (issue 11, item 16).

The bytes go over a raw socket, so nothing on the client side cleans them first: surrounding
spaces and tabs, control characters, non-ASCII, huge values, in both Lightspeed headers.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from lightspeed.micro.asgi import LightspeedMiddleware
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.terms import Price
from tests.support.ledger import Ledger


async def ok(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


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
