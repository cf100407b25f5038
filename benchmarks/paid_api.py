"""Paid API calls per second: unpaid vs Lightspeed-paid vs one Lightning payment per call (L402 style).

One server process (uvicorn, one worker: a Starlette app behind the Lightspeed middleware,
with its own node) serves the SAME handler on an unpaid route and a paid route. A load
generator in this process keeps several HTTP/1.1 keep-alive connections busy with a raw
asyncio client (a few µs per request, so the server is what is measured), each connection
spending its own lane of one allowance that this process's node bought over a direct
channel. The L402-style client pays every call with its own Lightning payment over that
channel (request, 402 with an invoice, pay, retry). Repeated with the SQLite, Redis and
PostgreSQL stores (servers started here on loopback). Also: the server's verification cost
per call in-process, and memory per allowance.

Unpaid and paid loads alternate over ``--windows`` windows (the order rotating), and the
paid/unpaid ratio is taken within each window, then given as median and min-max. ``--load wrk``
drives them with Debian's ``wrk`` instead (an independent load generator in C; the script
``paid_api.lua`` gives each connection its own thread and lane and walks it in order);
``--load both`` runs the two side by side.

``python -m benchmarks paid_api [--seconds S] [--connections C] [--windows W] [--load python|wrk|both]
[--l402-calls N] [--stores LIST] [--memory-allowances N]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import httpx
from tests.support.ledger import Ledger
from tests.support.servers import postgres_server, redis_server

from benchmarks._util import report
from lightspeed.chain.regtest import RegtestChain
from lightspeed.cli.paid_example import loopback_socket, open_channel_to_api
from lightspeed.micro.hashchain import ChainWalker, anchor, lane_tip, links_to
from lightspeed.micro.lightning import NodePayer
from lightspeed.micro.server import AllowanceServer, ServerPolicy
from lightspeed.micro.stores.memory import MemoryAllowanceStore
from lightspeed.micro.stores.sqlite import SqliteAllowanceStore
from lightspeed.micro.terms import Price
from lightspeed.micro.token import AllowanceRequest, Token
from lightspeed.node.node import Node


class AlwaysPaid(Ledger):
    """Invoices that count as paid at once: in-process cost measurements leave Lightning out."""

    async def is_paid(self, payment_hash: bytes) -> bool:
        return True


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client: the load generator must cost less than the server."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name:
                fields[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(fields.get("content-length", "0")))
        return status, body, fields

    def close(self) -> None:
        self.writer.close()


async def load(host: str, port: int, connections: int, seconds: float,
               token_source: list[list[str]] | None, stats: dict[str, float] | None = None) -> tuple[float, int]:
    """Requests per second over ``connections`` busy connections; tokens per connection if paid."""
    conns = [await RawConnection.open(host, port) for _ in range(connections)]
    done = [0] * connections
    failed = 0
    stop_at = time.perf_counter() + seconds

    async def run(i: int) -> None:
        nonlocal failed
        conn = conns[i]
        while time.perf_counter() < stop_at:
            if token_source is None:
                status, _, _ = await conn.get(f"/unpaid/weather/c{done[i]}")
            else:
                if done[i] >= len(token_source[i]):
                    return
                status, _, _ = await conn.get(f"/weather/c{done[i]}", {"Lightspeed-Token": token_source[i][done[i]]})
            failed += status != 200
            done[i] += 1

    started = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    if stats is not None:
        stats.update(requests=sum(done), seconds=elapsed)
    return (sum(done) - failed) / elapsed, failed  # calls served: a quick refusal is no call


async def wrk_load(host: str, port: int, connections: int, seconds: float,
                   token_source: list[list[str]] | None, tmp: Path,
                   stats: dict[str, float] | None = None) -> tuple[float, int]:
    """As :func:`load`, driven by ``wrk`` (one thread and connection per lane, see paid_api.lua)."""
    target = "unpaid"
    if token_source is not None:
        target = str(tmp / "tokens")
        os.makedirs(target, exist_ok=True)
        for lane, tokens in enumerate(token_source):
            (Path(target) / f"lane-{lane}.txt").write_text("\n".join(tokens) + "\n")
    proc = await asyncio.create_subprocess_exec(
        "wrk", "-t", str(connections), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
        "-s", str(_HERE / "paid_api.lua"), f"http://{host}:{port}", "--", target,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    found = re.search(r"LIGHTSPEED requests=(\d+) failed=(\d+) seconds=([\d.]+)", out.decode())
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"wrk failed: {err.decode().strip() or out.decode().strip()}")
    requests, failed, elapsed = int(found[1]), int(found[2]), float(found[3])
    if stats is not None:
        stats.update(requests=requests, seconds=elapsed)
    refused = re.search(r"statuses=(\S+)", out.decode())
    if refused:  # which statuses the refused calls got (the first 1000 of each lane)
        print(f"wrk: {failed} calls refused, by status {refused[1]}", file=sys.stderr)
    return (requests - failed) / elapsed, failed  # calls served: a quick refusal is no call


async def buy_tokens(base_url: str, payer: NodePayer, lanes: int, per_lane: int) -> list[list[str]]:
    """One allowance of ``lanes`` x ``per_lane`` calls, paid over the channel; tokens precomputed."""
    seed = os.urandom(32)
    tips = [lane_tip(seed, lane) for lane in range(lanes)]
    request = AllowanceRequest(per_lane, tuple(anchor(t, per_lane) for t in tips))
    async with httpx.AsyncClient(base_url=base_url) as http:
        created = await http.post("/lightspeed/allowances", json=request.to_json())
    allowance = created.json()["allowance"]
    await payer.pay(allowance["invoice"])
    allowance_id = bytes.fromhex(allowance["id"])
    tokens = []
    for lane, tip in enumerate(tips):
        walker = ChainWalker.from_tip(tip, per_lane)
        tokens.append([Token(allowance_id, lane, i, walker.link(i)).header_value() for i in range(1, per_lane + 1)])
    return tokens


async def l402_style(host: str, port: int, payer: NodePayer, calls: int) -> tuple[float, list[float]]:
    """Each call paid by its own Lightning payment: ask (402 + invoice), pay over the channel, retry."""
    conn = await RawConnection.open(host, port)
    latencies = []
    started = time.perf_counter()
    for n in range(calls):
        t0 = time.perf_counter()
        tip = os.urandom(32)
        ask = AllowanceRequest(1, (anchor(tip, 1),))
        status, body, _ = await conn.get(f"/weather/c{n}", {"Lightspeed-Allowance": ask.header_value()})
        allowance = json.loads(body)["allowance"]
        await payer.pay(allowance["invoice"])
        token = Token(bytes.fromhex(allowance["id"]), 0, 1, tip).header_value()
        status, _, _ = await conn.get(f"/weather/c{n}", {"Lightspeed-Token": token})
        assert status == 200, status
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    conn.close()
    return calls / elapsed, latencies


class CpuMeter:
    """CPU seconds used so far by each side of a run: the server workers, the store's server
    (redis-server: its INFO; PostgreSQL: the postmaster and its backends) and the load
    generator (wrk: this process's reaped children; the Python generator: this process)."""

    def __init__(self, server_pids: list[int], store_url: str) -> None:
        self.server_pids = server_pids
        self._store = _store_cpu_reader(store_url)

    def read(self, generator: str) -> dict[str, float]:
        load = (resource.getrusage(resource.RUSAGE_CHILDREN) if generator == "wrk"
                else resource.getrusage(resource.RUSAGE_SELF))
        return {"server": sum(_proc_cpu(pid) for pid in self.server_pids),
                "store": self._store() if self._store else 0.0,
                "load": load.ru_utime + load.ru_stime}


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (``/proc/PID/stat``); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _store_cpu_reader(url: str) -> Any:
    if url.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(url)

        def redis_cpu() -> float:
            info = client.info("cpu")
            return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return redis_cpu
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        assert row is not None
        postmaster = int((Path(row[0]) / "postmaster.pid").read_text().split()[0])

        def postgres_cpu() -> float:  # the backends that exited meanwhile are not counted
            total = _proc_cpu(postmaster)
            for stat in Path("/proc").glob("[0-9]*/stat"):
                try:
                    if int(stat.read_text().rpartition(")")[2].split()[1]) == postmaster:
                        total += _proc_cpu(int(stat.parent.name))
                except (OSError, ValueError, IndexError):
                    continue
            return total
        return postgres_cpu
    return None


def _start_server(store_url: str, chain_path: Path, listener: socket.socket, mining: bool,
                  profile: str | None = None) -> subprocess.Popen[str]:
    command = [sys.executable, str(_HERE / "_paid_api_server.py"), "--chain", str(chain_path),
               "--store", store_url, "--fd", str(listener.fileno())]
    if profile:
        command += ["--profile", profile]
    if not mining:
        command.append("--no-mining")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, pass_fds=[listener.fileno()])
    assert server.stdout is not None
    line = server.stdout.readline().split()
    if not line or line[0] != "READY":
        server.kill()
        raise RuntimeError(f"the server process did not start ({store_url})")
    return server


async def measure_store(store_url: str, chain_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One store: the first worker alone while the client opens its channel and buys (the
    invoices are its node's), then ``--workers`` processes on one listening socket."""
    listener = loopback_socket()
    listener.listen(1024)
    profile = f"{args.profile}.{store_url.split(':')[0]}" if args.profile else None
    servers = [_start_server(store_url, chain_path, listener, mining=True, profile=profile)]
    try:
        host, port = listener.getsockname()[:2]
        base_url = f"http://{host}:{port}"
        chain = RegtestChain(chain_path)
        node = Node(os.urandom(32), chain, os.urandom(32))
        await node.start()
        try:
            await open_channel_to_api(node, chain, base_url, 1_000_000)
            payer = NodePayer(node)
            generators = ["python", "wrk"] if args.load == "both" else [args.load]
            probe, _ = await load(host, int(port), args.connections, 1.0, None)
            # Enough for each lane at 3x the probe's rate (the Python generator's) times the
            # workers: with several, a lane alone on one worker runs faster than the rest, and
            # paid calls past its last token are refused (402), not served.
            per_lane = int(3 * probe * args.workers * args.seconds * args.windows * len(generators)
                           / args.connections) + 100
            tokens = await buy_tokens(base_url, payer, args.connections, per_lane)
            # Activate it on the first worker, whose node was paid: the others have nodes of their
            # own, which know nothing of that invoice and would refuse the pending allowance (402).
            await _lanes_spent(base_url, tokens)
            # One Lightning payment per call needs the first worker's node: measured before the others start.
            l402, latencies = await l402_style(host, int(port), payer, args.l402_calls)
            for _ in range(args.workers - 1):
                servers.append(_start_server(store_url, chain_path, listener, mining=False))
            meter = CpuMeter([server.pid for server in servers], store_url)
            used = [0] * args.connections
            result: dict[str, Any] = {"failed": 0}
            for generator in generators:
                unpaid_rates, paid_rates, ratios = [], [], []
                cpu_us: dict[str, list[float]] = {}
                for w in range(args.windows):
                    window: dict[str, float] = {}
                    for side in (("unpaid", "paid") if w % 2 == 0 else ("paid", "unpaid")):
                        source = None
                        if side == "paid":
                            source = [lane[used[n]:] for n, lane in enumerate(tokens)]
                        before = meter.read(generator)
                        stats: dict[str, float] = {}
                        if generator == "wrk":
                            rate, failed = await wrk_load(host, int(port), args.connections, args.seconds, source,
                                                          Path(tempfile.mkdtemp(prefix="paid-api-wrk-")), stats)
                        else:
                            rate, failed = await load(host, int(port), args.connections, args.seconds, source, stats)
                        after = meter.read(generator)
                        for part, seconds in after.items():
                            cpu_us.setdefault(f"{side}_{part}", []).append(
                                (seconds - before[part]) / max(1.0, stats["requests"]) * 1e6)
                        if side == "paid":  # the next window goes on from where each lane stopped
                            spent = await _lanes_spent(base_url, tokens)
                            used = spent
                        window[side] = rate
                        result["failed"] += failed
                    unpaid_rates.append(window["unpaid"])
                    paid_rates.append(window["paid"])
                    ratios.append(window["paid"] / window["unpaid"])
                result[generator] = {"unpaid": statistics.median(unpaid_rates), "paid": statistics.median(paid_rates),
                                     "ratio": statistics.median(ratios), "ratio_min": min(ratios),
                                     "ratio_max": max(ratios),
                                     "cpu_us": {k: statistics.median(v) for k, v in cpu_us.items()}}
            result["unpaid"] = result[generators[0]]["unpaid"]
        finally:
            await node.stop()
        result.update(l402=l402, l402_ms=statistics.median(latencies) if latencies else 0.0)
        return result
    finally:
        if profile:  # the first worker writes its profile on SIGTERM
            servers[0].terminate()
            with suppress(subprocess.TimeoutExpired):
                servers[0].wait(timeout=30)
        for server in servers:
            server.kill()
            server.wait()
        listener.close()


def _rounded(value: Any) -> Any:
    """The summary's numbers to three decimals (nested dicts too)."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return round(value, 3) if isinstance(value, float) else value


async def _lanes_spent(base_url: str, tokens: list[list[str]]) -> list[int]:
    """How far the server has spent each lane (the status endpoint), so later windows go on from there."""
    allowance_id = Token.parse(tokens[0][0]).allowance_id.hex()
    async with httpx.AsyncClient(base_url=base_url) as http:
        status = (await http.get(f"/lightspeed/allowances/{allowance_id}")).json()
    spent: list[int] = status.get("allowance", status)["lanes_spent"]
    return spent


async def verification_costs() -> dict[str, float]:
    """The server side of one call, in process: hash check, then spend() with a store."""
    results: dict[str, float] = {}
    tip = os.urandom(32)
    link1 = ChainWalker.from_tip(tip, 2).link(1)
    anchor0 = anchor(tip, 2)
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        links_to(link1, 1, anchor0)
        samples.append(time.perf_counter_ns() - t0)
    results["hash check"] = statistics.median(samples) / 1000

    ledger = AlwaysPaid()
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"spend(), memory store": MemoryAllowanceStore(),
                  "spend(), SQLite NORMAL": SqliteAllowanceStore(Path(tmp) / "n.sqlite", synchronous="NORMAL"),
                  "spend(), SQLite FULL": SqliteAllowanceStore(Path(tmp) / "f.sqlite", synchronous="FULL")}
        for name, store in stores.items():
            server = AllowanceServer(store, ledger, ledger.node_id, ServerPolicy(Price(1)))
            n = 3000
            tip = os.urandom(32)
            terms = await server.create(AllowanceRequest(n, (anchor(tip, n),)))
            walker = ChainWalker.from_tip(tip, n)
            tokens = [Token(terms.allowance_id, 0, i, walker.link(i)) for i in range(1, n + 1)]
            samples = []
            for token in tokens:
                t0 = time.perf_counter_ns()
                await server.spend(token)
                samples.append(time.perf_counter_ns() - t0)
            results[name] = statistics.median(samples[100:]) / 1000
            await store.aclose()
    return results


async def memory_per_allowance(count: int = 2000) -> tuple[float, int]:
    """Bytes the server keeps per active allowance (store + cache), over ``count`` allowances made
    under tracemalloc; pebbles a client keeps for 10^6 links."""
    payee = AlwaysPaid()
    server = AllowanceServer(MemoryAllowanceStore(), payee, payee.node_id, ServerPolicy(Price(1)))
    prepared = []
    for _ in range(count):
        tip = os.urandom(32)
        prepared.append((tip, AllowanceRequest(10, (anchor(tip, 10),))))
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for tip, request in prepared:
        terms = await server.create(request)
        await server.spend(Token(terms.allowance_id, 0, 1, ChainWalker.from_tip(tip, 10).link(1)))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    walker = ChainWalker.from_tip(os.urandom(32), 10**6)
    most = 0
    for i in range(1, 20_001):
        walker.link(i)
        most = max(most, len(walker.pebbles))
    return used / count, most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--windows", type=int, default=3, help="alternating unpaid/paid windows")
    parser.add_argument("--load", choices=("python", "wrk", "both"), default="python",
                        help="load generator (wrk: Debian's wrk with paid_api.lua)")
    parser.add_argument("--l402-calls", type=int, default=100)
    parser.add_argument("--memory-allowances", type=int, default=2000,
                        help="allowances made (traced) for the memory-per-allowance figure; the smoke "
                             "tests make 200: 2000 under tracemalloc take seconds")
    parser.add_argument("--stores", default="memory,sqlite,redis,postgres")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the first server worker (CPU time); stats to FILE.<store>")
    parser.add_argument("--workers", type=int, default=1,
                        help="server processes sharing one listening socket (the memory store is "
                             "skipped above 1: each process would have its own)")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers: must be at least 1")
    if args.memory_allowances < 1:
        parser.error("--memory-allowances: must be at least 1")
    if args.load != "python" and shutil.which("wrk") is None:
        parser.error("--load wrk: the wrk program is not installed (Debian: apt-get install wrk)")
    wanted = args.stores.split(",")
    if args.workers > 1 and "memory" in wanted:
        print("--workers above 1: the memory store is skipped (it cannot be shared between processes)",
              file=sys.stderr)
        wanted.remove("memory")
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {"benchmark": "paid_api", "connections": args.connections,
                               "workers": args.workers, "loadavg": os.getloadavg()}
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        urls = {}
        if "memory" in wanted:
            urls["memory"] = "memory"
        if "sqlite" in wanted:
            urls["sqlite"] = f"sqlite:{tmp}/allowances.sqlite"
        if "redis" in wanted:
            urls["redis"] = stack.enter_context(redis_server()).url
        if "postgres" in wanted:
            pg = stack.enter_context(postgres_server(durable=True))
            urls["postgres"] = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/postgres"
        for name, url in urls.items():
            result = asyncio.run(measure_store(url, Path(tmp) / f"chain-{name}.sqlite", args))
            for generator in ("python", "wrk"):
                if generator not in result:
                    continue
                r = result[generator]
                rows.append([f"{name} ({generator}): unpaid calls/s", r["unpaid"], "1.00", "median of windows"])
                rows.append([f"{name} ({generator}): Lightspeed-paid calls/s", r["paid"],
                             f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f})",
                             "ratio per window: median (min-max)"])
                cpu = r["cpu_us"]
                for side in ("unpaid", "paid"):
                    rows.append([f"{name} ({generator}): CPU µs per {side} call", cpu[f"{side}_server"], "",
                                 f"server workers; store {cpu[f'{side}_store']:.0f}, "
                                 f"load generator {cpu[f'{side}_load']:.0f} (medians of windows)"])
            rows.append([f"{name}: one Lightning payment per call (L402 style)", result["l402"],
                         f"{result['l402'] / result['unpaid']:.3f}", f"median {result['l402_ms']:.1f} ms/call"])
            summary[name] = _rounded(result)
    costs = asyncio.run(verification_costs())
    for name, us in costs.items():
        rows.append([f"server cost per call: {name}", us, "", "µs, median, in process"])
    per_allowance, pebbles = asyncio.run(memory_per_allowance(args.memory_allowances))
    rows.append(["server memory per active allowance", per_allowance, "", "bytes (store + cache, 1 lane)"])
    rows.append(["client pebbles for a 10^6-link lane", float(pebbles), "", "links kept (O(log N))"])
    summary["verify_us"] = {k: round(v, 2) for k, v in costs.items()}
    summary["bytes_per_allowance"] = round(per_allowance)
    summary["client_pebbles_1e6"] = pebbles
    report(f"Paid API: calls per second on {args.workers} uvicorn worker(s) (same app, same server); "
           f"load average at start {summary['loadavg'][0]:.2f}",
           ["measure", "value", "ratio to unpaid", "note"], rows, summary)


if __name__ == "__main__":
    main()
