"""Onion messages in the node (BOLT 4 "Onion Messages"): relay, receive, send, request/reply.

Theory of operation. Every ``onion_message`` a peer sends first spends a token of that peer's
bucket (:mod:`lightspeed.node.onion_ratelimit`), then is peeled with the node key
(:func:`lightspeed.onion.message.peel_onion_message`). A message for another node is forwarded
to the peer its ``encrypted_data_tlv`` names, if that peer is connected and speaks onion
messages, else dropped; a message for us is dispatched by its payload TLV (``invoice_request``
64, ``invoice`` 66, ``invoice_error`` 68, or any other type >= 64) to the handler registered
for that type, with the ``reply_path`` and the ``path_id`` it came back through. Onion
messages are unreliable by design: nothing is ever answered to a peer whose message we drop,
the connection stays up, and each drop is counted by reason (:meth:`OnionMessenger.stats`).

Replies. :meth:`OnionMessenger.request` sends with a fresh reply path through one of our peers
whose last hop carries a random ``path_id``, and waits for a message that comes back through
exactly that path: as BOLT 4 asks, a reply is only accepted over the reply path given, and a
message arriving over a reply path we published is never taken for an unsolicited one.

Nothing here is persisted: a request lives as long as its caller waits. After a restart the
published reply paths are forgotten, and a late reply through one reaches the handlers like any
message with an unknown ``path_id`` (which a handler that published no such path ignores).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lightspeed.codec.features import Features
from lightspeed.codec.generated import OnionMessage as WireOnionMessage
from lightspeed.errors import LightspeedError, UsageError
from lightspeed.node.onion_ratelimit import OnionMessageLimits, PeerRateLimiter
from lightspeed.onion.blinding import (
    BlindedPath,
    EncryptedDataTlv,
    create_blinded_path,
    unblind_hop,
)
from lightspeed.onion.message import (
    LARGE_ROUTING_INFO_SIZE,
    ForwardOnionMessage,
    OnionMessage,
    OnionMessagePayload,
    blinded_path_to,
    build_onion_message,
    create_reply_path,
    peel_onion_message,
)
from lightspeed.onion.sphinx import PACKET_OVERHEAD
from lightspeed.routing.onion_path import find_onion_message_path, graph_neighbours

if TYPE_CHECKING:
    from lightspeed.node.node import Node
    from lightspeed.node.peer import Peer

log = logging.getLogger("lightspeed.onion_messages")

FEATURE = "option_onion_messages"
#: Lightspeed's own final-hop payloads (odd: a node that does not know them ignores them): a ping
#: whose value comes back in a pong over the reply path, for operators and tests.
PING_TYPE = 77_701
PONG_TYPE = 77_703
#: BOLT #4: SHOULD set `onion_message_packet` `len` to 1366 or 32834. A larger packet is dropped
#: unread: peeling it would cost us a ChaCha20 pass over up to 64 KB for a message no one should send.
MAX_PACKET_SIZE = PACKET_OVERHEAD + LARGE_ROUTING_INFO_SIZE
#: Hops in a row that may name ourselves (paths with dummy hops); past this the message is dropped.
MAX_LOCAL_HOPS = 10
#: Reply-path ``path_id``s remembered after their request ended (late replies are then dropped, not
#: handed to the handlers as unsolicited messages).
MAX_PUBLISHED_PATH_IDS = 10_000
#: ``encrypted_data_tlv`` of a reply path are padded to this length, so hops look alike.
PATH_PADDING = 64


@dataclass(frozen=True)
class InboundOnionMessage:
    """An onion message for us: its final-hop ``records``, and how it reached us."""

    records: tuple[tuple[int, bytes], ...]
    reply_path: BlindedPath | None
    path_id: bytes | None  # from the blinded path it came through (ours, if we made that path)
    encrypted_data: EncryptedDataTlv  # our own hop's instructions (path context, padding, ...)
    is_reply: bool = False  # came back over the reply path of one of our requests

    @property
    def tlv_type(self) -> int | None:
        """The payload field (type >= 64): BOLT 4 allows one per message."""
        return next((t for t, _ in self.records if t >= 64), None)

    def value(self, tlv_type: int) -> bytes | None:
        return next((v for t, v in self.records if t == tlv_type), None)

    def to_json(self) -> dict[str, Any]:
        return {"records": [{"type": t, "hex": v.hex()} for t, v in self.records],
                "path_id": None if self.path_id is None else self.path_id.hex(),
                "reply_path": None if self.reply_path is None else self.reply_path.to_bytes().hex(),
                "is_reply": self.is_reply}


@dataclass(frozen=True)
class SentOnionMessage:
    """What :meth:`OnionMessenger.send` did: the peer it went to and the hops it travels."""

    first_hop: bytes
    hops: int  # onion layers in the packet (blinded hops included)
    delivered_locally: bool = False  # the destination was ourselves (a blinded path to us)


Handler = Callable[[InboundOnionMessage], Awaitable[None]]


def check_records(records: Sequence[tuple[int, bytes]]) -> tuple[tuple[int, bytes], ...]:
    """The final-hop TLVs a sender may put in an ``onionmsg_tlv``, sorted; UsageError otherwise."""
    types = [t for t, _ in records]
    if len(set(types)) != len(types):
        raise UsageError("onion message TLVs: a type is given twice")
    for tlv_type in types:
        if tlv_type < 64:
            # BOLT #4: Field numbers 64 and above are reserved for payloads for the final hop.
            raise UsageError(f"onion message TLV type {tlv_type}: final-hop payload types are 64 and above")
    if len(types) != 1:
        # BOLT #4: if the `onionmsg_tlv` contains more than one payload field: MUST ignore the message.
        raise UsageError("an onion message carries exactly one payload field (type >= 64); "
                         f"{len(types)} given")
    return tuple(sorted(records))


@dataclass
class OnionMessenger:
    """The node's onion messages (see the module docstring). ``node.onion_messages`` is one."""

    node: Node
    limits: OnionMessageLimits = field(default_factory=OnionMessageLimits)
    answer_pings: bool = True  # reply to PING_TYPE with PONG_TYPE over the reply path

    def __post_init__(self) -> None:
        self.limiter = PeerRateLimiter(self.limits)
        self.counts: Counter[str] = Counter()  # received, relayed, sent, replies, unhandled
        self.dropped: Counter[str] = Counter()  # reason -> messages dropped
        self.recent: deque[InboundOnionMessage] = deque(maxlen=50)
        self._handlers: dict[int, Handler] = {}
        self._awaiting: dict[bytes, asyncio.Future[InboundOnionMessage]] = {}  # path_id -> the request
        self._published: OrderedDict[bytes, None] = OrderedDict()  # reply-path path_ids we handed out
        self._round = 0  # rotates the introduction node of reply paths between requests
        self._flushing: dict[Peer, bool] = {}  # peers a flush task writes to -> more queued meanwhile

    # -- registry and operator surface --------------------------------------------------------

    def register(self, tlv_type: int, handler: Handler) -> None:
        """Call ``handler`` for each message for us whose payload field is ``tlv_type``.

        The handler runs as a task of its own (a slow one never holds up the peer's other
        messages); whatever it raises is logged, and the message is not replayed.
        """
        if tlv_type < 64:
            raise UsageError(f"onion message handlers are for payload types >= 64, not {tlv_type}")
        self._handlers[tlv_type] = handler

    def stats(self) -> dict[str, Any]:
        by_peer = {peer.hex(): n for peer, n in sorted(self.limiter.dropped.items())}
        return {"received": self.counts["received"], "relayed": self.counts["relayed"],
                "sent": self.counts["sent"], "replies": self.counts["replies"],
                "unhandled": self.counts["unhandled"], "dropped": sum(self.dropped.values()),
                "dropped_by_reason": dict(sorted(self.dropped.items())), "rate_limited_by_peer": by_peer,
                "recent": [m.to_json() for m in self.recent]}

    def forget_peer(self, peer_id: bytes) -> None:
        self.limiter.forget(peer_id)

    # -- receiving ------------------------------------------------------------------------------

    async def receive(self, peer: Peer, message: WireOnionMessage) -> None:
        """An ``onion_message`` from ``peer``: forward it, deliver it, or drop it (counted)."""
        assert peer.remote_pubkey is not None
        if not self.limiter.allow(peer.remote_pubkey, time.monotonic()):
            self._drop("rate_limited")
            return
        if not self._speaks_onion_messages(peer):
            # BOLT #1/#9: onion_message is gated by option_onion_messages; a peer that did not offer
            # it sends us none, and one that does anyway is ignored (the type is odd).
            self._drop("not_negotiated")
            return
        if len(message.onion_message_packet) > MAX_PACKET_SIZE:
            self._drop("oversized")
            return
        await self._process(OnionMessage(message.path_key, message.onion_message_packet), 0)

    async def _process(self, message: OnionMessage, local_hops: int) -> None:
        try:
            result = peel_onion_message(self.node.privkey, message)
        except LightspeedError as exc:
            # BOLT #4: If decryption fails, the result is not a valid `onionmsg_tlv`, or it contains
            # unknown even types: MUST ignore the message.
            log.debug("onion message ignored: %s", exc)
            self._drop("invalid")
            return
        if isinstance(result, ForwardOnionMessage):
            await self._forward(result, local_hops)
            return
        inbound = InboundOnionMessage(result.payload.records, result.payload.reply_path, result.path_id,
                                      result.encrypted_data)
        self._deliver(inbound)

    async def _forward(self, result: ForwardOnionMessage, local_hops: int) -> None:
        next_id = result.next_node_id
        if next_id is None and result.short_channel_id is not None:
            # BOLT #4: otherwise, if `short_channel_id` is present and corresponds to an announced
            # short_channel_id or a local alias for a channel: the *next peer* is the peer at the
            # other end of that channel. Otherwise: MUST ignore the message.
            next_id = self._peer_across(result.short_channel_id)
        if next_id is None:
            self._drop("unknown_next_channel")
            return
        if next_id == self.node.node_id:  # a hop of ours follows (a dummy hop): peel it too
            if local_hops >= MAX_LOCAL_HOPS:
                self._drop("too_many_local_hops")
                return
            await self._process(result.message, local_hops + 1)
            return
        peer = self._onion_peer(next_id)
        if peer is None:
            if self.node.asyncpay.keep(next_id, result.message):  # an LSP's offline client: its mailbox
                self.counts["kept_for_offline_client"] += 1
                return
            self._drop("next_peer_not_connected")
            return
        # BOLT #4: SHOULD forward the message using `onion_message` to the *next peer*; MUST set
        # `path_key` in the forwarded `onion_message` to the next `path_key` (peel_onion_message did).
        # Queued, not awaited: a next peer that reads slowly must not hold up the peer this came
        # from (its channel messages wait behind this one); its outbox bound ends such a peer.
        if self._queue_for_peer(peer, result.message):
            self.counts["relayed"] += 1
            self._flush_soon(peer)

    def _deliver(self, inbound: InboundOnionMessage) -> None:
        path_id = inbound.path_id
        if path_id is not None and path_id in self._published:
            waiter = self._awaiting.get(path_id)
            # BOLT #4: if `path_id` is set and corresponds to a path the reader has previously
            # published in a `reply_path`: if the onion message is not a reply to that previous
            # onion: MUST ignore the onion message.
            if waiter is None or waiter.done():
                self._drop("reply_path_not_awaited")
                return
            inbound = replace(inbound, is_reply=True)
            self.counts["received"] += 1
            self.counts["replies"] += 1
            self.recent.append(inbound)
            waiter.set_result(inbound)
            return
        self.counts["received"] += 1
        self.recent.append(inbound)
        tlv_type = inbound.tlv_type
        handler = self._handlers.get(tlv_type) if tlv_type is not None else None
        if handler is not None:
            self.node._spawn(handler(inbound))
        elif tlv_type == PING_TYPE and self.answer_pings and inbound.reply_path is not None:
            self.node._spawn(self._pong(inbound))
        else:
            self.counts["unhandled"] += 1

    async def _pong(self, ping: InboundOnionMessage) -> None:
        with contextlib.suppress(LightspeedError):  # no route back: onion messages are unreliable
            await self.reply(ping, [(PONG_TYPE, ping.value(PING_TYPE) or b"")])

    # -- sending --------------------------------------------------------------------------------

    async def reply(self, inbound: InboundOnionMessage, records: Sequence[tuple[int, bytes]]) -> SentOnionMessage:
        """Answer ``inbound`` over its reply path (BOLT #4: MUST create an onion message using `reply_path`)."""
        if inbound.reply_path is None:
            raise UsageError("the message came without a reply_path: it cannot be answered")
        return await self.send(inbound.reply_path, records)

    async def send(self, destination: bytes | BlindedPath, records: Sequence[tuple[int, bytes]],
                   reply_path: BlindedPath | None = None) -> SentOnionMessage:
        """Send ``records`` to a node id (routed over onion-message nodes) or along a blinded path.

        Raises :class:`UsageError` when there is no way to reach the destination now.
        """
        records = check_records(records)
        if isinstance(destination, BlindedPath):
            path = self.resolve_sciddir(destination)
        else:
            path = self._path_to_node(destination)
        payload = OnionMessagePayload(records=records, reply_path=reply_path)
        hops = 0
        while path.first_node_id == self.node.node_id:  # we are the introduction node
            step, data = self._skip_own_hop(path)
            hops += 1
            if step is None:  # the path ends at us: the message is ours
                self._deliver(InboundOnionMessage(records, reply_path, data.path_id, data))
                return SentOnionMessage(self.node.node_id, hops, delivered_locally=True)
            path = step
        peer = self._onion_peer(path.first_node_id)
        if peer is None:  # route to the introduction node first, then along the path
            route = self._route_to(path.first_node_id)
            path = blinded_path_to(os.urandom(32), route[:-1], path)
            peer = self._onion_peer(route[0])
            assert peer is not None  # _route_to starts at a connected onion-message peer
        first, message = build_onion_message(os.urandom(32), path, payload)
        if not await self._send_to_peer(peer, message):
            raise UsageError(f"the connection to {first.hex()} closed while sending")
        self.counts["sent"] += 1
        return SentOnionMessage(first, hops + len(path.hops))

    async def request(self, destination: bytes | BlindedPath, records: Sequence[tuple[int, bytes]],
                      timeout: float = 10.0, attempts: int = 3) -> InboundOnionMessage:
        """Send with a reply path and return the reply; raise TimeoutError after ``timeout`` seconds.

        The time is split between ``attempts``: BOLT #4 SHOULD retry via a different path if it
        expects a response and doesn't receive one after a reasonable period; each attempt
        gets a new reply path (through the next of our peers) and a new ``path_id``, so a
        late reply to an earlier attempt is dropped rather than mistaken for this one.
        """
        reply, _ = await self.request_any([destination], records, timeout, attempts)
        return reply

    async def request_any(self, destinations: Sequence[bytes | BlindedPath], records: Sequence[tuple[int, bytes]],
                          timeout: float = 10.0, attempts: int = 3) -> tuple[InboundOnionMessage, int]:
        """:meth:`request`, attempt ``k`` sent to ``destinations[k % len]`` (a BOLT 12 offer's
        ``offer_paths``: "via any path"); the reply and the index of the destination it answers.

        A destination we cannot reach now is skipped; :class:`UsageError` if none can be reached.
        """
        if timeout <= 0 or attempts < 1 or not destinations:
            raise UsageError("request: timeout must be positive, attempts at least 1, and a destination given")
        unreachable: UsageError | None = None
        sent = False
        rounds = max(attempts, len(destinations))  # every path tried once at least
        for attempt in range(rounds):
            index = attempt % len(destinations)
            path_id = os.urandom(32)
            waiter: asyncio.Future[InboundOnionMessage] = asyncio.get_running_loop().create_future()
            self._publish(path_id)
            self._awaiting[path_id] = waiter
            try:
                try:
                    await self.send(destinations[index], records, self.reply_path(path_id))
                except UsageError as exc:  # no way to this one now: the next one, at once
                    if len(destinations) == 1:
                        raise
                    unreachable = exc
                    continue
                sent = True
                return await asyncio.wait_for(waiter, timeout / rounds), index
            except TimeoutError:
                continue
            finally:
                self._awaiting.pop(path_id, None)
        if not sent and unreachable is not None:
            raise unreachable
        raise TimeoutError(f"no reply to the onion message within {timeout:g} s ({rounds} attempts)")

    def reply_path(self, path_id: bytes) -> BlindedPath:
        """A blinded path back to us through one of our onion-message peers (us alone if we have none).

        BOLT #4: MUST set `reply_path` `first_node_id` to the unblinded node id of the first node in
        the reply path; MAY use `path_id` to contain a secret so it can recognize use of this `reply_path`.
        """
        peers = sorted(p for p in self.node._peers if self._onion_peer(p) is not None)
        via = [peers[self._round % len(peers)]] if peers else []
        self._round += 1
        return create_reply_path(os.urandom(32), [*via, self.node.node_id], path_id, padding_to=PATH_PADDING)

    def blinded_path_to_us(self) -> tuple[BlindedPath, bytes]:
        """A blinded path for others to reach us (through a peer), and its ``path_id``.

        Messages over it reach the handlers with that ``path_id`` (it is not a reply path).
        """
        path_id = os.urandom(32)
        return self.reply_path(path_id), path_id

    def _publish(self, path_id: bytes) -> None:
        self._published[path_id] = None
        while len(self._published) > MAX_PUBLISHED_PATH_IDS:
            self._published.popitem(last=False)

    # -- peers, paths ---------------------------------------------------------------------------

    @staticmethod
    def _speaks_onion_messages(peer: Peer) -> bool:
        connected = peer.connected_now()
        return connected is not None and connected.remote_init.all_features.supports(FEATURE)

    def _onion_peer(self, node_id: bytes) -> Peer | None:
        """The connected peer ``node_id`` if it offered option_onion_messages (else we send it none)."""
        peer = self.node._peers.get(node_id)
        if peer is None or peer.session.closed or not self._speaks_onion_messages(peer):
            return None
        return peer

    def _queue_for_peer(self, peer: Peer, message: OnionMessage) -> bool:
        try:
            peer.session.send(WireOnionMessage(message.path_key, message.onion_message_packet))
        except UsageError:
            self._drop("send_failed")
            return False
        return True

    def _flush_soon(self, peer: Peer) -> None:
        """Write ``peer``'s queued messages from a task of its own (one per peer at a time)."""
        if peer in self._flushing:
            self._flushing[peer] = True  # more came while it writes: it writes again
            return
        self._flushing[peer] = False

        async def flush() -> None:
            try:
                while True:
                    await peer.flush()
                    if not self._flushing.get(peer):
                        return
                    self._flushing[peer] = False
            except (UsageError, ConnectionError, OSError):
                return  # the connection is gone: onion messages are unreliable
            finally:
                self._flushing.pop(peer, None)

        self.node._spawn(flush())

    async def _send_to_peer(self, peer: Peer, message: OnionMessage) -> bool:
        try:
            peer.session.send(WireOnionMessage(message.path_key, message.onion_message_packet))
            await peer.flush()
        except (UsageError, ConnectionError, OSError):
            self._drop("send_failed")
            return False
        return True

    def _peer_across(self, short_channel_id: int) -> bytes | None:
        channel_id = self.node._by_scid.get(short_channel_id)
        return None if channel_id is None else self.node.channel_peer_id(channel_id)

    def _announces_onion_messages(self, node_id: bytes) -> bool:
        if self._onion_peer(node_id) is not None:
            return True
        record = self.node.gossip.gossiper.view.store.node(node_id)
        if record is None:
            return False
        return Features.from_bytes(record.features).supports(FEATURE)

    def _known_not_to_support(self, node_id: bytes) -> bool:
        """Its init (a peer) or its node_announcement leaves out option_onion_messages."""
        peer = self.node._peers.get(node_id)
        connected = peer.connected_now() if peer is not None and not peer.session.closed else None
        if connected is not None:
            return not connected.remote_init.all_features.supports(FEATURE)
        record = self.node.gossip.gossiper.view.store.node(node_id)
        return record is not None and not Features.from_bytes(record.features).supports(FEATURE)

    def _route_to(self, target: bytes) -> list[bytes]:
        """Node ids from a connected onion-message peer to ``target``; UsageError if there is none."""
        if self._known_not_to_support(target):
            raise UsageError(f"{target.hex()} does not support onion messages (option_onion_messages)")
        first_hops = [p for p in self.node._peers if self._onion_peer(p) is not None]
        graph = self.node.graph
        neighbours = graph_neighbours(graph) if graph is not None else {}
        neighbours.pop(self.node.node_id, None)
        route = find_onion_message_path(neighbours, first_hops, target, self._announces_onion_messages)
        if route is None:
            raise UsageError(f"no path of onion-message nodes to {target.hex()} "
                             f"({len(first_hops)} onion-message peers connected)")
        return route

    def _path_to_node(self, node_id: bytes) -> BlindedPath:
        """A path we blind ourselves to ``node_id`` (all onion messages are blinded, BOLT 4)."""
        if node_id == self.node.node_id:
            raise UsageError("the destination is this node itself")
        route = self._route_to(node_id)
        tlvs = [EncryptedDataTlv(next_node_id=n) for n in route[1:]] + [EncryptedDataTlv()]
        size = max(len(t.to_bytes()) for t in tlvs)
        # BOLT #4 (route blinding): SHOULD add padding to equalize the encrypted_data_tlv lengths.
        tlvs = [t if len(t.to_bytes()) == size else replace(t, padding=bytes(size - len(t.to_bytes()) - 2))
                for t in tlvs]
        return create_blinded_path(os.urandom(32), route, tlvs)

    def resolve_sciddir(self, path: BlindedPath) -> BlindedPath:
        """``path`` with a ``sciddir`` introduction replaced by that end's node id (UsageError: unknown channel)."""
        if len(path.first_node_id) == 33:
            return path
        direction, scid = path.first_node_id[0], int.from_bytes(path.first_node_id[1:], "big")
        record = self.node.gossip.gossiper.view.store.channel(scid)
        if record is None:
            peer = self._peer_across(scid)
            if peer is None:
                raise UsageError(f"the blinded path starts at channel {scid}, which this node does not know")
            ends = sorted([peer, self.node.node_id])
        else:
            ends = [record.node_id_1, record.node_id_2]
        # BOLT #7 sciddir_or_pubkey: direction 0 is node_id_1 of the channel, 1 is node_id_2.
        return replace(path, first_node_id=ends[direction])

    def _skip_own_hop(self, path: BlindedPath) -> tuple[BlindedPath | None, EncryptedDataTlv]:
        """We introduce ``path``: open our hop; the path after it (None if it ends at us), our hop's data."""
        hop = unblind_hop(self.node.privkey, path.first_path_key, path.hops[0].encrypted_recipient_data)
        if len(path.hops) == 1:
            return None, hop.data
        next_id = hop.data.next_node_id
        if next_id is None and hop.data.short_channel_id is not None:
            next_id = self._peer_across(hop.data.short_channel_id)
        if next_id is None:
            raise UsageError("the blinded path's hop at this node names no next node we know")
        return BlindedPath(next_id, hop.next_path_key, path.hops[1:]), hop.data

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
