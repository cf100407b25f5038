"""Channel keys are never reused, even by a node restored with an empty store (issue 11, item 3).

Before: the secrets of channel n came from a counter in the store, so a node with its
key but a new store started counting at 0 again and its next channel reused the first
channel's keys, whose old revocation secrets the first peer holds. Now every channel's
secrets come from a random id kept in its record, and a daemon whose datadir has a
``node_secret`` but no store refuses to start, pointing to recovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from lightspeed.api.datadir import SECRET_FILE
from lightspeed.chain import RegtestChain
from lightspeed.channel.state import LocalSecrets
from lightspeed.crypto.keys import per_commitment_point, secret_index
from lightspeed.node.keys import channel_seed, derive_channel_secrets
from lightspeed.node.node import Node
from lightspeed.store import STORE_FILE, SqliteStore, open_store

KEY = b"\x61" * 32
SEED = b"restored node wallet seed"


def _points(secrets: LocalSecrets) -> set[bytes]:
    """Every public value a peer learns from our secrets at opening (five basepoints, first point)."""
    first = per_commitment_point(secrets.per_commitment_seed, secret_index(0))
    return {*dataclasses.astuple(secrets.basepoints()), first}


def test_a_channel_opened_after_the_store_was_wiped_shares_no_key_with_the_first(tmp_path: Path) -> None:
    async def scenario() -> list[set[bytes]]:
        chain = RegtestChain(":memory:")
        peers = [Node(bytes([0x62 + i]) * 32, chain, b"peer wallet seed %d" % i,
                      store=SqliteStore(":memory:")) for i in range(2)]
        ports = [await p.start() for p in peers]
        seen: list[set[bytes]] = []
        for round_, (peer, port) in enumerate(zip(peers, ports, strict=True)):
            store = tmp_path / f"alice-{round_}"  # a new, empty store each round: the restore
            alice = Node(KEY, chain, SEED, store=open_store(store, fsync=False))
            chain.fund(alice.wallet.new_key().script_pubkey, 2_000_000)
            await alice.start()
            await alice.connect("127.0.0.1", port, peer.node_id)

            async def miner() -> None:
                while True:
                    await asyncio.sleep(0.05)
                    chain.mine(1)

            mining = asyncio.create_task(miner())
            try:
                cid = await asyncio.wait_for(alice.open_channel(peer.node_id, 500_000), 30)
            finally:
                mining.cancel()
            seen.append(_points(alice.channels[cid].secrets))
            # what the peer was told at opening is what it holds: the same keys
            assert peer.channels[cid].config.remote_basepoints.funding_pubkey in seen[-1]
            await alice.stop()
            alice.store.close()
        for peer in peers:
            await peer.stop()
        return seen

    first, second = asyncio.run(scenario())
    assert len(first) == len(second) == 6
    assert first.isdisjoint(second)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=4))
def test_no_two_channels_ever_share_a_basepoint_whatever_the_store_forgot(opens_between_wipes: list[int]) -> None:
    """Each element is how many channels a node opens before its store is wiped (a new, empty one)."""
    chain = RegtestChain(":memory:")
    points: list[bytes] = []
    for opens in opens_between_wipes:
        node = Node(KEY, chain, SEED, store=SqliteStore(":memory:"))
        for _ in range(opens):
            _, secrets = node._new_secrets()
            points.extend(_points(secrets))
        node.store.close()
    assert len(points) == len(set(points))


def test_records_of_earlier_versions_keep_their_counter_derived_keys() -> None:
    """Backward compatible: a stored key index below 2^64 derives exactly as before."""
    seed = channel_seed(KEY)
    old = [hmac.digest(seed, b"lightspeed/channel/" + (3).to_bytes(8, "big") + purpose, hashlib.sha256)
           for purpose in (b"funding", b"revocation", b"payment", b"delayed_payment", b"htlc",
                           b"per_commitment_seed")]
    assert derive_channel_secrets(seed, 3) == LocalSecrets(*old)
    node = Node(KEY, RegtestChain(":memory:"), SEED, store=SqliteStore(":memory:"))
    key_id, secrets = node._new_secrets()
    assert key_id >= 2**255 and secrets == derive_channel_secrets(seed, key_id)
    assert json.loads(json.dumps({"key_index": key_id}))["key_index"] == key_id  # exact in the JSON record


def _start(datadir: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "node", "start", "--datadir", str(datadir), "--listen",
         "127.0.0.1:0", "--api", "127.0.0.1:0", "--chain", str(datadir.parent / "chain.sqlite"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_a_daemon_with_the_node_secret_but_no_store_refuses_to_start_and_points_to_recovery(
        tmp_path: Path) -> None:
    datadir = tmp_path / "alice"
    datadir.mkdir(mode=0o700)
    (datadir / SECRET_FILE).write_bytes(os.urandom(32))
    for empty in (False, True):  # missing, then an empty file
        if empty:
            (datadir / STORE_FILE).write_bytes(b"")
        refused = _start(datadir)
        out, err = refused.communicate(timeout=60)
        assert refused.returncode == 1, err
        assert err.startswith("error: ") and "Traceback" not in err
        assert "node.sqlite is missing or empty" in err and "backup" in err and "--fresh-store" in err
        assert (datadir / STORE_FILE).exists() == empty  # nothing was created
        assert not (datadir / STORE_FILE).exists() or (datadir / STORE_FILE).stat().st_size == 0

    forced = _start(datadir, "--fresh-store")
    try:
        assert forced.stdout is not None
        ready = json.loads(forced.stdout.readline())
        assert len(ready["node_id"]) == 66 and (datadir / STORE_FILE).stat().st_size > 0
    finally:
        forced.terminate()
        _, err = forced.communicate(timeout=30)
    assert "--fresh-store" in err and "WARNING" in err
    again = _start(datadir)  # now it has a store: a plain start works
    try:
        assert again.stdout is not None and json.loads(again.stdout.readline())["node_id"] == ready["node_id"]
    finally:
        again.terminate()
        again.communicate(timeout=30)
