"""The compact graph snapshot: same routes after a reload, stale and damaged caches rebuilt, never used."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from lightspeed.cli.graph_cache import file_digest, load_describegraph_cached
from lightspeed.cli.main import cli
from lightspeed.errors import DecodeError, UsageError
from lightspeed.routing import (
    ChannelGraph,
    NoRouteError,
    Policy,
    ProbabilisticScorer,
    Route,
    find_route,
    graph_from_describegraph,
)
from lightspeed.routing.generate import generate_describegraph
from lightspeed.routing.snapshot import StaleSnapshot, decode_snapshot, encode_snapshot

DIGEST = bytes(range(32))
AMOUNT = 50_000_000


@pytest.fixture(scope="module")
def graph_json() -> dict[str, Any]:
    return generate_describegraph(seed=7, nodes=1500, channels=4500)


@pytest.fixture(scope="module")
def graph(graph_json: dict[str, Any]) -> ChannelGraph:
    return graph_from_describegraph(graph_json)


def _route(graph: ChannelGraph, source: bytes, target: bytes, **kw: Any) -> Route | str:
    try:
        return find_route(graph, source, target, AMOUNT, **kw)
    except NoRouteError as exc:
        return f"no route: {exc}"


def _same_routes(a: ChannelGraph, b: ChannelGraph, pairs: int = 40) -> None:
    rng = random.Random(5)
    ids = sorted(a.nodes)
    scorer = ProbabilisticScorer()
    for channel in rng.sample(a.compiled().channels, 200):  # a scorer that learned something
        scorer.channel_failed(channel, AMOUNT // 2, 100.0)
    view = scorer.view(200.0)
    found = 0
    for _ in range(pairs):
        source, target = rng.sample(ids, 2)
        for kw in ({}, {"score": view}, {"bound_nodes": 0}):
            left, right = _route(a, source, target, **kw), _route(b, source, target, **kw)
            assert left == right
            if isinstance(left, Route):
                assert isinstance(right, Route) and left.channels == right.channels
                found += 1
    assert found > pairs  # most pairs have a route: the comparison is not vacuous


def test_round_trip_routes_identically(graph: ChannelGraph) -> None:
    reloaded = decode_snapshot(encode_snapshot(graph, DIGEST), DIGEST)
    assert reloaded.nodes == graph.nodes and reloaded.channel_count == graph.channel_count
    assert list(reloaded.incoming) == list(graph.incoming) and reloaded.incoming == graph.incoming
    index, again = graph.compiled(), reloaded.compiled()
    assert (again.ids, again.incoming, again.outgoing, again.channels) == (
        index.ids, index.incoming, index.outgoing, index.channels)
    assert again.max_sendable_msat == index.max_sendable_msat
    assert again.max_cltv_expiry_delta == index.max_cltv_expiry_delta
    _same_routes(graph, reloaded)


def test_unknown_capacity_no_maximum_disabled_and_isolated_nodes_survive() -> None:
    graph = ChannelGraph()
    a, b, c, lonely = (bytes([2]) + bytes([i]) * 32 for i in (1, 2, 3, 4))
    graph.add_channel(1 << 40, a, b, None, Policy(1, 2, 3), Policy(0, 0, 40, 5, 7_000, disabled=True))
    graph.add_channel(2 << 40, b, c, 9_000, Policy(10, 20, 30, 1, None), None)
    graph.add_node(lonely)
    reloaded = decode_snapshot(encode_snapshot(graph, DIGEST))
    assert reloaded.incoming == graph.incoming and reloaded.nodes == graph.nodes
    assert reloaded.compiled().incoming == graph.compiled().incoming
    assert find_route(reloaded, a, c, 1000) == find_route(graph, a, c, 1000)


def test_numbers_a_snapshot_cannot_hold_are_refused_not_truncated() -> None:
    graph = ChannelGraph()
    a, b = bytes([2]) + bytes(32), bytes([3]) + bytes(32)
    graph.add_channel(1, a, b, 1 << 63, Policy(0, 0, 40), None)  # capacity past a signed 64-bit field
    with pytest.raises(UsageError, match="cannot hold"):
        encode_snapshot(graph, DIGEST)


def test_stale_snapshot_is_detected(graph: ChannelGraph) -> None:
    data = encode_snapshot(graph, DIGEST)
    with pytest.raises(StaleSnapshot):
        decode_snapshot(data, bytes(32))


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty", "garbage"])
def test_damaged_snapshot_is_a_clear_error(graph: ChannelGraph, damage: str) -> None:
    data = bytearray(encode_snapshot(graph, DIGEST))
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "truncate":
        del data[-100:]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"{not a snapshot}" * 10)
    with pytest.raises(DecodeError) as excinfo:
        decode_snapshot(bytes(data), DIGEST)
    assert excinfo.value.field == "graph snapshot"
    assert "checksum" in excinfo.value.reason or "too short" in excinfo.value.reason


def test_cached_load_writes_then_reuses_then_rebuilds_when_the_json_changes(
        tmp_path: Path, graph_json: dict[str, Any], graph: ChannelGraph) -> None:
    source, cache = tmp_path / "graph.json", tmp_path / "graph.lsgraph"
    source.write_text(json.dumps(graph_json))
    first = load_describegraph_cached(source, cache)
    assert (first.loaded_from, first.note) == ("source", "")
    assert cache.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["graph.json", "graph.lsgraph"]
    second = load_describegraph_cached(source, cache)
    assert second.loaded_from == "cache"
    _same_routes(graph, second.graph, pairs=15)

    # New gossip: one channel's fees change. The old snapshot must not answer for the new JSON.
    changed = json.loads(json.dumps(graph_json))
    edge = changed["edges"][0]
    for side in ("node1_policy", "node2_policy"):
        if edge[side] is not None:
            edge[side]["fee_base_msat"] = "999999"
    source.write_text(json.dumps(changed))
    third = load_describegraph_cached(source, cache)
    assert third.loaded_from == "source" and "another version" in third.note
    expected = graph_from_describegraph(changed)
    assert third.graph.incoming == expected.incoming and third.graph.incoming != graph.incoming
    assert load_describegraph_cached(source, cache).loaded_from == "cache"  # rewritten for the new JSON
    assert decode_snapshot(cache.read_bytes(), file_digest(source)).incoming == expected.incoming


def test_damaged_cache_falls_back_to_the_json_and_is_rewritten(
        tmp_path: Path, graph_json: dict[str, Any], graph: ChannelGraph) -> None:
    source, cache = tmp_path / "graph.json", tmp_path / "graph.lsgraph"
    source.write_text(json.dumps(graph_json))
    load_describegraph_cached(source, cache)
    data = bytearray(cache.read_bytes())
    data[200] ^= 1  # a bit flipped inside the node table
    cache.write_bytes(bytes(data))
    loaded = load_describegraph_cached(source, cache)
    assert loaded.loaded_from == "source" and "checksum mismatch" in loaded.note
    _same_routes(graph, loaded.graph, pairs=15)
    assert load_describegraph_cached(source, cache).loaded_from == "cache"


def test_unwritable_cache_only_costs_the_rebuild(tmp_path: Path, graph_json: dict[str, Any]) -> None:
    source = tmp_path / "graph.json"
    source.write_text(json.dumps(graph_json))
    loaded = load_describegraph_cached(source, tmp_path / "missing-dir" / "graph.lsgraph")
    assert loaded.loaded_from == "source" and "cannot write" in loaded.note
    assert loaded.graph.channel_count == len(graph_json["edges"])


GRAPH = {
    "nodes": [{"pub_key": "02" + f"{i:064x}"} for i in (1, 2, 3)],
    "edges": [
        {"channel_id": str((700_000 << 40) | i), "node1_pub": "02" + f"{a:064x}", "node2_pub": "02" + f"{b:064x}",
         "capacity": "1000000",
         "node1_policy": {"fee_base_msat": "1000", "fee_rate_milli_msat": "10", "time_lock_delta": 40},
         "node2_policy": {"fee_base_msat": "1000", "fee_rate_milli_msat": "10", "time_lock_delta": 40}}
        for i, (a, b) in enumerate([(1, 2), (2, 3)])
    ],
}


def test_cli_graph_cache_same_route_and_damage_is_a_warning(tmp_path: Path) -> None:
    source, cache = tmp_path / "graph.json", tmp_path / "graph.lsgraph"
    source.write_text(json.dumps(GRAPH))
    args = ["route", "--graph", str(source), "--source", "02" + f"{1:064x}", "--target", "02" + f"{3:064x}",
            "--amount-msat", "100000"]
    runner = CliRunner()

    def hops(result: Any) -> Any:
        assert result.exit_code == 0, result.output
        return {k: v for k, v in json.loads(result.stdout).items() if k != "elapsed_ms"}

    plain = hops(runner.invoke(cli, args))
    assert hops(runner.invoke(cli, [*args, "--graph-cache", str(cache)])) == plain  # writes the cache
    assert cache.exists()
    cached = runner.invoke(cli, [*args, "--graph-cache", str(cache)])
    assert hops(cached) == plain and "warning" not in cached.stderr
    cache.write_bytes(b"\0" * 10)
    damaged = runner.invoke(cli, [*args, "--graph-cache", str(cache)])
    assert hops(damaged) == plain
    assert "warning: --graph-cache" in damaged.stderr and "rebuilt" in damaged.stderr
    source.write_text("{not json")
    bad = runner.invoke(cli, [*args, "--graph-cache", str(cache)])
    assert bad.exit_code == 1 and "error: --graph is not valid JSON" in bad.stderr
    assert "Traceback" not in bad.output
    source.write_bytes(b"\x80\x81 not text")
    binary = runner.invoke(cli, [*args, "--graph-cache", str(cache)])
    assert binary.exit_code == 1 and "error: --graph is not JSON text" in binary.stderr


def test_cli_refuses_a_cache_that_is_the_json_itself(tmp_path: Path) -> None:
    source = tmp_path / "graph.json"
    source.write_text(json.dumps(GRAPH))
    result = CliRunner().invoke(cli, ["route", "--graph", str(source), "--graph-cache", str(tmp_path / "." / "graph.json"),
                                      "--source", "02" + f"{1:064x}", "--target", "02" + f"{3:064x}",
                                      "--amount-msat", "100000"])
    assert result.exit_code == 1 and "error: --graph-cache: " in result.stderr and "overwrite" in result.stderr
    assert json.loads(source.read_text()) == GRAPH  # the user's file is left as it was
