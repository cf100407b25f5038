"""Webhook delivery for async payments: a persisted outbox, retried with exponential backoff.

:meth:`WebhookNotifier.notify` commits the notification to the outbox (in
:class:`~lightspeed.store.asyncpay.AsyncPayStore`) before anything is sent, so a crash or a
restart loses none: a new notifier over the same store resumes every pending item. Each
attempt is signed afresh (LSPS5 headers, :mod:`lightspeed.asyncpay.lsps5`) so a retry an
hour later still passes the receiver's ten-minute freshness check. A 2xx answer delivers; any
other answer, a timeout or a refused connection schedules the next attempt after
``initial * factor**(attempts-1)`` seconds (capped), until ``max_attempts``, after which the
item is abandoned (kept, with its last error, for the operator).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightspeed.asyncpay.lsps5 import notification_body, sign_headers
from lightspeed.errors import UsageError
from lightspeed.store.asyncpay import AsyncPayStore, OutboxItem, check_webhook_url

if TYPE_CHECKING:  # the client is made by whoever runs the LSP: a daemon without --lsp never imports httpx
    import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    initial_seconds: float = 2.0
    factor: float = 2.0
    max_seconds: float = 3600.0
    max_attempts: int = 12

    def __post_init__(self) -> None:
        if self.initial_seconds <= 0 or self.factor < 1 or self.max_attempts < 1:
            raise UsageError("backoff needs initial_seconds > 0, factor >= 1, max_attempts >= 1")

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        return float(min(self.max_seconds, self.initial_seconds * self.factor ** (attempts - 1)))


class WebhookNotifier:
    """Delivers the outbox of one LSP. ``clock`` is wall time (unix seconds), injectable for tests."""

    def __init__(self, store: AsyncPayStore, node_privkey: bytes, client: httpx.AsyncClient,
                 backoff: Backoff | None = None, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.node_privkey = node_privkey
        self.client = client
        self.backoff = backoff or Backoff()
        self.clock = clock
        self._wake = asyncio.Event()

    def notify(self, client_id: bytes, url: str, method: str, params: dict[str, Any] | None = None) -> int:
        """Queue a notification (durably) and wake the delivery loop; returns the outbox id."""
        check_webhook_url(url)
        item_id = self.store.outbox_add(client_id, url, notification_body(method, params), int(self.clock()))
        self._wake.set()
        return item_id

    async def _attempt(self, item: OutboxItem) -> None:
        import httpx  # already loaded: self.client is one of its clients

        now = self.clock()
        attempts = item.attempts + 1
        try:
            response = await self.client.post(item.url, content=item.body.encode(),
                                              headers=sign_headers(self.node_privkey, item.body, now))
            error = "" if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if not error:
            self.store.outbox_update(item.id, attempts=attempts, next_attempt_at=now, state="delivered", last_error="")
            return
        if attempts >= self.backoff.max_attempts:
            log.warning("webhook %s abandoned after %d attempts: %s", item.url, attempts, error)
            self.store.outbox_update(item.id, attempts=attempts, next_attempt_at=now, state="abandoned",
                                     last_error=error)
            return
        retry_at = now + self.backoff.delay(attempts)
        log.info("webhook %s attempt %d failed (%s); retry in %.1f s", item.url, attempts, error, retry_at - now)
        self.store.outbox_update(item.id, attempts=attempts, next_attempt_at=retry_at, state="pending",
                                 last_error=error)

    async def deliver_due(self) -> float | None:
        """Attempt every due item once; the time of the next due item, or None if none is pending."""
        now = self.clock()
        for item in self.store.outbox_pending():
            if item.next_attempt_at <= now:
                await self._attempt(item)
        pending = self.store.outbox_pending()
        return min(i.next_attempt_at for i in pending) if pending else None

    async def run(self) -> None:
        """Deliver forever (cancel the task to stop); sleeps until the next due item or a new one."""
        while True:
            self._wake.clear()
            next_at = await self.deliver_due()
            timeout = None if next_at is None else max(0.0, next_at - self.clock())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
