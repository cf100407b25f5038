"""Peers over TCP: the asyncio adapter around the sans-IO :class:`PeerSession`.

This module only moves bytes and time: it reads the socket, feeds the session,
writes what the session wants sent, and wakes it at its deadlines. Every
protocol decision (init, ping/pong, warnings, when to hang up) lives in
:mod:`lightspeed.transport.session`. A :class:`PeerListener` serves many
connections, within :class:`ListenerLimits`; one misbehaving peer only ends its
own connection, and a flood of connections is closed as it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from lightspeed.codec.features import Features
from lightspeed.codec.messages import Message
from lightspeed.errors import PeerProtocolError
from lightspeed.gossip.gossiper import GOSSIP_TYPES
from lightspeed.tasks import cancel_and_wait, wait_ended
from lightspeed.transport.noise import Handshake
from lightspeed.transport.session import (
    Connected,
    Disconnected,
    Event,
    MessageReceived,
    PeerSession,
    SessionLimits,
)

READ_SIZE = 65536
# What we implement, as BOLT 9 asks: required (even) where we cannot work without the feature
# (we have no legacy onion, no payments without a secret, no pre-static_remotekey channels, and
# our channel_reestablish always carries the data-loss fields), optional (odd) otherwise. The
# ASSUMED bits are still set: Electrum 4.3 and LND refuse a peer that does not set
# option_data_loss_protect. option_channel_type stays odd: a peer that does not know it is
# still served (its open_channel without channel_type is accepted, see channel.establish).
# option_onion_messages is odd: we relay and answer onion messages (node.onion_messenger), and a
# peer without them is still served (it is sent none).
DEFAULT_FEATURES = Features.of(
    required=["option_data_loss_protect", "var_onion_optin", "option_static_remotekey", "payment_secret"],
    optional=["gossip_queries", "gossip_queries_ex", "basic_mpp", "option_anchors", "option_channel_type",
              "option_route_blinding", "option_onion_messages"])


class Peer:
    """One live connection; iterate it for received messages, ``send`` to reply."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: PeerSession) -> None:
        self._reader, self._writer, self.session = reader, writer, session
        peername = writer.get_extra_info("peername")
        #: The other end's (host, port) as the socket sees it (for operators: ``peers``).
        self.remote_address: tuple[str, int] | None = (str(peername[0]), int(peername[1])) if peername else None
        self._inbox: asyncio.Queue[Message | None] = asyncio.Queue(maxsize=1000)
        self._connected = asyncio.get_running_loop().create_future()
        self.disconnect_reason: str | None = None
        #: Takes gossip messages as wire bytes (set by the node); while None they join the inbox.
        self.gossip_sink: Callable[[Peer, bytes], None] | None = None
        self._task = asyncio.create_task(self._run())
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def remote_pubkey(self) -> bytes | None:
        return self.session.remote_pubkey

    async def connected(self) -> Connected:
        """Wait for the handshake and the init exchange; raises PeerProtocolError if they fail."""
        result: Connected = await self._connected
        return result

    def connected_now(self) -> Connected | None:
        """The init exchange's outcome if it is done (without waiting), else None."""
        if not self._connected.done() or self._connected.cancelled() or self._connected.exception():
            return None
        result: Connected = self._connected.result()
        return result

    async def send(self, message: Message) -> None:
        self.session.send(message)
        await self._flush()

    async def flush(self) -> None:
        """Write what the session has queued (messages queued with ``session.send``)."""
        await self._flush()

    async def close(self) -> None:
        # Closing the transport first makes a pending read end on EOF: on Python 3.11 a cancel
        # that races with arriving data can be swallowed by wait_for (bpo-42130), and the read
        # loop would then wait for the next keepalive deadline. The session is closed at once,
        # so the connection reads as closed even if the read loop is cancelled mid-read.
        for event in self.session.close():
            if isinstance(event, Disconnected) and self.disconnect_reason is None:
                self.disconnect_reason = event.reason
        self._writer.close()
        await cancel_and_wait(self._task)

    async def closed(self) -> str:
        """Wait until the connection ends; returns the reason."""
        await wait_ended(self._task)
        return self.disconnect_reason or "closed"

    def next_ready(self) -> Message | None:
        """A message already received and not yet taken, without waiting; None at the end of a burst.

        Lets the node apply a burst of channel updates under one durable commit.
        """
        try:
            message = self._inbox.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if message is None:  # the end-of-connection marker (always last): leave it for the iterator
            self._inbox.put_nowait(None)
        return message

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Message]:
        while (message := await self._inbox.get()) is not None:
            yield message

    async def _flush(self) -> None:
        data = self.session.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()

    async def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Connected) and not self._connected.done():
                self._connected.set_result(event)
            elif isinstance(event, MessageReceived):
                sink = self.gossip_sink
                if sink is not None and event.raw and int.from_bytes(event.raw[:2], "big") in GOSSIP_TYPES:
                    sink(self, event.raw)
                    continue
                await self._inbox.put(event.message)  # bounded: a slow consumer slows reading
            elif isinstance(event, Disconnected):
                self.disconnect_reason = event.reason

    async def _run(self) -> None:
        try:
            await self._flush()  # the initiator's act one
            while not self.session.closed:
                deadline = self.session.next_deadline()
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    data = await asyncio.wait_for(self._reader.read(READ_SIZE), timeout)
                except TimeoutError:
                    await self._handle(self.session.handle_timer(time.monotonic()))
                    await self._flush()
                    continue
                now = time.monotonic()
                events = self.session.receive_data(data, now) if data else self.session.receive_eof()
                await self._flush()
                await self._handle(events)
        except (ConnectionError, OSError) as exc:
            self.disconnect_reason = f"socket error: {exc}"
        finally:
            if not self._connected.done():
                self._connected.set_exception(PeerProtocolError(self.disconnect_reason or "connection closed"))
                self._connected.exception()  # mark retrieved: callers may never await it
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(None)
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()


async def connect(
    host: str,
    port: int,
    local_privkey: bytes,
    remote_pubkey: bytes,
    features: Features = DEFAULT_FEATURES,
    limits: SessionLimits | None = None,
    networks: tuple[bytes, ...] | None = None,
) -> Peer:
    """Open a connection, run the handshake and init exchange, return the connected peer.

    ``networks``: the chain hashes our ``init`` names (BOLT 1: SHOULD set them).
    """
    reader, writer = await asyncio.open_connection(host, port)
    session = PeerSession(Handshake.initiator(local_privkey, remote_pubkey), features, time.monotonic(),
                          networks=networks, limits=limits or SessionLimits())
    peer = Peer(reader, writer, session)
    await peer.connected()
    return peer


@dataclass(frozen=True)
class ListenerLimits:
    """How many inbound connections a :class:`PeerListener` holds at once.

    Before its handshake a connection is anonymous and costs a socket and a
    task; without bounds a flood of them runs the process out of file
    descriptors and nothing (REST API included) can accept anything. A new
    connection past any limit is closed at once; established peers are never
    touched. A pending handshake ends after ``SessionLimits.handshake_timeout``
    (20 s by default), freeing its place. Addresses count per IPv4 address and
    per IPv6 /64 (one host usually holds a whole /64).
    """

    max_connections: int = 256  # pending and established, all addresses (well under a 1,024-descriptor limit)
    max_per_address: int = 32  # pending and established from one address
    max_pending_handshakes: int = 64  # connections that have not finished the handshake and init yet


def address_key(host: str) -> str:
    """What connections are counted by: the IPv4 address, or the IPv6 /64 it is in."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class PeerListener:
    """Accepts connections on ``host:port`` and hands each connected peer to ``on_peer``.

    Inbound connections are bounded by ``listener_limits`` (see :class:`ListenerLimits`).
    """

    def __init__(
        self,
        local_privkey: bytes,
        on_peer: Callable[[Peer], Awaitable[None]],
        features: Features = DEFAULT_FEATURES,
        limits: SessionLimits | None = None,
        networks: tuple[bytes, ...] | None = None,
        listener_limits: ListenerLimits | None = None,
    ) -> None:
        self._key, self._on_peer, self._features = local_privkey, on_peer, features
        self._networks = networks  # the chains our init names
        self._limits = limits or SessionLimits()
        self.listener_limits = listener_limits or ListenerLimits()
        self._server: asyncio.Server | None = None
        self.peers: set[Peer] = set()
        self.failed_connections = 0
        self.refused_connections = 0  # closed at once: over a limit
        self._open = 0
        self._pending = 0
        self._per_address: Counter[str] = Counter()
        self._handshaking: set[Peer] = set()  # connections still in the handshake (closed by stop too)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    def _over_limit(self, key: str) -> bool:
        limits = self.listener_limits
        return (self._open >= limits.max_connections or self._pending >= limits.max_pending_handshakes
                or self._per_address[key] >= limits.max_per_address)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        key = address_key(str(peername[0])) if peername else "?"
        if self._over_limit(key):
            self.refused_connections += 1
            writer.transport.abort()  # no lingering close: a flood must not hold descriptors
            return
        self._open += 1
        self._pending += 1
        self._per_address[key] += 1
        try:
            await self._serve(reader, writer)
        finally:
            self._open -= 1
            self._per_address[key] -= 1
            if not self._per_address[key]:
                del self._per_address[key]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            session = PeerSession(Handshake.responder(self._key, os.urandom(32)), self._features,
                                  time.monotonic(), networks=self._networks, limits=self._limits)
            peer = Peer(reader, writer, session)
            self._handshaking.add(peer)
            try:
                await peer.connected()
            except PeerProtocolError:
                self.failed_connections += 1
                await peer.closed()
                return
            finally:
                self._handshaking.discard(peer)
        finally:
            self._pending -= 1
        self.peers.add(peer)
        try:
            await self._on_peer(peer)
        finally:
            await peer.closed()
            self.peers.discard(peer)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Pending handshakes too: left to the loop's final cancel, their read could swallow it
        # (bpo-42130, see Peer.close) and hold the process until the handshake timeout.
        for peer in [*self._handshaking, *self.peers]:
            await peer.close()
