"""ElectrumChainSource against real Electrum servers on loopback (the embedded chain's server).

The chain source only ever talks the Electrum protocol (TCP, or TLS with a certificate made
here); the test reads and writes the chain file directly, as a miner and the rest of the
network would. Hostile fronts rewrite the honest server's answers: the client must say what
was wrong, drop that server and carry on with the next one.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxIn, TxOut
from lightspeed.chain.electrum import ChainFollower, ElectrumSession
from lightspeed.chain.regtest import RegtestChain
from lightspeed.errors import ChainBusy, ChainError, RejectedTransaction
from lightspeed.node.electrum_chain import ElectrumChainSource, ServerAddress
from tests.support.electrum_servers import ServerLoop, self_signed, tls_server_context
from tests.test_chain import SPK, spend_p2wpkh

SCRIPT = p2wpkh_script(b"\x02" + b"\x11" * 32)


def wait_until(what: str, check: Callable[[], bool], seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _tx(chain: RegtestChain, txid: bytes) -> Transaction:
    found = chain.get_transaction(txid)
    assert found is not None
    return found[0]


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[RegtestChain]:
    chain = RegtestChain(tmp_path / "chain.sqlite", clock=None)
    chain.mine(3)
    yield chain
    chain.close()


@pytest.fixture
def servers() -> Iterator[ServerLoop]:
    loop = ServerLoop()
    yield loop
    loop.close()


@pytest.fixture
def sources() -> Iterator[list[ElectrumChainSource]]:
    made: list[ElectrumChainSource] = []
    yield made
    for source in made:
        source.close()


def _source(sources: list[ElectrumChainSource], *ports: int, tls: ssl.SSLContext | None = None,
            backoff_max_s: float = 0.5, fee_refresh_s: float = 60,
            request_timeout_s: float = 5) -> ElectrumChainSource:
    source = ElectrumChainSource([ServerAddress("127.0.0.1", p, tls is not None) for p in ports], "regtest",
                                 ssl_context=tls, request_timeout_s=request_timeout_s, backoff_max_s=backoff_max_s,
                                 fee_refresh_s=fee_refresh_s)
    sources.append(source)
    source.start(20)
    return source


def test_it_follows_funding_confirmations_spends_and_positions_as_the_chain_has_them(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource]) -> None:
    _server, port = servers.electrum(chain.path)
    source = _source(sources, port)
    assert source.tip() == chain.tip()
    assert source.unspent([SCRIPT]) == []
    funding = chain.fund(SCRIPT, 100_000, confirm=False)
    wait_until("the mempool payment", lambda: len(source.unspent([SCRIPT])) == 1)
    [utxo] = source.unspent([SCRIPT])
    assert (utxo.outpoint, utxo.output.value_sat, utxo.height) == (funding, 100_000, None)
    assert source.get_transaction(funding.txid) == (_tx(chain, funding.txid), 0)
    chain.mine(2)
    wait_until("two confirmations", lambda: source.tip() == chain.tip()
               and (source.get_transaction(funding.txid) or (None, 0))[1] == 2)
    assert source.tx_position(funding.txid) == chain.tx_position(funding.txid)
    assert source.unspent([SCRIPT])[0].height == chain.tip()[0] - 1
    assert source.output_at(*chain.tx_position(funding.txid) or (0, 0), 0) == (TxOut(100_000, SCRIPT), False)

    spend = Transaction(2, (TxIn(funding),), (TxOut(99_000, SCRIPT),), 0)  # unsigned: the chain refuses it
    with pytest.raises(RejectedTransaction, match="input 0"):
        source.broadcast(spend)
    assert source.spending_tx(funding) is None and source.get_transaction(bytes(32)) is None
    assert source.estimate_feerate_per_kw() == 253
    chain.set_fee_estimate(2500)
    assert source.estimate_feerate_per_kw(3) == 2500  # a target never asked before: asked now


def test_a_reorganisation_takes_a_confirmation_back_and_the_transaction_is_followed_again(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource]) -> None:
    _server, port = servers.electrum(chain.path)
    source = _source(sources, port)
    funding = chain.fund(SCRIPT, 50_000)  # confirmed in the tip block
    confirmed_at = chain.tip()[0]
    wait_until("confirmed", lambda: source.tx_position(funding.txid) is not None)
    old_tip = source.tip()
    assert source.get_transaction(funding.txid) == (_tx(chain, funding.txid), 1)

    chain.reorg(2, empty=True)  # blocks replaced by three empty ones: the funding is back in the mempool
    wait_until("the new tip", lambda: source.tip() == chain.tip())
    assert source.tip()[0] == old_tip[0] + 1 and source.headers.block_hash(confirmed_at) != old_tip[1]
    wait_until("unconfirmed again", lambda: (source.get_transaction(funding.txid) or (None, -1))[1] == 0)
    assert source.tx_position(funding.txid) is None and source.unspent([SCRIPT])[0].height is None

    chain.mine(1)
    wait_until("confirmed again", lambda: source.tx_position(funding.txid) == chain.tx_position(funding.txid))
    assert source.get_transaction(funding.txid) == (_tx(chain, funding.txid), 1)


def test_tls_with_a_self_signed_certificate_is_trusted_only_when_given(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource], tmp_path: Path) -> None:
    _server, port = servers.electrum(chain.path)
    cert, key = self_signed(tmp_path)
    tls_port = servers.proxy(port, tls=tls_server_context(cert, key))
    source = _source(sources, tls_port, tls=ssl.create_default_context(cafile=str(cert)))
    assert source.tip() == chain.tip() and str(source.server) == f"127.0.0.1:{tls_port}:s"

    stranger = ElectrumChainSource([ServerAddress("127.0.0.1", tls_port, True)], "regtest")
    with pytest.raises(ChainError, match="CERTIFICATE_VERIFY_FAILED"):
        stranger.start(3)


def _flip_nonce(raw_hex: str) -> str:
    raw = bytearray(bytes.fromhex(raw_hex))
    raw[-1] ^= 0xFF
    return raw.hex()


def _bad_pow(method: str, result: Any) -> Any:
    if method == "blockchain.block.headers":
        return {**result, "hex": result["hex"][:-160] + _flip_nonce(result["hex"][-160:])}
    if method == "blockchain.headers.subscribe" and isinstance(result, dict):
        return {**result, "hex": _flip_nonce(result["hex"])}
    return result


def _bad_merkle(method: str, result: Any) -> Any:
    if method == "blockchain.transaction.get_merkle":
        return {**result, "pos": result["pos"] ^ 1}
    return result


@pytest.mark.parametrize(("hostile", "reason"), [
    ({"garbage": True}, "bad answer: line: not JSON"),
    ({"rewrite": _bad_pow}, "proof of work"),
])
def test_a_lying_server_is_dropped_for_the_next_one_with_the_reason(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource],
        hostile: dict[str, Any], reason: str) -> None:
    _server, port = servers.electrum(chain.path)
    liar = servers.proxy(port, **hostile)
    # 30 s to answer: at 5 s the honest server, on a loaded machine, was once dropped as
    # unreachable too (server.version unanswered) and the liar tried again
    source = _source(sources, liar, port, request_timeout_s=30)
    assert source.server == ServerAddress("127.0.0.1", port, False) and source.tip() == chain.tip()
    [(dropped, why)] = source.dropped
    assert dropped == f"127.0.0.1:{liar}:t" and reason in why


def test_a_wrong_merkle_proof_drops_the_server_and_the_next_one_proves_the_confirmation(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource]) -> None:
    _server, port = servers.electrum(chain.path)
    liar = servers.proxy(port, rewrite=_bad_merkle)
    source = _source(sources, liar, port)
    assert source.server == ServerAddress("127.0.0.1", liar, False)  # nothing to prove yet: it passes
    funding = chain.fund(SCRIPT, 70_000)
    wait_until("proven by the honest server",
               lambda: source.tx_position(funding.txid) == chain.tx_position(funding.txid))
    assert source.server == ServerAddress("127.0.0.1", port, False)
    assert any(server == f"127.0.0.1:{liar}:t" and "merkle root" in why for server, why in source.dropped)


def test_it_reconnects_when_its_server_comes_back_and_is_busy_meanwhile(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource]) -> None:
    server, port = servers.electrum(chain.path)
    source = _source(sources, port)
    servers.stop_server(server)
    wait_until("the loss noticed", lambda: source.server is None)
    with pytest.raises(ChainBusy, match="no Electrum server connected"):
        source.broadcast(Transaction(2, (TxIn(OutPoint(bytes(32), 0)),), (TxOut(1, SCRIPT),), 0))
    assert source.tip()[0] == 3  # reads keep answering from what was verified
    chain.mine(2)
    servers.electrum(chain.path, port)
    wait_until("back, at the new tip", lambda: source.server is not None and source.tip() == chain.tip())
    assert "unreachable" in (source.last_error or "")


def test_the_server_announces_a_new_tip_at_the_same_height(chain: RegtestChain) -> None:
    """A reorganisation that keeps the height (one block replaced by one) is still a new tip to announce."""
    session, follower = ElectrumSession(chain), ChainFollower(chain)
    session.handle_line(b'{"id": 1, "method": "blockchain.headers.subscribe", "params": []}\n')
    height = chain.tip()[0]
    chain.trim_blocks(height - 1)
    chain.mine(1, block_time=chain.block_time(height - 1) + 7)  # another block at the same height
    changes = follower.poll()
    assert changes is not None and changes.tip_height == height
    [message] = [json.loads(line) for line in session.notifications(changes)]
    assert message["method"] == "blockchain.headers.subscribe"
    assert message["params"][0] == {"height": height, "hex": (chain.index.header(height) or b"").hex()}


def test_fee_estimates_are_asked_again_while_the_chain_is_quiet(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource]) -> None:
    _server, port = servers.electrum(chain.path)
    source = _source(sources, port, fee_refresh_s=0.2)
    assert source.estimate_feerate_per_kw() == 253
    chain.set_fee_estimate(5000)  # no block, no transaction: nothing the server would notify
    wait_until("the new estimate", lambda: source.estimate_feerate_per_kw() == 5000, seconds=5)


@pytest.mark.parametrize("package_relay", [True, False])
def test_a_package_goes_whole_where_the_server_relays_packages_else_parent_first(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource], package_relay: bool) -> None:
    _server, port = servers.electrum(chain.path)
    if not package_relay:
        port = servers.proxy(port, refuse=frozenset({"blockchain.transaction.broadcast_package"}))
    source = _source(sources, port)
    funding = chain.fund(SPK, 100_000)
    parent = spend_p2wpkh(funding, 100_000, [TxOut(99_000, SPK)])
    child = spend_p2wpkh(OutPoint(parent.txid, 0), 99_000, [TxOut(98_000, SPK)])
    assert source.broadcast_package([parent, child]) == [parent.txid, child.txid]
    assert chain.mempool() == [parent.txid, child.txid]
    wait_until("both followed", lambda: [source.get_transaction(t) for t in (parent.txid, child.txid)]
               == [(parent, 0), (child, 0)])
    thief = spend_p2wpkh(OutPoint(child.txid, 0), 98_000, [TxOut(97_000, SPK)], key=b"\x32" * 32)
    with pytest.raises(RejectedTransaction):
        source.broadcast_package([child, thief])


def test_retries_back_off_while_no_server_answers(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource]) -> None:
    server, port = servers.electrum(chain.path)
    source = _source(sources, port, backoff_max_s=8)
    servers.stop_server(server)
    wait_until("the loss noticed", lambda: source.server is None)
    time.sleep(2.6)  # pauses of 0.5, 1 and 2 s: at most three more tries (every 0.5 s would be five)
    tries = [why for _server, why in source.dropped if "unreachable" in why]
    assert 2 <= len(tries) <= 4, tries


def test_verified_headers_are_kept_for_the_next_start_and_checked_again(
        chain: RegtestChain, servers: ServerLoop, sources: list[ElectrumChainSource], tmp_path: Path) -> None:
    _server, port = servers.electrum(chain.path)
    chain.mine(20)
    saved = tmp_path / "headers-regtest.bin"

    def started(server_port: int, timeout_s: float = 20) -> ElectrumChainSource:
        source = ElectrumChainSource([ServerAddress("127.0.0.1", server_port, False)], "regtest",
                                     request_timeout_s=5, headers_file=saved)
        sources.append(source)
        source.start(timeout_s)
        return source

    first = started(port)
    wait_until("the headers saved", lambda: saved.exists() and saved.stat().st_size == 24 * 80)
    first.close()
    no_headers = servers.proxy(port, refuse=frozenset({"blockchain.block.headers", "blockchain.block.header"}))
    assert started(no_headers).tip() == chain.tip()  # every header came from the file
    tampered = bytearray(saved.read_bytes())
    tampered[-1] ^= 1  # the tip's nonce: its proof of work is gone
    saved.write_bytes(bytes(tampered))
    with pytest.raises(ChainError, match=r"unknown method blockchain\.block\.header"):
        started(no_headers, timeout_s=2)  # the file is not believed: the headers must come from a server again
    assert started(port).tip() == chain.tip()
