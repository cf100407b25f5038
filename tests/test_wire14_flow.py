"""Issue 14, Flow 1 (LightningRod) wired into the node: four in-process nodes over loopback TCP on one
regtest chain, A - LSP_a - LSP_b - B, the LSPs with real SQLite hold stores and webhooks POSTed to a
real HTTP receiver. A pays B (offline) and goes offline; B comes back, collects the notice from
LSP_b's mailbox and unblocks; LSP_a releases, B is paid; A comes back and its payment succeeded."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from lightspeed.asyncpay import messages as m
from lightspeed.asyncpay.lsps5 import ONION_MESSAGE_INCOMING, PAYMENT_INCOMING
from lightspeed.asyncpay.policy import HoldLimits
from lightspeed.codec.features import Features
from lightspeed.errors import PaymentError
from lightspeed.gossip.store import NodeRecord
from lightspeed.invoice import verify_payment_proof
from lightspeed.node.async_lsp import AsyncLsp, release_key_for
from lightspeed.node.async_runtime import unblock_path
from lightspeed.node.node import (
    AsyncPaymentSucceeded,
    HtlcHeld,
    HtlcReleased,
    Node,
    PaymentReceived,
)
from lightspeed.node.webhooks import Backoff, WebhookNotifier
from lightspeed.onion.blinding import EncryptedDataTlv, create_blinded_path
from lightspeed.store.asyncpay import AsyncPayStore
from tests.support.network import (
    Network,
    _make_node,
    _store,
    bring_online,
    create_network,
    next_event,
    take_offline,
    until,
)
from tests.test_async14_webhooks import Receiver, serve

SAT = 1_000_000
A, LSP_A, LSP_B, B = 0, 1, 2, 3
LINE = [(A, LSP_A, SAT, 0), (LSP_A, LSP_B, SAT, 0), (LSP_B, B, SAT, 0)]
AMOUNT = 50_000_000


def announce(net: Network) -> None:
    """Every node learns every other's node_announcement features (what gossip would tell)."""
    for node in net.nodes:
        store = node.gossip.gossiper.view.store
        for other in net.nodes:
            features: Features = other.features
            store.put_node(NodeRecord(other.node_id, 1, features.for_context("N").to_bytes(), b"", b"\0\0\0",
                                      (), True, b""))


def make_lsp(node: Node, db: Path, limits: HoldLimits, client: httpx.AsyncClient) -> AsyncLsp:
    store = AsyncPayStore(db)
    notifier = WebhookNotifier(store, node.privkey, client, Backoff(initial_seconds=0.1, factor=2.0,
                                                                   max_attempts=6))
    lsp = AsyncLsp(store, limits, release_key_for(node.privkey), notifier)
    node.async_lsp = lsp
    return lsp


def methods(receiver: Receiver) -> list[str]:
    return [json.loads(body)["method"] for _, _, body in receiver.calls]


def run(scenario: object, timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(scenario, timeout))  # type: ignore[arg-type]


@pytest.mark.slow
def test_payee_offline_payer_offline_paid_when_payee_returns_then_payer_sees_success(tmp_path: Path) -> None:
    hooks_a, hooks_b = Receiver(fail_first=0), Receiver(fail_first=2)  # B's receiver fails twice first
    with serve(hooks_a) as url_a, serve(hooks_b) as url_b:
        async def scenario() -> None:
            async with httpx.AsyncClient(timeout=5) as client:
                net = await create_network(4, LINE)
                announce(net)
                lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
                lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
                lsp_a.store.register(net.nodes[A].node_id, url_a, 0)
                lsp_b.store.register(net.nodes[B].node_id, url_b, 0)
                before = [net.balance_msat(i) for i in range(4)]
                invoice = net.nodes[B].create_invoice(AMOUNT, "async")
                await take_offline(net, B)

                payer = net.nodes[A]
                payment = await payer.asyncpay.pay_async(invoice, net.nodes[LSP_A].node_id)
                held = await next_event(net.nodes[LSP_A], HtlcHeld)
                assert held == HtlcHeld(invoice.payment_hash, held.amount_msat, payer.node_id)
                assert [h.payment_hash for h in lsp_a.book.held()] == [invoice.payment_hash]
                await until(lambda: len(lsp_b.store.mailbox_peek(net.nodes[B].node_id, int(time.time()))) == 1)
                await until(lambda: methods(hooks_b).count(ONION_MESSAGE_INCOMING) == 3)  # 503, 503, 200
                payment.task.cancel()
                await take_offline(net, A)  # the payer goes away with its HTLC held

                await asyncio.sleep(2)  # B is away for a while (2 s here: nothing in the flow waits on it)
                payee = await bring_online(net, B)
                announce(net)
                released = await next_event(net.nodes[LSP_A], HtlcReleased, timeout=20)
                assert released.payment_hash == invoice.payment_hash
                received = await next_event(payee, PaymentReceived, timeout=20)
                assert received == PaymentReceived(invoice.payment_hash, AMOUNT)
                assert lsp_b.store.mailbox_peek(payee.node_id, int(time.time())) == []  # delivered and acknowledged
                await until(lambda: PAYMENT_INCOMING in methods(hooks_a))  # LSP_a wakes A
                assert lsp_a.book.held() == []

                payer = await bring_online(net, A)
                await until(lambda: (s := payer.payment_status(invoice.payment_hash)) is not None
                            and s.status == "succeeded", timeout=20)
                status = payer.payment_status(invoice.payment_hash)
                assert status is not None and status.preimage is not None
                assert verify_payment_proof(invoice, status.preimage)
                await until(lambda: net.balance_msat(B) == before[B] + AMOUNT)
                assert before[A] - net.balance_msat(A) >= AMOUNT
                await until(lambda: not lsp_a.store.held_htlcs())  # resolved upstream: forgotten
                for node in net.nodes:
                    assert node.closed_channels == {}
                await net.stop()

        run(scenario())


@pytest.mark.slow
def test_payee_never_returns_htlc_failed_back_before_deadline_payer_whole(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            limits = HoldLimits(max_hold_seconds=3)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", limits, client)
            make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_a.store.register(net.nodes[A].node_id, None, 0)
            before = net.balance_msat(A)
            invoice = net.nodes[B].create_invoice(AMOUNT, "never")
            await take_offline(net, B)
            payment = await net.nodes[A].asyncpay.pay_async(invoice, net.nodes[LSP_A].node_id, timeout=30)
            await next_event(net.nodes[LSP_A], HtlcHeld)
            with pytest.raises(PaymentError):
                await asyncio.wait_for(payment.task, 20)
            assert lsp_a.book.held() == []
            await until(lambda: net.balance_msat(A) == before)  # the HTLC is gone: A is whole
            status = net.nodes[A].payment_status(invoice.payment_hash)
            assert status is not None and status.status == "failed"
            for node in net.nodes[:3]:
                assert node.closed_channels == {}  # failed back off chain: nobody force closed
                assert all(not node.channel_is_closing(cid) for cid in node.channels)
            await net.stop()

    run(scenario())


@pytest.mark.slow
def test_payee_online_unblocks_at_once_and_the_payer_gets_async_payment_succeeded(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            invoice = net.nodes[B].create_invoice(AMOUNT, "online")
            payment = await net.nodes[A].asyncpay.pay_async(invoice, net.nodes[LSP_A].node_id)
            preimage = await asyncio.wait_for(payment.task, 20)
            assert verify_payment_proof(invoice, preimage)
            assert await next_event(net.nodes[A], AsyncPaymentSucceeded) == AsyncPaymentSucceeded(
                invoice.payment_hash, preimage)
            assert isinstance(await next_event(net.nodes[LSP_A], HtlcReleased), HtlcReleased)
            await net.stop()

    run(scenario())


@pytest.mark.slow
def test_forged_replayed_and_never_held_releases_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            runtime = net.nodes[LSP_A].asyncpay
            invoice = net.nodes[B].create_invoice(AMOUNT, "forged")
            # B stays online but is told nothing: only forged unblocks reach LSP_a.
            pid = os.urandom(32)
            request = m.HoldHtlcsRequest.sign((invoice.payment_hash,), pid, AMOUNT, net.nodes[A].privkey)
            lsp_id = net.nodes[LSP_A].node_id
            await net.nodes[A].onion_messages.send(lsp_id, [(m.HOLD_HTLCS, request.to_bytes())])
            await until(lambda: bool(lsp_a.store.hold_registrations()))
            pay = asyncio.ensure_future(net.nodes[A].pay(invoice, timeout=30))
            await next_event(net.nodes[LSP_A], HtlcHeld)
            sender = net.nodes[B]

            async def unblock(path: object) -> None:
                await sender.onion_messages.send(path, [(m.PAYMENT_UNBLOCK_MESSAGE, b"")])  # type: ignore[arg-type]

            await unblock(unblock_path(lsp_id, os.urandom(32)))  # forged pid
            await unblock(create_blinded_path(os.urandom(32), [lsp_id], [EncryptedDataTlv()]))  # no pid at all
            await until(lambda: runtime.refused_releases == 2)
            assert len(lsp_a.book.held()) == 1 and not pay.done()  # still held
            await unblock(unblock_path(lsp_id, pid))  # the real one
            assert await asyncio.wait_for(pay, 20) is not None
            await unblock(unblock_path(lsp_id, pid))  # replayed
            await until(lambda: runtime.refused_releases == 3)
            assert isinstance(await next_event(net.nodes[LSP_A], HtlcReleased), HtlcReleased)
            await net.stop()

    run(scenario())


async def restart_lsp(net: Network, i: int, db: Path, client: httpx.AsyncClient) -> tuple[Node, AsyncLsp]:
    """A crash of LSP ``i``: a new node from its store files, its AsyncLsp reloaded before it starts."""
    assert net.datadir is not None
    old = net.nodes[i]
    await old.stop()
    old.store.close()
    assert old.async_lsp is not None
    old.async_lsp.store.close()
    node = _make_node(net.chain, i, _store(net.datadir, i), old.mpp_timeout, old.forwarding_policy)
    node.graph = old.graph
    lsp = make_lsp(node, db, HoldLimits(), client)
    await node.start(port=net.ports[i])
    net.nodes[i] = node
    return node, lsp


@pytest.mark.slow
def test_both_lsps_restart_while_holding_the_htlc_and_the_mailbox(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, LINE, datadir=tmp_path)
            announce(net)
            db_a, db_b = tmp_path / "lsp_a.sqlite", tmp_path / "lsp_b.sqlite"
            make_lsp(net.nodes[LSP_A], db_a, HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], db_b, HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            invoice = net.nodes[B].create_invoice(AMOUNT, "restarts")
            await take_offline(net, B)
            payment = await net.nodes[A].asyncpay.pay_async(invoice, net.nodes[LSP_A].node_id)
            await next_event(net.nodes[LSP_A], HtlcHeld)
            await until(lambda: len(lsp_b.store.mailbox_peek(net.nodes[B].node_id, int(time.time()))) == 1)

            _, lsp_a = await restart_lsp(net, LSP_A, db_a, client)
            _, lsp_b = await restart_lsp(net, LSP_B, db_b, client)
            announce(net)
            assert [h.payment_hash for h in lsp_a.book.held()] == [invoice.payment_hash]  # reloaded, still held
            assert len(lsp_b.store.mailbox_peek(net.nodes[B].node_id, int(time.time()))) == 1
            await asyncio.sleep(1)  # the payer's channel reestablished: the HTLC is held again, not forwarded
            assert len(lsp_a.book.held()) == 1 and not payment.task.done()

            payee = await bring_online(net, B)
            announce(net)
            assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(invoice.payment_hash,
                                                                                          AMOUNT)
            assert verify_payment_proof(invoice, await asyncio.wait_for(payment.task, 20))
            await net.stop()

    run(scenario())


@pytest.mark.slow
def test_mpp_two_held_parts_released_together(tmp_path: Path) -> None:
    big = 1_200_000_000  # more than either of A's two channels to LSP_a can carry: two parts
    channels = [(A, LSP_A, SAT, 0), (A, LSP_A, SAT, 0), (LSP_A, LSP_B, 2 * SAT, 0), (LSP_B, B, 2 * SAT, 0)]

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            net = await create_network(4, channels)
            announce(net)
            lsp_a = make_lsp(net.nodes[LSP_A], tmp_path / "lsp_a.sqlite", HoldLimits(), client)
            lsp_b = make_lsp(net.nodes[LSP_B], tmp_path / "lsp_b.sqlite", HoldLimits(), client)
            lsp_b.store.register(net.nodes[B].node_id, None, 0)
            invoice = net.nodes[B].create_invoice(big, "two parts")
            await take_offline(net, B)
            payment = await net.nodes[A].asyncpay.pay_async(invoice, net.nodes[LSP_A].node_id)
            await until(lambda: len(lsp_a.book.held()) == 2)
            parts = lsp_a.book.held()
            assert {h.payment_hash for h in parts} == {invoice.payment_hash}
            assert sum(h.amount_msat for h in parts) >= big and len({h.htlc_key for h in parts}) == 2

            payee = await bring_online(net, B)
            announce(net)
            released = [await next_event(net.nodes[LSP_A], HtlcReleased, timeout=20) for _ in range(2)]
            assert sorted(r.amount_msat for r in released) == sorted(h.amount_msat for h in parts)
            assert await next_event(payee, PaymentReceived, timeout=20) == PaymentReceived(invoice.payment_hash, big)
            assert verify_payment_proof(invoice, await asyncio.wait_for(payment.task, 20))
            await net.stop()

    run(scenario())
