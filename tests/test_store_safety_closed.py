"""Closed channels outlive restarts and force-closed funds are never invisible (issue 11, item 5).

Before: a closed channel was listed only until the process stopped (kept in memory), and the
balance of a force-closed channel showed nowhere for the 144 blocks of its delay: not in the
channels, not in ``balance``. Now the store keeps how each channel closed, and what our claims
will sweep to the wallet is listed, with the block height from which each may be mined.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.channel.htlc_log import Side
from lightspeed.node.node import Node
from lightspeed.store import SqliteStore
from tests.onchain_support import FUNDING_SAT, mine, mine_until, open_paid_channel

TOKEN = "c" * 32


async def _api(node: Node, method: str, path: str) -> Any:
    transport = httpx.ASGITransport(app=create_app(ApiContext(node, listen="127.0.0.1:0"), TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        answer = await client.request(method, path)
    return answer.status_code, answer.json()


def _restart(node: Node, tmp_path: Path, name: str, tag: int) -> Node:
    """The same node (as open_paid_channel made it, channel ``tag``) built again from its store alone."""
    node.store.close()
    key = bytes([tag + (name == "bob")]) * 32
    return Node(key, node.chain, b"%s wallet seed %d" % (name.encode(), tag), store=SqliteStore(tmp_path / f"{name}.sqlite"))


def test_a_mutually_closed_channel_is_listed_with_how_it_closed_after_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x81)
        ours = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        closing = await alice.close_channel(cid)
        await mine(chain, 1)
        await alice.stop()
        await bob.stop()
        alice = _restart(alice, tmp_path, "alice", 0x81)
        bob = _restart(bob, tmp_path, "bob", 0x81)
        for node, local, initiator in ((alice, ours, True), (bob, FUNDING_SAT * 1000 - ours, False)):
            status, listed = await _api(node, "GET", "/v1/channels")
            assert status == 200
            [closed] = listed["channels"]
            assert closed["channel_id"] == cid.hex() and closed["state"] == "closed"
            assert closed["close_type"] == "mutual" and closed["closing_txid"] == closing.txid_hex
            assert (closed["capacity_sat"], closed["initiator"], closed["local_balance_msat"]) == (
                FUNDING_SAT, initiator, local)
            assert closed["funding_txid"] == alice_funding(alice, cid) and closed["limbo_sat"] == 0
            status, again = await _api(node, "POST", f"/v1/channels/{cid.hex()}/force-close")
            assert status == 409 and "already closed" in again["error"]["reason"]  # not "no channel"

    asyncio.run(scenario())


def alice_funding(node: Node, cid: bytes) -> str:
    [record] = node.closed_channel_records()
    assert record.channel_id == cid and record.summary is not None
    return record.summary.funding_txid[::-1].hex()


def test_force_closed_funds_are_in_limbo_until_swept_with_their_maturity_height(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x83)
        to_self_delay = alice.channels[cid].config.local_to_self_delay  # set by Bob for our to_local
        commitment = await alice.force_close_channel(cid, "the operator closed it")
        _, balance = await _api(alice, "GET", "/v1/balance")
        [pending] = balance["limbo_sweeps"]  # our to_local, waiting for the commitment to confirm
        assert pending["channel_id"] == cid.hex() and pending["maturity_height"] is None
        assert balance["limbo_sat"] == pending["amount_sat"] > 0
        await mine(chain, 1)
        confirmed_at = chain.tip()[0]
        await alice.stop()
        alice = _restart(alice, tmp_path, "alice", 0x83)
        await alice.start()
        _, listed = await _api(alice, "GET", "/v1/channels")
        [closed] = listed["channels"]
        assert (closed["state"], closed["close_type"], closed["closing_txid"]) == ("closed", "local",
                                                                                   commitment.txid_hex)
        [sweep] = closed["limbo_sweeps"]
        assert sweep["maturity_height"] == confirmed_at + to_self_delay  # BIP 68: the to_self_delay after it
        assert closed["limbo_sat"] == sweep["amount_sat"] == pending["amount_sat"]
        _, balance = await _api(alice, "GET", "/v1/balance")
        assert balance["limbo_sat"] == sweep["amount_sat"]
        before = alice.wallet.balance_sat()
        await mine(chain, sweep["maturity_height"] - chain.tip()[0] - 2)
        _, balance = await _api(alice, "GET", "/v1/balance")
        assert (balance["limbo_sat"], balance["onchain_sat"]) == (sweep["amount_sat"], before)  # not yet
        # One block before maturity the sweep goes to the mempool: from limbo to the wallet's unconfirmed
        # balance, never both, never neither.
        await mine_until(chain, lambda: alice.wallet.balance_sat() > before, max_blocks=1)
        _, balance = await _api(alice, "GET", "/v1/balance")
        assert balance["limbo_sat"] == 0 and balance["limbo_sweeps"] == []
        assert balance["onchain_sat"] - before == sweep["amount_sat"]  # what limbo showed is what came
        assert chain.tip()[0] == sweep["maturity_height"] - 1
        await mine(chain, 1)
        _, balance = await _api(alice, "GET", "/v1/balance")
        assert balance["onchain_confirmed_sat"] - before == sweep["amount_sat"]
        _, listed = await _api(alice, "GET", "/v1/channels")
        assert [(c["state"], c["limbo_sat"]) for c in listed["channels"]] == [("closed", 0)]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_channels_closed_under_the_first_store_version_get_their_summary_at_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, alice, bob, cid = await open_paid_channel(tmp_path, 0x85)
        ours = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat
        await alice.force_close_channel(cid, "closed before the upgrade")
        await alice.stop()
        await bob.stop()
        assert isinstance(alice.store, SqliteStore)
        alice.store._db.execute("DELETE FROM closed_channels")  # what a version-1 store holds: no summary
        alice = _restart(alice, tmp_path, "alice", 0x85)
        [record] = alice.closed_channel_records()
        assert record.summary is not None and record.summary.kind == "local"
        assert (record.summary.local_balance_msat, record.summary.capacity_sat) == (ours, FUNDING_SAT)

    asyncio.run(scenario())
