"""Path finding over describegraph snapshots: fees on the right amounts, policies honoured, optimal."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.cli.main import cli
from lightspeed.errors import DecodeError
from lightspeed.routing import (
    ChannelGraph,
    NoRouteError,
    Policy,
    find_route,
    graph_from_describegraph,
)


def node(i: int) -> str:
    return "02" + f"{i:064x}"


def edge(scid: int, a: int, b: int, pol_a: dict[str, Any] | None, pol_b: dict[str, Any] | None,
         capacity: int = 1_000_000) -> dict[str, Any]:
    return {"channel_id": str(scid), "node1_pub": node(a), "node2_pub": node(b), "capacity": str(capacity),
            "node1_policy": pol_a, "node2_policy": pol_b}


def pol(base: int, rate: int, delta: int = 40, **extra: Any) -> dict[str, Any]:
    return {"fee_base_msat": str(base), "fee_rate_milli_msat": str(rate), "time_lock_delta": delta,
            "min_htlc": "1000", "max_htlc_msat": "990000000", "disabled": False, **extra}


SCID = (700_000 << 40) | (12 << 16) | 1  # 700000x12x1

# 1 -> 2 -> 4 costs 2's fee; 1 -> 3 -> 4 is cheaper in fees but 3's channel to 4 is disabled
# in that direction; 1 -> 5 -> 6 -> 4 is the cheapest usable path.
GRAPH = {
    "nodes": [{"pub_key": node(i)} for i in range(1, 7)],
    "edges": [
        edge(SCID, 1, 2, pol(0, 0), pol(0, 0)),
        edge(SCID + 1, 2, 4, pol(1000, 1000, 30), pol(1000, 1000)),
        edge(SCID + 2, 1, 3, pol(0, 0), pol(0, 0)),
        edge(SCID + 3, 3, 4, pol(0, 1, disabled=True), pol(0, 1)),
        edge(SCID + 4, 1, 5, pol(5000, 5000), pol(0, 0)),  # the payer's own fee is never charged
        edge(SCID + 5, 5, 6, pol(100, 10, 20), pol(0, 0)),
        edge(SCID + 6, 6, 4, pol(200, 20, 50), None),
    ],
}


def test_cheapest_route_charges_each_forwarder_on_what_it_forwards() -> None:
    graph = graph_from_describegraph(GRAPH)
    route = find_route(graph, bytes.fromhex(node(1)), bytes.fromhex(node(4)), 1_000_000)
    assert [h.pubkey.hex() for h in route.hops] == [node(5), node(6), node(4)]
    fee6 = 200 + 1_000_000 * 20 // 1_000_000  # node 6 forwards 1,000,000 msat
    fee5 = 100 + (1_000_000 + fee6) * 10 // 1_000_000  # node 5 forwards that plus 6's fee
    assert [h.amount_msat for h in route.hops] == [1_000_000 + fee6 + fee5, 1_000_000 + fee6, 1_000_000]
    assert [h.fee_msat for h in route.hops] == [fee5, fee6, 0]
    assert route.total_fee_msat == fee5 + fee6
    assert route.total_cltv_expiry_delta == 20 + 50


def test_limits_are_honoured() -> None:
    graph = graph_from_describegraph(GRAPH)
    src, dst = bytes.fromhex(node(1)), bytes.fromhex(node(4))
    # Above node 6's... no: above the 990,000,000 msat max_htlc everywhere -> no route.
    with pytest.raises(NoRouteError):
        find_route(graph, src, dst, 991_000_000)
    # Below min_htlc 1000 msat -> no route.
    with pytest.raises(NoRouteError):
        find_route(graph, src, dst, 999)
    # The reverse direction 4 -> 6 has no policy: 4 cannot pay 1 through 6; it must use 2 (3 is disabled towards 4 only).
    back = find_route(graph, dst, src, 10_000)
    assert back.hops[0].pubkey.hex() in (node(2), node(3))


def test_capacity_caps_the_amount() -> None:
    graph = ChannelGraph()
    a, b = bytes.fromhex(node(1)), bytes.fromhex(node(2))
    graph.add_channel(1, a, b, 100, Policy(0, 0, 40), Policy(0, 0, 40))
    assert find_route(graph, a, b, 100_000).total_amount_msat == 100_000
    with pytest.raises(NoRouteError):
        find_route(graph, a, b, 100_001)


def test_describegraph_errors_name_the_field() -> None:
    bad = {"nodes": [], "edges": [edge(1, 1, 2, pol(0, 0), None)]}
    bad["edges"][0]["node2_pub"] = "zz"
    with pytest.raises(DecodeError) as excinfo:
        graph_from_describegraph(bad)
    assert excinfo.value.field == "edges[0].node2_pub"


def _brute_force_fee(graph_json: dict[str, Any], src: int, dst: int, amount: int, nodes: int) -> int | None:
    graph = graph_from_describegraph(graph_json)
    best = None
    by_pair: dict[tuple[bytes, bytes], list[Any]] = {}
    for target, channels in graph.incoming.items():
        for ch in channels:
            by_pair.setdefault((ch.source, target), []).append(ch)
    ids = [bytes.fromhex(node(i)) for i in range(nodes)]
    for length in range(0, nodes - 1):
        for middle in itertools.permutations([i for i in range(nodes) if i not in (src, dst)], length):
            path = [ids[src], *(ids[m] for m in middle), ids[dst]]
            # cheapest channel choice per step, walking back from the payee
            carried, fee, ok = amount, 0, True
            for i in range(len(path) - 1, 0, -1):
                options = [c for c in by_pair.get((path[i - 1], path[i]), []) if c.carries(carried)]
                if not options:
                    ok = False
                    break
                if i - 1 == 0:
                    break
                hop_fee = min(c.policy.fee_msat(carried) for c in options)
                fee, carried = fee + hop_fee, carried + hop_fee
            if ok and (best is None or fee < best):
                best = fee
    return best


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_route_fee_is_optimal_on_small_random_graphs(data: st.DataObject) -> None:
    n = data.draw(st.integers(3, 6))
    edges = []
    for scid in range(data.draw(st.integers(2, 12))):
        a, b = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        policy = st.one_of(st.none(), st.builds(lambda base, rate, maxh: pol(base, rate, max_htlc_msat=str(maxh)),
                                                st.integers(0, 5000), st.integers(0, 5000), st.integers(1000, 10**7)))
        edges.append(edge(scid + 1, a, b, data.draw(policy), data.draw(policy)))
    graph_json = {"nodes": [{"pub_key": node(i)} for i in range(n)], "edges": edges}
    amount = data.draw(st.integers(1000, 10**6))
    expected = _brute_force_fee(graph_json, 0, n - 1, amount, n)
    graph = graph_from_describegraph(graph_json)
    try:
        route = find_route(graph, bytes.fromhex(node(0)), bytes.fromhex(node(n - 1)), amount)
    except NoRouteError:
        assert expected is None
        return
    assert route.total_fee_msat == expected
    # The route is self-consistent: amounts shrink by exactly each forwarder's fee.
    for hop, nxt in itertools.pairwise(route.hops):
        assert hop.amount_msat - nxt.amount_msat == hop.fee_msat
    assert route.hops[-1].amount_msat == amount


def test_cli_route_contract(tmp_path: Path) -> None:
    graph_file = tmp_path / "graph.json"
    graph_file.write_text(json.dumps(GRAPH))
    runner = CliRunner()
    result = runner.invoke(cli, ["route", "--graph", str(graph_file), "--source", node(1), "--target", node(4),
                                 "--amount-msat", "1000000"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [h["short_channel_id"] for h in out["hops"]] == ["700000x12x5", "700000x12x6", "700000x12x7"]
    assert out["total_amount_msat"] == out["hops"][0]["amount_msat"]
    assert out["total_fee_msat"] == sum(h["fee_msat"] for h in out["hops"])
    assert out["total_cltv_expiry_delta"] == 70 and out["elapsed_ms"] >= 0
    none = runner.invoke(cli, ["route", "--graph", str(graph_file), "--source", node(1), "--target", node(4),
                               "--amount-msat", "999999999999"])
    assert none.exit_code == 2 and none.stderr.startswith("error: no route")
    capped = runner.invoke(cli, ["route", "--graph", str(graph_file), "--source", node(1), "--target", node(4),
                                 "--amount-msat", "1000000", "--max-fee-msat", "0"])
    assert capped.exit_code == 2  # every path to node 4 charges a fee
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([[node(1), node(4), 1000000], [node(1), node(4), 999999999999]]))
    lines = runner.invoke(cli, ["route", "--graph", str(graph_file), "--pairs", str(pairs)]).stdout.splitlines()
    assert json.loads(lines[0])["total_fee_msat"] == out["total_fee_msat"]
    assert json.loads(lines[1])["error"].startswith("no route")


def test_route_hints_reach_a_private_payee_and_caps_apply() -> None:
    from lightspeed.invoice import RouteHintHop

    graph = graph_from_describegraph(GRAPH)
    private = bytes.fromhex(node(9))
    hint = [RouteHintHop(bytes.fromhex(node(4)), (800_000 << 40) | 1, 1000, 100, 40)]
    with pytest.raises(NoRouteError):
        find_route(graph, bytes.fromhex(node(1)), private, 1_000_000)
    hinted = graph.with_route_hints([hint], private)
    route = find_route(hinted, bytes.fromhex(node(1)), private, 1_000_000)
    assert route.hops[-1].pubkey == private and route.hops[-1].short_channel_id == (800_000 << 40) | 1
    assert route.hops[-2].fee_msat == 1000 + 1_000_000 * 100 // 1_000_000  # node 4's hinted policy
    assert private not in graph.nodes  # the original graph is untouched
    with pytest.raises(NoRouteError):
        find_route(hinted, bytes.fromhex(node(1)), private, 1_000_000, max_fee_msat=route.total_fee_msat - 1)
    cap = route.total_cltv_expiry_delta - 1
    try:
        capped = find_route(hinted, bytes.fromhex(node(1)), private, 1_000_000, max_cltv_expiry_delta=cap)
    except NoRouteError:
        return
    assert capped.total_cltv_expiry_delta <= cap < route.total_cltv_expiry_delta  # another, slower path
