"""A synthetic graph shaped like the public Lightning network, deterministic from a seed.

Real snapshots are large and change daily; tests and benchmarks need a graph of
mainnet size (about 17,000 nodes, 50,000 channels) that anyone can rebuild
bit for bit. The shape follows what snapshots show:

* degrees are heavy-tailed: nodes join one by one and open a Pareto-distributed
  number of channels to peers picked in proportion to their degree (preferential
  attachment), then the remaining channels join hubs to hubs;
* capacities are log-normal around a few million sat;
* policies: base fee mostly 1000 msat or 0, proportional fee 1-2000 ppm (most
  below a few hundred), CLTV delta 40, 80 or 144, htlc_minimum 1 msat or 1 sat,
  htlc_maximum near the capacity; a few directions disabled or never announced.

The output is LND ``describegraph`` JSON (numbers as strings, as lncli prints
them), so ``lightspeed route --graph`` and other tools read it unchanged.
``python -m lightspeed.routing.generate --out graph.json`` writes one.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

from lightspeed.errors import UsageError

MAINNET_NODES = 17_000
MAINNET_CHANNELS = 50_000
_MAX_INITIAL_DEGREE = 300


def _node_ids(rng: random.Random, count: int) -> list[str]:
    """Distinct 33-byte compressed-key-shaped ids (not curve points: routing never verifies them)."""
    ids: set[str] = set()
    out: list[str] = []
    while len(out) < count:
        node = ("02" if rng.getrandbits(1) else "03") + f"{rng.getrandbits(256):064x}"
        if node not in ids:
            ids.add(node)
            out.append(node)
    return out


def _policy(rng: random.Random, capacity_sat: int) -> dict[str, Any] | None:
    if rng.random() < 0.02:
        return None  # the node never announced this direction
    roll = rng.random()
    base = 1000 if roll < 0.55 else 0 if roll < 0.85 else rng.randint(1, 1000)
    rate = min(2000, max(1, int(rng.lognormvariate(math.log(100), 1.2))))
    delta = rng.choices((40, 80, 144), weights=(50, 20, 30))[0]
    max_fraction = 0.99 if rng.random() < 0.7 else rng.uniform(0.1, 1.0)
    return {
        "time_lock_delta": delta,
        "min_htlc": "1000" if rng.random() < 0.8 else "1",
        "fee_base_msat": str(base),
        "fee_rate_milli_msat": str(rate),
        "disabled": rng.random() < 0.05,
        "max_htlc_msat": str(int(capacity_sat * 1000 * max_fraction)),
        "last_update": 1_700_000_000 + rng.randint(0, 10_000_000),
    }


def generate_describegraph(seed: int = 0, nodes: int = MAINNET_NODES,
                           channels: int = MAINNET_CHANNELS) -> dict[str, Any]:
    """A describegraph-shaped dict with ``nodes`` nodes and exactly ``channels`` channels."""
    if nodes < 2:
        raise UsageError("a graph needs at least 2 nodes")
    if channels < nodes - 1:
        raise UsageError(f"{channels} channels cannot connect {nodes} nodes")
    rng = random.Random(seed)
    ids = _node_ids(rng, nodes)
    # ``ends`` lists every channel endpoint: picking from it picks a node by its degree.
    ends: list[int] = [0]
    pairs: list[tuple[int, int]] = []
    budget = channels
    for newcomer in range(1, nodes):
        wanted = min(int(rng.paretovariate(1.4)), _MAX_INITIAL_DEGREE, newcomer)
        # keep enough channels for every later newcomer to open at least one
        wanted = max(1, min(wanted, budget - (nodes - 1 - newcomer)))
        peers: set[int] = set()
        while len(peers) < wanted:
            peers.add(ends[rng.randrange(len(ends))] if rng.random() < 0.9 else rng.randrange(newcomer))
        for peer in sorted(peers):
            pairs.append((newcomer, peer))
            ends += (newcomer, peer)
        budget -= wanted
    while budget > 0:  # hubs open channels between themselves (parallel channels allowed)
        a, b = ends[rng.randrange(len(ends))], ends[rng.randrange(len(ends))]
        if a != b:
            pairs.append((a, b))
            ends += (a, b)
            budget -= 1
    edges = []
    height = 500_000
    for a, b in pairs:
        height += rng.randint(0, 6)
        capacity = min(1_000_000_000, max(20_000, int(rng.lognormvariate(math.log(2_500_000), 1.3))))
        capacity -= capacity % 1000
        node1, node2 = sorted((ids[a], ids[b]))  # BOLT 7: node_1 is the lesser id
        scid = (height << 40) | (rng.randint(0, 3000) << 16) | rng.randint(0, 3)
        edges.append({
            "channel_id": str(scid),
            "chan_point": f"{rng.getrandbits(256):064x}:{scid & 0xFFFF}",
            "last_update": 1_700_000_000 + rng.randint(0, 10_000_000),
            "node1_pub": node1,
            "node2_pub": node2,
            "capacity": str(capacity),
            "node1_policy": _policy(rng, capacity),
            "node2_policy": _policy(rng, capacity),
        })
    return {
        "nodes": [{"pub_key": node, "alias": f"node{i}", "addresses": [], "features": {}}
                  for i, node in enumerate(ids)],
        "edges": edges,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=MAINNET_NODES)
    parser.add_argument("--channels", type=int, default=MAINNET_CHANNELS)
    parser.add_argument("--out", type=Path, required=True, help="describegraph JSON file to write")
    args = parser.parse_args(argv)
    try:
        graph = generate_describegraph(args.seed, args.nodes, args.channels)
    except UsageError as exc:
        parser.error(str(exc))
    args.out.write_text(json.dumps(graph))
    print(f"wrote {len(graph['nodes'])} nodes, {len(graph['edges'])} channels to {args.out}")


if __name__ == "__main__":
    main()
