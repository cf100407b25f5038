"""A peer connection's protocol logic, sans-IO: handshake, ``init``, ping/pong, failures.

Theory of operation: the runtime feeds received bytes and the current time
(``receive_data(data, now)``), calls ``handle_timer(now)`` at
``next_deadline()``, writes out whatever ``data_to_send()`` returns, and acts on
the returned events. The session never reads a clock or touches a socket.

Rules enforced here (BOLT 1 and 8):

* each side sends ``init`` first and ignores nothing before the peer's ``init``:
  any other first message fails the connection;
* feature negotiation follows :func:`lightspeed.codec.features.negotiate`; our
  ``init`` carries ``networks`` (our chains), and a peer whose ``networks`` names
  none of them gets a warning and is disconnected;
* a ``ping`` with ``num_pong_bytes`` < 65532 is answered by a ``pong`` of that
  size; a ``pong`` nobody asked for, or of the wrong size, fails the connection;
* after ``ping_interval`` seconds without traffic we ping; no pong within
  ``ping_timeout`` fails the connection;
* a malformed message or an unknown even type gets a ``warning`` (connection
  level, all-zero channel id) and the connection is closed; a bad MAC closes
  it at once, since nothing more can be decrypted;
* at most ``max_outbox_bytes`` may wait to be written (a peer that does not
  read is disconnected rather than allowed to grow our memory), and an incoming
  frame longer than ``max_message_size`` is refused from its length prefix,
  before its body is buffered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lightspeed.codec.features import Features, negotiate
from lightspeed.codec.messages import (
    MAX_PONG_BYTES,
    Error,
    Init,
    Message,
    Ping,
    Pong,
    UnknownMessage,
    Warning,
    decode_message,
    encode_message,
)
from lightspeed.errors import DecodeError, HandshakeError, PeerProtocolError, UsageError
from lightspeed.transport.cipher import FrameError, NoiseTransport
from lightspeed.transport.noise import Handshake, Role

ALL_CHANNELS = bytes(32)


@dataclass(frozen=True)
class Connected:
    """Handshake and ``init`` exchange are done; normal messages may flow."""

    remote_pubkey: bytes
    remote_init: Init
    features: Features  # features both sides support


@dataclass(frozen=True)
class MessageReceived:
    message: Message
    raw: bytes = b""  # the wire bytes: signatures over gossip cover fields a re-encoding would lose


@dataclass(frozen=True)
class Disconnected:
    """The connection is over: write any pending data, then close the socket."""

    reason: str
    by_peer: bool = False


Event = Connected | MessageReceived | Disconnected


@dataclass
class SessionLimits:
    ping_interval: float = 30.0
    ping_timeout: float = 15.0
    handshake_timeout: float = 20.0
    max_outbox_bytes: int = 4 * 1024 * 1024
    max_message_size: int = 65535  # BOLT 8's own cap; lower it to bound per-peer memory further


@dataclass
class PeerSession:
    """One connection's protocol state (see the module docstring)."""

    handshake: Handshake
    local_features: Features
    now: float
    networks: tuple[bytes, ...] | None = None
    limits: SessionLimits = field(default_factory=SessionLimits)

    def __post_init__(self) -> None:
        self._transport: NoiseTransport | None = None
        # Frames waiting to be written, joined once per write (one frame: no copy at all).
        self._outbox: list[bytes] = []
        self._outbox_size = 0
        self._remote_init: Init | None = None
        self._closed = False
        self._pending_pongs: list[int] = []
        self._ping_sent_at: float | None = None
        self._last_activity = self.now
        self._started = self.now
        if self.handshake.role is Role.INITIATOR:
            self._outbox.append(self.handshake.start())

    # -- runtime interface ------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def ready(self) -> bool:
        return self._remote_init is not None and not self._closed

    @property
    def remote_pubkey(self) -> bytes | None:
        return self.handshake.remote_pubkey if self.handshake.complete else None

    def data_to_send(self) -> bytes:
        data = b"".join(self._outbox)
        self._outbox.clear()
        self._outbox_size = 0
        return data

    def send(self, message: Message) -> None:
        """Queue a message; only once connected (BOLT 1: init comes first)."""
        if not self.ready:
            raise UsageError("the peer has not completed the init exchange")
        if isinstance(message, Ping) and message.num_pong_bytes <= MAX_PONG_BYTES:
            self._pending_pongs.append(message.num_pong_bytes)
            if self._ping_sent_at is None:
                self._ping_sent_at = self.now
        self._queue(message)

    def send_raw(self, raw: bytes) -> None:
        """Queue an already encoded message as is (relayed gossip keeps its unknown fields)."""
        if not self.ready:
            raise UsageError("the peer has not completed the init exchange")
        assert self._transport is not None
        self._push(self._transport.send(raw))

    def receive_data(self, data: bytes, now: float) -> list[Event]:
        if self._closed or not data:
            return []
        self.now = now
        self._last_activity = now
        events: list[Event] = []
        if self._transport is None:
            try:
                self._outbox.append(self.handshake.receive_data(data))
            except HandshakeError as exc:
                return self._close(f"handshake failed: {exc}")
            if not self.handshake.complete:
                return []
            self._transport = self.handshake.transport()
            self._transport.max_message_size = self.limits.max_message_size
            init = Init(features=self.local_features.to_bytes(), networks=self.networks)
            self._queue(init)
            data = b""  # what followed act three is already in the transport
        failure: FrameError | None = None
        try:
            raws = self._transport.receive(data)
        except FrameError as exc:
            raws, failure = exc.messages, exc
        for raw in raws:
            events.extend(self._on_message(raw))
            if self._closed:
                return events
        if failure is not None:
            # A bad MAC: nothing further can be read or trusted; close without a reply.
            events.extend(self._close(f"transport failure: {failure}"))
        return events

    def receive_eof(self) -> list[Event]:
        if self._closed:
            return []
        return self._close("peer closed the connection", by_peer=True)

    def next_deadline(self) -> float | None:
        if self._closed:
            return None
        if self._remote_init is None:
            return self._started + self.limits.handshake_timeout
        if self._ping_sent_at is not None:
            return self._ping_sent_at + self.limits.ping_timeout
        return self._last_activity + self.limits.ping_interval

    def handle_timer(self, now: float) -> list[Event]:
        self.now = now
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        if self._remote_init is None:
            return self._close("handshake and init not completed in time")
        if self._ping_sent_at is not None:
            return self._close("no pong within the ping timeout")
        self._queue(Ping(num_pong_bytes=0))
        self._pending_pongs.append(0)
        self._ping_sent_at = now
        return []

    def fail(self, reason: str, channel_id: bytes = ALL_CHANNELS) -> list[Event]:
        """Send an ``error`` for ``channel_id`` and close (local decision)."""
        if self._transport is not None and self._remote_init is not None:
            self._queue(Error(channel_id, reason.encode()))
        return self._close(reason)

    def close(self, reason: str = "closed by us") -> list[Event]:
        """Close without a message (local decision): nothing more is sent or received."""
        if self._closed:
            return []
        return self._close(reason)

    # -- internals ----------------------------------------------------------------------------

    def _queue(self, message: Message) -> None:
        assert self._transport is not None
        self._push(self._transport.send(encode_message(message)))

    def _push(self, frame: bytes) -> None:
        self._outbox.append(frame)
        self._outbox_size += len(frame)
        if self._outbox_size > self.limits.max_outbox_bytes:
            self._outbox.clear()
            self._outbox_size = 0
            self._close("peer is not reading: outbox limit exceeded")

    def _close(self, reason: str, by_peer: bool = False) -> list[Event]:
        self._closed = True
        return [Disconnected(reason, by_peer)]

    def _warn_and_close(self, reason: str) -> list[Event]:
        self._queue(Warning(ALL_CHANNELS, reason.encode()))
        return self._close(reason)

    def _on_message(self, raw: bytes) -> list[Event]:
        try:
            message = decode_message(raw)
        except DecodeError as exc:
            return self._warn_and_close(f"malformed message: {exc}")
        if self._remote_init is None:
            # BOLT #1: the receiving node MUST wait to receive init before sending other messages.
            if not isinstance(message, Init):
                return self._warn_and_close("first message was not init")
            try:
                common = negotiate(self.local_features, message.globalfeatures, message.features)
            except PeerProtocolError as exc:
                return self._warn_and_close(exc.reason)
            # BOLT #1: upon receiving networks containing no common chains: MAY close the connection.
            if message.networks is not None and self.networks is not None \
                    and not set(message.networks) & set(self.networks):
                theirs = ", ".join(chain.hex() for chain in message.networks) or "none"
                return self._warn_and_close(f"no common chain: the peer follows {theirs}, "
                                            f"we follow {', '.join(c.hex() for c in self.networks)}")
            self._remote_init = message
            assert self.handshake.remote_pubkey is not None
            return [Connected(self.handshake.remote_pubkey, message, common)]
        if isinstance(message, Ping):
            # BOLT #1: if num_pong_bytes is less than 65532: MUST respond with a pong of that
            # many bytes; otherwise MUST ignore the ping.
            if message.num_pong_bytes <= MAX_PONG_BYTES:
                self._queue(Pong(bytes(message.num_pong_bytes)))
            return []
        if isinstance(message, Pong):
            if not self._pending_pongs or self._pending_pongs[0] != len(message.ignored):
                return self._warn_and_close("unexpected pong")
            self._pending_pongs.pop(0)
            if not self._pending_pongs:
                self._ping_sent_at = None
            return []
        if isinstance(message, Init):
            return self._warn_and_close("second init")
        if isinstance(message, UnknownMessage):
            return []  # odd and unknown: ignored (even ones fail to decode)
        events: list[Event] = [MessageReceived(message, raw)]
        if isinstance(message, Error) and message.channel_id == ALL_CHANNELS:
            events.extend(self._close(f"peer sent error: {message.data.decode(errors='replace')}", by_peer=True))
        return events
