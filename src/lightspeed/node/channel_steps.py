"""A channel step: apply the peer's update messages, sign, commit, then queue what depends on it.

A part of :class:`~lightspeed.node.node.Node` (its methods, bound onto the class there). A step
is mutate, commit, queue with no ``await`` in between (:func:`_run_step`), so the wire order is
the order of the committed states; :func:`_step_batches` signs and saves every channel a step
changed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from lightspeed.channel.serialize import (
    channel_to_record,
    remote_commitment_record,
)
from lightspeed.channel.state import UPDATE_ADD_HOLD_HTLC, Channel
from lightspeed.codec.generated import (
    CommitmentSigned,
    RevokeAndAck,
    UpdateAddHtlc,
    UpdateFailHtlc,
    UpdateFailMalformedHtlc,
    UpdateFee,
)
from lightspeed.codec.message_base import WireMessage
from lightspeed.errors import (
    PeerProtocolError,
    UsageError,
)
from lightspeed.node.blinded_incoming import pack_onion
from lightspeed.node.outcomes import NodeEvent
from lightspeed.node.paying import HtlcOutcome
from lightspeed.node.peer import Peer

if TYPE_CHECKING:
    from lightspeed.node.node import Node


def _save(self: Node, channel: Channel) -> None:
    """Write the channel's state (inside a store transaction) with the commitments it newly signed."""
    cid = channel.config.channel_id
    saved = self._saved_ctn.get(cid, -1)
    for ctn in channel.signed_remote_after(saved):  # not a scan of every commitment ever signed
        self.store.add_remote_commitment(cid, ctn, remote_commitment_record(channel, ctn))
        self._saved_ctn[cid] = ctn
    ready = self._ready_marks.get(cid) == {"sent", "received"}
    self.channel_writes += 1
    record = channel_to_record(channel, self._key_index.get(cid))
    self.store.put_channel(cid, self._channel_node[cid], record, ready)


async def _send(self: Node, peer: Peer | None, messages: list[WireMessage]) -> None:
    await self._send_all([(peer, messages)])


def _queue_all(self: Node, batches: list[tuple[Peer | None, list[WireMessage]]]) -> list[Peer]:
    """Queue every message of every batch at once (no await between them); the peers to flush.

    A connection that is gone drops them: the state they follow is committed, and
    channel_reestablish retransmits what the peer must see again.
    """
    if self._held is not None:  # inside a burst: sent once the burst is committed
        self._held.extend(b for b in batches if b[0] is not None and b[1])
        return []
    if self.store_failure is not None:  # memory may be ahead of the store: nothing more goes out
        return []
    peers: list[Peer] = []
    for peer, messages in batches:
        if peer is None or not messages:
            continue
        self.sent_counts.update(m.NAME for m in messages)
        self.htlc_signatures_sent += sum(len(m.htlc_signature) for m in messages if isinstance(m, CommitmentSigned))
        try:
            for message in messages:
                peer.session.send(message)
        except UsageError:
            continue
        if peer not in peers:
            peers.append(peer)
    return peers


async def _send_all(self: Node, batches: list[tuple[Peer | None, list[WireMessage]]]) -> None:
    for peer in self._queue_all(batches):
        with contextlib.suppress(UsageError, ConnectionError, OSError):
            await peer.flush()


def _step_batches(self: Node) -> list[tuple[Peer | None, list[WireMessage]]]:
    """End a step (inside its transaction): sign and save every channel it changed; their messages."""
    batches: list[tuple[Peer | None, list[WireMessage]]] = []
    for cid, messages in self._dirty.items():
        channel = self.channels.get(cid)
        if channel is None:
            continue
        if (cid in self._reestablished and channel.log.has_changes_to_sign()
                and not channel.log.awaiting_revoke):
            messages.append(channel.sign())
        self._save(channel)
        batches.append((self._channel_peer.get(cid), messages))
    self._dirty.clear()
    return batches


async def _on_channel_message(self: Node, peer: Peer, message: WireMessage) -> None:
    channel_id = getattr(message, "channel_id", None)
    channel = self.channels.get(channel_id) if isinstance(channel_id, bytes) else None
    if channel is None or self._channel_peer.get(channel.config.channel_id) is not peer:
        raise PeerProtocolError(f"{message.NAME} for an unknown channel")
    cid = channel.config.channel_id
    if cid not in self._reestablished:
        raise PeerProtocolError(f"{message.NAME} before channel_reestablish", cid)
    if isinstance(message, UpdateFee):  # against our estimate: a warning, never a channel failure
        self.fee_follower.check_incoming(channel, message.feerate_per_kw)
    replies, fulfilled = channel.receive(message)
    received: list[NodeEvent] = []
    with self.store.transaction():  # one commit for the whole step, then its messages
        if isinstance(message, UpdateAddHtlc):
            path_key = message.tlvs.get("blinded_path", {}).get("path_key")  # BOLT 2: inside a blinded path
            self.store.put_onion(cid, message.id, pack_onion(message.onion_routing_packet, path_key))
            if UPDATE_ADD_HOLD_HTLC in message.tlvs:  # the payer asks its LSP to hold it (node/async_draft.py)
                self.async_draft.flag_incoming((cid, message.id))
        elif isinstance(message, UpdateFailHtlc):
            self._failures[(cid, message.id)] = HtlcOutcome(reason=message.reason)
        elif isinstance(message, UpdateFailMalformedHtlc):
            self._failures[(cid, message.id)] = HtlcOutcome(malformed_code=message.failure_code,
                                                            sha256_of_onion=message.sha256_of_onion)
        for done in fulfilled:
            self._succeed(cid, done.htlc, done.preimage)
        mine = self._dirty.setdefault(cid, [])
        if isinstance(message, (CommitmentSigned, RevokeAndAck)):
            self._process_incoming(channel, received)
        elif not mine and cid in self._dirty:
            del self._dirty[cid]  # nothing of ours to add: only save, do not sign yet
            self._save(channel)
        self._resolve_payments(channel)
        batches = self._step_batches()
    await self._send_all([(peer, list(replies)), *batches])
    if isinstance(message, RevokeAndAck) and self._revoked_waiters:
        waiters, self._revoked_waiters = self._revoked_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
    for event in received:
        await self.events.put(event)


async def _advance(self: Node, channel: Channel, peer: Peer) -> None:
    """After a reestablish: apply what was decided meanwhile, settle and sign; one commit."""
    received: list[NodeEvent] = []
    with self.store.transaction():
        self._dirty.setdefault(channel.config.channel_id, [])
        self._process_incoming(channel, received)
        self._resolve_payments(channel)
        batches = self._step_batches()
    await self._send_all(batches)
    for event in received:
        await self.events.put(event)


async def _run_step(self: Node, decide: Callable[[list[NodeEvent]], None]) -> None:
    """A step started by us (a timer, the application): decide, commit, then send."""
    received: list[NodeEvent] = []
    with self.store.transaction():
        decide(received)
        batches = self._step_batches()
    await self._send_all(batches)
    for event in received:
        await self.events.put(event)


async def update_fee(self: Node, channel_id: bytes, feerate_per_kw: int) -> None:
    """As the funder, move the channel's commitments to a new feerate (update_fee, then signed)."""
    channel = self.channels.get(channel_id)
    if channel is None or channel_id in self.closed_channels:
        raise UsageError(f"channel_id: no open channel {channel_id.hex()}")
    if not self._usable(channel_id):
        raise UsageError("channel_id: the channel is not ready or its peer is not connected")
    message = channel.update_fee(feerate_per_kw)  # raises UsageError: not the funder, unaffordable

    def decide(received: list[NodeEvent]) -> None:
        self._dirty.setdefault(channel_id, []).append(message)

    await self._run_step(decide)
