"""The LSP side of async payments, ready to wire: hold book + store + webhooks, persist-then-act.

Each method takes what the node learned (an onion message's payload or encrypted data, an
incoming HTLC, a tick of the clock or the chain), commits the resulting state to the
:class:`~lightspeed.store.asyncpay.AsyncPayStore`, and only then returns what the node must do
(hold, forward, fail back, deliver). A crash between the commit and the action leaves the
durable state ahead of the wire, which a restart (``AsyncLsp`` reloads the book) completes: a
released HTLC is forwarded, a failed one failed back. Refused releases are logged and change
nothing. Kept out of ``node.py``: the node calls these from its onion-message handlers, its
forwarding path and its timers (docs/async-payments.md, "What remains").
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence

from lightspeed.asyncpay.lsps5 import ONION_MESSAGE_INCOMING, PAYMENT_INCOMING
from lightspeed.asyncpay.messages import HoldHtlcsRequest, payment_unblock_from
from lightspeed.asyncpay.policy import (
    HeldHtlc,
    HoldBook,
    HoldLimits,
    HoldRegistration,
    ReleaseKey,
    ReleaseRefused,
)
from lightspeed.errors import DecodeError
from lightspeed.node.webhooks import WebhookNotifier
from lightspeed.store.asyncpay import AsyncPayStore, MailboxMessage

log = logging.getLogger(__name__)


def release_key_for(node_privkey: bytes) -> ReleaseKey:
    """The LSP's release key, derived from its node key (stable across restarts, never stored)."""
    return ReleaseKey(hashlib.sha256(b"lightspeed/async release" + node_privkey).digest())


class AsyncLsp:
    def __init__(self, store: AsyncPayStore, limits: HoldLimits, key: ReleaseKey,
                 notifier: WebhookNotifier | None = None, random: Callable[[int], bytes] = os.urandom) -> None:
        self.store = store
        self.notifier = notifier
        self.random = random
        self.book = HoldBook(limits, key, store.held_htlcs(), store.hold_registrations())

    # LightningRod ------------------------------------------------------------------------
    def on_hold_request(self, payload: bytes, *, now: int) -> HoldRegistration:
        """Flow 1 step 2. DecodeError (bad or forged request) or HoldRefused (limits): nothing stored."""
        request = HoldHtlcsRequest.from_bytes(payload)
        registration = self.book.register(request.client_id, request.payment_hashes, request.pid,
                                          request.amount_msat, now=now)
        self.store.put_registration(registration)
        return registration

    def on_payment_unblock(self, encrypted_data_records: Sequence[tuple[int, bytes]], *, now: int,
                           block_height: int) -> list[HeldHtlc]:
        """Flow 1 step 6-7: the HTLCs to forward now (already persisted as released).

        Raises :class:`ReleaseRefused` (logged) for a missing, forged or replayed pid."""
        try:
            pid = payment_unblock_from(encrypted_data_records)
        except DecodeError as exc:
            log.warning("payment_unblock refused: %s", exc)
            raise ReleaseRefused(str(exc)) from None
        if pid is None:
            log.warning("payment_unblock refused: no pid in our encrypted data")
            raise ReleaseRefused("no payment_unblock in the encrypted data")
        return self._release(pid, now=now, block_height=block_height)

    # Draft spec --------------------------------------------------------------------------
    def issue_release_token(self, htlc_key: str) -> tuple[bytes, bytes]:
        """(the reply-path ``path_id`` to send with ``held_htlc_available``, the HTLC's release tag)."""
        token = self.book.key.issue_token(hashlib.sha256(htlc_key.encode()).digest(), self.random(16))
        return token, self.book.key.tag(self.book.key.open_token(token))

    def on_release_held_htlc(self, path_id: bytes | None, *, now: int, block_height: int) -> list[HeldHtlc]:
        """Draft step 3: ``release_held_htlc`` came back over our reply path (``path_id`` is ours)."""
        try:
            if path_id is None:
                raise DecodeError("path_id", "missing: release_held_htlc must come over our reply path")
            secret = self.book.key.open_token(path_id)
        except DecodeError as exc:
            log.warning("release_held_htlc refused: %s", exc)
            raise ReleaseRefused(str(exc)) from None
        return self._release(secret, now=now, block_height=block_height)

    # Both --------------------------------------------------------------------------------
    def on_incoming_htlc(self, htlc_key: str, from_peer: bytes, payment_hash: bytes, amount_msat: int,
                         cltv_expiry: int, *, now: int, block_height: int,
                         release_tag: bytes | None = None) -> HeldHtlc | None:
        """Hold this HTLC (returned, persisted) or None: not ours to hold, forward it as usual.

        LightningRod: held when ``from_peer`` registered its hash. Draft: the caller passes the
        ``release_tag`` of :meth:`issue_release_token` when the HTLC carries ``hold_htlc``.
        :class:`HoldRefused` means fail it back now."""
        if release_tag is None:
            registration = self.book.registration_for(from_peer, payment_hash, now=now)
            if registration is None:
                return None
            release_tag = registration.release_tag
        record = self.book.admit(htlc_key, from_peer, payment_hash, amount_msat, cltv_expiry, release_tag,
                                 now=now, block_height=block_height)
        self.store.put_held(record)
        return record

    def tick(self, *, now: int, block_height: int) -> list[HeldHtlc]:
        """HTLCs to fail back now (deadline reached; persisted as failed). Call on each block and
        at ``book.next_deadline()``."""
        due = self.book.due(now=now, block_height=block_height)
        for record in due:
            self.store.put_held(record)
        for registration in self.book.expire_registrations(now=now):
            self.store.delete_registration(registration.release_tag)
        return due

    def resolved(self, htlc_key: str) -> None:
        """The held HTLC is settled or failed upstream: forget it."""
        self.book.forget(htlc_key)
        self.store.delete_held(htlc_key)

    def notify_payer_settled(self, client_id: bytes) -> int | None:
        """Flow 1 step 8: wake the payer so it settles its channel (None if it has no webhook)."""
        return self._notify(client_id, PAYMENT_INCOMING)

    # Mailbox -----------------------------------------------------------------------------
    def keep_for_offline_client(self, client_id: bytes, onion_message: bytes, *, now: int) -> bool:
        """Flow 1 step 4-5: store an onion message for a registered, offline client and wake it.
        False: the client is not registered or its mailbox is full (the message is dropped)."""
        if self.store.registration(client_id) is None:
            return False
        if self.store.mailbox_put(client_id, onion_message, now) is None:
            log.warning("mailbox of %s full: onion message dropped", client_id.hex())
            return False
        self._notify(client_id, ONION_MESSAGE_INCOMING)
        return True

    def pending_for(self, client_id: bytes, *, now: int) -> list[MailboxMessage]:
        """On reconnect: the messages to send; call ``store.mailbox_ack`` once they are sent."""
        return self.store.mailbox_peek(client_id, now)

    def _release(self, secret: bytes, *, now: int, block_height: int) -> list[HeldHtlc]:
        try:
            released = self.book.release(secret, now=now, block_height=block_height)
        except ReleaseRefused as exc:
            log.warning("release refused: %s", exc.reason)
            raise
        for record in released:
            self.store.put_held(record)
        return released

    def _notify(self, client_id: bytes, method: str) -> int | None:
        registration = self.store.registration(client_id)
        if self.notifier is None or registration is None or registration.webhook_url is None:
            return None
        return self.notifier.notify(client_id, registration.webhook_url, method)
