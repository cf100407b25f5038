"""The synchronous node handle the lnprototest runner drives: a node on its own loop's thread,
reached over real BOLT 8 TCP by pyln-proto (the suite's transport) from blocking code."""

from __future__ import annotations

import asyncio
import time

import pytest
from pyln.proto.wire import PrivateKey, PublicKey
from pyln.proto.wire import connect as pyln_connect

from lightspeed.chain import RegtestChain
from lightspeed.codec.features import Features
from lightspeed.codec.messages import Init, decode_message, encode_message
from lightspeed.crypto.secp256k1 import pubkey_from_privkey
from lightspeed.errors import UsageError
from lightspeed.node.node import Node
from lightspeed.node.peer import DEFAULT_FEATURES
from lightspeed.testing.harness import NodeThread


def _node() -> Node:
    return Node(b"\x01".rjust(32, b"\x00"), RegtestChain(":memory:"), b"harness wallet seed 123")


def test_a_blocking_peer_talks_to_the_node_on_its_thread() -> None:
    thread = NodeThread()
    try:
        port = thread.start(_node)
        node = thread.node
        peer_key = b"\x02".rjust(32, b"\x00")
        conn = pyln_connect(PrivateKey(peer_key), PublicKey(node.node_id), "127.0.0.1", port)
        init = decode_message(conn.read_message())
        assert isinstance(init, Init) and init.all_features == DEFAULT_FEATURES
        conn.send_message(encode_message(Init(features=Features.of(required=["option_static_remotekey"]).to_bytes())))
        deadline = time.monotonic() + 10
        while len(thread.call(node.peer_ids)) == 0:  # the node serves while this thread waits
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert thread.call(node.peer_ids) == [pubkey_from_privkey(peer_key)]
        height = thread.call(lambda: node.chain.mine(3) and node.chain.tip()[0])
        assert height == 3
        conn.connection.close()
    finally:
        thread.close()
        thread.close()  # idempotent


def test_work_left_running_reports_its_failure() -> None:
    thread = NodeThread()
    try:
        thread.start(_node)

        async def fails() -> None:
            await asyncio.sleep(0.01)
            raise UsageError("no such channel")

        future = thread.submit("a doomed open", fails())
        with pytest.raises(UsageError):
            future.result(5)
        assert [(what, str(exc)) for what, exc in thread.failures] == [("a doomed open", "no such channel")]
        long = thread.submit("still running", asyncio.sleep(60))
    finally:
        thread.close()
    assert long.cancelled()  # closing cancels what is left, and that is no failure
    assert len(thread.failures) == 1
