"""Async-payment state in real SQLite: held HTLCs, the bounded expiring mailbox, registrations and the
webhook outbox all survive closing and reopening the file (a restart)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightspeed.asyncpay.policy import HoldBook, HoldLimits, HoldState, ReleaseKey, ReleaseRefused
from lightspeed.errors import UsageError
from lightspeed.store.asyncpay import AsyncPayStore, MailboxLimits

CLIENT = b"\x02" + b"c" * 32
OTHER = b"\x03" + b"o" * 32
PID = b"p" * 32
KEY = ReleaseKey(b"k" * 32)
LIMITS = HoldLimits(max_hold_seconds=3600, max_htlcs_per_client=4, max_held_msat_per_client=10_000,
                    safety_margin_blocks=6)


def test_held_htlcs_survive_restart_and_release_stays_single_use(tmp_path: Path) -> None:
    db = tmp_path / "lsp.sqlite"
    store = AsyncPayStore(db)
    book = HoldBook(LIMITS, KEY)
    for key in ("chan1:0", "chan2:7"):  # two MPP parts
        store.put_held(book.admit(key, CLIENT, b"h" * 32, 2000, 900, KEY.tag(PID), now=100, block_height=800))
    store.close()

    store = AsyncPayStore(db)  # restart
    book = HoldBook(LIMITS, KEY, store.held_htlcs())
    assert sorted(h.htlc_key for h in book.held(CLIENT)) == ["chan1:0", "chan2:7"]
    released = book.release(PID, now=200, block_height=801)
    for record in released:
        store.put_held(record)  # persisted before the runtime forwards
    store.close()

    store = AsyncPayStore(db)  # a crash after persisting: the release is not replayable
    book = HoldBook(LIMITS, KEY, store.held_htlcs())
    assert {h.state for h in store.held_htlcs()} == {HoldState.RELEASED}
    with pytest.raises(ReleaseRefused, match="replayed"):
        book.release(PID, now=300, block_height=802)
    store.delete_held("chan1:0")
    assert [h.htlc_key for h in store.held_htlcs()] == ["chan2:7"]


def test_mailbox_is_bounded_per_client_at_the_boundary(tmp_path: Path) -> None:
    store = AsyncPayStore(tmp_path / "m.sqlite", MailboxLimits(max_messages=3, max_bytes=100, ttl_seconds=50))
    for i in range(3):
        assert store.mailbox_put(CLIENT, b"m%d" % i, now=10) is not None
    assert store.mailbox_put(CLIENT, b"m3", now=10) is None  # the 4th is refused
    assert store.mailbox_put(OTHER, b"x" * 100, now=10) is not None  # 100 bytes: exactly the limit
    assert store.mailbox_put(OTHER, b"y", now=10) is None  # 101 bytes in all: refused
    big = AsyncPayStore(tmp_path / "b.sqlite", MailboxLimits(max_messages=3, max_bytes=100))
    assert big.mailbox_put(CLIENT, b"z" * 101, now=10) is None
    assert [msg.message for msg in store.mailbox_peek(CLIENT, now=10)] == [b"m0", b"m1", b"m2"]


def test_mailbox_survives_restart_expires_and_is_acknowledged(tmp_path: Path) -> None:
    db = tmp_path / "m.sqlite"
    store = AsyncPayStore(db, MailboxLimits(max_messages=2, ttl_seconds=50))
    store.mailbox_put(CLIENT, b"old", now=10)
    store.mailbox_put(CLIENT, b"new", now=30)
    store.close()
    store = AsyncPayStore(db, MailboxLimits(max_messages=2, ttl_seconds=50))
    assert [msg.message for msg in store.mailbox_peek(CLIENT, now=59)] == [b"old", b"new"]
    assert [msg.message for msg in store.mailbox_peek(CLIENT, now=60)] == [b"new"]  # old expired at 60
    # Expired messages free their slot: at 60 a second message fits again.
    assert store.mailbox_put(CLIENT, b"newer", now=60) is not None
    pending = store.mailbox_peek(CLIENT, now=60)
    store.mailbox_ack([pending[0].id])
    assert [msg.message for msg in store.mailbox_peek(CLIENT, now=60)] == [b"newer"]
    assert store.mailbox_prune(now=1000) == 1
    assert store.mailbox_peek(CLIENT, now=0) == []


def test_registrations_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    store = AsyncPayStore(db)
    store.register(CLIENT, "https://push.example/hook", now=5)
    store.register(OTHER, None, now=6)
    store.register(CLIENT, "https://push.example/new", now=7)  # re-registering replaces
    with pytest.raises(UsageError, match="33-byte"):
        store.register(b"short", None, now=8)
    store.close()
    store = AsyncPayStore(db)
    reg = store.registration(CLIENT)
    assert reg is not None and reg.webhook_url == "https://push.example/new" and reg.registered_at == 7
    assert [r.node_id for r in store.registrations()] == [OTHER, CLIENT]
    store.unregister(OTHER)
    assert store.registration(OTHER) is None


def test_outbox_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "o.sqlite"
    store = AsyncPayStore(db)
    item_id = store.outbox_add(CLIENT, "http://127.0.0.1:1/", "{}", now=3)
    store.outbox_update(item_id, attempts=2, next_attempt_at=9.5, state="pending", last_error="HTTP 503")
    store.close()
    store = AsyncPayStore(db)
    (item,) = store.outbox_pending()
    assert (item.attempts, item.next_attempt_at, item.last_error) == (2, 9.5, "HTTP 503")
    store.outbox_update(item_id, attempts=3, next_attempt_at=10, state="delivered", last_error="")
    assert store.outbox_pending() == []


def test_hold_registrations_survive_restart(tmp_path: Path) -> None:
    db = tmp_path / "lsp.sqlite"
    store = AsyncPayStore(db)
    book = HoldBook(LIMITS, KEY)
    store.put_registration(book.register(CLIENT, (b"a" * 32, b"b" * 32), PID, 5000, now=100))
    store.close()
    store = AsyncPayStore(db)
    book = HoldBook(LIMITS, KEY, store.held_htlcs(), store.hold_registrations())
    reg = book.registration_for(CLIENT, b"b" * 32, now=101)
    assert reg is not None and reg.payment_hashes == (b"a" * 32, b"b" * 32) and reg.amount_msat == 5000
    store.put_held(book.admit("c:1", CLIENT, b"b" * 32, 5000, 900, reg.release_tag, now=101, block_height=800))
    assert [h.htlc_key for h in book.release(PID, now=102, block_height=800)] == ["c:1"]
    store.delete_registration(reg.release_tag)
    assert store.hold_registrations() == []


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://push.example/x", "not an http"),
    ("https://", "not an http"),
    ("http://push.example/hook", "must be https"),
    ("https://push.example/" + "a" * 1004, "1025 characters, at most 1024"),
    ("https://push.example/é", "ASCII"),
])
def test_bad_webhook_urls_are_refused_by_name(tmp_path: Path, url: str, message: str) -> None:
    store = AsyncPayStore(tmp_path / "r.sqlite")
    with pytest.raises(UsageError, match=message):
        store.register(CLIENT, url, now=1)
    assert store.registration(CLIENT) is None
    store.register(CLIENT, "https://push.example/" + "a" * 1003, now=1)  # 1024: ok
    store.register(CLIENT, "http://127.0.0.1:8080/hook", now=1)  # loopback receiver


def test_store_file_is_private(tmp_path: Path) -> None:
    AsyncPayStore(tmp_path / "p.sqlite").close()
    assert (tmp_path / "p.sqlite").stat().st_mode & 0o077 == 0
