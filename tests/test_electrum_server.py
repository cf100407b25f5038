"""The Electrum protocol over the embedded chain, method by method (sans-IO: lines in, lines out)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.bitcoin.script import p2wpkh_script
from lightspeed.bitcoin.tx import OutPoint, Transaction, TxOut
from lightspeed.chain import RegtestChain
from lightspeed.chain.blocks import BlockHeader, merkle_root, root_from_branch
from lightspeed.chain.electrum import ChainFollower, ElectrumSession, rejection, status_of
from lightspeed.chain.electrum_rpc import MAX_BATCH
from lightspeed.chain.fee_policy import replacement_error
from lightspeed.chain.index import HistoryItem
from lightspeed.crypto.hashes import sha256, sha256d
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from tests.test_chain import KEY, spend_p2wpkh

KEY2 = b"\x62" * 32
SPK = p2wpkh_script(pubkey_from_privkey(KEY))
SPK2 = p2wpkh_script(pubkey_from_privkey(KEY2))
SH = sha256(SPK)[::-1].hex()  # the protocol's script hash: SHA-256 of the script, hex reversed
GENESIS = "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


class Failure(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


def send(session: ElectrumSession, message: Any) -> Any:
    reply = session.handle_line(json.dumps(message).encode() + b"\n")
    return None if reply is None else json.loads(reply)


def call(session: ElectrumSession, method: str, *params: Any) -> Any:
    reply = send(session, {"jsonrpc": "2.0", "id": 7, "method": method, "params": list(params)})
    assert reply["id"] == 7 and reply["jsonrpc"] == "2.0"
    if "error" in reply:
        raise Failure(reply["error"]["code"], reply["error"]["message"])
    return reply["result"]


def session_for(chain: RegtestChain, version: str = "1.6") -> ElectrumSession:
    session = ElectrumSession(chain, "127.0.0.1", 50001)
    assert call(session, "server.version", "test client", version)[1] == version
    return session


@dataclass
class History:
    chain: RegtestChain
    txids: dict[str, bytes]  # name -> txid
    heights: dict[str, int]


@pytest.fixture
def history() -> History:
    """SPK's history: a, then b and c in one block, then in the mempool d (confirmed input),
    e (spends d: unconfirmed input) and f (confirmed input)."""
    chain = RegtestChain(":memory:", clock=None)
    a = chain.fund(SPK, 100_000)
    coins = [chain.fund(SPK2, 50_000, confirm=False) for _ in range(3)]
    chain.mine(1)
    b = spend_p2wpkh(coins[0], 50_000, [TxOut(40_000, SPK)], key=KEY2)
    c = spend_p2wpkh(coins[1], 50_000, [TxOut(30_000, SPK)], key=KEY2)
    chain.broadcast(b)
    chain.broadcast(c)
    chain.mine(1)
    d = spend_p2wpkh(a, 100_000, [TxOut(90_000, SPK)])
    e = spend_p2wpkh(OutPoint(d.txid, 0), 90_000, [TxOut(85_000, SPK2)])
    f = spend_p2wpkh(coins[2], 50_000, [TxOut(49_000, SPK)], key=KEY2)
    for tx in (d, e, f):
        chain.broadcast(tx)
    txids = {"a": a.txid, "b": b.txid, "c": c.txid, "d": d.txid, "e": e.txid, "f": f.txid}
    heights = {name: pos[0] for name, txid in txids.items() if (pos := chain.tx_position(txid))}
    return History(chain, txids, heights)


def test_status_matches_the_protocols_worked_example() -> None:
    """protocol-basics.rst, "Status Example": these six history entries hash to 78e96c65..."""
    def item(txid: str, height: int, position: int = 0, parent: bool = False) -> HistoryItem:
        return HistoryItem(bytes.fromhex(txid)[::-1], height if height > 0 else None, position, 0, parent)

    history = [
        item("bb4c8ab438c13b89ca80d1d5bee25b0b6b7f55673f4d801998ba97db161d9e85", -1, parent=True),
        item("e02a1dadfa83b996b24175df807b271ea5d02937ef5b35c195fac1e1bdc3198f", 0),
        item("770f2d4371b3fabb902dd9a103e2dd005fcd3971181078fca4a2a1d6ff127b30", 2473, 2),
        item("80b19848aed792565ab7c5a79b7c2a00fbf985741579396ebe0ab6098e607311", 0),
        item("9c42f84b2fcdaff676ba25d9d4941741cc0d1a01cce0c23fdc4c0b2afa38431c", 2473, 1),
        item("a6c9c361bd0bc536d6a22648efbf8f9b200e425ef6c3a7a9669dc444c532a347", 2472, 1),
    ]
    assert status_of(history) == "78e96c6562cafa71c115503b9411fdfdc595a45031e2ab76ff75162fe1b0590d"
    assert status_of([]) is None


def test_scripthash_status_history_and_mempool_order(history: History) -> None:
    session = session_for(history.chain)
    t, h = history.txids, history.heights
    assert h["b"] == h["c"] > h["a"]
    block_order = sorted(("b", "c"), key=lambda n: history.chain.tx_position(t[n]))  # type: ignore[arg-type, return-value]
    mempool = sorted(("d", "f"), key=lambda n: t[n][::-1].hex())
    expected = ([(t["a"], h["a"])] + [(t[n], h[n]) for n in block_order]
                + [(t[n], 0) for n in mempool] + [(t["e"], -1)])
    text = "".join(f"{txid[::-1].hex()}:{height}:" for txid, height in expected)
    assert call(session, "blockchain.scripthash.subscribe", SH) == hashlib.sha256(text.encode()).hexdigest()
    result = call(session, "blockchain.scripthash.get_history", SH)
    assert [(r["tx_hash"], r["height"]) for r in result] == [(txid[::-1].hex(), hh) for txid, hh in expected]
    fees = {"d": 10_000, "e": 5_000, "f": 1_000}
    assert [r.get("fee") for r in result] == [None] * 3 + [fees[n] for n in mempool] + [fees["e"]]
    assert call(session, "blockchain.scripthash.get_mempool", SH) == result[3:]


def test_listunspent_and_balance(history: History) -> None:
    session = session_for(history.chain, "1.4")
    t = history.txids
    unspent = call(session, "blockchain.scripthash.listunspent", SH)
    # a is spent (by d, in the mempool): gone; d's output is spent by e: gone; b, c confirmed; f in the mempool.
    assert {(u["tx_hash"], u["tx_pos"], u["value"]) for u in unspent} == {
        (t["b"][::-1].hex(), 0, 40_000), (t["c"][::-1].hex(), 0, 30_000), (t["f"][::-1].hex(), 0, 49_000)}
    assert [u["height"] for u in unspent] == [history.heights["b"]] * 2 + [0]  # mempool last, height 0
    # confirmed: UTXOs at the tip (a, b, c); unconfirmed: the mempool's delta (-a, +d, -d, +f).
    assert call(session, "blockchain.scripthash.get_balance", SH) == {
        "confirmed": 170_000, "unconfirmed": -100_000 + 49_000}
    empty = sha256(b"nobody")[::-1].hex()
    assert call(session, "blockchain.scripthash.get_balance", empty) == {"confirmed": 0, "unconfirmed": 0}
    assert call(session, "blockchain.scripthash.listunspent", empty) == []
    assert call(session, "blockchain.scripthash.subscribe", empty) is None


def test_transaction_get_merkle_proof_checks_against_the_block_header(history: History) -> None:
    chain = history.chain
    session = session_for(chain)
    for name in ("a", "b", "c"):
        txid = history.txids[name]
        proof = call(session, "blockchain.transaction.get_merkle", txid[::-1].hex(), 1)  # the height is a hint
        height, position = chain.tx_position(txid)  # type: ignore[misc]
        assert proof["block_height"] == height and proof["pos"] == position
        header = BlockHeader.parse(bytes.fromhex(call(session, "blockchain.block.header", height)))
        branch = [bytes.fromhex(x)[::-1] for x in proof["merkle"]]
        assert root_from_branch(txid, position, branch) == header.merkle_root
        by_pos = call(session, "blockchain.transaction.id_from_pos", height, position, True)
        assert by_pos == {"tx_hash": txid[::-1].hex(), "merkle": proof["merkle"]}
        assert call(session, "blockchain.transaction.id_from_pos", height, position) == txid[::-1].hex()
    raw = call(session, "blockchain.transaction.get", history.txids["e"][::-1].hex())
    assert Transaction.parse(bytes.fromhex(raw)).txid == history.txids["e"]
    assert call(session, "blockchain.transaction.get", history.txids["e"][::-1].hex(), False) == raw
    with pytest.raises(Failure, match="verbose=true") as info:
        call(session, "blockchain.transaction.get", history.txids["e"][::-1].hex(), True)
    assert info.value.code == 1
    with pytest.raises(Failure, match="not in a block"):
        call(session, "blockchain.transaction.get_merkle", history.txids["e"][::-1].hex(), 0)
    with pytest.raises(Failure, match="no transaction"):
        call(session, "blockchain.transaction.get", "00" * 32)
    with pytest.raises(Failure, match="no position 9"):
        call(session, "blockchain.transaction.id_from_pos", 1, 9)
    with pytest.raises(Failure, match="no block at height 999"):
        call(session, "blockchain.transaction.id_from_pos", 999, 0)


def test_headers_in_chunks_of_2016_with_the_1_6_list_and_the_1_4_hex() -> None:
    chain = RegtestChain(":memory:", clock=None)
    chain.mine(2100)
    all_headers = chain.index.headers(0, 2101)
    new, old = session_for(chain, "1.6"), session_for(chain, "1.4")
    chunk = call(new, "blockchain.block.headers", 0, 5000)
    assert chunk["count"] == 2016 == len(chunk["headers"]) and chunk["max"] == 2016 and "hex" not in chunk
    assert [bytes.fromhex(h) for h in chunk["headers"]] == all_headers[:2016]
    assert chunk["headers"][0].startswith("01000000" + "00" * 32)  # the genesis header
    rest = call(old, "blockchain.block.headers", 2016, 2016)
    assert rest["count"] == 85 and bytes.fromhex(rest["hex"]) == b"".join(all_headers[2016:])
    assert call(new, "blockchain.block.headers", 3000, 10) == {"count": 0, "max": 2016, "headers": []}
    assert call(old, "blockchain.block.headers", 5, 0) == {"count": 0, "max": 2016, "hex": ""}
    assert call(new, "blockchain.block.header", 2100) == all_headers[2100].hex()
    tip = call(new, "blockchain.headers.subscribe")
    assert tip == {"hex": all_headers[2100].hex(), "height": 2100}
    with pytest.raises(Failure, match="beyond the tip") as info:
        call(new, "blockchain.block.header", 2101)
    assert info.value.code == 1


def test_header_checkpoint_proofs() -> None:
    chain = RegtestChain(":memory:", clock=None)
    chain.mine(20)
    session = session_for(chain)
    hashes = [sha256d(h) for h in chain.index.headers(0, 21)]
    for height, cp_height in ((5, 8), (0, 0 + 1), (8, 8), (3, 20), (20, 20)):
        proof = call(session, "blockchain.block.header", height, cp_height)
        assert bytes.fromhex(proof["header"]) == chain.index.header(height)
        root = bytes.fromhex(proof["root"])[::-1]
        assert root == merkle_root(hashes[:cp_height + 1])
        branch = [bytes.fromhex(x)[::-1] for x in proof["branch"]]
        assert root_from_branch(hashes[height], height, branch) == root
    chunk = call(session, "blockchain.block.headers", 2, 4, 10)  # the proof is for the last header (5)
    assert chunk["root"] == call(session, "blockchain.block.header", 5, 10)["root"]
    assert chunk["branch"] == call(session, "blockchain.block.header", 5, 10)["branch"]
    with pytest.raises(Failure, match=r"need height 9 <= cp_height 8"):
        call(session, "blockchain.block.header", 9, 8)
    with pytest.raises(Failure, match="<= tip 20"):
        call(session, "blockchain.block.header", 1, 21)


def test_broadcast_goes_through_full_validation() -> None:
    chain = RegtestChain(":memory:", clock=None)
    coin = chain.fund(SPK, 100_000)
    session = session_for(chain)
    tx = spend_p2wpkh(coin, 100_000, [TxOut(99_000, SPK2)])
    assert call(session, "blockchain.transaction.broadcast", tx.serialize().hex()) == tx.txid_hex
    assert chain.get_transaction(tx.txid) == (tx, 0)
    assert call(session, "blockchain.transaction.broadcast", tx.serialize().hex()) == tx.txid_hex  # known: fine
    double = spend_p2wpkh(coin, 100_000, [TxOut(98_000, SPK2)])
    with pytest.raises(Failure, match=r"rejected by network rules.\n\ntxn-mempool-conflict \(input 0: .* already spent in the mempool") as info:
        call(session, "blockchain.transaction.broadcast", double.serialize().hex())
    assert info.value.code == 2
    bad_sig = spend_p2wpkh(OutPoint(tx.txid, 0), 99_000, [TxOut(98_000, SPK2)])  # signed with the wrong key
    with pytest.raises(Failure, match=r"mandatory-script-verify-flag-failed \(input 0: "):
        call(session, "blockchain.transaction.broadcast", bad_sig.serialize().hex())
    with pytest.raises(Failure, match="TX decode failed") as info:
        call(session, "blockchain.transaction.broadcast", "0200000001")
    assert info.value.code == 2
    with pytest.raises(Failure, match="raw_tx: not valid hex") as info:
        call(session, "blockchain.transaction.broadcast", "zz")
    assert info.value.code == -32602
    chain.mine(1)
    with pytest.raises(Failure, match="Transaction already in block chain"):
        call(session, "blockchain.transaction.broadcast", tx.serialize().hex())


def test_rejections_carry_bitcoinds_reject_reason_then_ours() -> None:
    chain = RegtestChain(":memory:", clock=None)
    coin = chain.fund(SPK, 100_000)
    session = session_for(chain)
    height = chain.tip()[0]
    cases = [
        (spend_p2wpkh(OutPoint(b"\x42" * 32, 0), 1, [TxOut(1, SPK2)]), "bad-txns-inputs-missingorspent (input 0: "),
        (spend_p2wpkh(coin, 100_000, [TxOut(100_001, SPK2)]), "bad-txns-in-belowout (outputs (100001 sat)"),
        (spend_p2wpkh(coin, 100_000, [TxOut(1, SPK2)], locktime=height + 5, sequence=0), "non-final (locktime "),
        (spend_p2wpkh(coin, 100_000, [TxOut(1, SPK2)], sequence=5), "non-BIP68-final (input 0: relative locktime"),
    ]
    for tx, reason in cases:
        with pytest.raises(Failure) as info:
            call(session, "blockchain.transaction.broadcast", tx.serialize().hex())
        assert info.value.message.startswith("the transaction was rejected by network rules.\n\n" + reason)


def test_broadcast_package_is_child_with_parents_and_all_or_nothing() -> None:
    chain = RegtestChain(":memory:", clock=None)
    coin = chain.fund(SPK, 100_000)
    other = chain.fund(SPK, 50_000)
    session = session_for(chain)
    parent = spend_p2wpkh(coin, 100_000, [TxOut(100_000, SPK)])  # no fee: only the child pays
    child = spend_p2wpkh(OutPoint(parent.txid, 0), 100_000, [TxOut(95_000, SPK2)])
    bad_child = spend_p2wpkh(OutPoint(parent.txid, 0), 100_000, [TxOut(100_001, SPK2)])
    result = call(session, "blockchain.transaction.broadcast_package", [parent.serialize().hex(), bad_child.serialize().hex()])
    assert result == {"success": False, "errors": [{"txid": bad_child.txid_hex,
                                                    "error": "bad-txns-in-belowout (outputs (100001 sat) exceed inputs (100000 sat))"}]}
    assert chain.get_transaction(parent.txid) is None  # nothing of a rejected package is kept
    with pytest.raises(Failure, match="package topology disallowed"):
        unrelated = spend_p2wpkh(other, 50_000, [TxOut(49_000, SPK2)])
        call(session, "blockchain.transaction.broadcast_package", [parent.serialize().hex(), unrelated.serialize().hex()])
    packed = call(session, "blockchain.transaction.broadcast_package", [parent.serialize().hex(), child.serialize().hex()])
    assert packed == {"success": True}
    assert chain.get_transaction(child.txid) == (child, 0)
    with pytest.raises(Failure, match="raw_txs: must be an array of 1 to 25"):
        call(session, "blockchain.transaction.broadcast_package", [])


def test_server_methods_and_fees() -> None:
    chain = RegtestChain(":memory:", clock=None)
    session = session_for(chain)
    features = call(session, "server.features")
    assert features["genesis_hash"] == GENESIS and features["hash_function"] == "sha256"
    assert features["protocol_min"] == "1.4" and features["protocol_max"] == "1.6"
    assert features["hosts"] == {"127.0.0.1": {"tcp_port": 50001, "ssl_port": None}}
    assert call(session, "server.ping") is None
    assert call(session, "server.peers.subscribe") == []
    assert call(session, "server.donation_address") == ""
    assert isinstance(call(session, "server.banner"), str)
    assert call(session, "blockchain.relayfee") == 0.00001
    assert call(session, "mempool.get_info") == {"mempoolminfee": 0.00001, "minrelaytxfee": 0.00001,
                                                 "incrementalrelayfee": 0.00001}
    assert int(call(session, "blockchain.estimatefee", 6) * 10**8) == 1012  # 253 sat/kw = 1,012 sat/kvB
    assert call(session, "blockchain.estimatefee", 2, "CONSERVATIVE") == call(session, "blockchain.estimatefee", 2)
    assert call(session, "mempool.get_fee_histogram") == []
    coin = chain.fund(SPK, 100_000)
    cheap = spend_p2wpkh(coin, 100_000, [TxOut(99_000, SPK)])  # 1,000 sat over 110 vbytes
    chain.broadcast(cheap)
    dear = spend_p2wpkh(OutPoint(cheap.txid, 0), 99_000, [TxOut(97_000, SPK)])
    chain.broadcast(dear)
    assert call(session, "mempool.get_fee_histogram") == [[2000 // dear.vsize, dear.vsize],
                                                          [1000 // cheap.vsize, cheap.vsize]]


def test_version_negotiation() -> None:
    chain = RegtestChain(":memory:", clock=None)
    assert call(ElectrumSession(chain), "server.version", "electrum/4.8.1", ["1.4", "1.6"]) == ["lightspeed 0.1.0", "1.6"]
    assert call(ElectrumSession(chain), "server.version", "electrum/4.3.4", "1.4")[1] == "1.4"
    assert call(ElectrumSession(chain), "server.version", "x", ["1.4", "1.5"])[1] == "1.4.2"
    assert call(ElectrumSession(chain), "server.version")[1] == "1.4"
    # 1.6: extraneous arguments are ignored
    assert call(ElectrumSession(chain), "server.version", "x", ["1.4", "1.6"], "garbage", 9999.9, {})[1] == "1.6"
    old = ElectrumSession(chain)
    with pytest.raises(Failure, match="unsupported protocol version") as info:
        call(old, "server.version", "x", ["1.0", "1.2"])
    assert info.value.code == 1 and old.close_after_reply
    twice = session_for(chain)
    with pytest.raises(Failure, match="only one is accepted"):
        call(twice, "server.version", "x", "1.4")
    implicit = ElectrumSession(chain)
    assert call(implicit, "server.ping") is None  # no negotiation: protocol 1.4
    assert "hex" in call(implicit, "blockchain.block.headers", 0, 1)
    with pytest.raises(Failure, match="protocol_version"):
        call(ElectrumSession(chain), "server.version", "x", 1.4)


@pytest.mark.parametrize(("line", "code", "message"), [
    (b"{not json", -32700, "parse error"),
    (b"\xff\xfe", -32700, "parse error"),
    (b'{"id": 1, "method": "server.ping", "params": NaN}', -32700, "parse error"),
    (b"[]", -32600, "empty batch"),
    (b"42", -32600, "must be a JSON object"),
    (b'{"id": 1}', -32600, "method"),
    (b'{"id": [1], "method": "server.ping"}', -32600, "id"),
    (b'{"id": true, "method": "server.ping"}', -32600, "id"),
    (b'{"id": 1, "jsonrpc": "1.0", "method": "server.ping"}', -32600, "jsonrpc"),
    (b'{"id": 1, "method": "server.ping", "params": "x"}', -32600, "params"),
    (b'{"id": 1, "method": "no.such.method"}', -32601, "unknown method"),
    (b'{"id": 1, "method": "server.ping", "params": [1]}', -32602, "takes 0 parameters"),
    (b'{"id": 1, "method": "blockchain.block.header", "params": []}', -32602, "takes 1 to 2 parameters"),
    (b'{"id": 1, "method": "blockchain.block.header", "params": [-1]}', -32602, "height: must be an integer"),
    (b'{"id": 1, "method": "blockchain.block.header", "params": [true]}', -32602, "height: must be an integer"),
    (b'{"id": 1, "method": "blockchain.block.header", "params": ["5"]}', -32602, "height: must be an integer"),
    (b'{"id": 1, "method": "blockchain.block.header", "params": {"heigth": 1}}', -32602, "unknown parameter"),
    (b'{"id": 1, "method": "blockchain.scripthash.subscribe", "params": ["abcd"]}', -32602, "scripthash: must be 64 hex"),
    (b'{"id": 1, "method": "blockchain.scripthash.get_history", "params": ["' + b"zz" * 32 + b'"]}', -32602, "not valid hex"),
    (b'{"id": 1, "method": "blockchain.transaction.id_from_pos", "params": [0, 0, 1]}', -32602, "merkle: must be true or false"),
    (b'{"id": 1, "method": "blockchain.estimatefee", "params": [2, 3]}', -32602, "mode: must be a string"),
])
def test_bad_requests_get_json_rpc_errors(line: bytes, code: int, message: str) -> None:
    session = ElectrumSession(RegtestChain(":memory:", clock=None))
    reply = session.handle_line(line)
    assert reply is not None and reply.endswith(b"\n") and reply.count(b"\n") == 1
    error = json.loads(reply)["error"]
    assert error["code"] == code and message in error["message"]


def test_named_params_batches_and_client_notifications() -> None:
    chain = RegtestChain(":memory:", clock=None)
    session = session_for(chain)
    named = send(session, {"id": "a", "method": "blockchain.block.header", "params": {"height": 0}})
    assert named == {"jsonrpc": "2.0", "id": "a", "result": chain.index.header(0).hex()}  # type: ignore[union-attr]
    batch = send(session, [{"id": 1, "method": "server.ping"}, {"id": 2, "method": "nope"},
                           {"method": "server.ping"}, 5])
    assert [m.get("id") for m in batch] == [1, 2, None]
    assert "result" in batch[0] and batch[1]["error"]["code"] == -32601 and batch[2]["error"]["code"] == -32600
    assert send(session, {"method": "server.ping", "params": []}) is None  # a notification gets no answer
    too_many = send(session, [{"id": i, "method": "server.ping"} for i in range(MAX_BATCH + 1)])
    assert too_many["error"]["code"] == -32600
    padded = session.handle_line(b'{"id": 3, "method": "server.ping"' + b" " * 3000 + b"}\n")  # Electrum 4.8 pads
    assert json.loads(padded) == {"jsonrpc": "2.0", "id": 3, "result": None}  # type: ignore[arg-type]


def test_notifications_follow_what_changed(history: History) -> None:
    chain = history.chain
    session = session_for(chain)
    follower = ChainFollower(chain)
    status = call(session, "blockchain.scripthash.subscribe", SH)
    tip = call(session, "blockchain.headers.subscribe")
    other = sha256(b"unrelated")[::-1].hex()
    call(session, "blockchain.scripthash.subscribe", other)
    assert follower.poll() is None
    chain.mine(1)
    changes = follower.poll()
    assert changes is not None and changes.tip_moved and changes.tip_height == tip["height"] + 1
    sent = [json.loads(m) for m in session.notifications(changes)]
    assert sent[0] == {"jsonrpc": "2.0", "method": "blockchain.headers.subscribe",
                       "params": [{"hex": chain.index.header(tip["height"] + 1).hex(),  # type: ignore[union-attr]
                                   "height": tip["height"] + 1}]}
    new_status = call(session_for(chain), "blockchain.scripthash.subscribe", SH)  # what a new client is told
    assert sent[1:] == [{"jsonrpc": "2.0", "method": "blockchain.scripthash.subscribe", "params": [SH, new_status]}]
    assert new_status != status
    chain.fund(SPK2, 10_000, confirm=False)  # a mempool transaction SPK is not in
    changes = follower.poll()
    assert changes is not None and not changes.tip_moved
    assert session.notifications(changes) == []
    assert call(session, "blockchain.scripthash.unsubscribe", SH) is True
    assert call(session, "blockchain.scripthash.unsubscribe", SH) is False


def test_a_block_mined_between_the_poll_and_the_notification_is_sent_once(history: History) -> None:
    """The header sent is the tip when the notification is made; a block mined after the poll is in it,
    and the next poll, which sees that block as a move, sends nothing again (CI saw the duplicate)."""
    chain = history.chain
    session = session_for(chain)
    follower = ChainFollower(chain)
    tip = call(session, "blockchain.headers.subscribe")
    chain.mine(1)
    changes = follower.poll()
    chain.mine(1)  # after the poll, before the notification
    assert changes is not None and changes.tip_height == tip["height"] + 1
    sent = [json.loads(m) for m in session.notifications(changes)]
    assert [m["params"][0]["height"] for m in sent if m["method"] == "blockchain.headers.subscribe"] == [
        tip["height"] + 2]
    changes = follower.poll()
    assert changes is not None and changes.tip_moved
    assert [json.loads(m) for m in session.notifications(changes)] == []
    chain.mine(1)
    changes = follower.poll()
    assert changes is not None
    sent = [json.loads(m) for m in session.notifications(changes)]
    assert [m["params"][0]["height"] for m in sent] == [tip["height"] + 3]


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                 max_leaves=12).map(lambda v: json.dumps(v).encode()),
    st.builds(lambda m, p: json.dumps({"id": 1, "method": m, "params": p}).encode(),
              st.sampled_from(["server.version", "blockchain.block.header", "blockchain.block.headers",
                               "blockchain.scripthash.get_history", "blockchain.transaction.get",
                               "blockchain.transaction.get_merkle", "blockchain.transaction.id_from_pos",
                               "blockchain.transaction.broadcast", "blockchain.transaction.broadcast_package",
                               "blockchain.estimatefee", "blockchain.scripthash.listunspent"]),
              st.lists(st.none() | st.booleans() | st.integers(-2, 2**40) | st.text(max_size=70)
                       | st.lists(st.text(max_size=10), max_size=3), max_size=4)),
))
def test_any_input_gets_an_answer_never_an_exception(line: bytes) -> None:
    session = ElectrumSession(_FUZZ_CHAIN)
    reply = session.handle_line(line)
    if reply is not None:
        message = json.loads(reply)
        assert isinstance(message, dict | list)
        for item in message if isinstance(message, list) else [message]:
            assert "result" in item or item["error"]["code"] != -32603  # never an internal error


_FUZZ_CHAIN = RegtestChain(":memory:", clock=None)
_FUZZ_CHAIN.mine(3)


def test_a_replaced_transaction_is_notified_gone_from_the_histories_it_was_in() -> None:
    """A replacement (BIP 125) removes a mempool transaction: every subscriber to a script it
    touched is told the new status, though no row of the file names that script any more.
    Before the removal journal, such a client kept the replaced transaction for ever."""
    chain = RegtestChain(":memory:", clock=None)
    coin = chain.fund(SPK2, 50_000)
    replaced_to = p2wpkh_script(pubkey_from_privkey(b"\x63" * 32))
    session, follower = session_for(chain), ChainFollower(chain)
    watched = sha256(replaced_to)[::-1].hex()
    assert call(session, "blockchain.scripthash.subscribe", watched) is None
    first = spend_p2wpkh(coin, 50_000, [TxOut(45_000, replaced_to)], key=KEY2, sequence=0xFFFFFFFD)
    chain.broadcast(first)
    changes = follower.poll()
    assert changes is not None
    [sent] = [json.loads(m) for m in session.notifications(changes)]
    assert sent["params"][0] == watched and sent["params"][1] is not None
    assert call(session, "blockchain.scripthash.get_mempool", watched)[0]["tx_hash"] == first.txid[::-1].hex()
    chain.broadcast(spend_p2wpkh(coin, 50_000, [TxOut(40_000, SPK)], key=KEY2, sequence=0xFFFFFFFD))  # replaces it
    changes = follower.poll()
    assert changes is not None
    sent = [json.loads(m) for m in session.notifications(changes)]
    assert sent == [{"jsonrpc": "2.0", "method": "blockchain.scripthash.subscribe", "params": [watched, None]}]
    assert call(session, "blockchain.scripthash.get_history", watched) == []


def test_a_follower_behind_the_removal_journal_checks_every_subscription() -> None:
    chain = RegtestChain(":memory:", clock=None)
    follower = ChainFollower(chain)
    coins = [chain.fund(SPK2, 50_000) for _ in range(3)]
    follower.poll()
    for coin in coins:  # three removals journalled
        chain.broadcast(spend_p2wpkh(coin, 50_000, [TxOut(45_000, SPK)], key=KEY2, sequence=0xFFFFFFFD))
        chain.broadcast(spend_p2wpkh(coin, 50_000, [TxOut(40_000, SPK)], key=KEY2, sequence=0xFFFFFFFD))
    changes = follower.poll()
    assert changes is not None and changes.touched is not None and sha256(SPK) in changes.touched
    with chain._write():  # the journal trimmed past where a slow follower had read
        chain._db.execute("DELETE FROM history_removed WHERE seq < (SELECT MAX(seq) FROM history_removed)")
    lagging = ChainFollower(chain)
    lagging.cursor = dataclasses.replace(lagging.cursor, last_removed=0)
    chain.mine(1)
    changes = lagging.poll()
    assert changes is not None and changes.touched is None  # unknown: every subscription is checked again


@pytest.mark.parametrize(("refusal", "token"), [
    (replacement_error(1_000, 400, 100, [], 0, 1, [0]), "replacement-adds-unconfirmed"),
    (replacement_error(1_000, 400, 100, [(b"\x01" * 32, 2_000, 400)], 2_000, 1, []), "insufficient fee"),
    (replacement_error(2_050, 400, 100, [(b"\x01" * 32, 2_000, 600)], 2_000, 1, []), "insufficient fee"),
    (replacement_error(9_000, 400, 100, [(b"\x01" * 32, 2_000, 600)], 2_000, 101, []),
     "too many potential replacements"),
])
def test_every_bip125_refusal_carries_bitcoinds_reject_reason(refusal: str | None, token: str) -> None:
    """Electrum shows a server's refusal only when it holds one of bitcoind's reject reasons."""
    assert refusal is not None
    assert rejection(refusal).message == f"the transaction was rejected by network rules.\n\n{token} ({refusal})"
