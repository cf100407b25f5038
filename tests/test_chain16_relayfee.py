"""The Electrum server's fee answers follow the chain's fee market: ``blockchain.relayfee`` and
``mempool.get_info`` the minimum relay feerate (``chain set-feerate --min-relay``),
``blockchain.estimatefee`` never below it nor below what congested blocks take (``chain congest``),
``mempool.get_fee_histogram`` the backlog congestion leaves; and our Electrum client
(ElectrumChainSource) sees them over TCP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from lightspeed.bitcoin.tx import OutPoint, TxOut
from lightspeed.chain.electrum_client import ServerError, parse_relayfee
from lightspeed.chain.regtest import RegtestChain
from lightspeed.node.electrum_chain import ElectrumChainSource, ServerAddress
from tests.support.electrum_servers import ServerLoop
from tests.test_chain16_electrum_source import wait_until
from tests.test_electrum_server import SPK, call, session_for, spend_p2wpkh


def _sat_per_kvb(btc: float) -> int:
    return round(btc * 100_000_000)


def test_relayfee_and_mempool_info_follow_the_minimum_relay_feerate(tmp_path: Path) -> None:
    chain = RegtestChain(tmp_path / "chain.sqlite", clock=None)
    session = session_for(chain)
    assert _sat_per_kvb(call(session, "blockchain.relayfee")) == 1000  # any fee taken: Core's 1 sat/vB shown
    subprocess.run([sys.executable, "-m", "lightspeed", "chain", "set-feerate", "253", "--min-relay", "2500",
                    "--chain", str(chain.path)], check=True, capture_output=True, timeout=60)
    assert _sat_per_kvb(call(session, "blockchain.relayfee")) == 10_000  # 2,500 sat/kw, another process set it
    info = call(session, "mempool.get_info")
    assert _sat_per_kvb(info["minrelaytxfee"]) == _sat_per_kvb(info["mempoolminfee"]) == 10_000
    assert _sat_per_kvb(info["incrementalrelayfee"]) == 1000
    assert _sat_per_kvb(call(session, "blockchain.estimatefee", 6)) == 10_000  # the 253 estimate would not relay
    chain.set_fee_estimate(4000)
    assert _sat_per_kvb(call(session, "blockchain.estimatefee", 6)) == 16_000
    chain.set_min_relay_feerate(None)
    assert _sat_per_kvb(call(session, "blockchain.relayfee")) == 1000
    chain.close()


def test_congestion_raises_the_estimate_and_its_backlog_shows_in_the_histogram(tmp_path: Path) -> None:
    chain = RegtestChain(tmp_path / "chain.sqlite", clock=None)
    session = session_for(chain)
    coin = chain.fund(SPK, 100_000)
    chain.congest(5000)
    assert _sat_per_kvb(call(session, "blockchain.estimatefee", 2)) == 20_000  # what blocks take now
    assert _sat_per_kvb(call(session, "blockchain.relayfee")) == 1000  # relaying is not blocked, mining is
    cheap = spend_p2wpkh(coin, 100_000, [TxOut(99_500, SPK)])  # ~1,100 sat/kw: waits while congested
    chain.broadcast(cheap)
    chain.mine(1)
    assert call(session, "mempool.get_fee_histogram") == [[500 // cheap.vsize, cheap.vsize]]
    chain.congest(None)
    assert _sat_per_kvb(call(session, "blockchain.estimatefee", 2)) == 1012  # the 253 sat/kw estimate again
    chain.mine(1)
    assert call(session, "mempool.get_fee_histogram") == []
    assert chain.get_transaction(cheap.txid) == (cheap, 1)
    assert OutPoint(cheap.txid, 0) in [u.outpoint for u in chain.unspent([SPK])]
    chain.close()


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[RegtestChain, ServerLoop, list[ElectrumChainSource]]]:
    chain = RegtestChain(tmp_path / "chain.sqlite", clock=None)
    chain.mine(3)
    loop = ServerLoop()
    sources: list[ElectrumChainSource] = []
    yield chain, loop, sources
    for source in sources:
        source.close()
    loop.close()
    chain.close()


def _source(sources: list[ElectrumChainSource], port: int) -> ElectrumChainSource:
    source = ElectrumChainSource([ServerAddress("127.0.0.1", port, False)], "regtest", request_timeout_s=5,
                                 backoff_max_s=0.5, fee_refresh_s=0.2)
    sources.append(source)
    source.start(20)
    return source


def test_our_client_follows_the_servers_relay_floor_and_congestion(
        running: tuple[RegtestChain, ServerLoop, list[ElectrumChainSource]]) -> None:
    chain, servers, sources = running
    _server, port = servers.electrum(chain.path)
    source = _source(sources, port)
    assert source.min_relay_feerate_per_kw() == 253 and source.estimate_feerate_per_kw() == 253
    chain.set_min_relay_feerate(3000)
    wait_until("the new relay floor", lambda: source.min_relay_feerate_per_kw() == 3000, seconds=5)
    assert source.estimate_feerate_per_kw() == 3000  # an estimate under the floor would not relay
    assert source.estimate_feerate_per_kw(2) == 3000  # a target asked for the first time: floored too
    chain.set_min_relay_feerate(None)
    chain.congest(6000)
    wait_until("the congested estimate", lambda: source.estimate_feerate_per_kw() == 6000, seconds=5)
    assert source.min_relay_feerate_per_kw() == 253


def test_a_server_without_relayfee_leaves_the_default_floor(
        running: tuple[RegtestChain, ServerLoop, list[ElectrumChainSource]]) -> None:
    chain, servers, sources = running
    _server, port = servers.electrum(chain.path)
    front = servers.proxy(port, refuse=frozenset({"blockchain.relayfee"}))
    chain.set_min_relay_feerate(3000)
    source = _source(sources, front)
    assert source.min_relay_feerate_per_kw() == 253
    assert source.estimate_feerate_per_kw() == 3000  # the estimate is floored by the server all the same


@pytest.mark.parametrize(("answer", "per_kw"), [(0, 253), (0.00001, 253), (0.0001, 2500), (0.00010001, 2501),
                                                (1000, 10_000_000)])
def test_relayfee_answers_are_parsed_up_to_the_next_sat_per_kw(answer: float, per_kw: int) -> None:
    assert parse_relayfee(Decimal(str(answer))) == per_kw


@pytest.mark.parametrize("answer", ["1", True, None, -0.001])
def test_a_bad_relayfee_answer_is_a_server_error(answer: object) -> None:
    with pytest.raises(ServerError, match=r"blockchain\.relayfee"):
        parse_relayfee(Decimal(str(answer)) if isinstance(answer, float) else answer)
