"""Operator commands over REST (issue 17) on real nodes: SQLite stores, BOLT 8 over loopback TCP, a
regtest chain; only the HTTP hop is in memory (httpx over ASGI)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lightspeed.api.app import create_app
from lightspeed.api.handlers import ApiContext
from lightspeed.bitcoin.address import address_to_script, segwit_address
from lightspeed.bitcoin.network import REGTEST
from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.crypto.hashes import sha256
from lightspeed.invoice import decode
from lightspeed.node.node import CLOSING_WEIGHT, Node
from lightspeed.node.queries import format_scid, parse_scid
from lightspeed.store import SqliteStore
from tests.onchain_support import FUNDING_SAT, mine, open_paid_channel, settle, wait_for

TOKEN = "o" * 32


@contextlib.asynccontextmanager
async def api(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    ctx = ApiContext(node, listen="127.0.0.1:9735")
    transport = httpx.ASGITransport(app=create_app(ctx, TOKEN))
    async with httpx.AsyncClient(transport=transport, base_url="http://node",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def refused(response: httpx.Response, status: int, field: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field, error
    reason: str = error["reason"]
    return reason


def test_short_channel_ids_read_both_ways() -> None:
    scid = 103 << 40 | 1 << 16 | 0
    assert format_scid(scid) == "103x1x0" and parse_scid("103x1x0") == scid == parse_scid(str(scid))
    assert parse_scid(f"{2**24 - 1}x{2**24 - 1}x{2**16 - 1}") == 2**64 - 1
    assert parse_scid(f"{2**24}x0x0") is None and parse_scid("1x2") is None and parse_scid(str(2**64)) is None


@pytest.mark.slow
def test_getinfo_peers_and_channels_show_what_an_operator_needs(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x51)
        async with api(alice) as a:
            await wait_for(lambda: alice.synced_tip == chain.tip())
            info = ok(await a.get("/v1/getinfo"))
            assert info["alias"] == alice.node_id[:6].hex() and info["color"] == "#" + alice.node_id[1:4].hex()
            assert info["uris"] == [f"{alice.node_id.hex()}@127.0.0.1:9735"]
            assert info["synced_to_chain"] is True
            assert (info["num_active_channels"], info["num_pending_channels"], info["num_inactive_channels"]) == (
                1, 0, 0)
            features = {f["name"]: f["required"] for f in info["features"]}
            assert features["payment_secret"] is True and features["basic_mpp"] is False

            (peer,) = ok(await a.get("/v1/peers"))["peers"]
            bob_port = alice.store.peers()[bob.node_id][1]  # the address Alice dialled
            assert peer["node_id"] == bob.node_id.hex() and peer["address"] == f"127.0.0.1:{bob_port}"
            assert peer["channels"] == [cid.hex()]
            assert {"var_onion_optin", "payment_secret"} <= {f["name"] for f in peer["features"]}

            (channel,) = ok(await a.get("/v1/channels"))["channels"]
            scid = alice.short_channel_id(cid)
            assert scid is not None and channel["short_channel_id"] == format_scid(scid)
            assert channel["active"] is True and channel["private"] is True  # not announced
            assert (channel["local_reserve_sat"], channel["remote_reserve_sat"]) == (10_000, 10_000)  # 1%
            spendable, receivable = channel["spendable_msat"], channel["receivable_msat"]
            assert spendable == alice.channels[cid].sendable_msat()
            # Alice (funder) keeps her reserve and the commitment fee; Bob keeps his reserve.
            assert 0 < spendable < channel["local_balance_msat"] - 10_000_000
            assert receivable == channel["remote_balance_msat"] - 10_000_000 == 240_000_000
            assert channel["anchors"] is alice.channels[cid].config.anchors
            assert channel["feerate_per_kw"] == 2_500 != 5_000  # the commitment's feerate, moved by update_fee:
            ok(await a.post(f"/v1/channels/{cid.hex()}/fee", json={"feerate_per_kw": 5_000}))
            await wait_for(lambda: alice.channels[cid].log.commitment(Side.LOCAL).feerate_per_kw == 5_000)
            assert ok(await a.get("/v1/channels"))["channels"][0]["feerate_per_kw"] == 5_000

            await bob.stop()
            await wait_for(lambda: not alice.peer_ids())
            info = ok(await a.get("/v1/getinfo"))
            assert (info["num_active_channels"], info["num_inactive_channels"]) == (0, 1)
            (channel,) = ok(await a.get("/v1/channels"))["channels"]
            assert (channel["active"], channel["spendable_msat"], channel["receivable_msat"]) == (False, 0, 0)
        await alice.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_force_closed_funds_wait_in_pendingchannels_and_the_close_outlives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x53)
        await bob.stop()
        async with api(alice) as a:
            closed = ok(await a.post(f"/v1/channels/{cid.hex()}/force-close"))
            pending = ok(await a.get("/v1/channels/pending"))
            (waiting,) = pending["pending_force_closing"]
            assert waiting["channel_id"] == cid.hex() and waiting["closing_txid"] == closed["closing_txid"]
            assert waiting["limbo_sat"] > 700_000 and pending["total_limbo_sat"] == waiting["limbo_sat"]
            assert [s["maturity_height"] for s in waiting["limbo_sweeps"]] == [None]  # commitment unconfirmed
            await mine(chain, 1)
            confirmed_at = chain.tip()[0]
            pending = ok(await a.get("/v1/channels/pending"))
            (sweep,) = pending["pending_force_closing"][0]["limbo_sweeps"]
            # BOLT 3: to_local is spendable after to_self_delay (144) blocks on the commitment.
            assert sweep["maturity_height"] == confirmed_at + 144
            assert sweep["blocks_til_maturity"] == 144 - (pending["block_height"] - confirmed_at)
            info = ok(await a.get("/v1/getinfo"))
            assert (info["num_active_channels"], info["num_pending_channels"]) == (0, 1)
            balance = ok(await a.get("/v1/balance"))
            assert balance["limbo_sat"] == pending["total_limbo_sat"]
            (listed,) = ok(await a.get("/v1/channels/closed"))["channels"]
            assert listed["channel_id"] == cid.hex() and listed["close_type"] == "local"
        await alice.stop()
        alice.store.close()

        again = Node(bytes([0x53]) * 32, chain, b"alice wallet seed %d" % 0x53,
                     store=SqliteStore(tmp_path / "alice.sqlite"))
        async with api(again) as a:
            (listed,) = ok(await a.get("/v1/channels/closed"))["channels"]
            assert listed["channel_id"] == cid.hex() and listed["closing_txid"] == closed["closing_txid"]
            (waiting,) = ok(await a.get("/v1/channels/pending"))["pending_force_closing"]
            assert waiting["limbo_sweeps"][0]["maturity_height"] == confirmed_at + 144

    asyncio.run(scenario())


@pytest.mark.slow
def test_keysend_amp_track_invoice_lookup_and_wait(tmp_path: Path) -> None:
    async def scenario() -> None:
        _chain, alice, bob, _cid = await open_paid_channel(tmp_path, 0x55)
        async with api(alice) as a, api(bob) as b:
            sent = ok(await a.post("/v1/keysend", json={"node_id": bob.node_id.hex(), "amount_msat": 7_000_000}))
            assert sent["status"] == "succeeded" and sha256(bytes.fromhex(sent["preimage"])).hex() == sent[
                "payment_hash"]
            tracked = ok(await a.get(f"/v1/payments/{sent['payment_hash']}/track", params={"timeout_s": "1"}))
            assert tracked["status"] == "succeeded" and tracked["amount_msat"] == 7_000_000
            amp = ok(await a.post("/v1/keysend", json={"node_id": bob.node_id.hex(), "amount_msat": 9_000_000,
                                                        "amp_parts": 3}))
            assert amp["status"] == "succeeded" and amp["amount_msat"] == 9_000_000
            refused(await a.get(f"/v1/payments/{'ab' * 32}/track"), 404, "payment_hash")
            assert "at most 3600" in refused(await a.get(f"/v1/payments/{'ab' * 32}/track",
                                                         params={"timeout_s": "3601"}), 400, "timeout_s")
            refused(await a.post("/v1/keysend", json={"node_id": alice.node_id.hex(), "amount_msat": 1}),
                    400, "node_id")

            created = ok(await b.post("/v1/invoices", json={"amount_msat": 4_000_000}), 201)
            payment_hash = created["payment_hash"]
            looked = ok(await b.get(f"/v1/invoices/{payment_hash}"))
            assert looked["status"] == "unpaid" and looked["invoice"] == created["invoice"]
            refused(await b.get(f"/v1/invoices/{'cd' * 32}"), 404, "payment_hash")
            loop = asyncio.get_running_loop()
            began = loop.time()
            unpaid = ok(await b.get(f"/v1/invoices/{payment_hash}/wait", params={"timeout_s": "1"}))
            assert unpaid["status"] == "unpaid" and loop.time() - began >= 1
            waiting = asyncio.ensure_future(b.get(f"/v1/invoices/{payment_hash}/wait", params={"timeout_s": "30"}))
            await asyncio.sleep(0.2)
            assert not waiting.done()
            ok(await a.post("/v1/payments", json={"invoice": created["invoice"]}))
            paid = ok(await asyncio.wait_for(waiting, 10))
            assert paid["status"] == "paid" and paid["received_msat"] == 4_000_000
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_disconnect_drops_a_peer_without_channels_and_refuses_one_with_channels() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, carol = (Node(sha256(b"ops17 " + n), chain, sha256(b"w " + n)) for n in (b"alice", b"carol"))
        await alice.start()
        port = await carol.start()
        async with api(alice) as a:
            ok(await a.post("/v1/peers", json={"node_id": carol.node_id.hex(), "host": "127.0.0.1", "port": port}))
            assert [p["node_id"] for p in ok(await a.get("/v1/peers"))["peers"]] == [carol.node_id.hex()]
            assert ok(await a.post(f"/v1/peers/{carol.node_id.hex()}/disconnect")) == {
                "node_id": carol.node_id.hex(), "connected": False}
            assert ok(await a.get("/v1/peers")) == {"peers": []}
            await wait_for(lambda: not carol.peer_ids())  # the other side saw the connection end
            refused(await a.post(f"/v1/peers/{carol.node_id.hex()}/disconnect"), 404, "node_id")
            assert "not a valid secp256k1 point" in refused(await a.post(f"/v1/peers/{'02' + 'ff' * 32}/disconnect"),
                                                             400, "node_id")
            # Not in a daemon: nothing to stop (the daemon test stops a real one).
            not_daemon = await a.post("/v1/stop")
            assert not_daemon.status_code == 409 and "daemon" in not_daemon.json()["error"]["reason"]
        await alice.stop()
        await carol.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_disconnect_is_refused_while_a_channel_is_open(tmp_path: Path) -> None:
    async def scenario() -> None:
        _chain, alice, bob, _cid = await open_paid_channel(tmp_path, 0x57)
        async with api(alice) as a:
            reason = refused(await a.post(f"/v1/peers/{bob.node_id.hex()}/disconnect"), 409, "node_id")
            assert "1 open channel" in reason
            assert bob.node_id in alice.peer_ids()
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


def test_an_open_channel_waits_in_pending_open_until_its_funding_is_deep_enough() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, bob = (Node(sha256(b"ops17p " + n), chain, sha256(b"wp " + n)) for n in (b"alice", b"bob"))
        chain.fund(alice.wallet.new_key().script_pubkey, 1_000_000)
        await alice.start()
        port = await bob.start()
        async with api(alice) as a:
            ok(await a.post("/v1/peers", json={"node_id": bob.node_id.hex(), "host": "127.0.0.1", "port": port}))
            opened = ok(await a.post("/v1/channels", json={"node_id": bob.node_id.hex(), "amount_sat": 500_000}), 201)
            pending = ok(await a.get("/v1/channels/pending"))
            assert [c["channel_id"] for c in pending["pending_open"]] == [opened["channel_id"]]
            assert pending["pending_open"][0]["short_channel_id"] is None
            assert ok(await a.get("/v1/getinfo"))["num_pending_channels"] == 1
            chain.mine(3)
            await wait_for(lambda: all(alice.channel_is_ready(c) for c in alice.channels))
            assert ok(await a.get("/v1/channels/pending"))["pending_open"] == []
            info = ok(await a.get("/v1/getinfo"))
            assert (info["num_active_channels"], info["num_pending_channels"]) == (1, 0)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_amountless_private_and_description_hash_invoices(tmp_path: Path) -> None:
    async def scenario() -> None:
        _chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x59)
        async with api(alice) as a, api(bob) as b:
            anything = ok(await b.post("/v1/invoices", json={"description": "tips"}), 201)
            assert anything["amount_msat"] is None and decode(anything["invoice"]).amount_msat is None
            reason = refused(await a.post("/v1/payments", json={"invoice": anything["invoice"]}), 400, "amount_msat")
            assert "names no amount" in reason
            paid = ok(await a.post("/v1/payments", json={"invoice": anything["invoice"], "amount_msat": 3_000_001}))
            assert paid["status"] == "succeeded" and paid["amount_msat"] == 3_000_001
            looked = ok(await b.get(f"/v1/invoices/{anything['payment_hash']}"))
            assert (looked["status"], looked["received_msat"]) == ("paid", 3_000_001)

            priced = ok(await b.post("/v1/invoices", json={"amount_msat": 1000}), 201)
            assert "differs from the invoice's own amount (1000 msat)" in refused(
                await a.post("/v1/payments", json={"invoice": priced["invoice"], "amount_msat": 999}),
                400, "amount_msat")

            terms = b"a long text of terms kept on a web page"
            hashed = ok(await b.post("/v1/invoices", json={"amount_msat": 5000,
                                                           "description_hash": sha256(terms).hex()}), 201)
            decoded = decode(hashed["invoice"])
            assert decoded.description is None and decoded.description_hash == sha256(terms)

            plain = decode(ok(await b.post("/v1/invoices", json={"amount_msat": 5000}), 201)["invoice"])
            private = decode(ok(await b.post("/v1/invoices", json={"amount_msat": 5000, "private": True}),
                                201)["invoice"])
            assert plain.route_hints == ()
            ((hop,),) = private.route_hints  # one hint: Alice's side of the unannounced channel
            assert hop.pubkey == alice.node_id and hop.short_channel_id == bob.short_channel_id(cid)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_close_pays_the_given_address_at_the_given_feerate(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x5B)
        await settle(alice, bob, cid)
        elsewhere = segwit_address(0, bytes(range(20)), REGTEST)  # a P2WPKH outside Alice's wallet
        async with api(alice) as a:
            taproot = segwit_address(1, bytes(32), REGTEST)
            assert "P2PKH, P2SH, P2WPKH or P2WSH" in refused(
                await a.post(f"/v1/channels/{cid.hex()}/close", json={"address": taproot}), 400, "address")
            assert "is not a regtest address" in refused(
                await a.post(f"/v1/channels/{cid.hex()}/close", json={"address": "bc1qnotanaddress"}),
                400, "address")
            assert refused(await a.post(f"/v1/channels/{cid.hex()}/close", json={"feerate_per_kw": 252}),
                           400, "feerate_per_kw") == "must be at least 253"
            local_sat = alice.channels[cid].log.commitment(Side.LOCAL).to_local_msat // 1000
            closed = ok(await a.post(f"/v1/channels/{cid.hex()}/close",
                                     json={"address": elsewhere, "feerate_per_kw": 800}))
        found = chain.get_transaction(bytes.fromhex(closed["closing_txid"])[::-1])
        assert found is not None
        closing = found[0]
        fee = CLOSING_WEIGHT * 800 // 1000 + 1
        assert FUNDING_SAT - sum(o.value_sat for o in closing.outputs) == fee  # the funder (Alice) pays it
        ours = [o for o in closing.outputs if o.script_pubkey == address_to_script(elsewhere, REGTEST)]
        assert [o.value_sat for o in ours] == [local_sat - fee]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())
