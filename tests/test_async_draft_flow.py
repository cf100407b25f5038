"""Issue 14, Flow 2 (the draft spec, bolts#1149 / LDK) wired into the node: four in-process nodes over
loopback TCP on one regtest chain, A - LSP_a - LSP_b - B, the LSPs with real SQLite stores.

B (online earlier) has LSP_b keep a static invoice for its offer; A pays the offer while B is offline:
LSP_b answers with the static invoice, A pays it with ``hold_htlc`` set, LSP_a holds the HTLC and
sends ``held_htlc_available`` to B (kept in LSP_b's mailbox); B comes back and answers
``release_held_htlc``; LSP_a checks the token and forwards; B settles with A's preimage."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import httpx
import pytest

from lightspeed.asyncpay import draft_messages as dm
from lightspeed.asyncpay import messages as m
from lightspeed.asyncpay.policy import HoldLimits
from lightspeed.crypto.hashes import sha256
from lightspeed.errors import PaymentError
from lightspeed.node.async_draft import StaticInvoicePayment
from lightspeed.node.node import AsyncPaymentSucceeded, HtlcHeld, HtlcReleased, PaymentReceived
from lightspeed.node.onion_messenger import PATH_PADDING
from lightspeed.offers import Offer
from lightspeed.onion.message import create_reply_path
from tests.support.network import (
    Network,
    bring_online,
    create_network,
    next_event,
    take_offline,
    until,
)
from tests.test_wire14_flow import LINE, announce, make_lsp, restart_lsp, run

A, LSP_A, LSP_B, B = 0, 1, 2, 3
AMOUNT = 40_000_000


async def publish(net: Network) -> tuple[Offer, bytes]:
    """B has LSP_b keep a static invoice for a new offer of its own (B online, registered)."""
    payee = net.nodes[B]
    offer, static = await payee.async_draft.publish_static_invoice(net.nodes[LSP_B].node_id, "coffee", AMOUNT)
    return offer, static.to_bytes()


def mailbox(net: Network, lsp: object) -> int:
    return len(lsp.store.mailbox_peek(net.nodes[B].node_id, int(time.time())))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_static_invoice_paid_while_payee_offline_released_when_it_returns(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, _ = await publish(net)
            before = [net.balance_msat(i) for i in range(4)]
            await take_offline(net, B)

            payer = net.nodes[A]
            paying = asyncio.ensure_future(payer.offers.pay_offer(offer, timeout=60))
            held = await next_event(net.nodes[LSP_A], HtlcHeld, timeout=20)
            assert held.client_id == payer.node_id
            assert [h.payment_hash for h in lsp_a.book.held()] == [held.payment_hash]
            await until(lambda: mailbox(net, lsp_b) == 1)  # held_htlc_available waits for B at LSP_b
            paying.cancel()
            await take_offline(net, A)  # the payer goes away with its HTLC held

            await asyncio.sleep(1)
            payee = await bring_online(net, B)
            announce(net)
            released = await next_event(net.nodes[LSP_A], HtlcReleased, timeout=20)
            assert released.payment_hash == held.payment_hash
            assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(held.payment_hash, AMOUNT)
            assert mailbox(net, lsp_b) == 0

            payer = await bring_online(net, A)  # a new Node from A's store: AsyncPaymentSucceeded still comes
            succeeded = await next_event(payer, AsyncPaymentSucceeded, timeout=20)
            assert succeeded.payment_hash == held.payment_hash and sha256(succeeded.preimage) == held.payment_hash
            status = payer.payment_status(held.payment_hash)
            assert status is not None and status.status == "succeeded" and status.preimage == succeeded.preimage
            await until(lambda: net.balance_msat(B) == before[B] + AMOUNT)
            assert before[A] - net.balance_msat(A) >= AMOUNT
            await until(lambda: not lsp_a.store.held_htlcs())
            for node in net.nodes:
                assert node.closed_channels == {}
            await net.stop()

    run(scenario(), 90)


@pytest.mark.slow
def test_payee_online_releases_at_once_and_pay_offer_returns_the_preimage(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, _ = await publish(net)
            paid = await net.nodes[A].offers.pay_offer(offer, timeout=30)
            assert isinstance(paid, StaticInvoicePayment) and paid.amount_msat == AMOUNT
            assert sha256(paid.preimage) == paid.payment_hash
            assert await next_event(net.nodes[A], AsyncPaymentSucceeded) == AsyncPaymentSucceeded(
                paid.payment_hash, paid.preimage)
            assert (await next_event(net.nodes[LSP_A], HtlcReleased)).payment_hash == paid.payment_hash
            assert await next_event(net.nodes[B], PaymentReceived) == PaymentReceived(paid.payment_hash, AMOUNT)
            await net.stop()

    run(scenario())


@pytest.mark.slow
def test_payee_never_returns_htlc_failed_back_before_deadline_payer_whole(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(max_hold_seconds=3), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, _ = await publish(net)
            before = net.balance_msat(A)
            await take_offline(net, B)
            paying = asyncio.ensure_future(net.nodes[A].offers.pay_offer(offer, timeout=30))
            held = await next_event(net.nodes[LSP_A], HtlcHeld, timeout=20)
            with pytest.raises(PaymentError):
                await asyncio.wait_for(paying, 25)
            assert lsp_a.book.held() == []
            await until(lambda: net.balance_msat(A) == before)
            status = net.nodes[A].payment_status(held.payment_hash)
            assert status is not None and status.status == "failed"
            for node in net.nodes[:3]:
                assert node.closed_channels == {}
                assert all(not node.channel_is_closing(cid) for cid in node.channels)
            await net.stop()

    run(scenario())


@pytest.mark.slow
def test_forged_replayed_and_never_held_releases_are_refused_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, _ = await publish(net)
            await take_offline(net, B)  # B never answers: only the releases below reach LSP_a
            draft = net.nodes[LSP_A].async_draft
            paying = asyncio.ensure_future(net.nodes[A].offers.pay_offer(offer, timeout=40))
            held = await next_event(net.nodes[LSP_A], HtlcHeld, timeout=20)
            (wake,) = draft._wakes.values()
            assert wake.token is not None
            lsp_id = net.nodes[LSP_A].node_id
            sender = net.nodes[LSP_B]

            async def release(path_id: bytes) -> None:
                path = create_reply_path(os.urandom(32), [lsp_id], path_id, padding_to=PATH_PADDING)
                await sender.onion_messages.send(path, [(m.RELEASE_HELD_HTLC, b"")])

            forged = bytearray(wake.token)
            forged[-1] ^= 1
            await release(bytes(forged))  # MAC does not verify
            never = lsp_a.book.key.issue_token(os.urandom(32), os.urandom(16))  # valid MAC, nothing held under it
            await release(never)
            await until(lambda: draft.refused_releases == 2)
            assert len(lsp_a.book.held()) == 1 and not paying.done()
            await release(wake.token)  # the real token: released and forwarded (B offline: it fails back)
            assert (await next_event(net.nodes[LSP_A], HtlcReleased)).payment_hash == held.payment_hash
            await release(wake.token)  # replayed
            await until(lambda: draft.refused_releases == 3)
            messages = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
            assert any("MAC does not verify" in x for x in messages)
            assert any("no HTLC is held" in x for x in messages)
            assert any("replayed" in x for x in messages)
            paying.cancel()
            await net.stop()

    run(scenario())


@pytest.mark.slow
def test_lsp_a_restarted_while_holding_and_static_invoice_survives_lsp_b_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE, datadir=tmp_path)
            announce(net)
            db_a, db_b = tmp_path / "lsp_a.sqlite", tmp_path / "lsp_b.sqlite"
            make_lsp(net.nodes[LSP_A], db_a, HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], db_b, HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, static = await publish(net)
            await take_offline(net, B)
            _, lsp_b = await restart_lsp(net, LSP_B, db_b, client)  # the static invoice is on disk
            announce(net)
            assert [v for _, v in [lsp_b.store.static_invoice(s) or (b"", b"") for s in _slots(db_b)]] == [static]

            paying = asyncio.ensure_future(net.nodes[A].offers.pay_offer(offer, timeout=60))
            held = await next_event(net.nodes[LSP_A], HtlcHeld, timeout=20)  # LSP_b answered: a static invoice
            await until(lambda: mailbox(net, lsp_b) == 1)
            _, lsp_a = await restart_lsp(net, LSP_A, db_a, client)
            announce(net)
            assert [h.payment_hash for h in lsp_a.book.held()] == [held.payment_hash]
            await asyncio.sleep(1)  # A's channel reestablished: the HTLC is held again, not forwarded
            assert len(lsp_a.book.held()) == 1 and not paying.done()

            payee = await bring_online(net, B)
            announce(net)
            assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(held.payment_hash, AMOUNT)
            paid = await asyncio.wait_for(paying, 20)
            assert isinstance(paid, StaticInvoicePayment) and paid.payment_hash == held.payment_hash
            await net.stop()

    run(scenario(), 90)


def _slots(db: Path) -> list[bytes]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return [bytes(r[0]) for r in conn.execute("SELECT slot FROM async_static_invoices")]


@pytest.mark.slow
def test_mpp_parts_held_under_one_token_released_together(tmp_path: Path) -> None:
    big = 1_200_000_000  # more than either of A's two channels to LSP_a can carry: two parts
    channels = [(A, LSP_A, 1_000_000, 0), (A, LSP_A, 1_000_000, 0), (LSP_A, LSP_B, 2_000_000, 0),
                (LSP_B, B, 2_000_000, 0)]

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, channels)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, _ = await net.nodes[B].async_draft.publish_static_invoice(net.nodes[LSP_B].node_id, "big", big)
            await take_offline(net, B)
            paying = asyncio.ensure_future(net.nodes[A].offers.pay_offer(offer, timeout=60))
            await until(lambda: len(lsp_a.book.held()) == 2, timeout=20)
            parts = lsp_a.book.held()
            assert len({h.payment_hash for h in parts}) == 1 and len({h.release_tag for h in parts}) == 1
            assert sum(h.amount_msat for h in parts) >= big
            await until(lambda: mailbox(net, lsp_b) == 1)  # one held_htlc_available for the whole payment

            payee = await bring_online(net, B)
            announce(net)
            released = [await next_event(net.nodes[LSP_A], HtlcReleased, timeout=20) for _ in range(2)]
            assert sorted(r.amount_msat for r in released) == sorted(h.amount_msat for h in parts)
            assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(parts[0].payment_hash, big)
            paid = await asyncio.wait_for(paying, 20)
            assert isinstance(paid, StaticInvoicePayment) and paid.amount_msat == big
            await net.stop()

    run(scenario(), 90)


@pytest.mark.slow
def test_a_payment_held_while_forty_blocks_pass_is_still_accepted_by_the_payee(tmp_path: Path) -> None:
    """The held payment carries a CLTV buffer: released 40 blocks later it still meets B's final expiry."""
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, _ = await publish(net)
            await take_offline(net, B)
            paying = asyncio.ensure_future(net.nodes[A].offers.pay_offer(offer, timeout=60))
            held = await next_event(net.nodes[LSP_A], HtlcHeld, timeout=20)
            net.chain.mine(40)  # more than the 12-block offset a payment normally leaves the payee
            await asyncio.sleep(2)
            assert len(lsp_a.book.held()) == 1  # still far from its deadline
            payee = await bring_online(net, B)
            announce(net)
            assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(held.payment_hash, AMOUNT)
            paid = await asyncio.wait_for(paying, 20)
            assert isinstance(paid, StaticInvoicePayment)
            await net.stop()

    run(scenario(), 90)


@pytest.mark.slow
def test_payee_never_returns_htlc_failed_back_at_its_cltv_margin_no_force_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            offer, _ = await publish(net)
            before = net.balance_msat(A)
            await take_offline(net, B)
            paying = asyncio.ensure_future(net.nodes[A].offers.pay_offer(offer, timeout=60))
            await next_event(net.nodes[LSP_A], HtlcHeld, timeout=20)
            (record,) = lsp_a.book.held()
            fail_height = record.fail_height(lsp_a.book.limits)
            net.chain.mine(fail_height - 1 - net.chain.tip()[0])
            await asyncio.sleep(2)
            assert len(lsp_a.book.held()) == 1  # one block before the margin: still held
            net.chain.mine(1)
            with pytest.raises(PaymentError):
                await asyncio.wait_for(paying, 20)
            assert lsp_a.book.held() == []
            await until(lambda: net.balance_msat(A) == before)
            for node in net.nodes[:3]:
                assert node.closed_channels == {}
                assert all(not node.channel_is_closing(cid) for cid in node.channels)
            await net.stop()

    run(scenario(), 90)


@pytest.mark.slow
def test_lsp_refuses_a_static_invoice_filed_under_a_slot_its_offer_does_not_name(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            _, static = await publish(net)  # accepted: its offer's path to LSP_b names its slot
            other = os.urandom(32)
            request = dm.ServeStaticInvoice(other, static)  # anyone may have B's (public) static invoice
            with pytest.raises(TimeoutError):
                await net.nodes[A].onion_messages.request(net.nodes[LSP_B].node_id,
                                                          [(dm.SERVE_STATIC_INVOICE, request.to_bytes())], timeout=2)
            assert lsp_b.store.static_invoice(other) is None
            await net.stop()

    run(scenario())


@pytest.mark.slow
def test_lsp_keeps_held_paths_only_from_its_channel_peers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            draft = net.nodes[LSP_A].async_draft
            lsp_id = net.nodes[LSP_A].node_id
            path = create_reply_path(os.urandom(32), [net.nodes[LSP_B].node_id, net.nodes[B].node_id], os.urandom(32))
            for sender in (B, A):  # B has no channel with LSP_a (any key can sign: only peers count)
                request = dm.HoldHtlcPaths.sign(os.urandom(32), [path], net.nodes[sender].privkey)
                await net.nodes[sender].onion_messages.send(lsp_id, [(dm.HOLD_HTLC_PATHS, request.to_bytes())])
            await until(lambda: any(c == net.nodes[A].node_id for c, _ in draft._wakes))
            await asyncio.sleep(0.5)
            assert [c for c, _ in draft._wakes] == [net.nodes[A].node_id]
            await net.stop()

    run(scenario())
