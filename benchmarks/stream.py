"""Metered streams: the cost of one tick beside SHA-256 and a WebSocket echo, then many streams at once.

Part 1 (alternating windows, ``_compare``): one tick through the two sans-IO machines (the buyer
takes the next link, the seller checks it with one hash, grants, meters and reports) beside one
SHA-256 of 32 bytes; and one tick over a real WebSocket to a server process (pay → store update
→ meter → ``delivered`` back) beside a WebSocket echo of a frame of the same size on the same
server stack. CPU time there is the server process's (what bounds how many streams one server
carries), read from its ``/stats`` around each window.

Part 2: ``--streams`` concurrent streams (1,000 by default) on one server process, each on the
EV charger (10 ticks/s at most: a report every 100 ms), for ``--seconds``. Reported: ticks/s per
stream (median and worst decile), all ticks/s, the server process's CPU per tick and share of a
core, the same for the buyers, and whether every receipt recomputes from its links. The server's
``/stats`` is also read every second (``per_second``): how many seconds had a late report, and the
rate and CPU share in the seconds that had none. The benchmark opens every stream at once, so
their batch renewals come together; read each second, that is where the late reports fall.

The server process (``_stream_server.py``) serves the WebSockets (streams and echo) with
:mod:`lightspeed.stream.wsserver` on one port and its HTTP routes (the ledger, ``/stats``) with
uvicorn on another; ``--ws uvicorn`` there serves everything through uvicorn + wsproto, the ASGI
binding applications mount. The buyers all run in this process, on
:mod:`lightspeed.stream.wsclient` (about 60 µs of CPU a tick: 10,000 ticks/s take 0.6 of a core,
so one process is enough and they are not split into workers); on a 2-core machine they share
the cores with the server, so a loaded machine shows fewer ticks/s than the CPU per tick allows.
Both processes raise the collector's young-generation threshold and freeze what was imported
(``gc.freeze``) before the streams run: at the defaults the collector took ~12% of the server's
CPU at 1,000 streams, ~1% after (measured with ``gc.callbacks``); a seller serving many streams
would do the same.

Both processes run on uvloop's event loop (``--loop asyncio``: the standard library's, for a
side by side): at 1,000 streams it took 5-15% less of the server's CPU per tick in alternating
30-second runs, and a seller serving many streams would run on it too (``uvloop.run(main())``).

``--baseline-src DIR`` starts a second server process with ``PYTHONPATH=DIR`` (the ``src`` of another
checkout, e.g. ``git worktree add /tmp/before main``) and measures its tick and echo in the same
alternating windows as this checkout's: a before/after of a server change on a shared machine,
where runs minutes apart are not comparable.

``--quick`` is a smoke run (tiny counts, 20 streams for 2 s) that a test runs; full figures need a
quiet machine: ``python -m benchmarks stream``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import uvloop

from benchmarks._compare import Operation, Side, local, machine, measure, report
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip
from lightspeed.stream import BuyerStream, SellerStream, Tariff, recompute
from lightspeed.stream.client import BuyPolicy, StreamBuyer
from lightspeed.stream.messages import encode, parse
from lightspeed.stream.wsclient import WebSocket
from lightspeed.tasks import cancel_and_wait

HERE = Path(__file__).resolve().parent
KEEPALIVE = httpx.Limits(keepalive_expiry=2.0)
MEMORY_TARIFF = Tariff("B", 1, 1, 10**8, window_ticks=10**8)


def memory_tick() -> Any:
    """One tick through both machines in memory (no I/O)."""
    ticks = 2_000_000
    tip = lane_tip(os.urandom(32), 0)
    start = anchor(tip, ticks)
    buyer = BuyerStream(MEMORY_TARIFF, bytes(16), b"\x02" * 33, ChainWalker.from_tip(tip, ticks), 0, start,
                        max_msat=ticks)
    buyer.funded(ticks)
    seller = SellerStream(MEMORY_TARIFF, bytes(16), b"\x02" * 33, bytes(16), 0, 0, start)

    def tick() -> None:
        payment = buyer.next_payment()
        assert payment is not None
        seller.receive_payment(*payment)
        units = seller.grant()
        seller.delivered(units)
        buyer.receive_delivery(units)

    return tick


class LedgerPayer:
    """Pays allowance invoices through the server process's benchmark ledger (``/ledger/pay``)."""

    def __init__(self, http_url: str) -> None:
        # idle connections dropped before uvicorn's 5 s keep-alive closes them: reusing one the
        # server closes at that moment fails the POST (httpx.ReadError, seen once under load)
        self.http = httpx.AsyncClient(base_url=http_url, timeout=60, limits=KEEPALIVE)
        self.slots = asyncio.Semaphore(16)  # a thousand buyers opening at once: queue here, not in httpx's pool

    async def pay(self, invoice: str) -> bytes:
        async with self.slots:
            response = await self.http.post("/ledger/pay", json={"invoice": invoice})
        response.raise_for_status()
        return bytes.fromhex(response.json()["preimage"])


class WsSides:
    """One open stream on ``/fast`` and one echo connection, driven one round trip at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ws_url: str, http_url: str, ticks: int) -> None:
        self.loop, self.ws_url, self.http_url, self.payer = loop, ws_url, http_url, LedgerPayer(http_url)
        self.ticks = ticks
        loop.run_until_complete(self._open())

    async def _open(self) -> None:
        self.stream_ws = await WebSocket.connect(self.ws_url + "/fast")
        hello = parse(await self.stream_ws.recv(10))
        tariff = Tariff.from_json(hello["tariff"])
        tip = lane_tip(os.urandom(32), 0)
        start = anchor(tip, self.ticks)
        await self.stream_ws.send(encode("buy", anchor=start, ticks=self.ticks,
                                         batch_ticks=min(self.ticks, tariff.window_ticks)))
        offer = parse(await self.stream_ws.recv(10))
        await self.payer.pay(offer["invoice"])
        self.buyer = BuyerStream(tariff, hello["stream_id"], hello["node_id"], ChainWalker.from_tip(tip, self.ticks),
                                 0, start, self.ticks * tariff.tick_msat)
        self.buyer.funded(offer["ticks"])
        await self.stream_ws.send(encode("open", allowance_id=offer["allowance_id"]))
        assert parse(await self.stream_ws.recv(10))["type"] == "position"
        self.echo_ws = await WebSocket.connect(self.ws_url + "/echo")
        payment = self.buyer.walker.length  # a frame as long as a pay message
        self.echo_frame = encode("pay", index=payment, link=bytes(32))

    async def _ticks(self, n: int) -> None:
        for _ in range(n):
            payment = self.buyer.next_payment()
            assert payment is not None, "the benchmark's lane is spent: raise its ticks"
            await self.stream_ws.send(encode("pay", index=payment[0], link=payment[1]))
            message = parse(await self.stream_ws.recv(10))
            assert message["type"] == "delivered", message
            self.buyer.receive_delivery(message["units"])

    async def _echoes(self, n: int) -> None:
        for _ in range(n):
            await self.echo_ws.send(self.echo_frame)
            await self.echo_ws.recv(10)

    def timed(self, make: Any) -> Any:
        """A side's runner: wall time at the client, CPU time of the *server process* (what bounds
        the streams one server carries), from its ``/stats`` before and after the window."""
        def run(n: int) -> tuple[float, float]:
            cpu0 = httpx.get(self.http_url + "/stats").json()["cpu_s"]
            wall0 = time.perf_counter_ns()
            self.loop.run_until_complete(make(n))
            wall = (time.perf_counter_ns() - wall0) / n
            cpu1 = httpx.get(self.http_url + "/stats").json()["cpu_s"]
            return wall, (cpu1 - cpu0) * 1e9 / n
        run(2)  # warm up
        return run

    def close(self) -> None:
        async def close() -> None:
            await self.stream_ws.close()
            await self.echo_ws.close()
            await self.payer.http.aclose()
        self.loop.run_until_complete(close())


async def many_streams(ws_url: str, http_url: str, streams: int, seconds: float) -> dict[str, Any]:
    payer = LedgerPayer(http_url)
    async with httpx.AsyncClient(base_url=http_url, limits=KEEPALIVE) as http:
        delivered: dict[int, int] = {}
        buyers = []
        for i in range(streams):
            def update(b: BuyerStream, i: int = i) -> None:
                delivered[i] = b.delivered_units
            budget = int((seconds + 30) * 10) * 300  # the charger: 300 msat per 1 Wh tick, 10 ticks/s
            buyers.append(StreamBuyer(ws_url + "/charge", payer, BuyPolicy(budget, idle_timeout=60), update))
        opened = time.perf_counter()
        tasks = [asyncio.create_task(b.run()) for b in buyers]
        while len(delivered) < streams:  # every stream has delivered its first tick
            if any(t.done() for t in tasks):
                for t in tasks:
                    if t.done():
                        t.result()
            await asyncio.sleep(0.05)
        open_s = time.perf_counter() - opened
        await asyncio.sleep(0.5)  # settle into the cadence
        start_units, start_stats = dict(delivered), (await http.get("/stats")).json()
        started, cpu_started = time.perf_counter(), time.process_time()
        # each reading: the server's /stats and this process's CPU (the buyers') at that moment
        readings: list[tuple[float, dict[str, Any]]] = [(started, {**start_stats, "buyers_cpu_s": cpu_started})]
        reader = asyncio.create_task(read_every_second(http, readings, started + seconds))
        await asyncio.sleep(seconds)
        end_units, end_stats = dict(delivered), (await http.get("/stats")).json()
        elapsed, cpu_ended = time.perf_counter() - started, time.process_time()
        client_cpu = cpu_ended - cpu_started
        await cancel_and_wait(reader)
        readings.append((started + elapsed, {**end_stats, "buyers_cpu_s": cpu_ended}))
        for b in buyers:
            b.stop()
        receipts = await asyncio.gather(*tasks)
    await payer.http.aclose()
    rates = sorted((end_units[i] - start_units[i]) / elapsed for i in range(streams))
    ticks = end_stats["ticks"] - start_stats["ticks"]
    consistent = sum(recompute(r).consistent for r in receipts)
    return {
        "streams": streams, "seconds": round(elapsed, 2), "open_all_s": round(open_s, 2),
        "ticks_per_s_per_stream": {"median": round(statistics.median(rates), 2),
                                   "p10": round(rates[len(rates) // 10], 2), "min": round(rates[0], 2),
                                   "max": round(rates[-1], 2)},
        "target_ticks_per_s_per_stream": 10, "ticks_per_s_all": round(ticks / elapsed, 1),
        "server_cpu_us_per_tick": round(1e6 * (end_stats["cpu_s"] - start_stats["cpu_s"]) / ticks, 1) if ticks else None,
        "server_cpu_share": round((end_stats["cpu_s"] - start_stats["cpu_s"]) / elapsed, 2),
        "buyers_cpu_us_per_tick": round(1e6 * client_cpu / ticks, 1) if ticks else None,
        "buyers_cpu_share": round(client_cpu / elapsed, 2),
        "receipts_consistent": consistent, "reconnects": sum(b.reconnected for b in buyers),
        # the charger's reports in the window that were made up (a payment late by less than an
        # interval) and its schedules started afresh (later than that: a stream slowed down)
        "reports_made_up": end_stats["late"] - start_stats["late"],
        "schedules_restarted": end_stats["restarts"] - start_stats["restarts"],
        # how many ticks share a store commit (the SQLite store's group commit; 0: another store)
        "ticks_per_store_commit": round(ticks / commits, 2) if (commits := end_stats.get("store_commits", 0)
                                                                 - start_stats.get("store_commits", 0)) else 0,
        # the SQLite store's WAL at the end: it stays bounded only if checkpoints let it start again
        "store_wal_mb_at_end": round(end_stats.get("store_wal_bytes", 0) / 1e6, 1),
        "per_second": by_second(readings),
    }


async def read_every_second(http: httpx.AsyncClient, readings: list[tuple[float, dict[str, Any]]],
                            until: float) -> None:
    """The server's ``/stats`` once a second (appended to ``readings``) until ``until``: where in
    the window the late reports fall, not only how many."""
    while time.perf_counter() + 1.0 < until:
        await asyncio.sleep(1.0)
        stats = (await http.get("/stats")).json()
        readings.append((time.perf_counter(), {**stats, "buyers_cpu_s": time.process_time()}))


def by_second(readings: list[tuple[float, dict[str, Any]]]) -> dict[str, Any]:
    """The window read each second: how many seconds had a late report (made up or not) and what
    the server served in the seconds that had none (between the streams' batch renewals, when
    the streams opened together), beside each second's figures."""
    seconds = []
    for (t0, a), (t1, b) in itertools.pairwise(readings):
        dt = t1 - t0
        if dt <= 0:
            continue
        seconds.append({"t": round(t1 - readings[0][0], 1), "ticks_per_s": round((b["ticks"] - a["ticks"]) / dt),
                        "cpu_share": round((b["cpu_s"] - a["cpu_s"]) / dt, 2),
                        "buyers_cpu_share": round((b["buyers_cpu_s"] - a["buyers_cpu_s"]) / dt, 2),
                        "late": b["late"] - a["late"],
                        "restarts": b["restarts"] - a["restarts"]})
    calm = [x for x in seconds if x["late"] == 0 and x["restarts"] == 0]
    late = [x for x in seconds if x not in calm]

    def median(of: list[dict[str, Any]], key: str) -> float | None:
        return round(statistics.median(x[key] for x in of), 2) if of else None

    return {
        "seconds": len(seconds), "seconds_with_late_reports": len(late),
        "ticks_per_s_all_when_none_late": round(statistics.median(x["ticks_per_s"] for x in calm)) if calm else None,
        "cpu_share_when_none_late": median(calm, "cpu_share"), "cpu_share_when_late": median(late, "cpu_share"),
        # the buyers share the machine's cores: a late second with the server under a core is theirs
        "buyers_cpu_share_when_none_late": median(calm, "buyers_cpu_share"),
        "buyers_cpu_share_when_late": median(late, "buyers_cpu_share"),
        "readings": seconds,
    }


def start_server(store: str, ws: str, src: str | None,
                 loop: str = "asyncio") -> tuple[subprocess.Popen[str], tuple[str, str]]:
    """Start ``_stream_server.py`` (with ``PYTHONPATH=src`` when given): the process and its WS and HTTP URLs."""
    env = {**os.environ, "PYTHONPATH": src} if src else None
    server = subprocess.Popen([sys.executable, str(HERE / "_stream_server.py"), "--store", store, "--ws", ws,
                               "--loop", loop], stdout=subprocess.PIPE, text=True, env=env)
    assert server.stdout is not None
    line = server.stdout.readline().split()
    if not line or line[0] != "READY":
        server.kill()
        raise SystemExit(f"error: the stream server{f' from {src}' if src else ''} did not start")
    return server, (line[1], line[2])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--store", default=None, help="the server's allowance store (default: SQLite in a temp dir)")
    parser.add_argument("--ws", choices=("fast", "uvicorn"), default="fast",
                        help="the server's WebSocket stack: stream/wsserver.py (fast) or uvicorn + wsproto")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the event loop of the server process and of the buyers (default uvloop)")
    parser.add_argument("--baseline-src", default=None, metavar="DIR",
                        help="also measure a server process run from DIR (another checkout's src) in the same windows")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny counts, 20 streams for 2 s")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.windows, args.scale, args.streams, args.seconds = 2, 0.02, 20, 2.0
    start = machine()
    n_mem, n_ws = max(10, round(20_000 * args.scale)), max(10, round(2_000 * args.scale))
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or f"sqlite:{Path(tmp) / 'allowances.sqlite'}"
        server, (ws_url, http_url) = start_server(store, args.ws, None, args.loop)
        baseline = None
        try:
            if args.baseline_src:
                baseline, (base_ws, base_http) = start_server(args.store or f"sqlite:{Path(tmp) / 'baseline.sqlite'}", args.ws,
                                                              args.baseline_src, args.loop)
            loop = asyncio.new_event_loop()
            ticks = n_ws * (args.windows + 1) + 100
            ws = WsSides(loop, ws_url, http_url, ticks)
            sides = [Side("lightspeed", ws.timed(ws._ticks), n_ws), Side("WebSocket echo", ws.timed(ws._echoes), n_ws)]
            if baseline is not None:
                base = WsSides(loop, base_ws, base_http, ticks)
                sides += [Side("lightspeed (baseline src)", base.timed(base._ticks), n_ws),
                          Side("WebSocket echo (baseline src)", base.timed(base._echoes), n_ws)]
            sha_input = os.urandom(32)
            operations = [
                Operation("one tick, sans-IO machines", [
                    Side("lightspeed", local(memory_tick()), n_mem),
                    Side("SHA-256 (32 B)", local(lambda: hashlib.sha256(sha_input).digest()), n_mem)],
                    note="buyer's next link + seller's one-hash check, grant, meter report, buyer's count"),
                Operation("one tick over WebSocket (loopback, server process)", sides,
                          note="pay → store update → meter → delivered, vs the same-size frame echoed; CPU: the server "
                               "process's (two /stats requests per window included)"
                               + (f"; baseline: a server run from {args.baseline_src}" if baseline else "")),
            ]
            results = measure(operations, args.windows)
            ws.close()
            if baseline is not None:
                base.close()
                baseline.kill()
                baseline.wait(10)
            loop.close()
            gc.collect()  # the buyers' process: the same collector tuning as the server's (_stream_server.py)
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
            streams = many_streams(ws_url, http_url, args.streams, args.seconds)
            scale = asyncio.run(streams) if args.loop == "asyncio" else uvloop.run(streams)
        finally:
            for process in (server, baseline):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(10)
    argsns = argparse.Namespace(windows=args.windows, scale=args.scale, json=args.json)
    doc = report("stream", "Metered streams: one tick beside SHA-256 and a WebSocket echo", operations, results,
                 start, argsns, extra={"concurrent": scale, "store": store.split(":")[0], "ws": args.ws, "loop": args.loop,
                                                     "quick": args.quick})
    if not args.json:
        c = scale["ticks_per_s_per_stream"]
        print(f"{scale['streams']} concurrent streams on one server process ({args.loop} event loop) for {scale['seconds']} s: "
              f"{c['median']} ticks/s per stream (median; worst decile {c['p10']}, min {c['min']}; target 10), "
              f"{scale['ticks_per_s_all']} ticks/s in all, server CPU {scale['server_cpu_us_per_tick']} µs per tick "
              f"({scale['server_cpu_share']} of a core), buyers {scale['buyers_cpu_us_per_tick']} µs per tick "
              f"({scale['buyers_cpu_share']} of a core); {scale['receipts_consistent']}/{scale['streams']} receipts "
              f"recompute from their links; the charger made up {scale['reports_made_up']} late reports and "
              f"restarted {scale['schedules_restarted']} schedules.")
        each = scale["per_second"]
        print(f"Read each second: {each['seconds_with_late_reports']} of {each['seconds']} seconds had a late report; "
              f"in the others the server served {each['ticks_per_s_all_when_none_late']} ticks/s in all at "
              f"{each['cpu_share_when_none_late']} of a core, the buyers at {each['buyers_cpu_share_when_none_late']} "
              f"(medians); in the late seconds the server ran at {each['cpu_share_when_late']} of a core, the "
              f"buyers at {each['buyers_cpu_share_when_late']}.")
        if scale["ticks_per_store_commit"]:
            print(f"The SQLite store: {scale['ticks_per_store_commit']} ticks per commit; its WAL was "
                  f"{scale['store_wal_mb_at_end']} MB at the end.")
        print(json.dumps(doc, sort_keys=True))


if __name__ == "__main__":
    main()
