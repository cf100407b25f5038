"""The LSP side of both async-payment flows with real onion messages and real SQLite, restarted while it
holds: held HTLCs released together by the payee's reply, forged/replayed/never-held releases refused and
logged, HTLCs failed back at the deadline, the mailbox kept across a restart and the payee's webhook queued."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from lightspeed.asyncpay import messages as m
from lightspeed.asyncpay.policy import HoldLimits, HoldRefused, HoldState, ReleaseRefused
from lightspeed.errors import DecodeError
from lightspeed.node.async_lsp import AsyncLsp, release_key_for
from lightspeed.node.webhooks import WebhookNotifier
from lightspeed.offers.sign import public_key_of
from lightspeed.onion.blinding import EncryptedDataTlv, create_blinded_path
from lightspeed.onion.message import (
    OnionMessage,
    OnionMessagePayload,
    ReceivedOnionMessage,
    build_onion_message,
    create_reply_path,
    peel_onion_message,
)
from lightspeed.store.asyncpay import AsyncPayStore


def key(n: int) -> bytes:
    return hashlib.sha256(b"async14 lsp %d" % n).digest()


A, LSP_A, LSP_B, B = key(1), key(2), key(3), key(4)
A_ID, B_ID = public_key_of(A), public_key_of(B)
LIMITS = HoldLimits(max_hold_seconds=3600, max_htlcs_per_client=4, max_held_msat_per_client=100_000,
                    safety_margin_blocks=12)
PID = key(99)
HASH = hashlib.sha256(b"preimage").digest()
NOW, HEIGHT = 1_000_000, 700


class FakeClient:
    """Stands in for httpx only where delivery is not under test (test_async14_webhooks tests it)."""


def lsp(db: Path, node_key: bytes) -> AsyncLsp:
    store = AsyncPayStore(db)
    notifier = WebhookNotifier(store, node_key, FakeClient())  # type: ignore[arg-type]
    return AsyncLsp(store, LIMITS, release_key_for(node_key), notifier)


def receive(node_key: bytes, message: OnionMessage) -> ReceivedOnionMessage:
    received = peel_onion_message(node_key, message)
    assert isinstance(received, ReceivedOnionMessage)
    return received


def unblock_path(pid: bytes, session: int) -> OnionMessagePayload:
    """What A gives B: a reply path to LSP_a whose last hop carries the pid (B cannot read it)."""
    path = create_blinded_path(key(session), [public_key_of(LSP_A)],
                               [EncryptedDataTlv(path_id=b"rod", unknown_records=(m.payment_unblock_record(pid),))])
    notice = m.AsyncPaymentNotice((HASH,), 60_000)
    return OnionMessagePayload(reply_path=path, records=((m.ASYNC_PAYMENT_NOTICE, notice.to_bytes()),))


def hold_two_parts(lsp_a: AsyncLsp) -> None:
    request = m.HoldHtlcsRequest.sign((HASH,), PID, 60_000, A)
    lsp_a.on_hold_request(request.to_bytes(), now=NOW)
    for htlc_key, amount in (("chanA:0", 40_000), ("chanA:1", 20_000)):
        held = lsp_a.on_incoming_htlc(htlc_key, A_ID, HASH, amount, HEIGHT + 144, now=NOW + 1, block_height=HEIGHT)
        assert held is not None and held.state is HoldState.HELD


def test_lightning_rod_flow_across_restarts_of_both_lsps(tmp_path: Path) -> None:
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)
    hold_two_parts(lsp_a)
    # An HTLC with another hash, or the same hash from another peer, is forwarded as usual.
    assert lsp_a.on_incoming_htlc("chanA:2", A_ID, b"x" * 32, 1, HEIGHT + 144, now=NOW, block_height=HEIGHT) is None
    assert lsp_a.on_incoming_htlc("chanC:0", B_ID, HASH, 1, HEIGHT + 144, now=NOW, block_height=HEIGHT) is None

    # A -> B through LSP_b, which keeps it: B is registered (with a webhook) and offline.
    lsp_b = lsp(tmp_path / "lsp_b.sqlite", LSP_B)
    lsp_b.store.register(B_ID, "https://push.example/b", now=NOW)
    b_path = create_reply_path(key(10), [public_key_of(B)], b"b-inbox")
    _, to_b = build_onion_message(key(11), b_path, unblock_path(PID, 12))
    assert lsp_b.keep_for_offline_client(B_ID, to_b.to_bytes(), now=NOW + 2)
    (queued,) = lsp_b.store.outbox_pending()
    assert (queued.client_id, queued.url) == (B_ID, "https://push.example/b")
    assert '"method":"lsps5.onion_message_incoming"' in queued.body
    assert not lsp_b.keep_for_offline_client(A_ID, to_b.to_bytes(), now=NOW + 2)  # not registered: dropped

    # Both LSPs restart while holding.
    lsp_a.store.close()
    lsp_b.store.close()
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)
    lsp_b = lsp(tmp_path / "lsp_b.sqlite", LSP_B)
    assert sorted(h.htlc_key for h in lsp_a.book.held(A_ID)) == ["chanA:0", "chanA:1"]

    # B comes back 20 s later, collects its mailbox, and answers along A's reply path.
    (kept,) = lsp_b.pending_for(B_ID, now=NOW + 22)
    lsp_b.store.mailbox_ack([kept.id])
    at_b = receive(B, OnionMessage.from_bytes(kept.message))
    assert m.decode_payload(*at_b.payload.records[0]) == m.AsyncPaymentNotice((HASH,), 60_000)
    assert at_b.payload.reply_path is not None
    _, unblock = build_onion_message(key(13), at_b.payload.reply_path,
                                     OnionMessagePayload(records=((m.PAYMENT_UNBLOCK_MESSAGE, b""),)))
    at_lsp_a = receive(LSP_A, unblock)
    released = lsp_a.on_payment_unblock(at_lsp_a.encrypted_data.unknown_records, now=NOW + 23, block_height=HEIGHT + 1)
    assert sorted(h.htlc_key for h in released) == ["chanA:0", "chanA:1"]  # both MPP parts together

    # The release was committed before being returned: a restart does not make it replayable.
    lsp_a.store.close()
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)
    with pytest.raises(ReleaseRefused, match="replayed"):
        lsp_a.on_payment_unblock(at_lsp_a.encrypted_data.unknown_records, now=NOW + 30, block_height=HEIGHT + 1)
    lsp_a.store.register(A_ID, "https://push.example/a", now=NOW)
    assert lsp_a.notify_payer_settled(A_ID) is not None  # step 8: wake A to settle
    for record in released:
        lsp_a.resolved(record.htlc_key)
    assert lsp_a.store.held_htlcs() == []


def test_forged_replayed_and_never_held_releases_are_refused_and_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)
    hold_two_parts(lsp_a)
    caplog.set_level(logging.WARNING, logger="lightspeed.node.async_lsp")
    # Forged: B (or anyone) builds its own path to LSP_a with a guessed pid.
    forged = receive(LSP_A, build_onion_message(key(20), unblock_path(key(98), 21).reply_path,  # type: ignore[arg-type]
                                                OnionMessagePayload(records=((m.PAYMENT_UNBLOCK_MESSAGE, b""),)))[1])
    with pytest.raises(ReleaseRefused, match="forged, or never held"):
        lsp_a.on_payment_unblock(forged.encrypted_data.unknown_records, now=NOW + 5, block_height=HEIGHT)
    with pytest.raises(ReleaseRefused, match="no payment_unblock"):
        lsp_a.on_payment_unblock((), now=NOW + 5, block_height=HEIGHT)
    with pytest.raises(ReleaseRefused, match="payment_unblock: 3 bytes"):
        lsp_a.on_payment_unblock(((m.PAYMENT_UNBLOCK, b"abc"),), now=NOW + 5, block_height=HEIGHT)
    assert len(lsp_a.book.held(A_ID)) == 2  # nothing changed
    # Registered but never held: the pid matches no HTLC.
    other_pid = key(97)
    lsp_a.on_hold_request(m.HoldHtlcsRequest.sign((b"n" * 32,), other_pid, 1000, A).to_bytes(), now=NOW)
    with pytest.raises(ReleaseRefused, match="never held"):
        lsp_a.on_payment_unblock((m.payment_unblock_record(other_pid),), now=NOW + 5, block_height=HEIGHT)
    # Replayed.
    lsp_a.on_payment_unblock((m.payment_unblock_record(PID),), now=NOW + 6, block_height=HEIGHT)
    with pytest.raises(ReleaseRefused, match="replayed"):
        lsp_a.on_payment_unblock((m.payment_unblock_record(PID),), now=NOW + 7, block_height=HEIGHT)
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 5  # one line per refused release, none for the accepted one


def test_forged_hold_request_is_refused_and_stores_nothing(tmp_path: Path) -> None:
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)
    genuine = m.HoldHtlcsRequest.sign((HASH,), PID, 60_000, A)
    mallory = m.HoldHtlcsRequest.sign((HASH,), key(50), 60_000, key(51))
    claimed = m.HoldHtlcsRequest(genuine.payment_hashes, key(50), 60_000, A_ID, mallory.signature)
    with pytest.raises(DecodeError, match="signature"):
        lsp_a.on_hold_request(claimed.to_bytes(), now=NOW)
    assert lsp_a.store.hold_registrations() == []
    assert lsp_a.on_incoming_htlc("chanA:0", A_ID, HASH, 1000, HEIGHT + 144, now=NOW, block_height=HEIGHT) is None


def test_payee_never_returns_htlcs_failed_back_before_the_deadline(tmp_path: Path) -> None:
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)
    hold_two_parts(lsp_a)
    fail_height = HEIGHT + 144 - LIMITS.safety_margin_blocks
    assert lsp_a.tick(now=NOW + 60, block_height=fail_height - 1) == []
    lsp_a.store.close()
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)  # restarted in between: still on the hook
    failed = lsp_a.tick(now=NOW + 60, block_height=fail_height)
    assert sorted(h.htlc_key for h in failed) == ["chanA:0", "chanA:1"]
    assert {h.state for h in lsp_a.store.held_htlcs()} == {HoldState.FAILED}  # persisted before failing back
    with pytest.raises(ReleaseRefused):  # B comes back too late: nothing to release
        lsp_a.on_payment_unblock((m.payment_unblock_record(PID),), now=NOW + 61, block_height=fail_height)
    # An HTLC whose expiry is already inside the margin is refused at once (failed back by the caller).
    lsp_a.on_hold_request(m.HoldHtlcsRequest.sign((b"q" * 32,), key(60), 1000, A).to_bytes(), now=NOW)
    with pytest.raises(HoldRefused, match="safety margin"):
        lsp_a.on_incoming_htlc("chanA:9", A_ID, b"q" * 32, 1000, HEIGHT + 12, now=NOW, block_height=HEIGHT)


def test_draft_flow_release_held_htlc_over_the_lsps_reply_path(tmp_path: Path) -> None:
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)
    token, tag = lsp_a.issue_release_token("chanA:5")
    held = lsp_a.on_incoming_htlc("chanA:5", A_ID, HASH, 5000, HEIGHT + 144, now=NOW, block_height=HEIGHT,
                                  release_tag=tag)
    assert held is not None
    # LSP_a -> B: held_htlc_available with a reply path to itself whose path_id is the token.
    reply = create_reply_path(key(30), [public_key_of(LSP_A)], token)
    _, to_b = build_onion_message(key(31), create_reply_path(key(32), [B_ID], b"held-paths"),
                                  OnionMessagePayload(reply_path=reply, records=((m.HELD_HTLC_AVAILABLE, b""),)))
    at_b = receive(B, to_b)
    assert m.decode_payload(*at_b.payload.records[0]) == m.EmptyPayload()
    assert at_b.payload.reply_path is not None
    lsp_a.store.close()
    lsp_a = lsp(tmp_path / "lsp_a.sqlite", LSP_A)  # restart while holding
    _, release = build_onion_message(key(33), at_b.payload.reply_path,
                                     OnionMessagePayload(records=((m.RELEASE_HELD_HTLC, b""),)))
    at_lsp = receive(LSP_A, release)
    assert [h.htlc_key for h in lsp_a.on_release_held_htlc(at_lsp.path_id, now=NOW + 9, block_height=HEIGHT)] \
        == ["chanA:5"]
    with pytest.raises(ReleaseRefused, match="replayed"):
        lsp_a.on_release_held_htlc(at_lsp.path_id, now=NOW + 10, block_height=HEIGHT)
    forged = bytearray(token)
    forged[0] ^= 1
    with pytest.raises(ReleaseRefused, match="MAC does not verify"):
        lsp_a.on_release_held_htlc(bytes(forged), now=NOW + 10, block_height=HEIGHT)
    with pytest.raises(ReleaseRefused, match="path_id"):
        lsp_a.on_release_held_htlc(None, now=NOW + 10, block_height=HEIGHT)
