"""The wrk load of the paid-API benchmark: each connection walks one lane's tokens, in order.

Runs Debian's ``wrk`` with ``benchmarks/paid_api.lua`` against a small HTTP server that records,
per connection, the tokens it received, and answers 200 only to a token further along the lane
that connection started on (401/402 otherwise, as the paid API would: it accepts a skip, as
when wrk's first request of a thread is built and not sent, and refuses a replay).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from benchmarks.paid_api import wrk_load

LANES, PER_LANE = 3, 100_000

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None,
                                reason="Debian's wrk is not installed (.ci/run installs it: apt-get install wrk)")


def _token(lane: int, index: int) -> str:
    return f"L{lane}-{index}"


def _lane(token: str) -> int:
    return int(token[1:token.index("-")])


def _index(token: str) -> int:
    return int(token[token.index("-") + 1:])


async def _serve(seen: list[list[str]], wrong: list[str]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mine: list[str] = []
        seen.append(mine)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                token = ""
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "lightspeed-token":
                        token = value.strip()
                ok = token.startswith("L") and (not mine or (
                    _lane(token) == _lane(mine[-1]) and _index(token) > _index(mine[-1])))
                if not ok:
                    wrong.append(token)
                mine.append(token)
                status = b"200 OK" if ok else b"402 Payment Required"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_each_wrk_connection_walks_its_own_lane_in_order_and_failures_are_counted(tmp_path: Path) -> None:
    async def go() -> None:
        seen: list[list[str]] = []
        wrong: list[str] = []
        server = await _serve(seen, wrong)
        port = server.sockets[0].getsockname()[1]
        tokens = [[_token(lane, i) for i in range(1, PER_LANE + 1)] for lane in range(LANES)]
        rate, failed = await wrk_load("127.0.0.1", port, LANES, 1, tokens, tmp_path)
        assert wrong == [] and failed == 0 and rate > 0
        walked = [calls for calls in seen if calls]  # (wrk may open and drop an idle connection)
        # One connection per lane, each only ever on its own lane, always moving forward.
        assert sorted(_lane(calls[0]) for calls in walked) == list(range(LANES))
        for calls in walked:
            assert _index(calls[0]) <= 2 and len({_lane(t) for t in calls}) == 1
        assert sum(len(calls) for calls in walked) >= rate * 0.5
        # A lane with too few tokens: the calls past its end are refused and counted as failed.
        short = [lane[:5] for lane in tokens]
        seen.clear()
        _, failed = await wrk_load("127.0.0.1", port, LANES, 1, short, tmp_path / "short")
        assert failed > 0
        server.close()
        await server.wait_closed()

    asyncio.run(go())
