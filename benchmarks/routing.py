"""Path-finding latency on a mainnet-size graph, beside networkx and published figures.

The graph is the generated one (``lightspeed.routing.generate``: 17,000 nodes,
50,000 channels, heavy-tailed degrees, mainnet-like policies), the same in every
run. Over many random payer/payee pairs we time one route each:

* ours, fees only (the ``lightspeed route`` contract): A* from the payee bounded by
  a short forward search from the payer, and the same without the bound (plain
  Dijkstra, ``bound_nodes=0``) to show what the bound buys;
* ours, fees + CLTV risk + failure-probability penalty, with a scorer that has
  learned from a thousand earlier attempts (A*, and plain Dijkstra);
* networkx Dijkstra on the same graph in the same run (weight: each sender's fee
  for the amount; the payer's own channel free), both its one-sided
  ``dijkstra_path`` and ``bidirectional_dijkstra``;
* the published figures: LDK about 40 ms per route on mainnet (Rust), LND about
  100 ms (Go), as quoted in issue 6. They are not from this machine, so they stand in a
  labelled column of their own and no ratio to them is computed.

``--scale`` multiplies the graph (2: 34,000 nodes, 100,000 channels, twice today's
network). Before routing, the graph is loaded from its describegraph JSON file and
from the compact snapshot (``lightspeed.routing.snapshot``, what ``lightspeed route
--graph-cache`` keeps), alternating over ``--load-windows`` windows: wall and CPU
time of each, then, in a separate pass (tracing slows allocation), the peak and
retained memory each load allocates (tracemalloc).

``python -m benchmarks routing [--scale 1|2|3|0.05] [--pairs N] [--amount-msat N] [--seed N]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import networkx as nx
from tests.support.graphgen import fee_digraph

from benchmarks._util import print_table, report
from lightspeed.cli.graph_cache import load_describegraph_cached
from lightspeed.routing import (
    ChannelGraph,
    NoRouteError,
    ProbabilisticScorer,
    find_route,
    graph_from_describegraph,
)
from lightspeed.routing.generate import MAINNET_CHANNELS, MAINNET_NODES, generate_describegraph

PUBLISHED_MS = {"LDK (Rust, mainnet, published)": 40.0, "LND (Go, mainnet, published)": 100.0}


def _fee_digraph(graph: ChannelGraph, amount_msat: int) -> nx.DiGraph:
    """The tests' fee-weighted digraph, with every node present (so a missing path is NoPath)."""
    digraph = fee_digraph(graph, amount_msat)
    digraph.add_nodes_from(graph.nodes)
    return digraph


def _experienced_scorer(graph: ChannelGraph, rng: random.Random, results: int) -> ProbabilisticScorer:
    """A scorer that saw ``results`` attempts over random channels in the last hours."""
    scorer = ProbabilisticScorer()
    channels = graph.compiled().channels
    now = 10 * 3600.0
    for _ in range(results):
        channel = rng.choice(channels)
        amount = rng.randint(1, (channel.capacity_sat or 1_000_000) * 1000)
        at = rng.uniform(0, now)
        if rng.random() < 0.5:
            scorer.channel_failed(channel, amount, at)
        else:
            scorer.channel_forwarded(channel, amount, at)
    for node in rng.sample(sorted(graph.nodes), results // 50):
        scorer.node_failed(node, rng.uniform(0, now))
    return scorer


def _time_all(queries: list[tuple[bytes, bytes]], routers: dict[str, Callable[[bytes, bytes], object]],
              cpu_ms: dict[str, list[float]]) -> dict[str, tuple[list[float], int]]:
    """Each pair through every router in turn, so a busy machine slows them all alike.

    Wall times are returned; each route's CPU time goes to ``cpu_ms`` (a shared machine
    stretches the first, hardly the second)."""
    results: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in routers}
    for source, target in queries:
        for name, route in routers.items():
            samples, found = results[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            try:
                route(source, target)
                found += 1
            except (NoRouteError, nx.NetworkXNoPath):
                pass
            samples.append((time.perf_counter() - start) * 1000)
            cpu_ms[name].append((time.process_time() - start_cpu) * 1000)
            results[name] = (samples, found)
    return results


def _load_json(path: Path) -> ChannelGraph:
    return graph_from_describegraph(json.loads(path.read_bytes()))


def _load_cached(source: Path, cache: Path) -> ChannelGraph:
    loaded = load_describegraph_cached(source, cache)
    assert loaded.loaded_from == "cache", loaded.note
    return loaded.graph


def _time_loads(loaders: dict[str, Callable[[], ChannelGraph]], windows: int) -> dict[str, dict[str, Any]]:
    """Each loader once per window, alternating; then one traced run each for memory (none: {})."""
    if windows == 0:
        return {}
    wall: dict[str, list[float]] = {name: [] for name in loaders}
    cpu: dict[str, list[float]] = {name: [] for name in loaders}
    for _ in range(windows):
        for name, load in loaders.items():
            gc.collect()
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            graph = load()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
            del graph
    out: dict[str, dict[str, Any]] = {}
    for name, load in loaders.items():
        gc.collect()
        tracemalloc.start()
        graph = load()
        retained, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del graph
        out[name] = {"wall_s": round(statistics.median(wall[name]), 2),
                     "wall_s_range": [round(min(wall[name]), 2), round(max(wall[name]), 2)],
                     "cpu_s": round(statistics.median(cpu[name]), 2),
                     "peak_mb": round(peak / 1e6), "retained_mb": round(retained / 1e6)}
    return out


def _p95(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1] if len(samples) > 1 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description="path-finding latency on a mainnet-size graph")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--amount-msat", type=int, default=100_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1,
                        help="graph size in multiples of today's mainnet (17,000 nodes, 50,000 channels): "
                             "1, 2 or 3; from 0.01 to below 1 only for a quick run of the script itself "
                             "(its smoke test runs 0.05: generating and loading the full graph was most of it)")
    parser.add_argument("--load-windows", type=int, default=3,
                        help="alternating windows timing the JSON and snapshot loads (0: skip)")
    args = parser.parse_args()
    if args.load_windows < 0:
        parser.error("--load-windows must be >= 0")
    if not (0.01 <= args.scale < 1 or args.scale in (1, 2, 3)):
        parser.error(f"--scale must be 1, 2 or 3 (or from 0.01 to below 1 for a quick run), got {args.scale:g}")
    scale: float = int(args.scale) if args.scale.is_integer() else args.scale
    amount = args.amount_msat
    load_start = [round(x, 2) for x in os.getloadavg()]

    start = time.perf_counter()
    data = generate_describegraph(args.seed, round(MAINNET_NODES * scale), round(MAINNET_CHANNELS * scale))
    generate_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        source, cache = Path(tmp) / "graph.json", Path(tmp) / "graph.lsgraph"
        source.write_text(json.dumps(data))
        del data
        start = time.perf_counter()
        graph = load_describegraph_cached(source, cache).graph  # no cache yet: JSON, then the snapshot written
        load_s = time.perf_counter() - start
        loads = _time_loads({"describegraph JSON": lambda: _load_json(source),
                             "snapshot": lambda: _load_cached(source, cache)}, args.load_windows)
        json_mb, snapshot_mb = source.stat().st_size / 1e6, cache.stat().st_size / 1e6
    index = graph.compiled()  # built by the loader (counted in load_s)
    start = time.perf_counter()
    digraph = _fee_digraph(graph, amount)
    nx_build_s = time.perf_counter() - start

    rng = random.Random(args.seed)
    queries = [tuple(rng.sample(index.ids, 2)) for _ in range(args.pairs)]
    view = _experienced_scorer(graph, rng, 1000).view(10 * 3600.0)

    def nx_one_sided(source: bytes, target: bytes) -> object:
        return nx.dijkstra_path(digraph, source, target, weight=lambda u, _v, d: 0 if u == source else d["fee"])

    def nx_bidirectional(source: bytes, target: bytes) -> object:
        return nx.bidirectional_dijkstra(digraph, source, target,
                                         weight=lambda u, _v, d: 0 if u == source else d["fee"])

    exact, static = "exact fees", "static fee weights"
    routers: dict[str, tuple[Callable[[bytes, bytes], object], str]] = {
        "ours, fees only": (lambda s, t: find_route(graph, s, t, amount), exact),
        "ours, fees only, plain Dijkstra": (lambda s, t: find_route(graph, s, t, amount, bound_nodes=0), exact),
        "ours, fees + risk + probability": (lambda s, t: find_route(graph, s, t, amount, score=view),
                                            exact + " + scorer"),
        "ours, fees + risk + probability, plain Dijkstra": (
            lambda s, t: find_route(graph, s, t, amount, score=view, bound_nodes=0), exact + " + scorer"),
        "networkx dijkstra_path": (nx_one_sided, static),
        "networkx bidirectional_dijkstra": (nx_bidirectional, static),
    }
    cpu: dict[str, list[float]] = {name: [] for name in routers}
    timed = _time_all(queries, {name: route for name, (route, _) in routers.items()}, cpu)
    runs = {name: (timed[name], solves) for name, (_, solves) in routers.items()}
    ours_median = statistics.median(runs["ours, fees only"][0][0])
    rows: list[list[Any]] = []
    summary: dict[str, Any] = {
        "benchmark": "routing", "nodes": len(graph.nodes), "channels": graph.channel_count,
        "pairs": len(queries), "amount_msat": amount, "generate_s": round(generate_s, 2),
        "load_s": round(load_s, 2), "networkx_build_s": round(nx_build_s, 2), "scale": scale,
        "loads": loads, "json_mb": round(json_mb, 1), "snapshot_mb": round(snapshot_mb, 1),
        "load_average": {"start": load_start, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    for name, ((samples, found), solves) in runs.items():
        median, p95 = statistics.median(samples), _p95(samples)
        rows.append([name, round(median, 2), round(statistics.median(cpu[name]), 2), round(p95, 2),
                     f"{found}/{len(queries)}",
                     f"{median / ours_median:.2f}x", solves])
        slug = name.replace(",", "").replace("+ ", "").replace(" ", "_").lower()
        summary[f"{slug}_median_ms"] = round(median, 2)
        summary[f"{slug}_p95_ms"] = round(p95, 2)
        summary[f"{slug}_cpu_median_ms"] = round(statistics.median(cpu[name]), 2)
    # Published figures come from other hardware and graphs: a labelled column of their own, no ratio.
    published = "; ".join(f"{name}: {ms:g} ms" for name, ms in PUBLISHED_MS.items())
    rows = [[*row, published if i == 0 else ""] for i, row in enumerate(rows)]
    summary["published_other_hardware_median_ms"] = PUBLISHED_MS
    if loads:
        json_load, snap_load = loads["describegraph JSON"], loads["snapshot"]
        print_table(
            f"Graph load, {args.load_windows} alternating windows (medians; memory from one traced run each)",
            ["form", "file MB", "wall s", "wall min-max", "CPU s", "peak MB", "retained MB"],
            [[name, round(mb, 1), f"{load['wall_s']:.2f}", "-".join(f"{x:.2f}" for x in load["wall_s_range"]),
              f"{load['cpu_s']:.2f}", load["peak_mb"], load["retained_mb"]]
             for name, mb, load in (("describegraph JSON", json_mb, json_load), ("snapshot", snapshot_mb, snap_load))])
        print(f"snapshot load: {json_load['cpu_s'] / max(snap_load['cpu_s'], 1e-9):.1f}x less CPU time than the JSON; "
              f"load average {load_start} at start")
    report(
        f"Path finding on a generated mainnet-size graph ({len(graph.nodes):,} nodes, "
        f"{graph.channel_count:,} channels), {len(queries)} random pairs, {amount:,} msat; "
        f"graph generated in {generate_s:.1f} s, loaded and compiled in {load_s:.1f} s (x{scale:g} mainnet)",
        ["router", "median ms", "CPU median ms", "p95 ms", "routes found", "median / ours", "solves",
         "published, other hardware (not this run)"], rows, summary)


if __name__ == "__main__":
    main()
