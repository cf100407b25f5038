"""SPV checks of what an Electrum server sends, and the client protocol's parsers (sans-IO, no network).

Real mainnet headers (tests/vectors/chain16_mainnet_headers.json: the genesis block and two
retarget boundaries) pin the proof-of-work and difficulty arithmetic to Bitcoin Core's; headers
mined here at regtest's target exercise the chain rules (links, retarget at 2016, checkpoint
pins, reorganisations by work); hypothesis feeds the parsers anything and expects ServerError.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.chain import electrum_client as ec
from lightspeed.chain.blocks import BlockHeader, merkle_branch, mine_header
from lightspeed.chain.electrum_client import ClientProtocol, ServerError
from lightspeed.chain.spv import (
    BITCOIN_PARAMS,
    REGTEST_PARAMS,
    ChainParams,
    Checkpoint,
    HeaderChain,
    HeaderError,
    WeakerBranch,
    retarget_bits,
    target_to_bits,
    verify_merkle,
)
from lightspeed.crypto.hashes import sha256d

VECTORS = Path(__file__).parent / "vectors" / "chain16_mainnet_headers.json"


def _vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())  # a missing file fails, never skips
    assert "chainparams.cpp" in data["source"]
    return data


def _header(entry: dict[str, Any]) -> BlockHeader:
    header = BlockHeader.parse(bytes.fromhex(entry["hex"]))
    assert header.hash[::-1].hex() == entry["hash"]
    return header


def test_mainnet_genesis_is_the_base_of_a_chain_without_checkpoint_and_a_changed_one_is_refused() -> None:
    genesis = bytes.fromhex(_vectors()["genesis"]["hex"])
    chain = HeaderChain(dataclasses.replace(BITCOIN_PARAMS, checkpoint=None))
    chain.set_base(genesis)
    assert chain.tip_height == 0 and chain.tip_hash == BITCOIN_PARAMS.genesis_hash
    tampered = genesis[:-1] + bytes([genesis[-1] ^ 1])  # another nonce: another hash, no proof of work
    with pytest.raises(HeaderError, match="checkpoint"):
        HeaderChain(dataclasses.replace(BITCOIN_PARAMS, checkpoint=None)).set_base(tampered)


@pytest.mark.parametrize("index", [0, 1])
def test_mainnet_retarget_boundaries_compute_the_bits_bitcoin_core_demanded(index: int) -> None:
    period = _vectors()["retargets"][index]
    first, last, following = (_header(period[k]) for k in ("first", "last", "next"))
    assert period["last"]["height"] - period["first"]["height"] == 2015
    assert following.prev_hash == last.hash and following.meets_target()
    assert last.bits != following.bits  # the difficulty did change there
    assert retarget_bits(BITCOIN_PARAMS, first, last) == following.bits
    # A period an hour longer than it was gives other bits: the time the period took counts.
    assert retarget_bits(BITCOIN_PARAMS, first, dataclasses.replace(last, time=last.time + 3600)) != following.bits


def test_target_to_bits_round_trips_the_limits() -> None:
    assert target_to_bits(BITCOIN_PARAMS.pow_limit) == 0x1D00FFFF
    assert target_to_bits(REGTEST_PARAMS.pow_limit) == 0x207FFFFF
    assert target_to_bits(0x80) == 0x02008000  # the sign bit is shifted out, never set


# -- chains mined here -------------------------------------------------------------------------------

def _mine(prev: BlockHeader, count: int, bits: int = 0x207FFFFF, spacing: int = 600, salt: int = 0) -> list[BlockHeader]:
    out = []
    for i in range(count):
        prev = mine_header(prev.hash, [sha256d(bytes([salt]) + i.to_bytes(4, "big"))], prev.time + spacing, bits=bits)
        out.append(prev)
    return out


GENESIS = BlockHeader(1, bytes(32), bytes(32), 1_600_000_000, 0x207FFFFF, 0)
while not GENESIS.meets_target():
    GENESIS = dataclasses.replace(GENESIS, nonce=GENESIS.nonce + 1)
RETARGETING = ChainParams("test", GENESIS.hash, REGTEST_PARAMS.pow_limit, retargets=True, min_difficulty_blocks=False)


def _raw(headers: list[BlockHeader]) -> list[bytes]:
    return [h.serialize() for h in headers]


def test_headers_must_link_and_carry_their_proof_of_work() -> None:
    chain = HeaderChain(dataclasses.replace(REGTEST_PARAMS, genesis_hash=GENESIS.hash))
    chain.set_base(GENESIS.serialize())
    headers = _mine(GENESIS, 3)
    unlinked = dataclasses.replace(headers[1], prev_hash=bytes(32))
    with pytest.raises(HeaderError, match="does not link"):
        chain.connect(1, _raw([headers[0], unlinked]))
    assert chain.tip_height == 0  # nothing of a refused batch is kept
    no_work = headers[0]
    while no_work.meets_target():
        no_work = dataclasses.replace(no_work, nonce=no_work.nonce + 1)
    with pytest.raises(HeaderError, match="proof of work"):
        chain.connect(1, _raw([no_work]))
    assert chain.connect(1, _raw(headers)).changed_from == 1 and chain.tip_height == 3


def test_regtest_keeps_its_minimal_difficulty() -> None:
    chain = HeaderChain(dataclasses.replace(REGTEST_PARAMS, genesis_hash=GENESIS.hash))
    chain.set_base(GENESIS.serialize())
    harder = _mine(GENESIS, 1, bits=0x2000FFFF)  # valid proof of work, but not the bits regtest demands
    with pytest.raises(HeaderError, match="demand 0x207fffff"):
        chain.connect(1, _raw(harder))


def test_the_retarget_at_block_2016_must_claim_exactly_the_computed_bits() -> None:
    chain = HeaderChain(RETARGETING)
    chain.set_base(GENESIS.serialize())
    period = _mine(GENESIS, 2015, spacing=300)  # twice as fast as planned: the target halves
    chain.connect(1, _raw(period))
    expected = retarget_bits(RETARGETING, GENESIS, period[-1])
    assert expected != 0x207FFFFF
    wrong = _mine(period[-1], 1, bits=expected + 1)
    with pytest.raises(HeaderError, match="difficulty rules"):
        chain.connect(2016, _raw(wrong))
    stale = _mine(period[-1], 1, bits=period[-1].bits)  # not retargeting at all
    with pytest.raises(HeaderError, match="difficulty rules"):
        chain.connect(2016, _raw(stale))
    chain.connect(2016, _raw(_mine(period[-1], 1, bits=expected)))
    assert chain.tip_height == 2016


def test_a_checkpoint_pins_the_next_period_and_nothing_below_it_can_change() -> None:
    headers = _mine(GENESIS, 12)
    pinned = Checkpoint(2, headers[1].hash, 10, headers[9].hash)
    params = dataclasses.replace(REGTEST_PARAMS, genesis_hash=GENESIS.hash, checkpoint=pinned)
    chain = HeaderChain(params)
    with pytest.raises(HeaderError, match="checkpoint"):
        chain.set_base(headers[2].serialize())
    chain.set_base(headers[1].serialize())
    impostor = _mine(headers[1], 8, salt=9)  # a valid chain that misses the pinned block 10
    with pytest.raises(HeaderError, match="checkpoint says"):
        chain.connect(3, _raw(impostor))
    chain.connect(3, _raw(headers[2:]))
    assert chain.tip_height == 12
    with pytest.raises(HeaderError, match="checkpointed chain"):
        chain.connect(1, _raw(_mine(GENESIS, 3, salt=5)))


def test_a_branch_replaces_ours_only_with_more_work() -> None:
    chain = HeaderChain(dataclasses.replace(REGTEST_PARAMS, genesis_hash=GENESIS.hash))
    chain.set_base(GENESIS.serialize())
    ours = _mine(GENESIS, 5)
    chain.connect(1, _raw(ours))
    same_work = _mine(ours[2], 2, salt=7)  # blocks 4 and 5 again, other ones
    with pytest.raises(WeakerBranch):
        chain.connect(4, _raw(same_work))
    assert chain.tip_hash == ours[-1].hash
    heavier = _mine(ours[2], 3, salt=7)  # one block more: more work
    changed = chain.connect(4, _raw(heavier))
    assert (changed.changed_from, changed.reorg) == (4, True)
    assert chain.tip_height == 6 and chain.block_hash(3) == ours[2].hash and chain.block_hash(4) == heavier[0].hash


def test_merkle_branches_prove_a_transaction_or_are_refused() -> None:
    txids = [sha256d(bytes([i])) for i in range(5)]
    branch, root = merkle_branch(txids, 3)
    header = BlockHeader(1, bytes(32), root, 0, 0x207FFFFF, 0)
    verify_merkle(txids[3], 3, branch, header, tx_size=200)
    with pytest.raises(HeaderError, match="merkle root"):
        verify_merkle(txids[3], 2, branch, header, tx_size=200)  # the right branch at the wrong place
    with pytest.raises(HeaderError, match="merkle root"):
        verify_merkle(txids[3], 3, [branch[0], sha256d(b"x"), branch[2]], header, tx_size=200)
    with pytest.raises(HeaderError, match="64-byte"):
        verify_merkle(txids[3], 3, branch, header, tx_size=64)
    with pytest.raises(HeaderError, match="does not fit"):
        verify_merkle(txids[3], 8, branch, header, tx_size=200)


# -- the client protocol's parsers -------------------------------------------------------------------

def test_replies_are_paired_with_requests_and_errors_are_refusals() -> None:
    protocol = ClientProtocol()
    first, line = protocol.request("server.version", ["lightspeed", "1.4"])
    assert json.loads(line) == {"jsonrpc": "2.0", "id": first, "method": "server.version",
                                "params": ["lightspeed", "1.4"]}
    second, _ = protocol.request("blockchain.transaction.broadcast", ["00"])
    data = (json.dumps({"id": second, "error": {"code": 2, "message": "bad-txns"}}) + "\n"
            + json.dumps({"method": "blockchain.headers.subscribe", "params": [{}]}) + "\n"
            + json.dumps({"id": first, "result": ["x", "1.4"]})).encode()
    messages = protocol.receive(data[:30]) + protocol.receive(data[30:] + b"\n")
    assert isinstance(messages[0], ec.Reply) and messages[0].error is not None
    assert messages[0].error.message == "bad-txns"
    assert isinstance(messages[1], ec.Notification)
    assert isinstance(messages[2], ec.Reply) and ec.parse_version(messages[2].result) == "x"
    with pytest.raises(ServerError, match="no request of ours"):
        protocol.receive(json.dumps({"id": first, "result": 1}).encode() + b"\n")  # answered already


def test_fee_rates_are_read_as_decimals_with_a_floor() -> None:
    assert ec.parse_feerate(Decimal("0.0002")) == 5000  # 20000 sat/kvB = 5000 sat/kw
    assert ec.parse_feerate(Decimal("0.00000001")) == ec.MIN_FEERATE_PER_KW
    assert ec.parse_feerate(-1) is None
    with pytest.raises(ServerError):
        ec.parse_feerate("0.0002")


def test_a_history_must_hash_to_its_status() -> None:
    items = ec.parse_history([{"tx_hash": "11" * 32, "height": 5}, {"tx_hash": "22" * 32, "height": 0, "fee": 3}])
    expected = hashlib.sha256(f"{'11' * 32}:5:{'22' * 32}:0:".encode()).hexdigest()
    assert ec.history_status(items) == expected and ec.history_status([]) is None
    with pytest.raises(ServerError, match="twice"):
        ec.parse_history([{"tx_hash": "11" * 32, "height": 5}, {"tx_hash": "11" * 32, "height": 5}])


def test_server_addresses() -> None:
    assert ec.parse_server("electrum.example:50002:s") == ("electrum.example", 50002, True)
    assert ec.parse_server("[::1]:50001:t") == ("::1", 50001, False)
    for bad in ("host:50001", "host:x:t", "host:70000:s", ":1:t"):
        with pytest.raises(ValueError, match="HOST:PORT:s"):
            ec.parse_server(bad)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70) | st.decimals()
    | st.sampled_from(["00" * 80, "11" * 32, "zz", "", "00" * 81]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["height", "hex", "count", "headers", "tx_hash", "merkle", "pos", "block_height",
                         "genesis_hash", "success", "errors", "code", "message"]), inner, max_size=5),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(JSON, st.integers(0, 3000))
def test_every_answer_parser_raises_only_server_error(value: Any, asked: int) -> None:
    parsers = [ec.parse_version, ec.parse_genesis, ec.parse_tip, lambda v: ec.parse_headers(v, asked),
               ec.parse_history, ec.parse_merkle, lambda v: ec.parse_transaction(v, bytes(32)),
               lambda v: ec.parse_txid(v, bytes(32)), ec.parse_feerate, ec.parse_package_result,
               ec.parse_id_from_pos, ec.parse_header_hex, lambda v: ec.parse_status(v, "status"),
               lambda v: ec.parse_scripthash_notification(v if isinstance(v, list) else [v])]
    for parse in parsers:
        with contextlib.suppress(ServerError):
            parse(value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 50))
def test_arbitrary_bytes_from_a_server_raise_only_server_error(data: bytes, cut: int) -> None:
    protocol = ClientProtocol()
    protocol.request("server.ping")
    for chunk in (data[:cut], data[cut:] + b"\n"):
        try:
            protocol.receive(chunk)
        except ServerError:
            return


def test_a_header_more_than_two_hours_ahead_of_now_is_refused() -> None:
    chain = HeaderChain(dataclasses.replace(REGTEST_PARAMS, genesis_hash=GENESIS.hash))
    chain.set_base(GENESIS.serialize())
    [header] = _mine(GENESIS, 1)
    with pytest.raises(HeaderError, match="two hours"):
        chain.connect(1, _raw([header]), now=header.time - 7201)
    assert chain.connect(1, _raw([header]), now=header.time - 7200).changed_from == 1
