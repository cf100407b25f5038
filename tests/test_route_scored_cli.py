"""`lightspeed route --scored`: the probabilistic cost from the command line, contract unchanged."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from lightspeed.cli.main import cli
from lightspeed.invoice import format_short_channel_id
from lightspeed.routing.generate import generate_describegraph
from lightspeed.routing.lnd_json import graph_from_describegraph
from lightspeed.routing.scorer import ProbabilisticScorer


def test_scored_routes_keep_the_contract_fields_and_can_start_from_saved_learning(tmp_path: Path) -> None:
    data = generate_describegraph(seed=7, nodes=300, channels=1200)
    graph_file = tmp_path / "graph.json"
    graph_file.write_text(json.dumps(data))
    graph = graph_from_describegraph(data)
    ids = [n["pub_key"] for n in data["nodes"]]
    runner = CliRunner()
    found = None
    for target in ids[1:40]:
        args = ["route", "--graph", str(graph_file), "--source", ids[0], "--target", target, "--amount-msat", "50000"]
        plain = runner.invoke(cli, args)
        scored = runner.invoke(cli, [*args, "--scored"])
        if plain.exit_code == 0 and scored.exit_code == 0:
            found = json.loads(plain.output), json.loads(scored.output), args
            break
    assert found is not None, "no routable pair in the generated graph"
    plain_route, scored_route, args = found
    assert set(scored_route) == set(plain_route)
    assert scored_route["total_fee_msat"] >= plain_route["total_fee_msat"]  # fee-only is the cheapest
    # Teach the scorer that the fee-cheapest first channel failed for this amount: it is avoided.
    scorer = ProbabilisticScorer()
    first = plain_route["hops"][0]
    channel = next(c for c in graph.channels_into(bytes.fromhex(first["pubkey"]))
                   if c.source.hex() == ids[0] and format_short_channel_id(c.short_channel_id)
                   == first["short_channel_id"])
    scorer.channel_failed(channel, 1, now=time.time())
    saved = tmp_path / "scorer.json"
    saved.write_text(json.dumps(scorer.to_json()))
    learned = runner.invoke(cli, [*args, "--scored", "--scorer", str(saved)])
    if learned.exit_code == 0:
        assert json.loads(learned.output)["hops"][0]["short_channel_id"] != first["short_channel_id"]
    else:
        assert learned.exit_code == 2 and "no route" in learned.output
    bad = runner.invoke(cli, [*args, "--scorer", str(saved)])
    assert bad.exit_code == 1 and "--scorer needs --scored" in bad.output
