"""Webhook notifications (LSPS5-signed) delivered to a real HTTP receiver (uvicorn on loopback) that
fails twice first; backoff, restart resumption from the persisted outbox, and the receiver's checks."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from lightspeed.asyncpay.lsps5 import (
    ONION_MESSAGE_INCOMING,
    NotificationVerifier,
    lsps0_datetime,
    notification_body,
    sign_headers,
)
from lightspeed.errors import DecodeError
from lightspeed.node.webhooks import Backoff, WebhookNotifier
from lightspeed.offers.sign import public_key_of
from lightspeed.store.asyncpay import AsyncPayStore

LSP_KEY = b"\x11" * 32
CLIENT = b"\x02" + b"c" * 32

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


@dataclass
class Receiver:
    """An ASGI app answering 503 to the first ``fail_first`` POSTs, then 200; records every request."""

    fail_first: int
    calls: list[tuple[float, dict[str, str], str]] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.calls.append((time.monotonic(), headers, body.decode()))
        status = 503 if len(self.calls) <= self.fail_first else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@contextmanager
def serve(app: Receiver) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


async def deliver_until_done(notifier: WebhookNotifier, item_id: int, timeout: float = 10.0) -> None:
    task = asyncio.create_task(notifier.run())
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            item = notifier.store.outbox_item(item_id)
            assert item is not None
            if item.state != "pending":
                return
            await asyncio.sleep(0.01)
        raise AssertionError("not delivered in time")
    finally:
        task.cancel()


def test_receiver_failing_twice_gets_the_signed_notification_on_the_third_attempt(tmp_path: Path) -> None:
    receiver = Receiver(fail_first=2)
    store = AsyncPayStore(tmp_path / "lsp.sqlite")
    backoff = Backoff(initial_seconds=0.2, factor=2.0, max_attempts=5)

    async def main(url: str) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            notifier = WebhookNotifier(store, LSP_KEY, client, backoff)
            item_id = notifier.notify(CLIENT, url, ONION_MESSAGE_INCOMING)
            await deliver_until_done(notifier, item_id)
            return item_id

    with serve(receiver) as url:
        item_id = asyncio.run(main(url))
    item = store.outbox_item(item_id)
    assert item is not None and (item.state, item.attempts) == ("delivered", 3)
    assert len(receiver.calls) == 3
    gaps = [receiver.calls[i + 1][0] - receiver.calls[i][0] for i in range(2)]
    # Exponential backoff: ~0.2 s, then ~0.4 s (measured at the receiver, so a little less than the
    # notifier's own delay, which starts before its POST reaches the receiver).
    assert gaps[0] >= 0.15 and gaps[1] >= 0.35 and gaps[1] > 1.5 * gaps[0]
    verifier = NotificationVerifier(public_key_of(LSP_KEY))
    _, headers, body = receiver.calls[-1]
    assert headers["content-type"] == "application/json"
    assert verifier.verify(headers, body, time.time()) == {
        "jsonrpc": "2.0", "method": "lsps5.onion_message_incoming", "params": {}}
    # Each attempt was signed afresh: the first attempt's signature differs and also verifies.
    _, first_headers, first_body = receiver.calls[0]
    assert first_headers["x-lsps5-signature"] != headers["x-lsps5-signature"]
    assert verifier.verify(first_headers, first_body, time.time())["method"] == "lsps5.onion_message_incoming"


def test_restart_resumes_delivery_from_the_outbox(tmp_path: Path) -> None:
    db = tmp_path / "lsp.sqlite"
    receiver = Receiver(fail_first=2)
    backoff = Backoff(initial_seconds=0.05, max_attempts=10)

    async def before_crash(url: str) -> int:
        async with httpx.AsyncClient(timeout=5) as client:
            notifier = WebhookNotifier(AsyncPayStore(db), LSP_KEY, client, backoff)
            item_id = notifier.notify(CLIENT, url, "lsps5.payment_incoming")
            await notifier.deliver_due()  # one failed attempt, then the process "dies"
            return item_id

    async def after_restart(item_id: int) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            notifier = WebhookNotifier(AsyncPayStore(db), LSP_KEY, client, backoff)
            await deliver_until_done(notifier, item_id)

    with serve(receiver) as url:
        item_id = asyncio.run(before_crash(url))
        assert len(receiver.calls) == 1
        pending = AsyncPayStore(db).outbox_item(item_id)
        assert pending is not None and (pending.state, pending.attempts, pending.last_error) == ("pending", 1, "HTTP 503")
        asyncio.run(after_restart(item_id))
    assert len(receiver.calls) == 3
    done = AsyncPayStore(db).outbox_item(item_id)
    assert done is not None and done.state == "delivered"


def test_unreachable_webhook_is_abandoned_after_max_attempts(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there: every attempt is a refused connection
    store = AsyncPayStore(tmp_path / "lsp.sqlite")

    async def main() -> int:
        async with httpx.AsyncClient(timeout=2) as client:
            notifier = WebhookNotifier(store, LSP_KEY, client, Backoff(initial_seconds=0.01, max_attempts=3))
            item_id = notifier.notify(CLIENT, f"http://127.0.0.1:{port}/", "lsps5.payment_incoming")
            await deliver_until_done(notifier, item_id)
            return item_id

    item = store.outbox_item(asyncio.run(main()))
    assert item is not None and (item.state, item.attempts) == ("abandoned", 3)
    assert "ConnectError" in item.last_error


def test_backoff_delays() -> None:
    backoff = Backoff(initial_seconds=2, factor=2, max_seconds=10)
    assert [backoff.delay(n) for n in range(1, 6)] == [2, 4, 8, 10, 10]


def test_verifier_refuses_tampered_stale_replayed_and_foreign_notifications() -> None:
    now = 1_765_000_000.25
    body = notification_body("lsps5.payment_incoming")
    headers = sign_headers(LSP_KEY, body, now)
    assert headers["x-lsps5-timestamp"] == lsps0_datetime(now) == "2025-12-06T05:46:40.250Z"
    verifier = NotificationVerifier(public_key_of(LSP_KEY))
    with pytest.raises(DecodeError, match="x-lsps5-signature: not signed by the LSP"):
        verifier.verify(headers, body.replace("incoming", "incominG"), now)
    with pytest.raises(DecodeError, match=r"x-lsps5-timestamp: .* more than 600 s"):
        verifier.verify(headers, body, now + 601)
    assert verifier.verify(headers, body, now + 600)["method"] == "lsps5.payment_incoming"  # 600 s: ok
    with pytest.raises(DecodeError, match="replayed"):
        verifier.verify(headers, body, now)
    foreign = NotificationVerifier(public_key_of(b"\x22" * 32))
    with pytest.raises(DecodeError, match="not signed by the LSP"):
        foreign.verify(sign_headers(LSP_KEY, body, now), body, now)
    with pytest.raises(DecodeError, match="x-lsps5-signature: missing"):
        verifier.verify({"x-lsps5-timestamp": headers["x-lsps5-timestamp"]}, body, now)
    with pytest.raises(DecodeError, match="not an LSPS0 datetime"):
        verifier.verify({**headers, "x-lsps5-timestamp": "yesterday"}, body, now)
    assert json.loads(body) == {"jsonrpc": "2.0", "method": "lsps5.payment_incoming", "params": {}}
