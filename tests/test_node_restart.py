"""A node restarted from its store resumes its channels: reconnect, channel_reestablish, pay on.

Two nodes in one process over loopback TCP, each with an SQLite store in its own
directory. Each restart builds a brand-new ``Node`` from the store alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lightspeed.chain import RegtestChain
from lightspeed.channel.htlc_log import Side
from lightspeed.errors import PaymentError
from lightspeed.invoice import verify_payment_proof
from lightspeed.node.node import Node
from lightspeed.store import open_store

ALICE_KEY, BOB_KEY = b"\x21" * 32, b"\x22" * 32
ALICE_SEED, BOB_SEED = b"alice restart seed 0001", b"bob restart seed 000002"


async def until(check: Callable[[], bool], timeout: float = 10) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def _with_miner(chain: RegtestChain, body: Callable[[], Awaitable[None]]) -> None:
    async def miner() -> None:
        while True:
            await asyncio.sleep(0.05)
            chain.mine(1)

    mining = asyncio.create_task(miner())
    try:
        await body()
    finally:
        mining.cancel()


@pytest.mark.slow
def test_both_nodes_restart_from_their_stores_and_keep_paying(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain = RegtestChain(tmp_path / "chain.sqlite")
        alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
        bob = Node(BOB_KEY, chain, BOB_SEED, store=open_store(tmp_path / "bob", fsync=False))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        bob_port = await bob.start()
        await alice.connect("127.0.0.1", bob_port, bob.node_id)
        state: dict[str, bytes] = {}

        async def open_and_pay() -> None:
            state["cid"] = await alice.open_channel(bob.node_id, 1_000_000)

        await _with_miner(chain, open_and_pay)
        cid = state["cid"]
        first = bob.create_invoice(100_000_000, "first")
        assert verify_payment_proof(first, await alice.pay(first, timeout=10))

        # Bob goes away and comes back from his store alone, on the same address.
        await bob.stop()
        bob.store.close()
        await until(lambda: not alice.channel_is_ready(cid))
        bob = Node(BOB_KEY, chain, BOB_SEED, store=open_store(tmp_path / "bob", fsync=False))
        assert cid in bob.channels and bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat == 100_000_000
        assert first.payment_hash in bob.settled_invoices
        [stored] = bob.store.channels()  # secrets are derived again from the node key, not stored
        assert all(secret.hex() not in stored.state.decode() for secret in bob.channels[cid].secrets.__dict__.values())
        await bob.start(port=bob_port)
        await until(lambda: alice.channel_is_ready(cid) and bob.channel_is_ready(cid))  # alice redialed
        second = bob.create_invoice(50_000_000, "second")
        assert verify_payment_proof(second, await alice.pay(second, timeout=10))

        # Alice goes away; on start she dials Bob herself and reestablishes.
        await alice.stop()
        alice.store.close()
        alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
        await alice.start()
        await until(lambda: alice.channel_is_ready(cid) and bob.channel_is_ready(cid))
        with pytest.raises(PaymentError, match="already paid"):
            await alice.pay(first)  # the double-pay guard survives the restart
        third = bob.create_invoice(25_000_000, "third")
        assert verify_payment_proof(third, await alice.pay(third, timeout=10))
        await until(lambda: not bob.channels[cid].log.commitment(Side.LOCAL).htlcs
                    and not alice.channels[cid].log.commitment(Side.LOCAL).htlcs)
        await asyncio.sleep(0.1)
        for node, expected in ((bob, 175_000_000), (alice, 1_000_000_000 - 175_000_000)):
            view = node.channels[cid].log.commitment(Side.LOCAL)
            assert view.to_local_msat == expected
        assert [p.status for p in alice.store.payments()] == ["succeeded"] * 3
        assert sorted(i.status for i in bob.store.invoices()) == ["paid"] * 3
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_a_payment_committed_but_never_delivered_completes_after_restart(tmp_path: Path) -> None:
    """The payer commits add + commitment_signed and crashes before they leave.

    After the restart, channel_reestablish retransmits both (BOLT 2: the peer's
    next_commitment_number shows it never got the signature): the payment ends
    succeeded, exactly once, without the payer paying again.
    """

    async def scenario() -> None:
        chain = RegtestChain(tmp_path / "chain.sqlite")
        alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
        bob = Node(BOB_KEY, chain, BOB_SEED, store=open_store(tmp_path / "bob", fsync=False))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        bob_port = await bob.start()
        await alice.connect("127.0.0.1", bob_port, bob.node_id)
        state: dict[str, bytes] = {}

        async def open_channel() -> None:
            state["cid"] = await alice.open_channel(bob.node_id, 1_000_000)

        await _with_miner(chain, open_channel)
        cid = state["cid"]
        invoice = bob.create_invoice(10_000_000, "lost on the way")
        # Cut the wire: what alice queues from now on never leaves her process.
        peer = alice._channel_peer[cid]
        peer.session.send = lambda message: None  # type: ignore[method-assign]
        with pytest.raises(PaymentError, match="pending"):
            await alice.pay(invoice, timeout=0.3)
        assert alice.store.payment(invoice.payment_hash).status == "pending"  # type: ignore[union-attr]
        assert not bob.channels[cid].log.commitment(Side.LOCAL, pending=True).htlcs  # bob saw nothing
        await alice.stop()  # the "crash"
        alice.store.close()
        alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
        await alice.start()
        await until(lambda: (alice.store.payment(invoice.payment_hash).status  # type: ignore[union-attr]
                             == "succeeded"))
        with pytest.raises(PaymentError, match="already paid"):
            await alice.pay(invoice)
        await until(lambda: not bob.channels[cid].log.commitment(Side.LOCAL).htlcs
                    and not alice.channels[cid].log.commitment(Side.LOCAL).htlcs)
        assert bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat == 10_000_000
        assert bob.store.invoice(invoice.payment_hash).status == "paid"  # type: ignore[union-attr]
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
def test_an_unsigned_htlc_is_forgotten_on_restart_and_its_payment_fails(tmp_path: Path) -> None:
    """BOLT 2: an update no commitment_signed covered is forgotten on reconnection.

    Alice's first payment goes out with its signature; her second waits for the peer's
    revoke_and_ack (she cannot sign again before it), so it is an unsigned add. Nothing
    leaves her process, she restarts: the first is retransmitted and succeeds, the
    second is forgotten by both sides and fails, and may then be paid again.
    """

    async def scenario() -> None:
        chain = RegtestChain(tmp_path / "chain.sqlite")
        alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
        bob = Node(BOB_KEY, chain, BOB_SEED, store=open_store(tmp_path / "bob", fsync=False))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        state: dict[str, bytes] = {}

        async def open_channel() -> None:
            state["cid"] = await alice.open_channel(bob.node_id, 1_000_000)

        await _with_miner(chain, open_channel)
        cid = state["cid"]
        signed, unsigned = bob.create_invoice(7_000_000, "signed"), bob.create_invoice(3_000_000, "unsigned")
        alice._channel_peer[cid].session.send = lambda message: None  # type: ignore[method-assign]
        for invoice in (signed, unsigned):
            with pytest.raises(PaymentError, match="pending"):
                await alice.pay(invoice, timeout=0.1)
        assert alice.channels[cid].log.awaiting_revoke  # the second add went out unsigned
        await alice.stop()
        alice.store.close()
        alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
        await alice.start()

        def status(invoice: object) -> str:
            record = alice.store.payment(invoice.payment_hash)  # type: ignore[attr-defined]
            return "none" if record is None else record.status

        await until(lambda: status(signed) == "succeeded" and status(unsigned) == "failed")
        assert verify_payment_proof(unsigned, await alice.pay(unsigned, timeout=10))  # paid again, once
        await until(lambda: not bob.channels[cid].log.commitment(Side.LOCAL).htlcs)
        assert bob.channels[cid].log.commitment(Side.LOCAL).to_local_msat == 10_000_000
        assert {i.payment_hash: i.received_msat for i in bob.store.invoices()} == {
            signed.payment_hash: 7_000_000, unsigned.payment_hash: 3_000_000}
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


@pytest.mark.slow
@pytest.mark.parametrize("restart", [False, True])
def test_a_lost_shutdown_is_retransmitted_and_a_closed_channel_stays_closed(tmp_path: Path, restart: bool) -> None:
    """Alice's shutdown is lost; after a reconnection (or her restart) she resends it and the close completes."""

    async def scenario() -> None:
        chain = RegtestChain(tmp_path / "chain.sqlite")
        alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
        bob = Node(BOB_KEY, chain, BOB_SEED, store=open_store(tmp_path / "bob", fsync=False))
        chain.fund(alice.wallet.new_key().script_pubkey, 3_000_000)
        await alice.connect("127.0.0.1", await bob.start(), bob.node_id)
        state: dict[str, bytes] = {}

        async def open_channel() -> None:
            state["cid"] = await alice.open_channel(bob.node_id, 1_000_000)

        await _with_miner(chain, open_channel)
        cid = state["cid"]
        peer = alice._channel_peer[cid]
        original_send = peer.session.send
        peer.session.send = lambda message: None  # type: ignore[method-assign]
        closing = asyncio.create_task(alice.close_channel(cid, timeout=10))
        await asyncio.sleep(0.1)  # alice's shutdown is lost
        peer.session.send = original_send  # type: ignore[method-assign]
        if restart:
            closing.cancel()
            await alice.stop()
            alice.store.close()
            alice = Node(ALICE_KEY, chain, ALICE_SEED, store=open_store(tmp_path / "alice", fsync=False))
            invoice = bob.create_invoice(1_000, "too late")
            await alice.start()
            assert alice.channel_is_closing(cid)  # resumed from the store
            with pytest.raises(PaymentError, match=r"closing|no channel"):
                await alice.pay(invoice, timeout=5)  # BOLT 2: no new HTLC once shutdown was sent
        else:
            await peer.close()  # the connection drops; alice redials and reestablishes
            assert chain.get_transaction((await closing).txid) is not None
        await until(lambda: cid not in bob.channels and cid not in alice.channels)
        await bob.stop()
        bob.store.close()
        bob = Node(BOB_KEY, chain, BOB_SEED, store=open_store(tmp_path / "bob", fsync=False))
        assert cid not in bob.channels  # a closed channel is not resumed
        await alice.stop()

    asyncio.run(scenario())
