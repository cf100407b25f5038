"""update_fee and hold invoices through the REST API, on two real nodes over TCP (the commands Electrum tests need)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx

from lightspeed.bitcoin.address import address_to_script
from lightspeed.bitcoin.network import REGTEST
from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.crypto.hashes import sha256
from lightspeed.node.node import HtlcHeld
from tests.test_api import api, error, make_node, run


async def _open(chain: RegtestChain, a: httpx.AsyncClient, b: httpx.AsyncClient, bob_id: bytes,
                bob_port: int) -> str:
    address = (await a.post("/v1/addresses")).json()["address"]
    chain.fund(address_to_script(address, REGTEST), 1_500_000)
    await a.post("/v1/peers", json={"node_id": bob_id.hex(), "host": "127.0.0.1", "port": bob_port})
    opened = await a.post("/v1/channels", json={"node_id": bob_id.hex(), "amount_sat": 500_000})
    assert opened.status_code == 201, opened.text
    chain.mine(3)
    for _ in range(300):
        states = [(await c.get("/v1/channels")).json()["channels"][0]["state"] for c in (a, b)]
        if states == ["normal", "normal"]:
            break
        await asyncio.sleep(0.02)
    assert states == ["normal", "normal"]
    channel_id: str = opened.json()["channel_id"]
    return channel_id


async def _until(check: Any) -> None:
    for _ in range(300):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_the_funder_updates_the_fee_and_both_commitments_follow() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, bob = make_node(chain, b"fee-a"), make_node(chain, b"fee-b")
        bob_port = await bob.start()
        async with api(alice) as a, api(bob) as b:
            channel_id = await _open(chain, a, b, bob.node_id, bob_port)
            cid = bytes.fromhex(channel_id)
            updated = await a.post(f"/v1/channels/{channel_id}/fee", json={"feerate_per_kw": 7_500})
            assert updated.status_code == 200, updated.text
            await _until(lambda: all(n.channels[cid].log.commitment(side).feerate_per_kw == 7_500
                                     for n in (alice, bob) for side in Side))
            assert alice.channels[cid].commitment(Side.LOCAL).tx == bob.channels[cid].commitment(Side.REMOTE).tx
            not_funder = await b.post(f"/v1/channels/{channel_id}/fee", json={"feerate_per_kw": 5_000})
            assert not_funder.status_code == 409 and "funder" in error(not_funder)["reason"]
            too_low = await a.post(f"/v1/channels/{channel_id}/fee", json={"feerate_per_kw": 252})
            assert too_low.status_code == 400 and error(too_low)["field"] == "feerate_per_kw"
            unknown = await a.post(f"/v1/channels/{'00' * 32}/fee", json={"feerate_per_kw": 5_000})
            assert unknown.status_code == 404 and error(unknown)["field"] == "channel_id"
        await alice.stop()
        await bob.stop()

    run(scenario)


def test_a_hold_invoice_waits_for_settle_or_cancel() -> None:
    async def scenario() -> None:
        chain = RegtestChain(":memory:")
        alice, bob = make_node(chain, b"hold-a"), make_node(chain, b"hold-b")
        bob_port = await bob.start()
        async with api(alice) as a, api(bob) as b:
            await _open(chain, a, b, bob.node_id, bob_port)
            preimage = os.urandom(32)
            payment_hash = sha256(preimage).hex()
            created = await b.post("/v1/invoices", json={"amount_msat": 5_000_000, "payment_hash": payment_hash})
            assert created.status_code == 201 and created.json()["payment_hash"] == payment_hash
            twice = await b.post("/v1/invoices", json={"amount_msat": 5_000_000, "payment_hash": payment_hash})
            assert twice.status_code == 409 and error(twice)["field"] == "payment_hash"
            paying = asyncio.create_task(a.post("/v1/payments", json={"invoice": created.json()["invoice"]}))
            await asyncio.sleep(0.5)
            assert not paying.done()  # held: neither settled nor failed
            wrong = await b.post(f"/v1/invoices/{payment_hash}/settle", json={"preimage": "11" * 32})
            assert wrong.status_code == 400 and error(wrong)["field"] == "preimage"
            settled = await b.post(f"/v1/invoices/{payment_hash}/settle", json={"preimage": preimage.hex()})
            assert settled.status_code == 200, settled.text
            paid = await paying
            assert paid.json()["status"] == "succeeded" and paid.json()["preimage"] == preimage.hex()
            assert (await b.get("/v1/invoices")).json()["invoices"][0]["status"] == "paid"

            other = sha256(b"cancel me").hex()
            held = await b.post("/v1/invoices", json={"amount_msat": 1_000_000, "payment_hash": other})
            events = bob.events()  # subscribed before the payment starts
            paying = asyncio.create_task(a.post("/v1/payments", json={"invoice": held.json()["invoice"],
                                                                        "timeout_s": 20}))
            while not isinstance(await anext(events), HtlcHeld):  # the payment arrived and is held
                pass
            cancelled = await b.post(f"/v1/invoices/{other}/cancel")
            assert cancelled.status_code == 200, cancelled.text
            failed = await paying
            assert failed.status_code == 409 and error(failed)["field"] == "invoice"
            nothing = await b.post(f"/v1/invoices/{other}/cancel")
            assert nothing.status_code == 409 and error(nothing)["field"] == "payment_hash"
        await alice.stop()
        await bob.stop()

    run(scenario)
