"""A funding reorganised out after channel_ready, seen only through the Electrum protocol: two
`lightspeed node start --electrum` daemons on `lightspeed chain serve-electrum`, the test playing
the rest of the network on the chain file (reorganising it with `lightspeed chain reorg`, double-spending the funder's coin with
the key its words give). The channel is suspended, resumes when the funding is deep again, and is
closed as ``funding_double_spent`` on both sides once a double spend is deep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lightspeed.bitcoin.network import REGTEST
from lightspeed.bitcoin.tx import Transaction, TxIn, TxOut
from lightspeed.chain.hd import mnemonic_to_seed
from lightspeed.chain.regtest import RegtestChain
from lightspeed.chain.source import Utxo
from lightspeed.chain.wallet import HdSeed, Wallet
from tests.support.electrum_servers import self_signed
from tests.test_chain16_daemons import Process, _node, processes  # noqa: F401 - the fixture
from tests.test_daemon import call, lightspeed, wait_for

EXTERNAL = bytes.fromhex("0014") + bytes(range(20))


@pytest.mark.slow
def test_electrum_daemons_suspend_resume_and_drop_a_reorganised_channel(
        tmp_path: Path, processes: list[Process]) -> None:  # noqa: F811 - the fixture
    chain_file = tmp_path / "chain.sqlite"
    chain = RegtestChain(chain_file)
    chain.mine(1)
    cert, key = self_signed(tmp_path)
    server = Process(tmp_path / "electrum.log", "chain", "serve-electrum", "--chain", str(chain_file),
                     "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key))
    processes.append(server)
    address: str = server.ready["electrum_server"]
    alice_p, bob_p = _node(tmp_path, "alice", address, cert), _node(tmp_path, "bob", address, cert)
    processes += [alice_p, bob_p]
    a, b = tmp_path / "alice", tmp_path / "bob"

    def follow() -> None:
        tip = chain.tip()[0]
        wait_for("the daemons follow the tip", lambda: all(call(d, "getinfo")["block_height"] == tip for d in (a, b)))

    def channel(datadir: Path, cid: str) -> dict[str, Any]:
        return next(c for c in call(datadir, "channels")["channels"] if c["channel_id"] == cid)

    def states(cid: str) -> list[str]:
        return [channel(d, cid)["state"] for d in (a, b)]

    def reorganise_out(funding_txid: bytes) -> None:
        position = chain.tx_position(funding_txid)
        assert position is not None
        depth = chain.tip()[0] - position[0] + 1  # the funding's block and those above it
        replaced = call(a, "chain", "reorg", str(depth), "--empty", "--chain", str(chain_file))
        assert replaced["replaced"] == depth and replaced["dropped"] == []  # the funding waits in the mempool
        follow()
        wait_for("both sides suspend the channel", lambda: states(cid) == ["awaiting_confirmations"] * 2)

    call(a, "chain", "send", call(a, "newaddress")["address"], "2000000sat", "--chain", str(chain_file))
    wait_for("alice's coins", lambda: int(call(a, "balance")["onchain_confirmed_sat"]) == 2_000_000)
    bob_id = bob_p.ready["node_id"]
    assert call(a, "connect", f"{bob_id}@{bob_p.ready['listen']}")["connected"] is True
    cid = call(a, "open-channel", bob_id, "1000000")["channel_id"]
    chain.mine(3)
    follow()
    wait_for("the channel is ready", lambda: states(cid) == ["normal"] * 2)
    funding_txid = bytes.fromhex(channel(a, cid)["funding_txid"])[::-1]
    old_scid = channel(a, cid)["short_channel_id"]

    invoice = call(b, "invoice", "new", "1000000", "while out")["invoice"]  # bob refuses to make one while out
    reorganise_out(funding_txid)
    refused = lightspeed(a, "pay", invoice, check=False)
    assert refused.returncode != 0 and "suspended: its funding was reorganised out" in refused.stderr
    chain.mine(3)
    follow()
    wait_for("both sides resume", lambda: states(cid) == ["normal"] * 2)
    assert channel(a, cid)["short_channel_id"] not in (None, old_scid)
    paid = call(a, "pay", call(b, "invoice", "new", "5000000", "confirmed again")["invoice"])
    assert paid["status"] == "succeeded"

    reorganise_out(funding_txid)
    found = chain.get_transaction(funding_txid)
    assert found is not None
    spent = found[0].inputs[0].prevout
    parent = chain.get_transaction(spent.txid)
    assert parent is not None
    words = (a / "wallet_mnemonic").read_text().strip()
    wallet = Wallet(HdSeed(mnemonic_to_seed(words)), chain, REGTEST)
    coin = Utxo(spent, parent[0].outputs[spent.index], None)
    conflict = wallet.sign(Transaction(2, (TxIn(spent, sequence=0xFFFFFFFD),),
                                       (TxOut(coin.output.value_sat - 50_000, EXTERNAL),), 0), [coin])
    chain.broadcast(conflict)
    chain.mine(3)
    follow()
    wait_for("both sides drop the channel", lambda: states(cid) == ["closed"] * 2)
    for datadir in (a, b):
        closed = channel(datadir, cid)
        assert closed["close_type"] == "funding_double_spent"
        assert closed["closing_txid"] == conflict.txid_hex
    assert alice_p.process.poll() is None and bob_p.process.poll() is None
