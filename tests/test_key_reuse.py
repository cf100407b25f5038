"""Channel keys are never handed out twice for one node key, even after the store is lost (issue 11, item 3)."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.crypto.hashes import sha256
from lightspeed.node.keys import (
    LEGACY_INDEX_LIMIT,
    channel_seed,
    derive_channel_secrets,
    new_key_id,
)
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.test_daemon import PYTHON, Daemon, call, lightspeed


def _basepoints(node: Node) -> set[bytes]:
    _, secrets = node._new_secrets()
    return set(dataclasses.astuple(secrets.basepoints()))


def test_a_node_on_a_wiped_store_never_derives_its_earlier_channel_keys(tmp_path: Path) -> None:
    key, chain = sha256(b"restored node"), RegtestChain(":memory:")
    first = Node(key, chain, key, store=SqliteStore(tmp_path / "first.sqlite"))
    before = set().union(*(_basepoints(first) for _ in range(5)))
    # The same node key on an empty store: its counter starts at 0 again (this used to give
    # the very same basepoints, whose revocation secrets the first channels' peers hold).
    again = Node(key, chain, key, store=SqliteStore(tmp_path / "again.sqlite"))
    after = set().union(*(_basepoints(again) for _ in range(5)))
    assert len(before) == len(after) == 25
    assert not before & after


def test_new_ids_are_random_and_never_in_the_range_of_the_old_counters() -> None:
    ids = {new_key_id() for _ in range(1000)}
    assert len(ids) == 1000 and min(ids) >= 2**255 >= LEGACY_INDEX_LIMIT


def test_channels_stored_by_earlier_versions_derive_as_before() -> None:
    # Counter-only indexes (< 2^64) keep their 8-byte encoding: a stored channel loads its own keys.
    seed = channel_seed(bytes([7]) * 32)
    import hashlib
    import hmac

    expected = hmac.digest(seed, b"lightspeed/channel/" + (3).to_bytes(8, "big") + b"funding", hashlib.sha256)
    assert derive_channel_secrets(seed, 3).funding == expected


@pytest.mark.slow
def test_a_datadir_with_its_key_but_without_its_store_does_not_start(tmp_path: Path) -> None:
    chain, datadir = tmp_path / "chain.sqlite", tmp_path / "alice"
    daemon = Daemon(datadir, chain)
    node_id = daemon.ready["node_id"]
    call(datadir, "getinfo")
    daemon.stop()
    for damaged in ("missing", "empty"):
        store = datadir / "node.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        if damaged == "empty":
            store.write_bytes(b"")
        result = subprocess.run([PYTHON, "-m", "lightspeed", "node", "start", "--datadir", str(datadir),
                                 "--listen", "127.0.0.1:0", "--chain", str(chain)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 1, result.stderr
        assert "node secret (wallet_mnemonic)" in result.stderr and "--new-store" in result.stderr and "Traceback" not in result.stderr
    daemon = Daemon(datadir, chain, "127.0.0.1:0", "--new-store")  # the operator's explicit decision
    assert daemon.ready["node_id"] == node_id
    assert lightspeed(datadir, "channels").returncode == 0
    daemon.stop()
