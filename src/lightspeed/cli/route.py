"""``lightspeed route``: cheapest route over a graph snapshot (LND describegraph JSON)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from lightspeed.cli.common import Amount, print_json
from lightspeed.errors import DecodeError, UsageError

if TYPE_CHECKING:  # imported when the command runs: `lightspeed --help` does not load the router
    from lightspeed.routing import ChannelGraph, Route
    from lightspeed.routing.scorer import ScoreView

EXIT_BAD_INPUT = 1
EXIT_NO_ROUTE = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _pubkey(text: str, name: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 33:
        _fail(f"{name} is not a 33-byte public key in hex")
    return key


def route_to_json(route: Route, elapsed_ms: float) -> dict[str, Any]:
    from lightspeed.invoice import format_short_channel_id

    return {
        "hops": [
            {
                "short_channel_id": format_short_channel_id(hop.short_channel_id),
                "pubkey": hop.pubkey.hex(),
                "amount_msat": hop.amount_msat,
                "fee_msat": hop.fee_msat,
            }
            for hop in route.hops
        ],
        "total_amount_msat": route.total_amount_msat,
        "total_fee_msat": route.total_fee_msat,
        "total_cltv_expiry_delta": route.total_cltv_expiry_delta,
        "elapsed_ms": round(elapsed_ms, 3),
    }


def _timed_route(graph: ChannelGraph, source: bytes, target: bytes, amount_msat: int,
                 max_fee_msat: int | None = None, max_cltv: int | None = None,
                 score: ScoreView | None = None) -> dict[str, Any]:
    from lightspeed.routing import find_route

    start = time.perf_counter()
    route = find_route(graph, source, target, amount_msat, max_fee_msat=max_fee_msat,
                       max_cltv_expiry_delta=max_cltv, score=score)
    return route_to_json(route, (time.perf_counter() - start) * 1000)


@click.command("route")
@click.option("--graph", "graph_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Channel graph in `lncli describegraph` JSON.")
@click.option("--source", help="Paying node id (hex).")
@click.option("--target", help="Payee node id (hex).")
@click.option("--amount-msat", type=Amount("msat", minimum=1),
              help="Amount to deliver to the target (msat, or with a sat suffix).")
@click.option("--max-fee-msat", type=Amount("msat"), help="Refuse routes charging more in fees.")
@click.option("--max-cltv", type=click.IntRange(min=0), help="Refuse routes whose total CLTV delta is larger.")
@click.option("--graph-cache", "cache_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Compact snapshot of --graph, written on first use and loaded instead of the JSON "
                   "while the JSON is unchanged (rebuilt when stale or damaged).")
@click.option("--pairs", "pairs_file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON list of [source, target, amount_msat]: one JSON line per pair, graph loaded once.")
@click.option("--scored", is_flag=True,
              help="Cost = fees + CLTV risk + failure-probability penalty (default: fees, then CLTV, then hops).")
@click.option("--scorer", "scorer_file", type=click.Path(dir_okay=False, path_type=Path),
              help="With --scored: liquidity learned earlier (a saved ProbabilisticScorer, JSON).")
def route(graph_file: Path, source: str | None, target: str | None, amount_msat: int | None,
          max_fee_msat: int | None, max_cltv: int | None, pairs_file: Path | None, scored: bool,
          scorer_file: Path | None, cache_file: Path | None) -> None:
    """Find the cheapest route (fees, then CLTV, then hops) and print it as JSON.

    With --pairs, one compact JSON object per line (JSON Lines: a stream, one result per pair).

    \b
    Example:
      lightspeed route --graph graph.json --source $ALICE --target $CAROL --amount-msat 100000
    """
    from lightspeed.routing import NoRouteError

    score = _score(scored, scorer_file)
    try:
        graph = _load_graph(graph_file, cache_file)
    except OSError as exc:
        _fail(f"cannot read --graph: {exc.strerror}")
    except json.JSONDecodeError as exc:
        _fail(f"--graph is not valid JSON: {exc.msg} at line {exc.lineno}")
    except UnicodeDecodeError:
        _fail("--graph is not JSON text (not UTF-8)")
    except DecodeError as exc:
        _fail(f"--graph: {exc}")
    except UsageError as exc:
        _fail(f"--graph-cache: {exc}")
    if pairs_file is not None:
        _route_pairs(graph, pairs_file, score)
        return
    if source is None or target is None or amount_msat is None:
        _fail("give --source, --target and --amount-msat (or --pairs FILE)")
    try:
        result = _timed_route(graph, _pubkey(source, "--source"), _pubkey(target, "--target"), amount_msat,
                              max_fee_msat, max_cltv, score)
    except NoRouteError as exc:
        _fail(str(exc), EXIT_NO_ROUTE)
    except UsageError as exc:
        _fail(str(exc))
    print_json(result)


def _load_graph(graph_file: Path, cache_file: Path | None) -> ChannelGraph:
    """The --graph JSON, through the --graph-cache snapshot when given (a bad cache only costs a rebuild)."""
    from lightspeed.cli.graph_cache import load_describegraph_cached
    from lightspeed.routing import graph_from_describegraph

    if cache_file is None:
        return graph_from_describegraph(json.loads(graph_file.read_bytes()))
    loaded = load_describegraph_cached(graph_file, cache_file)
    if loaded.note:
        click.echo(f"warning: --graph-cache: {loaded.note}", err=True)
    return loaded.graph


def _score(scored: bool, scorer_file: Path | None) -> ScoreView | None:
    if scorer_file is not None and not scored:
        _fail("--scorer needs --scored")
    from lightspeed.routing.scorer import ProbabilisticScorer

    if not scored:
        return None
    scorer = ProbabilisticScorer()
    if scorer_file is not None:
        try:
            scorer = ProbabilisticScorer.from_json(json.loads(scorer_file.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            _fail(f"cannot read --scorer: {exc}")
        except DecodeError as exc:
            _fail(f"--scorer: {exc}")
    return scorer.view(time.time())


def _route_pairs(graph: ChannelGraph, pairs_file: Path, score: ScoreView | None = None) -> None:
    from lightspeed.routing import NoRouteError

    try:
        pairs = json.loads(pairs_file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        _fail(f"cannot read --pairs: {exc}")
    if not isinstance(pairs, list):
        _fail("--pairs must hold a JSON list of [source, target, amount_msat]")
    for i, pair in enumerate(pairs):
        ok = (isinstance(pair, list) and len(pair) == 3 and all(isinstance(p, str) for p in pair[:2])
              and isinstance(pair[2], int) and not isinstance(pair[2], bool) and pair[2] > 0)
        if not ok:
            _fail(f"--pairs[{i}] is not [source hex, target hex, positive amount_msat]")
        source, target, amount = pair
        line: dict[str, Any] = {"source": source, "target": target, "amount_msat": amount}
        try:
            line.update(_timed_route(graph, _pubkey(source, f"--pairs[{i}] source"),
                                     _pubkey(target, f"--pairs[{i}] target"), amount, score=score))
        except (NoRouteError, UsageError) as exc:
            line["error"] = str(exc)
        click.echo(json.dumps(line))
