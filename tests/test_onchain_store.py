"""The store keeps what an on-chain resolution needs: the closed channel and the resolver's record."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightspeed.errors import UsageError
from lightspeed.store import SqliteStore


def test_a_closed_channel_stays_loadable_and_resolutions_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "node.sqlite"
    store = SqliteStore(path)
    cid, peer = b"\x01" * 32, b"\x02" * 33
    with store.transaction():
        store.put_channel(cid, peer, b'{"state": 1}', True)
        store.add_remote_commitment(cid, 4, b"record 4")
        store.close_channel(cid, b"\x03" * 32)
        store.put_resolution(cid, b'{"kind": "local"}')
    with pytest.raises(UsageError):
        store.put_resolution(cid, b"outside a transaction")
    store.close()
    store = SqliteStore(path)
    assert store.channels() == []  # closed: not resumed as an open channel
    stored = store.channel(cid)
    assert stored is not None and stored.state == b'{"state": 1}' and stored.remote_commitments == {4: b"record 4"}
    assert store.channel(b"\x09" * 32) is None
    assert store.resolutions() == {cid: b'{"kind": "local"}'}
    with store.transaction():
        store.put_resolution(cid, b'{"kind": "local", "done": true}')
    assert store.resolutions()[cid] == b'{"kind": "local", "done": true}'
    store.close()
