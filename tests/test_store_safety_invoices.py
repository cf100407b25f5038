"""Invoices at scale (issue 11, item 17): none decoded at start, looked up when an HTLC names one,
expired unpaid ones pruned after a grace period, paid ones kept.

Before: every unpaid invoice was decoded at start (a signature recovery each; 20,000 took
seconds) and none was ever deleted, while a pay-per-call server makes one per allowance offer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
import time
from pathlib import Path

import pytest

import lightspeed.node.invoices as invoices_module
from lightspeed.chain import RegtestChain
from lightspeed.errors import PaymentError
from lightspeed.invoice import decode
from lightspeed.node.invoices import PRUNE_GRACE_S, InvoiceBook
from lightspeed.node.node import Node
from lightspeed.payments.receiver import Receiver
from lightspeed.store import InvoiceRecord, SqliteStore
from tests.onchain_support import open_paid_channel, settle

KEY, SEED = b"\x71" * 32, b"invoice scale wallet seed"


class DecodeCounter:
    """Counts the invoice strings the invoice book decodes (it calls through to the real decoder)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = invoices_module.decode

        def counting(text: str):  # type: ignore[no-untyped-def]
            self.calls += 1
            return real(text)

        monkeypatch.setattr(invoices_module, "decode", counting)


def _copies(template: InvoiceRecord, count: int, expires_at: int, status: str = "unpaid") -> list[InvoiceRecord]:
    """``count`` records of one real signed invoice string, each under its own hash and secret."""
    return [dataclasses.replace(template, payment_hash=os.urandom(32), payment_secret=os.urandom(32),
                                status=status, expires_at=expires_at) for _ in range(count)]  # type: ignore[arg-type]


def test_a_node_with_20000_unpaid_invoices_starts_without_decoding_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "node.sqlite"
    chain = RegtestChain(":memory:")
    node = Node(KEY, chain, SEED, store=SqliteStore(path, fsync=False))
    live = node.create_invoice(10_000, "still payable")
    template = node.store.invoice(live.payment_hash)
    assert template is not None
    now = int(time.time())
    unpaid = _copies(template, 20_000, now + 3600)
    long_expired = _copies(template, 2_000, now - PRUNE_GRACE_S - 60)
    lately_expired = _copies(template, 50, now - 60)  # within the grace period: kept
    paid = _copies(template, 100, now - PRUNE_GRACE_S - 60, status="paid")  # paid: kept whatever its age
    with node.store.transaction():
        for record in unpaid + long_expired + lately_expired + paid:
            node.store.put_invoice(record)
    node.store.close()

    decodes = DecodeCounter(monkeypatch)
    began = time.perf_counter()
    restarted = Node(KEY, chain, SEED, store=SqliteStore(path, fsync=False))
    elapsed = time.perf_counter() - began
    print(f"restart with {len(unpaid) + 1} unpaid invoices: {elapsed:.3f} s")  # ~0.1 s; was ~7 s
    assert decodes.calls == 0 and restarted.receiver.invoices == {}
    stored = {r.payment_hash: r for r in restarted.store.invoices()}
    assert len(stored) == 1 + len(unpaid) + len(lately_expired) + len(paid)
    assert not any(r.payment_hash in stored for r in long_expired)
    assert {r.payment_hash for r in paid} <= restarted.settled_invoices  # the double-pay guard survives

    # An HTLC for one of them: the receiver gets exactly that invoice from the store.
    restarted.invoices.load_for(unpaid[123].payment_hash, None, amp=False)
    restarted.invoices.load_for(os.urandom(32), None, amp=False)  # not ours: nothing to load
    assert decodes.calls == 1 and list(restarted.receiver.invoices) == [unpaid[123].payment_hash]
    restarted.store.close()


def test_the_receivers_invoices_are_a_bounded_cache_refilled_from_the_store(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.sqlite", fsync=False)
    node = Node(KEY, RegtestChain(":memory:"), SEED, store=store)
    made = [node.create_invoice(1000 + i, f"offer {i}") for i in range(6)]
    receiver = Receiver()
    book = InvoiceBook(store, receiver, cache_size=3)
    for invoice in made:
        book.load_for(invoice.payment_hash, None, amp=False)
    assert list(receiver.invoices) == [i.payment_hash for i in made[3:]]  # the least recently used left
    book.load_for(made[3].payment_hash, None, amp=False)  # used again: now the most recent
    book.load_for(made[0].payment_hash, None, amp=False)  # evicted earlier: looked up again
    assert list(receiver.invoices) == [made[5].payment_hash, made[3].payment_hash, made[0].payment_hash]
    assert receiver.invoices[made[0].payment_hash].expires_at == made[0].expires_at
    assert book.decoded == 7
    store.close()


def test_invoices_made_before_a_restart_are_paid_after_it_and_a_late_htlc_is_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        chain, alice, bob, cid = await open_paid_channel(tmp_path, 0x73)
        plain = bob.create_invoice(20_000_000, "made before the restart")
        amp = bob.create_amp_invoice(30_000_000, "AMP, found by its payment secret")
        short = bob.create_invoice(10_000_000, "expires at once", expiry=1)
        port = alice.store.peers()[bob.node_id][1]
        await bob.stop()
        bob.store.close()
        bob = Node(bytes([0x74]) * 32, chain, b"bob wallet seed %d" % 0x73,
                   store=SqliteStore(tmp_path / "bob.sqlite"))
        assert bob.receiver.invoices == {}  # nothing loaded at start
        await bob.start(port=port)  # Alice redials him there
        await asyncio.wait_for(_ready(alice, cid), 10)
        assert await alice.pay(plain, timeout=20)
        assert await alice.pay(amp, timeout=20)
        assert {plain.payment_hash, amp.payment_hash} <= bob.settled_invoices
        await asyncio.sleep(max(0.0, short.expires_at + 1 - time.time()))
        with pytest.raises(PaymentError):
            await alice.pay(short, timeout=20)
        record = bob.store.invoice(short.payment_hash)
        assert record is not None and record.status == "unpaid"  # refused: expired (kept for the grace period)
        assert short.payment_hash in bob.receiver.invoices  # it was looked up for the late HTLC, then refused
        await settle(alice, bob, cid)
        await alice.stop()
        await bob.stop()

    asyncio.run(scenario())


async def _ready(node: Node, cid: bytes) -> None:
    while not node.channel_is_ready(cid):
        await asyncio.sleep(0.02)


_V1_INVOICES = """CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE invoices (
    payment_hash BLOB PRIMARY KEY, invoice TEXT NOT NULL, preimage BLOB NOT NULL,
    payment_secret BLOB NOT NULL, amount_msat INTEGER, status TEXT NOT NULL,
    received_msat INTEGER NOT NULL, paid_channel_id BLOB, paid_htlc_id INTEGER);
INSERT INTO meta VALUES ('schema_version', '1');"""


def test_a_store_of_the_first_version_is_upgraded_and_its_invoices_dated_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = RegtestChain(":memory:")
    maker = Node(KEY, chain, SEED, store=SqliteStore(":memory:"))
    fresh = maker.create_invoice(1000, "valid for an hour")
    stale = maker.create_invoice(1000, "expired long ago", expiry=1)
    path = tmp_path / "node.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_V1_INVOICES)
    for invoice in (fresh, stale):
        old.execute("INSERT INTO invoices VALUES (?, ?, ?, ?, ?, 'unpaid', 0, NULL, NULL)",
                    (invoice.payment_hash, invoice.encode(), os.urandom(32), invoice.payment_secret, 1000))
    old.commit()
    old.close()
    decodes = DecodeCounter(monkeypatch)
    later = time.time() + PRUNE_GRACE_S + 10
    monkeypatch.setattr(time, "time", lambda: later)
    node = Node(KEY, chain, SEED, store=SqliteStore(path, fsync=False))
    assert decodes.calls == 2  # each dated once, the upgrade's one-time cost
    assert node.store.invoice(stale.payment_hash) is None  # expired a day before `later`: pruned
    kept = node.store.invoice(fresh.payment_hash)
    assert kept is not None and kept.expires_at == decode(fresh.encode()).expires_at
    node.store.close()
    Node(KEY, chain, SEED, store=SqliteStore(path, fsync=False)).store.close()
    assert decodes.calls == 2  # the next start decodes nothing
